"""The quantile sketch: 1% relative accuracy, exact merges, JSON round trips, DDSketch's mapping."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import pytest
from ddsketch.mapping import LogarithmicMapping
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.sketches.quantiles import (
    GAMMA,
    MIN_VALUE,
    RELATIVE_ACCURACY,
    add_values,
    bin_of,
    quantile,
    quantiles,
    representative,
)
from pipeline.state.aggregates import dumps, merge_into, merged

QS = (0.5, 0.95, 0.99)
TOLERANCE = RELATIVE_ACCURACY * (1 + 1e-9)
"""1% plus float noise in the last bits of log/exp."""


def exact(values: Sequence[float], q: float) -> float:
    """The exact quantile the sketch approximates: sorted[floor(q * (n - 1))]."""
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


def sketch(values: Sequence[float]) -> tuple[dict[int, int], int]:
    bins: dict[int, int] = {}
    zeros = add_values(bins, values)
    return bins, zeros


def assert_close(got: float | None, want: float) -> None:
    assert got is not None
    if want <= MIN_VALUE:
        # The zero bin: values at or below MIN_VALUE read back as 0.
        assert got == 0.0
        assert abs(got - want) <= MIN_VALUE
    else:
        assert abs(got - want) <= TOLERANCE * want, (got, want, abs(got - want) / want)


def check_all_quantiles(values: Sequence[float], qs: Sequence[float] = QS) -> None:
    bins, zeros = sketch(values)
    assert zeros + sum(bins.values()) == len(values)
    many = quantiles(bins, zeros, qs)
    assert set(many) == set(qs)
    for q in qs:
        want = exact(values, q)
        one = quantile(bins, zeros, q)
        assert_close(one, want)
        assert many[q] == one


def _uniform(r: random.Random) -> list[float]:
    return [r.uniform(0.1, 1000.0) for _ in range(5000)]


def _lognormal(r: random.Random) -> list[float]:
    return [r.lognormvariate(4.0, 1.5) for _ in range(5000)]


def _pareto(r: random.Random) -> list[float]:
    return [r.paretovariate(1.1) for _ in range(5000)]


def _heavy_with_spikes(r: random.Random) -> list[float]:
    out = [r.expovariate(1 / 20.0) for _ in range(4900)]
    out += [r.uniform(1e5, 1e8) for _ in range(100)]
    return out


def _constant(r: random.Random) -> list[float]:
    return [42.0] * 1000


def _tiny(r: random.Random) -> list[float]:
    # Just above the zero bin: still within 1%.
    return [r.uniform(2 * MIN_VALUE, 1e-3) for _ in range(3000)]


def _zeros(r: random.Random) -> list[float]:
    return [0.0] * 500


def _mostly_zero(r: random.Random) -> list[float]:
    return [0.0] * 960 + [r.uniform(1, 5) for _ in range(40)]


def _below_min(r: random.Random) -> list[float]:
    return (
        [r.uniform(0, MIN_VALUE) for _ in range(500)] + [MIN_VALUE] * 10 + [r.uniform(1, 2) for _ in range(5)]
    )


def _integers(r: random.Random) -> list[float]:
    return [float(r.randint(1, 3000)) for _ in range(4000)]


DISTRIBUTIONS: dict[str, Callable[[random.Random], list[float]]] = {
    "uniform": _uniform,
    "lognormal": _lognormal,
    "pareto": _pareto,
    "heavy_with_spikes": _heavy_with_spikes,
    "constant": _constant,
    "tiny": _tiny,
    "zeros": _zeros,
    "mostly_zero": _mostly_zero,
    "below_min": _below_min,
    "integers": _integers,
}


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_p50_p95_p99_within_one_percent(name: str) -> None:
    r = random.Random(name)
    values = DISTRIBUTIONS[name](r)
    r.shuffle(values)
    check_all_quantiles(values)


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_every_rank_within_one_percent(name: str) -> None:
    values = DISTRIBUTIONS[name](random.Random(name + "ranks"))[:400]
    qs = [i / 100 for i in range(101)]
    check_all_quantiles(values, qs)


def test_constant_reads_close_to_the_constant() -> None:
    bins, zeros = sketch([42.0] * 10)
    assert zeros == 0
    assert list(bins) == [bin_of(42.0)]
    for q in (0.0, 0.5, 1.0):
        assert_close(quantile(bins, zeros, q), 42.0)


def test_zero_and_min_value_go_to_the_zero_bin() -> None:
    bins, zeros = sketch([0.0, MIN_VALUE, MIN_VALUE / 2, math.nextafter(MIN_VALUE, 1.0)])
    assert zeros == 3
    assert sum(bins.values()) == 1
    assert quantile(bins, zeros, 0.0) == 0.0
    assert quantile(bins, zeros, 0.5) == 0.0
    assert_close(quantile(bins, zeros, 1.0), math.nextafter(MIN_VALUE, 1.0))


def test_empty_sketch() -> None:
    assert quantile({}, 0, 0.5) is None
    assert quantiles({}, 0, QS) == {}


def test_single_value_and_extreme_q() -> None:
    bins, zeros = sketch([7.5])
    for q in (0.0, 0.5, 1.0):
        assert_close(quantile(bins, zeros, q), 7.5)
    values = [float(v) for v in range(1, 1001)]
    bins, zeros = sketch(values)
    assert_close(quantile(bins, zeros, 0.0), 1.0)
    assert_close(quantile(bins, zeros, 1.0), 1000.0)


def test_representative_is_within_accuracy_of_the_whole_bin() -> None:
    for index in range(-700, 1500, 7):
        low, high = GAMMA ** (index - 1), GAMMA**index
        rep = representative(index)
        assert low < rep <= high
        # The worst cases are the two ends of the bin (lower end excluded, upper included).
        assert abs(rep - high) <= TOLERANCE * high
        assert abs(rep - low) <= TOLERANCE * low


finite = st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(finite, min_size=1, max_size=300),
    qs=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=5),
)
def test_property_quantiles_within_one_percent(values: list[float], qs: list[float]) -> None:
    check_all_quantiles(values, sorted(set(qs) | set(QS)))


@settings(max_examples=100, deadline=None)
@given(
    chunks=st.lists(st.lists(finite, max_size=60), min_size=1, max_size=6),
    json_round_trip=st.booleans(),
)
def test_property_merge_equals_sketch_of_union(chunks: list[list[float]], json_round_trip: bool) -> None:
    parts: list[dict[str, Any]] = []
    for chunk in chunks:
        bins, zeros = sketch(chunk)
        agg = {"q": bins, "qz": zeros}
        parts.append(orjson.loads(dumps(agg)) if json_round_trip else agg)
    total = merged(parts)
    union = [x for chunk in chunks for x in chunk]
    bins, zeros = sketch(union)
    assert total["qz"] == zeros
    assert {int(k): v for k, v in total["q"].items()} == bins
    if union:
        assert quantiles(total["q"], total["qz"], QS) == quantiles(bins, zeros, QS)
    # The merge did not alias the first part's bins.
    first = parts[0]["q"]
    assert sum(first.values()) == len([x for x in chunks[0] if x > MIN_VALUE])


def test_merge_in_any_order_gives_the_same_sketch() -> None:
    r = random.Random(5)
    chunks = [[r.lognormvariate(3, 1) for _ in range(r.randint(0, 200))] for _ in range(8)]
    aggs = []
    for chunk in chunks:
        bins, zeros = sketch(chunk)
        aggs.append({"q": bins, "qz": zeros})
    forward = merged(aggs)
    backward = merged(reversed(aggs))
    shuffled = list(aggs)
    r.shuffle(shuffled)
    assert forward == backward == merged(shuffled)
    all_bins, all_zeros = sketch([x for c in chunks for x in c])
    assert forward == {"q": all_bins, "qz": all_zeros}


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_str_keyed_bins_after_json_give_the_same_answers(name: str) -> None:
    values = DISTRIBUTIONS[name](random.Random(name + "json"))
    bins, zeros = sketch(values)
    loaded = orjson.loads(dumps({"q": bins}))["q"]
    assert len(loaded) == len(bins)
    assert all(isinstance(k, str) for k in loaded)
    qs = (*QS, 0.0, 0.25, 1.0)
    assert quantiles(loaded, zeros, qs) == quantiles(bins, zeros, qs)
    for q in qs:
        assert quantile(loaded, zeros, q) == quantile(bins, zeros, q)


def test_str_keys_sort_numerically_not_lexically() -> None:
    # "-5" < "10" < "9" lexically; the reader must sort by the bin number.
    values = [0.9, 1.2, 1.5, 3.0, 20.0, 200.0]
    bins, zeros = sketch(values)
    loaded = {str(k): v for k, v in bins.items()}
    for q in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        assert_close(quantile(loaded, zeros, q), exact(values, q))


def test_mixed_int_and_str_keys_are_read_as_one_sketch() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    low, z1 = sketch(values[:3])
    high, z2 = sketch(values[3:])
    mixed: dict[int | str, int] = {k: v for k, v in low.items()}
    mixed.update({str(k): v for k, v in high.items()})
    for q in (0.0, 0.4, 0.6, 1.0):
        assert_close(quantile(mixed, z1 + z2, q), exact(values, q))


MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)


def test_bin_index_agrees_with_ddsketch_on_random_values() -> None:
    r = random.Random(20240611)
    for _ in range(50_000):
        x = math.exp(r.uniform(math.log(MIN_VALUE * 1.0001), math.log(1e12)))
        assert bin_of(x) == MAPPING.key(x), x


def test_bin_index_agrees_with_ddsketch_on_round_numbers() -> None:
    for i in range(1, 20_001):
        for x in (float(i), i / 10, i / 100, i / 1000, i * 1000.0):
            assert bin_of(x) == MAPPING.key(x), x
    for e in range(-19, 40):
        x = 2.0**e
        assert bin_of(x) == MAPPING.key(x), x


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=MIN_VALUE * 2, max_value=1e15, allow_nan=False, allow_infinity=False))
def test_property_bin_index_agrees_with_ddsketch(x: float) -> None:
    assert bin_of(x) == MAPPING.key(x)


def test_add_values_uses_bin_of_and_representative_matches_ddsketch() -> None:
    r = random.Random(3)
    values = [r.lognormvariate(2, 2) for _ in range(2000)]
    bins, zeros = sketch(values)
    assert zeros == 0
    expected: dict[int, int] = {}
    for x in values:
        expected[MAPPING.key(x)] = expected.get(MAPPING.key(x), 0) + 1
    assert bins == expected
    for index in bins:
        assert representative(index) == pytest.approx(MAPPING.value(index), rel=1e-12)


def test_merge_into_adds_bins_of_existing_sketch() -> None:
    a, za = sketch([1.0, 2.0, 2.0])
    b, zb = sketch([2.0, 0.0])
    dst: dict[str, Any] = {"q": dict(a), "qz": za}
    merge_into(dst, {"q": b, "qz": zb})
    assert dst["q"][bin_of(2.0)] == 3
    assert dst["q"][bin_of(1.0)] == 1
    assert dst["qz"] == 1
