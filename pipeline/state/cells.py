"""Stage 2: idempotent series state, kept as cells in a changelog-backed table.

A cell is one part of one series, keyed `series␞<res><rest>`:

    t            all-time total              f<start>   fine pane (start in epoch ms)
    c<start>     coarse pane                 p<d|m...>  calendar period ("pd20261126", "pm202611")
    l            latest state (health, gauges)  e<id>    latest state of one entity (a product)

Its value is a `pipeline.records.Cell`: {"a": {source: last offset applied}, "v": value, "V": format}.
A block from stage 1 carries the source partition and the offset range [first, last] it summarizes;
an additive cell that already applied offset `last` of that source skips it. Latest states merge by
last-writer-wins, which is idempotent by itself. Each cell is written as one changelog record, so
whatever subset of a block's writes survived a crash, replaying the block completes it without
counting anything twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final

from pipeline.records import CELL_APPLIED, CELL_VALUE, SeriesPart, new_cell
from pipeline.state.aggregates import Agg, merge_into, newer
from pipeline.state.calendar import Calendar
from pipeline.state.windows import pane_start

SEP: Final = "\x1e"
TOTAL: Final = "t"
FINE: Final = "f"
COARSE: Final = "c"
PERIOD: Final = "p"
LATEST: Final = "l"
ENTITY: Final = "e"
PERIOD_MARGIN_MS: Final = 2 * 86_400_000
"""Calendar cells are kept this long after their period ends (late events, yesterday's figures)."""

Cell = dict[str, Any]
Cells = MutableMapping[str, Cell]


def cell_key(series: str, res: str, rest: object = "") -> str:
    """Return the table key of one cell."""
    return f"{series}{SEP}{res}{rest}"


def is_cell_key(key: str) -> bool:
    """Whether a key of the cells table is a cell (series keys are JSON arrays; stage 2 also keeps
    its applied partials position there, under a plain key)."""
    return key[:1] == "["


def split_cell_key(key: str) -> tuple[str, str, str]:
    """Return (series key, resolution letter, rest) of a cell key.

    Series keys are compact JSON, which escapes control characters, so the first separator ends the
    series key; the rest (an entity id) may hold separators of its own.
    """
    series, _, tail = key.partition(SEP)
    return series, tail[0], tail[1:]


@dataclass
class ApplyResult:
    """What applying one block did."""

    written: list[str] = field(default_factory=list)
    skipped: int = 0
    overlapped: list[tuple[str, int]] = field(default_factory=list)
    """Cells (and the offset they had applied) whose last applied offset fell inside the block's range.

    Stage 1 replays exactly its recorded ranges, so a block is either wholly applied or wholly new;
    anything else means two ranges of one source overlap, and the block is applied (counted twice in
    part) and reported rather than silently dropped."""


def _add_cell(
    cells: Cells, key: str, source: str, end: int, agg: Mapping[str, Any], out: ApplyResult, start: int
) -> None:
    cell = cells.get(key)
    if cell is None:
        cell = new_cell()
    else:
        applied = cell[CELL_APPLIED].get(source, -1)
        if applied >= end:
            out.skipped += 1
            return
        if applied >= start:
            out.overlapped.append((key, applied))
    merge_into(cell[CELL_VALUE], agg)
    cell[CELL_APPLIED][source] = end
    cells[key] = cell
    out.written.append(key)


def _latest_cell(cells: Cells, key: str, state: Mapping[str, Any], out: ApplyResult) -> None:
    cell = cells.get(key)
    if cell is not None and not newer(state, cell[CELL_VALUE]):
        out.skipped += 1
        return
    cells[key] = new_cell(dict(state))
    out.written.append(key)


def apply_block(
    cells: Cells,
    source: str,
    end: int,
    series: Mapping[str, SeriesPart],
    coarse_ms: int,
    start: int | None = None,
) -> ApplyResult:
    """Apply one stage-1 block (source partition, offset range [start, end], series parts) to the cells.

    Without `start`, overlaps are not looked for.
    """
    first = end if start is None else start
    out = ApplyResult()
    for skey, part in series.items():
        total = part.total
        if total:
            _add_cell(cells, cell_key(skey, TOTAL), source, end, total, out, first)
        panes = part.panes
        if panes:
            coarse: dict[int, Agg] = {}
            for start, agg in panes.items():
                _add_cell(cells, cell_key(skey, FINE, start), source, end, agg, out, first)
                merge_into(coarse.setdefault(pane_start(start, coarse_ms), {}), agg)
            for start, agg in coarse.items():
                _add_cell(cells, cell_key(skey, COARSE, start), source, end, agg, out, first)
        periods = part.periods
        if periods:
            for period, agg in periods.items():
                _add_cell(cells, cell_key(skey, PERIOD, period), source, end, agg, out, first)
        latest = part.latest
        if latest:
            _latest_cell(cells, cell_key(skey, LATEST), latest, out)
        entities = part.entities
        if entities:
            for entity, state in entities.items():
                _latest_cell(cells, cell_key(skey, ENTITY, entity), state, out)
    return out


@dataclass(frozen=True)
class Retention:
    """How long each kind of cell is kept."""

    fine_ms: int
    coarse_ms: int
    calendar: Calendar

    def expired(self, keys: Iterable[str], now_ms: int) -> list[str]:
        """Return the pane and period cells past their retention (totals and states never expire)."""
        fine_cut = now_ms - self.fine_ms
        coarse_cut = now_ms - self.coarse_ms
        out = []
        for key in keys:
            _, res, rest = split_cell_key(key)
            if res == FINE:
                if int(rest) < fine_cut:
                    out.append(key)
            elif res == COARSE:
                if int(rest) < coarse_cut:
                    out.append(key)
            elif res == PERIOD and self.calendar.end_ms(rest) + PERIOD_MARGIN_MS < now_ms:
                out.append(key)
        return out


@dataclass
class SeriesState:
    """All cells of one series, by resolution."""

    total: Agg | None = None
    fine: dict[int, Agg] = field(default_factory=dict)
    coarse: dict[int, Agg] = field(default_factory=dict)
    periods: dict[str, Agg] = field(default_factory=dict)
    latest: Agg | None = None
    entities: dict[str, Agg] = field(default_factory=dict)

    def keys(self, series: str) -> list[str]:
        """The keys of the expiring cells (panes and periods)."""
        out = [cell_key(series, FINE, s) for s in self.fine]
        out.extend(cell_key(series, COARSE, s) for s in self.coarse)
        out.extend(cell_key(series, PERIOD, p) for p in self.periods)
        return out

    def drop(self, res: str, rest: str) -> None:
        """Forget one expired cell."""
        if res == FINE:
            self.fine.pop(int(rest), None)
        elif res == COARSE:
            self.coarse.pop(int(rest), None)
        elif res == PERIOD:
            self.periods.pop(rest, None)

    def empty(self) -> bool:
        """Whether no cell is left."""
        return not (self.total or self.fine or self.coarse or self.periods or self.latest or self.entities)


def group_cells(items: Iterable[tuple[str, Cell]]) -> dict[str, SeriesState]:
    """Group cells by series key."""
    out: dict[str, SeriesState] = {}
    for key, cell in items:
        series, res, rest = split_cell_key(key)
        state = out.get(series)
        if state is None:
            state = out[series] = SeriesState()
        value = cell[CELL_VALUE]
        if res == TOTAL:
            state.total = value
        elif res == FINE:
            state.fine[int(rest)] = value
        elif res == COARSE:
            state.coarse[int(rest)] = value
        elif res == PERIOD:
            state.periods[rest] = value
        elif res == LATEST:
            state.latest = value
        elif res == ENTITY:
            state.entities[rest] = value
    return out
