"""Stage-1 accumulators against ground truth computed here, and the readout of known panes."""

from __future__ import annotations

import base64
import math
import random
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import datasketches as ds
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config.settings import Config
from pipeline.ingest.guard import LabelGuard
from pipeline.ingest.preagg import SEED_BUCKETS_S, ErrorAcc, FlushContext, OrderAcc, Parts, RequestAcc
from pipeline.readout.figures import prometheus_families, series_values, window_values
from pipeline.records import series_parts
from pipeline.sketches.quantiles import MIN_VALUE, RELATIVE_ACCURACY, add_values
from pipeline.state.aggregates import MICRO, dumps
from pipeline.state.calendar import Calendar
from pipeline.state.cells import apply_block, group_cells
from pipeline.state.series import series_key
from pipeline.state.windows import span
from schemas.events import EVENT_FIELDS, validate
from schemas.typed import Event, fast_decoder, from_dict

PANE = 10_000
COARSE = 60_000
TZ = ZoneInfo("Asia/Seoul")
BASE = int(datetime(2023, 11, 15, tzinfo=TZ).timestamp() * 1000)
"""Local midnight in Seoul (a whole hour in epoch ms): the panes below straddle a calendar day."""
PANES = [BASE - 2 * PANE, BASE - PANE, BASE, BASE + PANE, BASE + 7 * PANE]
OLD = BASE - 3 * 86_400_000 - 5 * PANE
"""Pane of events far outside the allowed lateness (only ever late)."""
BOUNDS_MS = (100, 300, 500, 700, 1000, 3000, 5000, 7000, 10000)
"""The seed's buckets (0.1s ... 10s), written out in ms."""
USERS = series_key("users")

Timed = tuple[dict[str, Any], int, bool, int]
"""An event with what stage 1 passes along: pane start, late?, event time (ms)."""


def on_time(event: dict[str, Any], start: int, offset: int = 0) -> Timed:
    return (event, start, False, start + offset)


def late(event: dict[str, Any], start: int, offset: int = 0) -> Timed:
    return (event, start, True, start + offset)


def bucket_of(duration_ms: float) -> int:
    """Index of the first bucket whose bound the duration does not exceed (le: x <= bound)."""
    for i, bound in enumerate(BOUNDS_MS):
        if duration_ms <= bound:
            return i
    return len(BOUNDS_MS)


def test_bucket_bounds_match_the_seed() -> None:
    assert tuple(round(b * 1000) for b in SEED_BUCKETS_S) == BOUNDS_MS


# --- ground truth ----------------------------------------------------------------------------------


def day_month(ts: int) -> tuple[str, str]:
    """Calendar keys of an instant in Seoul, from the instant itself (not its minute)."""
    local = datetime.fromtimestamp(ts / 1000, TZ)
    return f"d{local:%Y%m%d}", f"m{local:%Y%m}"


def theta(ids: Iterable[str]) -> str:
    """The serialized Theta sketch (lg_k 12) of a small set, built with the library directly."""
    sketch = ds.update_theta_sketch(12)
    for uid in ids:
        sketch.update(uid)
    return base64.b64encode(sketch.compact().serialize()).decode("ascii")


def truth_users(out: dict[str, Any], seen: list[tuple[Any, int, bool, int, bool]]) -> None:
    """Add the users series of (user, pane, late, ts, converts) sightings to `out`."""
    active: dict[int, set[str]] = {}
    converting: dict[int, set[str]] = {}
    days: dict[str, set[str]] = {}
    for user, start, is_late, ts, converts in seen:
        if not is_late:
            active.setdefault(start, set()).add(str(user))
            if converts:
                converting.setdefault(start, set()).add(str(user))
        days.setdefault(day_month(ts)[0], set()).add(str(user))
    if not seen:
        return
    part = out.setdefault(USERS, {})
    for start, ids in active.items():
        part.setdefault("p", {}).setdefault(start, {})["xa"] = theta(ids)
    for start, ids in converting.items():
        part["p"][start]["xc"] = theta(ids)
    for day, ids in days.items():
        part.setdefault("c", {}).setdefault(day, {})["xa"] = theta(ids)


def truth_requests(events: list[Timed]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    zeros: dict[tuple[str, int], int] = {}
    seen = []
    for event, pane, is_late, ts in events:
        d = event["duration_ms"]
        status = event["status_code"]
        if event.get("user_id") is not None:
            seen.append((event["user_id"], pane, is_late, ts, False))
        hkey = series_key("http", event["method"].upper(), event["route"], str(status))
        total = out.setdefault(hkey, {}).setdefault("t", {"n": 0, "ds": 0, "h": [0] * (len(BOUNDS_MS) + 1)})
        total["n"] += 1
        total["ds"] += round(d * 1000)
        total["h"][bucket_of(d)] += 1
        if is_late:
            continue
        for key in (series_key("route", event["service"], event["route"]), series_key("requests")):
            agg = (
                out.setdefault(key, {})
                .setdefault("p", {})
                .setdefault(pane, {"n": 0, "e5": 0, "ds": 0, "q": {}})
            )
            agg["n"] += 1
            agg["e5"] += 1 if status >= 500 else 0
            agg["ds"] += round(d * 1000)
            zeros[(key, pane)] = zeros.get((key, pane), 0) + add_values(agg["q"], [d])
    for (key, pane), count in zeros.items():
        if count:
            out[key]["p"][pane]["qz"] = count
    truth_users(out, seen)
    return out


def truth_errors(events: list[Timed]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for event, pane, is_late, _ts in events:
        part = out.setdefault(series_key("errors", event["service"], event["route"]), {})
        part.setdefault("t", {"n": 0})["n"] += 1
        if not is_late:
            part.setdefault("p", {}).setdefault(pane, {"n": 0})["n"] += 1
            by_code = out.setdefault(series_key("error_codes", str(event["error_code"])), {})
            by_code.setdefault("p", {}).setdefault(pane, {"n": 0})["n"] += 1
    return out


def truth_orders(events: list[Timed]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    seen = []
    for event, pane, is_late, ts in events:
        micro = round(event["amount"] * 1_000_000)
        status = event["status"]
        seen.append((event["user_id"], pane, is_late, ts, status in ("created", "confirmed")))
        keys = [series_key("orders", status, event["user_role"])]
        if status == "confirmed":
            keys.append(series_key("revenue", event["currency"]))
            for period in day_month(ts):
                agg = out.setdefault(keys[-1], {}).setdefault("c", {}).setdefault(period, {"n": 0, "am": 0})
                agg["n"] += 1
                agg["am"] += micro
        for key in keys:
            part = out.setdefault(key, {})
            total = part.setdefault("t", {"n": 0, "am": 0})
            total["n"] += 1
            total["am"] += micro
            if not is_late:
                agg = part.setdefault("p", {}).setdefault(pane, {"n": 0, "am": 0})
                agg["n"] += 1
                agg["am"] += micro
        if not is_late:
            method = event.get("payment_method", FILLERS["payment_method"])
            agg = (
                out.setdefault(series_key("payments", status, method), {})
                .setdefault("p", {})
                .setdefault(pane, {"n": 0, "am": 0})
            )
            agg["n"] += 1
            agg["am"] += micro
            agg = (
                out.setdefault(series_key("orders_all"), {})
                .setdefault("p", {})
                .setdefault(pane, {"n": 0, "nc": 0})
            )
            agg["n"] += 1
            agg["nc"] += 1 if status == "created" else 0
    truth_users(out, seen)
    return out


# --- event generators ------------------------------------------------------------------------------

SPECIAL_DURATIONS = [0, 0.0, 1e-7, MIN_VALUE, 2e-6, 0.5, *BOUNDS_MS]
SPECIAL_DURATIONS += [math.nextafter(float(b), math.inf) for b in BOUNDS_MS]
SPECIAL_DURATIONS += [math.nextafter(float(b), 0.0) for b in BOUNDS_MS]
USER_IDS = ["u1", "u2", "u3", 4, 5, "6"]

duration_st = st.one_of(
    st.sampled_from(SPECIAL_DURATIONS),
    st.floats(min_value=0, max_value=20_000, allow_nan=False),
    st.integers(min_value=0, max_value=60_000),
)
request_st = st.fixed_dictionaries(
    {
        "service": st.sampled_from(["api", "web"]),
        "method": st.sampled_from(["GET", "get", "Post", "DELETE"]),
        "route": st.sampled_from(["/api/orders", "/api/orders/:id", "/health"]),
        "status_code": st.sampled_from([200, 201, 302, 404, 499, 500, 503, 599]),
        "duration_ms": duration_st,
    },
    optional={"user_id": st.sampled_from([*USER_IDS, None])},
)
error_st = st.fixed_dictionaries(
    {
        "service": st.sampled_from(["api", "worker"]),
        "route": st.sampled_from(["/api/orders", "/api/pay"]),
        "error_code": st.sampled_from(["E1", "E2", "TIMEOUT"]),
        "message": st.just("boom"),
    }
)
amount_st = st.one_of(
    st.integers(min_value=0, max_value=10**9),
    st.decimals(min_value=0, max_value=10**7, places=2).map(float),
    st.floats(min_value=0, max_value=1e6, allow_nan=False),
)
order_st = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["created", "confirmed", "cancelled", "refunded"]),
        "user_role": st.sampled_from(["customer", "business"]),
        "payment_method": st.sampled_from(["card", "bank_transfer"]),
        "currency": st.sampled_from(["KRW", "USD"]),
        "amount": amount_st,
        "user_id": st.sampled_from(USER_IDS),
    }
)
timing_st = st.one_of(
    st.tuples(st.sampled_from(PANES), st.just(False), st.integers(0, PANE - 1)),
    st.tuples(st.sampled_from([*PANES, OLD]), st.just(True), st.integers(0, PANE - 1)),
)


def timed(event_st: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[Timed]:
    return st.tuples(event_st, timing_st).map(lambda x: (x[0], x[1][0], x[1][1], x[1][0] + x[1][2]))


def context() -> FlushContext:
    """A flush context with the default limits (nothing here comes near them)."""
    return FlushContext(Calendar("Asia/Seoul"), LabelGuard(Config().cardinality.limits()))


KINDS = {RequestAcc: "request", ErrorAcc: "error", OrderAcc: "order"}
FILLERS: dict[str, Any] = {"order_id": 1, "payment_method": "card", "item_count": 1, "message": "boom"}
"""Required fields the tests here leave out (the accumulators do not read them)."""


def typed(kind: str, event: dict[str, Any]) -> Event:
    """The typed event stage 1 passes to `add`: the dict completed, validated, then `from_dict`."""
    full = {f.name: FILLERS[f.name] for f in EVENT_FIELDS[kind] if f.required and f.name not in event}
    full.update(event)
    assert type(validate(kind, full)) is int, (kind, full)
    return from_dict(kind, full)


def feed(acc: Any, events: list[Timed]) -> Parts:
    kind = KINDS[type(acc)]
    for event, start, is_late, ts in events:
        acc.add(typed(kind, event), start, is_late, ts)
    parts: Parts = acc.parts(context())
    return parts


@settings(max_examples=150, deadline=None)
@given(st.lists(timed(request_st), max_size=80))
def test_property_request_parts_equal_ground_truth(events: list[Timed]) -> None:
    assert feed(RequestAcc(), events) == truth_requests(events)


@settings(max_examples=100, deadline=None)
@given(st.lists(timed(error_st), max_size=60))
def test_property_error_parts_equal_ground_truth(events: list[Timed]) -> None:
    assert feed(ErrorAcc(), events) == truth_errors(events)


@settings(max_examples=150, deadline=None)
@given(st.lists(timed(order_st), max_size=60))
def test_property_order_parts_equal_ground_truth(events: list[Timed]) -> None:
    assert feed(OrderAcc(), events) == truth_orders(events)


@settings(max_examples=60, deadline=None)
@given(st.lists(timed(request_st), max_size=40), st.lists(timed(order_st), max_size=20))
def test_property_fast_decoded_events_give_the_same_parts(requests: list[Timed], orders: list[Timed]) -> None:
    # What stage 1 feeds from the fast path (JSON bytes -> fast_decoder) and from the slow path
    # (validated dict -> from_dict) are the same events: the parts come out byte for byte the same.
    for acc_type, kind, events in ((RequestAcc, "request", requests), (OrderAcc, "order", orders)):
        decode_fast = fast_decoder(kind)
        fast = acc_type()
        for event, start, is_late, ts in events:
            full = {f.name: FILLERS[f.name] for f in EVENT_FIELDS[kind] if f.required and f.name not in event}
            decoded = decode_fast(orjson.dumps({**full, **event}))
            assert decoded is not None
            fast.add(decoded[0], start, is_late, ts)
        assert dumps(fast.parts(context())) == dumps(feed(acc_type(), events))


def random_request(r: random.Random) -> dict[str, Any]:
    event = {
        "service": r.choice(["api", "web", "admin"]),
        "method": r.choice(["GET", "POST", "put"]),
        "route": r.choice(["/a", "/b/:id", "/c"]),
        "status_code": r.choice([200, 200, 200, 404, 500, 502]),
        "duration_ms": r.choice(
            [r.lognormvariate(4, 1.2), float(r.randint(0, 12_000)), r.choice(SPECIAL_DURATIONS)]
        ),
    }
    if r.random() < 0.3:
        event["user_id"] = r.randint(1, 400)
    return event


def random_order(r: random.Random) -> dict[str, Any]:
    return {
        "status": r.choice(["created", "created", "confirmed", "cancelled", "refunded"]),
        "user_role": r.choice(["customer", "business", "affiliate"]),
        "currency": r.choice(["KRW", "USD", "EUR"]),
        "amount": r.choice([r.randint(0, 500_000), round(r.uniform(0, 999), 2), r.uniform(0, 1e5)]),
        "user_id": f"u{r.randint(1, 300)}",
    }


def random_timing(r: random.Random, event: dict[str, Any]) -> Timed:
    if r.random() < 0.2:
        return late(event, r.choice([*PANES, OLD]), r.randrange(PANE))
    return on_time(event, r.choice(PANES), r.randrange(PANE))


def test_seeded_random_events_equal_ground_truth() -> None:
    r = random.Random(7)
    requests = [random_timing(r, random_request(r)) for _ in range(20_000)]
    errors = [
        random_timing(r, {"service": r.choice("xyz"), "route": r.choice("ab"), "error_code": r.choice("PQ")})
        for _ in range(3_000)
    ]
    orders = [random_timing(r, random_order(r)) for _ in range(5_000)]
    req_parts = feed(RequestAcc(), requests)
    assert req_parts == truth_requests(requests)
    assert feed(ErrorAcc(), errors) == truth_errors(errors)
    assert feed(OrderAcc(), orders) == truth_orders(orders)
    # Sanity of the roll-ups: the global series holds every on-time request once.
    in_time = [e for e, _, is_late, _ in requests if not is_late]
    global_n = sum(agg["n"] for agg in req_parts[series_key("requests")]["p"].values())
    assert global_n == len(in_time)
    http_n = sum(part["t"]["n"] for key, part in req_parts.items() if key.startswith('["http"'))
    assert http_n == len(requests)
    # The panes straddle local midnight: on-time users land in two calendar days.
    assert len(req_parts[USERS]["c"]) == 3  # the day before, the day after, and the late OLD day


def test_late_events_count_in_totals_but_not_in_panes() -> None:
    req = {"service": "api", "method": "GET", "route": "/a", "status_code": 503, "duration_ms": 250.5}
    order = {"status": "confirmed", "user_role": "customer", "currency": "KRW", "amount": 1500, "user_id": 9}
    error = {"service": "api", "route": "/a", "error_code": "E"}
    req_parts = feed(RequestAcc(), [late(req, OLD), late(req, BASE), on_time(req, BASE)])
    assert req_parts[series_key("http", "GET", "/a", "503")]["t"] == {
        "n": 3,
        "ds": 3 * 250_500,
        "h": [0, 3, 0, 0, 0, 0, 0, 0, 0, 0],
    }
    route = req_parts[series_key("route", "api", "/a")]
    assert list(route["p"]) == [BASE]
    assert route["p"][BASE]["n"] == 1
    assert route["p"][BASE]["e5"] == 1
    only_late = feed(RequestAcc(), [late(req, BASE)])
    assert list(only_late) == [series_key("http", "GET", "/a", "503")]

    order_parts = feed(OrderAcc(), [late(order, OLD), on_time(order, BASE)])
    old_day, day = day_month(OLD)[0], day_month(BASE)[0]
    assert (old_day, day) == ("d20231111", "d20231115")
    assert order_parts[series_key("revenue", "KRW")] == {
        "t": {"n": 2, "am": 3000 * MICRO},
        "p": {BASE: {"n": 1, "am": 1500 * MICRO}},
        "c": {
            old_day: {"n": 1, "am": 1500 * MICRO},
            day: {"n": 1, "am": 1500 * MICRO},
            "m202311": {"n": 2, "am": 3000 * MICRO},
        },
    }
    assert order_parts[series_key("orders_all")] == {"p": {BASE: {"n": 1, "nc": 0}}}
    # The late order's user is active on its own day, but in no pane.
    assert order_parts[USERS] == {
        "p": {BASE: {"xa": theta(["9"]), "xc": theta(["9"])}},
        "c": {old_day: {"xa": theta(["9"])}, day: {"xa": theta(["9"])}},
    }
    late_order = feed(OrderAcc(), [late(order, BASE)])
    assert late_order[series_key("orders", "confirmed", "customer")] == {"t": {"n": 1, "am": 1500 * MICRO}}
    assert series_key("orders_all") not in late_order
    assert "p" not in late_order[series_key("revenue", "KRW")]
    assert late_order[USERS] == {"c": {day: {"xa": theta(["9"])}}}

    error_parts = feed(ErrorAcc(), [late(error, OLD), late(error, BASE), on_time(error, BASE + PANE)])
    assert error_parts[series_key("errors", "api", "/a")] == {"t": {"n": 3}, "p": {BASE + PANE: {"n": 1}}}


def test_fixed_point_sums_are_exact() -> None:
    # 0.1 + 0.2 != 0.3 in floats; micro-units and microseconds add exactly.
    orders = [
        on_time({"status": "confirmed", "user_role": "c", "currency": "USD", "amount": a, "user_id": 1}, BASE)
        for a in (0.1, 0.2)
    ]
    parts = feed(OrderAcc(), orders)
    assert parts[series_key("revenue", "USD")]["t"]["am"] == 300_000
    assert parts[series_key("revenue", "USD")]["c"][day_month(BASE)[0]]["am"] == 300_000
    reqs = [
        on_time({"service": "s", "method": "GET", "route": "/", "status_code": 200, "duration_ms": d}, BASE)
        for d in (0.1, 0.2, 0.0004, 1.2346)
    ]
    parts = feed(RequestAcc(), reqs)
    assert parts[series_key("http", "GET", "/", "200")]["t"]["ds"] == 100 + 200 + 0 + 1235
    assert parts[series_key("requests")]["p"][BASE]["ds"] == 1535
    assert "qz" not in parts[series_key("requests")]["p"][BASE]


def test_histogram_le_semantics_at_the_bounds() -> None:
    reqs = [
        on_time({"service": "s", "method": "GET", "route": "/", "status_code": 200, "duration_ms": d}, BASE)
        for d in (0, 100, 100.0001, 300, 10_000, 10_000.5, 99_999)
    ]
    parts = feed(RequestAcc(), reqs)
    assert parts[series_key("http", "GET", "/", "200")]["t"]["h"] == [2, 2, 0, 0, 0, 0, 0, 0, 1, 2]


# --- readout of known panes ------------------------------------------------------------------------


def build_states(requests: list[Timed], orders: list[Timed], errors: list[Timed]) -> dict[str, Any]:
    cells: dict[str, Any] = {}
    for source, acc, events in (
        ("r", RequestAcc(), requests),
        ("o", OrderAcc(), orders),
        ("e", ErrorAcc(), errors),
    ):
        apply_block(cells, source, 1, series_parts(feed(acc, events)), COARSE)
    return group_cells(cells.items())


def assert_quantile(got: float | None, values: list[float], q: float) -> None:
    want = sorted(values)[math.floor(q * (len(values) - 1))]
    assert got is not None
    if want <= MIN_VALUE:
        assert got == 0.0
    else:
        assert abs(got - want) <= RELATIVE_ACCURACY * (1 + 1e-9) * want


def test_window_values_of_known_panes() -> None:
    config = Config()
    r = random.Random(11)
    now = BASE + 40 * 60_000 + 25_000  # 25 s into a fine pane, 25 s into a coarse pane
    # Events every 5 s over the last 70 minutes (some outside every window), plus late ones.
    requests: list[Timed] = []
    orders: list[Timed] = []
    errors: list[Timed] = []
    timeline: list[tuple[int, dict[str, Any], str]] = []
    for ts in range(now - 70 * 60_000, now + 1, 5_000):
        pane = ts - ts % PANE
        for _ in range(r.randint(0, 6)):
            event = {
                "service": "api",
                "method": "GET",
                "route": r.choice(["/a", "/b"]),
                "status_code": r.choice([200, 200, 200, 500, 503]),
                "duration_ms": r.choice([r.lognormvariate(4, 1), 0.0]),
            }
            requests.append((event, pane, False, ts))
            timeline.append((ts, event, "request"))
        for _ in range(r.randint(0, 2)):
            event = {
                "status": r.choice(["created", "created", "confirmed", "cancelled"]),
                "user_role": "customer",
                "currency": "KRW",
                "amount": r.randint(1, 200) * 500,
                "user_id": r.randint(1, 50),
            }
            orders.append((event, pane, False, ts))
            timeline.append((ts, event, "order"))
        if r.random() < 0.3:
            event = {"service": "api", "route": "/a", "error_code": "E"}
            errors.append((event, pane, False, ts))
            timeline.append((ts, event, "error"))
    late_request = {"service": "api", "method": "GET", "route": "/a", "status_code": 500, "duration_ms": 5.0}
    requests += [late(late_request, OLD, 1_234)] * 3 + [late(late_request, now - now % PANE)] * 2
    states = build_states(requests, orders, errors)

    for label, window_s in (("1m", 60), ("5m", 300), ("1h", 3600)):
        pane_ms = PANE if window_s <= 600 else COARSE
        first = now - now % pane_ms - window_s * 1000 + pane_ms
        covered = (now - first) / 1000
        inside = [(e, kind) for ts, e, kind in timeline if first <= ts <= now]
        reqs = [e for e, kind in inside if kind == "request"]
        reqs_a = [e for e in reqs if e["route"] == "/a"]
        ords = [e for e, kind in inside if kind == "order"]
        errs = [e for e, kind in inside if kind == "error"]

        got = series_values(series_key("requests"), states[series_key("requests")], now, config)
        fig = got["windows"][label]
        n = len(reqs)
        e5 = sum(1 for e in reqs if e["status_code"] >= 500)
        assert fig["count"] == n
        assert fig["errors_5xx"] == e5
        assert fig["rps"] == pytest.approx(n / covered)
        assert fig["rpm"] == pytest.approx(n * 60 / covered)
        assert fig["error_ratio"] == pytest.approx(e5 / n)
        assert fig["avg_ms"] == pytest.approx(sum(round(e["duration_ms"] * 1000) for e in reqs) / 1000 / n)
        durations = [e["duration_ms"] for e in reqs]
        for q in (0.5, 0.95, 0.99):
            assert_quantile(fig[f"p{round(q * 100)}_ms"], durations, q)

        route = series_values(
            series_key("route", "api", "/a"), states[series_key("route", "api", "/a")], now, config
        )
        rfig = route["windows"][label]
        assert route["labels"] == {"service": "api", "route": "/a"}
        assert rfig["count"] == len(reqs_a)
        assert rfig["rps"] == pytest.approx(len(reqs_a) / covered)
        for q in (0.5, 0.95, 0.99):
            assert_quantile(rfig[f"p{round(q * 100)}_ms"], [e["duration_ms"] for e in reqs_a], q)

        all_orders = series_values(series_key("orders_all"), states[series_key("orders_all")], now, config)
        ofig = all_orders["windows"][label]
        created = sum(1 for e in ords if e["status"] == "created")
        assert ofig["count"] == len(ords)
        assert ofig["created"] == created
        assert ofig["per_hour"] == pytest.approx(created * 3600 / covered)

        revenue = series_values(
            series_key("revenue", "KRW"), states[series_key("revenue", "KRW")], now, config
        )
        vfig = revenue["windows"][label]
        confirmed = [e["amount"] for e in ords if e["status"] == "confirmed"]
        assert vfig["count"] == len(confirmed)
        assert vfig["revenue"] == pytest.approx(sum(confirmed))
        assert vfig["per_hour"] == pytest.approx(sum(confirmed) * 3600 / covered)
        if confirmed:
            assert vfig["average_order_value"] == pytest.approx(sum(confirmed) / len(confirmed))
        else:
            assert vfig["average_order_value"] is None

        err = series_values(
            series_key("errors", "api", "/a"), states[series_key("errors", "api", "/a")], now, config
        )
        assert err["windows"][label]["count"] == len(errs)
        assert err["windows"][label]["per_minute"] == pytest.approx(len(errs) * 60 / covered)

    # Totals: every event ever, late ones included.
    err = series_values(
        series_key("errors", "api", "/a"), states[series_key("errors", "api", "/a")], now, config
    )
    assert err["total"] == {"count": len(errors)}
    http_key = series_key("http", "GET", "/a", "500")
    http = series_values(http_key, states[http_key], now, config)
    want_n = sum(1 for e, *_ in requests if e["route"] == "/a" and e["status_code"] == 500)
    assert http["total"]["count"] == want_n
    assert sum(http["total"]["buckets"]) == want_n


def test_window_values_of_an_empty_window() -> None:
    fig = window_values("requests", {}, 55.0)
    assert fig["count"] == 0
    assert fig["rps"] == 0
    assert fig["error_ratio"] is None
    assert fig["avg_ms"] is None
    assert fig["p50_ms"] is None
    rev = window_values("revenue", {}, 60.0)
    assert rev["average_order_value"] is None
    assert window_values("orders_all", {"n": 3, "nc": 2}, 1800.0)["per_hour"] == pytest.approx(4.0)


def test_readout_of_a_young_current_pane_divides_by_the_covered_span() -> None:
    config = Config()
    now = BASE + 30 * PANE + 2_000  # 2 s into the current pane
    event = {"service": "api", "method": "GET", "route": "/a", "status_code": 200, "duration_ms": 10.0}
    pane_now = now - now % PANE
    states = build_states([on_time(event, pane_now, 1_000)] * 104, [], [])
    fig = series_values(series_key("requests"), states[series_key("requests")], now, config)["windows"]["1m"]
    sp = span(now, 60_000, PANE)
    assert sp.covered_s == pytest.approx(52.0)
    assert fig["rps"] == pytest.approx(2.0)


def test_prometheus_histogram_is_cumulative_and_ends_with_count() -> None:
    config = Config()
    reqs = [
        on_time({"service": "s", "method": "get", "route": "/", "status_code": 200, "duration_ms": d}, BASE)
        for d in (50, 150, 150, 2000, 20_000)
    ]
    states = build_states(reqs, [], [])
    families = {f.name: f for f in prometheus_families(states, BASE + 5_000, config)}
    hist = families["http_request_duration_seconds"]
    labels = {"method": "GET", "route": "/", "status_code": "200"}
    buckets = {s[1]["le"]: s[2] for s in hist.samples if s[0] == "_bucket" and s[1]["method"] == "GET"}
    assert buckets == {
        "0.1": 1,
        "0.3": 3,
        "0.5": 3,
        "0.7": 3,
        "1": 3,
        "3": 4,
        "5": 4,
        "7": 4,
        "10": 4,
        "+Inf": 5,
    }
    assert ("_count", labels, 5) in hist.samples
    sums = [value for suffix, lab, value in hist.samples if suffix == "_sum" and lab == labels]
    assert sums == [pytest.approx(22.35)]
    assert ("", labels, 5) in families["http_requests_total"].samples


# -- the vectorized latencies (numpy) give exactly what the plain loop gives ---------------------------


def _edge_values() -> list[float]:
    """Durations on and next to every bin edge of the sketch (gamma ** i), every histogram bucket edge,
    the zero bin's edge and the halfway points of the fixed-point rounding."""
    from pipeline.sketches.quantiles import GAMMA

    values: list[float] = [0.0, -1.0, MIN_VALUE, 0.0005, 0.0015, 2.5e-3, 1.0005, 12.3455]
    values += [b * 1000 for b in SEED_BUCKETS_S]
    values += [GAMMA**i for i in range(-700, 1100, 7)]
    return [v2 for v in values for v2 in (math.nextafter(v, -math.inf), v, math.nextafter(v, math.inf))]


def _same_latencies(durations: list[float]) -> None:
    from pipeline.ingest.preagg import _latencies, _plain_latencies

    assert _latencies(durations) == _plain_latencies(durations)


def test_vectorized_latencies_match_the_plain_loop_on_every_edge() -> None:
    values = _edge_values()
    _same_latencies(values)
    for i in range(0, len(values), 48):
        _same_latencies(values[i : i + 48])


@given(
    st.lists(
        st.one_of(
            st.floats(min_value=0, max_value=1e7, allow_nan=False),
            st.floats(min_value=1e-9, max_value=1e-3),
            st.integers(min_value=0, max_value=10**9).map(float),
            st.sampled_from(_edge_values()),
        ),
        min_size=1,
        max_size=300,
    )
)
def test_vectorized_latencies_match_the_plain_loop(durations: list[float]) -> None:
    _same_latencies(durations)


def test_vectorized_latencies_leave_sums_too_large_for_int64_to_the_plain_loop() -> None:
    _same_latencies([1e15, 1e15, 1e300, 5.0] * 20)
    _same_latencies([9e13] * 200)


def test_large_groups_flush_the_same_parts_as_small_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """A group of VECTOR_MIN or more durations takes the numpy path: its parts are those of the same
    events flushed through the plain loop."""
    from pipeline.ingest import preagg

    rng = random.Random(11)
    events = [
        from_dict(
            "request",
            {
                "service": "api",
                "method": "GET",
                "route": "/a",
                "status_code": 200,
                "duration_ms": round(rng.lognormvariate(4.4, 0.6), 3),
                "ts": BASE,
            },
        )
        for _ in range(5 * preagg.VECTOR_MIN)
    ]
    results = []
    for vector_min in (preagg.VECTOR_MIN, 10**9):  # numpy, then the plain loop
        monkeypatch.setattr(preagg, "VECTOR_MIN", vector_min)
        acc = RequestAcc()
        for event in events:
            acc.add(event, BASE, False, BASE)  # type: ignore[arg-type]
        results.append(acc.parts(context()))
    assert results[0] == results[1]
