"""Alert history: every worker reads the whole `alerts` topic, so any worker answers the alerts API.

Transitions are produced by the worker that owns the alert's series, on that series' partition. This
reader assigns itself every partition of the topic (no consumer group), reads from the beginning, and
keeps the last `rules.history_max` transitions plus the latest transition of every fingerprint. The
API serves active alerts (latest state pending or firing) and the filtered history from it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

if TYPE_CHECKING:
    from pipeline.app import Pulse

log = logging.getLogger(__name__)

ACTIVE = ("pending", "firing")


@dataclass(frozen=True)
class HistoryQuery:
    """Filters of GET /api/v1/alerts/history; every field is optional."""

    severity: frozenset[str] = frozenset()
    rule: frozenset[str] = frozenset()
    state: frozenset[str] = frozenset()
    since: str | None = None
    until: str | None = None
    limit: int = 100

    def matches(self, alert: dict[str, Any]) -> bool:
        """Whether one transition passes the filters (timestamps compare as RFC 3339 UTC text)."""
        stamp = str(alert.get("timestamp", ""))
        return (
            (not self.severity or alert.get("severity") in self.severity)
            and (not self.rule or alert.get("rule") in self.rule)
            and (not self.state or alert.get("state") in self.state)
            and (self.since is None or stamp >= self.since)
            and (self.until is None or stamp <= self.until)
        )


class AlertHistory:
    """The alerts topic, read in full by this worker."""

    def __init__(self, limit: int) -> None:
        self.recent: deque[dict[str, Any]] = deque(maxlen=limit)
        self.latest: dict[str, dict[str, Any]] = {}
        self.seen: set[str] = set()

    def add(self, alert: dict[str, Any]) -> None:
        """Take one transition from the topic (an identical repeat of a change is kept once)."""
        change = str(alert.get("id", ""))
        if change and change in self.seen:
            return
        if change:
            self.seen.add(change)
        self.recent.append(alert)
        fingerprint = alert.get("fingerprint")
        if isinstance(fingerprint, str):
            self.latest[fingerprint] = alert
        if len(self.seen) > 4 * (self.recent.maxlen or 1):
            self.seen = {str(a.get("id", "")) for a in self.recent}

    def active(self) -> list[dict[str, Any]]:
        """Return the alerts whose latest state is pending or firing, most severe and oldest first."""
        order = {"critical": 0, "high": 1, "medium": 2, "low": 3}
        found = [a for a in self.latest.values() if a.get("state") in ACTIVE]
        return sorted(found, key=lambda a: (order.get(a.get("severity", ""), 9), a.get("starts_at") or ""))

    def query(self, query: HistoryQuery) -> list[dict[str, Any]]:
        """Return the newest transitions that pass the filters, newest first."""
        out: list[dict[str, Any]] = []
        for alert in reversed(self.recent):
            if query.matches(alert):
                out.append(alert)
                if len(out) >= query.limit:
                    break
        return out


class HistoryReader:
    """Background task that feeds `AlertHistory` from every partition of the alerts topic."""

    def __init__(self, pulse: Pulse, history: AlertHistory) -> None:
        self.pulse = pulse
        self.history = history
        self.topic = pulse.alerts_name
        self.task: asyncio.Task[None] | None = None
        self.positions: dict[TopicPartition, int] = {}

    async def run(self) -> None:
        """Read forever; reconnect after errors."""
        while True:
            try:
                await self._read()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker went away: keep what we have, try again
                log.warning("alert history reader: %r; retrying", exc)
                await asyncio.sleep(1.0)

    async def _read(self) -> None:
        wait = self.pulse.config.broker.timings().get("fetch_max_wait") or 0.5
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.pulse.config.broker.bootstrap_servers(),
            enable_auto_commit=False,
            fetch_max_wait_ms=int(wait * 1000),
        )
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(self.topic) or set()
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            for tp in tps:
                if tp in self.positions:
                    consumer.seek(tp, self.positions[tp])
                else:
                    await consumer.seek_to_beginning(tp)
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    self._take(records)
                    if records:
                        self.positions[tp] = records[-1].offset + 1
        finally:
            await consumer.stop()

    def _take(self, records: Iterable[Any]) -> None:
        for record in records:
            if record.value is None:
                continue
            try:
                alert = orjson.loads(record.value)
            except orjson.JSONDecodeError:
                continue  # only pulse writes this topic; a foreign record is not an alert
            if isinstance(alert, dict):
                self.history.add(alert)


def register(pulse: Pulse) -> AlertHistory:
    """Start the history reader with the worker; return the history it fills."""
    history = AlertHistory(pulse.config.rules.history_max)
    reader = HistoryReader(pulse, history)

    @pulse.app.task
    async def read_alert_history() -> None:
        await reader.run()

    return history
