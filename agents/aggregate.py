"""Stage 2 agent: merge partial aggregates into the series this worker owns; expire old panes.

The partials topic is keyed by series owner, so partition p carries exactly the series that hash to
p. Cells are written to the `cells` table (changelog partition p) by `pipeline.cells.apply_block`,
which skips what a cell already applied; `SeriesView` indexes the cells of the active partitions for
readers (metrics, API, rules).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import orjson
from faust.types import TP, EventT, StreamT

from agents.durable import SHUTDOWN_GRACE_S, ChangelogWriter, Gate, crash, drain
from pipeline.aggregates import loads_block_series
from pipeline.app import connect
from pipeline.cells import Retention, SeriesState, apply_block, group_cells, split_cell_key
from pipeline.series import owner

if TYPE_CHECKING:
    from agents.evaluate import Evaluator
    from pipeline.app import Pulse

log = logging.getLogger(__name__)

EXPIRY_EVERY_S = 10.0


class SeriesView:
    """Index of the owned series (active partitions only), kept in step with the cells table."""

    def __init__(self, pulse: Pulse) -> None:
        self.pulse = pulse
        self.partitions = pulse.config.topics.partitions
        self._states: dict[str, SeriesState] = {}
        self._by_partition: dict[int, set[str]] = {}
        self._active: frozenset[int] | None = None

    def invalidate(self) -> None:
        """Forget the index; it is rebuilt from the table on next read (after a rebalance)."""
        self._active = None

    def states(self) -> dict[str, SeriesState]:
        """Return series key -> state for every series this worker owns now."""
        active = frozenset(self.pulse.active_partitions())
        if self._active != active:
            self._rebuild(active)
        return self._states

    def _rebuild(self, active: frozenset[int]) -> None:
        items = (
            (key, cell)
            for key, cell in list(self.pulse.cells.data.items())
            if cell is not None and owner(split_cell_key(key)[0], self.partitions) in active
        )
        self._states = group_cells(items)
        self._by_partition = {}
        for key in self._states:
            self._by_partition.setdefault(owner(key, self.partitions), set()).add(key)
        # Cache the index only once the tables are recovered: Faust completes a rebalance (and we
        # invalidate) before its recovery has replayed the changelogs, and an index built from a
        # half-recovered table would stay stale until the next rebalance.
        self._active = active if self.pulse.is_ready() else None
        self.pulse.metrics.owned_series.set(len(self._states))

    def note_written(self, keys: list[str]) -> None:
        """Add freshly written cells to the index."""
        if self._active is None:
            return
        cells = self.pulse.cells.data
        for series, fresh in group_cells((key, cells[key]) for key in keys).items():
            current = self._states.get(series)
            if current is None:
                self._states[series] = fresh
                self._by_partition.setdefault(owner(series, self.partitions), set()).add(series)
                continue
            if fresh.total is not None:
                current.total = fresh.total
            if fresh.latest is not None:
                current.latest = fresh.latest
            current.fine.update(fresh.fine)
            current.coarse.update(fresh.coarse)
            current.periods.update(fresh.periods)
            current.entities.update(fresh.entities)
        self.pulse.metrics.owned_series.set(len(self._states))

    def keys_of(self, partition: int) -> list[str]:
        """Return the keys of the series owned through one partition."""
        self.states()
        return list(self._by_partition.get(partition, ()))

    def expiring_keys(self, partition: int) -> list[str]:
        """Return the pane and period cell keys of the series owned through one partition."""
        out: list[str] = []
        for series in self._by_partition.get(partition, ()):
            out.extend(self._states[series].keys(series))
        return out

    def note_deleted(self, keys: list[str]) -> None:
        """Remove deleted cells from the index."""
        for key in keys:
            series, res, rest = split_cell_key(key)
            state = self._states.get(series)
            if state is None:
                continue
            state.drop(res, rest)
            if state.empty():
                del self._states[series]
                self._by_partition.get(owner(series, self.partitions), set()).discard(series)


def position_key(partition: int) -> str:
    """Flushlog key of the last partials offset whose effect is durable, per partials partition."""
    return f"applied:{partition}"


@dataclass
class Cursor:
    """Where stage 2 stands in one partials partition within one assignment."""

    epoch: int
    gate: Gate | None


class Stage2:
    """Runtime of the aggregate agent on one worker.

    Blocks are applied in memory at once (readers see them immediately). Changed cells are written
    to the changelog in coalesced batches (at most every `WRITE_EVERY_S`, or sooner when many are
    pending); the partials messages that changed them are acknowledged when the batch is delivered.
    A cell updated by twenty blocks in that time is written once.
    """

    WRITE_EVERY_S = 0.1
    WRITE_MAX_PENDING = 500

    def __init__(self, pulse: Pulse) -> None:
        self.pulse = pulse
        cfg = pulse.config.windows
        self.coarse_ms = int(cfg.coarse_pane * 1000)
        self.retention = Retention(
            int(cfg.retention_fine() * 1000), int(cfg.retention_coarse() * 1000), pulse.calendar
        )
        self.view = SeriesView(pulse)
        self.writer = ChangelogWriter(pulse.cells)
        self.last_expiry: dict[int, float] = {}
        self.last_tick_ms: dict[int, int] = {}
        self.dirty: dict[str, int] = {}
        self.inflight: set[asyncio.Future[Any]] = set()
        self.chain: asyncio.Future[None] | None = None
        self.cursors: dict[int, Cursor] = {}
        self.positions = ChangelogWriter(pulse.flushlog)
        self.pending: list[EventT[Any]] = []
        self.pending_since = 0.0
        self.sends: list[Awaitable[Any]] = []
        self.evaluator: Evaluator | None = None

    async def on_event(self, event: EventT[Any]) -> None:
        """Apply one partials message (blocks or a tick) of an owned partition."""
        message = event.message
        partition = message.partition
        if not await self._in_order(partition, message.offset):
            return
        data = orjson.loads(event.value)
        tick = data.get("tick")
        if tick is not None:
            await self.on_tick(partition, int(tick))
        else:
            self.apply(partition, data["blocks"])
        if not self.pending:
            self.pending_since = time.monotonic()
        self.pending.append(event)
        await self.maybe_write()

    def resume(self, tps: set[TP], committed: Mapping[TP, int | None] | None) -> dict[TP, int | None]:
        """Return where each assigned partials partition resumes: after its recorded position.

        Faust acknowledges, without delivering them, messages it skips around a rebalance, so its
        committed offset can pass messages this stage never applied. The position recorded with
        every delivered batch of cell writes is the truth (cells skip what they already hold).
        """
        positions: dict[TP, int | None] = {}
        for part in tps:
            if part.topic == self.pulse.partials_name:
                cursor = self._resume_one(part.partition)
                assert cursor.gate is not None
                positions[TP(part.topic, part.partition)] = cursor.gate.offset
        return positions

    def _resume_one(self, partition: int) -> Cursor:
        recorded = self.pulse.flushlog.get(position_key(partition))
        position = 0 if recorded is None else int(recorded) + 1
        cursor = self.cursors[partition] = Cursor(self.pulse.epoch, Gate(position))
        return cursor

    async def _in_order(self, partition: int, offset: int) -> bool:
        """Whether to apply this message: only from the resume position on, after an assignment."""
        cursor = self.cursors.get(partition)
        tp = TP(self.pulse.partials_name, partition)
        if cursor is None or cursor.epoch != self.pulse.epoch:
            # Not positioned at the assignment (it should have been): the gate seeks it there.
            cursor = self._resume_one(partition)
        if cursor.gate is None:
            return True
        if not await cursor.gate.admit(self.pulse.app.consumer, tp, offset, f"partials {partition}"):
            return False
        cursor.gate = None
        return True

    def apply(self, partition: int, blocks: list[dict[str, Any]]) -> None:
        """Merge blocks into the cells in memory and mark what changed."""
        self.view.states()  # make sure the index is current before it is updated
        metrics = self.pulse.metrics
        store = self.pulse.cells.data
        dirty = self.dirty
        for block in blocks:
            series = loads_block_series(block["s"])
            source, start, end = block["src"], block["a"], block["b"]
            result = apply_block(store, source, end, series, self.coarse_ms, start)
            if result.overlapped:
                metrics.cells_overlapped.inc(len(result.overlapped))
                log.warning(
                    "partials %d: block %s [%d, %d] overlaps what %d cells applied, e.g. %s",
                    partition,
                    source,
                    start,
                    end,
                    len(result.overlapped),
                    result.overlapped[:3],
                )
            for key in result.written:
                dirty[key] = partition
            self.view.note_written(result.written)
            metrics.cells_written.inc(len(result.written))
            if result.skipped:
                metrics.cells_skipped.inc(result.skipped)

    async def on_tick(self, partition: int, now_ms: int) -> None:
        """Work on the clock: evaluate the rules, drop panes past their retention."""
        self.last_tick_ms[partition] = now_ms
        if self.evaluator is not None:
            self.sends.extend(await self.evaluator.on_tick(partition, now_ms))
        now = time.monotonic()
        if now - self.last_expiry.get(partition, 0.0) < EXPIRY_EVERY_S:
            return
        self.last_expiry[partition] = now
        self.view.states()
        keys = self.retention.expired(self.view.expiring_keys(partition), now_ms)
        store = self.pulse.cells.data
        for key in keys:
            store.pop(key, None)
            self.dirty[key] = partition
        self.view.note_deleted(keys)
        if keys:
            self.pulse.metrics.cells_expired.inc(len(keys))

    async def maybe_write(self, force: bool = False) -> None:
        """Write the changed cells when enough are pending or they waited long enough."""
        if not self.pending:
            return
        waited = time.monotonic() - self.pending_since
        if force or len(self.pending) >= self.WRITE_MAX_PENDING or waited >= self.WRITE_EVERY_S:
            await self.write()

    async def write(self) -> None:
        """Send every changed cell (or its tombstone); ack the messages once delivered."""
        dirty, self.dirty = self.dirty, {}
        events, self.pending = self.pending, []
        store = self.pulse.cells.data
        sends, self.sends = self.sends, []
        for key, partition in dirty.items():
            value = store.get(key)
            if value is None:
                sends.append(await self.writer.delete(key, partition))
            else:
                sends.append(await self.writer.put(key, value, partition))
        positions: dict[int, int] = {}
        for event in events:
            message = event.message
            positions[message.partition] = max(positions.get(message.partition, -1), message.offset)
        previous = self.chain
        self.chain = asyncio.ensure_future(self._complete(events, sends, positions, previous))
        self.inflight.add(self.chain)
        self.chain.add_done_callback(self._completed)

    async def _complete(
        self,
        events: list[EventT[Any]],
        sends: list[Awaitable[Any]],
        positions: dict[int, int],
        previous: asyncio.Future[None] | None,
    ) -> None:
        """Once the cells are delivered: record the applied position, then acknowledge."""
        if previous is not None:
            await asyncio.shield(previous)
        if sends:
            await asyncio.gather(*sends)
        marks = [
            await self.positions.put(position_key(partition), offset, partition)
            for partition, offset in positions.items()
        ]
        if marks:
            await asyncio.gather(*marks)
        for event in events:
            event.ack()

    def _completed(self, fut: asyncio.Future[None]) -> None:
        self.inflight.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            self.fatal(fut.exception())  # type: ignore[arg-type]

    def fatal(self, exc: BaseException) -> None:
        """A changelog write failed: stop the worker; the unacked input is replayed on restart."""
        crash(self.pulse.app, exc, "changelog delivery")


def register(pulse: Pulse) -> Stage2:
    """Register the aggregate agent on the pulse app and return its runtime."""
    stage2 = Stage2(pulse)

    @pulse.app.agent(pulse.partials, name="aggregate")
    async def aggregate(stream: StreamT[Any]) -> None:
        async for event in cast(Any, stream).noack().events():
            await stage2.on_event(event)

    @pulse.app.timer(Stage2.WRITE_EVERY_S, name="cells-writer")
    async def write_cells() -> None:
        await stage2.maybe_write()

    async def on_revoked(app: Any, *args: Any, **kwargs: Any) -> None:
        await stage2.maybe_write(force=True)
        await drain(stage2.inflight, "cell writes")

    async def on_shutdown(app: Any, *args: Any, **kwargs: Any) -> None:
        await stage2.maybe_write(force=True)
        await drain(stage2.inflight, "cell writes", "shutdown", SHUTDOWN_GRACE_S)

    async def on_rebalanced(app: Any, *args: Any, **kwargs: Any) -> None:
        stage2.view.invalidate()

    connect(pulse.app.on_partitions_revoked, on_revoked)
    connect(pulse.app.on_rebalance_complete, on_rebalanced)
    connect(pulse.app.on_before_shutdown, on_shutdown)

    return stage2
