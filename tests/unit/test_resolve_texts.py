"""A resolved alert reads as resolved: its own words from the rule, a generic one otherwise, in every
channel (Slack, email, SMS)."""

from __future__ import annotations

import json
from typing import Any

from agents.notifiers import email, slack, sms
from agents.notifiers.base import Notification
from pipeline.rules import default_rules
from pipeline.rules.engine import State, Transition
from pipeline.rules.load import parse_text
from pipeline.rules.templates import template_errors
from tests.unit.test_rules_evaluate import Run, ratio, ruleset

FIRING_WORDS = "결제 시스템이 응답하지 않습니다"
RESOLVED_WORDS = "결제 시스템이 정상화되었습니다."
HOT = """
rules:
  - name: hot
    metric: o4o_error_ratio
    window: 5m
    op: ">"
    threshold: 5%
    severity: high
    annotations:
      summary: too hot
      description: it is hot
"""


def heartbeat(healthy: bool) -> dict[str, Any]:
    return {"o4o_service_up": [({"service": "payment"}, 1.0 if healthy else 0.0)]}


def payment_incident() -> tuple[Transition, Transition]:
    run = Run(default_rules())
    [fired] = [t for t in run.at(1_000, heartbeat(False)) if t.rule == "payment_system_down"]
    [resolved] = [t for t in run.at(1_010, heartbeat(True)) if t.rule == "payment_system_down"]
    assert (fired.state, resolved.state) == (State.FIRING, State.RESOLVED)
    return fired, resolved


def test_the_built_in_rules_say_resolved_in_the_guides_words() -> None:
    fired, resolved = payment_incident()
    assert fired.to_alert()["title"].startswith(FIRING_WORDS)
    assert resolved.to_alert()["title"] == RESOLVED_WORDS
    assert FIRING_WORDS not in resolved.to_alert()["message"]
    for rule in default_rules().rules:
        assert {"resolved_summary", "resolved_description"} <= set(rule.annotations), rule.name
        assert (
            "해소" in rule.annotations["resolved_summary"] or "정상화" in rule.annotations["resolved_summary"]
        )


def test_a_rule_without_a_resolve_text_gets_a_generic_one() -> None:
    run = Run(ruleset(HOT))
    run.at(0, ratio(0.2))
    [resolved] = run.at(10, ratio(0.01))
    alert = resolved.to_alert()
    assert alert["title"] == "hot 해소: 현재 값 1%"
    assert alert["message"] == ""  # the firing description would describe the problem as current
    assert "resolved_summary" not in alert["annotations"]


def test_templates_can_tell_firing_and_resolved_apart() -> None:
    assert template_errors("{{ rule }} is {{ state }}", None) == []
    text = HOT.replace("too hot", "hot ({{ state }})").replace(
        "description: it is hot", "resolved_summary: 'cool ({{ state }})'"
    )
    assert parse_text(text, "t.yaml").problems == []
    run = Run(ruleset(text))
    [fired] = run.at(0, ratio(0.2))
    [resolved] = run.at(10, ratio(0.01))
    assert (fired.to_alert()["title"], resolved.to_alert()["title"]) == ("hot (firing)", "cool (resolved)")


def note(status: str, alert: dict[str, Any]) -> Notification:
    group = {"alertname": "payment_system_down", "severity": "critical"}
    return Notification("ops", "g", status, (alert,), group, "k", "http://127.0.0.1:6066")


def test_slack_email_and_sms_render_the_resolve_in_its_own_words() -> None:
    fired, resolved = payment_incident()
    firing_note, resolved_note = note("firing", fired.to_alert()), note("resolved", resolved.to_alert())
    renderings = {
        "slack": (
            json.dumps(slack.render(firing_note), ensure_ascii=False),
            json.dumps(slack.render(resolved_note), ensure_ascii=False),
        ),
        "email text": (email.text_body(firing_note), email.text_body(resolved_note)),
        "email html": (email.html_body(firing_note), email.html_body(resolved_note)),
        "sms": (sms.body(firing_note, 320), sms.body(resolved_note, 320)),
    }
    for channel, (firing_text, resolved_text) in renderings.items():
        assert FIRING_WORDS in firing_text, channel
        assert RESOLVED_WORDS in resolved_text, channel
        assert FIRING_WORDS not in resolved_text, channel
    assert email.subject(resolved_note).startswith("[RESOLVED:1]")
    assert sms.body(resolved_note, 320).startswith("[RESOLVED:1]")
