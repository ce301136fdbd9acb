"""Peer rows of `pulse bench`: a Quix Streams application and a Bytewax dataflow, each counting the
events in tumbling 60 s windows over the same broker, topics and single-event messages.

The peers run in their own virtual environment (PEERS_VENV, created by `make peers`, which `make
bench` depends on, from bench-peers-constraints.txt), because quixstreams 3.28 needs pydantic < 2.14
and the project pins 2.14. Each peer is a standalone program in pipeline/tools/bench/peers/ run
with that venv's python; it times itself from its first event (so the group join and the start-up
are not counted) to the moment every expected event has been counted into a window, and writes a
one-line JSON report.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import orjson

from pipeline.errors import PulseError
from pipeline.tools.procs import spawn, stop

ROOT = Path(__file__).resolve().parents[3]
PEERS_DIR = Path(__file__).resolve().parent / "peers"
PEERS_VENV = ROOT / ".venv-peers"
PEERS_CONSTRAINTS = ROOT / "bench-peers-constraints.txt"
PEERS = ("quix", "bytewax")
# Written by `make peers` once the venv is installed (see Makefile).
STAMP = ".installed"
STDERR_TAIL = 3000
# Extra time the parent grants a peer past its own hard timeout before it kills it.
KILL_GRACE_S = 30.0


class PeerError(PulseError):
    """A peer could not run, failed, or did not count every event exactly once."""


@dataclass(frozen=True)
class PeerReport:
    """What a peer measured."""

    peer: str
    events: int
    seconds: float
    eps: float
    cpu_seconds: float
    late: int
    windows: dict[str, int]


def peers_python(venv: Path = PEERS_VENV) -> Path:
    """The peers' interpreter."""
    return venv / "bin" / "python"


def peer_script(peer: str) -> Path:
    """The program of one peer."""
    if peer not in PEERS:
        raise PeerError(f"unknown bench peer {peer!r}: expected one of {', '.join(PEERS)}")
    return PEERS_DIR / f"{peer}_count.py"


def peers_available(venv: Path = PEERS_VENV, constraints: Path = PEERS_CONSTRAINTS) -> str | None:
    """None when the peers can run, else a one-line reason and the fix."""
    stamp = venv / "bin" / STAMP
    name = venv.name
    if not peers_python(venv).exists() or not stamp.exists():
        return f"the bench peers' venv {name} is missing: run `make bench` (or `make peers`) to create it"
    if constraints.exists() and constraints.stat().st_mtime > stamp.stat().st_mtime:
        return f"the bench peers' venv {name} is older than {constraints.name}: run `make peers` to update it"
    for peer in PEERS:
        if not peer_script(peer).exists():
            return f"the bench peer program {peer_script(peer)} is missing"
    return None


def peer_argv(
    peer: str,
    bootstrap: str,
    topics: list[str],
    expect: int,
    out: str,
    timeout: float,
    venv: Path = PEERS_VENV,
) -> list[str]:
    """Command line that runs one peer with the peers' python."""
    return [
        str(peers_python(venv)),
        str(peer_script(peer)),
        "--bootstrap",
        bootstrap,
        "--topics",
        *topics,
        "--expect",
        str(expect),
        "--out",
        out,
        "--timeout",
        f"{timeout:g}",
    ]


def parse_report(peer: str, data: bytes, expect: int) -> PeerReport:
    """Read a peer's one-line JSON report; PeerError unless every event was counted exactly once."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise PeerError(f"bench peer {peer} wrote an unreadable report ({exc}): {data[:200]!r}") from None
    if not isinstance(raw, dict):
        raise PeerError(f"bench peer {peer} wrote a report that is not a JSON object: {data[:200]!r}")
    try:
        report = PeerReport(
            peer=peer,
            events=int(raw["events"]),
            seconds=float(raw["seconds"]),
            eps=float(raw["eps"]),
            cpu_seconds=float(raw.get("cpu_seconds", 0.0)),
            late=int(raw.get("late", 0)),
            windows={str(k): int(v) for k, v in dict(raw["windows"]).items()},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PeerError(f"bench peer {peer} wrote an incomplete report ({exc!r}): {data[:200]!r}") from None
    in_windows = sum(report.windows.values())
    if report.events != expect or in_windows != expect:
        raise PeerError(
            f"bench peer {peer} counted {report.events} events ({in_windows} in its windows "
            f"{report.windows}, {report.late} dropped as late), expected {expect}"
        )
    updates = raw.get("updates")
    if updates is not None and updates != expect:
        raise PeerError(f"bench peer {peer} made {updates} window updates for {expect} events (one each)")
    if report.late:
        raise PeerError(f"bench peer {peer} dropped {report.late} events as late")
    if report.seconds <= 0 or report.eps <= 0:
        raise PeerError(f"bench peer {peer} reported no measured time: {data[:200]!r}")
    return report


def stderr_tail(data: bytes, limit: int = STDERR_TAIL) -> str:
    """The end of a peer's stderr, for an error message."""
    text = data.decode("utf-8", "replace").strip()
    if not text:
        return "(no stderr)"
    return text[-limit:]


def run(peer: str, bootstrap: str, topics: list[str], expect: int, timeout: float = 600) -> PeerReport:
    """Run one peer to completion in a subprocess with the peers' python; return its report."""
    reason = peers_available()
    if reason is not None:
        raise PeerError(reason)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    with tempfile.TemporaryDirectory(prefix=f"pulse-bench-{peer}-") as tmp:
        # The peer's own temporary files (Quix's state store) go under tmp too, so that they are
        # removed even when the peer is killed or ends on its hard timeout.
        env["TMPDIR"] = tmp
        out = os.path.join(tmp, "report.json")
        argv = peer_argv(peer, bootstrap, topics, expect, out, timeout)
        with open(os.path.join(tmp, "stderr"), "w+b") as err:
            proc = spawn(argv, env=env, stdout=subprocess.DEVNULL, stderr=err.fileno())
            try:
                code = proc.wait(timeout + KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                code = None
            finally:
                if proc.poll() is None:
                    stop(proc, timeout=5)
            err.seek(0)
            tail = stderr_tail(err.read())
        if code is None:
            raise PeerError(f"bench peer {peer} did not finish within {timeout + KILL_GRACE_S:g}s:\n{tail}")
        if not os.path.exists(out):
            raise PeerError(f"bench peer {peer} failed (exit {code}) without a report:\n{tail}")
        with open(out, "rb") as report:
            data = report.read()
    try:
        result = parse_report(peer, data, expect)
    except PeerError as exc:
        raise PeerError(f"{exc} (exit {code}):\n{tail}") from None
    if code != 0:
        raise PeerError(f"bench peer {peer} failed (exit {code}):\n{tail}")
    return result


def measure(peer: str, bootstrap: str, topics: list[str], expect: int, timeout: float = 600) -> float:
    """Events per second of one peer over the topics, from its first event to the last one counted."""
    return run(peer, bootstrap, topics, expect, timeout).eps
