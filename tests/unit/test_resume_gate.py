"""The gate that holds a partition until its resume position arrives (pure unit, fake consumer)."""

from __future__ import annotations

import asyncio
from typing import Any

from agents.durable import CHECK_EARLIEST_EVERY, Gate

TP = ("events.requests", 0)


class FakeConsumer:
    """Records seeks; answers the earliest offset it is given."""

    def __init__(self, earliest: int) -> None:
        self.earliest = earliest
        self.seeks: list[tuple[Any, int]] = []

    async def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def earliest_offsets(self, *tps: Any) -> dict[Any, int]:
        return {tp: self.earliest for tp in tps}


def judge(gate: Gate, consumer: FakeConsumer, offsets: list[int]) -> list[bool]:
    async def run() -> list[bool]:
        out = [await gate.admit(consumer, TP, offset, "test") for offset in offsets]
        await asyncio.sleep(0.01)  # the seeks run once the message is done with
        return out

    return asyncio.run(run())


def test_the_resume_position_is_taken_and_earlier_messages_are_dropped() -> None:
    consumer = FakeConsumer(earliest=0)
    assert judge(Gate(100), consumer, [98, 99, 100]) == [False, False, True]
    assert consumer.seeks == []


def test_a_message_fetched_before_the_seek_seeks_back_again() -> None:
    consumer = FakeConsumer(earliest=0)
    gate = Gate(100)
    assert judge(gate, consumer, [250, 251, 100]) == [False, False, True]
    assert consumer.seeks == [(TP, 100), (TP, 100)]
    assert gate.offset == 100


def test_a_position_that_no_longer_exists_resumes_at_the_earliest_offset() -> None:
    consumer = FakeConsumer(earliest=400)
    gate = Gate(100)
    # Before the check it keeps seeking back; at the check it learns the log now starts at 400.
    offsets = [400] * CHECK_EARLIEST_EVERY
    assert judge(gate, consumer, offsets) == [False] * (CHECK_EARLIEST_EVERY - 1) + [True]
    assert gate.offset == 400


def test_a_position_that_exists_is_never_given_up() -> None:
    consumer = FakeConsumer(earliest=0)
    gate = Gate(100)
    assert not any(judge(gate, consumer, [500 + i for i in range(3 * CHECK_EARLIEST_EVERY)]))
    assert gate.offset == 100
