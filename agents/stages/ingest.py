"""Stage 1: decode, validate, dead-letter and pre-aggregate the input partitions this worker owns.

The reader (`agents.kafka.reader`) hands over batches of records. Per record the hot path decodes and
validates the message into typed events (`schemas.typed`, one msgspec call for a single event or a
whole envelope) and adds them to the partition's accumulator (`pipeline.ingest.preagg`); it creates no
per-event object besides the event itself and awaits nothing. Anything the fast decoder refuses takes
the precise path (`pipeline.ingest.decode`, `schemas.events.validator`), which names the reason and keeps the
exact original bytes of each refused element for the dead-letter topic.

A flush turns a partition's buffer into partial aggregates (by size, once the partition has caught up
with its log, or on the clock when idle) and delivers them in order:

1. the flush's offset range is recorded in the `flushlog` table and awaited, *before*
2. its partials go to the owners' partials partitions, and its dead letters to `events.deadletter`.

Deliveries are chained: a flush's record is written only after every partial of the flushes before it
was delivered. One delivery is in flight at a time: flushes detached meanwhile wait and leave together
when it is done, and a partition whose flush is waiting keeps buffering into its next flush. A busy
worker thus makes fewer, larger deliveries (fewer round trips to the broker), and a quiet one delivers
each flush at once. After any assignment the partition resumes at its last recorded range, replayed as one
flush (identical partials, which stage 2 skips), so a crash at any moment loses nothing and counts
nothing twice. See `agents.kafka.positions`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka import TopicPartition

from agents.kafka.durable import ChangelogWriter, Crash
from agents.kafka.positions import (
    Position,
    ReadProgress,
    Replay,
    ResumePlan,
    flush_key,
    guard_key,
    input_plan,
)
from pipeline.ingest.guard import LabelGuard
from pipeline.ingest.intake import Buffer, Limits, buffer_records, dead_letter_headers
from pipeline.ingest.preagg import ACCUMULATORS, FlushContext, Parts
from pipeline.records import FlushRecord, GuardRecord, encode_partials
from pipeline.state.series import owner
from schemas.events import Rejection, validator
from schemas.typed import fast_decoder

if TYPE_CHECKING:
    from faust.types import TableT, TopicT

    from agents.telemetry import PipelineMetrics
    from pipeline.config.settings import Config
    from pipeline.state.calendar import Calendar

log = logging.getLogger(__name__)

MAX_PARTIAL_BYTES = 512 * 1024
MAX_PENDING_FLUSHES = 8
"""Deliveries in flight before reading waits for them (back-pressure towards the broker)."""
BACKLOG_FLUSHES = 8
"""How many flushes' worth of events (`flush_max_events` each) a partition whose flush waits for the
delivery in flight may buffer before reading waits for that delivery (back-pressure)."""

DeadLetter = tuple[bytes | None, bytes, list[tuple[str, bytes]]]
"""Key, original bytes and headers of one dead-letter record."""


@dataclass(eq=False)
class InputPartition(Buffer):
    """Stage-1 state of one owned input partition: the events read since its last flush (the buffer's
    event type, accumulator, decoders and counters are `pipeline.ingest.intake.Buffer`'s)."""

    tp: TopicPartition
    replay: Replay | None = None
    """The recorded range being replayed: flushed as one flush once its last offset is read."""
    dead: list[DeadLetter] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)
    """Dead letters by reason code since the last flush."""
    last_flush: float = 0.0

    def reset(self) -> None:
        """Forget the buffer (after a flush)."""
        self.acc = ACCUMULATORS[self.kind]()
        self.first = self.last = -1
        self.messages = self.count = self.valid = self.late = self.future = 0
        self.dead = []
        self.refused = {}


@dataclass
class FlushJob:
    """One input partition's flushed range, on its way to stage 2."""

    tp: TopicPartition
    first: int
    last: int
    parts: Parts
    dead: list[DeadLetter]
    events: int
    """Elements read in the range (valid or not)."""
    admitted: dict[str, list[str]] | None = None
    """The label guard's admitted values, when this flush changed them."""


class Stage1:
    """Runtime of stage 1 on one worker."""

    def __init__(
        self,
        cfg: Config,
        input_topics: Mapping[str, str],
        flushlog: TableT[str, Any],
        partials: TopicT,
        deadletter: TopicT,
        metrics: PipelineMetrics,
        calendar: Calendar,
        crash: Crash,
    ) -> None:
        self.config = cfg
        self.kind_of = input_topics
        self.flushlog_table = flushlog
        self.partials = partials
        self.deadletter = deadletter
        self.metrics = metrics
        self.calendar = calendar
        self.crash = crash
        self.partitions = cfg.topics.partitions
        self.limits = Limits.of(cfg)
        self.flush_max = cfg.ingest.flush_max_events
        self.min_flush_s = cfg.ingest.min_flush_interval
        self.idle_flush_s = cfg.ingest.flush_interval
        self.states: dict[TopicPartition, InputPartition] = {}
        self.flushlog = ChangelogWriter(flushlog)
        self.guards: dict[int, LabelGuard] = {}
        self.jobs: list[FlushJob] = []
        self.chain: asyncio.Future[None] | None = None
        self.pending_flushes = 0
        self.undelivered = 0
        """Events of detached flushes whose delivery has not finished."""
        self.reader: ReadProgress | None = None
        self.generation = -1
        """The reader's generation when the partitions were positioned; deliveries check it."""
        self.first_event_at: float | None = None
        """Monotonic time the first input records arrived (for the benchmark)."""

    # -- positions --------------------------------------------------------------------------------

    def plan(self, tp: TopicPartition) -> ResumePlan:
        """Where an input partition resumes, from its recovered flush record."""
        key = flush_key(tp.topic, tp.partition)
        value = self.flushlog_table.get(key)
        return input_plan(None if value is None else FlushRecord.from_wire(value, f"flushlog key {key!r}"))

    def start(self, tp: TopicPartition, position: Position) -> None:
        """Start the partition's buffer at `position` (replaying its recorded range, if any)."""
        assert self.reader is not None
        self.generation = self.reader.lifecycle.generation
        kind = self.kind_of[tp.topic]
        state = InputPartition(kind, ACCUMULATORS[kind](), fast_decoder(kind), validator(kind), tp)
        state.replay = position.replay
        state.last_flush = time.monotonic()
        self.states[tp] = state
        if position.replay is not None:
            self.metrics.replays.inc()
            replay = position.replay
            log.debug(
                "%s: replaying its last recorded flush [%d, %d] from %d",
                _name(tp),
                replay.first,
                replay.last,
                position.offset,
            )
        else:
            log.debug("%s: reading from %d", _name(tp), position.offset)

    def position(self, tp: TopicPartition, offset: int) -> Position:
        """The position of a partition being read at `offset` (with what it still has to replay)."""
        state = self.states.get(tp)
        replay = state.replay if state is not None else None
        return Position(offset, replay)

    def moved(self, tp: TopicPartition, position: Position) -> None:
        """The partition moved past a gap (retention): what was read stays buffered; a replay whose
        range is gone ends with what was read of it."""
        state = self.states[tp]
        if state.replay is not None and position.replay is None:
            state.replay = None
            if state.first >= 0:
                self._detach(state, "replay")

    def stop(self) -> None:
        """Forget every buffer (after a revocation): the next owner replays from the records."""
        self.states.clear()
        self.guards.clear()
        self.jobs = []

    def inflight(self) -> list[asyncio.Future[None]]:
        """Deliveries not yet done."""
        return [self.chain] if self.chain is not None else []

    # -- per batch: the hot path ------------------------------------------------------------------

    def take(self, tp: TopicPartition, records: list[Any]) -> None:
        """Buffer a batch of one partition's records (a recorded range being replayed ends a flush)."""
        if self.first_event_at is None:
            self.first_event_at = time.monotonic()
        state = self.states[tp]
        replay = state.replay
        if replay is not None:
            last = replay.last
            if records[-1].offset < last:
                self._buffer(state, records)
                return
            cut = bisect_right([r.offset for r in records], last)
            if cut:
                self._buffer(state, records[:cut])
                self._detach(state, "replay")
            state.replay = None
            records = records[cut:]
            if not records:
                return
        self._buffer(state, records)
        if state.count >= self.flush_max and not self._waiting(tp):
            self._detach(state, "size")

    def _buffer(self, state: InputPartition, records: list[Any]) -> None:
        """Decode, validate and pre-aggregate records; refused ones become dead letters."""
        buffer_records(state, records, self.limits, self._dead_letter)

    def _dead_letter(
        self, state: InputPartition, record: Any, rejection: Rejection, index: int | None, original: bytes
    ) -> None:
        tp = state.tp
        headers = dead_letter_headers(tp.topic, tp.partition, record.offset, rejection, index)
        state.dead.append((record.key, original, headers))
        state.refused[rejection.code] = state.refused.get(rejection.code, 0) + 1
        log.debug("dead-lettered %s@%d: %s", _name(tp), record.offset, rejection)

    # -- flushing ---------------------------------------------------------------------------------

    async def after_batch(self) -> None:
        """Flush what is due (full, caught up, or idle on the clock) and deliver the flushes when no
        delivery is in flight; wait for the one in flight when a waiting partition's backlog is full."""
        self._flush_due()
        chain = self.chain
        if chain is None or chain.done():
            return
        backlog = self.flush_max * BACKLOG_FLUSHES
        full = any(s.count >= backlog and self._waiting(s.tp) for s in self.states.values())
        if full or self.pending_flushes > MAX_PENDING_FLUSHES:
            await asyncio.shield(chain)

    def _flush_due(self) -> None:
        """Detach every partition whose flush is due (its previous one no longer waiting); start their
        delivery unless one is in flight."""
        now = time.monotonic()
        reader = self.reader
        for state in self.states.values():
            if state.replay is not None:
                self._check_replay(state)
                continue
            if state.first < 0 or self._waiting(state.tp):
                continue
            waited = now - state.last_flush
            if state.count >= self.flush_max:
                self._detach(state, "size")
            elif waited >= self.idle_flush_s:
                self._detach(state, "tick")
            elif waited >= self.min_flush_s and reader is not None and reader.caught_up(state.tp):
                self._detach(state, "caught-up")
        if self.jobs and (self.chain is None or self.chain.done()):
            self._schedule()

    def _waiting(self, tp: TopicPartition) -> bool:
        """Whether the partition's last flush waits for the delivery in flight."""
        return any(job.tp == tp for job in self.jobs)

    def _check_replay(self, state: InputPartition) -> None:
        """A log that now ends before the recorded range does: flush what was read of it."""
        reader = self.reader
        assert state.replay is not None and reader is not None
        high = reader.high(state.tp)
        if high is None or not reader.caught_up(state.tp) or high > state.replay.last:
            return
        log.warning(
            "%s: the log ends at %d, before the recorded flush end %d",
            _name(state.tp),
            high,
            state.replay.last,
        )
        state.replay = None
        if state.first >= 0:
            self._detach(state, "replay")

    def _detach(self, state: InputPartition, trigger: str) -> None:
        """Turn a partition's buffer into a flush job (one job per partition per delivery)."""
        if any(job.tp == state.tp for job in self.jobs):
            self._schedule()  # its record must wait until the earlier flush's partials are delivered
        metrics = self.metrics
        state.last_flush = time.monotonic()
        started = time.perf_counter()
        guard = self.guard(state.tp.partition)
        parts = state.acc.parts(FlushContext(self.calendar, guard))
        metrics.flush_seconds.observe(time.perf_counter() - started)
        for dimension, folded in guard.take_folds().items():
            metrics.folds.labels(dimension).inc(folded)
        admitted = None
        if guard.changed:
            admitted, guard.changed = guard.snapshot(), False
        self.jobs.append(
            FlushJob(state.tp, state.first, state.last, parts, state.dead, state.count, admitted)
        )
        metrics.flushes.labels(trigger).inc()
        topic = state.tp.topic
        metrics.messages.labels(topic).inc(state.messages)
        total = state.valid + state.late + state.future
        if total:
            metrics.events.labels(topic).inc(total)
        if state.late:
            metrics.late.labels(topic, "late").inc(state.late)
        if state.future:
            metrics.late.labels(topic, "future").inc(state.future)
        for code, n in state.refused.items():
            metrics.deadlettered.labels(topic, code).inc(n)
        state.reset()

    def _schedule(self) -> None:
        """Chain the delivery of the detached jobs after the deliveries before them."""
        jobs, self.jobs = self.jobs, []
        previous = self.chain
        events = sum(job.events for job in jobs)
        self.chain = asyncio.ensure_future(self._deliver(jobs, self.generation, previous))
        self.chain.add_done_callback(lambda fut: self._on_delivered(fut, events))
        self.pending_flushes += 1
        self.undelivered += events

    def _on_delivered(self, fut: asyncio.Future[None], events: int) -> None:
        self.pending_flushes -= 1
        self.undelivered -= events
        if not fut.cancelled() and fut.exception() is not None:
            self.crash(fut.exception(), "delivery of a flush")  # type: ignore[arg-type]
        elif fut is self.chain and self.reader is not None and self.reader.lifecycle.current(self.generation):
            self._flush_due()  # what waited for this delivery leaves now, not after the next fetch

    async def _deliver(
        self, jobs: list[FlushJob], generation: int, previous: asyncio.Future[None] | None
    ) -> None:
        if previous is not None:
            await asyncio.shield(previous)
        assert self.reader is not None
        lifecycle = self.reader.lifecycle
        if not lifecycle.current(generation):
            return  # revoked meanwhile: the next owner replays from the flush records
        records: list[Awaitable[Any]] = []
        for job in jobs:
            partition = job.tp.partition
            if job.admitted is not None:
                # Before the range: a replay must fold labels exactly as this flush did.
                guard = GuardRecord(job.admitted).to_wire()
                records.append(await self.flushlog.put(guard_key(partition), guard, partition))
            record = FlushRecord(job.first, job.last).to_wire()
            records.append(await self.flushlog.put(flush_key(job.tp.topic, partition), record, partition))
        # The records must be durable before any partial of their ranges can reach stage 2.
        await asyncio.gather(*records)
        if not lifecycle.current(generation):
            log.info("revoked during a flush; the next owner replays %s", [_name(j.tp) for j in jobs])
            return
        by_owner: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for job in jobs:
            split: dict[int, dict[str, Any]] = defaultdict(dict)
            for key, part in job.parts.items():
                split[owner(key, self.partitions)][key] = part
            source = flush_key(job.tp.topic, job.tp.partition)
            for dest, series in split.items():
                by_owner[dest].append(
                    {"source": source, "first": job.first, "last": job.last, "series": series}
                )
        sends: list[Awaitable[Any]] = []
        for dest, dest_blocks in by_owner.items():
            for payload in _payloads(dest_blocks):
                sends.append(await self.partials.send(value=payload, partition=dest))
        for job in jobs:
            for original_key, value, headers in job.dead:
                sends.append(await self.deadletter.send(key=original_key, value=value, headers=headers))
        await asyncio.gather(*sends)

    def guard(self, partition: int) -> LabelGuard:
        """The label guard of one input partition number, as last recorded."""
        guard = self.guards.get(partition)
        if guard is None:
            limits = self.config.cardinality.limits()
            key = guard_key(partition)
            value = self.flushlog_table.get(key)
            recorded = (
                None if value is None else GuardRecord.from_wire(value, f"flushlog key {key!r}").admitted
            )
            guard = self.guards[partition] = LabelGuard(limits, recorded)
        return guard

    def buffered(self) -> int:
        """Return how many events wait in stage-1 buffers."""
        return sum(s.count for s in self.states.values())

    def pending(self) -> int:
        """Events buffered or flushed but not yet delivered to stage 2 (0: stage 1 is quiet)."""
        return self.buffered() + sum(job.events for job in self.jobs) + self.undelivered


def _name(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"


def _payloads(blocks: list[dict[str, Any]]) -> list[bytes]:
    """Encode blocks for one destination, splitting series so that no message gets too large."""
    payload = encode_partials(blocks)
    if len(payload) <= MAX_PARTIAL_BYTES:
        return [payload]
    out: list[bytes] = []
    for block in blocks:
        keys = list(block["series"])
        if len(keys) <= 1:
            out.append(encode_partials([block]))
            continue
        half = len(keys) // 2
        for chunk in (keys[:half], keys[half:]):
            sub = {**block, "series": {k: block["series"][k] for k in chunk}}
            out.extend(_payloads([sub]))
    return out
