"""What a rule sees in a Snapshot: one Observation per alert instance (fingerprint).

Metric rules: the samples of the rule's metric, filtered by window, quantile and `where`, grouped into
instances by `by` (default: every label but window and quantile). Should several samples still fall into
one instance (gauges, whose labels the checker cannot know), the one closest to firing counts.

Heartbeat rules: one instance per service, labels {service}. The conditions are OR-ed: unhealthy
(o4o_service_up == 0; value 0, threshold 0) and absent (now - last heartbeat >= absent_for, or no sample
at all, after absent_for of watching; value = age in seconds or None, threshold = absent_for).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from pipeline.durations import format_duration
from pipeline.rules.catalogue import QUANTILE, WINDOW, Snapshot, quantile_label
from pipeline.rules.model import OPS, Rule

UP = "o4o_service_up"
LAST_HEARTBEAT = "o4o_service_last_heartbeat_timestamp_seconds"
Owns = Callable[[Rule, Mapping[str, str]], bool]


def fingerprint(rule_name: str, labels: Mapping[str, str]) -> str:
    """Stable id of an alert instance: sha256 of canonical JSON of alertname + sorted labels, 16 hex."""
    canonical = json.dumps(
        {**labels, "alertname": rule_name}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Observation:
    """One alert instance at one evaluation: its value and whether its condition holds."""

    labels: dict[str, str]
    value: float | None
    threshold: float | None
    metric: str
    active: bool  # the condition against `threshold` (starts pending/firing)
    holding: bool  # the condition against `resolve_threshold` (keeps firing: hysteresis)
    wait_s: float = 0.0  # least time the condition must hold before firing, on top of the rule's `for`


def gone(rule: Rule, labels: Mapping[str, str]) -> Observation:
    """The observation of an instance whose series disappeared: its condition is false."""
    metric = rule.metric or UP
    return Observation(dict(labels), None, rule.threshold, metric, active=False, holding=False)


def observe(
    rule: Rule, snapshot: Snapshot, known: Iterable[Mapping[str, str]], owns: Owns, now_ms: int
) -> dict[str, Observation]:
    """Observe every instance of a rule; `known` are the labels of the instances that have state."""
    if rule.heartbeat is not None:
        return _observe_heartbeat(rule, snapshot, list(known), owns, now_ms)
    return _observe_metric(rule, snapshot)


def _satisfies(op: str | None, value: float | None, threshold: float | None) -> bool:
    if op is None or value is None or threshold is None or math.isnan(value):
        return False
    return OPS[op](value, threshold)


def _rank(rule: Rule, value: float) -> tuple[bool, float]:
    # Why: among samples of one instance, prefer the one that satisfies the condition, then the extreme one.
    if math.isnan(value):
        return (False, -math.inf)
    direction = -1.0 if rule.op in ("<", "<=") else 1.0
    return (_satisfies(rule.op, value, rule.threshold), direction * value)


def _instance_labels(rule: Rule, labels: Mapping[str, str]) -> dict[str, str]:
    if rule.by is not None:
        return {key: labels.get(key, "") for key in rule.by}
    return {key: value for key, value in labels.items() if key not in (WINDOW, QUANTILE)}


def _observe_metric(rule: Rule, snapshot: Snapshot) -> dict[str, Observation]:
    assert rule.metric is not None
    window = None if rule.window is None else format_duration(rule.window)
    quantile = None if rule.quantile is None else quantile_label(rule.quantile)
    chosen: dict[str, tuple[dict[str, str], float]] = {}
    for labels, value in snapshot.get(rule.metric):
        if window is not None and labels.get(WINDOW) != window:
            continue
        if quantile is not None and labels.get(QUANTILE) != quantile:
            continue
        if not all(matcher.matches(labels) for matcher in rule.where):
            continue
        instance = _instance_labels(rule, labels)
        fp = fingerprint(rule.name, instance)
        if fp not in chosen or _rank(rule, value) > _rank(rule, chosen[fp][1]):
            chosen[fp] = (instance, value)
    resolve = rule.threshold if rule.resolve_threshold is None else rule.resolve_threshold
    return {
        fp: Observation(
            labels,
            value,
            rule.threshold,
            rule.metric,
            active=_satisfies(rule.op, value, rule.threshold),
            holding=_satisfies(rule.op, value, resolve),
        )
        for fp, (labels, value) in chosen.items()
    }


def _by_service(snapshot: Snapshot, metric: str) -> dict[str, float]:
    return {labels["service"]: value for labels, value in snapshot.get(metric) if "service" in labels}


def _observe_heartbeat(
    rule: Rule, snapshot: Snapshot, known: list[Mapping[str, str]], owns: Owns, now_ms: int
) -> dict[str, Observation]:
    assert rule.heartbeat is not None
    named = rule.heartbeat.service
    ups = _by_service(snapshot, UP)
    beats = _by_service(snapshot, LAST_HEARTBEAT)
    with_state = {labels["service"] for labels in known if "service" in labels}
    services = {named} if named is not None else set(ups) | set(beats)
    services |= {service for service in with_state if named in (None, service)}
    out: dict[str, Observation] = {}
    for service in sorted(services):
        labels = {"service": service}
        unseen = service not in ups and service not in beats
        # Why owns: a named service with no sample and no state belongs to no series, so the caller
        # decides which worker watches for its absence.
        if unseen and service not in with_state and not owns(rule, labels):
            continue
        age = None if service not in beats else now_ms / 1000.0 - beats[service]
        out[fingerprint(rule.name, labels)] = _heartbeat_observation(
            rule, labels, ups.get(service), age, unseen
        )
    return out


def _heartbeat_observation(
    rule: Rule, labels: dict[str, str], up: float | None, age: float | None, unseen: bool
) -> Observation:
    assert rule.heartbeat is not None
    absent_for = rule.heartbeat.absent_for
    absent = absent_for is not None and (unseen or (age is not None and age >= absent_for))
    if absent:
        # A service never heard from (e.g. right after the pipeline started) is absent only once it
        # has stayed silent for absent_for while being watched: it fires after that long, not at once.
        wait = absent_for or 0.0 if unseen else 0.0
        return Observation(labels, age, absent_for, LAST_HEARTBEAT, active=True, holding=True, wait_s=wait)
    unhealthy = rule.heartbeat.unhealthy and up is not None and up == 0
    return Observation(labels, up, 0.0, UP, active=unhealthy, holding=unhealthy)
