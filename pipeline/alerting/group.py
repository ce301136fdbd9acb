"""Pure notification planning: which groups exist, and when each channel of a group is due a message.

Input: the latest transition of every alert (every worker reads the whole alerts topic), the routing
config, silences, and the delivery ledger of the group. Output: the notification to send now, if any.

A channel of a group is due:
- a first *firing* message once `group_wait` has passed since the group's earliest firing alert
  started;
- a new message when the set of firing incidents changed (or an incident it announced resolved), at
  most every `group_interval` since the last one;
- a *repeat* every `repeat_interval` while the same incidents fire;
- a *resolved* message when nothing fires any more and it had announced firing incidents (only if the
  receiver sends resolved messages), after `group_interval`.
Routes with `active_time_intervals` hold everything outside those intervals; nothing is dropped, the
message goes out when the interval opens. Silenced and inhibited alerts count as not firing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline.alerting.intervals import active
from pipeline.alerting.route import Match, group_key, group_labels, route
from pipeline.config.settings import NotifyConfig


def _ms(text: Any) -> int:
    if not text:
        return 0
    return int(datetime.fromisoformat(str(text)).timestamp() * 1000)


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
        """JSON form for the ledger table."""
        return {"s": self.status, "i": list(self.incidents), "t": self.sent_ms, "m": dict(self.meta)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Entry:
        """Read the JSON form."""
        return cls(str(data["s"]), tuple(data["i"]), int(data["t"]), dict(data.get("m") or {}))


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


def plan(
    config: NotifyConfig,
    group: Group,
    entry: Entry | None,
    now_ms: int,
    muted: Callable[[Mapping[str, Any]], bool],
    send_resolved: bool,
) -> Plan | None:
    """Return the notification this channel of the group is due now, or None."""
    match = group.match
    firing = [a for a in group.alerts.values() if a.get("state") == "firing" and not muted(a)]
    firing.sort(key=incident)
    incidents = tuple(incident(a) for a in firing)
    announced = set(entry.incidents) if entry is not None and entry.status == "firing" else set()
    ended = [a for a in group.alerts.values() if a.get("state") == "resolved" and incident(a) in announced]
    if not active(config, match, now_ms):
        return None
    if firing:
        if entry is None or entry.status != "firing":
            first = min(_ms(a.get("starts_at")) for a in firing)
            if entry is not None and now_ms - entry.sent_ms < match.group_interval * 1000:
                return None
            if now_ms - first < match.group_wait * 1000:
                return None
            return Plan("firing", tuple(firing) + tuple(ended), incidents, "first")
        since = now_ms - entry.sent_ms
        if set(incidents) != announced:
            if since < match.group_interval * 1000:
                return None
            return Plan("firing", tuple(firing) + tuple(ended), incidents, "changed")
        if since >= match.repeat_interval * 1000:
            return Plan("firing", tuple(firing), incidents, "repeat")
        return None
    if ended and send_resolved and entry is not None:
        if now_ms - entry.sent_ms < match.group_interval * 1000:
            return None
        return Plan("resolved", tuple(ended), (), "resolved")
    return None
