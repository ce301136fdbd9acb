"""`pulse bench` peers: availability, command line and reports (no broker, no peers' venv)."""

from __future__ import annotations

import importlib.util
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest

from pipeline.tools.bench import peer_rows as bench_peers
from pipeline.tools.bench.peer_rows import PeerError, parse_report, peer_argv, peers_available, stderr_tail


def _report(**overrides: object) -> bytes:
    report: dict[str, object] = {
        "peer": "quix",
        "events": 10,
        "seconds": 0.5,
        "eps": 20.0,
        "cpu_seconds": 0.4,
        "late": 0,
        "windows": {"60000": 4, "120000": 6},
    }
    report.update(overrides)
    return json.dumps(report).encode()


def _venv(tmp_path: Path, stamp: bool = True) -> Path:
    venv = tmp_path / ".venv-peers"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    if stamp:
        (venv / "bin" / bench_peers.STAMP).touch()
    return venv


def _load(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import a peer program by path, as it runs (its directory first on sys.path): its module level
    needs neither quixstreams nor bytewax."""
    monkeypatch.syspath_prepend(str(bench_peers.PEERS_DIR))
    spec = importlib.util.spec_from_file_location(f"peer_{name}", bench_peers.PEERS_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_missing_venv_says_how_to_create_it(tmp_path: Path) -> None:
    reason = peers_available(tmp_path / ".venv-peers", tmp_path / "constraints.txt")
    assert reason is not None and "\n" not in reason
    assert "make bench" in reason and ".venv-peers" in reason


def test_venv_without_stamp_is_not_ready(tmp_path: Path) -> None:
    """An interrupted `make peers` leaves a python but no stamp."""
    reason = peers_available(_venv(tmp_path, stamp=False), tmp_path / "constraints.txt")
    assert reason is not None and "make bench" in reason


def test_ready_venv(tmp_path: Path) -> None:
    constraints = tmp_path / "constraints.txt"
    constraints.touch()
    venv = _venv(tmp_path)
    os.utime(constraints, (1_000_000, 1_000_000))
    assert peers_available(venv, constraints) is None


def test_venv_older_than_its_constraints_is_stale(tmp_path: Path) -> None:
    venv = _venv(tmp_path)
    constraints = tmp_path / "constraints.txt"
    constraints.touch()
    stamp = venv / "bin" / bench_peers.STAMP
    os.utime(stamp, (1_000_000, 1_000_000))
    reason = peers_available(venv, constraints)
    assert reason is not None and "make peers" in reason


def test_peer_programs_exist() -> None:
    for peer in bench_peers.PEERS:
        assert bench_peers.peer_script(peer).is_file()


def test_peer_argv_runs_the_peers_python(tmp_path: Path) -> None:
    argv = peer_argv("bytewax", "127.0.0.1:9092", ["a", "b"], 200_000, "/tmp/r.json", 600.0, tmp_path)
    assert argv[0] == str(tmp_path / "bin" / "python")
    assert argv[1].endswith("pipeline/tools/bench/peers/bytewax_count.py")
    assert argv[2:] == [
        "--bootstrap",
        "127.0.0.1:9092",
        "--topics",
        "a",
        "b",
        "--expect",
        "200000",
        "--out",
        "/tmp/r.json",
        "--timeout",
        "600",
    ]


def test_unknown_peer() -> None:
    with pytest.raises(PeerError, match="unknown bench peer 'flink'"):
        bench_peers.peer_script("flink")


def test_parse_report() -> None:
    report = parse_report("quix", _report(), 10)
    assert (report.events, report.eps, report.seconds, report.late) == (10, 20.0, 0.5, 0)
    assert report.windows == {"60000": 4, "120000": 6}


def test_wrong_count_is_an_error() -> None:
    with pytest.raises(PeerError, match="counted 9 events"):
        parse_report("quix", _report(events=9), 10)


def test_windows_must_hold_every_event() -> None:
    with pytest.raises(PeerError, match="9 in its windows"):
        parse_report("bytewax", _report(windows={"60000": 9}), 10)


def test_late_events_are_an_error() -> None:
    with pytest.raises(PeerError, match="dropped 1 events as late"):
        parse_report("bytewax", _report(late=1), 10)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"events": 10}',
        b'{"events": "x", "seconds": 1, "eps": 1, "windows": {}}',
    ],
)
def test_unreadable_reports(data: bytes) -> None:
    with pytest.raises(PeerError, match="bench peer quix wrote"):
        parse_report("quix", data, 10)


def test_report_without_time() -> None:
    with pytest.raises(PeerError, match="no measured time"):
        parse_report("quix", _report(seconds=0.0, eps=0.0), 10)


def test_stderr_tail() -> None:
    assert stderr_tail(b"") == "(no stderr)"
    assert stderr_tail(b"x" * 10 + b"the end\n", limit=7) == "the end"


def test_quix_report_sums_partitions_into_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    quix = _load("quix_count", monkeypatch)
    counter = quix.Counter(10, lambda: None)
    counter.cells = {("requests", 0, 60_000): 3, ("requests", 1, 60_000): 2, ("orders", 0, 120_000): 5}
    counter.total, counter.updates = 10, 10
    counter.first, counter.last = 1.0, 1.5
    report = parse_report("quix", json.dumps(counter.report()).encode(), 10)
    assert report.windows == {"60000": 5, "120000": 5}
    assert report.eps == 20.0


def test_bytewax_counter_reads_event_time_and_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    bytewax = _load("bytewax_count", monkeypatch)
    counter = bytewax.Counter(3)
    assert counter.timestamp(("t", {"ts": 90_500})) == datetime(1970, 1, 1, 0, 1, 30, 500_000, tzinfo=UTC)
    assert counter.first > 0
    counter.closed([("a", (1, 2))])
    assert not counter.last
    counter.closed([("b", (2, 1))])
    assert counter.last >= counter.first
    report = parse_report("bytewax", json.dumps(counter.report()).encode(), 3)
    assert report.windows == {"60000": 2, "120000": 1}


def test_one_window_update_per_event() -> None:
    """Quix reports its window updates: an event counted twice shows there."""
    assert parse_report("quix", _report(updates=10), 10).events == 10
    with pytest.raises(PeerError, match="11 window updates for 10 events"):
        parse_report("quix", _report(updates=11), 10)
