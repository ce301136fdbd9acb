"""Stage 1 agent: decode, validate, dead-letter, pre-aggregate per input partition, flush partials.

Delivery: an event is acknowledged only after the flush that contains it has been recorded in the
`flushlog` table (durably, before anything else is sent) and its partial aggregates have been handed
to the producer. After any (re)assignment the worker resumes each input partition at the start of its
last recorded flush (not at the committed offset, which Faust can move past events around a
rebalance) and replays exactly that range as one flush, so its partials are identical duplicates that
stage 2 skips. A crash at any moment therefore loses nothing and counts nothing twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, cast

from faust.types import TP, EventT, StreamT
from orjson import loads

from agents.durable import SHUTDOWN_GRACE_S, ChangelogWriter, Gate, crash, drain
from pipeline.aggregates import dumps
from pipeline.app import connect
from pipeline.decode import decode
from pipeline.guard import LabelGuard
from pipeline.preagg import ACCUMULATORS, Accumulator, FlushContext, Parts
from pipeline.series import owner
from schemas.events import Rejection, validator

if TYPE_CHECKING:
    from pipeline.app import Pulse

log = logging.getLogger(__name__)

MAX_PARTIAL_BYTES = 512 * 1024
MAX_PENDING_FLUSHES = 8
_REPEATED = object()


class Mode(Enum):
    """Where an input partition stands after an assignment."""

    REPLAY = "replay"
    NORMAL = "normal"


@dataclass
class Buffer:
    """Events of one input partition since its last flush."""

    kind: str
    acc: Accumulator
    check: Callable[[Any], int | Rejection]
    first: int = -1
    last: int = -1
    count: int = 0
    valid: int = 0
    late: int = 0
    future: int = 0
    events: list[EventT[Any]] = field(default_factory=list)
    sends: list[Awaitable[Any]] = field(default_factory=list)

    def reset(self) -> None:
        """Forget everything (after a flush or a revocation)."""
        self.acc = ACCUMULATORS[self.kind]()
        self.first = self.last = -1
        self.count = self.valid = self.late = self.future = 0
        self.events = []
        self.sends = []


@dataclass
class FlushJob:
    """One input partition's flushed range, on its way to stage 2."""

    tp: TP
    first: int
    last: int
    parts: Parts
    events: list[EventT[Any]]
    sends: list[Awaitable[Any]]
    admitted: dict[str, list[str]] | None = None
    """The label guard's admitted values, when this flush changed them."""


@dataclass
class PartitionState:
    """Stage-1 state of one input partition within one consumer generation."""

    generation: int
    buffer: Buffer
    mode: Mode = Mode.NORMAL
    replay_end: int = -1
    """Last offset of the recorded flush being replayed (REPLAY mode)."""
    gate: Gate | None = None
    """Until the resume position arrives: what to do with earlier or later messages."""
    last_flush: float = 0.0
    last_offset: int = -1
    """Highest offset taken into a buffer: Kafka offsets only grow, so anything else is a repeat."""
    catch_up_at: int = -1
    """The partition cannot be caught up before this offset (the end it had when last asked)."""


def tp_key(tp: TP) -> str:
    """Return the flushlog key (and partial source id) of an input partition."""
    return f"{tp.topic}:{tp.partition}"


def guard_key(partition: int) -> str:
    """Return the flushlog key of the label guard of one input partition number."""
    return f"guard:{partition}"


def element_spans(value: bytes) -> list[bytes]:
    """Return the exact original bytes of each element of a JSON array (slow path, rare)."""
    text = value.decode("utf-8")
    decoder = json.JSONDecoder()
    out: list[bytes] = []
    pos = text.index("[") + 1
    length = len(text)
    while pos < length:
        while pos < length and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= length or text[pos] == "]":
            break
        _, end = decoder.raw_decode(text, pos)
        out.append(text[pos:end].encode("utf-8"))
        pos = end
    return out


class Stage1:
    """Runtime of the ingest agent on one worker."""

    def __init__(self, pulse: Pulse) -> None:
        self.pulse = pulse
        cfg = pulse.config
        self.kind_of = pulse.input_topics
        self.ticks_name = pulse.ticks_name
        self.partitions = cfg.topics.partitions
        self.pane_ms = int(cfg.windows.pane * 1000)
        self.lateness_ms = int(cfg.windows.allowed_lateness * 1000)
        self.future_ms = int(cfg.windows.max_future_skew * 1000)
        self.max_bytes = cfg.ingest.max_message_bytes
        self.flush_max = cfg.ingest.flush_max_events
        self.min_flush_s = cfg.ingest.min_flush_interval
        self.states: dict[TP, PartitionState] = {}
        self.flushlog = ChangelogWriter(pulse.flushlog)
        self.guards: dict[int, LabelGuard] = {}
        self.chain: asyncio.Future[None] | None = None
        self.pending_flushes = 0

    # -- per event -------------------------------------------------------------------------

    @property
    def consumer(self) -> Any:
        """The Faust consumer (for high-water marks)."""
        return self.pulse.app.consumer

    def accept(self, event: EventT[Any]) -> Awaitable[None] | None:
        """Buffer one event synchronously when nothing else is due; else return the work to await.

        This is the per-event hot path: most events need no await at all.
        """
        message = event.message
        state = self.states.get(message.tp)
        if (
            state is None
            or state.generation != self.pulse.epoch
            or state.mode is not Mode.NORMAL
            or state.gate is not None
        ):
            return self.on_event(event)
        problems = self._take(state, event, message)
        if problems is _REPEATED:
            return None
        buf = state.buffer
        if (
            problems is not None
            or buf.count >= self.flush_max
            or (
                message.offset >= state.catch_up_at
                and time.monotonic() - state.last_flush >= self.min_flush_s
            )
        ):
            return self._after(state, message, problems)
        return None

    async def on_event(self, event: EventT[Any]) -> None:
        """Handle one message from an input topic or the tick topic (the complete, slow path)."""
        message = event.message
        if message.topic == self.ticks_name:
            await self.on_tick(message.partition)
            event.ack()
            return
        tp = message.tp
        offset = message.offset
        state = self.states.get(tp)
        if state is None or state.generation != self.pulse.epoch:
            # Not positioned at the assignment (it should have been): the gate seeks it there.
            state = self._resume_one(tp, offset)
        if state.gate is not None:
            if not await state.gate.admit(self.pulse.app.consumer, tp, offset, tp_key(tp)):
                return
            state.gate = None
        problems = self._take(state, event, message)
        if problems is not _REPEATED:
            await self._after(state, message, problems)

    def _take(self, state: PartitionState, event: EventT[Any], message: Any) -> Any:
        """Put one event into its partition's buffer; return what to dead-letter, or _REPEATED.

        Kafka offsets only grow within a partition: an offset at or below the last one taken in
        this assignment is a repeated delivery of something already buffered or flushed.
        """
        offset = message.offset
        if offset <= state.last_offset:
            self.pulse.metrics.repeats.labels(message.topic).inc()
            log.debug("dropped a repeated delivery of %s@%d", tp_key(message.tp), offset)
            return _REPEATED
        state.last_offset = offset
        buf = state.buffer
        if buf.first < 0:
            buf.first = offset
        buf.last = offset
        buf.events.append(event)
        return self._consume(buf, message)

    async def _after(
        self,
        state: PartitionState,
        message: Any,
        problems: Rejection | list[tuple[int, Rejection]] | None,
    ) -> None:
        """Dead-letter what was refused, then flush if the range is complete, full or caught up."""
        buf = state.buffer
        tp = message.tp
        offset = message.offset
        if problems is not None:
            await self._deadletter_all(buf, message, problems)
        if state.mode is Mode.REPLAY:
            if offset >= state.replay_end:
                await self.flush([tp], "replay")
                state.mode = Mode.NORMAL
        elif buf.count >= self.flush_max:
            await self.flush([tp], "size")
        elif offset >= state.catch_up_at and time.monotonic() - state.last_flush >= self.min_flush_s:
            highwater = self.consumer.highwater(tp)
            if highwater is not None and offset + 1 >= highwater:
                await self.flush([tp], "caught-up")
            elif highwater is not None:
                # The end only moves forward: no need to ask again before reaching this one.
                state.catch_up_at = highwater - 1

    def _consume(self, buf: Buffer, message: Any) -> Rejection | list[tuple[int, Rejection]] | None:
        """Decode, validate and buffer one message; return what must be dead-lettered."""
        value = message.value
        try:
            if value is None or len(value) > self.max_bytes:
                raise ValueError
            data = loads(value)
            decoded = (data,) if type(data) is dict else data
            if type(decoded) is not list and type(decoded) is not tuple:
                raise ValueError
        except ValueError:  # orjson.JSONDecodeError is a ValueError; decode() says precisely why
            return decode(value, self.max_bytes)
        record_ms = round(message.timestamp * 1000)
        check = buf.check
        add = buf.acc.add
        pane_ms = self.pane_ms
        lateness = self.lateness_ms
        future = -self.future_ms
        valid = late = ahead = 0
        bad: list[tuple[int, Rejection]] | None = None
        buf.count += len(decoded)
        for index, item in enumerate(decoded):
            ts = check(item)
            if type(ts) is not int:
                if bad is None:
                    bad = []
                bad.append((index, ts))  # type: ignore[arg-type]
                continue
            if ts < 0:
                ts = record_ms
            age = record_ms - ts
            if age > lateness:
                late += 1
                add(item, ts - ts % pane_ms, True, ts)
            elif age < future:
                ahead += 1
                add(item, ts - ts % pane_ms, True, ts)
            else:
                valid += 1
                add(item, ts - ts % pane_ms, False, ts)
        buf.valid += valid
        buf.late += late
        buf.future += ahead
        return bad

    async def _deadletter_all(
        self, buf: Buffer, message: Any, problems: Rejection | list[tuple[int, Rejection]]
    ) -> None:
        value: bytes = message.value or b""
        if isinstance(problems, Rejection):
            await self._deadletter(buf, message, problems, None, value)
            return
        if value.lstrip()[:1] == b"{":
            await self._deadletter(buf, message, problems[0][1], None, value)
            return
        try:
            spans = element_spans(value)
        except ValueError:  # pragma: no cover - orjson already parsed it
            spans = []
        for index, rejection in problems:
            original = spans[index] if index < len(spans) else value
            await self._deadletter(buf, message, rejection, index, original)

    async def _deadletter(
        self, buf: Buffer, message: Any, rejection: Rejection, index: int | None, original: bytes
    ) -> None:
        headers = [
            ("pulse.reason", str(rejection).encode()),
            ("pulse.code", rejection.code.encode()),
            ("pulse.topic", message.topic.encode()),
            ("pulse.partition", str(message.partition).encode()),
            ("pulse.offset", str(message.offset).encode()),
        ]
        if index is not None:
            headers.append(("pulse.index", str(index).encode()))
        sent = await self.pulse.deadletter.send(key=message.key, value=original, headers=headers)
        buf.sends.append(sent)
        self.pulse.metrics.deadlettered.labels(message.topic, rejection.code).inc()
        log.debug(
            "dead-lettered %s:%s@%s: %s",
            message.topic,
            message.partition,
            message.offset,
            rejection,
        )

    # -- assignment and replay ---------------------------------------------------------------

    def resume(self, tps: set[TP], committed: Mapping[TP, int | None] | None) -> dict[TP, int | None]:
        """Return where assigned input partitions resume, and start their state there.

        Called before Faust resumes the partitions after an assignment (the tables are recovered by
        then), with `committed` None: a partition without a flush record resumes at its committed
        offset, not known yet (None). Called again with the committed offsets for those.
        """
        positions: dict[TP, int | None] = {}
        for part in tps:
            tp = TP(part.topic, part.partition)
            if tp.topic not in self.kind_of:
                continue
            if committed is None and not self.pulse.flushlog.get(tp_key(tp)):
                positions[tp] = None
                continue
            offset = None if committed is None else committed.get(part)
            state = self._resume_one(tp, offset)
            assert state.gate is not None
            positions[tp] = state.gate.offset
        return positions

    def _resume_one(self, tp: TP, committed: int | None) -> PartitionState:
        """Start the state of one input partition at its last recorded flush (or the committed offset)."""
        old = self.states.get(tp)
        kind = self.kind_of[tp.topic]
        buf = old.buffer if old is not None else Buffer(kind, ACCUMULATORS[kind](), validator(kind))
        buf.reset()
        state = PartitionState(self.pulse.epoch, buf)
        self.states[tp] = state
        record = self.pulse.flushlog.get(tp_key(tp))
        if not record:
            # Nothing was ever flushed with partials: everything before the committed offset produced
            # none (dead letters only), so the committed offset is a safe start.
            position = committed if committed is not None and committed > 0 else 0
            log.info("%s: resuming at %d, no recorded flush", tp_key(tp), position)
        else:
            start, end = int(record["a"]), int(record["b"])
            position = start
            log.info("%s: resuming at %d, its last recorded flush is [%d, %d]", tp_key(tp), start, start, end)
            if end >= start:  # an empty range only marks a position
                state.mode = Mode.REPLAY
                state.replay_end = end
                self.pulse.metrics.replays.inc()
        state.gate = Gate(position)
        return state

    # -- flushing ---------------------------------------------------------------------------

    async def on_tick(self, partition: int) -> None:
        """Flush every idle-but-nonempty input partition with this number, then tick stage 2."""
        due = [
            tp
            for tp, state in self.states.items()
            if tp.partition == partition and state.mode is Mode.NORMAL and state.buffer.first >= 0
        ]
        await self.flush(due, "tick", tick=partition)

    async def flush(self, tps: list[TP], trigger: str, tick: int | None = None) -> None:
        """Detach the buffers of the given input partitions and deliver them in the background.

        Deliveries are chained: each waits for the previous one, so a flush record is only
        written once every partial of the flushes before it has been delivered.
        """
        pulse = self.pulse
        now = time.monotonic()
        jobs: list[FlushJob] = []
        metrics = pulse.metrics
        for tp in tps:
            state = self.states[tp]
            state.last_flush = now
            buf = state.buffer
            started = time.perf_counter()
            guard = self.guard(tp.partition)
            parts = buf.acc.parts(FlushContext(self.pulse.calendar, guard))
            metrics.flush_seconds.observe(time.perf_counter() - started)
            for dimension, folded in guard.take_folds().items():
                metrics.folds.labels(dimension).inc(folded)
            admitted = None
            if guard.changed:
                admitted, guard.changed = guard.snapshot(), False
            jobs.append(FlushJob(tp, buf.first, buf.last, parts, buf.events, buf.sends, admitted))
            topic = tp.topic
            metrics.messages.labels(topic).inc(len(buf.events))
            total = buf.valid + buf.late + buf.future
            if total:
                metrics.events.labels(topic).inc(total)
            if buf.late:
                metrics.late.labels(topic, "late").inc(buf.late)
            if buf.future:
                metrics.late.labels(topic, "future").inc(buf.future)
            buf.reset()
        if jobs:
            metrics.flushes.labels(trigger).inc()
        previous = self.chain
        self.chain = asyncio.ensure_future(self._deliver(jobs, pulse.epoch, previous, tick))
        self.chain.add_done_callback(self._on_delivered)
        self.pending_flushes += 1
        if self.pending_flushes > MAX_PENDING_FLUSHES:
            await asyncio.shield(self.chain)

    def _on_delivered(self, fut: asyncio.Future[None]) -> None:
        self.pending_flushes -= 1
        if not fut.cancelled() and fut.exception() is not None:
            self._fatal(fut.exception())  # type: ignore[arg-type]

    async def _deliver(
        self,
        jobs: list[FlushJob],
        epoch: int,
        previous: asyncio.Future[None] | None,
        tick: int | None,
    ) -> None:
        pulse = self.pulse
        if previous is not None:
            await asyncio.shield(previous)
        if pulse.epoch != epoch:
            return  # revoked meanwhile: the owner replays from the flush records
        records = []
        for job in jobs:
            if job.admitted is not None:
                # Before the record: a replay must fold labels exactly as this flush did.
                records.append(
                    await self.flushlog.put(guard_key(job.tp.partition), job.admitted, job.tp.partition)
                )
            if job.parts:
                record = {"a": job.first, "b": job.last}
                records.append(await self.flushlog.put(tp_key(job.tp), record, job.tp.partition))
        if records:
            # The record must be durable before any partial of its range can reach stage 2.
            await asyncio.gather(*records)
            if pulse.epoch != epoch:
                log.info("rebalance during flush; the owner replays %s", [j.tp for j in jobs])
                return
        by_owner: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for job in jobs:
            split: dict[int, dict[str, Any]] = defaultdict(dict)
            for key, part in job.parts.items():
                split[owner(key, self.partitions)][key] = part
            for dest, series in split.items():
                by_owner[dest].append({"src": tp_key(job.tp), "a": job.first, "b": job.last, "s": series})
        sends: list[Awaitable[Any]] = []
        for dest, dest_blocks in by_owner.items():
            for payload in _payloads(dest_blocks):
                sends.append(await pulse.partials.send(value=payload, partition=dest))
        if tick is not None:
            tick_value = dumps({"tick": int(time.time() * 1000)})
            sends.append(await pulse.partials.send(value=tick_value, partition=tick))
        for job in jobs:
            sends.extend(job.sends)
        if sends:
            await asyncio.gather(*sends)
        for job in jobs:
            for event in job.events:
                event.ack()

    def _fatal(self, exc: BaseException) -> None:
        """A produced message could not be delivered: stop the worker; a restart replays."""
        crash(self.pulse.app, exc, "delivery of a flush")

    def guard(self, partition: int) -> LabelGuard:
        """The label guard of one input partition number, as last recorded."""
        guard = self.guards.get(partition)
        if guard is None:
            limits = self.pulse.config.cardinality.limits()
            recorded = self.pulse.flushlog.get(guard_key(partition))
            guard = self.guards[partition] = LabelGuard(limits, recorded)
        return guard

    def buffered(self) -> int:
        """Return how many events wait in stage-1 buffers."""
        return sum(len(s.buffer.events) for s in self.states.values())

    def on_revoked(self) -> None:
        """Drop every buffer: the next owner (maybe us) replays from the flush records."""
        for state in self.states.values():
            state.buffer.reset()
        self.states.clear()
        self.guards.clear()


def _payloads(blocks: list[dict[str, Any]]) -> list[bytes]:
    """Encode blocks for one destination, splitting series so that no message gets too large."""
    payload = dumps({"blocks": blocks})
    if len(payload) <= MAX_PARTIAL_BYTES:
        return [payload]
    out: list[bytes] = []
    for block in blocks:
        keys = list(block["s"])
        if len(keys) <= 1:
            out.append(dumps({"blocks": [block]}))
            continue
        half = len(keys) // 2
        for chunk in (keys[:half], keys[half:]):
            sub = {**block, "s": {k: block["s"][k] for k in chunk}}
            out.extend(_payloads([sub]))
    return out


def register(pulse: Pulse) -> Stage1:
    """Register the ingest agent on the pulse app and return its runtime."""
    stage1 = Stage1(pulse)

    @pulse.app.agent(pulse.ingest_topic, name="ingest")
    async def ingest(stream: StreamT[Any]) -> None:
        manual = cast(Any, stream).noack()
        accept = stage1.accept
        async for _ in manual:
            # current_event directly: Stream.events() adds an async-generator hop per event.
            pending = accept(manual.current_event)
            if pending is not None:
                await pending

    async def on_revoked(app: Any, *args: Any, **kwargs: Any) -> None:
        stage1.on_revoked()
        if stage1.chain is not None:
            await drain([stage1.chain], "stage-1 flushes")

    async def on_shutdown(app: Any, *args: Any, **kwargs: Any) -> None:
        if stage1.chain is not None:
            await drain([stage1.chain], "stage-1 flushes", "shutdown", SHUTDOWN_GRACE_S)

    connect(pulse.app.on_partitions_revoked, on_revoked)
    connect(pulse.app.on_before_shutdown, on_shutdown)

    return stage1
