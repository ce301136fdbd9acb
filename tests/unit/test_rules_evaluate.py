"""Rule evaluation: the alert lifecycle, hysteresis, keep_firing_for, heartbeats, ownership, flapping,
fingerprints and the alert JSON."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import orjson

from pipeline.readout.names import Family
from pipeline.rules import (
    AlertState,
    FlapPolicy,
    Rule,
    RuleSet,
    Snapshot,
    State,
    Transition,
    evaluate,
    fingerprint,
    prunable,
)
from pipeline.rules.load import parse_text

ERROR_RULE = """
rules:
  - name: high_error_rate
    metric: o4o_error_ratio
    window: 5m
    op: ">"
    threshold: 5%
    severity: critical
"""


def ruleset(text: str, **extra: str) -> RuleSet:
    for key, value in extra.items():
        text += f"    {key}: {value}\n"
    parsed = parse_text(text, "t.yaml")
    assert parsed.problems == []
    return RuleSet(tuple(parsed.rules), "t.yaml")


def ratio(value: float, window: str = "5m") -> dict[str, Any]:
    return {"o4o_error_ratio": [({"window": window}, value)]}


class Run:
    """Evaluate the same rules at successive times, carrying the state as a caller would."""

    def __init__(self, rules: RuleSet, **kwargs: Any) -> None:
        self.rules, self.kwargs = rules, kwargs
        self.states: dict[str, AlertState] = {}

    def at(self, seconds: float, samples: Mapping[str, Any]) -> list[Transition]:
        transitions, changed = evaluate(
            self.rules, Snapshot(samples), self.states, int(seconds * 1000), **self.kwargs
        )
        self.states.update(changed)
        return transitions

    def moves(self, seconds: float, samples: Mapping[str, Any]) -> list[tuple[str, str]]:
        return [(str(t.previous), str(t.state)) for t in self.at(seconds, samples)]

    def only(self) -> AlertState:
        assert len(self.states) == 1
        return next(iter(self.states.values()))


def test_pending_until_for_has_passed_then_firing() -> None:
    run = Run(ruleset(ERROR_RULE, **{"for": "5m"}))
    assert run.moves(0, ratio(0.07)) == [("inactive", "pending")]
    for t in (60, 120, 240, 299):
        assert run.moves(t, ratio(0.07)) == []
    assert run.only().state == State.PENDING
    [firing] = run.at(300, ratio(0.08))
    assert (firing.previous, firing.state, firing.starts_at_ms, firing.value) == (
        State.PENDING,
        State.FIRING,
        300_000,
        0.08,
    )
    assert run.only().active_since_ms == 0


def test_pending_that_clears_returns_to_inactive_with_a_transition() -> None:
    run = Run(ruleset(ERROR_RULE, **{"for": "5m"}))
    run.at(0, ratio(0.07))
    [back] = run.at(60, ratio(0.01))
    assert (back.previous, back.state, back.starts_at_ms) == (State.PENDING, State.INACTIVE, 0)
    state = run.only()
    assert state.state == State.INACTIVE and state.active_since_ms is None
    assert prunable(state, 60_000)
    assert run.moves(120, ratio(0.01)) == []


def test_for_zero_fires_at_once_in_one_transition() -> None:
    run = Run(ruleset(ERROR_RULE))
    assert run.moves(0, ratio(0.05)) == []  # not > 5%
    assert run.moves(15, ratio(0.051)) == [("inactive", "firing")]
    assert run.only().starts_at_ms == 15_000


def test_hysteresis_resolves_only_below_resolve_threshold() -> None:
    run = Run(ruleset(ERROR_RULE, resolve_threshold="4%"))
    assert run.moves(0, ratio(0.06)) == [("inactive", "firing")]
    assert run.moves(15, ratio(0.045)) == []
    assert run.only().state == State.FIRING
    [resolved] = run.at(30, ratio(0.03))
    assert (resolved.state, resolved.ends_at_ms, resolved.starts_at_ms) == (State.RESOLVED, 30_000, 0)
    # Below the threshold but above the resolve threshold does not start a new incident.
    assert run.moves(45, ratio(0.045)) == []


def test_keep_firing_for_counts_from_the_first_clear_evaluation() -> None:
    run = Run(ruleset(ERROR_RULE, keep_firing_for="1m"))
    run.at(0, ratio(0.1))
    assert run.moves(15, ratio(0.01)) == []
    assert run.moves(30, ratio(0.1)) == []  # true again: the clock restarts
    assert run.moves(45, ratio(0.01)) == []
    assert run.moves(104, ratio(0.01)) == []
    assert run.moves(105, ratio(0.01)) == [("firing", "resolved")]


def test_a_new_incident_gets_a_new_start_and_id() -> None:
    run = Run(ruleset(ERROR_RULE))
    [first] = run.at(0, ratio(0.1))
    run.at(15, ratio(0.0))
    [second] = run.at(30, ratio(0.1))
    assert (second.previous, second.state, second.starts_at_ms) == (State.RESOLVED, State.FIRING, 30_000)
    assert first.fingerprint == second.fingerprint
    assert first.to_alert()["id"] != second.to_alert()["id"]
    assert run.only().ends_at_ms is None


def test_a_series_that_disappears_resolves() -> None:
    run = Run(ruleset(ERROR_RULE))
    run.at(0, ratio(0.1))
    [resolved] = run.at(15, {})
    assert resolved.state == State.RESOLVED and resolved.value is None
    assert "n/a" in resolved.annotations["summary"]


def test_instances_and_filters() -> None:
    rules = ruleset(
        """
rules:
  - name: route_errors
    metric: o4o_route_error_ratio
    window: 5m
    where: {route: "=~/api/.*", service: "!=admin"}
    op: ">"
    threshold: 0.1
    severity: high
    service: shop
    labels: {team: web, route: overridden}
"""
    )
    samples = {
        "o4o_route_error_ratio": [
            ({"service": "api", "route": "/api/a", "window": "5m"}, 0.5),
            ({"service": "api", "route": "/api/b", "window": "5m"}, 0.01),
            ({"service": "api", "route": "/api/c", "window": "1m"}, 0.5),
            ({"service": "admin", "route": "/api/a", "window": "5m"}, 0.5),
            ({"service": "api", "route": "/health", "window": "5m"}, 0.5),
        ]
    }
    [t] = Run(rules).at(0, samples)
    assert t.labels == {
        "service": "api",
        "route": "overridden",
        "team": "web",
        "alertname": "route_errors",
        "severity": "high",
    }
    assert t.fingerprint == fingerprint("route_errors", {"service": "api", "route": "/api/a"})
    assert t.service == "shop"


def test_by_groups_samples_and_the_one_closest_to_firing_counts() -> None:
    rules = ruleset(
        """
rules:
  - name: pool
    metric: o4o_db_pool_usage
    by: [db]
    op: ">"
    threshold: 0.9
    severity: medium
"""
    )
    samples = {"o4o_db_pool_usage": [({"db": "main", "host": "a"}, 0.5), ({"db": "main", "host": "b"}, 0.95)]}
    [t] = Run(rules).at(0, samples)
    assert (t.labels["db"], t.value, t.service) == ("main", 0.95, "o4o")
    assert "host" not in t.labels


PAYMENT = """
rules:
  - name: payment_down
    heartbeat: {service: payment, unhealthy: true, absent_for: 60s}
    severity: critical
"""


def heartbeat(service: str, up: float, beat_s: float) -> dict[str, Any]:
    return {
        "o4o_service_up": [({"service": service}, up)],
        "o4o_service_last_heartbeat_timestamp_seconds": [({"service": service}, beat_s)],
    }


def test_heartbeat_absent_by_age() -> None:
    run = Run(ruleset(PAYMENT))
    assert run.moves(100, heartbeat("payment", 1, 41)) == []  # 59s old
    [t] = run.at(101, heartbeat("payment", 1, 41))
    assert (t.state, t.value, t.threshold) == (State.FIRING, 60.0, 60.0)
    assert t.metric == "o4o_service_last_heartbeat_timestamp_seconds"
    assert t.labels == {"service": "payment", "alertname": "payment_down", "severity": "critical"}
    assert t.service == "payment"
    assert run.moves(102, heartbeat("payment", 1, 101)) == [("firing", "resolved")]


def test_heartbeat_unhealthy() -> None:
    run = Run(ruleset(PAYMENT))
    [t] = run.at(10, heartbeat("payment", 0, 9))
    assert (t.state, t.value, t.threshold, t.metric) == (State.FIRING, 0.0, 0.0, "o4o_service_up")


def test_heartbeat_named_service_without_samples_is_absent_where_owned() -> None:
    calls: list[tuple[str, dict[str, str]]] = []

    def owns(rule: Rule, labels: Mapping[str, str]) -> bool:
        calls.append((rule.name, dict(labels)))
        return False

    assert Run(ruleset(PAYMENT), owns=owns).at(0, heartbeat("api", 1, 0)) == []
    assert calls == [("payment_down", {"service": "payment"})]
    # never heard from: absent only after absent_for of watching (not at the pipeline's first tick)
    run = Run(ruleset(PAYMENT))
    [t] = run.at(0, {})
    assert (t.state, t.value, t.labels["service"]) == (State.PENDING, None, "payment")
    assert run.at(59, {}) == []
    [t] = run.at(60, {})
    assert (t.state, t.value, t.labels["service"]) == (State.FIRING, None, "payment")


def test_owns_is_not_asked_about_instances_with_samples_or_state() -> None:
    def owns(rule: Rule, labels: Mapping[str, str]) -> bool:
        raise AssertionError("not asked")

    run = Run(ruleset(PAYMENT), owns=owns)
    assert run.moves(0, heartbeat("payment", 0, 0)) == [("inactive", "firing")]
    # The state exists, so the sample vanishing means absence: it keeps firing.
    assert run.moves(15, {}) == []
    assert run.only().state == State.FIRING


def test_heartbeat_without_a_service_covers_every_service_seen() -> None:
    rules = ruleset("rules:\n  - name: down\n    heartbeat: {unhealthy: true}\n    severity: high\n")
    samples = {
        "o4o_service_up": [({"service": "api"}, 0.0), ({"service": "web"}, 1.0), ({"service": "search"}, 0.0)]
    }
    transitions = Run(rules).at(0, samples)
    assert sorted(t.labels["service"] for t in transitions) == ["api", "search"]
    # Unhealthy alone says nothing about a service that is not there.
    run = Run(rules)
    run.at(0, samples)
    assert sorted(t.state for t in run.at(15, {})) == [State.RESOLVED, State.RESOLVED]


def test_fingerprint_is_stable_and_order_free() -> None:
    labels = {"service": "api", "route": "/api/orders"}
    # sha256 of {"alertname":"high_error_rate","route":"/api/orders","service":"api"}, first 16 hex
    assert fingerprint("high_error_rate", labels) == "4092abd234ba36ee"
    assert fingerprint("high_error_rate", dict(reversed(labels.items()))) == "4092abd234ba36ee"
    assert fingerprint("other", labels) != fingerprint("high_error_rate", labels)
    assert fingerprint("x", {"alertname": "y"}) == fingerprint("x", {})


def test_to_alert_has_the_guide_fields() -> None:
    run = Run(ruleset(ERROR_RULE, resolve_threshold="4%"))
    run.at(1_767_225_600, ratio(0.0734))  # 2026-01-01T00:00:00Z
    [resolved] = run.at(1_767_225_600.5, ratio(0.01))
    alert = resolved.to_alert()
    fp = fingerprint("high_error_rate", {})
    assert alert == {
        "id": f"{fp}:1767225600000:resolved",
        "fingerprint": fp,
        "rule": "high_error_rate",
        "state": "resolved",
        "previous": "firing",
        "severity": "critical",
        # A resolve says so in its own words (issue "The first ten minutes"): the firing description
        # would describe the problem as current.
        "title": "high_error_rate 해소: 현재 값 1%",
        "message": "",
        "metric": "o4o_error_ratio",
        "currentValue": 0.01,
        "threshold": 0.05,
        "timestamp": "2026-01-01T00:00:00.500Z",
        "service": "o4o",
        "labels": {"alertname": "high_error_rate", "severity": "critical"},
        "annotations": {"summary": "high_error_rate 해소: 현재 값 1%"},
        "starts_at": "2026-01-01T00:00:00.000Z",
        "ends_at": "2026-01-01T00:00:00.500Z",
        "V": 2,
    }
    assert orjson.loads(orjson.dumps(alert)) == alert


def test_alert_state_round_trips_through_compact_json() -> None:
    run = Run(ruleset(ERROR_RULE, keep_firing_for="1m"))
    run.at(0, ratio(0.1))
    run.at(15, ratio(0.0))
    state = run.only()
    data = orjson.loads(orjson.dumps(state.to_dict()))
    assert AlertState.from_dict(data) == state
    assert data == {
        "f": state.fingerprint,
        "r": "high_error_rate",
        "l": {},
        "s": "firing",
        "a": 0,
        "b": 0,
        "t": 0,
        "v": 0.0,
        "h": [0],
        "c": 15_000,
        "V": 2,
    }


def test_flapping_instance_is_marked_and_its_resolve_held() -> None:
    policy = FlapPolicy(window_s=600, max_fires=3, hold_s=120)
    run = Run(ruleset(ERROR_RULE), flapping=policy)
    for start in (0, 60):
        assert "flapping" not in run.at(start, ratio(0.1))[0].annotations
        assert run.moves(start + 30, ratio(0.0)) == [("firing", "resolved")]
    [third] = run.at(120, ratio(0.1))
    assert third.annotations["flapping"] == "true"
    assert run.moves(150, ratio(0.0)) == []
    assert run.moves(269, ratio(0.0)) == []
    assert run.moves(270, ratio(0.0)) == [("firing", "resolved")]
    assert len(run.only().fired) == 3
    # Once the fires are older than the window, the instance is calm again.
    assert "flapping" not in run.at(121 + 600, ratio(0.1))[0].annotations
    assert not prunable(run.only(), 721_000)


def test_evaluate_returns_only_changes_and_does_not_mutate_inputs() -> None:
    run = Run(ruleset(ERROR_RULE, keep_firing_for="1m"))
    run.at(0, ratio(0.1))
    states = copy.deepcopy(run.states)
    samples = ratio(0.0)
    snapshot = Snapshot(samples)
    _, changed = evaluate(run.rules, snapshot, states, 15_000)
    assert states == run.states and samples == ratio(0.0)
    assert changed and all(changed[fp] is not states[fp] for fp in changed)
    _, again = evaluate(run.rules, snapshot, {**states, **changed}, 16_000)
    assert again == {}


def test_snapshot_from_families_keeps_suffixed_samples_apart() -> None:
    families = [
        Family("o4o_error_ratio", "gauge", "", [("", {"window": "5m"}, 1)]),
        Family(
            "http_request_duration_seconds",
            "histogram",
            "",
            [("_bucket", {"le": "+Inf"}, 3), ("_sum", {}, 1.5)],
        ),
    ]
    snapshot = Snapshot.from_families(families)
    assert snapshot.samples == {
        "o4o_error_ratio": [({"window": "5m"}, 1.0)],
        "http_request_duration_seconds_bucket": [({"le": "+Inf"}, 3.0)],
        "http_request_duration_seconds_sum": [({}, 1.5)],
    }
    assert isinstance(snapshot.samples["o4o_error_ratio"][0][1], float)
