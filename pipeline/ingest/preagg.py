"""Stage 1: pre-aggregate the events of one input partition in memory, then emit partial series.

The hot path (`add`, which takes the typed events of `schemas.typed`: from `fast_decoder`, or
`from_dict` on the slow path) only appends to small dicts and lists; all arithmetic (fixed-point sums,
histogram buckets, sketch bins, distinct-count sketches, calendar periods, roll-ups to per-route and
global series, label folding) happens once per flush, in `parts`. A part of a series is

    {"t": all-time delta, "p": {pane start: delta}, "c": {"d20261126"|"m202611": delta},
     "l": latest state, "e": {entity: latest state}}

(only the sections the series uses). The same events always give the same parts, which is what
makes a replay after a crash idempotent.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import numpy as np
import orjson

from pipeline.ingest.guard import LabelGuard
from pipeline.sketches.distinct import sketch_of
from pipeline.sketches.quantiles import INV_LOG_GAMMA, MIN_VALUE
from pipeline.state.aggregates import MICRO, Agg, merge_into, newer
from pipeline.state.calendar import Calendar
from pipeline.state.series import series_key
from schemas.typed import (
    ErrorEvent,
    GaugeEvent,
    HeartbeatEvent,
    InventoryEvent,
    OrderEvent,
    RequestEvent,
    UserEvent,
)

SEED_BUCKETS_S: Final = (0.1, 0.3, 0.5, 0.7, 1.0, 3.0, 5.0, 7.0, 10.0)
"""The monitoring guide's buckets of http_request_duration_seconds."""
_BUCKETS_MS: Final = tuple(b * 1000 for b in SEED_BUCKETS_S)
USERS: Final = series_key("users")

LAST_CALENDAR_MS: Final = 253_396_857_600_000
"""9999-10-30T00:00:00Z: later event times count in the calendar periods of this instant, whose day and
month (and the month's end) exist in every time zone; a later one would overflow the date."""

Part = dict[str, Any]
Parts = dict[str, Part]


def _pair() -> list[int]:
    """A fresh pair of counters."""
    return [0, 0]


@dataclass
class FlushContext:
    """What turning a buffer into parts needs besides the events."""

    calendar: Calendar
    guard: LabelGuard


def _part(parts: Parts, key: str) -> Part:
    part = parts.get(key)
    if part is None:
        part = parts[key] = {}
    return part


def _section(parts: Parts, key: str, section: str, sub: Any = None) -> Agg:
    part = _part(parts, key)
    if sub is None:
        agg = part.get(section)
        if agg is None:
            agg = part[section] = {}
        return agg
    group = part.get(section)
    if group is None:
        group = part[section] = {}
    agg = group.get(sub)
    if agg is None:
        agg = group[sub] = {}
    return agg


def total(parts: Parts, key: str) -> Agg:
    """The all-time delta of a series."""
    return _section(parts, key, "t")


def pane(parts: Parts, key: str, start: int) -> Agg:
    """The delta of one pane of a series."""
    return _section(parts, key, "p", start)


def period(parts: Parts, key: str, period_key: str) -> Agg:
    """The delta of one calendar period (day or month) of a series."""
    return _section(parts, key, "c", period_key)


def _calendar_keys(ctx: FlushContext, minute: int) -> tuple[str, str]:
    """The (day, month) keys of a minute, at most those of LAST_CALENDAR_MS."""
    return ctx.calendar.keys(minute if minute <= LAST_CALENDAR_MS else LAST_CALENDAR_MS)


def _micros(amounts: list[Any]) -> int:
    """The sum of the amounts in millionths, each rounded (exact for amounts too large to scale)."""
    try:
        return sum(round(a * MICRO) for a in amounts)
    except OverflowError:  # a * MICRO is infinite: a > 1.7e302 is a whole number
        return sum(int(a) * MICRO if math.isinf(a * MICRO) else round(a * MICRO) for a in amounts)


# The buffers below are slotted dataclasses compared by identity (eq=False), as the buffers that hold them.
@dataclass(slots=True, eq=False)
class Users:
    """Distinct users seen by one accumulator, per pane and per calendar day."""

    active: defaultdict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    converting: defaultdict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    days: defaultdict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    """Minute -> users, for the calendar (late events included)."""

    def see(self, user: Any, start: int, late: bool, ts_minute: int, converts: bool = False) -> None:
        """Record one user's activity."""
        uid = user if type(user) is str else str(user)
        if not late:
            self.active[start].add(uid)
            if converts:
                self.converting[start].add(uid)
        self.days[ts_minute].add(uid)

    def parts(self, parts: Parts, ctx: FlushContext) -> None:
        """Add the users series' sketches to the parts."""
        for start, ids in self.active.items():
            pane(parts, USERS, start)["xa"] = sketch_of(ids)
        for start, ids in self.converting.items():
            pane(parts, USERS, start)["xc"] = sketch_of(ids)
        by_day: dict[str, set[str]] = {}
        for minute, ids in self.days.items():
            by_day.setdefault(_calendar_keys(ctx, minute)[0], set()).update(ids)
        for day, ids in by_day.items():
            period(parts, USERS, day)["xa"] = sketch_of(ids)


VECTOR_MIN: Final = 64
"""From this many durations in one group, `_latencies` (numpy) sums and bins them; below it the plain
loop is faster. Both give the same figures, bin for bin."""
_BUCKET_EDGES: Final = np.array(_BUCKETS_MS)
Latencies = tuple[int, list[int], dict[int, int], int]
_LARGEST_VECTOR_SUM_MS: Final = 9e15
"""From this sum of absolute durations on, the fixed-point sum could overflow int64 (9.2e18 µs): the
plain loop (Python's unbounded ints) sums such a group."""
_NEAR_EDGE: Final = 1e-6
"""numpy's log may differ from math.log by a few ulps (its SIMD log is not correctly rounded); a value
whose log * INV_LOG_GAMMA lies this close to a whole number is binned again with math.log, so that the
bin is exactly the one `bin_of` gives (every scaled log of a finite double is below 36,000 in size, where
an ulp is under 1e-11)."""


def _latencies(durations: list[float]) -> Latencies:
    """What `_plain_latencies` returns, vectorized with numpy: the same figures, bin for bin."""
    values = np.array(durations, dtype=np.float64)
    if not float(np.abs(values).sum()) < _LARGEST_VECTOR_SUM_MS:  # (also NaN or infinities)
        return _plain_latencies(durations)
    micros = int(np.rint(values * 1000.0).astype(np.int64).sum())  # rint: half-even, as round()
    buckets = np.bincount(np.searchsorted(_BUCKET_EDGES, values, side="left"), minlength=len(_BUCKETS_MS) + 1)
    positive = values[values > MIN_VALUE]
    scaled = np.log(positive) * INV_LOG_GAMMA
    index = np.ceil(scaled)
    for at in np.flatnonzero(np.abs(scaled - np.rint(scaled)) < _NEAR_EDGE).tolist():
        index[at] = math.ceil(math.log(float(positive[at])) * INV_LOG_GAMMA)
    keys, counts = np.unique(index.astype(np.int64), return_counts=True)
    bins = dict(zip(keys.tolist(), counts.tolist(), strict=True))
    return micros, buckets.tolist(), bins, len(durations) - len(positive)


def _plain_latencies(durations: list[float]) -> Latencies:
    """(sum in microseconds, histogram bucket counts, sketch bins, zero-bin count) of a group's
    durations, one by one."""
    micros = zeros = 0
    buckets = [0] * (len(_BUCKETS_MS) + 1)
    bins: dict[int, int] = {}
    log, ceil, k = math.log, math.ceil, INV_LOG_GAMMA
    for d in durations:
        try:
            micros += round(d * 1000)
        except OverflowError:  # d * 1000 is infinite: d > 1.7e305 is a whole number
            micros += int(d) * 1000
        buckets[bisect_left(_BUCKETS_MS, d)] += 1
        if d > MIN_VALUE:
            i = ceil(log(d) * k)
            bins[i] = bins.get(i, 0) + 1
        else:
            zeros += 1
    return micros, buckets, bins, zeros


@dataclass(slots=True, eq=False)
class RequestAcc:
    """Request events: durations grouped by (pane, late, service, method, route, status)."""

    groups: defaultdict[tuple[Any, ...], list[float]] = field(default_factory=lambda: defaultdict(list))
    users: Users = field(default_factory=Users)

    def add(self, event: RequestEvent, start: int, late: bool, ts: int) -> None:
        """Buffer one validated request event."""
        self.groups[start, late, event.service, event.method, event.route, event.status_code].append(
            event.duration_ms
        )
        user = event.user_id
        if user is not None:
            # Users.see, inlined: requests are most events, and most carry a user.
            users = self.users
            uid = user if type(user) is str else str(user)
            if not late:
                users.active[start].add(uid)
            users.days[ts - ts % 60_000].add(uid)

    def parts(self, ctx: FlushContext) -> Parts:
        """Roll the buffer up into http, route, global request and users series."""
        parts: Parts = {}
        admit = ctx.guard.admit
        for (start, late, service, method, route, status), durations in self.groups.items():
            n = len(durations)
            micros, buckets, bins, zeros = (_latencies if n >= VECTOR_MIN else _plain_latencies)(durations)
            route = admit("route", route, n)
            service = admit("service", service, n)
            method = admit("method", method.upper(), n)
            http = total(parts, series_key("http", method, route, str(status)))
            merge_into(http, {"n": n, "ds": micros, "h": buckets})
            if late:
                continue
            window: Agg = {"n": n, "e5": n if status >= 500 else 0, "ds": micros, "q": bins}
            if zeros:
                window["qz"] = zeros
            merge_into(pane(parts, series_key("route", service, route), start), window)
            merge_into(pane(parts, series_key("requests"), start), window)
        self.users.parts(parts, ctx)
        return parts


@dataclass(slots=True, eq=False)
class ErrorAcc:
    """Error events: counts by (pane, late, service, route, error code)."""

    groups: defaultdict[tuple[Any, ...], int] = field(default_factory=lambda: defaultdict(int))

    def add(self, event: ErrorEvent, start: int, late: bool, ts: int) -> None:
        """Buffer one validated error event."""
        self.groups[start, late, event.service, event.route, event.error_code] += 1

    def parts(self, ctx: FlushContext) -> Parts:
        """Roll the buffer up into errors-by-endpoint and errors-by-code series."""
        parts: Parts = {}
        admit = ctx.guard.admit
        for (start, late, service, route, code), n in self.groups.items():
            key = series_key("errors", admit("service", service, n), admit("route", route, n))
            merge_into(total(parts, key), {"n": n})
            if not late:
                merge_into(pane(parts, key, start), {"n": n})
                by_code = series_key("error_codes", admit("error_code", str(code), n))
                merge_into(pane(parts, by_code, start), {"n": n})
        return parts


@dataclass(slots=True, eq=False)
class OrderAcc:
    """Order events: amounts grouped by (pane, late, minute, status, user_role, currency, payment method)."""

    groups: defaultdict[tuple[Any, ...], list[float]] = field(default_factory=lambda: defaultdict(list))
    users: Users = field(default_factory=Users)

    def add(self, event: OrderEvent, start: int, late: bool, ts: int) -> None:
        """Buffer one validated order event."""
        status = event.status
        minute = ts - ts % 60_000
        self.groups[
            start, late, minute, status, event.user_role, event.currency, event.payment_method
        ].append(event.amount)
        converts = status == "created" or status == "confirmed"
        self.users.see(event.user_id, start, late, minute, converts)

    def parts(self, ctx: FlushContext) -> Parts:
        """Roll the buffer up into order, all-order, payment, revenue and users series."""
        parts: Parts = {}
        admit = ctx.guard.admit
        for (start, late, minute, status, role, currency, method), amounts in self.groups.items():
            n = len(amounts)
            micro = _micros(amounts)
            by_status = series_key("orders", status, admit("user_role", role, n))
            merge_into(total(parts, by_status), {"n": n, "am": micro})
            confirmed = status == "confirmed"
            revenue = ""
            if confirmed:  # only revenue series carry the currency: only they admit or fold it
                revenue = series_key("revenue", admit("currency", currency, n))
                merge_into(total(parts, revenue), {"n": n, "am": micro})
                day, month = _calendar_keys(ctx, minute)
                merge_into(period(parts, revenue, day), {"n": n, "am": micro})
                merge_into(period(parts, revenue, month), {"n": n, "am": micro})
            if late:
                continue
            merge_into(pane(parts, by_status, start), {"n": n, "am": micro})
            by_method = series_key("payments", status, admit("payment_method", method, n))
            merge_into(pane(parts, by_method, start), {"n": n, "am": micro})
            created = n if status == "created" else 0
            merge_into(pane(parts, series_key("orders_all"), start), {"n": n, "nc": created})
            if confirmed:
                merge_into(pane(parts, revenue, start), {"n": n, "am": micro})
        self.users.parts(parts, ctx)
        return parts


@dataclass(slots=True, eq=False)
class UserAcc:
    """User events: registrations and activity."""

    counts: defaultdict[tuple[int, bool, int], list[int]] = field(default_factory=lambda: defaultdict(_pair))
    users: Users = field(default_factory=Users)

    def add(self, event: UserEvent, start: int, late: bool, ts: int) -> None:
        """Buffer one validated user event."""
        minute = ts - ts % 60_000
        count = self.counts[start, late, minute]
        count[0] += 1
        if event.action == "registered":
            count[1] += 1
        self.users.see(event.user_id, start, late, minute)

    def parts(self, ctx: FlushContext) -> Parts:
        """Roll the buffer up into the users series (counts and distinct users)."""
        parts: Parts = {}
        for (start, late, minute), (n, registered) in self.counts.items():
            merge_into(period(parts, USERS, _calendar_keys(ctx, minute)[0]), {"nr": registered})
            if not late:
                merge_into(pane(parts, USERS, start), {"n": n, "nr": registered})
        self.users.parts(parts, ctx)
        return parts


@dataclass(slots=True, eq=False)
class InventoryAcc:
    """Inventory events: latest stock per product, and units sold per pane."""

    products: dict[str, Agg] = field(default_factory=dict)
    sold: defaultdict[int, list[int]] = field(default_factory=lambda: defaultdict(_pair))

    def add(self, event: InventoryEvent, start: int, late: bool, ts: int) -> None:
        """Buffer one validated inventory event."""
        state = {"t": ts, "s": event.stock, "l": event.low_stock_threshold}
        product = str(event.product_id)
        if newer(state, self.products.get(product)):
            self.products[product] = state
        if not late:
            sold = self.sold[start]
            sold[0] += 1
            sold[1] += event.units_sold or 0

    def parts(self, ctx: FlushContext) -> Parts:
        """The inventory series: product states and units sold."""
        parts: Parts = {}
        key = series_key("inventory")
        entities: dict[str, Agg] = {}
        for product, state in self.products.items():
            if ctx.guard.admit("product", product) == product:  # folded products are dropped
                entities[product] = state
        if entities:
            _part(parts, key)["e"] = entities
        for start, (n, units) in self.sold.items():
            merge_into(pane(parts, key, start), {"n": n, "us": units})
        return parts


@dataclass(slots=True, eq=False)
class HeartbeatAcc:
    """Heartbeat events: latest status per service, and heartbeat counts per pane."""

    latest: dict[str, Agg] = field(default_factory=dict)
    counts: defaultdict[tuple[int, bool, str], list[int]] = field(default_factory=lambda: defaultdict(_pair))

    def add(self, event: HeartbeatEvent, start: int, late: bool, ts: int) -> None:
        """Buffer one validated heartbeat event."""
        service = event.service
        healthy = event.status == "healthy"
        state = {"t": ts, "s": 1 if healthy else 0, "rt": event.response_time_ms}
        if newer(state, self.latest.get(service)):
            self.latest[service] = state
        count = self.counts[start, late, service]
        count[0] += 1
        if not healthy:
            count[1] += 1

    def parts(self, ctx: FlushContext) -> Parts:
        """One health series per service: latest state and heartbeat counts."""
        parts: Parts = {}
        for service, state in self.latest.items():
            # No "latest" for folded ones; their events are counted as folded just below, once.
            if ctx.guard.admit("service", service, 0) == service:
                _part(parts, series_key("health", service))["l"] = state
        for (start, late, service), (n, unhealthy) in self.counts.items():
            key = series_key("health", ctx.guard.admit("service", service, n))
            if not late:
                merge_into(pane(parts, key, start), {"n": n, "nu": unhealthy})
        return parts


@dataclass(slots=True, eq=False)
class GaugeAcc:
    """Gauge events: latest value per (name, labels)."""

    latest: dict[tuple[str, str], Agg] = field(default_factory=dict)

    def add(self, event: GaugeEvent, start: int, late: bool, ts: int) -> None:
        """Buffer one validated gauge event."""
        labels = orjson.dumps(event.labels, option=orjson.OPT_SORT_KEYS).decode()
        key = (event.name, labels)
        state = {"t": ts, "v": event.value}
        if newer(state, self.latest.get(key)):
            self.latest[key] = state

    def parts(self, ctx: FlushContext) -> Parts:
        """One gauge series per (name, labels): its latest value."""
        parts: Parts = {}
        for (name, labels), state in self.latest.items():
            if ctx.guard.admit("gauge", f"{name}{labels}") == f"{name}{labels}":
                _part(parts, series_key("gauge", name, labels))["l"] = state
        return parts


class Accumulator(Protocol):
    """What stage 1 needs of an accumulator: `add` takes the typed event of the accumulator's type
    (a `schemas.typed` Struct, from `fast_decoder` or `from_dict`)."""

    def add(self, event: Any, start: int, late: bool, ts: int) -> None:
        """Buffer one validated event: pane start, late (or too far ahead), event time in ms."""

    def parts(self, ctx: FlushContext) -> Parts:
        """Roll the buffer up into parts."""


ACCUMULATORS: dict[str, Callable[[], Accumulator]] = {
    "request": RequestAcc,
    "error": ErrorAcc,
    "order": OrderAcc,
    "user": UserAcc,
    "inventory": InventoryAcc,
    "heartbeat": HeartbeatAcc,
    "gauge": GaugeAcc,
}
