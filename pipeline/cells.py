"""Stage 2: idempotent series state, kept as cells in a changelog-backed table.

A cell is one series at one resolution and pane: total ("t"), fine pane ("f<start>") or coarse pane
("c<start>"). Its value is {"a": {source: last offset applied}, "v": aggregate}. A block from stage 1
carries the source partition and the offset range [a, b] it summarizes; a cell that already applied
offset b of that source skips it. Each cell is written as one changelog record, so whatever subset of
a block's writes survived a crash, replaying the block completes it without counting anything twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final

from pipeline.aggregates import Agg, merge_into
from pipeline.windows import pane_start

SEP: Final = "\x1e"
TOTAL: Final = "t"
FINE: Final = "f"
COARSE: Final = "c"

Cell = dict[str, Any]
Cells = MutableMapping[str, Cell]


def cell_key(series: str, res: str, start: int | None = None) -> str:
    """Return the table key of one cell."""
    return f"{series}{SEP}{res}" if start is None else f"{series}{SEP}{res}{start}"


def split_cell_key(key: str) -> tuple[str, str, int | None]:
    """Return (series key, resolution, pane start or None) of a cell key."""
    series, _, rest = key.rpartition(SEP)
    res = rest[0]
    return series, res, int(rest[1:]) if len(rest) > 1 else None


@dataclass
class ApplyResult:
    """What applying one block did."""

    written: list[str] = field(default_factory=list)
    skipped: int = 0


def _apply_cell(
    cells: Cells, key: str, source: str, end: int, agg: Mapping[str, Any], out: ApplyResult
) -> None:
    cell = cells.get(key)
    if cell is None:
        cell = {"a": {}, "v": {}}
    elif cell["a"].get(source, -1) >= end:
        out.skipped += 1
        return
    merge_into(cell["v"], agg)
    cell["a"][source] = end
    cells[key] = cell
    out.written.append(key)


def apply_block(
    cells: Cells, source: str, end: int, series: Mapping[str, Any], coarse_ms: int
) -> ApplyResult:
    """Apply one stage-1 block (source partition, last offset, series parts) to the cells."""
    out = ApplyResult()
    for skey, part in series.items():
        total = part.get("t")
        if total:
            _apply_cell(cells, cell_key(skey, TOTAL), source, end, total, out)
        panes = part.get("p")
        if not panes:
            continue
        coarse: dict[int, Agg] = {}
        for start, agg in panes.items():
            _apply_cell(cells, cell_key(skey, FINE, start), source, end, agg, out)
            merge_into(coarse.setdefault(pane_start(start, coarse_ms), {}), agg)
        for start, agg in coarse.items():
            _apply_cell(cells, cell_key(skey, COARSE, start), source, end, agg, out)
    return out


def expired_keys(keys: Iterable[str], now_ms: int, fine_keep_ms: int, coarse_keep_ms: int) -> list[str]:
    """Return the cells whose pane ended before its retention (totals never expire)."""
    fine_cut = now_ms - fine_keep_ms
    coarse_cut = now_ms - coarse_keep_ms
    out = []
    for key in keys:
        _, _, rest = key.rpartition(SEP)
        res = rest[0]
        if (res == FINE and int(rest[1:]) < fine_cut) or (res == COARSE and int(rest[1:]) < coarse_cut):
            out.append(key)
    return out


@dataclass
class SeriesState:
    """All cells of one series, by resolution."""

    total: Agg | None = None
    fine: dict[int, Agg] = field(default_factory=dict)
    coarse: dict[int, Agg] = field(default_factory=dict)


def group_cells(items: Iterable[tuple[str, Cell]]) -> dict[str, SeriesState]:
    """Group cells by series key."""
    out: dict[str, SeriesState] = {}
    for key, cell in items:
        series, res, start = split_cell_key(key)
        state = out.get(series)
        if state is None:
            state = out[series] = SeriesState()
        if res == TOTAL:
            state.total = cell["v"]
        elif res == FINE and start is not None:
            state.fine[start] = cell["v"]
        elif res == COARSE and start is not None:
            state.coarse[start] = cell["v"]
    return out
