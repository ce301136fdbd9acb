"""The series catalogue: which aggregated series exist, their labels, and who owns them.

A series is one kind plus its label values, e.g. ("route", "api", "/api/orders/:id"). Its key is the
compact JSON of that list. Every series lives on exactly one partition, `owner(key, partitions)`, so
with several workers each series is aggregated, evaluated and exported by one worker only.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import orjson


@dataclass(frozen=True)
class Kind:
    """One kind of series: its labels, and whether it keeps an all-time total and/or panes."""

    name: str
    labels: tuple[str, ...]
    total: bool
    windowed: bool
    help: str


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "http",
            ("method", "route", "status_code"),
            total=True,
            windowed=False,
            help="request events by method, route and status (seed counter and histogram)",
        ),
        Kind(
            "route",
            ("service", "route"),
            total=False,
            windowed=True,
            help="request events of one route: rate, error ratio, latency sketch",
        ),
        Kind(
            "requests",
            (),
            total=False,
            windowed=True,
            help="all request events: rate, error ratio, latency sketch",
        ),
        Kind(
            "errors",
            ("service", "route"),
            total=True,
            windowed=True,
            help="error events by endpoint",
        ),
        Kind(
            "error_codes",
            ("error_code",),
            total=False,
            windowed=True,
            help="error events by error code (read by alert context)",
        ),
        Kind(
            "orders",
            ("status", "user_role"),
            total=True,
            windowed=True,
            help="order events by status and user role (count, amount)",
        ),
        Kind(
            "orders_all",
            (),
            total=False,
            windowed=True,
            help="all order events (count, created count)",
        ),
        Kind(
            "payments",
            ("status", "payment_method"),
            total=False,
            windowed=True,
            help="order events by status and payment method (count, amount; read by alert context)",
        ),
        Kind(
            "revenue",
            ("currency",),
            total=True,
            windowed=True,
            help="confirmed orders by currency (count, amount), also per calendar day and month",
        ),
        Kind(
            "users",
            (),
            total=False,
            windowed=True,
            help="user activity: events, registrations, distinct active and ordering users",
        ),
        Kind(
            "inventory",
            (),
            total=False,
            windowed=True,
            help="latest stock of every product, units sold",
        ),
        Kind(
            "health",
            ("service",),
            total=False,
            windowed=True,
            help="latest heartbeat of a service, heartbeat counts",
        ),
        Kind(
            "gauge",
            ("name", "labels"),
            total=False,
            windowed=False,
            help="latest value of an infrastructure figure (gauge events)",
        ),
    )
}


def series_key(kind: str, *labels: str) -> str:
    """Return the key of a series: compact JSON of [kind, *labels]."""
    return orjson.dumps([kind, *labels]).decode()


def parse_key(key: str) -> tuple[str, tuple[str, ...]]:
    """Split a series key into its kind and label values."""
    parts = orjson.loads(key)
    return parts[0], tuple(parts[1:])


def owner(key: str, partitions: int) -> int:
    """Return the partition that owns a series (stable across processes and restarts)."""
    return zlib.crc32(key.encode()) % partitions
