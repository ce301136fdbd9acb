"""Pure rule evaluation: (rules, snapshot, states, now) -> transitions and changed alert states.

Lifecycle of one alert instance (fingerprint):
- inactive/resolved -> pending when the condition becomes true and `for` > 0, -> firing directly when
  `for` is 0; pending -> firing once the condition has held for `for`; pending -> inactive when it turns
  false first (both changes are emitted as transitions, so an API can show pending alerts).
- firing -> resolved once the condition has been false continuously for `keep_firing_for`, counted from
  the first evaluation that saw it false. While firing, "false" uses `resolve_threshold` when the rule has
  one (hysteresis): e.g. firing at > 5% stays firing until the value is no longer > 4%.
- resolved -> pending/firing again on the next incident, with a new starts_at.

Flap damping: every firing time is remembered (at most FlapPolicy.max_fires of them, within
FlapPolicy.window_s). An incident that starts when the instance has fired max_fires times within
window_s (this firing included) is flapping: its firing transition carries the annotation
flapping="true", and it resolves only after the condition has been clear for
max(keep_firing_for, hold_s).

`evaluate` never mutates its inputs. It returns only new or changed states. An instance that drops
back to inactive is returned with state INACTIVE; `prunable` says when a caller may delete a state
(nothing in it still matters for flap damping).
States whose rule is not in the rule set are left alone; a caller reloading rules decides about them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import msgspec

from pipeline.durations import format_duration
from pipeline.records import AlertRecord, AlertStateRecord
from pipeline.rules.catalogue import Snapshot
from pipeline.rules.model import Rule, RuleSet
from pipeline.rules.observe import Observation, fingerprint, gone, observe
from pipeline.rules.templates import render

__all__ = ["AlertState", "FlapPolicy", "State", "Transition", "evaluate", "fingerprint", "prunable"]


class State(StrEnum):
    """The state of one alert instance."""

    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class FlapPolicy:
    """When an instance counts as flapping, and how long its resolve is then held."""

    window_s: float = 1800.0
    max_fires: int = 3
    hold_s: float = 600.0


DEFAULT_FLAP = FlapPolicy()


@dataclass
class AlertState:
    """The state of one alert instance, kept between evaluations."""

    fingerprint: str
    rule: str
    labels: dict[str, str]
    state: State
    active_since_ms: int | None = None  # condition first true (pending start)
    starts_at_ms: int | None = None  # firing start
    ends_at_ms: int | None = None  # resolve time
    last_true_ms: int | None = None
    value: float | None = None
    fired: list[int] = field(default_factory=list)  # recent firing times, for flap damping
    cleared_since_ms: int | None = None  # while firing: first evaluation that saw the condition false

    def to_dict(self) -> dict[str, Any]:
        """The stored form (`pipeline.records.AlertStateRecord`, same field names); None fields and an
        empty `fired` are left out, and so is a NaN value (not JSON)."""
        fields = asdict(self)
        fields["state"] = str(self.state)
        if self.value is not None and self.value != self.value:
            fields["value"] = None
        return AlertStateRecord(**fields).to_wire()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "alertstate") -> AlertState:
        """Rebuild a state from its stored form (any format this version reads)."""
        fields = msgspec.structs.asdict(AlertStateRecord.from_wire(data, where))
        fields["state"] = State(fields["state"])
        return cls(**fields)


def rfc3339(ms: int) -> str:
    """RFC 3339 UTC time with milliseconds, e.g. 2026-01-02T03:04:05.678Z."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Transition:
    """One state change of one alert instance, with everything a notification needs.

    starts_at_ms is when this incident began: the firing time for firing and resolved transitions,
    the pending start for pending ones and their return to inactive.
    """

    fingerprint: str
    rule: str
    state: State
    previous: State
    labels: dict[str, str]  # instance labels, rule labels, alertname and severity
    annotations: dict[str, str]
    severity: str
    value: float | None
    threshold: float | None
    metric: str
    service: str
    at_ms: int
    starts_at_ms: int | None
    ends_at_ms: int | None

    @property
    def id(self) -> str:
        """Stable id of this change, for dedup downstream."""
        return f"{self.fingerprint}:{self.starts_at_ms}:{self.state}"

    def to_alert(self) -> dict[str, Any]:
        """JSON for the alerts topic (`pipeline.records.AlertRecord`): the guide's Alert fields plus
        identity and lifecycle."""
        value = self.value if self.value is not None and self.value == self.value else None
        return AlertRecord(
            id=self.id,
            fingerprint=self.fingerprint,
            rule=self.rule,
            state=str(self.state),
            previous=str(self.previous),
            severity=self.severity,
            title=self.annotations.get("summary", self.rule),
            message=self.annotations.get("description", ""),
            metric=self.metric,
            currentValue=value,
            threshold=self.threshold,
            timestamp=rfc3339(self.at_ms),
            service=self.service,
            labels=dict(self.labels),
            annotations=dict(self.annotations),
            starts_at=None if self.starts_at_ms is None else rfc3339(self.starts_at_ms),
            ends_at=None if self.ends_at_ms is None else rfc3339(self.ends_at_ms),
        ).to_wire()


def _owns_all(rule: Rule, labels: Mapping[str, str]) -> bool:
    return True


def evaluate(
    rules: RuleSet,
    snapshot: Snapshot,
    states: Mapping[str, AlertState],
    now_ms: int,
    owns: Callable[[Rule, Mapping[str, str]], bool] | None = None,
    flapping: FlapPolicy = DEFAULT_FLAP,
) -> tuple[list[Transition], dict[str, AlertState]]:
    """Evaluate every rule at `now_ms`; return the transitions and the new or changed states."""
    by_rule: dict[str, dict[str, AlertState]] = {}
    for fp, state in states.items():
        by_rule.setdefault(state.rule, {})[fp] = state
    transitions: list[Transition] = []
    changed: dict[str, AlertState] = {}
    for rule in rules.rules:
        known = by_rule.get(rule.name, {})
        seen = observe(rule, snapshot, [s.labels for s in known.values()], owns or _owns_all, now_ms)
        for fp in sorted(set(seen) | set(known)):
            previous = known.get(fp)
            obs = seen.get(fp) or gone(rule, previous.labels if previous else {})
            new = _step(rule, fp, previous, obs, now_ms, flapping)
            if new == previous:
                continue
            changed[fp] = new
            before = previous.state if previous else State.INACTIVE
            if new.state != before:
                transitions.append(_transition(rule, previous, new, obs, now_ms, flapping))
    return transitions, changed


def _step(
    rule: Rule, fp: str, previous: AlertState | None, obs: Observation, now: int, policy: FlapPolicy
) -> AlertState:
    """Advance one instance by one evaluation; at most one state change happens."""
    if previous is None:
        state = AlertState(fp, rule.name, dict(obs.labels), State.INACTIVE)
    else:
        state = replace(previous, labels=dict(previous.labels), fired=list(previous.fired))
    if state.state in (State.INACTIVE, State.RESOLVED):
        if obs.active:
            state.state, state.active_since_ms, state.starts_at_ms, state.ends_at_ms = (
                State.PENDING,
                now,
                None,
                None,
            )
            _pending(rule, state, obs, now, policy)
    elif state.state == State.PENDING:
        if obs.active:
            _pending(rule, state, obs, now, policy)
        else:
            state.state, state.active_since_ms, state.value = State.INACTIVE, None, obs.value
    else:
        _firing(rule, state, obs, now, policy)
    return state


def _pending(rule: Rule, state: AlertState, obs: Observation, now: int, policy: FlapPolicy) -> None:
    state.last_true_ms, state.value = now, obs.value
    since = now if state.active_since_ms is None else state.active_since_ms
    if now - since >= max(rule.for_s, obs.wait_s) * 1000:
        state.state, state.starts_at_ms, state.cleared_since_ms = State.FIRING, now, None
        recent = [t for t in state.fired if t > now - policy.window_s * 1000]
        state.fired = [*recent, now][-policy.max_fires :]


def _firing(rule: Rule, state: AlertState, obs: Observation, now: int, policy: FlapPolicy) -> None:
    state.value = obs.value
    if obs.holding:
        state.last_true_ms, state.cleared_since_ms = now, None
        return
    if state.cleared_since_ms is None:
        state.cleared_since_ms = now
    hold_s = rule.keep_firing_for_s
    if is_flapping(state, policy):
        hold_s = max(hold_s, policy.hold_s)
    if now - state.cleared_since_ms >= hold_s * 1000:
        state.state, state.ends_at_ms, state.cleared_since_ms = State.RESOLVED, now, None


def alert_labels(rule: Rule, instance: Mapping[str, str]) -> dict[str, str]:
    """The labels of an alert: the instance's, the rule's own, then alertname and severity."""
    return {**instance, **rule.labels, "alertname": rule.name, "severity": rule.severity}


RESOLVED_PREFIX = "resolved_"
"""Annotations named `resolved_<key>` replace `<key>` in resolved transitions (and are not published)."""
DEFAULT_RESOLVED_SUMMARY = "{{ rule }} 해소: 현재 값 {{ value }}"
"""The summary of a resolved transition when the rule has no `resolved_summary`."""


def render_annotations(
    rule: Rule, obs: Observation, labels: Mapping[str, str], state: State = State.FIRING
) -> dict[str, str]:
    """The rule's annotations rendered for one observation, in the words of the transition's state.

    A resolved transition takes `resolved_summary` and `resolved_description` (any `resolved_<key>`)
    instead of `summary` and `description`; without its own, a resolve says so in a generic summary and
    drops the firing description (which would describe the problem as current).
    """
    values = {
        "value": obs.value,
        "threshold": obs.threshold,
        "rule": rule.name,
        "severity": rule.severity,
        "window": None if rule.window is None else format_duration(rule.window),
        "metric": obs.metric,
        "state": str(state),
    }
    texts = {k: v for k, v in rule.annotations.items() if not k.startswith(RESOLVED_PREFIX)}
    if state == State.RESOLVED:
        resolved = {
            k[len(RESOLVED_PREFIX) :]: v for k, v in rule.annotations.items() if k.startswith(RESOLVED_PREFIX)
        }
        texts.pop("description", None)
        texts["summary"] = DEFAULT_RESOLVED_SUMMARY
        texts.update(resolved)
    return {key: render(text, values, labels) for key, text in texts.items()}


def _transition(
    rule: Rule, previous: AlertState | None, new: AlertState, obs: Observation, now: int, policy: FlapPolicy
) -> Transition:
    labels = alert_labels(rule, new.labels)
    annotations = render_annotations(rule, obs, labels, new.state)
    if new.state == State.FIRING and is_flapping(new, policy):
        annotations["flapping"] = "true"
    if new.state in (State.FIRING, State.RESOLVED):
        starts = new.starts_at_ms
    elif new.state == State.PENDING:
        starts = new.active_since_ms
    else:
        starts = previous.active_since_ms if previous else None
    return Transition(
        fingerprint=new.fingerprint,
        rule=rule.name,
        state=new.state,
        previous=previous.state if previous else State.INACTIVE,
        labels=labels,
        annotations=annotations,
        severity=rule.severity,
        value=obs.value,
        threshold=obs.threshold,
        metric=obs.metric,
        service=rule.service or new.labels.get("service") or "o4o",
        at_ms=now,
        starts_at_ms=starts,
        ends_at_ms=new.ends_at_ms,
    )


def is_flapping(state: AlertState, policy: FlapPolicy) -> bool:
    """True when the incident that started at starts_at_ms began with max_fires firings in window_s."""
    if state.starts_at_ms is None:
        return False
    start = state.starts_at_ms
    return sum(1 for t in state.fired if start - policy.window_s * 1000 < t <= start) >= policy.max_fires


def prunable(state: AlertState, now_ms: int, flapping: FlapPolicy = DEFAULT_FLAP) -> bool:
    """True when a state may be deleted: inactive or resolved, with no firing recent enough to count."""
    if state.state not in (State.INACTIVE, State.RESOLVED):
        return False
    return all(t <= now_ms - flapping.window_s * 1000 for t in state.fired)
