"""Read a whole topic (every partition, from the beginning, no consumer group) into memory, forever.

Used for state every worker must see in full: the alerts topic (history, active alerts, inhibition,
notification groups) and the silences topic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.kafka.durable import Crash
from agents.kafka.transport import client_security
from pipeline.config.settings import BrokerConfig
from pipeline.records import StoredFormatError

if TYPE_CHECKING:
    from faust import App

log = logging.getLogger(__name__)


@dataclass(eq=False)
class TopicReader:
    """Feed every record value of a topic to `take`; `caught_up` is set once the end was reached."""

    broker: BrokerConfig
    topic: str
    take: Callable[[bytes | None], None]
    crash: Crash
    positions: dict[TopicPartition, int] = field(default_factory=dict, init=False)
    caught_up: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    last_ok: float | None = field(default=None, init=False)
    """Monotonic time the broker last answered a fetch of this topic (None: never)."""
    answered_ms: int | None = field(default=None, init=False)
    """aiokafka's wall-clock stamp (ms) of that answer, to tell a new answer from an old one."""

    async def run(self) -> None:
        """Read forever; reconnect after errors, resuming where it stopped."""
        while True:
            try:
                await self._read()
            except asyncio.CancelledError:
                raise
            except StoredFormatError as exc:  # a record this version cannot read: say so and stop
                self.crash(exc, f"reading {self.topic}")
                raise
            except Exception as exc:  # the broker went away: keep what we have, try again
                log.warning("reading %s: %r; retrying", self.topic, exc)
                await asyncio.sleep(1.0)

    async def _read(self) -> None:
        wait = self.broker.timings().get("fetch_max_wait") or 0.5
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.broker.bootstrap_servers(),
            enable_auto_commit=False,
            fetch_max_wait_ms=int(wait * 1000),
            **client_security(self.broker),
        )
        await consumer.start()
        try:
            partitions = sorted(consumer.partitions_for_topic(self.topic) or ())
            tps = [TopicPartition(self.topic, p) for p in partitions]
            consumer.assign(tps)
            for tp in tps:
                if tp in self.positions:
                    consumer.seek(tp, self.positions[tp])
                else:
                    await consumer.seek_to_beginning(tp)
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                answered = self._answered(consumer, tps)
                if answered and not any(batches.values()):
                    self.caught_up.set()  # an answered, empty fetch: nothing more was there to read
                for tp, records in batches.items():
                    for record in records:
                        self.take(record.value)
                    if records:
                        self.positions[tp] = records[-1].offset + 1
        finally:
            await consumer.stop()

    def _answered(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> bool:
        """Note whether the broker answered a fetch since the last call (once per `getmany`).

        `getmany` returns empty after its timeout whether or not the broker answers: a stalled broker
        (SIGSTOP, a hung host) leaves its TCP connections open and the fetch requests pending until
        the request timeout (40 s). aiokafka stamps every partition's state when a fetch response for
        it arrives (`last_poll_timestamp`); a newer stamp is the proof that the broker answered.
        """
        if not tps:  # nothing to fetch: no answer to wait for
            self.last_ok = time.monotonic()
            return True
        stamps = [consumer.last_poll_timestamp(tp) for tp in tps]
        stamp = max((s for s in stamps if s is not None), default=None)
        if stamp is None or stamp == self.answered_ms:
            return False
        self.answered_ms = stamp
        self.last_ok = time.monotonic()
        return True


def start(app: App, reader: TopicReader, name: str) -> None:
    """Run a reader as a task of the worker."""

    async def read() -> None:
        await reader.run()

    read.__name__ = read.__qualname__ = name
    app.task(read)
