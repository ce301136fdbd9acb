"""Table writes whose delivery can be awaited, and the waits at a revocation or a graceful stop.

Why not Faust's `table[key] = value`: it may only run inside stream iteration (faust-streaming #497),
while the stages run in pulse's own reader loop; and it queues the changelog record in the producer
buffer, which Faust's commit flushes with a 0.1 s step that can return before it is empty. o4o-pulse
hands each changelog record straight to the producer and keeps its future, so that a stage can wait
until a record is durable before it sends what depends on it. The table keeps serving reads and
recovery (changelog replay, standbys, rebalances) as usual.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from faust.types import TableT

from pipeline.records import StoredFormatError

log = logging.getLogger(__name__)


class ChangelogWriter:
    """Write (or delete) table entries and return the delivery future of each changelog record.

    Records are serialized by the changelog topic's own codecs (`Topic.prepare_key`/`prepare_value`,
    so Faust's recovery reads them back) and handed to the app's producer directly: a stage writes
    thousands of cells a second, and Faust's `Topic.send` adds a message promise, sensors and
    callbacks to each.
    """

    def __init__(self, table: TableT[Any, Any]) -> None:
        self.table = table
        self.topic = table.changelog_topic
        self.topic_name = self.topic.get_topic_name()

    async def put(self, key: str | bytes, value: Any, partition: int) -> Awaitable[Any]:
        """Set `key` in memory and send it to changelog `partition`."""
        store = self.table.data
        store[key] = value
        # The memory store's own key -> partition map (private), kept as its changelog replay keeps it.
        key_partition = getattr(store, "_key_partition", None)
        if key_partition is not None:
            key_partition[key] = partition
        return await self._send(key, self.topic.prepare_value(value, None)[0], partition)

    async def delete(self, key: str | bytes, partition: int) -> Awaitable[Any]:
        """Remove `key` in memory and send a tombstone to changelog `partition`."""
        store = self.table.data
        store.pop(key, None)
        key_partition = getattr(store, "_key_partition", None)
        if key_partition is not None:
            key_partition.pop(key, None)
        return await self._send(key, None, partition)

    async def _send(self, key: str | bytes, value: bytes | None, partition: int) -> Awaitable[Any]:
        key_bytes = self.topic.prepare_key(key, None)[0]
        producer = self.table.app.producer
        sent: Awaitable[Any] = await producer.send(self.topic_name, key_bytes, value, partition, None, None)
        return sent


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

    A graceful stop gives partitions up without a revocation: Faust leaves the group when its consumer
    service stops, and `on_before_shutdown` runs before that, so draining there makes every write
    durable before another worker can take the partitions over.
    """
    pending = [f for f in futures if not f.done()]
    if not pending:
        return
    log.info("waiting for %d %s in flight at %s", len(pending), what, at)
    _, left = await asyncio.wait(pending, timeout=grace)
    if left:
        log.warning("%d %s still in flight after %.0fs at %s", len(left), what, grace, at)


Crash = Callable[[BaseException, str], None]
"""Stop the worker: `crash(exc, what)` (what failed, for the log)."""


def crasher(app: Any) -> Crash:
    """The `Crash` of a Faust app."""
    return lambda exc, what: crash(app, exc, what)


def crash(app: Any, exc: BaseException, what: str) -> None:
    """Stop the worker after a failed delivery (on restart the unacknowledged input is replayed), or
    on a stored record this version cannot read (the error says which version can)."""
    if isinstance(exc, StoredFormatError):
        log.error("%s failed, stopping the worker (a restart of this version stops again): %s", what, exc)
    else:
        log.error("%s failed, stopping the worker so that a restart replays it: %r", what, exc)
    task = asyncio.ensure_future(app.crash(exc))
    _CRASHES.add(task)
    task.add_done_callback(_CRASHES.discard)
