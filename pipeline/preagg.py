"""Stage 1: pre-aggregate the events of one input partition in memory, then emit partial series.

The hot path (`add`) only appends to a dict of small lists; all arithmetic (fixed-point sums,
histogram buckets, sketch bins, roll-ups to per-route and global series) happens once per flush.
A flush turns the buffer into `Parts`: series key -> {"t": all-time delta, "p": {pane: delta}}.
The same events always give the same parts, which is what makes a replay after a crash idempotent.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable
from typing import Any, Final

from pipeline.aggregates import MICRO, Agg, merge_into
from pipeline.series import series_key
from pipeline.sketches import INV_LOG_GAMMA, MIN_VALUE

LATE: Final = -1
"""Pane marker for events outside the allowed lateness: they count in totals, not in windows."""

SEED_BUCKETS_S: Final = (0.1, 0.3, 0.5, 0.7, 1.0, 3.0, 5.0, 7.0, 10.0)
"""The monitoring guide's buckets of http_request_duration_seconds."""
_BUCKETS_MS: Final = tuple(b * 1000 for b in SEED_BUCKETS_S)

Part = dict[str, Any]
Parts = dict[str, Part]


def _part(parts: Parts, key: str) -> Part:
    part = parts.get(key)
    if part is None:
        part = parts[key] = {}
    return part


def _total(parts: Parts, key: str) -> Agg:
    part = _part(parts, key)
    total = part.get("t")
    if total is None:
        total = part["t"] = {}
    return total


def _pane(parts: Parts, key: str, pane: int) -> Agg:
    part = _part(parts, key)
    panes = part.get("p")
    if panes is None:
        panes = part["p"] = {}
    agg = panes.get(pane)
    if agg is None:
        agg = panes[pane] = {}
    return agg


class RequestAcc:
    """Request events: durations grouped by (pane, service, method, route, status)."""

    __slots__ = ("groups",)

    def __init__(self) -> None:
        self.groups: dict[tuple[Any, ...], list[float]] = {}

    def add(self, event: dict[str, Any], pane: int) -> None:
        """Buffer one validated request event."""
        key = (pane, event["service"], event["method"], event["route"], event["status_code"])
        group = self.groups.get(key)
        if group is None:
            self.groups[key] = [event["duration_ms"]]
        else:
            group.append(event["duration_ms"])

    def parts(self) -> Parts:
        """Roll the buffer up into http, route and global request series."""
        parts: Parts = {}
        log, ceil, k = math.log, math.ceil, INV_LOG_GAMMA
        for (pane, service, method, route, status), durations in self.groups.items():
            n = len(durations)
            micros = 0
            buckets = [0] * (len(_BUCKETS_MS) + 1)
            bins: dict[int, int] = {}
            zeros = 0
            for d in durations:
                micros += round(d * 1000)
                buckets[bisect_left(_BUCKETS_MS, d)] += 1
                if d > MIN_VALUE:
                    i = ceil(log(d) * k)
                    bins[i] = bins.get(i, 0) + 1
                else:
                    zeros += 1
            http = _total(parts, series_key("http", method.upper(), route, str(status)))
            merge_into(http, {"n": n, "ds": micros, "h": buckets})
            if pane == LATE:
                continue
            window: Agg = {"n": n, "e5": n if status >= 500 else 0, "ds": micros, "q": bins}
            if zeros:
                window["qz"] = zeros
            merge_into(_pane(parts, series_key("route", service, route), pane), window)
            merge_into(_pane(parts, series_key("requests"), pane), window)
        return parts


class ErrorAcc:
    """Error events: counts by (pane, service, route, error_code)."""

    __slots__ = ("groups",)

    def __init__(self) -> None:
        self.groups: dict[tuple[Any, ...], int] = {}

    def add(self, event: dict[str, Any], pane: int) -> None:
        """Buffer one validated error event."""
        key = (pane, event["service"], event["route"], event["error_code"])
        self.groups[key] = self.groups.get(key, 0) + 1

    def parts(self) -> Parts:
        """Roll the buffer up into errors-by-endpoint series."""
        parts: Parts = {}
        for (pane, service, route, _code), n in self.groups.items():
            key = series_key("errors", service, route)
            merge_into(_total(parts, key), {"n": n})
            if pane != LATE:
                merge_into(_pane(parts, key, pane), {"n": n})
        return parts


class OrderAcc:
    """Order events: amounts grouped by (pane, status, user_role, currency)."""

    __slots__ = ("groups",)

    def __init__(self) -> None:
        self.groups: dict[tuple[Any, ...], list[float]] = {}

    def add(self, event: dict[str, Any], pane: int) -> None:
        """Buffer one validated order event."""
        key = (pane, event["status"], event["user_role"], event["currency"])
        group = self.groups.get(key)
        if group is None:
            self.groups[key] = [event["amount"]]
        else:
            group.append(event["amount"])

    def parts(self) -> Parts:
        """Roll the buffer up into order, all-order and revenue series."""
        parts: Parts = {}
        for (pane, status, role, currency), amounts in self.groups.items():
            n = len(amounts)
            micro = sum(round(a * MICRO) for a in amounts)
            by_status = series_key("orders", status, role)
            merge_into(_total(parts, by_status), {"n": n, "am": micro})
            revenue = series_key("revenue", currency)
            if status == "confirmed":
                merge_into(_total(parts, revenue), {"n": n, "am": micro})
            if pane == LATE:
                continue
            merge_into(_pane(parts, by_status, pane), {"n": n, "am": micro})
            created = n if status == "created" else 0
            merge_into(_pane(parts, series_key("orders_all"), pane), {"n": n, "nc": created})
            if status == "confirmed":
                merge_into(_pane(parts, revenue, pane), {"n": n, "am": micro})
        return parts


class CountOnlyAcc:
    """Event types that are validated and counted but not yet aggregated into series."""

    __slots__ = ()

    def add(self, event: dict[str, Any], pane: int) -> None:
        """Accept one validated event."""

    def parts(self) -> Parts:
        """Return no series."""
        return {}


Accumulator = RequestAcc | ErrorAcc | OrderAcc | CountOnlyAcc

ACCUMULATORS: dict[str, Callable[[], Accumulator]] = {
    "request": RequestAcc,
    "error": ErrorAcc,
    "order": OrderAcc,
    "inventory": CountOnlyAcc,
    "user": CountOnlyAcc,
    "heartbeat": CountOnlyAcc,
    "gauge": CountOnlyAcc,
}
