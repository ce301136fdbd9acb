"""Where every partition that o4o-pulse reads itself resumes: one typed plan per partition.

o4o-pulse reads two kinds of partitions with its own consumer (`agents.kafka.reader`): the input
partitions (`events.*`, stage 1) and the partials partitions (stage 2). Kafka's committed offsets play
no part: each stage records its own progress in a table, ordered after the state it describes, and
this module turns those records into a position after every assignment.

- Input partition (stage 1): the record is the offset range of the last flush, written durably *before*
  any partial of that range is sent. Resuming replays exactly that range as one flush, so its partials
  are identical duplicates that stage 2 skips, and continues after it. A partition without a record has
  never been flushed: it starts at the beginning of its log (so nothing it holds is skipped, whatever
  any consumer group committed).
- Partials partition (stage 2): the record is the last partials offset whose cells are durable, kept
  in the `cells` table itself, after those cells in the same changelog partition: whatever prefix of
  that log a recovery reads, the cells it holds are at least as new as the position it holds.
  Resuming starts just after it; cells skip what they already applied. No record: the log's start.

Retention can delete a recorded position; the partition then resumes at its earliest offset, and a
replay keeps only the part of its range that still exists.

The lifecycle rules (`Lifecycle`) say when positions may be computed and used: only once the tables of
the current assignment are recovered, and never again for a generation that was revoked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from pipeline.records import FlushRecord

if TYPE_CHECKING:
    from aiokafka import TopicPartition

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FromStart:
    """Nothing was recorded for this partition: read its whole log."""


@dataclass(frozen=True, slots=True)
class Replay:
    """Stage 1: re-read the recorded flush range [first, last] as one flush, then continue."""

    first: int
    last: int


@dataclass(frozen=True, slots=True)
class After:
    """Stage 2: everything up to and including `offset` is applied; continue after it."""

    offset: int


ResumePlan = FromStart | Replay | After


@dataclass(frozen=True, slots=True)
class Position:
    """Where reading a partition starts, and the recorded range it must replay first (if any)."""

    offset: int
    replay: Replay | None = None


def flush_key(topic: str, partition: int) -> str:
    """Flushlog key of an input partition's last flush range (also the partial's source id)."""
    return f"{topic}:{partition}"


def guard_key(partition: int) -> str:
    """Flushlog key of the label guard's admitted values of one input partition number."""
    return f"guard:{partition}"


def applied_key(partition: int) -> str:
    """Cells-table key of the last partials offset whose cells are durable, per partials partition."""
    return f"applied:{partition}"


def input_plan(record: FlushRecord | None) -> ResumePlan:
    """The plan of an input partition, from its flush record (None: never flushed)."""
    if record is None:
        return FromStart()
    return Replay(record.first, record.last)


def partials_plan(applied: int | None) -> ResumePlan:
    """The plan of a partials partition, from its applied position (None: nothing applied yet)."""
    if applied is None:
        return FromStart()
    return After(int(applied))


def resolve(plan: ResumePlan, earliest: int, what: str = "") -> Position:
    """The position of a plan, given the partition's earliest existing offset."""
    if isinstance(plan, FromStart):
        return Position(earliest)
    if isinstance(plan, After):
        start = plan.offset + 1
        if start < earliest:
            log.warning(
                "%s: offsets %d-%d were deleted by retention; resuming at %d",
                what,
                start,
                earliest - 1,
                earliest,
            )
            return Position(earliest)
        return Position(start)
    return moved(Position(plan.first, plan), earliest, what)


def moved(position: Position, earliest: int, what: str = "") -> Position:
    """Where to continue when `position` no longer exists (retention deleted it); else `position`."""
    if position.offset >= earliest:
        return position
    log.warning(
        "%s: offset %d was deleted by retention; resuming at the earliest offset %d",
        what,
        position.offset,
        earliest,
    )
    replay = position.replay
    if replay is not None and replay.last >= earliest:
        # What is left of the recorded range is still replayed as one flush ending where it ended, so
        # that cells which applied the whole range skip it.
        return Position(earliest, replay)
    return Position(earliest)


class Phase(Enum):
    """Where this worker's reader stands in the group's rebalance cycle."""

    IDLE = "idle"
    """No assignment yet, or after a revocation: read nothing."""
    RECOVERING = "recovering"
    """Partitions assigned, their tables not yet recovered: positions cannot be known yet."""
    POSITIONING = "positioning"
    """Tables recovered: positions may be computed from them and sought."""
    READING = "reading"
    """Positioned: reading."""


class Lifecycle:
    """The order of assignment, recovery, positioning and revocation, for one worker.

    Positions come from recovered tables, so they are computed only after the recovery of the
    *current* generation; a recovery signal of an older generation, or one that arrives after a
    revocation, is ignored. Anything started in a generation (a flush on its way to Kafka) may write
    records only while that generation is current.
    """

    def __init__(self) -> None:
        self.phase = Phase.IDLE
        self.generation = 0
        """Local counter: incremented at every assignment and every revocation."""
        self.group_generation = -1
        """The consumer group's generation of the current assignment."""
        self.partitions: frozenset[int] = frozenset()

    def assigned(self, group_generation: int, partitions: frozenset[int]) -> None:
        """The group handed this worker `partitions`; their tables are being recovered."""
        self.generation += 1
        self.group_generation = group_generation
        self.partitions = partitions
        self.phase = Phase.RECOVERING

    def recovered(self, group_generation: int) -> bool:
        """The tables of `group_generation` are recovered; return whether positioning may start."""
        if self.phase is not Phase.RECOVERING or group_generation != self.group_generation:
            return False
        self.phase = Phase.POSITIONING
        return True

    def positioned(self, generation: int) -> bool:
        """Every partition of `generation` was sought; return whether reading may start."""
        if self.phase is not Phase.POSITIONING or generation != self.generation:
            return False
        self.phase = Phase.READING
        return True

    def revoked(self) -> None:
        """The assignment is being taken away (or the worker stops): stop reading, write nothing more."""
        self.generation += 1
        self.phase = Phase.IDLE
        self.partitions = frozenset()

    def current(self, generation: int) -> bool:
        """Whether work started in `generation` may still write records."""
        return generation == self.generation and self.phase in (Phase.POSITIONING, Phase.READING)

    def reading(self) -> bool:
        """Whether the partitions of the assignment are recovered, positioned and read."""
        return self.phase is Phase.READING

    def is_ready(self) -> bool:
        """Whether the worker holds an assignment, recovered its state and reads its partitions."""
        return self.reading()

    def active_partitions(self) -> set[int]:
        """The partitions this worker owns and reads right now (none during a rebalance)."""
        return set(self.partitions) if self.reading() else set()


class ReadProgress(Protocol):
    """What a stage asks the reader that feeds it (`agents.kafka.reader.Reader` implements it)."""

    lifecycle: Lifecycle

    def caught_up(self, tp: TopicPartition) -> bool:
        """Whether the partition was read to its end once since it was positioned."""
        ...

    def high(self, tp: TopicPartition) -> int | None:
        """The partition's high-water mark as last fetched (None: not known yet)."""
        ...
