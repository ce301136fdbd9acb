"""PagerDuty Events API v2: one trigger or resolve event per alert, deduplicated by alert fingerprint.

A group is delivered when every event was accepted (202). PagerDuty itself merges repeated triggers
with the same dedup_key into one incident, so a retry that resends already-accepted events is harmless.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agents.notifiers.base import (
    DELIVERED,
    Notification,
    Notifier,
    Outcome,
    Probe,
    is_resolved,
    number,
    runbook,
)
from pipeline.alerting.context import of_alert
from pipeline.alerting.text import clip, one_line
from pipeline.config.settings import secret_text, shown_url

SEVERITY = {"critical": "critical", "high": "error", "medium": "warning", "low": "info"}
SUMMARY_MAX = 1024


def summary(alert: Mapping[str, Any]) -> str:
    """The incident title: the alert's title, its value and threshold, at most 1024 characters."""
    text = f"{one_line(str(alert.get('title') or alert.get('rule', '')))}"
    text += f" (value {number(alert.get('currentValue'))}, threshold {number(alert.get('threshold'))})"
    return clip(text, SUMMARY_MAX)


def event(alert: Mapping[str, Any], routing_key: str, external_url: str) -> dict[str, Any]:
    """The Events v2 body for one alert: a resolve when it is resolved, a trigger otherwise."""
    dedup_key = str(alert.get("fingerprint", ""))
    if is_resolved(alert):
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key}
    links = [{"href": external_url, "text": "o4o-pulse"}]
    url = runbook(alert)
    if url:
        links.insert(0, {"href": url, "text": "Runbook"})
    details = {
        "message": str(alert.get("message", "")),
        "metric": alert.get("metric"),
        "current_value": alert.get("currentValue"),
        "threshold": alert.get("threshold"),
        "labels": dict(alert.get("labels") or {}),
        "annotations": dict(alert.get("annotations") or {}),
    }
    found = of_alert(alert)
    if found is not None:
        details["context"] = found.to_dict()
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "client": "o4o-pulse",
        "client_url": external_url,
        "payload": {
            "summary": summary(alert),
            "source": str(alert.get("service") or "o4o-pulse"),
            "severity": SEVERITY.get(str(alert.get("severity", "")), "warning"),
            "timestamp": alert.get("starts_at") or alert.get("timestamp"),
            "class": str(alert.get("rule", "")),
            "custom_details": details,
        },
        "links": links,
    }


class PagerDutyNotifier(Notifier):
    """Sends one Events v2 event per alert of the group."""

    channel = "pagerduty"
    needs = ("routing_key",)
    """A routing (integration) key."""

    async def send(self, notification: Notification) -> Outcome:
        """Send every alert's event; stop at the first one that is not accepted."""
        key = str(secret_text(self.config.pagerduty.routing_key))
        sent = 0
        for alert in notification.alerts:
            body = event(alert, key, notification.external_url)
            outcome = await self.post(
                self.config.pagerduty.url, f"pagerduty {body['event_action']}", json=body
            )
            if outcome.kind != DELIVERED:
                # Later events would most likely meet the same answer (rate limit, bad key, outage).
                return self.outcome(
                    outcome.kind, outcome.reason, retry_after=outcome.retry_after, meta={"sent": sent}
                )
            sent += 1
        return Outcome(DELIVERED, meta={"sent": sent})

    def shown_target(self) -> str:
        """The Events API URL (the routing key is not part of it)."""
        return shown_url(self.config.pagerduty.url)

    async def probe(self) -> Probe:
        """HEAD the Events API: it answers without an event; the routing key is checked only by one."""
        return await self.probe_http(self.config.pagerduty.url)
