"""Table writes whose delivery can be awaited, acks that wait for delivery, and resume positions.

Faust's table `__setitem__` queues the changelog record in the producer buffer, and Faust's commit
flushes that buffer with a 0.1 s step that can return before it is empty. o4o-pulse instead hands each
changelog record straight to the producer and keeps its future, and acknowledges an input message only
when every record and message it caused has been delivered. The table keeps serving reads and
recovery (changelog replay, standbys, rebalances) as usual.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import Any

from faust.types import EventT, TableT

log = logging.getLogger(__name__)


class ChangelogWriter:
    """Write (or delete) table entries and return the delivery future of each changelog record."""

    def __init__(self, table: TableT[Any, Any]) -> None:
        self.table = table

    async def put(self, key: str | bytes, value: Any, partition: int) -> Awaitable[Any]:
        """Set `key` in memory and send it to changelog `partition`."""
        store = self.table.data
        store[key] = value
        key_partition = getattr(store, "_key_partition", None)
        if key_partition is not None:
            key_partition[key] = partition
        return await self.table.changelog_topic.send(key=key, value=value, partition=partition)

    async def delete(self, key: str | bytes, partition: int) -> Awaitable[Any]:
        """Remove `key` in memory and send a tombstone to changelog `partition`."""
        store = self.table.data
        store.pop(key, None)
        key_partition = getattr(store, "_key_partition", None)
        if key_partition is not None:
            key_partition.pop(key, None)
        return await self.table.changelog_topic.send(
            key=key, value=None, partition=partition, value_serializer="raw"
        )


REVOKE_GRACE_S = 4.0
"""How long a revocation waits for in-flight deliveries (below the embedded rebalance timeout)."""

SHUTDOWN_GRACE_S = 10.0
"""How long a graceful stop waits for in-flight deliveries (below the worker's 15 s shutdown limit)."""

_CRASHES: set[asyncio.Future[Any]] = set()


async def drain(
    futures: Iterable[asyncio.Future[Any]], what: str, at: str = "revocation", grace: float = REVOKE_GRACE_S
) -> None:
    """Wait (bounded) until in-flight deliveries are done, at a revocation or a graceful stop.

    A worker must not write to a partition after it gave it up: the new owner recovers the changelog
    when the rebalance completes, and a late write from the old owner would land after it and
    overwrite newer state at the next recovery. Kafka finishes the rebalance only after every member
    returned from its revocation, so waiting here closes that window.

    A graceful stop gives partitions up without a revocation: Faust pauses the consumer, then
    leaves the group when its consumer service stops. `on_before_shutdown` runs between the two, so
    draining there makes every write durable (and its input acknowledged, hence committed by the
    consumer's last commit) before another worker can take the partitions over.
    """
    pending = [f for f in futures if not f.done()]
    if not pending:
        return
    log.info("waiting for %d %s in flight at %s", len(pending), what, at)
    _, left = await asyncio.wait(pending, timeout=grace)
    if left:
        log.warning("%d %s still in flight after %.0fs at %s", len(left), what, grace, at)


def crash(app: Any, exc: BaseException, what: str) -> None:
    """Stop the worker after a failed delivery; on restart the unacknowledged input is replayed."""
    log.error("%s failed, stopping the worker so that a restart replays it: %r", what, exc)
    task = asyncio.ensure_future(app.crash(exc))
    _CRASHES.add(task)
    task.add_done_callback(_CRASHES.discard)


def ack_when_delivered(
    events: Iterable[EventT[Any]], futures: list[Awaitable[Any]], on_error: Any
) -> asyncio.Future[Any] | None:
    """Acknowledge `events` once every future is done; report a failure instead of acking."""
    events = list(events)
    if not futures:
        for event in events:
            event.ack()
        return None
    gathered = asyncio.gather(*futures)

    def done(fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            on_error(exc)
            return
        for event in events:
            event.ack()

    gathered.add_done_callback(done)
    return gathered


def seek_again(consumer: Any, tp: Any, offset: int) -> None:
    """Seek a partition back to `offset` once the message being handled is done with.

    A message fetched before a seek still arrives after it; Faust then records its (higher) offset
    as read, treats the offsets between as a gap it acknowledges, and drops the re-fetched messages
    below it. Seeking again right after such a message keeps the re-read intact: the seek runs once
    Faust has recorded that message, and sets the read offset back.
    """

    async def seek() -> None:
        await consumer.seek(tp, offset)

    def schedule() -> None:
        task = asyncio.ensure_future(seek())
        _CRASHES.add(task)
        task.add_done_callback(_CRASHES.discard)

    asyncio.get_running_loop().call_soon(schedule)


CHECK_EARLIEST_EVERY = 10
"""After this many seeks back without reaching the resume position, ask whether it still exists."""


class Gate:
    """The offset a partition must resume at after an assignment, until a message there arrives.

    The worker seeks each partition it owns to its own recorded position before Faust resumes it
    (`pipeline.kafka`), so the first message is normally that offset. A message below it was handled
    before: dropped, not acknowledged. A message above it was fetched before the seek: seek again. If
    the position no longer exists (retention deleted it), resume at the partition's earliest offset.
    """

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.reseeks = 0

    async def admit(self, consumer: Any, tp: Any, offset: int, what: str) -> bool:
        """Whether to take this message; drop it otherwise (seeking back when it came too early)."""
        if offset == self.offset:
            return True
        if offset < self.offset:
            return False
        self.reseeks += 1
        if self.reseeks % CHECK_EARLIEST_EVERY == 0:
            earliest = (await consumer.earliest_offsets(tp)).get(tp)
            if earliest is not None and earliest > self.offset:
                log.warning("%s: offset %d no longer exists; resuming at %d", what, self.offset, earliest)
                self.offset = earliest
                if offset == earliest:
                    return True
        seek_again(consumer, tp, self.offset)
        return False
