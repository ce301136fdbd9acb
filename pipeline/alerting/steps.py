"""The notification pipeline of one channel of one group, as small steps in Alertmanager's order.

Alertmanager (`notify/notify.go`) runs every group's alerts through inhibit, time-active, silence,
wait, dedup and retry stages. o4o-pulse keeps that order; each step here is a small pure function,
tested on its own (`tests/unit/test_notify_steps.py`), and `plan` composes them:

1. `time_active`: outside the route's `active_time_intervals` everything is held (nothing is
   dropped: the message goes out when an interval opens).
2. `inhibit` and `silence`: a firing alert that a firing source alert inhibits, or that a silence
   matches, counts as not firing (`muted`).
3. `dedup`: compared with the delivery ledger entry, is anything new to say? A first firing message,
   a changed set of firing incidents, a repeat, or a resolve of incidents it announced.
4. `wait`: the timing of that message: `group_wait` after the group's earliest firing alert started
   (and `group_interval` after a previous resolve), `group_interval` between changes and before a
   resolve, `repeat_interval` between repeats.
5. Retry is the runtime's (`agents.notifiers.base.deliver`: exponential backoff with jitter,
   `Retry-After`, a bound on attempts and time); the ledger entry written after it is Alertmanager's
   "set notifies".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pipeline.alerting.group import Entry, Group, Plan, incident
from pipeline.alerting.inhibit import inhibited
from pipeline.alerting.intervals import active
from pipeline.alerting.route import Match
from pipeline.alerting.silence import Silence, silenced
from pipeline.config.settings import InhibitConfig, NotifyConfig

Alert = Mapping[str, Any]
Muted = Callable[[Alert], bool]


def _ms(text: Any) -> int:
    if not text:
        return 0
    return int(datetime.fromisoformat(str(text)).timestamp() * 1000)


def time_active(config: NotifyConfig, match: Match, now_ms: int) -> bool:
    """Step 1: whether the route may deliver now (a route without intervals always may)."""
    return active(config, match, now_ms)


def inhibit(rules: Sequence[InhibitConfig], firing: Iterable[Mapping[str, str]]) -> Muted:
    """Step 2a: the alerts that a firing source alert inhibits (`firing`: labels of firing alerts)."""
    sources = list(firing)
    return lambda alert: inhibited(rules, alert.get("labels", {}), sources)


def silence(silences: Sequence[Silence], now_ms: int) -> Muted:
    """Step 2b: the alerts that a silence in force mutes."""
    return lambda alert: silenced(silences, alert.get("labels", {}), now_ms)


def any_of(*steps: Muted) -> Muted:
    """An alert muted by any of the steps."""
    return lambda alert: any(step(alert) for step in steps)


def dedup(group: Group, entry: Entry | None, muted: Muted, send_resolved: bool) -> Plan | None:
    """Step 3: what this channel has not said yet, compared with its ledger entry (None: nothing)."""
    firing = [a for a in group.alerts.values() if a.get("state") == "firing" and not muted(a)]
    firing.sort(key=incident)
    incidents = tuple(incident(a) for a in firing)
    announced = set(entry.incidents) if entry is not None and entry.status == "firing" else set()
    ended = [a for a in group.alerts.values() if a.get("state") == "resolved" and incident(a) in announced]
    if firing:
        if entry is None or entry.status != "firing":
            return Plan("firing", tuple(firing) + tuple(ended), incidents, "first")
        if set(incidents) != announced:
            return Plan("firing", tuple(firing) + tuple(ended), incidents, "changed")
        return Plan("firing", tuple(firing), incidents, "repeat")
    if ended and send_resolved and entry is not None:
        return Plan("resolved", tuple(ended), (), "resolved")
    return None


def wait(match: Match, due: Plan, entry: Entry | None, now_ms: int) -> bool:
    """Step 4: whether the timing of the route lets this message go now."""
    since = now_ms - entry.sent_ms if entry is not None else None
    if due.reason == "first":
        if since is not None and since < match.group_interval * 1000:
            return False
        first = min(_ms(a.get("starts_at")) for a in due.alerts if a.get("state") == "firing")
        return now_ms - first >= match.group_wait * 1000
    assert since is not None  # every other reason compares with a ledger entry
    if due.reason == "repeat":
        return since >= match.repeat_interval * 1000
    return since >= match.group_interval * 1000  # changed, resolved


def plan(
    config: NotifyConfig,
    group: Group,
    entry: Entry | None,
    now_ms: int,
    muted: Muted,
    send_resolved: bool,
) -> Plan | None:
    """The notification this channel of the group is due now, or None: steps 1 to 4 in order."""
    if not time_active(config, group.match, now_ms):
        return None
    due = dedup(group, entry, muted, send_resolved)
    if due is None or not wait(group.match, due, entry, now_ms):
        return None
    return due
