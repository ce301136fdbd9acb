"""Pane math of windows, and stage 2's idempotent cells (replays, crashes, sources, retention)."""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config.settings import Config
from pipeline.records import decode_partials, encode_partials, series_parts
from pipeline.state.aggregates import Agg, merge_into, merged
from pipeline.state.calendar import Calendar
from pipeline.state.cells import (
    COARSE,
    ENTITY,
    FINE,
    LATEST,
    PERIOD,
    SEP,
    TOTAL,
    Retention,
    apply_block,
    cell_key,
    group_cells,
    split_cell_key,
)
from pipeline.state.series import series_key
from pipeline.state.windows import Span, merge_window, pane_start, span

PANE = 10_000
COARSE_MS = 60_000
SEOUL = Calendar("Asia/Seoul")


def expired_keys(keys: Sequence[str], now: int, fine_keep: int, coarse_keep: int) -> list[str]:
    return Retention(fine_keep, coarse_keep, SEOUL).expired(keys, now)


# --- windows -------------------------------------------------------------------------------------


def panes_of(sp: Span, pane_ms: int) -> list[int]:
    return list(range(sp.first, sp.last + 1, pane_ms))


def test_pane_start() -> None:
    assert pane_start(0, PANE) == 0
    assert pane_start(9_999, PANE) == 0
    assert pane_start(10_000, PANE) == 10_000
    assert pane_start(1_700_000_012_345, PANE) == 1_700_000_010_000
    assert pane_start(-1, PANE) == -PANE


def test_span_mid_pane() -> None:
    sp = span(125_000, 60_000, PANE)
    assert (sp.first, sp.last) == (70_000, 120_000)
    assert panes_of(sp, PANE) == [70_000, 80_000, 90_000, 100_000, 110_000, 120_000]
    # 5 whole panes plus 5 s of the current one.
    assert sp.covered_s == pytest.approx(55.0)


def test_span_at_pane_boundaries() -> None:
    at_start = span(120_000, 60_000, PANE)
    assert (at_start.first, at_start.last) == (70_000, 120_000)
    # The current pane just began: the window covers 50 s (plus the 1 ms floor that avoids 0).
    assert at_start.covered_s == pytest.approx(50.001)
    just_before = span(119_999, 60_000, PANE)
    assert (just_before.first, just_before.last) == (60_000, 110_000)
    assert just_before.covered_s == pytest.approx(59.999)
    assert len(panes_of(just_before, PANE)) == 6


def test_span_membership_is_inclusive_of_first_and_last() -> None:
    sp = span(125_000, 60_000, PANE)
    assert sp.holds(70_000)
    assert sp.holds(120_000)
    assert not sp.holds(60_000)
    assert not sp.holds(130_000)


@pytest.mark.parametrize(
    ("now", "window", "pane", "count"),
    [
        (3_600_000 + 30_000, 3_600_000, 60_000, 60),
        (5_000, 10_000, 10_000, 1),
        (1_700_000_000_123, 300_000, 10_000, 30),
    ],
)
def test_span_pane_count_and_covered_range(now: int, window: int, pane: int, count: int) -> None:
    sp = span(now, window, pane)
    assert len(panes_of(sp, pane)) == count
    assert sp.last == pane_start(now, pane)
    assert sp.first % pane == 0
    assert (window - pane) / 1000 < sp.covered_s <= window / 1000
    assert sp.covered_s == pytest.approx(
        (now - sp.first) / 1000 if now > sp.last else (now - sp.first + 1) / 1000
    )


@settings(max_examples=200, deadline=None)
@given(
    now=st.integers(min_value=0, max_value=10**13),
    pane_s=st.sampled_from([1, 5, 10, 60]),
    multiple=st.integers(min_value=1, max_value=120),
)
def test_property_span(now: int, pane_s: int, multiple: int) -> None:
    pane = pane_s * 1000
    window = pane * multiple
    sp = span(now, window, pane)
    members = panes_of(sp, pane)
    assert len(members) == multiple
    assert members[-1] <= now < members[-1] + pane
    assert now - sp.first <= window
    assert sp.covered_s == pytest.approx(max(now - sp.first, sp.last - sp.first + 1) / 1000)


def test_merge_window_sums_only_panes_in_the_window() -> None:
    panes = {start: {"n": 1, "h": [1, 0], "q": {3: 1}} for start in range(0, 200_000, PANE)}
    sp = span(125_000, 60_000, PANE)
    out = merge_window(panes, sp)
    assert out == {"n": 6, "h": [6, 0], "q": {3: 6}}
    # Reading a window does not change the panes.
    assert all(agg == {"n": 1, "h": [1, 0], "q": {3: 1}} for agg in panes.values())
    assert merge_window({}, sp) == {}


# --- cells ---------------------------------------------------------------------------------------

ROUTE = series_key("route", "api", "/api/orders/:id")
REQUESTS = series_key("requests")
HTTP = series_key("http", "GET", "/api/orders/:id", "200")
ERRORS = series_key("errors", "api", "/api/f123")


def sample_block(seed: int = 0) -> dict[str, Any]:
    r = random.Random(seed)
    base = 1_700_000_000_000 - 1_700_000_000_000 % COARSE_MS

    def window_agg() -> Agg:
        return {
            "n": r.randint(1, 9),
            "e5": r.randint(0, 2),
            "ds": r.randint(0, 10**6),
            "q": {r.randint(-5, 400): r.randint(1, 3) for _ in range(3)},
        }

    starts = [base + PANE * i for i in (0, 1, 5, 6, 7, 13)]
    return {
        HTTP: {"t": {"n": 7, "ds": 123_456, "h": [1, 2, 0, 0, 0, 0, 0, 0, 0, 4]}},
        ROUTE: {"p": {s: window_agg() for s in starts}},
        REQUESTS: {"p": {s: window_agg() for s in starts[:3]}},
        ERRORS: {"t": {"n": 3}, "p": {starts[0]: {"n": 1}, starts[4]: {"n": 2}}},
    }


class Recording(dict[str, Any]):
    """A cell table that keeps a deep copy of itself after every write (what a changelog holds)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.snapshots: list[dict[str, Any]] = []

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.snapshots.append(copy.deepcopy(dict(self)))


def applied(
    blocks: Sequence[tuple[str, int, Mapping[str, Any]]], start: dict[str, Any] | None = None
) -> dict[str, Any]:
    cells: dict[str, Any] = copy.deepcopy(start) if start else {}
    for source, end, series in blocks:
        apply_block(cells, source, end, series_parts(series), COARSE_MS)
    return cells


def test_apply_block_writes_total_fine_and_coarse_cells() -> None:
    block = sample_block()
    cells: dict[str, Any] = {}
    result = apply_block(cells, "p0", 41, series_parts(block), COARSE_MS)
    assert sorted(result.written) == sorted(cells)
    assert result.skipped == 0
    assert cells[cell_key(HTTP, TOTAL)] == {"a": {"p0": 41}, "v": block[HTTP]["t"], "V": 2}
    for start, agg in block[ROUTE]["p"].items():
        assert cells[cell_key(ROUTE, FINE, start)] == {"a": {"p0": 41}, "v": agg, "V": 2}
    coarse = {int(split_cell_key(k)[2]) for k in cells if split_cell_key(k)[:2] == (ROUTE, COARSE)}
    assert coarse == {pane_start(s, COARSE_MS) for s in block[ROUTE]["p"]}
    # Cells do not alias the block: changing the cells leaves the block as it was.
    before = copy.deepcopy(block)
    apply_block(cells, "p1", 1, series_parts(block), COARSE_MS)
    assert block == before


def test_apply_same_block_twice_is_applying_it_once() -> None:
    block = sample_block()
    once = applied([("p0", 10, block)])
    cells = copy.deepcopy(once)
    result = apply_block(cells, "p0", 10, series_parts(block), COARSE_MS)
    assert result.written == []
    assert result.skipped == len(once)
    assert cells == once


def test_older_block_of_a_source_is_skipped_after_a_newer_one() -> None:
    first, second = sample_block(1), sample_block(2)
    want = applied([("p0", 10, first), ("p0", 20, second)])
    assert applied([("p0", 10, first), ("p0", 20, second), ("p0", 10, first)]) == want
    assert applied([("p0", 10, first), ("p0", 20, second), ("p0", 20, second)]) == want


@pytest.mark.parametrize("prior", [False, True])
def test_crash_after_any_prefix_of_writes_then_replay_equals_once(prior: bool) -> None:
    block = sample_block(3)
    start: dict[str, Any] = applied([("p0", 5, sample_block(4)), ("p1", 9, sample_block(5))]) if prior else {}
    once = applied([("p0", 12, block)], start)
    recording = Recording(copy.deepcopy(start))
    apply_block(recording, "p0", 12, series_parts(block), COARSE_MS)
    assert dict(recording) == once
    writes = recording.snapshots
    assert len(writes) == sum(1 for k in once if once[k] != start.get(k))
    for k in range(len(writes) + 1):
        survived = copy.deepcopy(writes[k - 1]) if k else copy.deepcopy(start)
        result = apply_block(survived, "p0", 12, series_parts(block), COARSE_MS)
        assert survived == once, f"crash after {k} writes"
        assert result.skipped == k
        # ... and a second replay changes nothing more.
        apply_block(survived, "p0", 12, series_parts(block), COARSE_MS)
        assert survived == once


INVENTORY = series_key("inventory")
HEALTH = series_key("health", "api")
REVENUE = series_key("revenue", "KRW")


def mixed_block(seed: int) -> dict[str, Any]:
    """A block with every section: totals, panes, calendar periods, latest and entity states."""
    r = random.Random(seed)
    block = sample_block(seed)
    block[REVENUE] = {
        "t": {"n": 2, "am": r.randint(1, 10**9)},
        "c": {"d20231114": {"n": 1, "am": r.randint(1, 10**6)}, "m202311": {"n": 2, "am": 5}},
    }
    block[HEALTH] = {"l": {"t": r.randint(0, 50), "s": r.randint(0, 1), "rt": None}}
    block[INVENTORY] = {
        "e": {f"p{i}": {"t": r.randint(0, 50), "s": r.randint(-1, 9), "l": 3} for i in range(4)},
        "p": {BASE: {"n": 3, "us": r.randint(0, 20)}},
    }
    return block


@pytest.mark.parametrize("prior", [False, True])
def test_crash_and_replay_of_a_block_with_every_section(prior: bool) -> None:
    block = mixed_block(3)
    start: dict[str, Any] = applied([("p0", 5, mixed_block(4)), ("p1", 9, mixed_block(5))]) if prior else {}
    once = applied([("p0", 12, block)], start)
    recording = Recording(copy.deepcopy(start))
    stale = apply_block(recording, "p0", 12, series_parts(block), COARSE_MS).skipped
    assert dict(recording) == once
    assert prior or stale == 0
    writes = recording.snapshots
    assert len(writes) == sum(1 for k in once if once[k] != start.get(k))
    for k in range(len(writes) + 1):
        survived = copy.deepcopy(writes[k - 1]) if k else copy.deepcopy(start)
        result = apply_block(survived, "p0", 12, series_parts(block), COARSE_MS)
        assert survived == once, f"crash after {k} writes"
        assert result.skipped == k + stale
        apply_block(survived, "p0", 12, series_parts(block), COARSE_MS)
        assert survived == once


def test_blocks_with_every_section_commute_and_repeat() -> None:
    blocks = [("p0", 4, mixed_block(7)), ("p1", 8, mixed_block(8)), ("p2", 2, mixed_block(9))]
    want = applied(blocks)
    assert {k: c["v"] for k, c in want.items()} == expected_cells(blocks)
    for order in ([2, 1, 0], [1, 0, 2], [0, 0, 2, 1, 2, 1]):
        assert applied([blocks[i] for i in order]) == want


def test_block_after_json_round_trip_applies_like_the_original() -> None:
    block = sample_block(6)
    sent = encode_partials([{"source": "p0", "first": 3, "last": 3, "series": block}])
    wire = decode_partials(sent, "test").blocks[0].series
    direct = applied([("p0", 3, block)])
    via_json = applied([("p0", 3, wire)])
    assert group_values(direct) == group_values(via_json)


def group_values(cells: Mapping[str, Any]) -> dict[str, Any]:
    """Cell values with sketch bins keyed by int (JSON turns them into strings)."""
    out = {}
    for key, cell in cells.items():
        value = dict(cell["v"])
        if "q" in value:
            value["q"] = {int(k): v for k, v in value["q"].items()}
        out[key] = value
    return out


def test_blocks_from_different_sources_commute() -> None:
    blocks = [("p0", 4, sample_block(7)), ("p1", 8, sample_block(8)), ("p2", 2, sample_block(9))]
    want = applied(blocks)
    for order in ([2, 1, 0], [1, 0, 2], [1, 2, 0]):
        assert applied([blocks[i] for i in order]) == want


def assert_coarse_is_sum_of_fine(cells: Mapping[str, Any]) -> None:
    states = group_cells(cells.items())
    for key, state in states.items():
        sums: dict[int, Agg] = {}
        for start, agg in state.fine.items():
            merge_into(sums.setdefault(pane_start(start, COARSE_MS), {}), agg)
        assert state.coarse == sums, key


def test_coarse_panes_equal_the_sum_of_their_fine_panes() -> None:
    cells = applied([("p0", i, sample_block(i)) for i in range(1, 6)] + [("p1", 1, sample_block(9))])
    assert_coarse_is_sum_of_fine(cells)


def test_group_cells_sorts_cells_by_series_and_resolution() -> None:
    block = sample_block(10)
    states = group_cells(applied([("p0", 1, block)]).items())
    assert set(states) == set(block)
    assert states[HTTP].total == block[HTTP]["t"]
    assert states[HTTP].fine == {} and states[HTTP].coarse == {}
    assert states[ROUTE].total is None
    assert states[ROUTE].fine == block[ROUTE]["p"]
    assert states[ERRORS].total == {"n": 3}


def test_cell_key_round_trip() -> None:
    for series in (ROUTE, ERRORS, series_key("route", "a\x1eb", "/x/t1")):
        assert SEP not in series  # JSON escapes control characters
        assert split_cell_key(cell_key(series, TOTAL)) == (series, TOTAL, "")
        assert split_cell_key(cell_key(series, FINE, 1_700_000_010_000)) == (series, FINE, "1700000010000")
        assert split_cell_key(cell_key(series, COARSE, 0)) == (series, COARSE, "0")
        assert split_cell_key(cell_key(series, PERIOD, "d20261126")) == (series, PERIOD, "d20261126")
        assert split_cell_key(cell_key(series, LATEST)) == (series, LATEST, "")
        # Entity ids are free text (product ids): even a separator inside one round-trips.
        for entity in ("p-1", "42", "a\x1eb", "\x1e", "e\x1ef1"):
            assert split_cell_key(cell_key(series, ENTITY, entity)) == (series, ENTITY, entity)


def test_group_cells_keeps_entities_whose_id_holds_the_separator() -> None:
    inventory = series_key("inventory")
    states = {"plain": {"t": 5, "s": 1, "l": 0}, "odd\x1eid": {"t": 6, "s": 2, "l": 0}}
    cells: dict[str, Any] = {}
    apply_block(cells, "p0", 1, series_parts({inventory: {"e": states}}), COARSE_MS)
    grouped = group_cells(cells.items())
    assert set(grouped) == {inventory}
    assert grouped[inventory].entities == states


def test_expired_keys_drops_only_panes_past_retention() -> None:
    now = 10_000_000
    fine_keep, coarse_keep = 1_000_000, 5_000_000
    series = [ROUTE, ERRORS, series_key("route", "f1", "/c2/t3")]
    keys = []
    for s in series:
        keys.append(cell_key(s, TOTAL))
        keys += [cell_key(s, FINE, start) for start in range(0, now + 1, PANE)]
        keys += [cell_key(s, COARSE, start) for start in range(0, now + 1, COARSE_MS)]
    dropped = set(expired_keys(keys, now, fine_keep, coarse_keep))
    for key in keys:
        _, res, rest = split_cell_key(key)
        if res == TOTAL:
            assert key not in dropped
        elif res == FINE:
            assert (key in dropped) == (int(rest) < now - fine_keep), key
        else:
            assert (key in dropped) == (int(rest) < now - coarse_keep), key
    # Totals, latest states and entity states never expire, however old.
    forever = [cell_key(s, TOTAL) for s in series] + [cell_key(s, LATEST) for s in series]
    forever += [cell_key(s, ENTITY, e) for s in series for e in ("p1", "0", "f1")]
    assert expired_keys(forever, 10**15, 1, 1) == []


def test_expiry_keeps_every_pane_a_window_or_a_late_event_still_needs() -> None:
    cfg = Config().windows
    fine_keep = int(cfg.retention_fine() * 1000)
    coarse_keep = int(cfg.retention_coarse() * 1000)
    pane, coarse = int(cfg.pane * 1000), int(cfg.coarse_pane * 1000)
    lateness = int(cfg.allowed_lateness * 1000)
    now = 1_700_000_123_456
    needed: list[str] = []
    for window in cfg.windows:
        size = int(cfg.pane_for(window) * 1000)
        res = FINE if size == pane else COARSE
        # A window read now, and a late event's pane up to `allowed_lateness` back.
        for t in (now, now - lateness):
            sp = span(t, int(window * 1000), size)
            needed += [cell_key(ROUTE, res, s) for s in range(sp.first, sp.last + 1, size)]
    needed += [cell_key(ROUTE, FINE, pane_start(now - lateness, pane))]
    needed += [cell_key(ROUTE, COARSE, pane_start(now - lateness, coarse))]
    assert expired_keys(needed, now, fine_keep, coarse_keep) == []


# --- property test over random blocks --------------------------------------------------------------

SERIES = [ROUTE, REQUESTS, HTTP, ERRORS]
BASE = 1_700_000_000_000 - 1_700_000_000_000 % COARSE_MS

agg_st = st.fixed_dictionaries(
    {
        "n": st.integers(0, 50),
        "ds": st.integers(0, 10**7),
        "h": st.lists(st.integers(0, 5), min_size=3, max_size=3),
        "q": st.dictionaries(st.integers(-50, 500), st.integers(1, 5), max_size=4),
    }
)
state_st = st.fixed_dictionaries({"t": st.integers(0, 4), "s": st.integers(-2, 2)})
"""Latest states: few event times, so ties (broken by content) are common."""
part_st = st.fixed_dictionaries(
    {},
    optional={
        "t": agg_st,
        "p": st.dictionaries(st.integers(0, 40).map(lambda i: BASE + i * PANE), agg_st, max_size=5),
        "c": st.dictionaries(st.sampled_from(["d20231114", "d20231115", "m202311"]), agg_st, max_size=3),
        "l": state_st,
        "e": st.dictionaries(st.sampled_from(["p1", "p2", "p\x1e3"]), state_st, max_size=3),
    },
)
series_st = st.dictionaries(st.sampled_from(SERIES), part_st, min_size=1, max_size=4)
blocks_st = st.lists(st.tuples(st.sampled_from(["p0", "p1", "p2"]), series_st), min_size=1, max_size=8)


def last_writer(states: list[Agg]) -> Agg:
    """The winner of last-writer-wins: latest event time, ties broken by the sorted JSON."""
    return max(states, key=lambda s: (s["t"], orjson.dumps(s, option=orjson.OPT_SORT_KEYS)))


def expected_cells(blocks: Sequence[tuple[str, int, Mapping[str, Any]]]) -> dict[str, Agg]:
    """Ground truth: each additive cell is the plain sum of every block's contribution to it, each
    latest or entity cell the last writer of every state written to it."""
    contributions: dict[str, list[Agg]] = {}
    states: dict[str, list[Agg]] = {}
    for _source, _end, series in blocks:
        for skey, part in series.items():
            if part.get("t"):
                contributions.setdefault(cell_key(skey, TOTAL), []).append(part["t"])
            for start, agg in (part.get("p") or {}).items():
                contributions.setdefault(cell_key(skey, FINE, start), []).append(agg)
                contributions.setdefault(cell_key(skey, COARSE, pane_start(start, COARSE_MS)), []).append(agg)
            for period, agg in (part.get("c") or {}).items():
                contributions.setdefault(cell_key(skey, PERIOD, period), []).append(agg)
            if part.get("l"):
                states.setdefault(cell_key(skey, LATEST), []).append(part["l"])
            for entity, state in (part.get("e") or {}).items():
                states.setdefault(cell_key(skey, ENTITY, entity), []).append(state)
    out = {key: merged(aggs) for key, aggs in contributions.items()}
    out.update((key, last_writer(candidates)) for key, candidates in states.items())
    return out


@settings(max_examples=120, deadline=None)
@given(raw=blocks_st, data=st.data())
def test_property_replays_and_crashes_never_count_twice(
    raw: list[tuple[str, dict[str, Any]]], data: st.DataObject
) -> None:
    ends: dict[str, int] = {}
    blocks: list[tuple[str, int, Mapping[str, Any]]] = []
    for source, parts in raw:
        ends[source] = ends.get(source, -1) + data.draw(st.integers(1, 100))
        blocks.append((source, ends[source], parts))
    want = expected_cells(blocks)

    cells: dict[str, Any] = {}
    for i, (source, end, series) in enumerate(blocks):
        action = data.draw(st.sampled_from(["once", "twice", "crash", "stale"]))
        if action == "crash":
            recording = Recording(copy.deepcopy(cells))
            apply_block(recording, source, end, series_parts(series), COARSE_MS)
            k = data.draw(st.integers(0, len(recording.snapshots)))
            cells = copy.deepcopy(recording.snapshots[k - 1]) if k else cells
        apply_block(cells, source, end, series_parts(series), COARSE_MS)
        if action == "twice":
            apply_block(cells, source, end, series_parts(series), COARSE_MS)
        if action == "stale":
            # Replay an older block of any source; it must be skipped everywhere.
            old = data.draw(st.integers(0, i))
            old_source, old_end, old_series = blocks[old]
            apply_block(cells, old_source, old_end, series_parts(old_series), COARSE_MS)

    assert {key: cell["v"] for key, cell in cells.items()} == want
    for key, cell in cells.items():
        assert set(cell["a"]) <= set(ends)
        assert all(offset <= ends[src] for src, offset in cell["a"].items()), key
    assert_coarse_is_sum_of_fine(cells)
    grouped = group_cells(cells.items())
    assert set(grouped) <= set(SERIES)
    assert sum(len(state.entities) for state in grouped.values()) == sum(
        1 for key in want if split_cell_key(key)[1] == ENTITY
    )


def test_a_block_overlapping_what_a_cell_applied_is_reported() -> None:
    cells: dict[str, Any] = {}
    first = apply_block(cells, "p0", 41, series_parts(sample_block()), COARSE_MS, start=0)
    assert first.overlapped == []
    total = cell_key(HTTP, TOTAL)
    # The same range again is a duplicate: skipped, not an overlap.
    again = apply_block(cells, "p0", 41, series_parts(sample_block()), COARSE_MS, start=0)
    assert (again.written, again.overlapped) == ([], [])
    # The next range is new: applied, no overlap.
    after = apply_block(cells, "p0", 60, series_parts(sample_block()), COARSE_MS, start=42)
    assert after.overlapped == [] and total in after.written
    # A range that starts inside what was applied ([30, 70] after 60) overlaps: applied and reported.
    overlapping = apply_block(cells, "p0", 70, series_parts(sample_block()), COARSE_MS, start=30)
    assert (total, 60) in overlapping.overlapped
    assert len(overlapping.overlapped) == len(overlapping.written)
