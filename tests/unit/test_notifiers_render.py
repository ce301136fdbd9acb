"""What each channel renders from alert objects: formats, limits, and escaping of event-derived text."""

from __future__ import annotations

import base64
import json
from typing import Any

from agents.notifiers import email, pagerduty, slack, sms, webhook
from agents.notifiers.alertmanager import label_name, posted_alert
from agents.notifiers.base import Notification
from pipeline.config.settings import ChannelsConfig
from tests.support.servers import sample_alert

EVIL = {
    "summary": "<!channel> @here <http://evil.example|click> <script>x</script>",
    "description": "line1\r\nBcc: victim@example.com\x1b[2J",
}


def note(alerts: list[dict[str, Any]], status: str = "firing", **labels: str) -> Notification:
    group = {"alertname": "high_error_rate", **labels}
    return Notification("ops", "g-1", status, tuple(alerts), group, "key-1", "http://127.0.0.1:6066")


def all_text(blocks: Any) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def test_slack_message_has_header_colour_sections_and_links() -> None:
    message = slack.render(note([sample_alert(severity="high")]))
    attachment = message["attachments"][0]
    assert attachment["color"] == "#ff7f00"
    header, section, labels, link = attachment["blocks"]
    assert header["type"] == "header"
    assert header["text"]["text"] == ":large_orange_circle: [FIRING:1] high_error_rate high"
    assert "*Error rate above 5% on order-api*" in section["text"]["text"]
    assert "*Value:* `0.12`  *Threshold:* `0.05`" in section["text"]["text"]
    assert "<https://runbooks.example/high_error_rate|Runbook>" in section["text"]["text"]
    assert "`service=order-api`" in labels["elements"][0]["text"]
    assert link["elements"][0]["text"] == "<http://127.0.0.1:6066|Open o4o-pulse>"
    assert message["text"] == "[FIRING:1] high_error_rate high"


def test_slack_colours_by_severity_and_green_when_resolved() -> None:
    for severity, colour in [("critical", "#d40e0d"), ("medium", "#f2c744"), ("low", "#439fe0")]:
        assert slack.render(note([sample_alert(severity=severity)]))["attachments"][0]["color"] == colour
    resolved = slack.render(note([sample_alert(state="resolved")], status="resolved"))
    assert resolved["attachments"][0]["color"] == "#2eb67d"
    assert resolved["attachments"][0]["blocks"][0]["text"]["text"].startswith(
        ":white_check_mark: [RESOLVED:1]"
    )


def test_slack_caps_sections_at_ten_and_says_how_many_more() -> None:
    alerts = [sample_alert(fingerprint=f"fp{i}", labels={"route": f"/r{i}"}) for i in range(13)]
    blocks = slack.render(note(alerts))["attachments"][0]["blocks"]
    sections = [b for b in blocks if b["type"] == "section"]
    assert len(sections) == 10
    assert blocks[-2]["elements"][0]["text"] == "and 3 more"
    assert len(blocks) <= 50  # Slack's limit of blocks per message


def test_slack_escapes_event_text() -> None:
    text = all_text(slack.render(note([sample_alert(annotations=EVIL, labels={"route": "<!here>"})])))
    assert "<!channel>" not in text and "<!here>" not in text and "<http://evil" not in text
    assert "&lt;!channel&gt;" in text and "@\u200bhere" in text and "&lt;script&gt;" in text
    assert "\x1b" not in text and "\r" not in text


def test_slack_respects_block_text_limits() -> None:
    long = sample_alert(annotations={"description": "<" * 5000, "summary": "s" * 400})
    blocks = slack.render(note([long], team="x" * 300))["attachments"][0]["blocks"]
    assert len(blocks[0]["text"]["text"]) <= 150
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks if b["type"] == "section")
    assert not blocks[1]["text"]["text"].rstrip("…").endswith("&")


def test_email_subject_and_parts() -> None:
    alerts = [sample_alert(fingerprint="a"), sample_alert(fingerprint="b")]
    message = email.build_message(
        note(alerts), ChannelsConfig.model_validate({"email": {"to": ["a@x", "b@x"]}})
    )
    assert message["Subject"] == "[FIRING:2] high_error_rate critical"
    assert message["To"] == "a@x, b@x"
    assert message["X-Pulse-Notification-Key"] == "key-1"
    assert message.get_content_type() == "multipart/alternative"
    parts = [part.get_content_type() for part in message.iter_parts()]
    assert parts == ["text/plain", "text/html"]


def test_email_html_is_escaped_and_text_has_no_controls() -> None:
    n = note([sample_alert(annotations=EVIL)])
    html = email.html_body(n)
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;!channel&gt;" in html
    assert '<a href="https://runbooks.example/high_error_rate">Runbook</a>' in html
    text = email.text_body(n)
    assert "<script>x</script>" in text  # plain text shows it literally; nothing interprets it
    assert "\x1b" not in text and "\r" not in text


def test_email_subject_cannot_inject_headers() -> None:
    n = Notification(
        "ops", "g", "firing", (sample_alert(),), {"alertname": "a\r\nBcc: x@evil"}, "k", "http://x"
    )
    message = email.build_message(n, ChannelsConfig())
    assert message["Bcc"] is None
    assert "\n" not in message["Subject"]


def test_sms_body_is_plain_and_short() -> None:
    alerts = [sample_alert(annotations=EVIL), sample_alert(fingerprint="b")]
    text = sms.body(note(alerts), 70)
    assert len(text) <= 70
    assert text.startswith("[FIRING:2] high_error_rate critical - ")
    assert "\r" not in text and "\n" not in text and "\x1b" not in text
    assert sms.body(note(alerts[1:]), 320) == (
        "[FIRING:1] high_error_rate critical - Error rate above 5% on order-api (value 0.12, threshold 0.05)"
    )


def test_sms_endpoint_and_basic_auth_from_config_or_url() -> None:
    plain = sms.SmsNotifier(
        ChannelsConfig.model_validate(
            {"sms": {"url": "https://api.example/2010-04-01/", "auth_token": "tok"}}
        )
    )
    url, authorization = plain.target()
    assert url == "https://api.example/2010-04-01/Accounts/AC00000000000000000000000000000000/Messages.json"
    assert authorization == "Basic " + base64.b64encode(b"AC00000000000000000000000000000000:tok").decode()
    in_url = sms.SmsNotifier(
        ChannelsConfig.model_validate({"sms": {"url": "https://AC9:p%40ss@api.example/v1"}})
    )
    url, authorization = in_url.target()
    assert url == "https://api.example/v1/Accounts/AC00000000000000000000000000000000/Messages.json"
    assert authorization == "Basic " + base64.b64encode(b"AC9:p@ss").decode()


def test_sms_masks_numbers() -> None:
    assert sms.masked("+821012345678") == "…5678"
    assert sms.masked("123") == "…"


def test_webhook_payload_is_alertmanager_v4() -> None:
    firing, resolved = sample_alert(fingerprint="f1"), sample_alert(fingerprint="f2", state="resolved")
    data = webhook.payload(note([firing, resolved], severity="critical"))
    assert data["version"] == "4"
    assert data["groupKey"] == "g-1" and data["receiver"] == "ops" and data["status"] == "firing"
    assert data["truncatedAlerts"] == 0
    assert data["groupLabels"] == {"alertname": "high_error_rate", "severity": "critical"}
    assert data["commonLabels"] == firing["labels"]
    assert data["commonAnnotations"] == firing["annotations"]
    assert data["externalURL"] == "http://127.0.0.1:6066"
    first, second = data["alerts"]
    assert first["status"] == "firing" and first["endsAt"] == "0001-01-01T00:00:00Z"
    assert first["startsAt"] == firing["starts_at"] and first["fingerprint"] == "f1"
    assert second["status"] == "resolved" and second["endsAt"] == resolved["ends_at"]
    assert first["generatorURL"] == "http://127.0.0.1:6066/api/v1/alerts/history?rule=high_error_rate"


def test_webhook_common_labels_keep_only_shared_pairs() -> None:
    assert webhook.common([{"a": "1", "b": "2"}, {"a": "1", "b": "3"}]) == {"a": "1"}
    assert webhook.common([]) == {}


def test_webhook_signature_covers_timestamp_and_body() -> None:
    one = webhook.signature("k", "1700000000", b"{}")
    assert one.startswith("sha256=") and len(one) == 7 + 64
    assert one != webhook.signature("k", "1700000001", b"{}")
    assert one != webhook.signature("k", "1700000000", b"{ }")


def test_pagerduty_trigger_and_resolve_events() -> None:
    trigger = pagerduty.event(sample_alert(severity="high"), "RK", "http://x")
    assert trigger["event_action"] == "trigger" and trigger["dedup_key"] == "a1b2c3d4e5f60718"
    assert trigger["payload"]["severity"] == "error"
    assert trigger["payload"]["source"] == "order-api"
    assert trigger["payload"]["timestamp"] == "2026-01-02T02:46:40.000Z"
    assert trigger["links"][0] == {"href": "https://runbooks.example/high_error_rate", "text": "Runbook"}
    resolve = pagerduty.event(sample_alert(state="resolved"), "RK", "http://x")
    assert resolve == {"routing_key": "RK", "event_action": "resolve", "dedup_key": "a1b2c3d4e5f60718"}


def test_pagerduty_severities_and_summary_limit() -> None:
    for ours, theirs in [("critical", "critical"), ("high", "error"), ("medium", "warning"), ("low", "info")]:
        assert pagerduty.event(sample_alert(severity=ours), "RK", "http://x")["payload"]["severity"] == theirs
    long = sample_alert(annotations={"summary": "x" * 5000})
    assert len(pagerduty.event(long, "RK", "http://x")["payload"]["summary"]) == 1024


def test_alertmanager_alerts_carry_alertname_severity_and_ends_at_when_resolved() -> None:
    firing = posted_alert(sample_alert(labels={"bad-name": "v", "empty": ""}), "http://x")
    assert firing["labels"]["alertname"] == "high_error_rate" and firing["labels"]["severity"] == "critical"
    assert firing["labels"]["bad_name"] == "v" and "empty" not in firing["labels"]
    assert "endsAt" not in firing and firing["startsAt"] == "2026-01-02T02:46:40.000Z"
    resolved = posted_alert(sample_alert(state="resolved"), "http://x")
    assert resolved["endsAt"] == "2026-01-02T02:56:40.000Z"
    assert label_name("9lives") == "_9lives"
