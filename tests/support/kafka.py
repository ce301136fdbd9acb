"""The test process's own Kafka clients: publish, end offsets, read topics to them, follow a topic.

End offsets are the high-water marks of fetch responses (Tansu's ListOffsets under-reports them), from
a consumer created by the call: every fetch it makes is sent after the call began, so the end offsets
it reports include everything acknowledged before the call.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import orjson

TP = tuple[str, int]
"""(topic, partition)"""


def publish(bootstrap: str, messages: list[tuple[str, bytes]], key: bytes | None = None) -> int:
    """Publish (topic, value) pairs and wait until the broker acknowledged each; return how many."""
    return asyncio.run(_publish(bootstrap, messages, key))


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


def read_to_end(
    bootstrap: str, topics: list[str], from_start: bool = True, timeout: float = 60
) -> tuple[dict[TP, int], list[Any]]:
    """Read every partition of `topics` up to its end offset; return (end offset per partition, records).

    `from_start=False` reads only what lies past the offsets ListOffsets reports (for the end offsets).
    """
    return asyncio.run(_read_to_end(bootstrap, topics, from_start, timeout))


def end_offsets(bootstrap: str, topics: list[str]) -> dict[TP, int]:
    """The end offset of every partition of `topics`."""
    ends, _ = read_to_end(bootstrap, topics, from_start=False)
    return ends


async def _read_to_end(
    bootstrap: str, topics: list[str], from_start: bool, within: float
) -> tuple[dict[TP, int], list[Any]]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        await consumer.topics()  # metadata of every topic, so that partitions_for_topic knows them
        partitions = {t: sorted(consumer.partitions_for_topic(t) or ()) for t in topics}
        unknown = [t for t, ps in partitions.items() if not ps]
        if unknown:
            raise AssertionError(f"the broker knows no partition of {unknown}")
        tps = [TopicPartition(t, p) for t, ps in partitions.items() for p in ps]
        consumer.assign(tps)
        if from_start:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        deadline = time.monotonic() + within
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                records.extend(messages)
            behind = {}
            for tp in tps:
                high = consumer.highwater(tp)
                position = await consumer.position(tp)
                if high is None or position < high:
                    behind[f"{tp.topic}:{tp.partition}"] = (position, high)
            if not behind:
                ends = {(tp.topic, tp.partition): int(consumer.highwater(tp) or 0) for tp in tps}
                return ends, records
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"could not read {topics} to their end offsets within {within}s; "
                    f"(position, high-water mark) of the partitions behind: {behind}"
                )
    finally:
        await consumer.stop()


def values(records: list[Any]) -> list[Any]:
    """The JSON values of records, in (partition, offset) order; tombstones left out."""
    ordered = sorted(records, key=lambda r: (r.topic, r.partition, r.offset))
    return [orjson.loads(r.value) for r in ordered if r.value]


async def topic_partitions(bootstrap: str, prefix: str = "") -> dict[str, int]:
    """Partition count of every topic whose name starts with `prefix` (a real Kafka admin answer)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await asyncio.wait_for(admin.start(), 15)
    try:
        names = [t for t in await asyncio.wait_for(admin.list_topics(), 15) if t.startswith(prefix)]
        described = await asyncio.wait_for(admin.describe_topics(names), 15) if names else []
        return {t["topic"]: len(t["partitions"]) for t in described}
    finally:
        await admin.close()


class TopicTail:
    """Read a topic from the beginning in a background thread.

    `records` holds (record timestamp in epoch seconds, value): the time the producer sent it.
    """

    def __init__(self, bootstrap: str, name: str) -> None:
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
