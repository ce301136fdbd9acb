"""Properties of the alert lifecycle over random condition sequences, random `for`, `keep_firing_for`,
hysteresis, flap policies and tick spacing:

1. a condition held for less than `for` never fires (and one held for `for` is firing by then);
2. a firing alert resolves exactly when its condition has been clear for keep_firing_for, or for
   max(keep_firing_for, hold_s) when the incident is flapping;
3. one fingerprint never fires twice without a resolve in between;
plus: evaluate is deterministic and does not mutate its inputs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.rules import AlertState, FlapPolicy, Rule, RuleSet, Snapshot, State, Transition, evaluate

THRESHOLD = 0.05
VALUES = st.one_of(st.none(), st.sampled_from([0.0, 0.03, 0.04, 0.045, 0.05, 0.051, 0.06, 0.2]))


@dataclass(frozen=True)
class Scenario:
    rule: Rule
    policy: FlapPolicy
    ticks: list[tuple[int, float | None]]  # (time ms, value; None = no sample)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    rule = Rule(
        name="r",
        severity="high",
        metric="o4o_error_ratio",
        window=300.0,
        op=">",
        threshold=THRESHOLD,
        resolve_threshold=draw(st.sampled_from([None, 0.04, 0.05])),
        for_s=draw(st.sampled_from([0.0, 15.0, 30.0, 60.0, 300.0])),
        keep_firing_for_s=draw(st.sampled_from([0.0, 15.0, 45.0, 60.0, 200.0])),
    )
    policy = FlapPolicy(
        window_s=draw(st.sampled_from([60.0, 600.0, 1800.0])),
        max_fires=draw(st.integers(2, 4)),
        hold_s=draw(st.sampled_from([0.0, 30.0, 300.0])),
    )
    # Values come in runs, as conditions do; ticks are mostly one steady interval, as rule ticks are,
    # with some arbitrary gaps (a slow worker, a rebalance).
    runs = draw(st.lists(st.tuples(VALUES, st.integers(1, 40)), min_size=1, max_size=12))
    values = [value for value, count in runs for _ in range(count)][:150]
    interval = draw(st.sampled_from([1000, 5000, 7000, 15_000]))
    step = st.one_of(st.just(interval), st.just(interval), st.just(interval), st.integers(1, 90_000))
    steps = draw(st.lists(step, min_size=len(values), max_size=len(values)))
    times = [sum(steps[: i + 1]) for i in range(len(steps))]
    return Scenario(rule, policy, list(zip(times, values, strict=True)))


def snapshot(value: float | None) -> Snapshot:
    return Snapshot({} if value is None else {"o4o_error_ratio": [({"window": "5m"}, value)]})


@dataclass
class Tick:
    at: int
    active: bool
    holding: bool
    before: State
    after: State
    transitions: list[Transition] = field(default_factory=list)


def run(scenario: Scenario) -> list[Tick]:
    rules = RuleSet((scenario.rule,), "test")
    resolve = scenario.rule.resolve_threshold or THRESHOLD
    states: dict[str, AlertState] = {}
    ticks = []
    for at, value in scenario.ticks:
        before = next(iter(states.values())).state if states else State.INACTIVE
        transitions, changed = evaluate(rules, snapshot(value), states, at, flapping=scenario.policy)
        states.update(changed)
        after = next(iter(states.values())).state if states else State.INACTIVE
        active = value is not None and value > THRESHOLD
        holding = value is not None and value > resolve
        ticks.append(Tick(at, active, holding, before, after, transitions))
    return ticks


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_a_condition_shorter_than_for_never_fires(scenario: Scenario) -> None:
    for_ms = scenario.rule.for_s * 1000
    run_start: int | None = None
    for tick in run(scenario):
        run_start = (tick.at if run_start is None else run_start) if tick.active else None
        fired = any(t.state == State.FIRING for t in tick.transitions)
        if fired:
            assert run_start is not None and tick.at - run_start >= for_ms
        if run_start is not None and tick.at - run_start >= for_ms:
            assert tick.after == State.FIRING


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_firing_resolves_once_clear_for_keep_firing_for_or_the_flap_hold(scenario: Scenario) -> None:
    rule, policy = scenario.rule, scenario.policy
    fires: list[int] = []
    hold_ms = 0.0
    clear_since: int | None = None
    for tick in run(scenario):
        for t in tick.transitions:
            if t.state == State.FIRING:
                fires.append(t.at_ms)
                recent = [f for f in fires if f > t.at_ms - policy.window_s * 1000]
                flapping = len(recent) >= policy.max_fires
                assert (t.annotations.get("flapping") == "true") == flapping
                hold = max(rule.keep_firing_for_s, policy.hold_s) if flapping else rule.keep_firing_for_s
                hold_ms, clear_since = hold * 1000, None
        resolved = any(t.state == State.RESOLVED for t in tick.transitions)
        if tick.before != State.FIRING:
            assert not resolved
            continue
        clear_since = None if tick.holding else (tick.at if clear_since is None else clear_since)
        assert resolved == (clear_since is not None and tick.at - clear_since >= hold_ms)


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_never_fires_twice_without_a_resolve_between(scenario: Scenario) -> None:
    previous = State.INACTIVE
    fired_open = False
    for tick in run(scenario):
        assert len(tick.transitions) <= 1
        for t in tick.transitions:
            assert t.previous == previous and t.state != previous
            if t.state == State.FIRING:
                assert not fired_open
                fired_open = True
            elif t.state == State.RESOLVED:
                assert fired_open
                fired_open = False
            previous = t.state
        assert tick.after == previous


@settings(max_examples=150, deadline=None)
@given(scenarios(), st.lists(VALUES, min_size=1, max_size=5))
def test_evaluate_is_deterministic_and_pure(scenario: Scenario, probes: list[float | None]) -> None:
    rules = RuleSet((scenario.rule,), "test")
    states: dict[str, AlertState] = {}
    for at, value in scenario.ticks:
        _, changed = evaluate(rules, snapshot(value), states, at, flapping=scenario.policy)
        states.update(changed)
    at = scenario.ticks[-1][0]
    for i, value in enumerate(probes):
        snap = snapshot(value)
        frozen_states, frozen_samples = copy.deepcopy(states), copy.deepcopy(snap.samples)
        first = evaluate(rules, snap, states, at + i + 1, flapping=scenario.policy)
        second = evaluate(rules, snap, copy.deepcopy(states), at + i + 1, flapping=scenario.policy)
        assert first == second
        assert states == frozen_states and snap.samples == frozen_samples
