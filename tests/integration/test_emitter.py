"""The service-side Emitter batches events into envelopes, bounded by count, bytes and linger."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from pipeline.tools.emit import Emitter
from tests.support.cluster import Cluster

pytestmark = pytest.mark.integration


def order(i: int) -> dict[str, object]:
    return {
        "order_id": f"o-{i}",
        "status": "created",
        "amount": 1000 + i,
        "currency": "KRW",
        "user_id": i,
        "user_role": "customer",
        "payment_method": "card",
        "item_count": 1,
    }


def test_batches_by_count_and_size_and_linger(cluster: Cluster) -> None:
    async def run() -> tuple[int, int]:
        async with Emitter(cluster.bootstrap, prefix=cluster.prefix, max_events=10, linger=5) as em:
            for i in range(25):
                await em.emit("order", order(i))
            await em.flush()
            by_count = em.sent_messages
        async with Emitter(
            cluster.bootstrap, prefix=cluster.prefix, max_events=1000, max_bytes=600, linger=5
        ) as em:
            for i in range(25, 45):
                await em.emit("order", order(i))
            await em.flush()
            by_size = em.sent_messages
        return by_count, by_size

    by_count, by_size = asyncio.run(run())
    assert by_count == 3
    records = cluster.read(cluster.topic("order"))
    batches = [orjson.loads(r.value) for r in records]
    first = [b for b in batches if int(b[0]["order_id"][2:]) < 25]
    second = [(b, r) for b, r in zip(batches, records, strict=True) if int(b[0]["order_id"][2:]) >= 25]
    assert sorted(len(b) for b in first) == [5, 10, 10]
    assert all(len(r.value) <= 600 for _, r in second)
    assert sum(len(b) for b, _ in second) == 20 and by_size == len(second) > 1
    ids = sorted(int(e["order_id"][2:]) for b in batches for e in b)
    assert ids == list(range(45)), "nothing lost or doubled"
    for batch in batches:  # each envelope keeps emit order
        numbers = [int(e["order_id"][2:]) for e in batch]
        assert numbers == sorted(numbers)
    assert all("ts" in e for b in batches for e in b), "ts is added"


def test_linger_sends_without_flush(cluster: Cluster) -> None:
    async def run() -> float:
        async with Emitter(cluster.bootstrap, prefix=cluster.prefix, max_events=100, linger=0.2) as em:
            started = time.monotonic()
            for i in range(3):
                await em.emit("order", order(i))
            for _ in range(250):  # up to 5 s; the assertion below says how long it took
                if em.sent_messages:
                    break
                await asyncio.sleep(0.02)
            return time.monotonic() - started

    waited = asyncio.run(run())
    assert 0.15 <= waited < 2.0
    records = cluster.read(cluster.topic("order"))
    assert len(orjson.loads(records[0].value)) == 3


def test_unknown_type_is_refused(cluster: Cluster) -> None:
    async def run() -> None:
        async with Emitter(cluster.bootstrap, prefix=cluster.prefix) as em:
            await em.emit("purchase", {"x": 1})

    with pytest.raises(ValueError, match="unknown event type"):
        asyncio.run(run())
