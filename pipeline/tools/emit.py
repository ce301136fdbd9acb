"""Emitter: the Python client services use to publish events, batched into envelopes.

    async with Emitter("127.0.0.1:9092") as emitter:
        await emitter.emit("order", {"order_id": "o-1", "status": "created", ...})

Events of one type are collected into a JSON array (an envelope) and sent when the batch holds
`max_events`, reaches `max_bytes`, or has waited `linger` seconds. `ts` is set to now (epoch ms) when
missing. `flush()` and leaving the context send what is pending.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from schemas.events import TOPIC_OF_TYPE


class Emitter:
    """Batching event producer for services."""

    def __init__(
        self,
        bootstrap_servers: str | list[str],
        *,
        prefix: str = "o4o.",
        linger: float = 0.05,
        max_events: int = 100,
        max_bytes: int = 512 * 1024,
        producer: AIOKafkaProducer | None = None,
        security: Mapping[str, Any] | None = None,
    ) -> None:
        if max_events < 1 or max_bytes < 64 or linger < 0:
            raise ValueError("max_events >= 1, max_bytes >= 64 and linger >= 0 are required")
        self.prefix = prefix
        self.linger = linger
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._producer = producer or AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            linger_ms=5,
            max_request_size=max(2 * max_bytes, 1_048_576),
            acks="all",
            **dict(security or {}),
        )
        self._batches: dict[str, list[bytes]] = {}
        self._sizes: dict[str, int] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._pending: set[asyncio.Future[Any]] = set()
        self.sent_events = 0
        self.sent_messages = 0

    async def start(self) -> None:
        """Connect to the broker (a failed start leaves nothing open)."""
        try:
            await self._producer.start()
        except BaseException:
            await self._producer.stop()
            raise

    async def stop(self) -> None:
        """Send what is pending, wait for delivery, disconnect."""
        await self.flush()
        await self._producer.stop()

    async def __aenter__(self) -> Emitter:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def emit(self, event_type: str, event: dict[str, Any]) -> None:
        """Queue one event of a contract type ("order", "request", ...)."""
        topic = TOPIC_OF_TYPE.get(event_type)
        if topic is None:
            raise ValueError(f"unknown event type {event_type!r}; use one of {', '.join(TOPIC_OF_TYPE)}")
        if "ts" not in event:
            event = {**event, "ts": int(time.time() * 1000)}
        data = orjson.dumps(event)
        name = self.prefix + topic
        batch = self._batches.setdefault(name, [])
        size = self._sizes.get(name, 1) + len(data) + 1
        if batch and size > self.max_bytes:
            await self._send(name)
            batch = self._batches.setdefault(name, [])
            size = 1 + len(data) + 1
        batch.append(data)
        self._sizes[name] = size
        if len(batch) >= self.max_events:
            await self._send(name)
        elif self._timer is None and self.linger > 0:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.linger, self._on_linger)
        elif self.linger == 0:
            await self._send(name)

    def _on_linger(self) -> None:
        self._timer = None
        task = asyncio.ensure_future(self._send_all())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send_all(self) -> None:
        for name in list(self._batches):
            await self._send(name)

    async def _send(self, name: str) -> None:
        batch = self._batches.pop(name, None)
        self._sizes.pop(name, None)
        if not batch:
            return
        value = b"[" + b",".join(batch) + b"]"
        future = await self._producer.send(name, value)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        self.sent_events += len(batch)
        self.sent_messages += 1

    async def flush(self) -> None:
        """Send every pending batch and wait until the broker has them."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._send_all()
        while self._pending:
            await asyncio.gather(*list(self._pending))
        await self._producer.flush()
