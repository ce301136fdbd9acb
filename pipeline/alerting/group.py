"""Notification groups: which groups exist, what a channel of a group last delivered (the ledger
entry), and what a notification carries (the plan). When a channel is due a message is decided by the
steps of `pipeline.alerting.steps`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.alerting.route import Match, group_key, group_labels, route
from pipeline.config.settings import NotifyConfig
from pipeline.records import LedgerRecord


def incident(alert: Mapping[str, Any]) -> str:
    """Id of one incident of one alert: its fingerprint and when it started firing."""
    return f"{alert['fingerprint']}:{alert.get('starts_at') or ''}"


@dataclass
class Group:
    """Alerts routed to one receiver on one route with equal group labels."""

    key: str
    match: Match
    labels: dict[str, str]
    alerts: dict[str, Mapping[str, Any]] = field(default_factory=dict)


def build_groups(config: NotifyConfig, alerts: Iterable[Mapping[str, Any]]) -> dict[str, Group]:
    """Route every alert (firing or resolved) into its groups."""
    groups: dict[str, Group] = {}
    for alert in alerts:
        if alert.get("state") not in ("firing", "resolved"):
            continue
        labels = dict(alert.get("labels", {}))
        for match in route(config, labels):
            grouped = group_labels(match, labels)
            key = group_key(match, grouped)
            group = groups.get(key)
            if group is None:
                group = groups[key] = Group(key, match, grouped)
            group.alerts[str(alert["fingerprint"])] = alert
    return groups


@dataclass(frozen=True)
class Entry:
    """What one channel of one group last delivered (the delivery ledger)."""

    status: str  # "firing" or "resolved"
    incidents: tuple[str, ...]  # firing incidents it announced
    sent_ms: int
    meta: Mapping[str, Any] = field(default_factory=dict)  # e.g. Slack channel and ts of the message

    def to_dict(self) -> dict[str, Any]:
        """The stored form for the ledger table (`pipeline.records.LedgerRecord`)."""
        return LedgerRecord(self.status, list(self.incidents), self.sent_ms, dict(self.meta)).to_wire()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "nflog") -> Entry:
        """Read the stored form (any format this version reads)."""
        record = LedgerRecord.from_wire(data, where)
        return cls(record.status, tuple(record.incidents), record.sent_ms, dict(record.meta))


@dataclass(frozen=True)
class Plan:
    """A notification to send: its status, the alerts it carries, and its idempotency key."""

    status: str
    alerts: tuple[Mapping[str, Any], ...]
    incidents: tuple[str, ...]
    reason: str  # first, changed, repeat, resolved

    @property
    def digest(self) -> str:
        """Stable id of this content (the ledger key of the delivery, with group and channel)."""
        text = self.status + "|" + ",".join(self.incidents)
        return hashlib.sha256(text.encode()).hexdigest()[:12]
