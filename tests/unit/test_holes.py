"""The reader's defence against the embedded broker's visibility race: a hole is re-read, not skipped."""

from __future__ import annotations

from dataclasses import dataclass

from agents.kafka.holes import ACCEPTED, REFILLED, Holes


@dataclass(frozen=True)
class Record:
    offset: int


def records(*offsets: int) -> list[Record]:
    return [Record(o) for o in offsets]


def holes(wait_s: float = 10.0) -> tuple[Holes, list[tuple[object, str]]]:
    outcomes: list[tuple[object, str]] = []
    return Holes(lambda tp, outcome: outcomes.append((tp, outcome)), wait_s), outcomes


def test_a_whole_batch_is_kept_and_counts_nothing() -> None:
    gaps, outcomes = holes()
    assert gaps.take("p", 10, records(10, 11, 12), now=0.0) == 3
    assert outcomes == [] and gaps.pending == {}


def test_a_batch_that_starts_past_the_position_is_re_read_until_the_hole_fills() -> None:
    gaps, outcomes = holes()
    # offsets 10-14 not readable yet, 15-17 are: keep nothing, re-read from 10
    assert gaps.take("p", 10, records(15, 16, 17), now=0.0) == 0
    assert gaps.take("p", 10, records(15, 16), now=0.02) == 0  # still missing: the same hole, same start
    assert gaps.pending == {"p": (10, 0.0)}
    assert gaps.take("p", 10, records(*range(10, 18)), now=0.04) == 8
    assert outcomes == [("p", REFILLED)] and gaps.pending == {}


def test_a_hole_inside_a_batch_keeps_what_comes_before_it() -> None:
    gaps, outcomes = holes()
    assert gaps.take("p", 0, records(0, 1, 2, 5, 6), now=0.0) == 3  # caller seeks back to 3
    assert gaps.take("p", 3, records(3, 4, 5, 6), now=0.01) == 4
    assert outcomes == [("p", REFILLED)]


def test_a_hole_that_stays_is_accepted_after_the_wait_and_counted() -> None:
    gaps, outcomes = holes(wait_s=5.0)
    assert gaps.take("p", 0, records(0, 4, 5), now=100.0) == 1
    assert gaps.take("p", 1, records(4, 5), now=104.9) == 0
    assert gaps.take("p", 1, records(4, 5, 6), now=105.0) == 3
    assert outcomes == [("p", ACCEPTED)] and gaps.pending == {}


def test_after_an_accepted_hole_a_second_hole_in_the_same_batch_is_still_re_read() -> None:
    gaps, outcomes = holes(wait_s=1.0)
    assert gaps.take("p", 0, records(2, 3), now=0.0) == 0
    # 0-1 accepted; 4 missing: keep 2 and 3 (the caller seeks to 4)
    assert gaps.take("p", 0, records(2, 3, 5), now=2.0) == 2
    assert outcomes == [("p", ACCEPTED)] and gaps.pending == {"p": (4, 2.0)}


def test_a_new_hole_restarts_the_wait() -> None:
    gaps, outcomes = holes(wait_s=1.0)
    assert gaps.take("p", 0, records(3), now=0.0) == 0
    assert gaps.take("p", 0, records(0, 1, 2, 3, 7), now=0.5) == 4  # first filled, a new one at 4
    assert outcomes == [("p", REFILLED)] and gaps.pending == {"p": (4, 0.5)}
    assert gaps.take("p", 4, records(7), now=1.2) == 0  # 0.7 s into the new hole: not yet accepted
    assert gaps.take("p", 4, records(4, 5, 6, 7), now=1.3) == 4
    assert outcomes == [("p", REFILLED), ("p", REFILLED)]


def test_partitions_are_independent_and_forget_drops_a_hole() -> None:
    gaps, outcomes = holes()
    assert gaps.take("a", 0, records(1), now=0.0) == 0
    assert gaps.take("b", 0, records(0, 1), now=0.0) == 2
    assert set(gaps.pending) == {"a"}
    gaps.forget("a")
    assert gaps.take("a", 50, records(50), now=1.0) == 1  # positioned elsewhere: nothing refilled
    assert gaps.take("a", 51, records(53), now=1.0) == 0
    gaps.forget()
    assert gaps.pending == {} and outcomes == []
