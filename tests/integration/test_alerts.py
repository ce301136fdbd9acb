"""Rules on a real broker: alert latency, one firing change per incident across SIGKILL, the API."""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.support.cluster import Cluster
from tests.support.kafka import TopicTail, values
from tests.support.metrics import by_label
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

ROUTE_RULES = """
rules:
  - name: route_failing
    metric: o4o_route_error_ratio
    window: 1m
    op: ">"
    threshold: 50%
    severity: high
    annotations:
      summary: "{{ labels.route }} fails: {{ value | percent }}"
"""


def failing_requests(route: str, count: int, now_ms: int) -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            "request",
            {
                "ts": now_ms,
                "service": "api",
                "method": "GET",
                "route": route,
                "status_code": 503,
                "duration_ms": 12.5,
            },
        )
        for _ in range(count)
    ]


def firing(alerts: list[dict[str, Any]], rule: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a["rule"] == rule and a["state"] == "firing"]


def test_alert_reaches_the_topic_within_a_tick_and_a_second(cluster: Cluster) -> None:
    interval = 1.0
    cluster.use_rules(ROUTE_RULES)
    cluster.extra_env["PULSE_RULES_INTERVAL"] = f"{interval}s"
    cluster.add_worker()
    tail = TopicTail(cluster.bootstrap, cluster.alerts_topic)
    try:
        latencies = []
        for i in range(3):
            route = f"/api/r{i}"
            sent = time.time()
            cluster.publish_events(failing_requests(route, 5, int(sent * 1000)))
            alert = wait_until(
                lambda route=route: [
                    a for a in firing(tail.values(), "route_failing") if a["labels"]["route"] == route
                ],
                15,
                f"the firing alert of {route}",
                interval=0.02,
            )[0]
            produced = next(t for t, a in tail.records if a["id"] == alert["id"])
            latencies.append(produced - sent)
            assert alert["severity"] == "high"
            assert alert["currentValue"] == 1.0
            assert alert["threshold"] == 0.5
            assert alert["title"] == f"{route} fails: 100%"
        print(f"\n[alert latency] rule interval {interval}s: {[round(x, 3) for x in latencies]} s")
        assert max(latencies) <= interval + 1.0, latencies
    finally:
        tail.close()


def test_one_firing_change_per_incident_across_sigkill(cluster: Cluster) -> None:
    cluster.partitions = 4
    cluster.use_rules(ROUTE_RULES)
    cluster.extra_env["PULSE_RULES_INTERVAL"] = "0.5s"
    victim, _ = cluster.add_workers(2)
    tail = TopicTail(cluster.bootstrap, cluster.alerts_topic)
    rng = random.Random(7)
    routes = [f"/api/incident/{i}" for i in range(24)]
    try:
        kills = 0
        for i, route in enumerate(routes):
            cluster.publish_events(failing_requests(route, 3, int(time.time() * 1000)))
            time.sleep(rng.uniform(0.05, 0.3))  # paces the incidents, so that the kills fall among them
            if i in (6, 14):
                victim.kill()
                kills += 1
                time.sleep(rng.uniform(0.0, 0.5))  # a random moment for the restart
                victim.start()
        wait_until(
            lambda: {a["labels"]["route"] for a in firing(tail.values(), "route_failing")},
            60,
            "a firing alert for every route (routes that fired)",
            until=lambda fired: fired >= set(routes),
        )
        # A duplicate would come from a replay right after recovery: once the workers have read every
        # input and partial to its end offset and evaluated their rules on the final figures, the
        # alerts topic read to its end offsets holds every firing change there will be.
        victim.wait_healthy()
        cluster.wait_quiet()
        cluster.wait_evaluated()
        per_route = Counter(
            a["labels"]["route"] for a in firing(values(cluster.read(cluster.alerts_topic)), "route_failing")
        )
        expected = {route: 3.0 for route in routes}
        wait_until(
            lambda: by_label(cluster.summed_metrics(), "http_requests_total", "route"),
            30,
            "each route's 3 requests counted once, none lost or counted twice (requests per route)",
            until=lambda counted: counted == expected,
        )
        assert set(routes) - set(per_route) == set(), "incidents without a firing alert"
        assert kills == 2
        assert {r: n for r, n in per_route.items() if n != 1} == {}
        assert set(per_route) == set(routes)
    finally:
        tail.close()


def test_alerts_api_answers_the_same_from_every_worker(cluster: Cluster) -> None:
    """The built-in payment_system_down: an unhealthy payment heartbeat fires, a healthy one resolves."""
    cluster.extra_env["PULSE_RULES_INTERVAL"] = "0.5s"
    workers = cluster.add_workers(2)

    def heartbeat(status: str) -> None:
        event = {"ts": int(time.time() * 1000), "service": "payment", "status": status}
        cluster.publish_events([("heartbeat", event)])

    heartbeat("unhealthy")

    def active(worker_url: str) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = httpx.get(f"{worker_url}/api/v1/alerts", timeout=5).json()["data"][
            "alerts"
        ]
        # (before the first heartbeat, payment is pending as possibly absent: wait for firing)
        return [a for a in alerts if a["rule"] == "payment_system_down" and a["state"] == "firing"]

    for worker in workers:
        found = wait_until(lambda w=worker: active(w.url), 30, "payment_system_down active")
        assert found[0]["state"] == "firing"
        assert found[0]["severity"] == "critical"
        assert found[0]["service"] == "payment"
    heartbeat("healthy")
    for worker in workers:
        wait_until(
            lambda w=worker: active(w.url), 30, "payment_system_down resolved (active)", until=lambda a: not a
        )

    def history(worker_url: str, **params: str) -> list[tuple[str, str, str]]:
        reply = httpx.get(f"{worker_url}/api/v1/alerts/history", params=params, timeout=5).json()
        return [(a["rule"], a["state"], a["id"]) for a in reply["data"]["alerts"]]

    answers = [history(w.url, rule="payment_system_down") for w in workers]
    assert answers[0] == answers[1]
    states = [state for _, state, _ in answers[0]]
    assert states[:2] == ["resolved", "firing"] and set(states[2:]) <= {"pending"}, states
    assert history(workers[0].url, severity="low") == []
    assert history(workers[1].url, severity="critical", state="firing") == answers[0][1:2]
    bad = httpx.get(f"{workers[0].url}/api/v1/alerts/history", params={"since": "yesterday"}, timeout=5)
    assert bad.status_code == 400
    rules = httpx.get(f"{workers[1].url}/api/v1/rules", timeout=5).json()["data"]["rules"]
    assert {r["name"] for r in rules} == {
        "high_error_rate",
        "payment_system_down",
        "slow_response_time",
        "low_stock_critical",
    }
