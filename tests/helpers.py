"""Test helpers: workers as real processes, publishing, reading topics, scraping /metrics."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from pipeline.tools.procs import free_port, spawn
from schemas.events import TOPIC_OF_TYPE

REPO = Path(__file__).resolve().parent.parent


def unique(name: str) -> str:
    """Return a name no other test uses (topic prefixes, app ids)."""
    return f"{name}{uuid.uuid4().hex[:8]}"


@dataclass
class Worker:
    """A `pulse worker` child process."""

    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Worker:
        self.port = free_port()
        self.env["PULSE_WEB_PORT"] = str(self.port)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed by the child's exit
        self.proc = spawn(
            [sys.executable, "-m", "pipeline.tools.cli", "worker"], env=self.env, stdout=log, stderr=log
        )
        return self

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                reply = httpx.get(f"{self.url}/health", timeout=1)
                # a group's first rebalance may hand out an empty assignment before the real one
                if reply.status_code == 200 and reply.json()["worker"]["partitions"]:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"worker not healthy within {timeout}s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no commit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return parse_metrics(httpx.get(f"{self.url}/metrics", timeout=10).text)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def detailed(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{self.url}/health/detailed", timeout=10).json()
        return data

    def series(self, at_ms: int | None = None) -> dict[str, Any]:
        params = {"at": str(at_ms)} if at_ms is not None else {}
        data: dict[str, Any] = httpx.get(f"{self.url}/api/v1/series", params=params, timeout=10).json()
        return data


@dataclass
class Cluster:
    """Workers of one deployment (one prefix and app id) on the test broker."""

    broker_url: str
    tmp: Path
    prefix: str = field(default_factory=lambda: unique("t") + ".")
    partitions: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        return self.broker_url.removeprefix("kafka://")

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "PULSE_BROKER_URL": self.broker_url,
                "PULSE_EMBEDDED_BROKER": "1",
                "PULSE_TOPIC_PREFIX": self.prefix,
                "PULSE_PARTITIONS": str(self.partitions),
                "PULSE_DATA_DIR": str(self.tmp / "data"),
                "PULSE_LOG_LEVEL": "info",
                "PYTHONPATH": str(REPO),
            }
        )
        env.update(self.extra_env)
        return env

    def add_worker(self, wait: bool = True) -> Worker:
        index = len(self.workers)
        worker = Worker(self.env(), self.tmp / f"worker{index}.log").start()
        self.workers.append(worker)
        if wait:
            worker.wait_healthy()
        return worker

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()

    def topic(self, event_type: str) -> str:
        return self.prefix + TOPIC_OF_TYPE[event_type]

    def publish(self, messages: Iterable[tuple[str, bytes]], key: bytes | None = None) -> int:
        """Publish (topic, value) pairs; return how many."""
        return asyncio.run(_publish(self.bootstrap, list(messages), key))

    def publish_events(self, events: Sequence[tuple[str, dict[str, Any]]], envelope: int = 1) -> int:
        """Publish (type, event) pairs, one per message or in envelopes."""
        out: list[tuple[str, bytes]] = []
        if envelope == 1:
            out = [(self.topic(kind), orjson.dumps(event)) for kind, event in events]
        else:
            by_kind: dict[str, list[dict[str, Any]]] = {}
            for kind, event in events:
                by_kind.setdefault(kind, []).append(event)
            for kind, items in by_kind.items():
                for i in range(0, len(items), envelope):
                    out.append((self.topic(kind), orjson.dumps(items[i : i + envelope])))
        return self.publish(out)

    def internal_topic(self, name: str) -> str:
        app_id = self.extra_env.get("PULSE_APP_ID", self.prefix + "pulse")
        return f"{app_id}-{name}"

    def wait_quiet(self, timeout: float = 90) -> None:
        """Prove that nothing more will arrive, by reading to end offsets (call once publishing is done).

        1. every input partition has been read to its end by the live worker that owns it, and every
           worker's stage 1 has delivered everything it read (`stage1Pending` 0);
        2. only then are the partials topic's end offsets final: every partials partition has been
           read to its end by its owner, whose cells are applied in memory as it reads;
        3. the ownership did not change meanwhile (a rebalance would replay: start again).
        """
        inputs = [self.topic(kind) for kind in TOPIC_OF_TYPE]
        partials = self.internal_topic("partials")
        seen: list[Any] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ends = asyncio.run(end_offsets(self.bootstrap, inputs))
                before = self._positions()
                if not _read_to(before, ends) or any(d["state"]["stage1Pending"] for d in before.values()):
                    seen = [_progress(before, ends)]
                    time.sleep(0.2)
                    continue
                ends_partials = asyncio.run(end_offsets(self.bootstrap, [partials]))
                after = self._positions()
                if _owners(after) == _owners(before) and _read_to(after, {**ends, **ends_partials}):
                    return
                seen = [_progress(after, {**ends, **ends_partials})]
            except (httpx.HTTPError, OSError) as exc:
                seen = [repr(exc)]
            time.sleep(0.2)
        raise AssertionError(f"not quiet within {timeout}s: {seen}")

    def _positions(self) -> dict[int, dict[str, Any]]:
        return {w.port: w.detailed() for w in self.workers if w.alive()}

    def read_topic(self, name: str, expect: int, timeout: float = 30) -> list[Any]:
        return asyncio.run(_read(self.bootstrap, name, expect, timeout))

    def summed_metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Sum every sample over all running workers' /metrics."""
        total: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for worker in self.workers:
            if worker.proc is None or worker.proc.poll() is not None:
                continue
            for key, value in worker.metrics().items():
                total[key] = total.get(key, 0.0) + value
        return total


def _owners(details: dict[int, dict[str, Any]]) -> dict[tuple[str, int], int]:
    """(topic, partition) -> port of the worker reading it."""
    out: dict[tuple[str, int], int] = {}
    for port, detail in details.items():
        for topic, positions in detail["kafka"]["positions"].items():
            for partition in positions:
                out[(topic, int(partition))] = port
    return out


def _read_to(details: dict[int, dict[str, Any]], ends: dict[tuple[str, int], int]) -> bool:
    """Whether every partition in `ends` is read by one live worker up to its end offset."""
    read: dict[tuple[str, int], int] = {}
    for detail in details.values():
        for topic, positions in detail["kafka"]["positions"].items():
            for partition, position in positions.items():
                read[(topic, int(partition))] = position
    return all(read.get(tp, -1) >= end for tp, end in ends.items())


def _progress(details: dict[int, dict[str, Any]], ends: dict[tuple[str, int], int]) -> dict[str, Any]:
    behind = {}
    owners = _owners(details)
    for tp, end in ends.items():
        port = owners.get(tp)
        position = details[port]["kafka"]["positions"][tp[0]][str(tp[1])] if port else None
        if position is None or position < end:
            behind[f"{tp[0]}:{tp[1]}"] = {"worker": port, "position": position, "end": end}
    pending = {port: d["state"]["stage1Pending"] for port, d in details.items()}
    return {"behind": behind, "stage1Pending": pending}


async def end_offsets(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    """End offset of every partition of `topics`, from fetch responses (Tansu's ListOffsets under-reports)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from yarl import URL

    from agents.kafka.transport import true_highwaters

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        await consumer.topics()  # metadata of every topic, so that partitions_for_topic knows them
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        answered = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    ends = await true_highwaters([URL(f"kafka://{bootstrap}")], answered)
    return {(tp.topic, tp.partition): int(end) for tp, end in ends.items()}


async def _publish(bootstrap: str, messages: list[tuple[str, bytes]], key: bytes | None) -> int:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, acks="all", max_request_size=8 << 20
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for topic, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(messages)


async def _read(bootstrap: str, name: str, expect: int, within: float) -> list[Any]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        name, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    records: list[Any] = []
    deadline = time.monotonic() + within
    try:
        while len(records) < expect and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                records.extend(messages)
    finally:
        await consumer.stop()
    return records


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse Prometheus text into {(sample name, sorted labels): value}."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def wait_until(check: Any, timeout: float, interval: float = 0.3, what: str = "condition") -> Any:
    """Call `check` until it returns a truthy value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


class TopicTail:
    """Read a topic from the beginning in a background thread.

    `records` holds (record timestamp in epoch seconds, value): the time the producer sent it.
    """

    def __init__(self, bootstrap: str, name: str) -> None:
        import threading

        self.bootstrap = bootstrap
        self.name = name
        self.records: list[tuple[float, Any]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise AssertionError(f"could not start reading {name}")

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            self.name,
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
            fetch_max_wait_ms=50,
        )
        await consumer.start()
        self._ready.set()
        try:
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=100)
                for messages in batch.values():
                    self.records.extend(
                        (m.timestamp / 1000, orjson.loads(m.value)) for m in messages if m.value
                    )
        finally:
            await consumer.stop()

    def values(self) -> list[Any]:
        return [value for _, value in list(self.records)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
