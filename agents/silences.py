"""Silences, stored in Kafka: the `silences` topic (key: silence id, value: its JSON).

Every worker reads the whole topic, so every worker mutes the same alerts and the API answers the same
everywhere; a restart reads the topic again. Creating or expiring a silence publishes its new version.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from agents.kafka import tail as readers
from agents.kafka.durable import crasher
from agents.kafka.tail import TopicReader
from pipeline.alerting.route import matchers
from pipeline.alerting.silence import Silence
from pipeline.durations import parse_duration
from pipeline.records import MalformedRecord

if TYPE_CHECKING:
    from faust import App

    from pipeline.config.settings import BrokerConfig

log = logging.getLogger(__name__)


class SilenceStore:
    """The silences this worker has read."""

    def __init__(self) -> None:
        self.by_id: dict[str, Silence] = {}

    def put(self, silence: Silence) -> None:
        """Take one version of a silence (the latest one wins)."""
        self.by_id[silence.id] = silence

    def active(self, now_ms: int) -> list[Silence]:
        """Silences in force now."""
        return [s for s in self.by_id.values() if s.active(now_ms)]

    def listed(self, now_ms: int) -> list[dict[str, Any]]:
        """Every silence with its status (active, pending or expired), newest first."""
        out = []
        for silence in sorted(self.by_id.values(), key=lambda s: s.starts_at_ms, reverse=True):
            if silence.active(now_ms):
                status = "active"
            elif now_ms < silence.starts_at_ms:
                status = "pending"
            else:
                status = "expired"
            out.append({**silence.to_dict(), "status": status})
        return out


def new_silence(body: Mapping[str, Any], now_ms: int) -> Silence:
    """Validate an API request body into a silence; raise ValueError with the fix."""
    spec = body.get("matchers")
    if not isinstance(spec, dict) or not spec or not all(isinstance(v, str) for v in spec.values()):
        raise ValueError('matchers: give a non-empty object of label filters, e.g. {"alertname": "x"}')
    matchers(spec)  # parse now: a bad filter is the caller's mistake, not a later crash
    starts = int(body.get("startsAt") or now_ms)
    if "endsAt" in body:
        ends = int(body["endsAt"])
    elif "duration" in body:
        ends = starts + int(parse_duration(body["duration"]) * 1000)
    else:
        raise ValueError('give endsAt (epoch ms) or duration (e.g. "2h")')
    if ends <= starts:
        raise ValueError("endsAt must be after startsAt")
    created_by = str(body.get("createdBy") or "").strip()
    comment = str(body.get("comment") or "").strip()
    if not created_by or not comment:
        raise ValueError("createdBy and comment are required: say who silences what and why")
    return Silence(uuid.uuid4().hex[:16], dict(spec), starts, ends, created_by[:200], comment[:1000])


class SilenceBook:
    """The silences: read from the silences topic by every worker; new versions published to it."""

    def __init__(self, app: App, broker: BrokerConfig, topic: str) -> None:
        self.app = app
        self.store = SilenceStore()
        self.topic = topic
        self.reader = TopicReader(broker, self.topic, self.take, crasher(app))

    def get(self, silence_id: str) -> Silence | None:
        """One silence by id."""
        return self.store.by_id.get(silence_id)

    def active(self, now_ms: int) -> list[Silence]:
        """Silences in force now."""
        return self.store.active(now_ms)

    def listed(self, now_ms: int) -> list[dict[str, Any]]:
        """Every silence with its status, newest first."""
        return self.store.listed(now_ms)

    async def publish(self, silence: Silence) -> None:
        """Store a silence version in Kafka (and here at once)."""
        value = orjson.dumps(silence.to_dict())
        sent = await self.app.producer.send(self.topic, silence.id.encode(), value, None, None, None)
        await sent
        self.store.put(silence)

    def take(self, value: bytes | None) -> None:
        """Take one record of the silences topic."""
        if value is None:
            return
        try:
            self.store.put(Silence.from_dict(orjson.loads(value)))
        except (orjson.JSONDecodeError, MalformedRecord):
            log.warning("ignored a malformed record on the silences topic")


def register(app: App, broker: BrokerConfig, topic: str) -> SilenceBook:
    """Start reading silences with the worker."""
    book = SilenceBook(app, broker, topic)
    readers.start(app, book.reader, "read_silences")
    return book


def now_ms() -> int:
    """The wall clock in epoch milliseconds."""
    return int(time.time() * 1000)
