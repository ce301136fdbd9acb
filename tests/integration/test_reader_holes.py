"""The reader re-reads a hole in a partition's offsets instead of moving past it (embedded broker).

Tansu 0.6 can make a batch readable before an earlier acknowledged one when several producers append
to one partition; a fetch in that moment skips the earlier batch (the chaos test lost a flush's
partials that way, about once in 13 loaded runs). The race itself cannot be produced on demand, so
this test makes the situation it creates: the reader expects offset 15 while the broker hands it 20
and on. The real reader, on the real broker, must then read 15 to 19 again before going on, and count
the hole as refilled. The pure logic (`agents.kafka.holes`) has its unit tests; this is the wiring.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry

from agents.kafka.positions import Lifecycle, Position, input_plan, partials_plan
from agents.kafka.reader import Reader
from agents.telemetry import PipelineMetrics
from pipeline.config.settings import BrokerConfig, Config
from tests.support.cluster import unique
from tests.support.waits import wait_until_async

pytestmark = pytest.mark.integration


class Taker:
    """Stands in for a stage: records the offsets the reader hands it, in order."""

    def __init__(self, metrics: PipelineMetrics) -> None:
        self.metrics = metrics
        self.taken: list[int] = []
        self.reader: Any = None

    def plan(self, *where: Any) -> Any:
        return input_plan(None)

    def start(self, where: Any, position: Position) -> None:
        pass

    def take(self, where: Any, records: list[Any]) -> None:
        self.taken.extend(r.offset for r in records)

    async def after_batch(self) -> None:
        pass

    def inflight(self) -> list[Any]:
        return []

    async def write(self) -> None:
        pass

    def stop(self) -> None:
        pass


class PartialsTaker(Taker):
    def plan(self, *where: Any) -> Any:
        return partials_plan(None)


async def _produce(producer: AIOKafkaProducer, topic: str, count: int) -> None:
    futures = [await producer.send(topic, b"x", partition=0) for _ in range(count)]
    await asyncio.gather(*futures)


async def _scenario(bootstrap: str) -> tuple[list[int], dict[str, float]]:
    prefix = unique("holes")
    events, partials = f"{prefix}.events.requests", f"{prefix}.partials"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(events, 1, 1), NewTopic(partials, 1, 1)])
    finally:
        await admin.close()
    metrics = PipelineMetrics(CollectorRegistry())
    stage1, stage2 = Taker(metrics), PartialsTaker(metrics)
    config = Config(broker=BrokerConfig(url=f"kafka://{bootstrap}", embedded=True))

    def crash(exc: BaseException, what: str) -> None:
        raise AssertionError(f"the reader crashed {what}: {exc!r}")

    reader = Reader(config, Lifecycle(), stage1, stage2, [events], partials, crash)  # type: ignore[arg-type]
    running = asyncio.create_task(reader.run())
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    await producer.start()
    try:
        reader.on_assigned(1, frozenset({0}))
        reader.on_recovered(1)
        await _produce(producer, events, 20)
        await wait_until_async(lambda: stage1.taken, 30, "offsets 0-19 read", until=lambda t: len(t) >= 20)
        # What the race looks like to the reader: it expects 15, the broker's next batch starts at 20.
        reader.next[TopicPartition(events, 0)] = 15
        await _produce(producer, events, 10)
        await wait_until_async(
            lambda: stage1.taken[20:], 30, "offset 29 read", until=lambda t: t[-1:] == [29]
        )
    finally:
        await producer.stop()
        await reader.stop()
        await running
    holes = {
        sample.labels["outcome"]: sample.value
        for metric in metrics.read_holes.collect()
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["topic"] == events
    }
    return stage1.taken, holes


def test_the_reader_reads_a_hole_again_before_going_on(broker: Any) -> None:
    taken, holes = asyncio.run(_scenario(broker.bootstrap))
    assert taken[:20] == list(range(20)), f"the first 20 offsets read: {taken[:20]}"
    assert taken[20:] == list(range(15, 30)), f"offsets read after the hole was made: {taken[20:]}"
    assert holes == {"refilled": 1.0}, holes
