"""Alert history: every worker reads the whole `alerts` topic, so any worker answers the alerts API.

Transitions are produced by the worker that owns the alert's series, on that series' partition. This
reader assigns itself every partition of the topic (no consumer group), reads from the beginning, and
keeps the last `rules.history_max` transitions plus the latest transition of every fingerprint. The
API serves active alerts (latest state pending or firing) and the filtered history from it.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from agents.kafka import tail as readers
from agents.kafka.durable import crasher
from agents.kafka.tail import TopicReader
from pipeline.records import LEGACY, VERSION_KEY, AlertRecord, NotificationFailed, check_version

if TYPE_CHECKING:
    from faust import App

    from pipeline.config.settings import Config

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

    def matches_failure(self, failure: dict[str, Any]) -> bool:
        """Whether a failed notification passes the rule and time filters."""
        stamp = str(failure.get("timestamp", ""))
        return (
            (not self.rule or bool(self.rule & set(failure.get("rules", ()))))
            and (self.since is None or stamp >= self.since)
            and (self.until is None or stamp <= self.until)
        )

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
        self.failures: deque[dict[str, Any]] = deque(maxlen=limit)
        self.reader: TopicReader | None = None

    def take(self, value: bytes | None) -> None:
        """Take one record of the alerts topic."""
        alert = _json(value)
        if alert is not None:
            check_version(AlertRecord, alert.get(VERSION_KEY, LEGACY), "alerts topic")
            self.add(alert)

    def take_failure(self, value: bytes | None) -> None:
        """Take one record of the notifications dead-letter topic."""
        failure = _json(value)
        if failure is not None:
            where = "notifications dead-letter topic"
            check_version(NotificationFailed, failure.get(VERSION_KEY, LEGACY), where)
            self.failures.append(failure)

    def failed_notifications(self) -> list[dict[str, Any]]:
        """Notifications that could not be delivered, newest first."""
        return list(reversed(self.failures))

    def last_fetch_ok(self) -> float | None:
        """Monotonic time of the last successful fetch of the alerts topic (None: none yet)."""
        return self.reader.last_ok if self.reader is not None else None

    def caught_up(self) -> bool:
        """Whether the alerts topic has been read to its end once (so `latest` is complete)."""
        return self.reader is not None and self.reader.caught_up.is_set()

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


def register(app: App, config: Config, alerts_topic: str, failures_topic: str) -> AlertHistory:
    """Start reading the alerts topic (and failed notifications) with the worker."""
    history = AlertHistory(config.rules.history_max)
    history.reader = TopicReader(config.broker, alerts_topic, history.take, crasher(app))
    readers.start(app, history.reader, "read_alert_history")
    failures = TopicReader(config.broker, failures_topic, history.take_failure, crasher(app))
    readers.start(app, failures, "read_failed_notifications")
    return history


def _json(value: bytes | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None  # only pulse writes these topics; a foreign record is not one of ours
    return data if isinstance(data, dict) else None
