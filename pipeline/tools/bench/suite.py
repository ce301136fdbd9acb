"""`pulse bench`: throughput of the pipeline against a raw-consumer ceiling and a bare-Faust floor.

All figures come from one run on one embedded broker and two fixed event sets of the same realistic
mix (requests, orders and errors): `--events` published one event per message, and a larger set
(`--scale-events`) published both one event per message and in envelopes of `--envelope` events.
Measured, each `--repeat` times (the median is reported):
- faust_floor_eps: a Faust agent that does nothing per event, on the single-event messages;
- pipeline_single_eps: the full pipeline (both stages) on the single-event messages, from its first
  event until stage 2 holds every event;
- quix_eps / bytewax_eps: the peers, a tumbling 60 s count on the same single-event messages (a Quix
  Streams application and a Bytewax dataflow, run from their own virtual environment: `make bench`);
- ceiling_eps: aiokafka getmany + orjson decode of the larger set's single-event messages;
- ceiling_envelope_eps: the same over its envelopes (for reference);
- pipeline_envelope_eps: the full pipeline on the larger set's envelopes, timed as pipeline_single_eps;
  its ratio to ceiling_eps compares two runs over the same events with the same clock (from the first
  event read). Both are measured on the larger set because that clock starts after the first fetch,
  which may carry a large share of a small set (up to 32 MB): on 200,000 events the ceiling's window
  was about half a second and its figure jumped between about 220,000 and 400,000 events/s;
- workers1_single_eps / workers2_single_eps: scale-out, one and then two pipeline workers of one group
  on the larger set's single-event messages, each timed the same way: from the moment every worker
  holds its assignment (a join barrier) until the sum of their totals reaches the published count.
  Their ratio compares like with like: the same clock, the same messages, and windows of several
  seconds, so that the fixed tail of a run (the last flush and its delivery) does not decide the ratio;
- peak_rss_mb: the pipeline worker's peak resident memory;
- alert_latency_s: from publishing events that cross a rule's threshold to the webhook notification
  received, through a real worker (`pipeline.tools.bench.alerts`), one round per `--repeat`.
The last line printed is one JSON object with every figure and the ratios.
"""

from __future__ import annotations

import asyncio
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pipeline.tools.bench import alerts as bench_alerts
from pipeline.tools.broker import EmbeddedBroker
from pipeline.tools.procs import child_env, free_port, spawn, stop
from pipeline.tools.simulate import Traffic
from schemas.events import TOPIC_OF_TYPE

TYPES = ("request", "order", "error")
MIX = (0.85, 0.10, 0.05)


@dataclass
class BenchSettings:
    """What to measure (`pulse bench` gives every field but the seed; its options hold the defaults)."""

    events: int
    envelope: int
    repeat: int
    partitions: int
    scale_events: int
    seed: int = 7


def make_events(n: int, seed: int) -> list[tuple[str, bytes]]:
    """Return n (type, JSON) events of the benchmark mix, stamped within the last 30 s."""
    traffic = Traffic("steady", seed)
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    out = []
    for _ in range(n):
        kind = rng.choices(TYPES, MIX)[0]
        ts = now - rng.randint(0, 30_000)
        if kind == "request":
            event = traffic.request(ts, 0.0)
        elif kind == "order":
            event = traffic.order(ts, 0.0)
        else:
            event = traffic.error(ts, rng.choice(("api", "payment", "auth")))
        out.append((kind, orjson.dumps(event)))
    return out


async def publish(bootstrap: str, prefix: str, events: list[tuple[str, bytes]], size: int) -> int:
    """Publish events one per message (size 1) or in envelopes; return the message count."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10, max_batch_size=1 << 20, acks="all")
    await producer.start()
    futures = []
    try:
        if size == 1:
            for kind, data in events:
                futures.append(await producer.send(prefix + TOPIC_OF_TYPE[kind], data))
        else:
            by_kind: dict[str, list[bytes]] = {}
            for kind, data in events:
                by_kind.setdefault(kind, []).append(data)
            for kind, items in by_kind.items():
                for i in range(0, len(items), size):
                    value = b"[" + b",".join(items[i : i + size]) + b"]"
                    futures.append(await producer.send(prefix + TOPIC_OF_TYPE[kind], value))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(futures)


async def ceiling(bootstrap: str, topics: list[str], expect: int) -> float:
    """aiokafka getmany + orjson decode of every message; return events per second."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=32 << 20,
    )
    await consumer.start()
    count = 0
    first = 0.0
    try:
        while count < expect:
            batch = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            if batch and not first:
                first = time.perf_counter()
            for messages in batch.values():
                for message in messages:
                    data = orjson.loads(message.value)
                    count += len(data) if type(data) is list else 1
        return count / (time.perf_counter() - first)
    finally:
        await consumer.stop()


def _runner(
    role: str, broker: EmbeddedBroker, prefix: str, expect: int, app_id: str
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of one measured process (the pipeline with its default settings)."""
    env = child_env(
        PULSE_BROKER_URL=broker.url,
        PULSE_EMBEDDED_BROKER="1",
        PULSE_TOPIC_PREFIX=prefix,
        PULSE_APP_ID=app_id,
        PULSE_WEB_PORT=str(free_port()),
        PULSE_DATA_DIR=os.path.join(".pulse-data", "bench"),
        PULSE_LOG_LEVEL="warning",
    )
    argv = [
        sys.executable,
        "-m",
        "pipeline.tools.bench.runner",
        role,
        "--expect",
        str(expect),
        "--app-id",
        app_id,
        "--topics",
        *(prefix + TOPIC_OF_TYPE[k] for k in TYPES),
    ]
    return argv, env


def run_consumer(role: str, broker: EmbeddedBroker, prefix: str, expect: int, tag: str) -> dict[str, Any]:
    """Run one measured Faust process (floor or pipeline) to completion; return its report."""
    argv, env = _runner(role, broker, prefix, expect, f"bench-{role}-{tag}")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "report.json")
        done = subprocess.run([*argv, "--out", out], env=env, capture_output=True, timeout=900, check=False)
        if os.path.exists(out):
            with open(out, "rb") as report:
                return dict(orjson.loads(report.read()))
    raise RuntimeError(f"bench {role} failed (exit {done.returncode}):\n{done.stderr.decode()[-3000:]}")


BARRIER_TIMEOUT_S = 120.0
STABLE_S = 1.0
"""The partition split must hold this long before the clock starts (a group may rebalance twice)."""
RUN_TIMEOUT_S = 300.0


def run_workers(broker: EmbeddedBroker, prefix: str, expect: int, tag: str, workers: int = 2) -> float:
    """Several pipeline workers of one group on the same messages; return the cluster's events/s.

    The clock starts when every worker holds its share of the partitions (they wait at a barrier,
    positioned, before reading) and stops at the moment the sum of their totals reaches `expect`.
    """
    argv, env = _runner("pipeline", broker, prefix, expect, f"bench-workers-{tag}")
    with tempfile.TemporaryDirectory() as tmp:
        barrier = Path(tmp)
        logs = [(barrier / f"worker{i}.log").open("wb") for i in range(workers)]
        procs = [
            spawn(
                [*argv, "--out", str(barrier / f"report{i}"), "--barrier", tmp],
                env={**env, "PULSE_WEB_PORT": str(free_port())},
                stdout=log.fileno(),
                stderr=log.fileno(),
            )
            for i, log in enumerate(logs)
        ]
        try:
            positioned = _await_barrier(barrier, procs, workers)
            started = time.monotonic()
            (barrier / "go").touch()
            deadline = started + RUN_TIMEOUT_S
            while time.monotonic() < deadline:
                totals = [_read_json(f) for f in barrier.glob("total-*")]
                if sum(t["total"] for t in totals) >= expect:
                    again = {f.name: _read_json(f)["times"] for f in barrier.glob("ready-*")}
                    if again != positioned:  # a rebalance during the run: say so, the figure is lower
                        print(f"  note: the {workers} workers rebalanced during the run", file=sys.stderr)
                    return float(expect / (max(t["at"] for t in totals) - started))
                _check_alive(procs)
                time.sleep(0.01)
            raise RuntimeError(f"{workers} workers counted {totals} of {expect} within {RUN_TIMEOUT_S:.0f}s")
        except RuntimeError as exc:
            tails = [(barrier / f"worker{i}.log").read_text(errors="replace")[-3000:] for i in range(workers)]
            raise RuntimeError(f"{exc}\n" + "\n---\n".join(tails)) from None
        finally:
            for proc in procs:
                stop(proc)
            for log in logs:
                log.close()


def _await_barrier(barrier: Path, procs: list[subprocess.Popen[bytes]], workers: int) -> dict[str, int]:
    """Wait until every worker holds a disjoint share of the partitions, unchanged for STABLE_S."""
    deadline = time.monotonic() + BARRIER_TIMEOUT_S
    shares: dict[str, Any] = {}
    since = (time.monotonic(), "")
    while time.monotonic() < deadline:
        shares = {f.name: _read_json(f) for f in barrier.glob("ready-*")}
        held = [p for share in shares.values() for p in share["partitions"]]
        split = len(shares) == workers and all(s["partitions"] for s in shares.values())
        state = repr(sorted(shares.items())) if split and len(held) == len(set(held)) else ""
        if state != since[1]:
            since = (time.monotonic(), state)
        elif state and time.monotonic() - since[0] >= STABLE_S:
            return {name: share["times"] for name, share in shares.items()}
        _check_alive(procs)
        time.sleep(0.05)
    raise RuntimeError(
        f"the {workers} workers did not share the partitions within {BARRIER_TIMEOUT_S:.0f}s: {shares}"
    )


def _check_alive(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is not None:
            raise RuntimeError(f"a bench worker exited with {proc.returncode}")


def _read_json(path: Path) -> dict[str, Any]:
    return dict(orjson.loads(path.read_bytes()))


def run(settings: BenchSettings, echo: Any = print) -> dict[str, Any]:
    """Run the whole benchmark and return the figures."""
    with EmbeddedBroker() as broker:
        events = make_events(settings.events, settings.seed)
        single, scale, env = (f"bench{os.getpid()}{kind}." for kind in "swe")
        os.environ["PULSE_PARTITIONS"] = str(settings.partitions)
        asyncio.run(_create(broker, (single, scale, env), settings.partitions))
        n_single = asyncio.run(publish(broker.bootstrap, single, events, 1))
        echo(f"published {settings.events} events, {n_single} messages")
        large = make_events(settings.scale_events, settings.seed)
        n_large = asyncio.run(publish(broker.bootstrap, scale, large, 1))
        n_env = asyncio.run(publish(broker.bootstrap, env, large, settings.envelope))
        echo(f"published {settings.scale_events} events: {n_large} messages and {n_env} envelopes")
        del large
        topics_single = [single + TOPIC_OF_TYPE[k] for k in TYPES]
        topics_large = [scale + TOPIC_OF_TYPE[k] for k in TYPES]
        topics_env = [env + TOPIC_OF_TYPE[k] for k in TYPES]
        runs: dict[str, list[float]] = {k: [] for k in _KEYS}
        rss: list[float] = []
        from pipeline.tools.bench import peer_rows as bench_peers

        peers_missing = bench_peers.peers_available()
        if peers_missing is not None:
            echo(f"peer rows skipped: {peers_missing}")
        for i in range(settings.repeat):
            runs["ceiling_eps"].append(
                asyncio.run(ceiling(broker.bootstrap, topics_large, settings.scale_events))
            )
            runs["ceiling_envelope_eps"].append(
                asyncio.run(ceiling(broker.bootstrap, topics_env, settings.scale_events))
            )
            floor = run_consumer("floor", broker, single, settings.events, f"{i}")
            runs["faust_floor_eps"].append(floor["eps"])
            one = run_consumer("pipeline", broker, single, settings.events, f"s{i}")
            runs["pipeline_single_eps"].append(one["eps"])
            many = run_consumer("pipeline", broker, env, settings.scale_events, f"e{i}")
            runs["pipeline_envelope_eps"].append(many["eps"])
            rss.extend((one["peak_rss_mb"], many["peak_rss_mb"]))
            for workers in (1, 2):
                runs[f"workers{workers}_single_eps"].append(
                    run_workers(broker, scale, settings.scale_events, f"{workers}-{i}", workers)
                )
            if peers_missing is None:
                for peer in ("quix", "bytewax"):
                    runs[f"{peer}_eps"].append(
                        bench_peers.measure(peer, broker.bootstrap, topics_single, settings.events)
                    )
            echo(
                f"  pipeline 1/msg: {one['seconds']:.2f}s, {one['peak_rss_mb']} MB; "
                f"envelopes: {many['seconds']:.2f}s, {many['peak_rss_mb']} MB"
            )
            echo(
                f"run {i + 1}/{settings.repeat}: "
                + ", ".join(f"{k}={v[-1]:,.0f}" for k, v in runs.items() if v)
            )
        latencies = bench_alerts.measure(broker, settings.repeat, settings.partitions, echo)
    result: dict[str, Any] = {k: round(statistics.median(v)) if v else None for k, v in runs.items()}
    result["alert_latency_s"] = round(statistics.median(latencies), 2)
    result["alert_latency_max_s"] = round(max(latencies), 2)
    result["peak_rss_mb"] = max(rss)
    result["single_vs_floor"] = _median_ratio(runs["pipeline_single_eps"], runs["faust_floor_eps"])
    result["envelope_vs_ceiling"] = _median_ratio(runs["pipeline_envelope_eps"], runs["ceiling_eps"])
    result["workers2_vs_single"] = _median_ratio(runs["workers2_single_eps"], runs["workers1_single_eps"])
    result["single_vs_quix"] = _median_ratio(runs["pipeline_single_eps"], runs["quix_eps"])
    result["single_vs_bytewax"] = _median_ratio(runs["pipeline_single_eps"], runs["bytewax_eps"])
    result["targets_met"] = targets_met(result)
    result["events"] = settings.events
    result["scale_events"] = settings.scale_events
    result["envelope"] = settings.envelope
    result["repeat"] = settings.repeat
    result["partitions"] = settings.partitions
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} cpu, Python {platform.python_version()}"
    return result


_KEYS = (
    "ceiling_eps",
    "ceiling_envelope_eps",
    "faust_floor_eps",
    "pipeline_single_eps",
    "pipeline_envelope_eps",
    "workers1_single_eps",
    "workers2_single_eps",
    "quix_eps",
    "bytewax_eps",
)

TARGETS = {
    "single_vs_floor": 10.0,
    "single_vs_quix": 3.0,
    "single_vs_bytewax": 1.2,
    "envelope_vs_ceiling": 0.6,
    "workers2_vs_single": 1.5,
}
"""Each ratio must reach at least this (medians of the per-run ratios); a peer not measured fails."""
MAX_RSS_MB = 250.0
MAX_ALERT_LATENCY_S = 1.2


def _median_ratio(numerators: list[float], denominators: list[float]) -> float | None:
    if not numerators or not denominators:
        return None
    return round(statistics.median(a / b for a, b in zip(numerators, denominators, strict=True)), 3)


def targets_met(result: dict[str, Any]) -> bool:
    """Whether every throughput ratio, the memory and the alert latency meet their targets."""
    ratios = all(result.get(k) is not None and result[k] >= v for k, v in TARGETS.items())
    return ratios and result["peak_rss_mb"] <= MAX_RSS_MB and result["alert_latency_s"] <= MAX_ALERT_LATENCY_S


async def _create(broker: EmbeddedBroker, prefixes: tuple[str, ...], partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(p + t, partitions, 1) for p in prefixes for t in TOPIC_OF_TYPE.values()]
        )
    finally:
        await admin.close()


def table(result: dict[str, Any]) -> str:
    """Render the figures as a plain-text table."""

    def ratio(key: str, of: str) -> str:
        value = result.get(key)
        shown = "not measured" if value is None else f"{value:.2f}"
        return f"{shown} x {of} (target >= {TARGETS[key]:g})"

    large = f" ({result['scale_events']} events)"

    rows = [
        (f"raw ceiling (getmany + orjson), 1 event/msg{large}", result["ceiling_eps"], ""),
        (f"raw ceiling, envelopes of {result['envelope']}{large}", result["ceiling_envelope_eps"], ""),
        ("Faust floor (empty agent), 1 event/msg", result["faust_floor_eps"], ""),
        ("Quix Streams, tumbling 60 s count, 1 event/msg", result.get("quix_eps"), ""),
        ("Bytewax, tumbling 60 s count, 1 event/msg", result.get("bytewax_eps"), ""),
        (
            "pipeline, 1 event/msg",
            result["pipeline_single_eps"],
            "; ".join(
                (
                    ratio("single_vs_floor", "floor"),
                    ratio("single_vs_quix", "Quix"),
                    ratio("single_vs_bytewax", "Bytewax"),
                )
            ),
        ),
        (
            f"pipeline, envelopes of {result['envelope']}{large}",
            result["pipeline_envelope_eps"],
            ratio("envelope_vs_ceiling", "1 event/msg ceiling"),
        ),
        (
            f"scale-out{large}: 1 worker, 1 event/msg",
            result.get("workers1_single_eps"),
            "",
        ),
        (
            f"scale-out{large}: 2 workers, 1 event/msg",
            result.get("workers2_single_eps"),
            ratio("workers2_vs_single", "1 worker"),
        ),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'measurement':<{width}}  {'events/s':>10}  ratio", "-" * (width + 40)]
    for name, eps, note in rows:
        shown = "-" if eps is None else f"{eps:,}"
        lines.append(f"{name:<{width}}  {shown:>10}  {note}")
    lines.append(f"peak RSS of the pipeline worker: {result['peak_rss_mb']} MB (target <= {MAX_RSS_MB:g})")
    lines.append(
        f"alert latency (events published -> webhook notification received, rules every "
        f"{bench_alerts.RULES_INTERVAL_S:g}s, group_wait 0s): median {result['alert_latency_s']:.2f}s, "
        f"max {result['alert_latency_max_s']:.2f}s (target: median <= {MAX_ALERT_LATENCY_S:g}s)"
    )
    lines.append(
        f"{result['events']} events where no count is shown, median of {result['repeat']} runs, "
        f"{result['partitions']} partitions, {result['machine']}"
    )
    return "\n".join(lines)
