"""Pane aggregates: small additive dicts, their merge, and their compact wire form.

An aggregate maps a short field name to
- an int (a count, or a sum kept in fixed point: microseconds, micro-units of money), or
- a list of ints (histogram bucket counts), or
- a dict of bin -> int (sketch bins; int keys in stage 1, str keys once they went through JSON),
- a str: a serialized distinct-count sketch (fields named "x..."), merged by set union.

Counts, sums and bins merge by addition and sketches by union, so merging is associative and
commutative: the same events always give the same numbers, in any order and on any worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from pipeline.sketches.distinct import union

Agg = dict[str, Any]

MICRO = 1_000_000
"""Money is summed in micro-units (1e-6) so that sums are exact integers."""


def merge_into(dst: Agg, src: Mapping[str, Any]) -> Agg:
    """Add `src` into `dst` field by field and return `dst`."""
    for key, value in src.items():
        current = dst.get(key)
        if current is None:
            if type(value) is list:
                dst[key] = list(value)
            elif type(value) is dict:
                dst[key] = dict(value)
            else:
                dst[key] = value
        elif type(value) is dict:
            get = current.get
            for index, count in value.items():
                current[index] = get(index, 0) + count
        elif type(value) is list:
            for i, count in enumerate(value):
                current[i] += count
        elif type(value) is str:
            dst[key] = union((current, value))
        else:
            dst[key] = current + value
    return dst


def newer(state: Mapping[str, Any], current: Mapping[str, Any] | None) -> bool:
    """Last-writer-wins order of latest states: later event time "t", ties broken by content.

    The order is total and independent of arrival, so applying states in any order, any number of
    times, leaves the same winner.
    """
    if current is None:
        return True
    if state["t"] != current["t"]:
        return bool(state["t"] > current["t"])
    return orjson.dumps(state, option=orjson.OPT_SORT_KEYS) > orjson.dumps(
        current, option=orjson.OPT_SORT_KEYS
    )


def merged(aggs: Iterable[Mapping[str, Any]]) -> Agg:
    """Return a new aggregate that is the sum of `aggs` (sketches united once, not pairwise)."""
    out: Agg = {}
    sketches: dict[str, list[str]] = {}
    for agg in aggs:
        plain = {}
        for key, value in agg.items():
            if type(value) is str:
                sketches.setdefault(key, []).append(value)
            else:
                plain[key] = value
        merge_into(out, plain)
    for key, texts in sketches.items():
        out[key] = texts[0] if len(texts) == 1 else union(texts)
    return out


def dumps(data: Any) -> bytes:
    """Encode blocks and cells (int dict keys become strings)."""
    return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
