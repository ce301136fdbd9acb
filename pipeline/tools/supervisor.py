"""`pulse up`: embedded broker + worker (+ simulator with --demo), supervised as one unit.

Ctrl-C or SIGTERM stops everything within 10 s; if any child dies, the others are stopped and `pulse
up` exits non-zero. Children get PR_SET_PDEATHSIG(SIGKILL), so even a SIGKILL of `pulse up` leaves no orphan.

With `--status` a thread polls the worker's endpoints every 2 s for a live status line (the text comes
from `pipeline.tools.status`). On a terminal the line is rewritten in place below everything else: the
children's output is relayed through pipes, and the line is cleared before any other line is written
and drawn again after it. Elsewhere a plain `status` line is printed only when it says something new.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import IO, Any, TextIO

import orjson

from pipeline.config.settings import Config
from pipeline.tools import endpoint, status
from pipeline.tools.broker import EmbeddedBroker
from pipeline.tools.procs import child_env, python_argv, spawn, stop, wait_for_port

log = logging.getLogger(__name__)

STOP_BUDGET = 8.0  # seconds for stopping all children: Ctrl-C or SIGTERM stops everything within 10 s
POLL_EVERY = 2.0  # seconds between two polls of the worker for the status line
POLL_TIMEOUT = 1.0  # seconds one request of a poll may take
PLAIN_WIDTH = 160  # columns of a plain status line (no terminal to fit)


@dataclass
class Child:
    """A supervised child process."""

    name: str
    proc: subprocess.Popen[bytes]
    relays: list[threading.Thread] = field(default_factory=list)


@dataclass
class Supervisor:
    """Start children, watch them, stop them all together."""

    children: list[Child] = field(default_factory=list)
    stopping: bool = False
    reason: str = ""
    say: Callable[[str], object] = print
    before_stop: list[Callable[[], object]] = field(default_factory=list)

    def add(
        self, name: str, proc: subprocess.Popen[bytes], relays: list[threading.Thread] | None = None
    ) -> None:
        """Watch a started child (whose output, if piped, the `relays` threads copy until it ends)."""
        self.children.append(Child(name, proc, relays or []))

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        self.reason = signal.Signals(signum).name

    def watch(self) -> int:
        """Block until a signal arrives or a child exits; then stop all; return the exit code."""
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        code = 0
        while not self.stopping:
            for child in self.children:
                status = child.proc.poll()
                if status is not None:
                    self.reason = f"{child.name} exited with code {status}"
                    # killed by signal N: exit 128 + N like a shell (sys.exit(-9) would exit 247)
                    code = 128 - status if status < 0 else status or 1
                    self.stopping = True
                    break
            else:
                time.sleep(0.2)
        self.stop_all()
        return code

    def stop_all(self, budget: float = STOP_BUDGET) -> None:
        """Stop children in reverse start order (simulator, worker, broker), all within `budget` s.

        Each child gets SIGTERM, then SIGKILL after its grace period (worker 6 s, others 3 s), cut
        short so that the children after it keep a second each: the sum stays within the budget.
        """
        deadline = time.monotonic() + budget
        for hook in self.before_stop:  # the status line: no "worker not answering" while it stops
            hook()
        self.before_stop = []
        remaining = list(reversed(self.children))
        while remaining:
            child = remaining.pop(0)
            left = deadline - time.monotonic() - len(remaining) * 1.0
            grace = 6.0 if child.name == "worker" else 3.0
            was_running = child.proc.poll() is None
            code = stop(child.proc, timeout=max(0.2, min(grace, left)))
            for relay in child.relays:  # its last lines come before "stopped"
                relay.join(timeout=0.5)
            if was_running:
                self.say(f"{child.name:<9} stopped (exit code {code})")


class Console:
    """Where `pulse up` writes: its own lines, its children's output and the live status line.

    With `live` (a status line on a terminal) every write goes through here under one lock: the status
    line is cleared (carriage return, clear to the end of the line) before anything else is written, and
    drawn again once the cursor is back at the start of a line, so it never scrolls and never mixes
    with a log line. Without it, `say` is the plain `echo`.
    """

    def __init__(self, echo: Callable[[str], object], live: bool, err: TextIO | None = None) -> None:
        self.echo = echo
        self.err = err if err is not None else sys.stderr
        self.lock = threading.Lock()
        self.live = live
        self.text = ""  # the status line to show (coloured)
        self.drawn = False
        self.line_start = True
        self.closed = False

    def say(self, text: str) -> None:
        """Print one line of `pulse up`'s own."""
        if not self.live:
            self.echo(text)
            return
        with self.lock:
            self._clear()
            self.echo(text)
            self.line_start = True
            self._draw()

    def relay(self, chunk: bytes, out: IO[bytes]) -> None:
        """Write what a child printed (`out`: this process's stdout or stderr)."""
        with self.lock:
            self._clear()
            try:
                out.write(chunk)
                out.flush()
            except (OSError, ValueError):
                return
            self.line_start = chunk.endswith(b"\n")
            self._draw()

    def show(self, text: str) -> None:
        """Show the status line: in place on a terminal, else as a line of its own."""
        with self.lock:
            if self.closed:  # a poll that ended after `close`
                return
            if not self.live:
                self._write(text + "\n")
                return
            self.text = text
            self._draw()

    def close(self) -> None:
        """Clear the status line for good (what is written after this is written as it is)."""
        with self.lock:
            self._clear()
            self.text = ""
            self.closed = True

    def _clear(self) -> None:
        if self.drawn:
            self._write("\r\x1b[K")
            self.drawn = False

    def _draw(self) -> None:
        if self.text and self.line_start:
            self._write("\r" + self.text + "\x1b[K")
            self.drawn = True

    def _write(self, text: str) -> None:
        try:
            self.err.write(text)
            self.err.flush()
        except (OSError, ValueError):
            pass


def relay_output(console: Console, proc: subprocess.Popen[bytes]) -> list[threading.Thread]:
    """Start threads that copy a child's piped stdout and stderr through `console` until it ends."""
    threads = []
    for pipe, out in ((proc.stdout, sys.stdout.buffer), (proc.stderr, sys.stderr.buffer)):
        if pipe is None:
            continue
        thread = threading.Thread(target=_copy, args=(console, pipe, out), name="pulse-relay", daemon=True)
        thread.start()
        threads.append(thread)
    return threads


def _copy(console: Console, pipe: IO[bytes], out: IO[bytes]) -> None:
    try:
        while chunk := os.read(pipe.fileno(), 65536):
            console.relay(chunk, out)
    except (OSError, ValueError):
        pass


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1: never via a proxy


def _get(url: str) -> bytes:
    try:
        with _OPENER.open(url, timeout=POLL_TIMEOUT) as reply:
            return bytes(reply.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 503:  # /health of a worker that is not ready or unhealthy: the body says why
            return bytes(exc.read())
        raise


def _why(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    reason: Any = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError):
        return f"no answer within {POLL_TIMEOUT:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, OSError) and reason.strerror:
        return str(reason.strerror).lower()
    return type(reason).__name__


def poll_worker(web_url: str, clock: Callable[[], float] = time.monotonic) -> status.Sample:
    """One poll of a worker's /metrics, /api/v1/alerts and /health/detailed, and of the /metrics of the
    cluster's other workers it lists (never raises for a worker that does not answer: the sample says
    why, or which of the others did not answer)."""
    at = clock()
    try:
        metrics = _get(web_url + "/metrics").decode("utf-8", "replace")
        alerts = orjson.loads(_get(web_url + "/api/v1/alerts"))
        detailed = orjson.loads(_get(web_url + "/health/detailed"))
    except (OSError, ValueError) as exc:  # URLError and timeouts are OSErrors; bad JSON a ValueError
        return status.Sample(at, error=_why(exc))
    health, problems = status.health_of(detailed)
    events, lag = [status.events_total(metrics)], [status.consumer_lag(metrics)]
    others, missing = [], []
    for url in status.other_workers(detailed):
        try:
            theirs = _get(url + "/metrics").decode("utf-8", "replace")
        except OSError:
            missing.append(url)
            continue
        others.append(url)
        events.append(status.events_total(theirs))
        lag.append(status.consumer_lag(theirs))
    return status.Sample(
        at,
        events=status.summed(events),
        lag=None if (total := status.summed(lag)) is None else int(total),
        firing=status.firing_rules(alerts),
        health=health,
        problems=problems,
        others=tuple(others),
        missing=tuple(missing),
    )


_COLOURS = {"ok": "32", "warn": "33", "bad": "31"}


class StatusPoller:
    """Polls the worker every `every` s in a daemon thread and shows the status line on `console`.

    `stop` returns at once (a poll in flight is abandoned, its line dropped), so it never delays the
    ordered shutdown; nothing the poller meets prints an error or a traceback.
    """

    def __init__(
        self,
        web_url: str,
        console: Console,
        every: float = POLL_EVERY,
        poll: Callable[[str], status.Sample] = poll_worker,
    ) -> None:
        self.web_url = web_url
        self.console = console
        self.every = every
        self.poll = poll
        self.stopped = threading.Event()
        self.glyphs = _glyphs(console.err) if console.live else status.PLAIN
        self.colour = console.live and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
        self.thread = threading.Thread(target=self._run, name="pulse-status", daemon=True)

    def start(self) -> None:
        """Start polling."""
        self.thread.start()

    def stop(self) -> None:
        """Stop polling and clear the line (without waiting for a poll in flight)."""
        self.stopped.set()
        self.console.close()

    def _run(self) -> None:
        cadence = status.Cadence(tty=self.console.live)
        prev: status.Sample | None = None
        try:
            while not self.stopped.is_set():
                cur = self.poll(self.web_url)
                if self.console.live:
                    text = status.line(prev, cur, _width(self.console.err), self.glyphs)
                    self.console.show(self._paint(text, status.tone(cur)))
                elif cadence.due(cur.at, status.gist(prev, cur)):
                    self.console.show("status   " + status.line(prev, cur, PLAIN_WIDTH, status.PLAIN))
                prev = cur
                self.stopped.wait(self.every)
        except Exception:  # the status line is a nicety: it goes quietly, never with a traceback
            log.debug("the status line stopped", exc_info=True)
            self.console.close()

    def _paint(self, text: str, tone: str) -> str:
        bullet = self.glyphs.bullet
        if not self.colour or not bullet or not text.startswith(bullet):
            return text
        return f"\x1b[{_COLOURS[tone]}m{bullet}\x1b[0m{text[len(bullet) :]}"


def _width(stream: TextIO) -> int:
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError):
        columns = 80
    return max(columns - 1, 10)  # never the last column: some terminals wrap there


def _glyphs(stream: TextIO) -> status.Glyphs:
    try:
        (status.FANCY.bullet + status.FANCY.sep + status.FANCY.more).encode(stream.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return status.Glyphs("*", " | ", "...")
    lang = os.environ.get("LC_ALL") or os.environ.get("LC_CTYPE") or os.environ.get("LANG") or ""
    if lang.startswith(("ko", "ja", "zh")):  # ●, · and … may be drawn double: the line must not wrap
        return replace(status.FANCY, ambiguous=2)
    return status.FANCY


def status_wanted(asked: bool | None) -> tuple[bool, bool]:
    """(status line on, on a terminal) for `--status` (True), `--no-status` (False) or neither (None):
    by default on when both stdout and stderr are terminals."""
    tty = sys.stderr.isatty()
    if asked is None:
        return tty and sys.stdout.isatty(), tty
    return asked, tty


def up(demo: bool, config: Config, echo: object = print, status_line: bool | None = None) -> int:
    """Run broker + worker (+ simulator); return the exit code.

    `status_line`: True/False for `--status`/`--no-status`, None for the default (see `status_wanted`).
    """
    wanted, tty = status_wanted(status_line)
    console = Console(echo if callable(echo) else print, live=wanted and tty)
    say = console.say
    port = config.web.port
    supervisor = Supervisor(say=say)
    broker = EmbeddedBroker()
    # Every child in a process group of its own: a terminal's Ctrl-C reaches only `pulse up`, which
    # stops the simulator, then the worker (its graceful shutdown needs the broker), then the broker.
    broker.start(own_group=True)
    assert broker.proc is not None
    supervisor.add("broker", broker.proc)
    say(f"broker   {broker.url} (embedded Tansu, in memory)")
    env = child_env(
        PULSE_BROKER_URL=broker.url,
        PULSE_EMBEDDED_BROKER="1",
        PULSE_WEB_PORT=str(port),
    )
    # A live status line: the children write into pipes that `pulse up` copies above the line.
    piped = subprocess.PIPE if console.live else None
    if console.live:
        env["PYTHONUNBUFFERED"] = "1"  # a child's lines as they come, not when a pipe buffer fills

    def start(name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        proc = spawn(argv, env=env, stdout=piped, stderr=piped, own_group=True)
        supervisor.add(name, proc, relay_output(console, proc))
        return proc

    try:
        worker = start("worker", python_argv("worker"))
        if not wait_for_port("127.0.0.1", port, 60, alive=lambda: worker.poll() is None):
            say("worker did not start its web server; stopping")
            supervisor.stop_all()
            return 1
        say(f"worker   http://127.0.0.1:{port}/  (metrics: /metrics, health: /health)")
        web_url = f"http://127.0.0.1:{port}"
        recorded = endpoint.write(config, endpoint.Endpoint(broker.url, web_url, os.getpid()))
        say(f"recorded {recorded}: `pulse simulate`, `pulse alerts` and `pulse silence` find this pipeline")
        if demo:
            start(
                "simulator",
                python_argv(
                    "simulate", "--scenario", "steady", "--rate", "200", "--duration", "0", "--quiet"
                ),
            )
            say("simulator steady traffic, 200 events/s")
        say("Ctrl-C stops everything.")
        if wanted:
            poller = StatusPoller(web_url, console)
            supervisor.before_stop.append(poller.stop)
            poller.start()
        code = supervisor.watch()
    except BaseException:
        supervisor.stop_all()
        raise
    finally:
        endpoint.remove(config, os.getpid())
    say(f"stopped ({supervisor.reason or 'done'})")
    return code
