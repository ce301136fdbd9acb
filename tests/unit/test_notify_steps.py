"""Each step of the notification pipeline on its own (pipeline.alerting.steps), then their order."""

from __future__ import annotations

from typing import Any

from pipeline.alerting.group import Entry, build_groups, incident
from pipeline.alerting.silence import Silence
from pipeline.alerting.steps import any_of, dedup, inhibit, plan, silence, time_active, wait
from pipeline.config.settings import InhibitConfig, NotifyConfig
from tests.unit.test_routing import DEFAULTS, T0, alert


def never(_: Any) -> bool:
    return False


def group_of(*alerts: dict[str, Any]) -> Any:
    return next(g for g in build_groups(DEFAULTS, list(alerts)).values() if g.match.receiver == "slack")


def test_time_active_holds_low_alerts_outside_business_hours_only() -> None:
    evening = T0 + 9 * 3600 * 1000  # Thursday 20:00 in Seoul
    low = group_of(alert("disk", "low", start=evening))
    assert not time_active(DEFAULTS, low.match, evening)
    assert time_active(DEFAULTS, low.match, T0 + 86_400_000)  # Friday 11:00
    critical = group_of(alert("down", "critical", start=evening))
    assert time_active(DEFAULTS, critical.match, evening)  # no interval: always


def test_inhibit_mutes_a_target_while_its_source_fires_and_never_the_source_itself() -> None:
    rules = [InhibitConfig(source_matchers={"alertname": "down"}, target_matchers={"severity": "high"})]
    source = alert("down", "critical")
    target = alert("slow", "high")
    muted = inhibit(rules, [source["labels"]])
    assert muted(target) and not muted(source)
    assert not inhibit(rules, [])(target)


def test_silence_mutes_matching_alerts_only_while_in_force() -> None:
    quiet = Silence("s1", {"alertname": "slow"}, T0, T0 + 60_000, "ops", "deploy")
    assert silence([quiet], T0)(alert("slow", "high"))
    assert not silence([quiet], T0)(alert("down", "critical"))
    assert not silence([quiet], T0 + 60_000)(alert("slow", "high"))


def test_any_of_mutes_what_any_step_mutes() -> None:
    def yes(_: Any) -> bool:
        return True

    assert any_of(never, yes)(alert("a", "low")) and not any_of(never, never)(alert("a", "low"))


def test_dedup_says_first_changed_repeat_and_resolved_against_the_ledger() -> None:
    a = alert("err", "critical", route="/a")
    b = alert("err", "critical", route="/b")
    one = group_of(a)
    first = dedup(one, None, never, True)
    assert first is not None and (first.status, first.reason) == ("firing", "first")
    announced = Entry("firing", first.incidents, T0)
    repeat = dedup(one, announced, never, True)
    assert repeat is not None and repeat.reason == "repeat"
    changed = dedup(group_of(a, b), announced, never, True)
    assert changed is not None and changed.reason == "changed" and len(changed.incidents) == 2
    ended = group_of({**a, "state": "resolved"})
    resolved = dedup(ended, announced, never, True)
    assert resolved is not None and (resolved.status, resolved.incidents) == ("resolved", ())
    assert dedup(ended, announced, never, False) is None  # the receiver sends no resolves
    assert dedup(ended, Entry("resolved", (), T0), never, True) is None  # said already
    assert dedup(ended, None, never, True) is None  # never announced: nothing to resolve


def test_dedup_leaves_muted_alerts_out() -> None:
    a = alert("err", "critical")
    assert dedup(group_of(a), None, lambda x: True, True) is None
    muted_then_unmuted = dedup(group_of(a), Entry("resolved", (), T0), never, True)
    assert muted_then_unmuted is not None and muted_then_unmuted.incidents == (incident(a),)


def test_wait_applies_the_timing_of_each_reason() -> None:
    group = group_of(alert("err", "critical"))
    match = group.match
    wait_ms, interval_ms = int(match.group_wait * 1000), int(match.group_interval * 1000)
    first = dedup(group, None, never, True)
    assert first is not None
    assert not wait(match, first, None, T0 + wait_ms - 1) and wait(match, first, None, T0 + wait_ms)
    # After a resolve, a new first message also waits group_interval.
    after_resolve = Entry("resolved", (), T0 + wait_ms)
    assert not wait(match, first, after_resolve, T0 + wait_ms + interval_ms - 1)
    assert wait(match, first, after_resolve, T0 + wait_ms + interval_ms)
    sent = Entry("firing", first.incidents, T0)
    repeat = dedup(group, sent, never, True)
    assert repeat is not None and repeat.reason == "repeat"
    repeat_ms = int(match.repeat_interval * 1000)
    assert not wait(match, repeat, sent, T0 + repeat_ms - 1) and wait(match, repeat, sent, T0 + repeat_ms)


def test_plan_runs_the_steps_in_order_and_time_active_holds_what_is_due() -> None:
    evening = T0 + 9 * 3600 * 1000
    low = group_of(alert("disk", "low", start=evening))
    due = dedup(low, None, never, True)
    assert due is not None and wait(low.match, due, None, evening + 3_600_000)
    assert plan(DEFAULTS, low, None, evening + 3_600_000, never, True) is None  # held, not dropped
    assert plan(NotifyConfig(), low, None, T0 + 86_400_000, never, True) == due
