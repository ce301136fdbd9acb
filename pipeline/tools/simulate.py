"""Synthetic O4O platform traffic: `pulse simulate --scenario NAME --rate EPS --duration S`.

Scenarios change the traffic during the middle third of the run (from 1/3 to 2/3 of the duration):
- steady: the baseline mix all along;
- error-spike: a quarter of API requests fail with 5xx, with matching error events;
- latency-spike: responses get about 15x slower (p95 well above 2 s);
- payment-outage: the payment service answers 503 and reports unhealthy, then stops reporting;
- stock-out: a dozen and more products run out of stock.
Heartbeats (every service) and DB gauges are sent every 5 s in every scenario.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

SCENARIOS = ("steady", "error-spike", "latency-spike", "payment-outage", "stock-out")

ROUTES: dict[str, list[tuple[str, str]]] = {
    "api": [
        ("GET", "/api/products"),
        ("GET", "/api/products/:id"),
        ("GET", "/api/cart"),
        ("POST", "/api/cart/items"),
        ("GET", "/api/orders"),
        ("POST", "/api/orders"),
        ("GET", "/api/orders/:id"),
    ],
    "payment": [
        ("POST", "/api/payments"),
        ("POST", "/api/payments/:id/confirm"),
        ("GET", "/api/payments/:id"),
    ],
    "auth": [("POST", "/api/auth/login"), ("POST", "/api/auth/refresh")],
    "catalog": [("GET", "/api/categories"), ("GET", "/api/search")],
}
SERVICES = tuple(ROUTES)
SERVICE_WEIGHTS = (0.6, 0.12, 0.13, 0.15)
ROLES = ("customer", "customer", "customer", "business", "affiliate")
PAYMENT_METHODS = ("card", "card", "bank_transfer", "kakaopay", "naverpay", "toss")
PRODUCTS = 200
DEPENDENCIES = ("database", "redis", "payment", "storage", "external")


@dataclass
class Traffic:
    """Random but realistic events for one scenario; `phase` in [0, 1] is progress of the run."""

    scenario: str = "steady"
    seed: int | None = None
    rng: random.Random = field(init=False)
    stock: dict[str, int] = field(init=False)
    _order_seq: int = 0

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; use one of {', '.join(SCENARIOS)}")
        self.rng = random.Random(self.seed)
        self.stock = {f"p-{i}": self.rng.randint(20, 200) for i in range(PRODUCTS)}

    def active(self, phase: float) -> bool:
        """Whether the scenario's incident is under way."""
        return self.scenario != "steady" and 1 / 3 <= phase < 2 / 3

    def event(self, now_ms: int, phase: float) -> tuple[str, dict[str, Any]]:
        """Return one random (type, event) at time now_ms."""
        roll = self.rng.random()
        if roll < 0.80:
            return "request", self.request(now_ms, phase)
        if roll < 0.88:
            return "order", self.order(now_ms, phase)
        if roll < 0.90:
            return "error", self.error(now_ms, self.rng.choice(SERVICES))
        if roll < 0.96:
            return "user", self.user(now_ms)
        return "inventory", self.inventory(now_ms, phase)

    def request(self, now_ms: int, phase: float) -> dict[str, Any]:
        """A request event."""
        rng = self.rng
        service = rng.choices(SERVICES, SERVICE_WEIGHTS)[0]
        method, route = rng.choice(ROUTES[service])
        base = 250.0 if service == "payment" else 80.0
        duration = rng.lognormvariate(math.log(base), 0.6)
        status = 200 if method == "GET" else rng.choice((200, 201))
        if rng.random() < 0.03:
            status = rng.choice((400, 401, 404, 409))
        elif rng.random() < 0.01:
            status = 500
        if self.active(phase):
            if self.scenario == "error-spike" and service == "api" and rng.random() < 0.25:
                status = rng.choice((500, 502, 503))
            elif self.scenario == "latency-spike":
                duration *= 15
            elif self.scenario == "payment-outage" and service == "payment" and rng.random() < 0.6:
                status = 503
        event: dict[str, Any] = {
            "service": service,
            "method": method,
            "route": route,
            "status_code": status,
            "duration_ms": round(duration, 3),
            "ts": now_ms,
        }
        if rng.random() < 0.7:
            event["user_id"] = f"u-{rng.randint(1, 5000)}"
        return event

    def order(self, now_ms: int, phase: float) -> dict[str, Any]:
        """An order event (created, then mostly confirmed)."""
        rng = self.rng
        self._order_seq += 1
        status = rng.choices(("created", "confirmed", "cancelled", "refunded"), (45, 45, 7, 3))[0]
        if self.active(phase) and self.scenario == "payment-outage" and rng.random() < 0.5:
            status = "cancelled"
        items = rng.randint(1, 6)
        return {
            "order_id": f"o-{self._order_seq}",
            "status": status,
            "amount": round(items * rng.uniform(5_000, 60_000), -1),
            "currency": "KRW",
            "user_id": f"u-{rng.randint(1, 5000)}",
            "user_role": rng.choice(ROLES),
            "payment_method": rng.choice(PAYMENT_METHODS),
            "item_count": items,
            "ts": now_ms,
        }

    def error(self, now_ms: int, service: str) -> dict[str, Any]:
        """An error event from a service."""
        rng = self.rng
        method, route = rng.choice(ROUTES[service])
        code = rng.choice(("DB_TIMEOUT", "PAYMENT_DECLINED", "UPSTREAM_5XX", "VALIDATION"))
        return {
            "service": service,
            "route": route,
            "error_code": code,
            "message": f"{code.lower().replace('_', ' ')} on {method} {route}",
            "ts": now_ms,
        }

    def user(self, now_ms: int) -> dict[str, Any]:
        """A user event (mostly activity, some registrations)."""
        rng = self.rng
        action = "registered" if rng.random() < 0.1 else "active"
        return {
            "user_id": f"u-{rng.randint(1, 5000)}",
            "action": action,
            "role": rng.choice(ROLES),
            "ts": now_ms,
        }

    def inventory(self, now_ms: int, phase: float) -> dict[str, Any]:
        """An inventory level report."""
        rng = self.rng
        product = f"p-{rng.randrange(PRODUCTS)}"
        sold = rng.randint(0, 3)
        if self.scenario == "stock-out" and phase >= 1 / 3 and int(product[2:]) < 20:
            self.stock[product] = 0
        else:
            self.stock[product] = max(0, self.stock[product] - sold)
            if self.stock[product] == 0:
                self.stock[product] = rng.randint(50, 200)  # restocked
        return {
            "product_id": product,
            "stock": self.stock[product],
            "low_stock_threshold": 10,
            "units_sold": sold,
            "ts": now_ms,
        }

    def periodic(self, now_ms: int, phase: float) -> Iterator[tuple[str, dict[str, Any]]]:
        """Heartbeats of every service and dependency, and DB gauges (call every 5 s)."""
        outage = self.active(phase) and self.scenario == "payment-outage"
        for service in (*SERVICES, *DEPENDENCIES):
            if outage and service == "payment":
                if phase >= 0.5:
                    continue  # the payment system stopped reporting at all
                status = "unhealthy"
            else:
                status = "healthy"
            yield (
                "heartbeat",
                {
                    "service": service,
                    "status": status,
                    "response_time_ms": round(self.rng.uniform(2, 40), 2),
                    "ts": now_ms,
                },
            )
        pool = 20
        active = self.rng.randint(3, 15)
        yield "gauge", {"name": "db_connection_pool", "value": pool, "labels": {}, "ts": now_ms}
        yield (
            "gauge",
            {
                "name": "db_active_connections",
                "value": active,
                "labels": {},
                "ts": now_ms,
            },
        )
        yield (
            "gauge",
            {
                "name": "db_query_time_seconds",
                "value": round(self.rng.lognormvariate(math.log(0.008), 0.5), 5),
                "labels": {},
                "ts": now_ms,
            },
        )


async def run(
    bootstrap: str,
    prefix: str,
    scenario: str,
    rate: float,
    duration: float,
    progress: bool = True,
    seed: int | None = None,
    security: Mapping[str, Any] | None = None,
) -> int:
    """Publish traffic at `rate` events/s for `duration` s (0 = until cancelled); return the count."""
    from pipeline.tools.emit import Emitter

    traffic = Traffic(scenario, seed)
    sent = 0
    generated = 0
    started = time.monotonic()
    next_periodic = 0.0
    step = 0.05
    bar = _progress(scenario, duration) if progress else None
    async with Emitter(bootstrap, prefix=prefix, linger=0.05, security=security) as emitter:
        try:
            while True:
                elapsed = time.monotonic() - started
                if duration and elapsed >= duration:
                    break
                phase = elapsed / duration if duration else 0.0
                now_ms = int(time.time() * 1000)
                if elapsed >= next_periodic:
                    for kind, event in traffic.periodic(now_ms, phase):
                        await emitter.emit(kind, event)
                        sent += 1
                    next_periodic += 5.0
                due = int(rate * elapsed) - generated
                for _ in range(max(due, 0)):
                    kind, event = traffic.event(now_ms, phase)
                    await emitter.emit(kind, event)
                    generated += 1
                    sent += 1
                if bar is not None:
                    bar.update(elapsed, sent, traffic.active(phase))
                await asyncio.sleep(step)
        finally:
            if bar is not None:
                bar.close()
    return sent


class _Bar:
    def __init__(self, scenario: str, duration: float) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[sent]} events"),
            TextColumn("{task.fields[state]}"),
            TimeRemainingColumn(),
        )
        self.task = self.progress.add_task(scenario, total=duration or None, sent=0, state="baseline")
        self.progress.start()

    def update(self, elapsed: float, sent: int, incident: bool) -> None:
        self.progress.update(
            self.task, completed=elapsed, sent=sent, state="INCIDENT" if incident else "baseline"
        )

    def close(self) -> None:
        self.progress.stop()


def _progress(scenario: str, duration: float) -> _Bar:
    return _Bar(scenario, duration)
