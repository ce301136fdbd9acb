"""Stage 2: merge partial aggregates into the series this worker owns; rules and pane expiry.

The partials topic is keyed by series owner, so partition p carries exactly the series that hash to
p; the reader (`agents.kafka.reader`) hands over its batches. Cells are merged in memory by
`pipeline.state.cells.apply_block`, which skips what a cell already applied, and written to the `cells`
table (changelog partition p) in coalesced batches; the last partials offset whose cells are durable
is recorded after them in the same changelog partition (`agents.kafka.positions`), so any prefix of that
log that a recovery reads holds cells at least as new as the position it holds. `SeriesView`
indexes the cells of the owned partitions for readers (metrics, API, rules). On the clock, between
batches: cell writes, rule evaluation (once a partition has caught up with its partials after an
assignment) and pane expiry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol

from aiokafka import TopicPartition

from agents.kafka.durable import ChangelogWriter, Crash
from agents.kafka.positions import Position, ReadProgress, ResumePlan, applied_key, partials_plan
from pipeline.records import AppliedRecord, PartialBlock, check_cells, decode_partials
from pipeline.state.cells import Retention, SeriesState, apply_block, group_cells, is_cell_key, split_cell_key
from pipeline.state.series import owner

if TYPE_CHECKING:
    from faust.types import TableT

    from agents.kafka.positions import Lifecycle
    from agents.telemetry import PipelineMetrics
    from pipeline.config.settings import Config
    from pipeline.state.calendar import Calendar

log = logging.getLogger(__name__)

EXPIRY_EVERY_S = 10.0


class RuleTicks(Protocol):
    """The rule evaluation stage 2 drives on its clock (`agents.stages.evaluate.Evaluator`)."""

    last_eval: dict[int, int]

    async def on_tick(self, partition: int, now_ms: int) -> list[Awaitable[Any]]:
        """Evaluate one partition's rules when due; return the writes to await."""
        ...


class SeriesView:
    """Index of the owned series (active partitions only), kept in step with the cells table."""

    def __init__(
        self, cells: TableT[str, Any], partitions: int, ownership: Lifecycle, metrics: PipelineMetrics
    ) -> None:
        self.cells = cells
        self.partitions = partitions
        self.ownership = ownership
        self.metrics = metrics
        self._states: dict[str, SeriesState] = {}
        self._by_partition: dict[int, set[str]] = {}
        self._active: frozenset[int] | None = None

    def invalidate(self) -> None:
        """Forget the index; it is rebuilt from the table on next read (after a rebalance)."""
        self._active = None

    def states(self) -> dict[str, SeriesState]:
        """Return series key -> state for every series this worker owns now."""
        active = frozenset(self.ownership.active_partitions())
        if self._active != active:
            self._rebuild(active)
        return self._states

    def _rebuild(self, active: frozenset[int]) -> None:
        items = (
            (key, cell)
            for key, cell in list(self.cells.data.items())
            if cell is not None
            and is_cell_key(key)
            and owner(split_cell_key(key)[0], self.partitions) in active
        )
        self._states = group_cells(items)
        self._by_partition = {}
        for key in self._states:
            self._by_partition.setdefault(owner(key, self.partitions), set()).add(key)
        # Cache the index only once the tables are recovered: Faust completes a rebalance (and we
        # invalidate) before its recovery has replayed the changelogs, and an index built from a
        # half-recovered table would stay stale until the next rebalance.
        self._active = active if self.ownership.is_ready() else None
        self.metrics.owned_series.set(len(self._states))

    def note_written(self, keys: list[str]) -> None:
        """Add freshly written cells to the index."""
        if self._active is None:
            return
        cells = self.cells.data
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
        self.metrics.owned_series.set(len(self._states))

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


class Stage2:
    """Runtime of stage 2 on one worker.

    Blocks are applied in memory at once (readers see them immediately). Changed cells are written
    to the changelog in coalesced batches (at most every `WRITE_EVERY_S`, or sooner when many are
    pending), followed by the applied position of each partials partition. A cell updated by twenty
    blocks in that time is written once.
    """

    WRITE_EVERY_S = 1.0
    """Readers see cells at once (in memory); the interval only bounds what a crash makes stage 2
    re-apply, and how much changelog a recovery reads (every write of a cell is a record)."""
    WRITE_MAX_PENDING = 500

    def __init__(
        self,
        config: Config,
        partials_name: str,
        cells: TableT[str, Any],
        ownership: Lifecycle,
        metrics: PipelineMetrics,
        calendar: Calendar,
        crash: Crash,
    ) -> None:
        cfg = config.windows
        self.cells = cells
        self.metrics = metrics
        self.crash = crash
        self.coarse_ms = int(cfg.coarse_pane * 1000)
        self.retention = Retention(
            int(cfg.retention_fine() * 1000), int(cfg.retention_coarse() * 1000), calendar
        )
        self.partials_name = partials_name
        self.view = SeriesView(cells, config.topics.partitions, ownership, metrics)
        self.writer = ChangelogWriter(cells)
        self.last_expiry: dict[int, float] = {}
        self.last_tick_ms: dict[int, int] = {}
        self.dirty: dict[str, int] = {}
        self.applied: dict[int, int] = {}
        """Partials offset applied in memory, per partition, not yet recorded."""
        self.pending_messages = 0
        self.pending_since = 0.0
        self.sends: list[Awaitable[Any]] = []
        self.chain: asyncio.Future[None] | None = None
        self.caught_up: set[int] = set()
        """Partitions that read their partials to the end once since the assignment."""
        self.owned: list[int] = []
        self.formats_checked = False
        """Whether the recovered cells of the current assignment had their formats checked."""
        self.evaluator: RuleTicks | None = None
        self.reader: ReadProgress | None = None

    # -- positions --------------------------------------------------------------------------------

    def plan(self, partition: int) -> ResumePlan:
        """Where a partials partition resumes: after the last offset whose cells are durable."""
        if not self.formats_checked:
            check_cells(self.cells.data, "cells table")  # stops the worker on a format it cannot read
            self.formats_checked = True
        key = applied_key(partition)
        value = self.cells.get(key)
        if value is None:
            return partials_plan(None)
        return partials_plan(AppliedRecord.from_wire(value, f"cells key {key!r}").offset)

    def start(self, partition: int, position: Position) -> None:
        """Start reading a partials partition at `position`."""
        if partition not in self.owned:
            self.owned.append(partition)
        self.caught_up.discard(partition)
        log.debug("partials %d: reading from %d", partition, position.offset)

    def stop(self) -> None:
        """Forget the assignment (after a revocation, once the writes are drained)."""
        self.owned = []
        self.formats_checked = False
        self.caught_up.clear()
        self.applied.clear()
        self.dirty.clear()
        self.pending_messages = 0
        self.view.invalidate()

    def inflight(self) -> list[asyncio.Future[None]]:
        """Cell writes not yet done."""
        return [self.chain] if self.chain is not None else []

    # -- per batch --------------------------------------------------------------------------------

    def take(self, partition: int, records: list[Any]) -> None:
        """Apply a batch of one partials partition's messages."""
        for record in records:
            value = record.value
            if not value:
                continue
            message = decode_partials(value, f"partials {partition} offset {record.offset}")
            if message.blocks:  # (tick messages of older versions carry none)
                self.apply(partition, message.blocks)
        if not self.pending_messages:
            self.pending_since = time.monotonic()
        self.pending_messages += len(records)
        self.applied[partition] = records[-1].offset

    def apply(self, partition: int, blocks: list[PartialBlock]) -> None:
        """Merge blocks into the cells in memory and mark what changed."""
        self.view.states()  # make sure the index is current before it is updated
        metrics = self.metrics
        store = self.cells.data
        dirty = self.dirty
        for block in blocks:
            source, start, end = block.source, block.first, block.last
            result = apply_block(store, source, end, block.series, self.coarse_ms, start)
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

    async def after_batch(self) -> None:
        """Work on the clock: write cells, evaluate rules, drop panes past their retention."""
        reader = self.reader
        now_ms = int(time.time() * 1000)
        for partition in self.owned:
            if partition not in self.caught_up:
                if reader is None or not reader.caught_up(TopicPartition(self.partials_name, partition)):
                    continue
                self.caught_up.add(partition)
            await self.on_clock(partition, now_ms)
        await self.maybe_write()

    async def on_clock(self, partition: int, now_ms: int) -> None:
        """Evaluate the rules of one partition when due; expire its old panes now and then."""
        self.last_tick_ms[partition] = now_ms
        if self.evaluator is not None:
            self.sends.extend(await self.evaluator.on_tick(partition, now_ms))
        now = time.monotonic()
        if now - self.last_expiry.get(partition, 0.0) < EXPIRY_EVERY_S:
            return
        self.last_expiry[partition] = now
        self.view.states()
        keys = self.retention.expired(self.view.expiring_keys(partition), now_ms)
        store = self.cells.data
        for key in keys:
            store.pop(key, None)
            self.dirty[key] = partition
        self.view.note_deleted(keys)
        if keys:
            self.metrics.cells_expired.inc(len(keys))

    async def maybe_write(self) -> None:
        """Write the changed cells when enough are pending or they waited long enough."""
        if not (self.pending_messages or self.dirty or self.sends):
            return
        waited = time.monotonic() - self.pending_since
        if self.pending_messages >= self.WRITE_MAX_PENDING or waited >= self.WRITE_EVERY_S:
            await self.write()

    async def write(self) -> None:
        """Send every changed cell (or its tombstone), then record the applied positions."""
        if not (self.pending_messages or self.dirty or self.sends):
            return
        dirty, self.dirty = self.dirty, {}
        positions, self.applied = self.applied, {}
        self.pending_messages = 0
        self.pending_since = time.monotonic()
        store = self.cells.data
        sends, self.sends = self.sends, []
        for key, partition in dirty.items():
            value = store.get(key)
            if value is None:
                sends.append(await self.writer.delete(key, partition))
            else:
                sends.append(await self.writer.put(key, value, partition))
        previous = self.chain
        self.chain = asyncio.ensure_future(self._complete(sends, positions, previous))
        self.chain.add_done_callback(self._completed)

    async def _complete(
        self,
        sends: list[Awaitable[Any]],
        positions: dict[int, int],
        previous: asyncio.Future[None] | None,
    ) -> None:
        """Once the cells are delivered, record the applied positions."""
        if previous is not None:
            await asyncio.shield(previous)
        if sends:
            await asyncio.gather(*sends)
        marks = [
            await self.writer.put(applied_key(partition), AppliedRecord(offset).to_wire(), partition)
            for partition, offset in positions.items()
        ]
        if marks:
            await asyncio.gather(*marks)

    def _completed(self, fut: asyncio.Future[None]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            self.crash(fut.exception(), "changelog delivery")  # type: ignore[arg-type]
