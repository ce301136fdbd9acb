"""The hot path's own Kafka reader: the input topics and the partials topic, in `getmany` batches.

Faust keeps group membership and the co-partitioned assignment: its consumer subscribes only to the
table changelogs, and the worker owns partition p of every pulse topic when it holds the active
flushlog changelog partition p. This reader (a plain aiokafka consumer, no group) then reads input
partition p of every `events.*` topic (stage 1) and partials partition p (stage 2), from positions
that `agents.kafka.positions` computes from the recovered tables, never from committed offsets.

The cycle, driven by Faust's rebalance signals (`agents.kafka.positions.Lifecycle`):
- assigned: note the partitions; their tables are being recovered, nothing is read;
- rebalance complete (tables recovered): compute each partition's position, seek, start reading;
- revoked, or the worker stops: stop reading after the batch in hand, then wait for in-flight
  flushes and cell writes before the revocation completes, so the next owner recovers all of them.

Everything that runs on the clock (idle flushes, cell writes, rules, pane expiry) runs in the same
loop between batches, so it sees the same state as the events, with no tick messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

from agents.kafka import holes
from agents.kafka.durable import REVOKE_GRACE_S, SHUTDOWN_GRACE_S, Crash, drain
from agents.kafka.positions import Lifecycle, Phase, Position, moved, resolve
from agents.kafka.transport import client_security
from pipeline.config.settings import BrokerConfig, Config
from pipeline.records import StoredFormatError

if TYPE_CHECKING:
    from faust import App

    from agents.stages.aggregate import Stage2
    from agents.stages.ingest import Stage1

log = logging.getLogger(__name__)

POLL_MS = 100
"""Longest wait for records; also the resolution of the clock work between batches."""
MAX_RECORDS = 8192
"""Most records taken from one `getmany`, which bounds the time between clock checks."""
RETRY_S = 0.5
"""Pause after a failed fetch or positioning before trying again."""


def keep_record(value: bytes | None) -> bytes | None:
    """The reader consumer's value deserializer: the bytes as they are. Its identity also marks the
    consumer whose fetched records are handed over as aiokafka's own record objects (see below)."""
    return value


_consumer_record = PartitionRecords._consumer_record


def _records_as_fetched(self: Any, tp: TopicPartition, record: Any) -> Any:
    """aiokafka builds a `ConsumerRecord` (eleven fields and a headers tuple) around every fetched record,
    for fields the hot path never reads; without it, one event per message ran about 20% faster (median
    of 8 interleaved A/B pairs). For the reader's consumer (marked by `keep_record`) the record the fetch
    decoded is handed over as it is: it has the `offset`, `key`, `value` and `timestamp` that stage 1 and
    stage 2 read. Every other consumer of the process (Faust's) still gets `ConsumerRecord`s; if this
    override were missing, the reader would still work, with `ConsumerRecord`s."""
    if self._value_deserializer is keep_record:
        return record
    return _consumer_record(self, tp, record)


PartitionRecords._consumer_record = _records_as_fetched


@dataclass(eq=False)
class Reader:
    """Read the owned input and partials partitions; hand each batch to its stage."""

    config: Config
    lifecycle: Lifecycle
    stage1: Stage1
    stage2: Stage2
    input_names: Iterable[str]
    partials_name: str
    crash: Crash

    def __post_init__(self) -> None:
        stage1, stage2 = self.stage1, self.stage2
        stage1.reader = stage2.reader = self
        self.input_topics = sorted(self.input_names)
        self.consumer: AIOKafkaConsumer | None = None
        self.next: dict[TopicPartition, int] = {}
        """Next offset to read of every partition being read (for lag)."""
        self.wake = asyncio.Event()
        self.parked = asyncio.Event()
        self.parked.set()
        self.stopping = False
        self.ready_since: float | None = None
        """Wall time reading started after the last assignment (None while not reading)."""
        self.assigned_at = 0.0
        self.settle_s = settle_time(self.config.broker)
        self.holes: holes.Holes | None = None
        """Offsets re-read until they fill (the embedded broker only; see `agents.kafka.holes`)."""
        if self.config.broker.embedded:
            counter = stage1.metrics.read_holes
            self.holes = holes.Holes(
                lambda tp, outcome: counter.labels(cast(TopicPartition, tp).topic, outcome).inc()
            )
        self.before_reading: Callable[[frozenset[int], Callable[[], bool]], Awaitable[None]] | None = None
        """Awaited once positioned, before reading starts (`pulse bench` holds several workers there
        until all hold their assignment); it gets the partitions and whether they are still current."""

    # -- Faust's rebalance signals ----------------------------------------------------------------

    def on_assigned(self, group_generation: int, partitions: frozenset[int]) -> None:
        """The group assigned `partitions`; wait for their tables' recovery."""
        self.lifecycle.assigned(group_generation, partitions)
        self.assigned_at = time.monotonic()
        self.ready_since = None
        log.info(
            "assigned partitions %s (generation %d); recovering tables", sorted(partitions), group_generation
        )

    def on_recovered(self, group_generation: int) -> None:
        """The tables of the assignment are recovered: position and read (if still current)."""
        if self.lifecycle.recovered(group_generation):
            self.wake.set()

    async def on_revoked(self, grace: float = REVOKE_GRACE_S, at: str = "revocation") -> None:
        """Stop reading and wait until everything in flight is durable."""
        self.lifecycle.revoked()
        self.ready_since = None
        self.wake.set()
        # One deadline for the whole handler: the group waits for it (up to its rebalance timeout).
        deadline = time.monotonic() + grace
        try:  # the batch in hand is finished first; a fetch or seek stuck on the broker is not waited for
            await asyncio.wait_for(self.parked.wait(), grace)
        except TimeoutError:
            log.warning(
                "the reader did not stop within %.0fs at %s; what it does next is not written", grace, at
            )
        await self.stage2.write()
        await drain(self.stage1.inflight(), "stage-1 flushes", at, max(deadline - time.monotonic(), 0.1))
        await drain(self.stage2.inflight(), "cell writes", at, max(deadline - time.monotonic(), 0.1))
        self.stage1.stop()
        self.stage2.stop()

    async def stop(self) -> None:
        """A graceful stop: like a revocation (Faust does not revoke at shutdown), then stop the loop."""
        self.stopping = True
        await self.on_revoked(SHUTDOWN_GRACE_S, "shutdown")

    # -- state ------------------------------------------------------------------------------------

    def reading(self) -> bool:
        """Whether this worker reads the partitions it owns (tables recovered, positions sought)."""
        return self.lifecycle.reading()

    def is_ready(self) -> bool:
        """Whether the worker holds an assignment, recovered its state and reads its partitions."""
        return self.lifecycle.is_ready()

    def active_partitions(self) -> set[int]:
        """The partitions this worker owns and reads right now (none during a rebalance)."""
        return self.lifecycle.active_partitions()

    def lag(self) -> dict[str, int]:
        """Messages not yet read per topic, over the partitions being read."""
        consumer = self.consumer
        out: dict[str, int] = {}
        if consumer is None or not self.reading():
            return out
        for tp, position in list(self.next.items()):
            high = consumer.highwater(tp) if tp in consumer.assignment() else None
            if high is not None:
                out[tp.topic] = out.get(tp.topic, 0) + max(high - position, 0)
        return out

    def positions(self) -> dict[str, dict[int, int]]:
        """Next offset to read per topic and partition, over the partitions being read."""
        out: dict[str, dict[int, int]] = {}
        for tp, position in list(self.next.items()):
            out.setdefault(tp.topic, {})[tp.partition] = position
        return out

    def high(self, tp: TopicPartition) -> int | None:
        """The partition's high-water mark at its last fetch (None before the first)."""
        consumer = self.consumer
        return consumer.highwater(tp) if consumer is not None else None

    def caught_up(self, tp: TopicPartition) -> bool:
        """Whether everything the broker held at the last fetch of `tp` has been read."""
        consumer = self.consumer
        if consumer is None:
            return False
        high = consumer.highwater(tp)
        return high is not None and self.next.get(tp, 0) >= high

    # -- the loop ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Read until the worker stops."""
        wait = self.config.broker.timings().get("fetch_max_wait")
        max_message = self.config.ingest.max_message_bytes
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.config.broker.bootstrap_servers(),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="none",  # a position that no longer exists is decided here, not reset
            fetch_max_wait_ms=int((wait if wait is not None else 0.5) * 1000),
            max_partition_fetch_bytes=max(4 << 20, max_message + 4096),
            fetch_max_bytes=32 << 20,
            value_deserializer=keep_record,
            **client_security(self.config.broker),
        )
        self.consumer = consumer
        await consumer.start()
        try:
            while not self.stopping:
                await self._step(consumer)
        except StoredFormatError as exc:  # a record this version cannot read: say so and stop
            self.crash(exc, "reading a stored record")
            raise
        finally:
            self.parked.set()
            await consumer.stop()

    async def _step(self, consumer: AIOKafkaConsumer) -> None:
        lifecycle = self.lifecycle
        phase = lifecycle.phase
        if phase is Phase.POSITIONING:
            self.parked.clear()
            try:
                await self._position(consumer, lifecycle.generation)
            except KafkaError as exc:
                log.warning("positioning the owned partitions failed: %r; retrying", exc)
                await asyncio.sleep(RETRY_S)
            return
        if phase is not Phase.READING or not self.next:  # idle, or nothing owned
            if phase is not Phase.READING and self.next:
                _stop_fetching(consumer)
                self.next.clear()
            self.parked.set()
            self.wake.clear()
            await self.wake.wait()
            return
        self.parked.clear()
        generation = lifecycle.generation
        try:
            batches = await consumer.getmany(timeout_ms=POLL_MS, max_records=MAX_RECORDS)
        except OffsetOutOfRangeError as exc:
            await self._out_of_range(consumer, exc)
            return
        except KafkaError as exc:
            log.warning("fetching the owned partitions failed: %r; retrying", exc)
            await asyncio.sleep(RETRY_S)
            return
        if not lifecycle.current(generation):
            return  # revoked while fetching: the next owner reads these
        partials = self.partials_name
        pending, reread = self.holes, False
        for tp, records in batches.items():
            if pending is not None and records:
                kept = pending.take(tp, self.next[tp], records, time.monotonic())
                if kept < len(records):
                    consumer.seek(tp, records[kept - 1].offset + 1 if kept else self.next[tp])
                    records, reread = records[:kept], True
            if not records:
                continue
            self.next[tp] = records[-1].offset + 1
            if tp.topic == partials:
                self.stage2.take(tp.partition, records)
            else:
                self.stage1.take(tp, records)
        await self.stage1.after_batch()
        if lifecycle.current(generation):  # (stage 1 may have waited for its deliveries)
            await self.stage2.after_batch()
        if reread:
            await asyncio.sleep(holes.RETRY_S)

    async def _position(self, consumer: AIOKafkaConsumer, generation: int) -> None:
        partitions = sorted(self.lifecycle.partitions)
        tps = [TopicPartition(t, p) for t in self.input_topics for p in partitions]
        tps += [TopicPartition(self.partials_name, p) for p in partitions]
        plans = {tp: self.stage1.plan(tp) for tp in tps if tp.topic != self.partials_name}
        plans.update({tp: self.stage2.plan(tp.partition) for tp in tps if tp.topic == self.partials_name})
        if not tps:  # more workers than partitions
            _stop_fetching(consumer)
        else:
            consumer.assign(tps)
        earliest = await consumer.beginning_offsets(tps) if tps else {}
        if not self.lifecycle.current(generation):
            return
        self.next.clear()
        if self.holes is not None:
            self.holes.forget()
        replays = 0
        for tp in tps:
            position = resolve(plans[tp], int(earliest.get(tp) or 0), _name(tp))
            replays += position.replay is not None
            self._seek(consumer, tp, position)
        await self._settle(generation)
        if self.before_reading is not None:
            await self.before_reading(self.lifecycle.partitions, lambda: self.lifecycle.current(generation))
        if self.lifecycle.positioned(generation):
            self.ready_since = time.time()
            log.info(
                "ready: reading partitions %s of %d topics (%d replay their last recorded flush)",
                partitions,
                len(self.input_topics) + 1,
                replays,
            )

    async def _settle(self, generation: int) -> None:
        """Start reading no sooner than `settle_s` after the assignment (see `settle_time`)."""
        while self.lifecycle.current(generation):
            left = self.assigned_at + self.settle_s - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.05))

    def _seek(self, consumer: AIOKafkaConsumer, tp: TopicPartition, position: Position) -> None:
        consumer.seek(tp, position.offset)
        self.next[tp] = position.offset
        if tp.topic == self.partials_name:
            self.stage2.start(tp.partition, position)
        else:
            self.stage1.start(tp, position)

    async def _out_of_range(self, consumer: AIOKafkaConsumer, exc: OffsetOutOfRangeError) -> None:
        """A position no longer exists (retention deleted it): continue at the earliest offset."""
        offsets: dict[Any, int] = dict(exc.args[0]) if exc.args and isinstance(exc.args[0], dict) else {}
        earliest = await consumer.beginning_offsets(list(offsets))
        for part, offset in offsets.items():
            tp = TopicPartition(part.topic, part.partition)
            start = int(earliest.get(tp) or 0)
            if tp.topic == self.partials_name:
                position = moved(Position(offset), start, _name(tp))
            else:
                position = moved(self.stage1.position(tp, offset), start, _name(tp))
            if position.offset == offset:
                # The offset lies past the end (the topic was recreated): nothing before it remains.
                log.error(
                    "%s: offset %d is past the end of the log; reading from %d", _name(tp), offset, start
                )
                position = Position(start)
            consumer.seek(tp, position.offset)
            self.next[tp] = position.offset
            if self.holes is not None:
                self.holes.forget(tp)
            if tp.topic != self.partials_name:
                self.stage1.moved(tp, position)


def settle_time(broker: BrokerConfig) -> float:
    """How long after an assignment the reader waits before it reads (0 on Apache Kafka).

    Kafka's rebalance protocol revokes every member's partitions before it hands out new ones. The
    embedded Tansu broker does not always wait for the members of the previous generation: when a
    worker joins right after a rebalance, Tansu can complete the next generation while a member of
    the last one has just been assigned and does not know yet (it learns at its next heartbeat).
    Both would read the same partitions for up to a heartbeat interval, and their flushes would
    overlap (counted twice; seen in the chaos test). If every member waits a heartbeat interval (and
    a half, for margin) after its own assignment, the member of the newer generation starts reading
    only after the member of the older one has heard of it at its next heartbeat and stopped.
    """
    if not broker.embedded:
        return 0.0
    return 1.5 * broker.timings().get("heartbeat_interval", 1.0)


def _stop_fetching(consumer: AIOKafkaConsumer) -> None:
    """Pause every assigned partition (the next positioning assigns anew).

    Not `assign([])`: an aiokafka consumer left with an empty assignment raises CancelledError from
    stop() (aiokafka 0.14).
    """
    consumer.pause(*consumer.assignment())


def _name(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"


def register(app: App, reader: Reader, ownership_topic: str) -> Reader:
    """Run the reader as a task of the worker, driven by Faust's rebalance signals."""
    from agents.kafka.transport import connect

    async def on_assigned(sender: Any, *args: Any, **kwargs: Any) -> None:
        owned = frozenset(
            tp.partition for tp in app.assignor.assigned_actives() if tp.topic == ownership_topic
        )
        reader.on_assigned(app.consumer_generation_id, owned)

    async def on_recovered(sender: Any, *args: Any, **kwargs: Any) -> None:
        # Faust sends this when a recovery loop finishes, even one that a newer assignment overtook:
        # its "restore complete" then names the old assignment's tables. A newer assignment has
        # already signalled its own recovery, which has not started yet: wait for that one.
        recovery = cast(Any, app.tables).recovery  # the TableManager's (not in its ABC)
        if recovery.signal_recovery_start.is_set():
            log.info("ignoring the completion of a recovery that a newer assignment overtook")
            return
        reader.on_recovered(app.consumer_generation_id)

    async def on_revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
        await reader.on_revoked()

    async def on_shutdown(sender: Any, *args: Any, **kwargs: Any) -> None:
        await reader.stop()

    async def read() -> None:
        await reader.run()

    connect(app.on_partitions_assigned, on_assigned)
    connect(app.on_rebalance_complete, on_recovered)
    connect(app.on_partitions_revoked, on_revoked)
    connect(app.on_before_shutdown, on_shutdown)
    app.task(read)
    return reader
