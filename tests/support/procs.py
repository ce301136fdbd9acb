"""Processes a test starts: `pulse` commands (workers, `pulse up`, `pulse broker`) and other programs.

`Process` is the one wrapper: start, wait until healthy, signal, kill, stop, read the log. A process
started in a session of its own (as a command typed in a terminal) is tracked through /proc: the
descendants seen while it ran are killed with it at `cleanup`, pass or fail; PIDs carry their start
times, so a reused PID is not mistaken for a survivor. Any other process dies with the test process
(PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx

from pipeline.tools.procs import free_port, spawn
from tests.support.needs import need_binary
from tests.support.waits import wait_until

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


# --- pulse commands -------------------------------------------------------------------------------


def pulse_argv(*args: str) -> list[str]:
    """argv of the installed `pulse` console script (or `python -m pipeline.tools.cli` without it)."""
    script = Path(sys.executable).with_name("pulse")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "pipeline.tools.cli", *args]


def pulse_env(tmp: Path, web_port: int, **settings: str) -> dict[str, str]:
    """This process's environment without PULSE_* variables, plus a web port, a data dir and `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(
        PULSE_WEB_HOST=HOST,
        PULSE_WEB_PORT=str(web_port),
        PULSE_DATA_DIR=str(tmp / "data"),
        PYTHONUNBUFFERED="1",
    )
    env.update(settings)
    return env


def run_pulse(
    *args: str, env: dict[str, str] | None = None, cwd: Path = REPO, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `pulse ARGS...` to its end; return its exit code and output (never raises on failure)."""
    return subprocess.run(
        pulse_argv(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def pulse_process(tmp: Path, *args: str, port: int = 0, log: str = "pulse.log", **settings: str) -> Process:
    """`pulse ARGS...` (not started) in a session of its own, serving its web port on `port` (or a free
    one), with `pulse_env` and `settings`."""
    port = port or free_port(HOST)
    env = pulse_env(tmp, port, **settings)
    return Process(pulse_argv(*args), tmp / log, env=env, cwd=tmp, session=True, port=port)


# --- the process tree, from /proc -----------------------------------------------------------------


@dataclass(frozen=True)
class Pid:
    """A process identified by PID and start time (clock ticks since boot), so PID reuse is harmless."""

    pid: int
    start: int
    argv: tuple[str, ...]

    def alive(self) -> bool:
        """Whether any thread of it still runs: a killed thread-group leader shows "Z" while the other
        threads are still exiting and holding its file descriptors (its listening sockets)."""
        stat = _stat(self.pid)
        if stat is None or stat[2] != self.start:
            return False
        try:
            threads = os.listdir(f"/proc/{self.pid}/task")
        except OSError:
            return False
        return any(
            (task := _stat(self.pid, int(tid))) is not None and task[1] not in ("Z", "X") for tid in threads
        )

    def pending(self) -> set[int]:
        """Signals sent to it and not yet handled (a stopped process keeps them pending)."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return set()
        masks = [
            int(line.split()[1], 16)
            for line in status.splitlines()
            if line.startswith(("ShdPnd:", "SigPnd:"))
        ]
        mask = 0
        for value in masks:
            mask |= value
        return {bit + 1 for bit in range(64) if mask >> bit & 1}

    def kill(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def __str__(self) -> str:
        return f"{self.pid} {' '.join(self.argv)[:120]}"


def _stat(pid: int, tid: int | None = None) -> tuple[int, str, int] | None:
    """(ppid, state, starttime) of a process (or of one of its threads), or None when it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat").read_text()
    except OSError:
        return None
    fields = data.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid ... starttime is field 22
    return int(fields[1]), fields[0], int(fields[19])


def _argv(pid: int) -> tuple[str, ...]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ()
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def descendants(root: int) -> set[Pid]:
    """Every live descendant of `root`, found by following PPid links through /proc."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[1] not in ("Z", "X"):
                children.setdefault(stat[0], []).append((int(entry), stat[2]))
    found: set[Pid] = set()
    todo = [root]
    while todo:
        for pid, start in children.get(todo.pop(), []):
            found.add(Pid(pid, start, _argv(pid)))
            todo.append(pid)
    return found


def _like_a_terminal() -> None:  # runs in the child between fork and exec
    """Default SIGINT, as in an interactive shell.

    A shell without job control starts background commands with SIGINT ignored, and an ignored signal
    stays ignored across exec: pytest run that way would hand it to `pulse`, which then (like any
    well-behaved program) keeps ignoring Ctrl-C.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# --- a process ------------------------------------------------------------------------------------


@dataclass
class Process:
    """One child process, its output in `log_path`, and (in a session of its own) its tree."""

    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    session: bool = False
    """Its own session and process group, SIGINT as in a terminal; else it dies with the test process."""
    port: int = 0
    """The port it serves HTTP on (0: none)."""
    proc: subprocess.Popen[bytes] | None = None
    seen: set[Pid] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.log_path.stem

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    def start(self) -> Self:
        with open(self.log_path, "ab") as log:
            if self.session:
                self.proc = subprocess.Popen(
                    self.argv,
                    cwd=self.cwd,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: `cleanup` can kill the whole tree
                    preexec_fn=_like_a_terminal,
                )
            else:
                assert self.cwd is None, "a process that dies with the test runs in the test's directory"
                self.proc = spawn(self.argv, env=self.env, stdout=log, stderr=log)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_healthy(self, timeout: float, owning: bool = False) -> None:
        """Wait until GET /health answers 200 (and, with `owning`, the worker owns partitions: a group's
        first rebalance may hand out an empty assignment before the real one); fail if it exits."""

        def health() -> Any:
            if self.session:
                self.track()
            reply = httpx.get(f"{self.url}/health", timeout=2)
            return reply.status_code, reply.json()["worker"]["partitions"]

        wait_until(
            health,
            timeout,
            f"{self.name} healthy on port {self.port}" + (", owning partitions" if owning else ""),
            until=lambda seen: seen[0] == 200 and (seen[1] or not owning),
            interval=0.2,
            ignore=(httpx.HTTPError, OSError, ValueError, KeyError),
            alive=self.alive,
            context=self.tail,
        )

    def wait_ready(self, timeout: float, path: str = "/-/ready") -> None:
        """Wait until GET `path` answers 200 (Prometheus' and Alertmanager's readiness); fail if it exits."""
        wait_until(
            lambda: httpx.get(f"{self.url}{path}", timeout=2).status_code,
            timeout,
            f"{self.name} to answer GET {path} with 200 (its answer)",
            until=(200).__eq__,
            interval=0.2,
            alive=self.alive,
            context=self.tail,
        )

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no commit."""
        if self.alive():
            self.signal(signal.SIGKILL)
            self.wait(10)

    def terminate(self) -> None:
        """SIGTERM, not waited for."""
        if self.alive():
            self.signal(signal.SIGTERM)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM, then SIGKILL after `timeout` s; in a session, then kill what is left of its tree."""
        if self.alive():
            self.terminate()
            try:
                assert self.proc is not None
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.session:
            self.cleanup()

    def wait(self, timeout: float) -> int:
        """Wait for its exit; return its code, or fail saying what still runs."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            tree = f"; tree: {sorted(map(str, self.survivors()))}" if self.session else ""
            raise AssertionError(
                f"{' '.join(self.argv[1:])} still running {timeout:g}s later{tree}\n{self.tail()}"
            ) from None

    # --- its output --------------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def count(self, needle: str) -> int:
        """How many times its log says `needle`."""
        return self.log_text().count(needle)

    def wait_for(self, text: str, timeout: float) -> None:
        """Wait until its log says `text`; fail if it exits first."""
        wait_until(
            lambda: text in self.log_text(),
            timeout,
            f"{text!r} in the output of {self.name}",
            interval=0.1,
            alive=self.alive,
            context=lambda: f"exit code {self.returncode}:\n{self.tail()}",
        )

    # --- its tree (in a session of its own) --------------------------------------------------------

    def track(self) -> set[Pid]:
        """Record the current descendants (call it while the command runs); return them."""
        now = descendants(self.pid)
        self.seen |= now
        return now

    def child(self, match: Callable[[tuple[str, ...]], bool]) -> Pid:
        found = [p for p in self.track() if match(p.argv)]
        assert len(found) == 1, f"expected one matching child, found {found}:\n{self.tail()}"
        return found[0]

    def survivors(self) -> set[Pid]:
        return {p for p in self.seen if p.alive()}

    def wait_no_survivors(self, timeout: float) -> None:
        wait_until(
            lambda: sorted(map(str, self.survivors())),
            timeout,
            f"every descendant of {self.name} to exit",
            until=lambda left: not left,
            interval=0.1,
            context=self.tail,
        )

    def cleanup(self) -> None:
        """Kill everything this process started, whatever state the test left it in."""
        if self.proc is None:
            return
        if self.alive() and self.session:
            self.track()
        if self.session:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        elif self.alive():
            self.proc.kill()
        for proc in self.seen:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


# --- other programs -------------------------------------------------------------------------------


@contextlib.contextmanager
def real_alertmanager(tmp: Path) -> Iterator[str]:
    """A real Alertmanager on a free port, its config, data and log in `tmp`, routing every alert to a
    receiver that sends nothing; its base URL. Skipped (failed under PULSE_REQUIRE_E2E=1) without it."""
    binary = need_binary("prometheus-alertmanager", "prometheus-alertmanager")
    config = tmp / "alertmanager.yml"
    config.write_text("route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n", encoding="utf-8")
    port = free_port()
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    process = Process(argv, tmp / "alertmanager.log", port=port).start()
    try:
        process.wait_ready(30)
        yield process.url
    finally:
        process.stop(10)
