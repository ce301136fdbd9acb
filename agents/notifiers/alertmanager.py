"""Alertmanager: forward the group's alerts to POST {url}/api/v2/alerts so its routing takes over."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from agents.notifiers.base import Notification, Notifier, Outcome, Probe, is_resolved, now_rfc3339
from agents.notifiers.webhook import context_annotations, generator_url
from pipeline.alerting.context import of_alert
from pipeline.config.settings import shown_url

_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_]")


def label_name(name: str) -> str:
    """A valid Prometheus label name (other characters become underscores)."""
    cleaned = _BAD_NAME_CHARS.sub("_", name) or "_"
    return f"_{cleaned}" if cleaned[0].isdigit() else cleaned


def posted_alert(alert: Mapping[str, Any], external_url: str) -> dict[str, Any]:
    """One postable alert; a resolved one carries endsAt, a firing one leaves it to Alertmanager."""
    # Empty values mean "no label" to Alertmanager, which rejects them in some versions.
    labels = {label_name(str(k)): str(v) for k, v in (alert.get("labels") or {}).items() if str(v)}
    labels["alertname"] = labels.get("alertname") or str(alert.get("rule") or "pulse_alert")
    labels["severity"] = labels.get("severity") or str(alert.get("severity") or "none")
    annotations = {label_name(str(k)): str(v) for k, v in (alert.get("annotations") or {}).items()}
    annotations.update(context_annotations(of_alert(alert)))
    out: dict[str, Any] = {
        "labels": labels,
        "annotations": annotations,
        "startsAt": alert.get("starts_at") or alert.get("timestamp"),
        "generatorURL": generator_url(alert, external_url),
    }
    if is_resolved(alert):
        out["endsAt"] = alert.get("ends_at") or alert.get("timestamp") or now_rfc3339()
    return out


class AlertmanagerNotifier(Notifier):
    """Posts the group's alerts to an Alertmanager in one request."""

    channel = "alertmanager"
    needs = ("url",)
    """An Alertmanager base URL."""

    async def send(self, notification: Notification) -> Outcome:
        """POST every alert of the group at once."""
        body = [posted_alert(alert, notification.external_url) for alert in notification.alerts]
        url = f"{str(self.config.alertmanager.url).rstrip('/')}/api/v2/alerts"
        return await self.post(url, "alertmanager", json=body)

    def shown_target(self) -> str:
        """The Alertmanager's base URL (a password in it masked)."""
        return shown_url(str(self.config.alertmanager.url))

    async def probe(self) -> Probe:
        """GET /-/ready, which every Alertmanager answers with 200 once it can take alerts."""
        url = f"{str(self.config.alertmanager.url).rstrip('/')}/-/ready"
        hint = "no Alertmanager ready there: check PULSE_ALERTMANAGER_URL (its base URL, without /api/v2)"
        return await self.probe_http(url, "GET", what="GET /-/ready", only_2xx=hint)
