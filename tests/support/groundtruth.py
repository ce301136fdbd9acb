"""Ground truth for a known event set, computed directly from the events (no pipeline code)."""

from __future__ import annotations

import math
import random
import time
from bisect import bisect_left
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

SEED_BUCKETS_MS = (100, 300, 500, 700, 1000, 3000, 5000, 7000, 10000)
ROUTES = [f"/api/r{i}" for i in range(12)]
SERVICES = ["api", "payment", "auth"]


def make_events(
    n_requests: int,
    n_orders: int,
    n_errors: int,
    seed: int,
    now_ms: int | None = None,
    spread_ms: int = 50_000,
) -> list[tuple[str, dict[str, Any]]]:
    """A mixed, shuffled event set with timestamps in the last `spread_ms` before now."""
    rng = random.Random(seed)
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    out: list[tuple[str, dict[str, Any]]] = []
    for i in range(n_requests):
        status = rng.choices([200, 201, 404, 500, 503], [70, 10, 8, 8, 4])[0]
        out.append(
            (
                "request",
                {
                    "service": rng.choice(SERVICES),
                    "method": rng.choice(["GET", "POST"]),
                    "route": rng.choice(ROUTES),
                    "status_code": status,
                    "duration_ms": round(rng.lognormvariate(math.log(120), 1.0), 3),
                    "ts": now - rng.randint(0, spread_ms),
                    "event_id": f"r{seed}-{i}",
                },
            )
        )
    for i in range(n_orders):
        out.append(
            (
                "order",
                {
                    "order_id": f"o{seed}-{i}",
                    "status": rng.choice(["created", "confirmed", "confirmed", "cancelled", "refunded"]),
                    "amount": round(rng.uniform(1000, 250000), 2),
                    "currency": rng.choice(["KRW", "KRW", "USD"]),
                    "user_id": rng.randint(1, 300),
                    "user_role": rng.choice(["customer", "business", "affiliate"]),
                    "payment_method": "card",
                    "item_count": rng.randint(1, 5),
                    "ts": now - rng.randint(0, spread_ms),
                },
            )
        )
    for i in range(n_errors):
        out.append(
            (
                "error",
                {
                    "service": rng.choice(SERVICES),
                    "route": rng.choice(ROUTES),
                    "error_code": rng.choice(["E1", "E2", 500]),
                    "message": f"boom {i}",
                    "ts": now - rng.randint(0, spread_ms),
                },
            )
        )
    rng.shuffle(out)
    return out


@dataclass
class Truth:
    """Expected figures."""

    http: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    http_us: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    http_buckets: dict[tuple[str, str, str], list[int]] = field(default_factory=dict)
    orders: Counter[tuple[str, str]] = field(default_factory=Counter)
    revenue_micro: Counter[str] = field(default_factory=Counter)
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)


def truth(events: list[tuple[str, dict[str, Any]]]) -> Truth:
    """All-time totals."""
    t = Truth()
    for kind, e in events:
        if kind == "request":
            key = (e["method"], e["route"], str(e["status_code"]))
            t.http[key] += 1
            t.http_us[key] += round(e["duration_ms"] * 1000)
            buckets = t.http_buckets.setdefault(key, [0] * 10)
            buckets[bisect_left(SEED_BUCKETS_MS, e["duration_ms"])] += 1
        elif kind == "order":
            t.orders[(e["status"], e["user_role"])] += 1
            if e["status"] == "confirmed":
                t.revenue_micro[e["currency"]] += round(e["amount"] * 1_000_000)
        elif kind == "error":
            t.errors[(e["service"], e["route"])] += 1
    return t


def in_window(ts: int, at_ms: int, window_ms: int, pane_ms: int) -> bool:
    """Whether an event falls in the panes of the window ending at at_ms."""
    last = at_ms - at_ms % pane_ms
    first = last - window_ms + pane_ms
    pane = ts - ts % pane_ms
    return first <= pane <= last


def exact_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


def window_truth(
    events: list[tuple[str, dict[str, Any]]], at_ms: int, window_ms: int, pane_ms: int
) -> dict[str, Any]:
    """Windowed figures: request counts/5xx/durations per route and overall, orders, revenue."""
    routes: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    everything: list[dict[str, Any]] = []
    created = 0
    confirmed: dict[str, list[float]] = defaultdict(list)
    errors: Counter[tuple[str, str]] = Counter()
    for kind, e in events:
        if not in_window(e["ts"], at_ms, window_ms, pane_ms):
            continue
        if kind == "request":
            routes[(e["service"], e["route"])].append(e)
            everything.append(e)
        elif kind == "order":
            created += e["status"] == "created"
            if e["status"] == "confirmed":
                confirmed[e["currency"]].append(e["amount"])
        elif kind == "error":
            errors[(e["service"], e["route"])] += 1
    return {"routes": routes, "all": everything, "created": created, "confirmed": confirmed, "errors": errors}


def make_catalogue_events(
    seed: int, now_ms: int, scale: int = 1, spread_ms: int = 50_000
) -> list[tuple[str, dict[str, Any]]]:
    """Users, inventory, heartbeats and gauges (unique timestamps per entity), plus orders."""
    rng = random.Random(seed)
    out: list[tuple[str, dict[str, Any]]] = []
    used: set[tuple[str, str, int]] = set()

    def ts(entity: tuple[str, str]) -> int:
        while True:
            value = now_ms - rng.randint(0, spread_ms)
            if (*entity, value) not in used:
                used.add((*entity, value))
                return value

    for _ in range(600 * scale):
        action = "registered" if rng.random() < 0.2 else "active"
        out.append(
            (
                "user",
                {
                    "user_id": f"u{rng.randint(1, 2500)}",
                    "action": action,
                    "role": rng.choice(["customer", "business"]),
                    "ts": now_ms - rng.randint(0, spread_ms),
                },
            )
        )
    for _ in range(300 * scale):
        product = f"p{rng.randint(1, 120)}"
        out.append(
            (
                "inventory",
                {
                    "product_id": product,
                    "stock": rng.choice([0, 0, 3, 8, 15, 40, 90]),
                    "low_stock_threshold": rng.choice([5, 10]),
                    "units_sold": rng.randint(0, 4),
                    "ts": ts(("inventory", product)),
                },
            )
        )
    for _ in range(200 * scale):
        service = rng.choice(["api", "payment", "auth", "database", "redis"])
        out.append(
            (
                "heartbeat",
                {
                    "service": service,
                    "status": rng.choice(["healthy", "healthy", "unhealthy"]),
                    "response_time_ms": round(rng.uniform(1, 90), 2),
                    "ts": ts(("heartbeat", service)),
                },
            )
        )
    for _ in range(150 * scale):
        name = rng.choice(["db_connection_pool", "db_active_connections", "db_query_time_seconds"])
        labels = rng.choice([{}, {"db": "main"}, {"db": "replica"}])
        key = name + str(sorted(labels.items()))
        out.append(
            (
                "gauge",
                {
                    "name": name,
                    "value": round(rng.uniform(0, 50), 3),
                    "labels": labels,
                    "ts": ts(("gauge", key)),
                },
            )
        )
    for i in range(400 * scale):
        out.append(
            (
                "order",
                {
                    "order_id": f"co{seed}-{i}",
                    "status": rng.choice(["created", "confirmed", "cancelled"]),
                    "amount": round(rng.uniform(1000, 99000), 2),
                    "currency": "KRW",
                    "user_id": f"u{rng.randint(1, 2500)}",
                    "user_role": rng.choice(["customer", "business"]),
                    "payment_method": "card",
                    "item_count": 1,
                    "ts": now_ms - rng.randint(0, spread_ms),
                },
            )
        )
    for _ in range(500 * scale):
        out.append(
            (
                "request",
                {
                    "service": "api",
                    "method": "GET",
                    "route": rng.choice(ROUTES[:4]),
                    "status_code": 200,
                    "duration_ms": round(rng.uniform(1, 400), 2),
                    "user_id": f"u{rng.randint(1, 2500)}",
                    "ts": now_ms - rng.randint(0, spread_ms),
                },
            )
        )
    rng.shuffle(out)
    return out


def catalogue_truth(
    events: list[tuple[str, dict[str, Any]]], at_ms: int, window_ms: int, pane_ms: int
) -> dict[str, Any]:
    """Users, inventory, health and gauge figures expected at at_ms."""
    active: set[str] = set()
    ordering: set[str] = set()
    registrations = 0
    units = 0
    products: dict[str, dict[str, Any]] = {}
    health: dict[str, dict[str, Any]] = {}
    gauges: dict[tuple[str, str], dict[str, Any]] = {}
    for kind, e in events:
        inside = in_window(e["ts"], at_ms, window_ms, pane_ms)
        if kind == "user":
            if inside:
                active.add(e["user_id"])
                registrations += e["action"] == "registered"
        elif kind == "order":
            if inside:
                active.add(e["user_id"])
                if e["status"] in ("created", "confirmed"):
                    ordering.add(e["user_id"])
        elif kind == "request":
            if inside and e.get("user_id") is not None:
                active.add(e["user_id"])
        elif kind == "inventory":
            if inside:
                units += e.get("units_sold") or 0
            current = products.get(e["product_id"])
            if current is None or e["ts"] > current["ts"]:
                products[e["product_id"]] = e
        elif kind == "heartbeat":
            current = health.get(e["service"])
            if current is None or e["ts"] > current["ts"]:
                health[e["service"]] = e
        elif kind == "gauge":
            key = (e["name"], str(sorted(e["labels"].items())))
            current = gauges.get(key)
            if current is None or e["ts"] > current["ts"]:
                gauges[key] = e
    stock = [p["stock"] for p in products.values()]
    return {
        "active": len(active),
        "ordering": len(ordering),
        "registrations": registrations,
        "units_sold": units,
        "products": len(products),
        "low_stock": sum(1 for p in products.values() if p["stock"] <= p["low_stock_threshold"]),
        "out_of_stock": sum(1 for s in stock if s <= 0),
        "total_stock": sum(max(s, 0) for s in stock),
        "health": {s: (e["status"], e["ts"], e["response_time_ms"]) for s, e in health.items()},
        "gauges": {k: e["value"] for k, e in gauges.items()},
    }
