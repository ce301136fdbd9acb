"""Alert context (pipeline.alerting.context): which rules carry which context, and its figures."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.alerting.context import (
    TOP_ROUTES,
    AlertContext,
    context_for,
    rule_kind,
    series_kinds,
    summary,
    table,
)
from pipeline.records import AlertRecord
from pipeline.rules.model import Heartbeat, Matcher, Rule

AT = 1_764_500_000_000


def route(
    service: str, path: str, n: int, e5: int, p95: float | None = None, window: str = "5m"
) -> dict[str, Any]:
    """A route series entry as /api/v1/series gives it (only the figures the context reads)."""
    figures = {
        "count": n,
        "errors_5xx": e5,
        "error_ratio": e5 / n if n else None,
        "p95_ms": p95,
        "p99_ms": p95,
    }
    return {"kind": "route", "labels": {"service": service, "route": path}, "windows": {window: figures}}


def code(name: str, n: int, window: str = "5m") -> dict[str, Any]:
    return {"kind": "error_codes", "labels": {"error_code": name}, "windows": {window: {"count": n}}}


def payments(status: str, method: str, n: int, amount: float) -> dict[str, Any]:
    labels = {"status": status, "payment_method": method}
    return {"kind": "payments", "labels": labels, "windows": {"5m": {"count": n, "amount": amount}}}


def orders(status: str, role: str, n: int, amount: float) -> dict[str, Any]:
    labels = {"status": status, "user_role": role}
    return {"kind": "orders", "labels": labels, "windows": {"5m": {"count": n, "amount": amount}}}


def windowed(metric: str, **kw: Any) -> Rule:
    """A rule of `metric` over 5 minutes."""
    return Rule(name="r", severity="high", metric=metric, window=300.0, **kw)


ERROR_RULE = Rule(name="high_error_rate", severity="critical", metric="o4o_error_ratio", window=300.0)
SPIKE = [
    route("api", "/api/pay", 100, 40),
    route("api", "/api/orders", 200, 20),
    route("api", "/api/cart", 50, 0),
    route("web", "/", 10, 0),
    code("PAYMENT_TIMEOUT", 45),
    code("DB_DOWN", 15),
]


def test_error_rule_names_the_routes_and_codes_with_counts_and_shares() -> None:
    context = context_for(ERROR_RULE, {}, SPIKE, AT, "5m")
    assert context is not None
    assert (context.kind, context.window, context.at_ms, context.partial) == ("errors", "5m", AT, False)
    routes, codes = context.sections
    assert [(r.name, r.count, r.share, r.value) for r in routes.rows] == [
        ("api /api/pay", 40, 40 / 60, 0.4),
        ("api /api/orders", 20, 20 / 60, 0.1),
    ]
    assert (routes.total, routes.more) == (60, 0)
    assert routes.rows[0].labels == {"service": "api", "route": "/api/pay"}
    assert [(r.name, r.count, r.share) for r in codes.rows] == [
        ("PAYMENT_TIMEOUT", 45, 0.75),
        ("DB_DOWN", 15, 0.25),
    ]
    assert summary(context) == (
        "Routes with the most 5xx: api /api/pay 40 (66.7%), api /api/orders 20 (33.3%)\n"
        "Most frequent error codes: PAYMENT_TIMEOUT 45 (75.0%), DB_DOWN 15 (25.0%)"
    )
    assert table(routes) == [
        ["name", "count", "share", "5xx ratio"],
        ["api /api/pay", "40", "66.7%", "40.0%"],
        ["api /api/orders", "20", "33.3%", "10.0%"],
    ]


def test_top_three_routes_ties_by_name_and_and_n_more() -> None:
    entries = [route("api", f"/r{i}", 100, 10) for i in (5, 3, 4, 1, 2)] + [code(c, 1) for c in "EDCBA"]
    context = context_for(ERROR_RULE, {}, entries, AT, "5m")
    assert context is not None
    routes, codes = context.sections
    assert [r.name for r in routes.rows] == ["api /r1", "api /r2", "api /r3"]
    assert (routes.more, routes.total) == (2, 50)
    assert [r.name for r in codes.rows] == ["A", "B", "C"]
    assert codes.more == 2
    assert "and 2 more" in summary(context)


def test_a_per_route_rule_shows_its_route_and_honours_where() -> None:
    rule = windowed("o4o_route_error_ratio", where=(Matcher("service", "=", "api"),), by=("route",))
    context = context_for(
        rule, {"route": "/api/orders"}, [*SPIKE, route("web", "/api/orders", 9, 9)], AT, "5m"
    )
    assert context is not None
    assert [(r.name, r.count, r.share) for r in context.sections[0].rows] == [("api /api/orders", 20, 1.0)]


def test_latency_rule_lists_the_slowest_routes_at_its_quantile() -> None:
    rule = Rule(name="slow", severity="high", metric="o4o_response_time_seconds", window=60.0, quantile=0.99)
    entries = [
        route("api", "/a", 10, 0, 300.0, "1m"),
        route("api", "/b", 10, 0, 2500.0, "1m"),
        route("api", "/c", 10, 0, 900.0, "1m"),
        route("api", "/d", 10, 0, 2500.0, "1m"),
        route("api", "/quiet", 0, 0, None, "1m"),
    ]
    context = context_for(rule, {}, entries, AT, "5m")
    assert context is not None
    (slowest,) = context.sections
    assert (slowest.title, slowest.value, context.window) == ("Slowest routes (p99)", "p99_ms", "1m")
    assert [(r.name, r.value) for r in slowest.rows] == [
        ("api /b", 2500.0),
        ("api /d", 2500.0),
        ("api /c", 900.0),
    ]
    assert slowest.more == 1
    assert table(slowest)[1] == ["api /b", "10", "", "2,500 ms"]


def test_stock_rule_lists_the_first_ten_ids_and_how_many_more() -> None:
    rule = Rule(name="stock", severity="high", metric="o4o_out_of_stock_products", op=">", threshold=10)
    first = [str(i) for i in range(1, 11)]
    inventory = {
        "kind": "inventory",
        "labels": {},
        "stock": {"out_of_stock": 14, "out_of_stock_first": first},
    }
    context = context_for(rule, {}, [inventory], AT, "5m")
    assert context is not None
    (section,) = context.sections
    assert [r.name for r in section.rows] == first
    assert (section.more, section.total, context.window) == (4, 14, None)
    assert summary(context).endswith("9, 10, and 4 more")


def test_revenue_rule_splits_confirmed_orders_by_payment_method_and_role() -> None:
    rule = Rule(name="revenue_drop", severity="high", metric="o4o_revenue", window=300.0, op="<", threshold=1)
    entries = [
        payments("confirmed", "card", 6, 600.0),
        payments("confirmed", "bank_transfer", 2, 100.0),
        payments("cancelled", "card", 50, 5000.0),
        orders("confirmed", "customer", 7, 650.0),
        orders("confirmed", "business", 1, 50.0),
        orders("created", "customer", 99, 1.0),
    ]
    context = context_for(rule, {}, entries, AT, "5m")
    assert context is not None
    by_method, by_role = context.sections
    assert [(r.name, r.count, r.share, r.value) for r in by_method.rows] == [
        ("card", 6, 0.75, 600.0),
        ("bank_transfer", 2, 0.25, 100.0),
    ]
    assert [(r.name, r.count) for r in by_role.rows] == [("customer", 7), ("business", 1)]


def test_order_count_rule_takes_the_status_from_where() -> None:
    rule = windowed("o4o_order_count", where=(Matcher("status", "=", "cancelled"),))
    context = context_for(
        rule, {}, [payments("cancelled", "card", 50, 5.0), payments("confirmed", "card", 5, 1.0)], AT, "5m"
    )
    assert context is not None
    assert [(r.name, r.count) for r in context.sections[0].rows] == [("card", 50)]


def test_windowless_rules_use_the_default_window_and_other_rules_get_none() -> None:
    total = Rule(name="revenue_total", severity="low", metric="revenue_total", op="<", threshold=1)
    context = context_for(total, {}, [payments("confirmed", "card", 1, 1.0)], AT, "1h")
    assert context is not None and context.window == "1h"
    heartbeat = Rule(name="hb", severity="critical", heartbeat=Heartbeat(service="payment", unhealthy=True))
    gauge = Rule(name="pool", severity="low", metric="o4o_db_pool_in_use", op=">", threshold=1)
    for rule in (
        heartbeat,
        gauge,
        Rule(name="users", severity="low", metric="o4o_active_users", window=60.0),
    ):
        assert rule_kind(rule) is None
        assert series_kinds(rule) == frozenset()
        assert context_for(rule, {}, SPIKE, AT, "5m") is None
    assert series_kinds(ERROR_RULE) == frozenset({"route", "error_codes"})


def test_partial_context_says_what_is_missing_and_round_trips() -> None:
    context = context_for(ERROR_RULE, {}, SPIKE, AT, "5m", missing=["http://worker-2:6066 (partitions 1, 4)"])
    assert context is not None and context.partial
    assert summary(context).endswith("partial: not read in time from http://worker-2:6066 (partitions 1, 4)")
    assert AlertContext.from_dict(context.to_dict()) == context
    assert "partial" not in context_for(ERROR_RULE, {}, SPIKE, AT, "5m").to_dict()  # type: ignore[union-attr]


routes_st = st.lists(
    st.tuples(st.sampled_from(["api", "web"]), st.text(min_size=1, max_size=6), st.integers(0, 50)),
    max_size=12,
    unique_by=lambda t: (t[0], t[1]),
)


@settings(max_examples=200, deadline=None)
@given(routes_st, st.randoms(use_true_random=False))
def test_property_top_routes_bounded_shares_add_up_order_is_total(
    spec: list[tuple[str, str, int]], rnd: random.Random
) -> None:
    entries = [route(service, path, 100, e5) for service, path, e5 in spec]
    context = context_for(ERROR_RULE, {}, entries, AT, "5m")
    assert context is not None
    section = context.sections[0]
    nonzero = [e5 for _, _, e5 in spec if e5]
    assert len(section.rows) == min(TOP_ROUTES, len(nonzero))
    assert len(section.rows) + section.more == len(nonzero)
    assert section.total == sum(nonzero)
    counts = [r.count or 0 for r in section.rows]
    assert counts == sorted(nonzero, reverse=True)[: len(counts)]
    shares = sum(r.share or 0 for r in section.rows)
    assert shares <= 1 + 1e-9
    if not section.more and nonzero:
        assert abs(shares - 1) < 1e-9
    shuffled = list(entries)
    rnd.shuffle(shuffled)
    assert context_for(ERROR_RULE, {}, shuffled, AT, "5m") == context  # input order does not matter


def test_the_alert_record_carries_the_context_and_reads_records_without_it() -> None:
    from tests.unit.test_records import ALERT_V1

    context = context_for(ERROR_RULE, {}, SPIKE, AT, "5m")
    assert context is not None
    stored = {**ALERT_V1, "context": context.to_dict(), "V": 2}
    assert AlertRecord.from_wire(stored).context == context.to_dict()
    assert AlertRecord.from_wire(stored).to_wire() == stored
    assert AlertRecord.from_wire(ALERT_V1).context is None
    assert "context" not in AlertRecord.from_wire(ALERT_V1).to_wire()
