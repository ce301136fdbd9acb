"""The `pulse` CLI as a user runs it: `pulse broker`, `pulse up [--demo]`, signals, crashes, orphans.

Every test runs the real console script on free loopback ports with its own data directory, tracks the
process tree it starts by walking /proc (PPid chains, with start times so a reused PID is not mistaken
for a survivor), and kills whatever is left when the test ends, pass or fail (fixture teardown).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from pipeline.tools.procs import free_port
from tests.support.kafka import topic_partitions
from tests.support.metrics import by_label, parse_metrics
from tests.support.needs import need_broker
from tests.support.procs import HOST, Process, pulse_process
from tests.support.waits import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")]

STOP_WITHIN = 10.0  # the issue: Ctrl-C or SIGTERM stops everything within 10 s
ORPHAN_WITHIN = 10.0  # after a SIGKILL of `pulse up`, PDEATHSIG must clear its children
START_WITHIN = 90.0  # broker + worker start; generous for a loaded 2-CPU machine


@pytest.fixture
def pulse(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start `pulse ARGS...` in a session of its own; every run is torn down after the test."""
    need_broker()
    runs: list[Process] = []

    def start(*args: str, web_port: int = 0) -> Process:
        run = pulse_process(tmp_path, *args, port=web_port, log=f"run{len(runs)}.log", PULSE_LOG_LEVEL="info")
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


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("signum", "group"),
    [(signal.SIGINT, False), (signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["SIGINT", "ctrl-c-to-process-group", "SIGTERM"],
)
def test_broker_serves_kafka_and_exits_cleanly_on_signal(
    pulse: Callable[..., Process], signum: signal.Signals, group: bool
) -> None:
    port = free_port(HOST)
    run = pulse("broker", "--port", str(port))
    run.wait_for("embedded broker ready", START_WITHIN)
    assert f"PULSE_BROKER_URL=kafka://{HOST}:{port}" in run.tail()
    tansu = run.child(lambda argv: "tansu" in Path(argv[0]).name if argv else False)
    assert f"tcp://{HOST}:{port}" in tansu.argv, tansu

    topics = asyncio.run(topic_partitions(f"{HOST}:{port}"))  # a real Kafka answer, not just an open socket
    assert isinstance(topics, dict)

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


def start_up(pulse: Callable[..., Process], demo: bool = True) -> tuple[Process, int]:
    """`pulse up [--demo]` on a free web port, once its worker is healthy and all children run."""
    run = pulse("up", "--demo") if demo else pulse("up")
    run.wait_for("Ctrl-C stops everything.", START_WITHIN)
    run.wait_healthy(START_WITHIN)
    tree = run.track()
    expected = [_is_broker, _is_worker] + ([_is_simulator] if demo else [])
    for match in expected:
        assert any(match(p.argv) for p in tree), f"missing child ({match.__name__}): {sorted(map(str, tree))}"
    return run, run.port


def _totals(port: int) -> dict[str, float]:
    samples = parse_metrics(httpx.get(f"http://{HOST}:{port}/metrics", timeout=5).text)
    return {name: sum(by_label(samples, name).values()) for name in ("http_requests_total", "orders_total")}


@pytest.mark.timeout(150)
def test_up_demo_serves_live_metrics(pulse: Callable[..., Process]) -> None:
    started = time.monotonic()
    run, port = start_up(pulse)
    first = wait_until(
        lambda: _totals(port),
        max(0.0, 60 - (time.monotonic() - started)),
        "http_requests_total and orders_total within 60 s of the start",
        until=lambda totals: all(totals.values()),
        interval=0.5,
        alive=run.alive,
        context=run.tail,
    )
    wait_until(
        lambda: _totals(port),
        23,
        f"the metrics to increase from {first}",
        until=lambda later: all(later[name] > first[name] for name in first),
        interval=1,
        alive=run.alive,
        context=run.tail,
    )
    assert run.alive(), run.tail()


@pytest.mark.timeout(150)
@pytest.mark.parametrize(
    ("signum", "group"),
    [(signal.SIGINT, False), (signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["SIGINT", "ctrl-c-to-process-group", "SIGTERM"],
)
def test_up_stops_everything_on_signal(
    pulse: Callable[..., Process], signum: signal.Signals, group: bool
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
    pulse: Callable[..., Process], signum: signal.Signals
) -> None:
    run = pulse("up", "--demo")
    port = run.port
    run.wait_for("broker   kafka://", START_WITHIN)  # the broker runs; the worker is starting
    settle = time.monotonic() + 1.0
    while time.monotonic() < settle:  # a second into the worker's start, its tree tracked meanwhile
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
def test_up_stops_the_rest_when_a_child_dies(pulse: Callable[..., Process], victim: str) -> None:
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
def test_sigkill_of_up_leaves_no_orphan(pulse: Callable[..., Process]) -> None:
    run, port = start_up(pulse)
    run.track()
    run.signal(signal.SIGKILL)
    run.wait(5)
    run.wait_no_survivors(ORPHAN_WITHIN)
    assert not accepts(port), f"the web port {port} still accepts connections"


@pytest.mark.timeout(150)
def test_sigkill_of_up_while_it_stops_after_a_broker_crash_leaves_no_orphan(
    pulse: Callable[..., Process],
) -> None:
    """The worst case for PDEATHSIG: `pulse up` is killed while it waits for a worker that does not react
    to SIGTERM (as a worker whose shutdown keeps retrying a dead broker may). The worker is frozen with
    SIGSTOP so that the case does not depend on how quickly its shutdown happens to be."""
    run, port = start_up(pulse)
    worker = run.child(_is_worker)
    os.kill(worker.pid, signal.SIGSTOP)
    os.kill(run.child(_is_broker).pid, signal.SIGKILL)
    # `pulse up` noticed and sent SIGTERM to the frozen worker (pending while it is stopped); it now
    # waits out the worker's grace
    wait_until(
        worker.pending,
        STOP_WITHIN,
        "SIGTERM pending on the frozen worker (its pending signals)",
        until=lambda pending: signal.SIGTERM in pending,
        interval=0.05,
        alive=run.alive,
        context=run.tail,
    )
    assert run.alive() and worker.alive(), f"`pulse up` did not wait for its worker\n{run.tail()}"
    run.track()
    run.signal(signal.SIGKILL)
    run.wait(5)
    run.wait_no_survivors(ORPHAN_WITHIN)
    assert not accepts(port), f"the web port {port} still accepts connections"
