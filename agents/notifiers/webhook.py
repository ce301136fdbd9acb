"""Generic webhook: the Alertmanager webhook payload (version 4), optionally signed with HMAC-SHA256.

Headers sent with every request:
- `Content-Type: application/json`
- `X-Pulse-Notification-Key`: the notification's idempotency key; a receiver drops repeats of it.
- `X-Pulse-Timestamp`: Unix time in whole seconds when the request was signed (only with a secret).
- `X-Pulse-Signature`: `sha256=` + lowercase hex of HMAC-SHA256(key = signing secret as UTF-8,
  message = timestamp as ASCII + "." + the raw request body bytes) (only with a secret).

To verify: recompute the HMAC over the received `X-Pulse-Timestamp` value, a dot and the body exactly as
received, compare with `hmac.compare_digest`, and reject timestamps more than a few minutes from your
clock so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from agents.notifiers.base import Notification, Notifier, Outcome, Probe, hidden_url, is_resolved
from pipeline.alerting.context import AlertContext, of_alert, summary
from pipeline.alerting.text import strip_control
from pipeline.config.settings import secret_text

NOT_ENDED = "0001-01-01T00:00:00Z"  # what Alertmanager sends as endsAt of an alert that has not ended


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Pulse-Signature value for a body sent at `timestamp`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def common(mappings: list[Mapping[str, Any]]) -> dict[str, str]:
    """The key/value pairs every mapping shares."""
    if not mappings:
        return {}
    shared = {str(k): str(v) for k, v in mappings[0].items()}
    for other in mappings[1:]:
        shared = {k: v for k, v in shared.items() if k in other and str(other[k]) == v}
    return shared


def generator_url(alert: Mapping[str, Any], external_url: str) -> str:
    """Link to the history of the alert's rule in the pipeline's API."""
    rule = quote(str(alert.get("rule", "")), safe="")
    return f"{external_url.rstrip('/')}/api/v1/alerts/history?rule={rule}"


def v4_alert(alert: Mapping[str, Any], external_url: str) -> dict[str, Any]:
    """One alert as Alertmanager's webhook shows it."""
    labels = {str(k): str(v) for k, v in (alert.get("labels") or {}).items()}
    labels.setdefault("alertname", str(alert.get("rule", "")))
    labels.setdefault("severity", str(alert.get("severity", "")))
    resolved = is_resolved(alert)
    found = of_alert(alert)
    annotations = {str(k): str(v) for k, v in (alert.get("annotations") or {}).items()}
    annotations.update(context_annotations(found))
    out: dict[str, Any] = {
        "status": "resolved" if resolved else "firing",
        "labels": labels,
        "annotations": annotations,
        "startsAt": alert.get("starts_at") or alert.get("timestamp"),
        "endsAt": (alert.get("ends_at") or alert.get("timestamp")) if resolved else NOT_ENDED,
        "generatorURL": generator_url(alert, external_url),
        "fingerprint": str(alert.get("fingerprint", "")),
    }
    if found is not None:
        out["context"] = found.to_dict()
    return out


def context_annotations(found: AlertContext | None) -> dict[str, str]:
    """An alert's context (`of_alert`) as annotations: `context` readable text, `context_json` the
    structure as compact JSON (both without control characters); none without a context."""
    if found is None:
        return {}
    return {
        "context": strip_control(summary(found)),
        "context_json": strip_control(orjson.dumps(found.to_dict()).decode()),
    }


def payload(n: Notification) -> dict[str, Any]:
    """The whole version-4 payload of a notification."""
    alerts = [v4_alert(alert, n.external_url) for alert in n.alerts]
    return {
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": 0,
        "status": n.status,
        "receiver": n.receiver,
        "groupLabels": {str(k): str(v) for k, v in n.group_labels.items()},
        "commonLabels": common([a["labels"] for a in alerts]),
        "commonAnnotations": common([a["annotations"] for a in alerts]),
        "externalURL": n.external_url,
        "alerts": alerts,
    }


class WebhookNotifier(Notifier):
    """POSTs the version-4 payload to the configured URL."""

    channel = "webhook"
    needs = ("url",)
    """A webhook URL."""

    async def send(self, notification: Notification) -> Outcome:
        """POST the payload once."""
        body = orjson.dumps(payload(notification))
        headers = {"Content-Type": "application/json", "X-Pulse-Notification-Key": notification.key}
        secret = secret_text(self.config.webhook.signing_secret)
        if secret:
            timestamp = str(int(time.time()))
            headers["X-Pulse-Timestamp"] = timestamp
            headers["X-Pulse-Signature"] = signature(secret, timestamp, body)
        return await self.post(
            str(secret_text(self.config.webhook.url)), "webhook", data=body, headers=headers
        )

    def shown_target(self) -> str:
        """The host only: the URL's path may be its secret."""
        signed = "signed" if self.config.webhook.signing_secret else "unsigned"
        return f"{hidden_url(str(secret_text(self.config.webhook.url)))} ({signed})"

    async def probe(self) -> Probe:
        """HEAD the URL: any answer below 500 shows the receiver is there (the payload is not sent)."""
        return await self.probe_http(str(secret_text(self.config.webhook.url)))
