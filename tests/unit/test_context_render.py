"""How each channel shows an alert's context, hostile route names and error codes included.

The Slack payload in docs/notifications.md is this module's `slack_example()`: run
`PULSE_UPDATE_DOCS=1 .venv/bin/pytest tests/unit/test_context_render.py` after changing the rendering.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from agents.notifiers import email, pagerduty, slack, webhook
from agents.notifiers.alertmanager import posted_alert
from agents.notifiers.base import Notification
from pipeline.alerting.context import context_for, text_lines
from pipeline.rules.model import Rule
from tests.support.servers import sample_alert

AT = 1_767_322_000_000
RULE = Rule(name="high_error_rate", severity="critical", metric="o4o_error_ratio", window=300.0)
HOSTILE_ROUTE = "/x<!channel> ```@here <http://evil.example|click> <script>alert(1)</script>\x1b[2J"
HOSTILE_CODE = "E<b>\u202eOLD\r\nBcc: victim@example.com"


def entry(kind: str, labels: dict[str, str], **figures: Any) -> dict[str, Any]:
    return {"kind": kind, "labels": labels, "windows": {"5m": figures}}


def series(route: str = "/api/orders", code: str = "DB_TIMEOUT") -> list[dict[str, Any]]:
    """An error spike on two routes with two error codes, as /api/v1/series gives it."""
    return [
        entry(
            "route",
            {"service": "order-api", "route": "/api/payments"},
            count=200,
            errors_5xx=30,
            error_ratio=0.15,
        ),
        entry("route", {"service": "order-api", "route": route}, count=400, errors_5xx=18, error_ratio=0.045),
        entry(
            "route", {"service": "order-api", "route": "/health"}, count=900, errors_5xx=0, error_ratio=0.0
        ),
        entry("error_codes", {"error_code": "PAYMENT_GATEWAY_TIMEOUT"}, count=30),
        entry("error_codes", {"error_code": code}, count=18),
    ]


def with_context(route: str = "/api/orders", code: str = "DB_TIMEOUT", **kw: Any) -> dict[str, Any]:
    alert = sample_alert(**kw)
    found = context_for(RULE, {}, series(route, code), AT, "5m")
    assert found is not None
    alert["context"] = found.to_dict()
    return alert


def note(*alerts: dict[str, Any]) -> Notification:
    return Notification(
        "ops", "g-1", "firing", alerts, {"alertname": "high_error_rate"}, "k", "http://127.0.0.1:6066"
    )


def test_text_table_is_aligned_and_says_the_window() -> None:
    found = context_for(RULE, {}, series(), AT, "5m")
    assert found is not None
    assert text_lines(found) == [
        "Routes with the most 5xx (5m)",
        "  name                     count  share  5xx ratio",
        "  order-api /api/payments     30  62.5%      15.0%",
        "  order-api /api/orders       18  37.5%       4.5%",
        "Most frequent error codes (5m)",
        "  name                     count  share",
        "  PAYMENT_GATEWAY_TIMEOUT     30  62.5%",
        "  DB_TIMEOUT                  18  37.5%",
    ]


def test_slack_shows_the_context_as_a_code_block_after_the_alert() -> None:
    blocks = slack.render(note(with_context()))["attachments"][0]["blocks"]
    assert [b["type"] for b in blocks] == ["header", "section", "section", "context", "context"]
    text = blocks[2]["text"]["text"]
    assert text.startswith("*Context*\n```Routes with the most 5xx (5m)\n") and text.endswith("```")
    assert "  order-api /api/payments     30  62.5%      15.0%" in text
    assert "  DB_TIMEOUT                  18  37.5%" in text
    without = slack.render(note(sample_alert()))["attachments"][0]["blocks"]
    assert [b["type"] for b in without] == ["header", "section", "context", "context"]


def test_slack_escapes_hostile_routes_and_codes_in_the_table() -> None:
    blocks = slack.render(note(with_context(HOSTILE_ROUTE, HOSTILE_CODE)))["attachments"][0]["blocks"]
    text = blocks[2]["text"]["text"]
    body = text.removeprefix("*Context*\n```").removesuffix("```")
    assert "```" not in body and "`" not in body  # nothing closes the code block early
    assert "<" not in body and ">" not in body and "&lt;!channel&gt;" in body and "@\u200bhere" in body
    assert "\x1b" not in text and "\r" not in text and "\u202e" not in text


def test_email_has_an_html_table_and_a_text_table_all_escaped() -> None:
    n = note(with_context(HOSTILE_ROUTE, HOSTILE_CODE))
    html = email.html_body(n)
    assert (
        "<h4>Routes with the most 5xx (5m)</h4>" in html and "<h4>Most frequent error codes (5m)</h4>" in html
    )
    assert '<th style="border:1px solid #ddd;padding:2px 8px;text-align:left">name</th>' in html
    assert ">order-api /api/payments</td>" in html and ">62.5%</td>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html and "E&lt;b&gt;" in html
    assert "\x1b" not in html and "\u202e" not in html
    text = email.text_body(note(with_context()))
    assert "  context:\n    Routes with the most 5xx (5m)\n" in text
    assert "      order-api /api/payments     30  62.5%      15.0%\n" in text
    hostile_text = email.text_body(n)
    assert "\x1b" not in hostile_text and "\r" not in hostile_text and "\u202e" not in hostile_text


def test_webhook_alertmanager_and_pagerduty_carry_the_context() -> None:
    alert = with_context()
    v4 = webhook.payload(note(alert))["alerts"][0]
    assert v4["annotations"]["context"] == (
        "Routes with the most 5xx: order-api /api/payments 30 (62.5%), order-api /api/orders 18 (37.5%)\n"
        "Most frequent error codes: PAYMENT_GATEWAY_TIMEOUT 30 (62.5%), DB_TIMEOUT 18 (37.5%)"
    )
    assert json.loads(v4["annotations"]["context_json"]) == alert["context"] == v4["context"]
    assert [r["name"] for r in v4["context"]["sections"][1]["rows"]] == [
        "PAYMENT_GATEWAY_TIMEOUT",
        "DB_TIMEOUT",
    ]
    posted = posted_alert(alert, "http://127.0.0.1:6066")
    assert posted["annotations"]["context"] == v4["annotations"]["context"]
    assert "context" not in posted  # Alertmanager takes only labels and annotations
    event = pagerduty.event(alert, "key", "http://127.0.0.1:6066")
    assert event["payload"]["custom_details"]["context"] == alert["context"]
    plain = webhook.payload(note(sample_alert()))["alerts"][0]
    assert "context" not in plain and "context" not in plain["annotations"]


def test_webhook_annotations_have_no_controls_from_hostile_text() -> None:
    annotations = webhook.payload(note(with_context(HOSTILE_ROUTE, HOSTILE_CODE)))["alerts"][0]["annotations"]
    assert "\x1b" not in annotations["context"] and "\u202e" not in annotations["context"]
    assert "\u202e" not in annotations["context_json"]


def test_a_context_this_version_cannot_read_is_left_out() -> None:
    alert = {**sample_alert(), "context": {"kind": 3, "sections": "nonsense"}}
    assert len(slack.render(note(alert))["attachments"][0]["blocks"]) == 4
    assert "context" not in webhook.payload(note(alert))["alerts"][0]["annotations"]


DOCS = Path(__file__).parents[2] / "docs" / "notifications.md"
_EXAMPLE = re.compile(r"(<!-- slack-context-example -->\n```json\n)(.*?)(^```$)", re.DOTALL | re.MULTILINE)


def slack_example() -> str:
    """The Slack message of the docs: the error-spike fixture above, rendered by the Slack channel."""
    message = slack.render(note(with_context()))
    return json.dumps(message, ensure_ascii=False, indent=1) + "\n"


def test_the_docs_show_the_slack_payload_this_code_renders() -> None:
    text = DOCS.read_text()
    if os.environ.get("PULSE_UPDATE_DOCS"):
        text = _EXAMPLE.sub(lambda m: m.group(1) + slack_example() + m.group(3), text)
        DOCS.write_text(text)
    found = _EXAMPLE.search(text)
    assert found is not None, "docs/notifications.md lost its <!-- slack-context-example --> block"
    assert found.group(2) == slack_example(), "regenerate it: PULSE_UPDATE_DOCS=1 pytest " + __file__
