"""Mergeable quantile sketch with a relative-error guarantee (the DDSketch log mapping).

A value x > 0 falls in bin i = ceil(log(x) / log(gamma)), gamma = (1 + a) / (1 - a); the bin's
representative 2 * gamma**i / (gamma + 1) is within a relative error `a` of every value in the bin,
so every quantile read from the sketch is within `a` of the exact one. Bins are plain counts:
sketches merge (and un-merge) by adding counts, and serialize sparsely as {bin: count}.

The mapping is the one of Datadog's `ddsketch.LogarithmicMapping`; tests check both agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, Final

RELATIVE_ACCURACY: Final = 0.01
GAMMA: Final = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
LOG_GAMMA: Final = math.log(GAMMA)
INV_LOG_GAMMA: Final = 1.0 / LOG_GAMMA
MIN_VALUE: Final = 1e-6
"""Values at or below this (in the sketch's unit) count in the zero bin."""

Bins = MutableMapping[int, int]
"""Sketch bins. Keys are ints when built, strings after a JSON round trip; readers accept both."""


def bin_of(value: float) -> int:
    """Return the bin index of a positive value."""
    return math.ceil(math.log(value) * INV_LOG_GAMMA)


def add_values(bins: Bins, values: Iterable[float]) -> int:
    """Add values to `bins`; return how many fell in the zero bin (caller keeps that count)."""
    zeros = 0
    log = math.log
    ceil = math.ceil
    k = INV_LOG_GAMMA
    get = bins.get
    for x in values:
        if x > MIN_VALUE:
            i = ceil(log(x) * k)
            bins[i] = get(i, 0) + 1
        else:
            zeros += 1
    return zeros


def representative(index: int) -> float:
    """Return the value that stands for a bin (relative error <= RELATIVE_ACCURACY)."""
    return 2.0 * math.exp(index * LOG_GAMMA) / (GAMMA + 1.0)


def quantile(bins: Mapping[Any, int], zeros: int, q: float) -> float | None:
    """Return the q-quantile (0 <= q <= 1) using rank floor(q * (n - 1)), or None when empty."""
    total = zeros + sum(bins.values())
    if total == 0:
        return None
    rank = math.floor(q * (total - 1))
    if rank < zeros:
        return 0.0
    seen = zeros
    for index in sorted(bins, key=int):
        seen += bins[index]
        if seen > rank:
            return representative(int(index))
    return representative(max(map(int, bins)))  # pragma: no cover - rank < total always


def quantiles(bins: Mapping[Any, int], zeros: int, qs: Iterable[float]) -> dict[float, float]:
    """Return several quantiles in one pass over the sorted bins (empty dict when no values)."""
    total = zeros + sum(bins.values())
    if total == 0:
        return {}
    wanted = sorted((math.floor(q * (total - 1)), q) for q in qs)
    out: dict[float, float] = {}
    seen = zeros
    pos = 0
    while pos < len(wanted) and wanted[pos][0] < zeros:
        out[wanted[pos][1]] = 0.0
        pos += 1
    for index in sorted(bins, key=int):
        seen += bins[index]
        while pos < len(wanted) and wanted[pos][0] < seen:
            out[wanted[pos][1]] = representative(int(index))
            pos += 1
        if pos == len(wanted):
            break
    return out
