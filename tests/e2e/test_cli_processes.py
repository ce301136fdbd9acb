"""The `pulse` CLI as a user runs it: `pulse broker`, `pulse up [--demo]`, signals, crashes, orphans.

Every test runs the real console script on free loopback ports with its own data directory, tracks the
process tree it starts by walking /proc (PPid chains, with start times so a reused PID is not mistaken
for a survivor), and kills whatever is left when the test ends, pass or fail (fixture teardown).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from pipeline.tools.procs import free_port
from tests.e2e.launch import HOST, need_broker, pulse_argv, pulse_env, wait_healthy
from tests.helpers import parse_metrics

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")]

STOP_WITHIN = 10.0  # the issue: Ctrl-C or SIGTERM stops everything within 10 s
ORPHAN_WITHIN = 10.0  # after a SIGKILL of `pulse up`, PDEATHSIG must clear its children
START_WITHIN = 90.0  # broker + worker start; generous for a loaded 2-CPU machine


# --- the process tree, from /proc -----------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
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


def descendants(root: int) -> set[Proc]:
    """Every live descendant of `root`, found by following PPid links through /proc."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[1] not in ("Z", "X"):
                children.setdefault(stat[0], []).append((int(entry), stat[2]))
    found: set[Proc] = set()
    todo = [root]
    while todo:
        for pid, start in children.get(todo.pop(), []):
            found.add(Proc(pid, start, _argv(pid)))
            todo.append(pid)
    return found


# --- a CLI command under test ---------------------------------------------------------------------


def _like_a_terminal() -> None:  # runs in the child between fork and exec
    """Default SIGINT, as in an interactive shell.

    A shell without job control starts background commands with SIGINT ignored, and an ignored signal
    stays ignored across exec: pytest run that way would hand it to `pulse`, which then (like any
    well-behaved program) keeps ignoring Ctrl-C.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class Run:
    """One `pulse ...` process in its own session, with the descendants seen while it ran."""

    argv: list[str]
    tmp: Path
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    seen: set[Proc] = field(default_factory=set)

    def start(self) -> Run:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.tmp,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the `finally` can kill the whole tree
                preexec_fn=_like_a_terminal,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def track(self) -> set[Proc]:
        """Record the current descendants (call it while the command runs); return them."""
        now = descendants(self.pid)
        self.seen |= now
        return now

    def child(self, match: Callable[[tuple[str, ...]], bool]) -> Proc:
        found = [p for p in self.track() if match(p.argv)]
        assert len(found) == 1, f"expected one matching child, found {found}:\n{self.tail()}"
        return found[0]

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{' '.join(self.argv[1:])} still running {timeout:g}s later; tree: "
                f"{sorted(map(str, self.survivors()))}\n{self.tail()}"
            ) from None

    def survivors(self) -> set[Proc]:
        return {p for p in self.seen if p.alive()}

    def wait_no_survivors(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.survivors() and time.monotonic() < deadline:
            time.sleep(0.1)
        left = self.survivors()
        assert not left, f"orphans left after {timeout:g}s: {sorted(map(str, left))}\n{self.tail()}"

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_path.read_text(errors="replace"):
                return
            assert self.running(), f"exited with {self.proc and self.proc.returncode}:\n{self.tail()}"
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not printed within {timeout:g}s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def cleanup(self) -> None:
        """Kill everything this run started, whatever state the test left it in."""
        if self.proc is None:
            return
        if self.running():
            self.track()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        for proc in self.seen:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


@pytest.fixture
def pulse(tmp_path: Path) -> Iterator[Callable[..., Run]]:
    """Start `pulse ARGS...`; every run is torn down after the test."""
    need_broker()
    runs: list[Run] = []

    def start(*args: str, web_port: int | None = None) -> Run:
        port = web_port or free_port(HOST)
        env = pulse_env(tmp_path, port, PULSE_LOG_LEVEL="info")
        run = Run(pulse_argv(*args), tmp_path, env, tmp_path / f"run{len(runs)}.log")
        runs.append(run)
        return run.start()

    yield start
    for run in runs:
        run.cleanup()


def accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


# --- pulse broker ---------------------------------------------------------------------------------


async def _list_topics(port: int) -> set[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=f"{HOST}:{port}", request_timeout_ms=5000)
    await asyncio.wait_for(admin.start(), 15)
    try:
        return set(await asyncio.wait_for(admin.list_topics(), 15))
    finally:
        await admin.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("signum", "group"),
    [(signal.SIGINT, False), (signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["SIGINT", "ctrl-c-to-process-group", "SIGTERM"],
)
def test_broker_serves_kafka_and_exits_cleanly_on_signal(
    pulse: Callable[..., Run], signum: signal.Signals, group: bool
) -> None:
    port = free_port(HOST)
    run = pulse("broker", "--port", str(port))
    run.wait_for("embedded broker ready", START_WITHIN)
    assert f"PULSE_BROKER_URL=kafka://{HOST}:{port}" in run.tail()
    tansu = run.child(lambda argv: "tansu" in Path(argv[0]).name if argv else False)
    assert f"tcp://{HOST}:{port}" in tansu.argv, tansu

    topics = asyncio.run(_list_topics(port))  # a real Kafka answer, not just an open socket
    assert isinstance(topics, set)

    run.track()
    started = time.monotonic()
    if group:  # a terminal's Ctrl-C: SIGINT to `pulse broker` and Tansu at once
        os.killpg(run.pid, signum)
    else:
        run.signal(signum)
    code = run.wait(STOP_WITHIN)
    assert code == 0, f"`pulse broker` exited with {code} on {signum.name}:\n{run.tail()}"
    assert time.monotonic() - started < STOP_WITHIN
    run.wait_no_survivors(2)
    assert not tansu.alive()
    assert not accepts(port), f"something still listens on the broker port {port}"


# --- pulse up -------------------------------------------------------------------------------------


def _is_worker(argv: tuple[str, ...]) -> bool:
    return "pipeline.tools.cli" in argv and "worker" in argv


def _is_simulator(argv: tuple[str, ...]) -> bool:
    return "pipeline.tools.cli" in argv and "simulate" in argv


def _is_broker(argv: tuple[str, ...]) -> bool:
    return bool(argv) and "tansu" in Path(argv[0]).name


def start_up(pulse: Callable[..., Run], demo: bool = True) -> tuple[Run, int]:
    """`pulse up [--demo]` on a free web port, once its worker is healthy and all children run."""
    port = free_port(HOST)
    run = pulse("up", "--demo", web_port=port) if demo else pulse("up", web_port=port)
    run.wait_for("Ctrl-C stops everything.", START_WITHIN)
    wait_healthy(port, run.running, run.tail, START_WITHIN)
    tree = run.track()
    expected = [_is_broker, _is_worker] + ([_is_simulator] if demo else [])
    for match in expected:
        assert any(match(p.argv) for p in tree), f"missing child ({match.__name__}): {sorted(map(str, tree))}"
    return run, port


def _totals(port: int) -> dict[str, float]:
    text = httpx.get(f"http://{HOST}:{port}/metrics", timeout=5).text
    totals = {"http_requests_total": 0.0, "orders_total": 0.0}
    for (name, _labels), value in parse_metrics(text).items():
        if name in totals:
            totals[name] += value
    return totals


@pytest.mark.timeout(150)
def test_up_demo_serves_live_metrics(pulse: Callable[..., Run]) -> None:
    started = time.monotonic()
    run, port = start_up(pulse)

    first: dict[str, float] = {}
    while not (first and all(first.values())):
        assert time.monotonic() - started < 60, f"no http_requests_total/orders_total in 60 s: {first}"
        assert run.running(), run.tail()
        time.sleep(0.5)
        try:
            first = _totals(port)
        except httpx.HTTPError:
            first = {}

    time.sleep(3)
    deadline = time.monotonic() + 20
    while True:
        later = _totals(port)
        if all(later[name] > first[name] for name in first):
            break
        assert time.monotonic() < deadline, f"metrics not increasing: {first} then {later}"
        time.sleep(1)
    assert run.running(), run.tail()


@pytest.mark.timeout(150)
@pytest.mark.parametrize(
    ("signum", "group"),
    [(signal.SIGINT, False), (signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["SIGINT", "ctrl-c-to-process-group", "SIGTERM"],
)
def test_up_stops_everything_on_signal(
    pulse: Callable[..., Run], signum: signal.Signals, group: bool
) -> None:
    run, port = start_up(pulse)
    run.track()
    started = time.monotonic()
    if group:  # what a terminal's Ctrl-C does: SIGINT to every process of the foreground group
        os.killpg(run.pid, signum)
    else:
        run.signal(signum)
    run.wait(STOP_WITHIN)
    elapsed = time.monotonic() - started
    # every descendant is gone by the time `pulse up` returns; a short grace for the kernel's reaping
    run.wait_no_survivors(max(0.5, STOP_WITHIN - elapsed))
    assert time.monotonic() - started < STOP_WITHIN
    assert f"stopped ({signum.name})" in run.tail(), run.tail()
    assert not accepts(port), f"the web port {port} still accepts connections"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_up_stops_everything_on_signal_during_startup(
    pulse: Callable[..., Run], signum: signal.Signals
) -> None:
    port = free_port(HOST)
    run = pulse("up", "--demo", web_port=port)
    run.wait_for("broker   kafka://", START_WITHIN)  # the broker runs; the worker is starting
    settle = time.monotonic() + 1.0
    while time.monotonic() < settle:
        run.track()
        time.sleep(0.05)
    assert any(_is_broker(p.argv) for p in run.track()), sorted(map(str, run.seen))
    started = time.monotonic()
    run.signal(signum)
    run.wait(STOP_WITHIN)
    run.wait_no_survivors(max(0.5, STOP_WITHIN - (time.monotonic() - started)))
    assert time.monotonic() - started < STOP_WITHIN
    assert not accepts(port), f"the web port {port} still accepts connections"


@pytest.mark.timeout(150)
@pytest.mark.parametrize("victim", ["worker", "broker"])
def test_up_stops_the_rest_when_a_child_dies(pulse: Callable[..., Run], victim: str) -> None:
    run, port = start_up(pulse)
    match = {"worker": _is_worker, "broker": _is_broker}[victim]
    target = run.child(match)
    started = time.monotonic()
    os.kill(target.pid, signal.SIGKILL)
    code = run.wait(STOP_WITHIN)
    run.wait_no_survivors(max(0.5, STOP_WITHIN - (time.monotonic() - started)))
    assert time.monotonic() - started < STOP_WITHIN
    # non-zero, and the shell's convention for "killed by SIGKILL" rather than sys.exit(-9) == 247
    assert code == 128 + signal.SIGKILL, (
        f"`pulse up` exited {code} after its {victim} was killed:\n{run.tail()}"
    )
    assert f"stopped ({victim} exited with code -9)" in run.tail(), run.tail()
    assert not accepts(port), f"the web port {port} still accepts connections"


@pytest.mark.timeout(150)
def test_sigkill_of_up_leaves_no_orphan(pulse: Callable[..., Run]) -> None:
    run, port = start_up(pulse)
    run.track()
    run.signal(signal.SIGKILL)
    run.wait(5)
    run.wait_no_survivors(ORPHAN_WITHIN)
    assert not accepts(port), f"the web port {port} still accepts connections"


@pytest.mark.timeout(150)
def test_sigkill_of_up_while_it_stops_after_a_broker_crash_leaves_no_orphan(
    pulse: Callable[..., Run],
) -> None:
    """The worst case for PDEATHSIG: `pulse up` is killed while it waits for a worker that does not react
    to SIGTERM (as a worker whose shutdown keeps retrying a dead broker may). The worker is frozen with
    SIGSTOP so that the case does not depend on how quickly its shutdown happens to be."""
    run, port = start_up(pulse)
    worker = run.child(_is_worker)
    os.kill(worker.pid, signal.SIGSTOP)
    os.kill(run.child(_is_broker).pid, signal.SIGKILL)
    time.sleep(1.5)  # `pulse up` has noticed and sent SIGTERM to the frozen worker, and waits out its grace
    assert run.running() and worker.alive(), f"`pulse up` did not wait for its worker\n{run.tail()}"
    run.track()
    run.signal(signal.SIGKILL)
    run.wait(5)
    run.wait_no_survivors(ORPHAN_WITHIN)
    assert not accepts(port), f"the web port {port} still accepts connections"
