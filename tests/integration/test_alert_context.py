"""Alert context on a real broker: an error spike on two routes with two error codes fires an alert that
names exactly those routes and codes with their counts, on one worker and then on three (where the
routes and codes live on other workers than the rule, and the context is read through the cluster view).

One deployment: phase 1 runs on one worker (everything is local); `add_workers(2)` makes three, and a
second, bigger spike on the same routes fires a second rule whose context sums both spikes (both are in
its 5 minute window).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from pipeline.state.series import owner, series_key
from tests.support.cluster import Cluster, Worker
from tests.support.kafka import TopicTail
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

RULES = """
rules:
  - name: errors_above_10pct
    metric: o4o_error_ratio
    window: 5m
    op: ">"
    threshold: 10%
    for: 3s
    severity: high
  - name: errors_above_50pct
    metric: o4o_error_ratio
    window: 5m
    op: ">"
    threshold: 50%
    for: 3s
    severity: critical
"""
"""`for: 3s`: the condition turns true at the first figures of a spike; by the time it fires, every event
of the spike is counted (the context is read at the moment it fires)."""

PAY, ORDERS, CART = "/api/payments", "/api/orders/:id", "/api/cart"
CONTRIBUTORS = [
    ("route", "shop", PAY),
    ("route", "shop", ORDERS),
    ("error_codes", "PAYMENT_TIMEOUT"),
    ("error_codes", "DB_DOWN"),
]


def requests(route: str, status: int, count: int, now_ms: int) -> list[tuple[str, dict[str, Any]]]:
    event = {"ts": now_ms, "service": "shop", "method": "POST", "route": route, "status_code": status}
    return [("request", {**event, "duration_ms": 20.0 + i % 7}) for i in range(count)]


def errors(route: str, code: str, count: int, now_ms: int) -> list[tuple[str, dict[str, Any]]]:
    event = {
        "ts": now_ms,
        "service": "shop",
        "route": route,
        "error_code": code,
        "message": "upstream failed",
    }
    return [("error", event)] * count


def spike(cluster: Cluster, pay_5xx: int, orders_5xx: int, ok: int, timeouts: int, db_down: int) -> None:
    now = int(time.time() * 1000)
    cluster.publish_events(
        [
            *requests(CART, 200, ok, now),
            *requests(PAY, 503, pay_5xx, now),
            *requests(ORDERS, 500, orders_5xx, now),
            *errors(PAY, "PAYMENT_TIMEOUT", timeouts, now),
            *errors(ORDERS, "DB_DOWN", db_down, now),
        ],
        envelope=50,
    )


def fired(tail: TopicTail, rule: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = wait_until(
        lambda: [a for _, a in tail.records if a["rule"] == rule and a["state"] == "firing"],
        60,
        f"the firing transition of {rule} (its firing transitions)",
        interval=0.1,
    )
    return found[0]


def rows(context: dict[str, Any], section: str) -> list[tuple[str, int, float]]:
    (found,) = [s for s in context["sections"] if s["name"] == section]
    assert found.get("more", 0) == 0, found
    return [(r["name"], r["count"], round(r["share"], 4)) for r in found["rows"]]


def check(alert: dict[str, Any], pay: int, orders: int, timeouts: int, db_down: int) -> None:
    context = alert["context"]
    assert (context["kind"], context["window"], context.get("partial", False)) == ("errors", "5m", False), (
        context
    )
    total, codes = pay + orders, timeouts + db_down
    assert rows(context, "routes_5xx") == [
        (f"shop {PAY}", pay, round(pay / total, 4)),
        (f"shop {ORDERS}", orders, round(orders / total, 4)),
    ]
    assert rows(context, "error_codes") == [
        ("PAYMENT_TIMEOUT", timeouts, round(timeouts / codes, 4)),
        ("DB_DOWN", db_down, round(db_down / codes, 4)),
    ]


def active(worker: Worker, rule: str) -> list[dict[str, Any]]:
    alerts = httpx.get(f"{worker.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    return [a for a in alerts if a["rule"] == rule and a["state"] == "firing"]


def test_error_spike_context_names_the_routes_and_codes_on_one_worker_and_on_three(cluster: Cluster) -> None:
    cluster.use_rules(RULES)
    cluster.extra_env["PULSE_RULES_INTERVAL"] = "0.5s"
    first = cluster.add_worker()
    tail = TopicTail(cluster.bootstrap, cluster.alerts_topic)
    try:
        # Phase 1, one worker: 30 of 100 requests fail (30%: above 10%, below 50%).
        spike(cluster, pay_5xx=20, orders_5xx=10, ok=70, timeouts=15, db_down=7)
        alert = fired(tail, "errors_above_10pct")
        check(alert, pay=20, orders=10, timeouts=15, db_down=7)
        shown = wait_until(lambda: active(first, "errors_above_10pct"), 30, "the alert in /api/v1/alerts")
        assert shown[0]["context"] == alert["context"]

        # Phase 2, three workers: 160 more failures of 160 more requests (190 of 260: above 50%).
        cluster.add_workers(2)
        spike(cluster, pay_5xx=100, orders_5xx=60, ok=0, timeouts=40, db_down=25)
        alert = fired(tail, "errors_above_50pct")
        check(alert, pay=120, orders=70, timeouts=55, db_down=32)
        # The rule is evaluated where the global series lives; the routes and codes live on all four
        # partitions, so some of them on the other two workers: only the cluster view has them all.
        owners = {w.name: set(w.get("/api/v1/series")["partitions"]) for w in cluster.workers}
        contributors = {owner(series_key(*k), cluster.partitions) for k in CONTRIBUTORS}
        rule_worker = [
            n for n, parts in owners.items() if owner(series_key("requests"), cluster.partitions) in parts
        ]
        assert len(rule_worker) == 1 and contributors - owners[rule_worker[0]], owners
        shown = wait_until(
            lambda: active(cluster.workers[2], "errors_above_50pct"), 30, "the alert in the API"
        )
        assert shown[0]["context"] == alert["context"]
    finally:
        tail.close()
