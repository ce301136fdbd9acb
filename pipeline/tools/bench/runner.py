"""One measured consumer of `pulse bench`, run in its own process: the Faust floor or the pipeline.

It writes one JSON object to --out: first/last event times (monotonic), events, events per second, peak RSS.
Timing starts at the first event the consumer sees, so group joins and recovery are not counted.

With `--barrier DIR` (several pipeline workers measured together) a worker does not read before the
bench says so: once positioned it writes `DIR/ready-<pid>` with its partitions (and how many times it
was positioned) and waits for `DIR/go`; it keeps `DIR/total-<pid>` up to date with the events its
series hold and the monotonic time that total was reached. The bench sums the totals of all workers.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM; ru_maxrss would include the parent's)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


_OUT: list[str] = []


def _report(role: str, first: float, last: float, events: int) -> None:
    elapsed = max(last - first, 1e-9)
    line = {
        "role": role,
        "events": events,
        "seconds": elapsed,
        "eps": events / elapsed,
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }
    with open(_OUT[0], "wb") as out:
        out.write(orjson.dumps(line))
    os._exit(0)


def run_floor(args: argparse.Namespace) -> None:
    """A Faust agent that does nothing per event, over the same topics and messages.

    It runs with exactly the consumer settings of the pipeline (same Faust settings, same fetch
    wait), so that the ratio measures the pipeline's per-event work, not a difference in settings.
    """
    from faust.worker import Worker

    from agents.app import faust_settings
    from agents.kafka.transport import PulseFaustApp
    from pipeline.config.settings import load_config

    config = load_config()
    settings = faust_settings(config)
    os.makedirs(os.path.dirname(settings["datadir"]), exist_ok=True)
    app = PulseFaustApp(args.app_id, **{**settings, "web_enabled": False})
    app.configure_fetch(config)
    topic = app.topic(*args.topics, key_serializer="raw", value_serializer="raw")
    state: dict[str, Any] = {"n": 0, "first": 0.0}

    @app.agent(topic)
    async def floor(stream: Any) -> None:
        async for _ in stream:
            if state["n"] == 0:
                state["first"] = time.monotonic()
            state["n"] += 1
            if state["n"] >= args.expect:
                _report("floor", state["first"], time.monotonic(), state["n"])

    Worker(app, loglevel="warn", quiet=True, redirect_stdouts=False).execute_from_commandline()


def run_pipeline(args: argparse.Namespace) -> None:
    """The full pipeline; done when stage 2 holds every event in its totals."""
    from faust.worker import Worker

    from agents.app import Pulse, tune_gc
    from pipeline.config.settings import load_config
    from pipeline.tools.topics import ensure_topics

    config = load_config()
    pulse = Pulse(config)
    asyncio.run(ensure_topics(config, pulse.all_topic_names()))
    counted = ("http", "orders", "errors")
    barrier = Path(args.barrier) if args.barrier else None
    if barrier is not None:
        pulse.reader.before_reading = lambda partitions, current: _barrier(barrier, partitions, current)
    last = {"total": -1}

    @pulse.app.timer(0.02)
    async def check_done() -> None:
        first = pulse.stage1.first_event_at
        if first is None:
            return
        total = 0
        for key, series in pulse.stage2.view.states().items():
            if series.total is not None and key.startswith('["') and key[2:].split('"')[0] in counted:
                total += series.total.get("n", 0)
        if barrier is not None:
            if total != last["total"]:
                last["total"] = total
                _write(barrier / f"total-{os.getpid()}", {"total": total, "at": time.monotonic()})
            return
        if total >= args.expect:
            _report("pipeline", first, time.monotonic(), total)

    runner = Worker(pulse.app, loglevel="warn", quiet=True, redirect_stdouts=False)
    runner.spinner = None  # as `pulse worker` does (see pipeline/tools/cli.py)
    tune_gc()
    runner.execute_from_commandline()


async def _barrier(directory: Path, partitions: frozenset[int], current: Callable[[], bool]) -> None:
    """Say which partitions this worker holds, then wait for the bench's go (or a new rebalance)."""
    ready = directory / f"ready-{os.getpid()}"
    times = _read(ready).get("times", 0) + 1 if ready.exists() else 1
    _write(ready, {"partitions": sorted(partitions), "times": times})
    while not (directory / "go").exists():
        if not current():
            return
        await asyncio.sleep(0.01)


def _read(path: Path) -> dict[str, Any]:
    return dict(orjson.loads(path.read_bytes()))


def _write(path: Path, data: dict[str, Any]) -> None:
    """Replace a small JSON file atomically (the bench polls it; its `total-*` glob skips dotfiles)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(orjson.dumps(data))
    os.replace(tmp, path)


def main() -> None:
    """Entry point: python -m pipeline.tools.bench.runner floor|pipeline ..."""
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("floor", "pipeline"))
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--topics", nargs="*", default=[])
    parser.add_argument("--out", required=True, help="file that receives the JSON report")
    parser.add_argument("--barrier", help="directory of the join barrier (several workers measured together)")
    args = parser.parse_args()
    _OUT.append(args.out)
    logging.basicConfig(level=logging.WARNING)
    sys.argv = [sys.argv[0], "worker"]
    if args.role == "floor":
        run_floor(args)
    else:
        run_pipeline(args)


if __name__ == "__main__":
    main()
