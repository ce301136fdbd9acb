"""Faust's Kafka transport with one setting Faust hard-codes made configurable: the fetch wait.

Faust asks the broker to hold an empty fetch for 1.5 s. Apache Kafka answers as soon as data arrives,
so that costs nothing; the embedded Tansu broker holds the fetch for the full wait, which would add
up to 1.5 s to every hop between stages. `broker.fetch_max_wait` (short by default on the embedded
broker) fixes that without touching Faust itself.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from pipeline.config import Config


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait = getattr(self.app, "fetch_max_wait_ms", None)
        if wait is not None:
            consumer._fetch_max_wait_ms = wait
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> Any:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class PulseFaustApp(faust.App):
    """faust.App whose consumer uses the configured fetch wait."""

    fetch_max_wait_ms: int | None = None

    def configure_fetch(self, config: Config) -> None:
        """Take the fetch wait from the config (None keeps Faust's 1.5 s)."""
        wait = config.broker.timings().get("fetch_max_wait")
        self.fetch_max_wait_ms = int(wait * 1000) if wait is not None else None

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)
