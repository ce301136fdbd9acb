"""Routing tree, grouping, time intervals, silences, inhibition and notification planning (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline.alerting.group import Entry, build_groups, incident
from pipeline.alerting.inhibit import inhibited
from pipeline.alerting.intervals import in_interval
from pipeline.alerting.route import route
from pipeline.alerting.silence import Silence, silenced
from pipeline.alerting.steps import plan
from pipeline.config.settings import NotifyConfig, TimeIntervalConfig, load_config

DEFAULTS = NotifyConfig()
T0 = int(datetime(2026, 11, 26, 2, 0, tzinfo=UTC).timestamp() * 1000)  # Thursday 11:00 in Seoul


def receivers(labels: dict[str, str]) -> list[str]:
    return [m.receiver for m in route(DEFAULTS, labels)]


def alert(name: str, severity: str, state: str = "firing", start: int = T0, **labels: str) -> dict[str, Any]:
    stamp = datetime.fromtimestamp(start / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {
        "id": f"fp-{name}-{labels}:{start}:{state}",
        "fingerprint": f"fp-{name}-{sorted(labels.items())}",
        "rule": name,
        "state": state,
        "severity": severity,
        "starts_at": stamp,
        "labels": {"alertname": name, "severity": severity, **labels},
    }


def test_the_guide_routing_every_alert_to_slack_and_critical_also_to_oncall() -> None:
    assert receivers({"alertname": "x", "severity": "critical"}) == ["integrations", "slack", "oncall"]
    assert receivers({"alertname": "x", "severity": "high"}) == ["integrations", "slack"]
    low = route(DEFAULTS, {"alertname": "x", "severity": "low"})
    assert [m.receiver for m in low] == ["integrations", "slack"]
    assert low[1].active_time_intervals == ("business_hours",)


def test_routes_inherit_grouping_and_timing_and_children_override() -> None:
    config = load_config({}).notify.model_copy(
        update={
            "route": NotifyConfig.model_validate(
                {
                    "route": {
                        "receiver": "slack",
                        "group_by": ["alertname", "service"],
                        "group_wait": "5s",
                        "routes": [
                            {"matchers": {"service": "=~pay.*"}, "receiver": "oncall", "group_wait": "1s"}
                        ],
                    }
                }
            ).route
        }
    )
    pay = route(config, {"alertname": "a", "service": "payment"})
    other = route(config, {"alertname": "a", "service": "api"})
    assert [(m.receiver, m.group_wait, m.group_by) for m in pay] == [
        ("oncall", 1.0, ("alertname", "service"))
    ]
    assert [(m.receiver, m.group_wait) for m in other] == [("slack", 5.0)]


def test_business_hours_in_the_configured_time_zone() -> None:
    hours = TimeIntervalConfig(weekdays=("monday:friday",), times=("09:00-18:00",), timezone="Asia/Seoul")
    thursday_11 = T0
    thursday_19 = T0 + 8 * 3600 * 1000
    saturday_11 = T0 + 2 * 86400 * 1000
    assert in_interval(hours, thursday_11)
    assert not in_interval(hours, thursday_19)
    assert not in_interval(hours, saturday_11)


def test_silence_matches_labels_within_its_time() -> None:
    s = Silence(
        "s1", {"alertname": "high_error_rate", "route": "=~/api/pay.*"}, T0, T0 + 60_000, "kim", "deploy"
    )
    hit = {"alertname": "high_error_rate", "route": "/api/payments"}
    assert silenced([s], hit, T0 + 1)
    assert not silenced([s], hit, T0 + 60_000)
    assert not silenced([s], {"alertname": "high_error_rate", "route": "/api/orders"}, T0 + 1)
    assert Silence.from_dict(s.to_dict()) == s


def test_payment_down_inhibits_error_alerts_of_payment_routes() -> None:
    rules = DEFAULTS.inhibit_rules
    down = {"alertname": "payment_system_down", "severity": "critical", "service": "payment"}
    target = {"alertname": "high_error_rate", "severity": "critical", "route": "/api/payments"}
    assert inhibited(rules, target, [down])
    assert not inhibited(rules, target, [])
    assert not inhibited(rules, {**target, "route": "/api/orders"}, [down])


def never(_: Any) -> bool:
    return False


def one_group(alerts: list[dict[str, Any]]) -> Any:
    groups = [g for g in build_groups(DEFAULTS, alerts).values() if g.match.receiver == "slack"]
    assert len(groups) == 1
    return groups[0]


def test_first_notification_waits_for_group_wait_then_repeats_only_after_repeat_interval() -> None:
    group = one_group([alert("high_error_rate", "critical")])
    wait = int(group.match.group_wait * 1000)
    assert plan(DEFAULTS, group, None, T0 + wait - 1, never, True) is None
    first = plan(DEFAULTS, group, None, T0 + wait, never, True)
    assert first is not None and first.status == "firing" and first.reason == "first"
    sent = Entry("firing", first.incidents, T0 + wait)
    assert plan(DEFAULTS, group, sent, T0 + wait + 60_000, never, True) is None
    repeat = plan(DEFAULTS, group, sent, T0 + wait + int(group.match.repeat_interval * 1000), never, True)
    assert repeat is not None and repeat.reason == "repeat"


def test_a_change_waits_for_group_interval_and_a_resolve_is_announced_once() -> None:
    a = alert("high_error_rate", "critical", route="/a")
    b = alert("high_error_rate", "critical", route="/b", start=T0 + 1000)
    group = one_group([a, b])
    sent = Entry("firing", (incident(a),), T0)
    interval = int(group.match.group_interval * 1000)
    assert plan(DEFAULTS, group, sent, T0 + interval - 1, never, True) is None
    changed = plan(DEFAULTS, group, sent, T0 + interval, never, True)
    assert changed is not None and changed.reason == "changed" and len(changed.incidents) == 2
    both = Entry("firing", changed.incidents, T0 + interval)
    ended = one_group([{**a, "state": "resolved"}, {**b, "state": "resolved"}])
    resolved = plan(DEFAULTS, ended, both, T0 + 2 * interval, never, True)
    assert resolved is not None and resolved.status == "resolved" and len(resolved.alerts) == 2
    done = Entry("resolved", (), T0 + 2 * interval)
    assert plan(DEFAULTS, ended, done, T0 + 10 * interval, never, True) is None
    assert plan(DEFAULTS, ended, both, T0 + 2 * interval, never, False) is None  # send_resolved off


def test_silenced_alerts_are_not_notified_and_low_alerts_wait_for_business_hours() -> None:
    group = one_group([alert("high_error_rate", "critical")])
    assert plan(DEFAULTS, group, None, T0 + 3_600_000, lambda a: True, True) is None
    evening = T0 + 9 * 3600 * 1000  # Thursday 20:00 in Seoul
    low = [g for g in build_groups(DEFAULTS, [alert("disk", "low", start=evening)]).values()]
    held = next(g for g in low if g.match.receiver == "slack")
    assert plan(DEFAULTS, held, None, evening + 60_000, never, True) is None
    next_morning = T0 + 86_400_000  # Friday 11:00: the interval opened, the alert still fires
    sent = plan(DEFAULTS, held, None, next_morning, never, True)
    assert sent is not None and sent.status == "firing"


@pytest.mark.parametrize(
    "bad",
    [{"route": {"receiver": "nobody"}}, {"route": {"receiver": "slack", "active_time_intervals": ["night"]}}],
)
def test_config_refuses_unknown_receivers_and_intervals(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        NotifyConfig.model_validate(bad)
