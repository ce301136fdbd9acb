"""The evaluator's queue of transitions waiting for their context: order per alert, the 1 s bound, and
what a partial or failed read of the cluster says (agents.stages.evaluate.take_ready)."""

from __future__ import annotations

import asyncio
from typing import Any

from agents.cluster import ClusterSeries
from agents.stages.evaluate import (
    CONTEXT_BOUND_S,
    GATHER_TIMEOUT_S,
    TICK_SLACK_S,
    Outgoing,
    take_ready,
    unpublished,
)
from pipeline.rules.engine import AlertState, State
from pipeline.rules.model import Rule

RULE = Rule(name="high_error_rate", severity="critical", metric="o4o_error_ratio", window=300.0)
AT = 1_767_322_000_000
SERIES = [
    {"kind": "route", "labels": {"service": "api", "route": "/pay"}, "windows": {"5m": {"errors_5xx": 4}}},
    {"kind": "error_codes", "labels": {"error_code": "E1"}, "windows": {"5m": {"count": 3}}},
]


def alert(fp: str, state: str) -> dict[str, Any]:
    return {"fingerprint": fp, "state": state, "rule": RULE.name}


def waiting(task: asyncio.Future[ClusterSeries], fp: str = "a", deadline: float = 10.0) -> Outgoing:
    return Outgoing(fp, alert(fp, "firing"), RULE, {}, AT, deadline, task, "1h")


def names(items: list[Outgoing]) -> list[tuple[str, str]]:
    return [(i.fingerprint, i.alert["state"]) for i in items]


def test_the_bound_holds_with_a_tick_to_spare() -> None:
    assert GATHER_TIMEOUT_S < CONTEXT_BOUND_S - TICK_SLACK_S < CONTEXT_BOUND_S


def test_a_resolve_never_overtakes_its_firing_and_other_alerts_pass() -> None:
    async def run() -> None:
        task: asyncio.Future[ClusterSeries] = asyncio.get_running_loop().create_future()
        queue = [waiting(task), Outgoing("b", alert("b", "resolved")), Outgoing("a", alert("a", "resolved"))]
        ready, left = take_ready(queue, now=1.0)
        assert names(ready) == [("b", "resolved")]
        assert names(left) == [("a", "firing"), ("a", "resolved")]
        task.set_result(ClusterSeries(AT, SERIES, [{"url": "http://w1", "status": "ok"}], []))
        ready, left = take_ready(left, now=1.1)
        assert names(ready) == [("a", "firing"), ("a", "resolved")] and left == []
        context = ready[0].alert["context"]
        assert [r["name"] for r in context["sections"][0]["rows"]] == ["api /pay"]
        assert [(r["name"], r["count"]) for r in context["sections"][1]["rows"]] == [("E1", 3)]
        assert "partial" not in context and "context" not in ready[1].alert

    asyncio.run(run())


def test_a_missing_worker_makes_the_context_partial_and_names_it() -> None:
    async def run() -> None:
        task: asyncio.Future[ClusterSeries] = asyncio.get_running_loop().create_future()
        workers = [
            {"url": "http://w1:6066", "partitions": [0, 2], "status": "ok"},
            {
                "url": "http://w2:6066",
                "partitions": [1, 3],
                "status": "missing",
                "error": "no answer within 0.75 s",
            },
        ]
        task.set_result(ClusterSeries(AT, SERIES, workers, [1, 3]))
        (item,), left = take_ready([waiting(task)], now=0.0)
        assert left == []
        context = item.alert["context"]
        assert context["partial"] is True
        assert context["missing"] == [
            "http://w2:6066 (partitions 1, 3: no answer within 0.75 s)",
            "partitions 1, 3",
        ]
        assert context["sections"][0]["rows"][0]["count"] == 4  # what was read is still shown

    asyncio.run(run())


def test_past_the_deadline_it_leaves_without_the_series_and_says_so() -> None:
    async def run() -> None:
        task: asyncio.Future[ClusterSeries] = asyncio.get_running_loop().create_future()
        (item,), _ = take_ready([waiting(task, deadline=5.0)], now=5.0)
        assert task.cancelled()
        context = item.alert["context"]
        assert context["partial"] is True
        assert context["missing"] == ["the cluster view did not answer within 1 s"]
        assert all(not s.get("rows") for s in context["sections"])

    asyncio.run(run())


def test_a_failed_read_sends_the_alert_with_a_partial_context() -> None:
    async def run() -> None:
        task: asyncio.Future[ClusterSeries] = asyncio.get_running_loop().create_future()
        task.set_exception(RuntimeError("boom"))
        (item,), _ = take_ready([waiting(task)], now=0.0)
        assert item.alert["context"]["missing"] == ["the cluster view failed (RuntimeError('boom'))"]

    asyncio.run(run())


def test_a_firing_state_never_published_goes_back_to_pending_so_it_fires_again() -> None:
    """Found in CI: a firing transition queued for its context was dropped by a rebalance, and the
    reloaded state (firing, nothing published) kept the alert from ever being published."""
    aux = AlertState("fp", "r", {}, State.FIRING, active_since_ms=1_000, starts_at_ms=2_000)
    aux.fired = [500, 2_000]
    back = unpublished(aux)
    assert (back.state, back.active_since_ms, back.starts_at_ms) == (State.PENDING, 1_000, None)
    assert back.fired == [500]
    pending = AlertState("fp", "r", {}, State.PENDING, active_since_ms=1_000)
    assert unpublished(pending) is pending
