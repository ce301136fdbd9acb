"""`pulse bench`: throughput of the pipeline against a raw-consumer ceiling and a bare-Faust floor.

All figures come from one run on one embedded broker and one fixed event set (a realistic mix of
requests, orders and errors), published twice: one event per message, and in envelopes of
`--envelope` events. Measured, each `--repeat` times (the median is reported):
- ceiling_eps: aiokafka getmany + orjson decode of the single-event messages;
- ceiling_envelope_eps: the same over the envelopes (for reference);
- faust_floor_eps: a Faust agent that does nothing per event, on the single-event messages;
- pipeline_single_eps / pipeline_envelope_eps: the full pipeline (both stages) until stage 2 holds
  every event;
- peak_rss_mb: the pipeline worker's peak resident memory;
- alert_latency_s: from publishing events that cross a rule's threshold to the webhook notification
  received, through a real worker (`pipeline.bench_alerts`), one round per `--repeat`.
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
from typing import Any

import orjson

from pipeline import bench_alerts
from pipeline.broker import EmbeddedBroker
from pipeline.procs import child_env, free_port
from pipeline.simulate import Traffic
from schemas.events import TOPIC_OF_TYPE

TYPES = ("request", "order", "error")
MIX = (0.85, 0.10, 0.05)


@dataclass
class BenchSettings:
    """What to measure."""

    events: int = 200_000
    envelope: int = 100
    repeat: int = 3
    partitions: int = 4
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


def run_consumer(role: str, broker: EmbeddedBroker, prefix: str, expect: int, tag: str) -> dict[str, Any]:
    """Run one measured Faust process (floor or pipeline) to completion; return its report."""
    app_id = f"bench-{role}-{tag}"
    env = child_env(
        PULSE_BROKER_URL=broker.url,
        PULSE_EMBEDDED_BROKER="1",
        PULSE_TOPIC_PREFIX=prefix,
        PULSE_APP_ID=app_id,
        PULSE_WEB_PORT=str(free_port()),
        PULSE_DATA_DIR=os.path.join(".pulse-data", "bench"),
        PULSE_LOG_LEVEL="warning",
        PULSE_FLUSH_INTERVAL="0.25",
    )
    argv = [
        sys.executable,
        "-m",
        "pipeline.bench_runner",
        role,
        "--expect",
        str(expect),
        "--app-id",
        app_id,
        "--topics",
        *(prefix + TOPIC_OF_TYPE[k] for k in TYPES),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "report.json")
        done = subprocess.run([*argv, "--out", out], env=env, capture_output=True, timeout=900, check=False)
        if os.path.exists(out):
            with open(out, "rb") as report:
                return dict(orjson.loads(report.read()))
    raise RuntimeError(f"bench {role} failed (exit {done.returncode}):\n{done.stderr.decode()[-3000:]}")


def run(settings: BenchSettings, echo: Any = print) -> dict[str, Any]:
    """Run the whole benchmark and return the figures."""
    with EmbeddedBroker() as broker:
        events = make_events(settings.events, settings.seed)
        single, env = f"bench{os.getpid()}s.", f"bench{os.getpid()}e."
        os.environ["PULSE_PARTITIONS"] = str(settings.partitions)
        asyncio.run(_create(broker, single, env, settings.partitions))
        n_single = asyncio.run(publish(broker.bootstrap, single, events, 1))
        n_env = asyncio.run(publish(broker.bootstrap, env, events, settings.envelope))
        echo(f"published {settings.events} events: {n_single} messages and {n_env} envelopes")
        topics_single = [single + TOPIC_OF_TYPE[k] for k in TYPES]
        topics_env = [env + TOPIC_OF_TYPE[k] for k in TYPES]
        runs: dict[str, list[float]] = {k: [] for k in _KEYS}
        rss: list[float] = []
        for i in range(settings.repeat):
            runs["ceiling_eps"].append(asyncio.run(ceiling(broker.bootstrap, topics_single, settings.events)))
            runs["ceiling_envelope_eps"].append(
                asyncio.run(ceiling(broker.bootstrap, topics_env, settings.events))
            )
            floor = run_consumer("floor", broker, single, settings.events, f"{i}")
            runs["faust_floor_eps"].append(floor["eps"])
            one = run_consumer("pipeline", broker, single, settings.events, f"s{i}")
            runs["pipeline_single_eps"].append(one["eps"])
            many = run_consumer("pipeline", broker, env, settings.events, f"e{i}")
            runs["pipeline_envelope_eps"].append(many["eps"])
            rss.extend((one["peak_rss_mb"], many["peak_rss_mb"]))
            echo(
                f"  pipeline 1/msg: {one['seconds']:.2f}s, {one['peak_rss_mb']} MB; "
                f"envelopes: {many['seconds']:.2f}s, {many['peak_rss_mb']} MB"
            )
            echo(f"run {i + 1}/{settings.repeat}: " + ", ".join(f"{k}={v[-1]:,.0f}" for k, v in runs.items()))
        latencies = bench_alerts.measure(broker, settings.repeat, settings.partitions, echo)
    result: dict[str, Any] = {k: round(statistics.median(v)) for k, v in runs.items()}
    result["alert_latency_s"] = round(statistics.median(latencies), 2)
    result["alert_latency_max_s"] = round(max(latencies), 2)
    result["peak_rss_mb"] = max(rss)
    result["single_vs_floor"] = round(
        statistics.median(
            s / f for s, f in zip(runs["pipeline_single_eps"], runs["faust_floor_eps"], strict=True)
        ),
        3,
    )
    result["envelope_vs_ceiling"] = round(
        statistics.median(
            e / c for e, c in zip(runs["pipeline_envelope_eps"], runs["ceiling_eps"], strict=True)
        ),
        3,
    )
    result["targets_met"] = result["single_vs_floor"] >= 0.8 and result["envelope_vs_ceiling"] >= 0.25
    result["events"] = settings.events
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
)


async def _create(broker: EmbeddedBroker, single: str, env: str, partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(p + t, partitions, 1) for p in (single, env) for t in TOPIC_OF_TYPE.values()]
        )
    finally:
        await admin.close()


def table(result: dict[str, Any]) -> str:
    """Render the figures as a plain-text table."""
    rows = [
        ("raw ceiling (getmany + orjson), 1 event/msg", result["ceiling_eps"], ""),
        ("raw ceiling, envelopes", result["ceiling_envelope_eps"], ""),
        ("Faust floor (empty agent), 1 event/msg", result["faust_floor_eps"], ""),
        (
            "pipeline, 1 event/msg",
            result["pipeline_single_eps"],
            f"{result['single_vs_floor']:.2f} x floor (target >= 0.80)",
        ),
        (
            f"pipeline, envelopes of {result['envelope']}",
            result["pipeline_envelope_eps"],
            f"{result['envelope_vs_ceiling']:.2f} x ceiling (target >= 0.25)",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'measurement':<{width}}  {'events/s':>10}  ratio", "-" * (width + 40)]
    for name, eps, ratio in rows:
        lines.append(f"{name:<{width}}  {eps:>10,}  {ratio}")
    lines.append(f"peak RSS of the pipeline worker: {result['peak_rss_mb']} MB")
    lines.append(
        f"alert latency (events published -> webhook notification received, rules every "
        f"{bench_alerts.RULES_INTERVAL_S:g}s, group_wait 0s): median {result['alert_latency_s']:.2f}s, "
        f"max {result['alert_latency_max_s']:.2f}s"
    )
    lines.append(
        f"{result['events']} events, median of {result['repeat']} runs, "
        f"{result['partitions']} partitions, {result['machine']}"
    )
    return "\n".join(lines)
