"""A new user's first minutes with `pulse up --demo`: a calm console, the other commands find the
running pipeline without any setting, and Ctrl-C (SIGINT to the whole process group, as a terminal
sends it) stops the simulator, then the worker, then the broker, within 10 s and without an ERROR line.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.support.needs import need_broker
from tests.support.procs import pulse_process, run_pulse

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")]

START_WITHIN = 90.0
STOP_WITHIN = 10.0
CALM_LINES = 40
"""What the first minute of `pulse up --demo` may print at the most."""


def client_env(tmp: Path) -> dict[str, str]:
    """A second terminal: no PULSE_* setting at all, only the same data directory (the default one
    is relative to the working directory, which both terminals share)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    return env | {"PULSE_DATA_DIR": str(tmp / "data")}


@pytest.mark.timeout(180)
def test_up_demo_is_calm_findable_and_stops_in_order(tmp_path: Path) -> None:
    need_broker()
    run = pulse_process(tmp_path, "up", "--demo", "--status").start()
    try:
        started = time.monotonic()
        run.wait_for("Ctrl-C stops everything.", START_WITHIN)
        run.wait_for("ready: reading partitions", START_WITHIN)
        record = tmp_path / "data" / "endpoint.json"
        assert record.exists(), run.tail()

        # A second terminal finds the pipeline through endpoint.json and says so.
        sent = run_pulse("simulate", "--scenario", "payment-outage", "--duration", "2", "--quiet",
                         env=client_env(tmp_path), cwd=tmp_path)  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        assert "from the running `pulse up`" in sent.stderr, sent.stderr
        listed = run_pulse("rules", "list", env=client_env(tmp_path), cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        assert f"using the worker at http://127.0.0.1:{run.port}" in listed.stderr
        assert "4 rules from defaults" in listed.stdout

        # --status without a terminal: a plain line with the events/s measured from the worker's counter.
        run.wait_for("status   ", 20)
        assert re.search(r"^status   [1-9][\d,.]* events/s \| ", run.log_text(), re.MULTILINE), run.tail()

        # Calm: the banner, the children, "assigned", "ready", and nothing of Faust's or aiokafka's.
        first = run.log_text().splitlines()
        assert len(first) <= CALM_LINES, "\n".join(first)
        assert not any("[^" in line for line in first), "\n".join(first)  # Faust's service lines
        elapsed = time.monotonic() - started

        os.killpg(run.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        stopping = time.monotonic()
        run.wait(STOP_WITHIN)
        took = time.monotonic() - stopping
        run.wait_no_survivors(max(0.5, STOP_WITHIN - took))
    finally:
        run.cleanup()
    text = run.log_text()
    assert took < STOP_WITHIN, text
    order = re.findall(r"^(simulator|worker|broker)\s+stopped \(exit code (-?\d+)\)", text, re.MULTILINE)
    assert [name for name, _ in order] == ["simulator", "worker", "broker"], text
    # Each ended by itself, its clean-up done (no SIGKILL): the simulator's last flush, the worker's
    # graceful shutdown.
    assert dict(order) == {"simulator": "0", "worker": "0", "broker": "0"}, text
    assert "stopped (SIGINT)" in text
    assert not [line for line in text.splitlines() if "ERROR" in line], text
    assert not record.exists()  # removed at exit
    print(f"\n[first minutes] {len(first)} lines in the first {elapsed:.0f} s; Ctrl-C took {took:.1f} s")
