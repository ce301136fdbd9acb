"""Where partitions resume, and in which order assignment, recovery, positioning and revocation may run."""

from __future__ import annotations

import pytest

from agents.kafka.positions import (
    After,
    FromStart,
    Lifecycle,
    Phase,
    Position,
    Replay,
    input_plan,
    moved,
    partials_plan,
    resolve,
)
from pipeline.records import FlushRecord

# -- plans from the recovered records --------------------------------------------------------------


def test_a_partition_that_was_never_flushed_reads_its_whole_log_not_a_committed_offset() -> None:
    # The hole of the Faust consumer: a partition with no flush record resumed at the group's committed
    # offset, which Faust could move past events the agent never saw. Now it reads from the log start.
    plan = input_plan(None)
    assert plan == FromStart()
    assert resolve(plan, earliest=0) == Position(0)
    assert resolve(plan, earliest=120) == Position(120)


def test_an_input_partition_replays_its_last_recorded_flush_range() -> None:
    plan = input_plan(FlushRecord(100, 180))
    assert plan == Replay(100, 180)
    assert resolve(plan, earliest=0) == Position(100, Replay(100, 180))


def test_a_partials_partition_resumes_after_its_applied_offset() -> None:
    assert partials_plan(None) == FromStart()
    assert partials_plan(41) == After(41)
    assert resolve(After(41), earliest=0) == Position(42)


def test_flush_records_round_trip_in_the_stored_shape() -> None:
    record = FlushRecord(7, 9)
    assert record.to_wire() == {"a": 7, "b": 9, "V": 2}
    assert FlushRecord.from_wire(record.to_wire()) == record
    assert FlushRecord.from_wire({"a": 7, "b": 9}) == record  # format 1, before versions


# -- a position deleted by retention -----------------------------------------------------------------


def test_a_replay_whose_start_was_deleted_replays_what_is_left_and_ends_where_it_ended() -> None:
    # The cells that applied the whole range skip a block ending at the same offset.
    assert resolve(Replay(100, 180), earliest=150) == Position(150, Replay(100, 180))


def test_a_replay_whose_whole_range_was_deleted_reads_from_the_earliest_offset() -> None:
    assert resolve(Replay(100, 180), earliest=181) == Position(181)
    assert resolve(Replay(100, 180), earliest=500) == Position(500)


def test_a_partials_position_deleted_by_retention_moves_to_the_earliest_offset() -> None:
    assert resolve(After(41), earliest=42) == Position(42)
    assert resolve(After(41), earliest=90) == Position(90)


def test_a_partition_sought_past_its_retention_while_reading_moves_on_and_keeps_its_replay() -> None:
    # The broker answered "out of range" for offset 130 while the range [100, 180] was being replayed.
    assert moved(Position(130, Replay(100, 180)), earliest=160) == Position(160, Replay(100, 180))
    assert moved(Position(130, Replay(100, 180)), earliest=200) == Position(200)
    assert moved(Position(130), earliest=200) == Position(200)
    # A position that still exists is kept.
    assert moved(Position(130, Replay(100, 180)), earliest=10) == Position(130, Replay(100, 180))


# -- the lifecycle -------------------------------------------------------------------------------------


def test_assignment_before_recovery_positions_nothing_until_the_tables_are_recovered() -> None:
    life = Lifecycle()
    life.assigned(group_generation=3, partitions=frozenset({0, 2}))
    assert life.phase is Phase.RECOVERING
    assert not life.current(life.generation)  # nothing may be written from half-recovered tables
    assert life.recovered(group_generation=3)
    assert life.phase is Phase.POSITIONING
    assert life.positioned(life.generation)
    assert life.phase is Phase.READING
    assert life.partitions == frozenset({0, 2})


def test_a_recovery_of_an_older_generation_is_ignored() -> None:
    life = Lifecycle()
    life.assigned(group_generation=3, partitions=frozenset({0}))
    life.revoked()
    life.assigned(group_generation=4, partitions=frozenset({1}))
    assert not life.recovered(group_generation=3)
    assert life.phase is Phase.RECOVERING
    assert life.recovered(group_generation=4)


def test_a_recovery_signal_after_a_revocation_is_ignored() -> None:
    life = Lifecycle()
    life.assigned(group_generation=5, partitions=frozenset({0}))
    life.revoked()
    assert not life.recovered(group_generation=5)
    assert life.phase is Phase.IDLE


def test_a_revocation_mid_flush_stops_its_records_and_the_replay_covers_the_range() -> None:
    life = Lifecycle()
    life.assigned(group_generation=1, partitions=frozenset({0}))
    life.recovered(group_generation=1)
    generation = life.generation
    life.positioned(generation)
    assert life.current(generation)  # a flush started now may write its records
    # The flush recorded its range [200, 260]; then the partition was revoked before its partials left.
    recorded = FlushRecord.from_wire(FlushRecord(200, 260).to_wire())
    life.revoked()
    assert not life.current(generation)  # the rest of that delivery writes nothing
    # The next owner (maybe this worker again) replays the recorded range exactly.
    life.assigned(group_generation=2, partitions=frozenset({0}))
    life.recovered(group_generation=2)
    assert not life.current(generation)
    assert resolve(input_plan(recorded), earliest=0) == Position(200, Replay(200, 260))


def test_positioning_that_was_overtaken_by_a_revocation_does_not_start_reading() -> None:
    life = Lifecycle()
    life.assigned(group_generation=1, partitions=frozenset({0}))
    life.recovered(group_generation=1)
    generation = life.generation
    life.revoked()  # while the positions were being looked up
    assert not life.positioned(generation)
    assert life.phase is Phase.IDLE


@pytest.mark.parametrize("generation_delta", [1, -1])
def test_only_the_current_generation_is_positioned(generation_delta: int) -> None:
    life = Lifecycle()
    life.assigned(group_generation=1, partitions=frozenset({0}))
    life.recovered(group_generation=1)
    assert not life.positioned(life.generation + generation_delta)
    assert life.phase is Phase.POSITIONING
