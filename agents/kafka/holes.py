"""Offsets the embedded broker shows out of order: re-read a hole until it fills, never skip it.

Tansu 0.6 has a visibility race. When several producers append to one partition, a batch acknowledged
later can become readable before one acknowledged earlier, for a few tens of milliseconds. A reader
that fetches in that moment receives the later batch, moves its position past it, and never sees the
earlier one. On a log without transactions or compaction (Tansu has neither) every offset holds a
record, so a jump in offsets is always such a hole.

The partials topic is where it happens: every worker's stage 1 sends to every partials partition.
Measured with four to eight producers on one partition: a few holes a minute, each readable again
after 22-37 ms (one to three re-reads). Left alone, a hole lost the partial aggregates of one flush
(the chaos test saw it about once in 13 runs on a loaded machine).

`Holes.take` says how many of a fetched batch's records continue the partition without a hole; the
reader keeps those and seeks back to the hole. A hole that is still there after `wait_s` is accepted
(logged, counted), so that a broker that really lost records cannot stall the partition for ever.
Apache Kafka has no such race, and there a jump is legitimate (transaction markers, compaction), so
the reader checks only on the embedded broker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)

WAIT_S = 10.0
"""How long a hole is re-read before it is accepted (measured holes filled within 40 ms)."""
RETRY_S = 0.01
"""Pause before re-reading a hole, so that a hole that stays does not spin the loop."""

REFILLED = "refilled"
ACCEPTED = "accepted"


class Offset(Protocol):
    @property
    def offset(self) -> int: ...


@dataclass
class Holes:
    """The hole each partition is waiting for, and since when."""

    counted: Callable[[Hashable, str], None]
    """Called with the partition and the outcome (`REFILLED` or `ACCEPTED`) of each hole."""
    wait_s: float = WAIT_S
    pending: dict[Hashable, tuple[int, float]] = field(default_factory=dict)

    def take(self, tp: Hashable, expected: int, records: Sequence[Offset], now: float) -> int:
        """How many of `records` (read from `expected` on) to keep; the rest follow a hole.

        When fewer than all are kept, the caller seeks `tp` back to the offset after the last one kept
        (`expected` when none is): the hole.
        """
        position = expected
        # Offsets only increase, so first and last tell whether the batch is whole (nearly always).
        if records[0].offset == expected and records[-1].offset == expected + len(records) - 1:
            self._reached(tp, expected + len(records))
            return len(records)
        for index, record in enumerate(records):
            if record.offset == position:
                position += 1
                continue
            waiting = self._reached(tp, position)
            if waiting is not None and now - waiting >= self.wait_s:
                log.warning(
                    "%s: offsets %d-%d were still missing after %.0fs of re-reading; going on without "
                    "them (the broker lost them)",
                    tp,
                    position,
                    record.offset - 1,
                    self.wait_s,
                )
                del self.pending[tp]
                self.counted(tp, ACCEPTED)
                position = record.offset + 1
                continue
            if waiting is None:
                log.info(
                    "%s: offset %d is not readable yet but %d is; re-reading", tp, position, record.offset
                )
                self.pending[tp] = (position, now)
            return index
        self._reached(tp, position)
        return len(records)

    def _reached(self, tp: Hashable, position: int) -> float | None:
        """Reading got to `position`: a hole before it has filled (counted, dropped). Returns since when
        the reader has waited for a hole at `position` itself (None if it has not)."""
        waiting = self.pending.get(tp)
        if waiting is None:
            return None
        if waiting[0] < position:
            del self.pending[tp]
            self.counted(tp, REFILLED)
            return None
        return waiting[1] if waiting[0] == position else None

    def forget(self, tp: Hashable | None = None) -> None:
        """The partition (or every partition) was positioned anew: its hole no longer matters."""
        if tp is None:
            self.pending.clear()
        else:
            self.pending.pop(tp, None)
