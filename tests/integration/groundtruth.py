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
        else:
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
        else:
            errors[(e["service"], e["route"])] += 1
    return {"routes": routes, "all": everything, "created": created, "confirmed": confirmed, "errors": errors}
