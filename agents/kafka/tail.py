"""Read a whole topic (every partition, from the beginning, no consumer group) into memory, forever.

Used for state every worker must see in full: the alerts topic (history, active alerts, inhibition,
notification groups) and the silences topic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.kafka.durable import Crash
from agents.kafka.transport import client_security
from pipeline.config.settings import BrokerConfig
from pipeline.records import StoredFormatError

if TYPE_CHECKING:
    from faust import App

log = logging.getLogger(__name__)


class TopicReader:
    """Feed every record value of a topic to `take`; `caught_up` is set once the end was reached."""

    def __init__(
        self, broker: BrokerConfig, topic: str, take: Callable[[bytes | None], None], crash: Crash
    ) -> None:
        self.broker = broker
        self.crash = crash
        self.topic = topic
        self.take = take
        self.positions: dict[TopicPartition, int] = {}
        self.caught_up = asyncio.Event()
        self.last_ok: float | None = None  # monotonic time of the last fetch that succeeded

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
                self.last_ok = time.monotonic()
                if not any(batches.values()):
                    self.caught_up.set()  # an empty fetch: nothing more was there to read
                for tp, records in batches.items():
                    for record in records:
                        self.take(record.value)
                    if records:
                        self.positions[tp] = records[-1].offset + 1
        finally:
            await consumer.stop()


def start(app: App, reader: TopicReader, name: str) -> None:
    """Run a reader as a task of the worker."""

    async def read() -> None:
        await reader.run()

    read.__name__ = read.__qualname__ = name
    app.task(read)
