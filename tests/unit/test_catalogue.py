"""The extended catalogue (users, inventory, health, gauges, calendar periods) and the cardinality guard,
end to end through stage 1 (accumulators) and stage 2 (cells), against ground truth computed here.

Bounds used below, and why:
- Distinct users are Theta sketches with k = 2**12 hashes. Up to k distinct ids a sketch (and a union
  of sketches) holds every hash, so counts are exact. Past k the estimate has a relative standard
  error of 1 / sqrt(k) = 1.6%; tests accept 3 standard errors (4.7%), and the data is fixed, so they
  are deterministic.
- Retention intersects yesterday's and today's sketches. The intersection keeps the hashes of both
  below theta = min(theta_yesterday, theta_today) ~ k / max(|A|, |B|); about |A & B| * theta of them
  survive, so its relative standard error is ~ 1.6% * sqrt(max(|A|, |B|) / |A & B|). Tests accept 3
  of those; the ratio (retained / yesterday) adds yesterday's own 3 x 1.6%.
- A serialized sketch holds at most k hashes of 8 bytes plus a 24-byte preamble: <= 32.1 KiB raw,
  <= 42.8 KiB as the base64 text stored in aggregates, whatever the number of users.
- 100k distinct routes with the default limit of 1000 routes: every admitted route costs at most a
  total cell and one fine and one coarse pane cell here (~0.9 KiB each), the guard ~0.1 KiB per
  admitted value, so stage 2 plus the guard stay near 3 MiB; the test allows 8 MiB. Without the guard
  the same events would make ~300k cells (~270 MiB).
"""

from __future__ import annotations

import base64
import copy
import math
import random
import tracemalloc
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from agents.telemetry import PipelineMetrics
from pipeline.config.settings import Config
from pipeline.ingest.guard import OTHER, LabelGuard
from pipeline.ingest.preagg import ACCUMULATORS, FlushContext, Parts
from pipeline.readout.figures import gauge_metric_name, product_order, prometheus_families, series_values
from pipeline.readout.names import LATENCY_METRICS, STATE_FAMILIES, TOTAL_FAMILIES, WINDOW_METRICS
from pipeline.records import series_parts
from pipeline.sketches.distinct import LG_K, RELATIVE_STANDARD_ERROR, estimate, sketch_of, union
from pipeline.state.aggregates import MICRO
from pipeline.state.calendar import Calendar
from pipeline.state.cells import (
    COARSE,
    ENTITY,
    FINE,
    LATEST,
    PERIOD,
    TOTAL,
    Retention,
    SeriesState,
    apply_block,
    cell_key,
    group_cells,
    split_cell_key,
)
from pipeline.state.series import parse_key, series_key
from schemas.events import validate
from schemas.typed import Event, from_dict

CONFIG = Config()
PANE = int(CONFIG.windows.pane * 1000)
COARSE_MS = int(CONFIG.windows.coarse_pane * 1000)
LIMITS = CONFIG.cardinality.limits()
SEOUL = Calendar("Asia/Seoul")
UTC = Calendar("UTC")
RSE = RELATIVE_STANDARD_ERROR
K = 2**LG_K
WINDOWS = (("1m", 60), ("5m", 300), ("1h", 3600))
USERS = series_key("users")
INVENTORY = series_key("inventory")


def at(iso: str) -> int:
    """Epoch ms of an RFC 3339 instant."""
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


NOW = at("2026-11-26T15:40:25+09:00")
"""25 s into a fine pane and into a coarse pane."""


def window_first(now: int, window_s: int) -> int:
    """Event time at which a window read at `now` starts (its first pane's start)."""
    pane_ms = PANE if window_s <= CONFIG.windows.fine_horizon else COARSE_MS
    return now - now % pane_ms - window_s * 1000 + pane_ms


def local_day(ts: int, zone: str = "Asia/Seoul") -> str:
    return f"d{datetime.fromtimestamp(ts / 1000, ZoneInfo(zone)):%Y%m%d}"


Events = Sequence[tuple[dict[str, Any], int]]


def typed(kind: str, event: dict[str, Any]) -> Event:
    """The typed event stage 1 passes to `add`: the dict validated, then `from_dict`."""
    assert type(validate(kind, event)) is int, (kind, event)
    return from_dict(kind, event)


class Pipeline:
    """Stage 1 (a fresh accumulator per flush, one label guard) and stage 2 (one cell table)."""

    def __init__(self, calendar: Calendar = SEOUL, limits: Mapping[str, int] | None = None) -> None:
        self.calendar = calendar
        self.limits = dict(LIMITS if limits is None else limits)
        self.guard = LabelGuard(self.limits)
        self.cells: dict[str, Any] = {}
        self.offsets: dict[str, int] = {}
        self.registry = CollectorRegistry()
        self.metrics = PipelineMetrics(self.registry)

    def flush(self, kind: str, events: Events, late: bool = False, partition: int = 0) -> Parts:
        """Pre-aggregate events of one kind (as stage 1 does) and apply the block to the cells."""
        acc = ACCUMULATORS[kind]()
        for event, ts in events:
            acc.add(typed(kind, event), ts - ts % PANE, late, ts)
        parts = acc.parts(FlushContext(self.calendar, self.guard))
        for dimension, folded in self.guard.take_folds().items():
            self.metrics.folds.labels(dimension).inc(folded)
        source = f"{kind}:{partition}"
        end = self.offsets.get(source, -1) + len(events)
        self.offsets[source] = end
        apply_block(self.cells, source, end, series_parts(parts), COARSE_MS)
        return parts

    def states(self) -> dict[str, SeriesState]:
        return group_cells(self.cells.items())

    def values(self, key: str, now: int, states: Mapping[str, SeriesState] | None = None) -> dict[str, Any]:
        states = self.states() if states is None else states
        return series_values(key, states[key], now, CONFIG, self.calendar)

    def folds(self, dimension: str) -> float:
        """What `pulse_label_folds_total` reports for one dimension."""
        value = self.registry.get_sample_value("pulse_label_folds_total", {"dimension": dimension})
        return value or 0.0


def chunks(events: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [events[i : i + size] for i in range(0, len(events), size)]


def within(got: float, want: float, relative: float) -> bool:
    return abs(got - want) <= relative * want


# --- users -----------------------------------------------------------------------------------------


def user_event(uid: Any, registered: bool = False) -> dict[str, Any]:
    return {"user_id": uid, "action": "registered" if registered else "active", "role": "customer"}


def request_event(uid: Any = None, route: str = "/a", status: int = 200) -> dict[str, Any]:
    event = {"service": "api", "method": "GET", "route": route, "status_code": status, "duration_ms": 12.5}
    if uid is not None:
        event["user_id"] = uid
    return event


def order_event(
    uid: Any, status: str, amount: float = 1000, currency: str = "KRW", role: str = "customer"
) -> dict[str, Any]:
    return {
        "order_id": 1,
        "status": status,
        "amount": amount,
        "currency": currency,
        "user_id": uid,
        "user_role": role,
        "payment_method": "card",
        "item_count": 1,
    }


def test_users_windows_are_exact_below_the_sketch_capacity() -> None:
    r = random.Random(21)
    pipe = Pipeline()
    users: list[tuple[dict[str, Any], int]] = []
    requests: list[tuple[dict[str, Any], int]] = []
    orders: list[tuple[dict[str, Any], int]] = []
    for ts in range(NOW - 70 * 60_000, NOW + 1, 4_000):
        users.append((user_event(r.randint(1, 1500), r.random() < 0.2), ts))
        # The same user as an int in one event and a string in another is one user.
        requests.append((request_event(r.choice([None, r.randint(1, 1500)])), ts))
        if r.random() < 0.5:
            status = r.choice(["created", "confirmed", "cancelled", "refunded"])
            orders.append((order_event(str(r.randint(1, 1500)), status), ts))
    for kind, events in (("user", users), ("request", requests), ("order", orders)):
        for i, chunk in enumerate(chunks(events, 75)):
            pipe.flush(kind, chunk, partition=i % 2)
    # Late events (outside the allowed lateness) count on their calendar day, never in a window.
    late_users = [(user_event(9_000 + i, True), NOW - 20 * 60_000 + i) for i in range(7)]
    pipe.flush("user", late_users, late=True)
    states = pipe.states()

    for label, window_s in WINDOWS:
        first = window_first(NOW, window_s)
        inside_users = [e for e, ts in users if first <= ts <= NOW]
        active = {str(e["user_id"]) for e in inside_users}
        active |= {str(e["user_id"]) for e, ts in requests if first <= ts <= NOW and "user_id" in e}
        inside_orders = [e for e, ts in orders if first <= ts <= NOW]
        active |= {str(e["user_id"]) for e in inside_orders}
        ordering = {str(e["user_id"]) for e in inside_orders if e["status"] in ("created", "confirmed")}
        assert len(active) < K
        fig = pipe.values(USERS, NOW, states)["windows"][label]
        assert fig["events"] == len(inside_users)
        assert fig["registrations"] == sum(1 for e in inside_users if e["action"] == "registered")
        assert fig["active_users"] == len(active)
        assert fig["active_users_low"] == fig["active_users_high"] == len(active)
        assert fig["ordering_users"] == len(ordering)
        assert fig["conversion_ratio"] == pytest.approx(len(ordering) / len(active))

    everyone = {str(e["user_id"]) for e, _ in users + orders + late_users}
    everyone |= {str(e["user_id"]) for e, _ in requests if "user_id" in e}
    days = pipe.values(USERS, NOW, states)["days"]
    assert days["active_today"] == len(everyone)
    assert days["registrations_today"] == sum(1 for e, _ in users + late_users if e["action"] == "registered")
    assert days["active_yesterday"] == 0
    assert days["retention_ratio"] is None


def test_distinct_users_of_thousands_are_within_the_sketch_bound() -> None:
    pipe = Pipeline()
    span_ms = 3_500_000
    start = NOW - span_ms
    users = [(user_event(f"user-{i}", i % 7 == 0), start + i * span_ms // 30_000) for i in range(30_000)]
    # Some users come back later in the hour; requests carry int ids that are the same users.
    users += [(user_event(f"user-{i}"), start + span_ms // 2 + i * 40) for i in range(0, 30_000, 9)]
    orders = [
        (order_event(f"user-{i}", ("created", "confirmed", "cancelled")[i % 3]), start + i * 116)
        for i in range(0, 30_000, 2)
    ]
    requests = [(request_event(i), start + i * 50) for i in range(30_000, 40_000)]
    users.sort(key=lambda pair: pair[1])
    for kind, events in (("user", users), ("order", orders), ("request", requests)):
        for i, chunk in enumerate(chunks(events, 5_000)):
            pipe.flush(kind, chunk, partition=i % 3)
    values = pipe.values(USERS, NOW)

    for label, window_s in WINDOWS:
        first = window_first(NOW, window_s)
        active = {str(e["user_id"]) for e, ts in users + orders + requests if first <= ts <= NOW}
        ordering = {
            str(e["user_id"])
            for e, ts in orders
            if first <= ts <= NOW and e["status"] in ("created", "confirmed")
        }
        fig = values["windows"][label]
        assert fig["registrations"] == sum(
            1 for e, ts in users if first <= ts <= NOW and e["action"] == "registered"
        )
        if len(active) <= K:
            assert fig["active_users"] == len(active), label
        else:
            assert within(fig["active_users"], len(active), 3 * RSE), (label, fig, len(active))
            assert fig["active_users_low"] <= len(active) <= fig["active_users_high"]
        if len(ordering) <= K:
            assert fig["ordering_users"] == len(ordering), label
        else:
            assert within(fig["ordering_users"], len(ordering), 3 * RSE), (label, fig, len(ordering))
        # A ratio of two estimates: at most the sum of their relative errors.
        assert within(fig["conversion_ratio"], len(ordering) / len(active), 6 * RSE)
    assert len({str(e["user_id"]) for e, _ in users + orders + requests}) == 40_000
    assert within(values["windows"]["1h"]["active_users"], 40_000, 3 * RSE)
    assert values["windows"]["5m"]["active_users"] < K  # ... and was exact


def retention_pipeline(yesterday: range, today: range, now: int) -> Pipeline:
    pipe = Pipeline()
    day_before = now - 86_400_000
    for ids, base in ((yesterday, day_before), (today, now - 2 * 3_600_000)):
        events = [
            (user_event(f"u{i}", registered=i % 10 == 0), base + n % 600_000) for n, i in enumerate(ids)
        ]
        for i, chunk in enumerate(chunks(events, 10_000)):
            pipe.flush("user", chunk, partition=i % 2)
    return pipe


def test_day_over_day_retention_is_exact_below_the_sketch_capacity() -> None:
    now = at("2026-11-26T12:00:00+09:00")
    yesterday, today = range(0, 2_000), range(1_100, 2_600)  # 900 users on both days
    days = retention_pipeline(yesterday, today, now).values(USERS, now)["days"]
    assert days["active_yesterday"] == 2_000
    assert days["active_today"] == 1_500
    assert days["retained"] == 900
    assert days["retention_ratio"] == pytest.approx(0.45)
    assert days["registrations_today"] == sum(1 for i in today if i % 10 == 0)


def test_day_over_day_retention_of_tens_of_thousands_is_within_the_intersection_bound() -> None:
    now = at("2026-12-01T12:00:00+09:00")  # yesterday is the last day of November
    yesterday, today = range(0, 40_000), range(20_000, 50_000)
    days = retention_pipeline(yesterday, today, now).values(USERS, now)["days"]
    retained = len(set(yesterday) & set(today))
    bound = 3 * RSE * math.sqrt(max(len(yesterday), len(today)) / retained)
    assert bound < 0.07
    assert within(days["active_yesterday"], len(yesterday), 3 * RSE)
    assert within(days["active_today"], len(today), 3 * RSE)
    assert within(days["retained"], retained, bound), days
    assert within(days["retention_ratio"], retained / len(yesterday), bound + 3 * RSE), days


@pytest.mark.parametrize("n", [1_000, 5_000, 100_000, 1_000_000])
def test_a_sketch_stays_small_whatever_the_number_of_users(n: int) -> None:
    text = sketch_of(f"user-{i}" for i in range(n))
    raw = base64.b64decode(text)
    assert len(raw) <= K * 8 + 24 <= 40 * 1024
    assert len(text) <= 4 * math.ceil((K * 8 + 24) / 3)
    if n <= K:
        assert estimate(text) == n
    else:
        assert within(estimate(text), n, 3 * RSE)


def test_sketches_are_exact_up_to_their_capacity() -> None:
    for n in (1, 100, 4_000, K):
        assert estimate(sketch_of(str(i) for i in range(n))) == n
    halves = [sketch_of(str(i) for i in range(0, K // 2)), sketch_of(str(i) for i in range(K // 4, K))]
    assert estimate(union(halves)) == K


def test_a_users_pane_and_day_stay_small_with_a_hundred_thousand_users() -> None:
    acc = ACCUMULATORS["user"]()
    for i in range(100_000):
        acc.add(typed("user", user_event(i)), NOW - NOW % PANE, False, NOW)
    parts = acc.parts(FlushContext(SEOUL, LabelGuard(LIMITS)))[USERS]
    sketches = [parts["p"][NOW - NOW % PANE]["xa"], parts["c"][local_day(NOW)]["xa"]]
    many = union([*sketches, sketch_of(f"other-{i}" for i in range(50_000))])
    for text in [*sketches, many]:
        assert len(base64.b64decode(text)) <= K * 8 + 24
    assert within(estimate(sketches[0]), 100_000, 3 * RSE)
    assert within(estimate(many), 150_000, 3 * RSE)


# --- inventory ---------------------------------------------------------------------------------------


def inventory_event(product: Any, stock: int, threshold: int, sold: int | None) -> dict[str, Any]:
    event = {"product_id": product, "stock": stock, "low_stock_threshold": threshold}
    if sold is not None:
        event["units_sold"] = sold
    return event


def test_inventory_latest_stock_by_event_time_whatever_the_arrival_order() -> None:
    r = random.Random(5)
    updates: list[tuple[dict[str, Any], int, bool]] = []
    for product in [f"sku-{i}" for i in range(300)] + [17, 18]:
        for ts in r.sample(range(NOW - 70 * 60_000, NOW), r.randint(1, 8)):  # distinct event times
            event = inventory_event(product, r.randint(-2, 40), r.randint(0, 10), r.choice([None, 0, 3, 9]))
            updates.append((event, ts, ts < NOW - 50 * 60_000 and r.random() < 0.5))
    r.shuffle(updates)  # arrival order is not event-time order
    pipe = Pipeline()
    for i, chunk in enumerate(chunks(updates, 37)):
        on_time = [(e, ts) for e, ts, is_late in chunk if not is_late]
        late = [(e, ts) for e, ts, is_late in chunk if is_late]
        pipe.flush("inventory", on_time, partition=i % 3)
        pipe.flush("inventory", late, late=True, partition=i % 3)

    latest: dict[str, tuple[int, dict[str, Any]]] = {}
    for event, ts, _ in updates:
        product = str(event["product_id"])
        if product not in latest or ts > latest[product][0]:
            latest[product] = (ts, event)
    stocks = [(e["stock"], e["low_stock_threshold"]) for _, e in latest.values()]
    total_stock = sum(max(s, 0) for s, _ in stocks)
    values = pipe.values(INVENTORY, NOW)
    assert values["stock"] == {
        "products": 302,
        "low_stock": sum(1 for s, threshold in stocks if s <= threshold),
        "out_of_stock": sum(1 for s, _ in stocks if s <= 0),
        "out_of_stock_first": sorted(
            (p for p, (_, e) in latest.items() if e["stock"] <= 0), key=product_order
        )[:10],
        "total_stock": total_stock,
    }
    assert 0 < values["stock"]["out_of_stock"] < values["stock"]["low_stock"] < 302
    states = pipe.states()[INVENTORY].entities
    assert {p: (s["t"], s["s"], s["l"]) for p, s in states.items()} == {
        p: (ts, e["stock"], e["low_stock_threshold"]) for p, (ts, e) in latest.items()
    }
    for label, window_s in WINDOWS:
        first = window_first(NOW, window_s)
        inside = [e for e, ts, is_late in updates if first <= ts <= NOW and not is_late]
        sold = sum(e.get("units_sold", 0) for e in inside)
        fig = values["windows"][label]
        assert fig["events"] == len(inside)
        assert fig["units_sold"] == sold
        assert fig["turnover"] == pytest.approx(sold / total_stock)


def test_inventory_states_applied_in_any_order_any_number_of_times_agree() -> None:
    r = random.Random(9)
    states = [
        {f"p{i}": {"t": r.randint(0, 20), "s": r.randint(-1, 9), "l": r.randint(0, 3)} for i in range(8)}
        for _ in range(12)
    ]
    # Ties on the event time with different content: decided by content, not by arrival.
    states.append({"p0": {"t": 99, "s": 1, "l": 2}})
    states.append({"p0": {"t": 99, "s": 7, "l": 2}})
    blocks = [
        (f"inventory:{i}", i, {INVENTORY: {"e": s, "p": {NOW: {"n": 1, "us": i}}}})
        for i, s in enumerate(states)
    ]
    reference: dict[str, Any] = {}
    for source, end, series in blocks:
        apply_block(reference, source, end, series_parts(series), COARSE_MS)
    want = series_values(INVENTORY, group_cells(reference.items())[INVENTORY], NOW, CONFIG, SEOUL)
    assert want["stock"]["products"] == 8
    assert group_cells(reference.items())[INVENTORY].entities["p0"] == {"t": 99, "s": 7, "l": 2}
    for _ in range(25):
        order = [r.randrange(len(blocks)) for _ in range(3 * len(blocks))] + list(range(len(blocks)))
        r.shuffle(order)
        cells: dict[str, Any] = {}
        for i in order:
            apply_block(cells, *blocks[i][:2], series_parts(copy.deepcopy(blocks[i][2])), COARSE_MS)
        assert cells == reference
        assert series_values(INVENTORY, group_cells(cells.items())[INVENTORY], NOW, CONFIG, SEOUL) == want


# --- health and gauges -------------------------------------------------------------------------------


def test_health_latest_heartbeat_wins_by_event_time() -> None:
    r = random.Random(3)
    beats: list[tuple[dict[str, Any], int, bool]] = []
    for service in ("api", "db", "cache"):
        for ts in r.sample(range(NOW - 70 * 60_000, NOW), 25):
            event: dict[str, Any] = {"service": service, "status": r.choice(["healthy", "unhealthy"])}
            if r.random() < 0.7:
                event["response_time_ms"] = r.choice([0, 3.5, r.randint(1, 900)])
            beats.append((event, ts, ts < NOW - 40 * 60_000 and r.random() < 0.5))
    r.shuffle(beats)
    pipe = Pipeline()
    for i, chunk in enumerate(chunks(beats, 6)):
        pipe.flush("heartbeat", [(e, ts) for e, ts, is_late in chunk if not is_late], partition=i % 2)
        pipe.flush("heartbeat", [(e, ts) for e, ts, is_late in chunk if is_late], late=True, partition=i % 2)
    states = pipe.states()
    families = {f.name: f for f in prometheus_families(states, NOW, CONFIG)}
    for service in ("api", "db", "cache"):
        mine = [(e, ts, is_late) for e, ts, is_late in beats if e["service"] == service]
        last, last_ts, _ = max(mine, key=lambda b: b[1])
        values = pipe.values(series_key("health", service), NOW, states)
        assert values["latest"] == {
            "status": last["status"],
            "ts": last_ts,
            "age_s": (NOW - last_ts) / 1000,
            "response_time_ms": last.get("response_time_ms"),
        }
        for label, window_s in WINDOWS:
            first = window_first(NOW, window_s)
            inside = [e for e, ts, is_late in mine if first <= ts <= NOW and not is_late]
            assert values["windows"][label] == {
                "heartbeats": len(inside),
                "unhealthy": sum(1 for e in inside if e["status"] == "unhealthy"),
            }
        labels = {"service": service}
        up = 1.0 if last["status"] == "healthy" else 0.0
        assert ("", labels, up) in families["o4o_service_up"].samples
        stamp = families["o4o_service_last_heartbeat_timestamp_seconds"].samples
        assert ("", labels, last_ts / 1000) in stamp
        rt = [v for _, lab, v in families["o4o_service_response_time_seconds"].samples if lab == labels]
        want_rt = last.get("response_time_ms")
        assert rt == ([] if want_rt is None else [want_rt / 1000])


def test_gauges_keep_the_latest_value_by_event_time() -> None:
    r = random.Random(4)
    series = [
        ("db_connection_pool", {"pool": "main"}),
        ("db_connection_pool", {"region": "kr", "pool": "replica"}),
        ("queue_depth", {}),
        ("active_users", {"source": "crm"}),  # a catalogue name: exported under another name
    ]
    events: list[tuple[dict[str, Any], int]] = []
    for name, labels in series:
        for ts in r.sample(range(NOW - 3_600_000, NOW), 15):
            shuffled = dict(sorted(labels.items(), key=lambda _: r.random()))  # label order is irrelevant
            events.append(({"name": name, "value": r.uniform(-5, 500), "labels": shuffled}, ts))
    r.shuffle(events)
    pipe = Pipeline()
    for i, chunk in enumerate(chunks(events, 4)):
        pipe.flush("gauge", chunk, late=i % 5 == 0, partition=i % 2)
    states = pipe.states()
    families = {f.name: f for f in prometheus_families(states, NOW, CONFIG)}
    assert sum(1 for key in states if parse_key(key)[0] == "gauge") == len(series)
    for name, labels in series:
        mine = [(e, ts) for e, ts in events if e["name"] == name and e["labels"] == labels]
        last, last_ts = max(mine, key=lambda pair: pair[1])
        key = series_key("gauge", name, orjson.dumps(labels, option=orjson.OPT_SORT_KEYS).decode())
        values = pipe.values(key, NOW, states)
        assert values["latest"] == {"value": last["value"], "ts": last_ts}
        assert values["labels"] == {"name": name, "labels": labels}
        assert ("", labels, last["value"]) in families[gauge_metric_name(name)].samples
    assert gauge_metric_name("active_users") == "o4o_gauge_active_users"
    assert all(labels != {"source": "crm"} for _, labels, _ in families["o4o_active_users"].samples)


def exposed_names() -> set[str]:
    """Family names of the catalogue as /metrics shows them (counters without "_total")."""
    names = {m.name for m in WINDOW_METRICS} | {n for n, _ in STATE_FAMILIES}
    names |= {n for n, _, _ in TOTAL_FAMILIES} | {n for n, _ in LATENCY_METRICS.values()}
    return names | {n.removesuffix("_total") for n in names}


def test_gauge_metric_names_never_collide() -> None:
    catalogue = exposed_names()
    assert gauge_metric_name("db_connection_pool") == "o4o_db_connection_pool"
    assert gauge_metric_name("queue_depth") == "o4o_queue_depth"
    taken = sorted(n.removeprefix("o4o_") for n in catalogue if n.startswith("o4o_"))
    assert "errors" in taken and "revenue_by_currency" in taken  # counters, shown without _total
    for event_name in taken:
        assert gauge_metric_name(event_name) not in catalogue, event_name
    # No two gauge names share a family either (a family has one help text and unique samples).
    names = [*taken, *(f"gauge_{n}" for n in taken), "x", "gauge_x", "gauge_gauge_x", "db_connection_pool"]
    names += ["gauge_db_connection_pool", "o4o_x", "total", "errors_total", "gauge_errors_total"]
    mapped = {gauge_metric_name(n) for n in set(names)}
    assert len(mapped) == len(set(names))
    assert not set(mapped) & catalogue


def test_gauges_with_catalogue_names_export_as_their_own_families() -> None:
    pipe = Pipeline()
    events: list[tuple[dict[str, Any], int]] = [
        ({"name": name, "value": float(i), "labels": {"k": "v"}}, NOW - 1_000 + i)
        for i, name in enumerate(["active_users", "gauge_active_users", "errors", "revenue_total"])
    ]
    pipe.flush("gauge", events)
    pipe.flush("user", [(user_event(1), NOW - 500)])
    families = prometheus_families(pipe.states(), NOW, CONFIG)
    names = [f.name for f in families]
    assert len(names) == len(set(names))
    by_name = {f.name: f for f in families}
    for event, _ in events:
        family = by_name[gauge_metric_name(event["name"])]
        assert family.samples == [("", {"k": "v"}, event["value"])]
    assert all(lab.get("k") is None for _, lab, _ in by_name["o4o_active_users"].samples)


# --- calendar ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instant", "seoul", "utc"),
    [
        ("2026-11-30T23:59:59.999+09:00", ("d20261130", "m202611"), ("d20261130", "m202611")),
        ("2026-12-01T00:00:00+09:00", ("d20261201", "m202612"), ("d20261130", "m202611")),
        ("2026-12-01T08:59:59.999+09:00", ("d20261201", "m202612"), ("d20261130", "m202611")),
        ("2026-12-01T09:00:00+09:00", ("d20261201", "m202612"), ("d20261201", "m202612")),
        ("2026-12-31T23:59:59.999+09:00", ("d20261231", "m202612"), ("d20261231", "m202612")),
        ("2027-01-01T00:00:00+09:00", ("d20270101", "m202701"), ("d20261231", "m202612")),
        ("2028-02-28T23:59:59.999+09:00", ("d20280228", "m202802"), ("d20280228", "m202802")),
        ("2028-02-29T00:00:00+09:00", ("d20280229", "m202802"), ("d20280228", "m202802")),
        ("2028-02-29T23:59:59.999+09:00", ("d20280229", "m202802"), ("d20280229", "m202802")),
        ("2028-03-01T00:00:00+09:00", ("d20280301", "m202803"), ("d20280229", "m202802")),
    ],
)
def test_calendar_keys_in_seoul_and_in_utc(
    instant: str, seoul: tuple[str, str], utc: tuple[str, str]
) -> None:
    ts = at(instant)
    assert SEOUL.keys(ts) == seoul
    assert UTC.keys(ts) == utc
    assert (SEOUL.today(ts), SEOUL.this_month(ts)) == seoul
    assert (UTC.today(ts), UTC.this_month(ts)) == utc


def test_calendar_yesterday_and_period_ends() -> None:
    assert SEOUL.yesterday(at("2026-12-01T00:00:00+09:00")) == "d20261130"
    assert SEOUL.yesterday(at("2026-11-30T23:59:59.999+09:00")) == "d20261129"
    assert SEOUL.yesterday(at("2027-01-01T00:30:00+09:00")) == "d20261231"
    assert SEOUL.yesterday(at("2028-03-01T08:00:00+09:00")) == "d20280229"
    assert UTC.yesterday(at("2028-03-01T08:00:00+09:00")) == "d20280228"
    ends = {
        "d20261130": "2026-12-01T00:00:00+09:00",
        "m202611": "2026-12-01T00:00:00+09:00",
        "d20261231": "2027-01-01T00:00:00+09:00",
        "m202612": "2027-01-01T00:00:00+09:00",
        "d20280228": "2028-02-29T00:00:00+09:00",
        "d20280229": "2028-03-01T00:00:00+09:00",
        "m202802": "2028-03-01T00:00:00+09:00",
        "m202702": "2027-03-01T00:00:00+09:00",
    }
    for key, end in ends.items():
        assert SEOUL.end_ms(key) == at(end), key
        assert UTC.end_ms(key) == at(end.replace("+09:00", "+00:00")), key


@settings(max_examples=300, deadline=None)
@given(
    ts=st.integers(min_value=at("2000-01-01T00:00:00+00:00"), max_value=at("2100-01-01T00:00:00+00:00")),
    zone=st.sampled_from(["Asia/Seoul", "UTC", "America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe"]),
)
def test_property_calendar_keys_match_the_local_date(ts: int, zone: str) -> None:
    calendar = Calendar(zone)
    local = datetime.fromtimestamp(ts / 1000, ZoneInfo(zone))
    assert calendar.keys(ts) == (f"d{local:%Y%m%d}", f"m{local:%Y%m}")
    # The period holding ts ends after ts, and the day before it ended at or before ts.
    day, month = calendar.keys(ts)
    assert ts < calendar.end_ms(day) <= calendar.end_ms(month)
    assert calendar.end_ms(calendar.yesterday(ts)) <= ts


def revenue_orders(instants: Sequence[str], amounts: Sequence[float]) -> list[tuple[dict[str, Any], int]]:
    return [
        (order_event(i, "confirmed", a), at(t))
        for i, (t, a) in enumerate(zip(instants, amounts, strict=True))
    ]


REVENUE = series_key("revenue", "KRW")
MIDNIGHT_ORDERS = {
    "2026-11-15T10:00:00+09:00": 250_000.5,
    "2026-11-30T00:00:00+09:00": 0.1,
    "2026-11-30T23:59:59.999+09:00": 0.2,
    "2026-12-01T00:00:00+09:00": 1_234.56,
    "2026-12-01T00:00:00.001+09:00": 7.0,
    "2026-12-31T23:59:59.999+09:00": 3.3,
    "2027-01-01T00:00:00+09:00": 4.4,
    "2028-02-28T12:00:00+09:00": 10.01,
    "2028-02-29T00:00:00+09:00": 20.02,
    "2028-02-29T23:59:59.999+09:00": 30.03,
    "2028-03-01T00:00:00+09:00": 40.04,
}


def micro(amounts: Sequence[float]) -> int:
    return sum(round(a * MICRO) for a in amounts)


@pytest.mark.parametrize("zone", ["Asia/Seoul", "UTC"])
def test_daily_and_monthly_revenue_across_midnight_month_ends_and_a_leap_day(zone: str) -> None:
    calendar = Calendar(zone)
    pipe = Pipeline(calendar)
    events = revenue_orders(list(MIDNIGHT_ORDERS), list(MIDNIGHT_ORDERS.values()))
    # Arrival order, lateness and other statuses do not matter to the calendar figures.
    pipe.flush("order", events[::2], late=True)
    pipe.flush("order", events[1::2], partition=1)
    pipe.flush("order", [(order_event(99, "created", 5e6), at("2026-11-30T12:00:00+09:00"))])
    pipe.flush("order", [(order_event(98, "cancelled", 5e6), at("2028-02-29T12:00:00+09:00"))])

    def truth(now: int) -> tuple[int, int]:
        local = datetime.fromtimestamp(now / 1000, ZoneInfo(zone))
        days, months = [], []
        for instant, amount in MIDNIGHT_ORDERS.items():
            when = datetime.fromisoformat(instant).astimezone(ZoneInfo(zone))
            if when.date() == local.date():
                days.append(amount)
            if (when.year, when.month) == (local.year, local.month):
                months.append(amount)
        return micro(days), micro(months)

    states = pipe.states()
    reads = [*MIDNIGHT_ORDERS, "2026-11-30T08:59:59.999+09:00", "2026-11-30T09:00:00+09:00"]
    reads += ["2028-02-01T00:00:00+09:00", "2028-03-01T08:59:00+09:00", "2027-06-01T00:00:00+09:00"]
    nonzero = 0
    for instant in reads:
        now = at(instant)
        values = series_values(REVENUE, states[REVENUE], now, CONFIG, calendar)
        day, month = truth(now)
        assert values["today"]["period"] == calendar.today(now)[1:]
        assert values["this_month"]["period"] == calendar.this_month(now)[1:]
        assert (values["today"]["revenue_micro"], values["this_month"]["revenue_micro"]) == (day, month), (
            instant
        )
        assert values["today"]["revenue"] == day / MICRO
        nonzero += day > 0
    assert nonzero >= 8
    assert states[REVENUE].total == {"n": len(MIDNIGHT_ORDERS), "am": micro(list(MIDNIGHT_ORDERS.values()))}


def test_the_same_instants_land_on_other_days_in_another_time_zone() -> None:
    events = revenue_orders(["2026-11-30T23:59:59.999+09:00", "2026-12-01T00:00:00+09:00"], [1.0, 2.0])
    seoul, utc = Pipeline(SEOUL), Pipeline(UTC)
    seoul.flush("order", events)
    utc.flush("order", events)
    assert seoul.states()[REVENUE].periods == {
        "d20261130": {"n": 1, "am": 1_000_000},
        "m202611": {"n": 1, "am": 1_000_000},
        "d20261201": {"n": 1, "am": 2_000_000},
        "m202612": {"n": 1, "am": 2_000_000},
    }
    assert utc.states()[REVENUE].periods == {
        "d20261130": {"n": 2, "am": 3_000_000},
        "m202611": {"n": 2, "am": 3_000_000},
    }
    # Users' calendar days follow the same zone (the orders' users 0 and 1, then user 7).
    seoul.flush("user", [(user_event(7), at("2026-12-01T00:00:00+09:00"))])
    utc.flush("user", [(user_event(7), at("2026-12-01T00:00:00+09:00"))])
    seoul_days = {day: estimate(agg["xa"]) for day, agg in seoul.states()[USERS].periods.items()}
    utc_days = {day: estimate(agg["xa"]) for day, agg in utc.states()[USERS].periods.items()}
    assert seoul_days == {"d20261130": 1, "d20261201": 2}
    assert utc_days == {"d20261130": 3}


@pytest.mark.parametrize("calendar", [SEOUL, UTC], ids=["Asia/Seoul", "UTC"])
def test_retention_drops_period_cells_two_days_after_their_period_ends(calendar: Calendar) -> None:
    retention = Retention(610_000, 3_960_000, calendar)
    periods = ["d20261129", "d20261130", "m202611", "d20261201", "m202612", "d20280229", "m202802"]
    keys = [cell_key(REVENUE, PERIOD, p) for p in periods]
    forever = [cell_key(REVENUE, TOTAL), cell_key(INVENTORY, ENTITY, "p1"), cell_key(USERS, LATEST)]
    two_days = 2 * 86_400_000
    for period in periods:
        end = calendar.end_ms(period)
        key = cell_key(REVENUE, PERIOD, period)
        assert key not in retention.expired(keys, end - 1)
        assert key not in retention.expired(keys, end + two_days)
        assert key in retention.expired(keys, end + two_days + 1)
        # ... and the other periods follow their own ends.
        assert set(retention.expired(keys, end + two_days + 1)) == {
            cell_key(REVENUE, PERIOD, p)
            for p in periods
            if calendar.end_ms(p) + two_days < end + two_days + 1
        }
    # A Seoul day ends nine hours before the UTC day of the same name.
    nov30 = cell_key(REVENUE, PERIOD, "d20261130")
    assert (nov30 in retention.expired(keys, at("2026-12-03T00:00:00.001+09:00"))) == (calendar is SEOUL)
    assert nov30 in retention.expired(keys, at("2026-12-03T00:00:00.001+00:00"))
    # The month cell outlives its last day's cell: both go two days after the month ends.
    assert cell_key(REVENUE, PERIOD, "m202611") not in retention.expired(
        keys, calendar.end_ms("d20261129") + two_days + 1
    )
    assert retention.expired(forever, at("2100-01-01T00:00:00+00:00")) == []
    # Fine and coarse panes keep their own retention next to the calendar cells.
    now = at("2026-11-30T12:00:00+09:00")
    panes = [
        cell_key(REVENUE, FINE, now - 611_000 - now % PANE),
        cell_key(REVENUE, COARSE, now - 4_000_000 - now % 60_000),
    ]
    assert retention.expired(panes + keys + forever, now) == panes


# --- cardinality guard -------------------------------------------------------------------------------


def test_guard_folds_values_past_the_limit_and_counts_the_events() -> None:
    guard = LabelGuard({"route": 3})
    assert not guard.changed
    assert [guard.admit("route", f"/r{i}", i + 1) for i in range(6)] == [
        "/r0",
        "/r1",
        "/r2",
        OTHER,
        OTHER,
        OTHER,
    ]
    assert guard.changed
    assert guard.admit("route", "/r1", 10) == "/r1"  # admitted values stay admitted
    assert guard.admit("route", "/r5", 2) == OTHER  # folded ones stay folded
    assert guard.take_folds() == Counter({"route": 4 + 5 + 6 + 2})
    assert guard.take_folds() == Counter()
    guard.changed = False
    guard.admit("route", "/r0")
    guard.admit("route", "/new")
    assert not guard.changed  # neither a known value nor a fold changes the admitted set
    assert guard.admit("unlisted", "x") == "x"  # dimensions without a limit admit (practically) all
    assert guard.changed
    assert guard.snapshot() == {"route": ["/r0", "/r1", "/r2"], "unlisted": ["x"]}


admissions_st = st.lists(
    st.tuples(
        st.sampled_from(["route", "service", "method"]), st.integers(0, 12).map(str), st.integers(1, 5)
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(first=admissions_st, second=admissions_st, limit=st.integers(1, 8))
def test_property_a_guard_restored_from_its_snapshot_folds_like_the_original(
    first: list[tuple[str, str, int]], second: list[tuple[str, str, int]], limit: int
) -> None:
    limits = {"route": limit, "service": limit + 3, "method": 2}
    original = LabelGuard(limits)
    out_first = [original.admit(*a) for a in first]
    folds_first = original.take_folds()
    record = orjson.dumps(original.snapshot())  # what the flushlog keeps
    out_second = [original.admit(*a) for a in second]
    folds_second = original.take_folds()
    later = original.snapshot()
    # The admitted set only grows, and never past its limit.
    for dimension, values in orjson.loads(record).items():
        assert set(values) <= set(later[dimension])
    assert all(len(values) <= limits[dim] for dim, values in later.items())
    # Folded events are exactly the events whose value was not admitted.
    for admissions, out, folds in ((first, out_first, folds_first), (second, out_second, folds_second)):
        for dimension in limits:
            want = sum(
                n
                for (dim, _, n), got in zip(admissions, out, strict=True)
                if dim == dimension and got == OTHER
            )
            assert folds[dimension] == want
    # A guard restored from the record folds the next flush exactly like the original did ...
    restored = LabelGuard(limits, orjson.loads(record))
    assert [restored.admit(*a) for a in second] == out_second
    assert restored.take_folds() == folds_second
    assert restored.snapshot() == later
    # ... and a replay of an earlier flush under a later record folds it as it was folded then.
    replay = LabelGuard(limits, later)
    assert [replay.admit(*a) for a in first] == out_first
    assert replay.take_folds() == folds_first
    # Below the limit nothing folds.
    roomy = LabelGuard({dim: 13 for dim in limits})
    assert [roomy.admit(*a) for a in first + second] == [value for _, value, _ in first + second]
    assert roomy.take_folds() == Counter()


def test_below_the_default_limits_nothing_folds() -> None:
    pipe = Pipeline()
    requests = []
    for i in range(LIMITS["route"]):
        event = request_event(route=f"/r/{i}")
        event["service"] = f"svc-{i % LIMITS['service']}"
        event["method"] = chr(ord("A") + i % LIMITS["method"])
        requests.append((event, NOW))
    pipe.flush("request", requests)
    currencies = [f"Q{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(LIMITS["currency"])]
    pipe.flush("order", [(order_event(i, "confirmed", 1, c, f"r{i}"), NOW) for i, c in enumerate(currencies)])
    assert pipe.guard.folds == Counter()
    assert all(OTHER not in parse_key(key)[1] for key in pipe.states())
    assert pipe.folds("route") == pipe.folds("service") == pipe.folds("method") == pipe.folds("currency") == 0
    assert len([k for k in pipe.states() if parse_key(k)[0] == "http"]) == LIMITS["route"]


def test_fold_counts_are_the_folded_events_of_every_accumulator() -> None:
    limits = {**LIMITS, "currency": 1, "user_role": 2, "service": 1, "product": 2, "gauge": 1}
    pipe = Pipeline(limits=limits)
    # A cancelled order in a currency of its own does not take revenue's only currency slot.
    orders = [(order_event(1, "cancelled", 5, "EUR"), NOW), (order_event(2, "created", 6, "JPY"), NOW)]
    orders += [
        (order_event(i, "confirmed", 10, "KRW", ("customer", "business")[i % 2]), NOW) for i in range(4)
    ]
    orders += [(order_event(i, "confirmed", 20, "USD", "affiliate"), NOW) for i in range(3)]
    orders += [(order_event(i, "refunded", 20, "USD", "reseller"), NOW) for i in range(2)]
    pipe.flush("order", orders)
    assert pipe.folds("currency") == 3  # the confirmed USD orders: the only ones in a revenue series
    assert pipe.folds("user_role") == 5  # affiliate and reseller orders
    revenue = {parse_key(k)[1] for k in pipe.states() if parse_key(k)[0] == "revenue"}
    assert revenue == {("KRW",), (OTHER,)}
    assert pipe.states()[series_key("revenue", OTHER)].total == {"n": 3, "am": 60 * MICRO}

    # Heartbeats of a folded service: each one counts once, late ones included.
    beats = [({"service": "api", "status": "healthy"}, NOW - 1_000)]
    beats += [({"service": "db", "status": "unhealthy"}, NOW - i) for i in range(3)]
    pipe.flush("heartbeat", beats)
    assert pipe.folds("service") == 3
    late = [({"service": "db", "status": "healthy"}, NOW - 3_600_000 - i) for i in range(4)]
    pipe.flush("heartbeat", late, late=True)
    assert pipe.folds("service") == 7
    states = pipe.states()
    assert series_key("health", "db") not in states
    assert states[series_key("health", OTHER)].latest is None  # no latest state for a mix of services
    assert sum(agg["n"] for agg in states[series_key("health", OTHER)].fine.values()) == 3

    # Products and gauges past their limits: their states are dropped, one count per state.
    stock = [(inventory_event(f"p{i}", 5, 1, 1), NOW - i) for i in (1, 2, 3, 3, 4)]
    pipe.flush("inventory", stock)
    assert set(pipe.states()[INVENTORY].entities) == {"p1", "p2"}
    assert pipe.folds("product") == 2  # p3 (two updates, one state) and p4
    assert pipe.values(INVENTORY, NOW)["windows"]["1m"]["units_sold"] == 5  # units sold never fold
    gauges: list[tuple[dict[str, Any], int]] = [
        ({"name": n, "value": 1.0, "labels": {}}, NOW) for n in ("a", "b", "b")
    ]
    pipe.flush("gauge", gauges)
    assert pipe.folds("gauge") == 1
    assert [k for k in pipe.states() if parse_key(k)[0] == "gauge"] == [series_key("gauge", "a", "{}")]


def test_a_hundred_thousand_distinct_routes_stay_bounded() -> None:
    limit = LIMITS["route"]
    minute = NOW - NOW % COARSE_MS
    events = [
        (request_event(route=f"/r/{i}", status=500 if i % 10 == 0 else 200), minute + (i * 7) % COARSE_MS)
        for i in range(100_000)
    ]
    # Stage 1: ten flushes of 10k events with the default limits.
    guard = LabelGuard(LIMITS)
    metrics = PipelineMetrics(registry := CollectorRegistry())
    blocks: list[Parts] = []
    for chunk in chunks(events, 10_000):
        acc = ACCUMULATORS["request"]()
        for event, ts in chunk:
            acc.add(typed("request", event), ts - ts % PANE, False, ts)
        blocks.append(acc.parts(FlushContext(SEOUL, guard)))
        for dimension, folded in guard.take_folds().items():
            metrics.folds.labels(dimension).inc(folded)
    record = orjson.dumps(guard.snapshot())

    # Stage 2 and the guard as a restart restores it, measured.
    tracemalloc.start()
    try:
        restored = LabelGuard(LIMITS, orjson.loads(record))
        cells: dict[str, Any] = {}
        for i, parts in enumerate(blocks):
            apply_block(cells, "request:0", (i + 1) * 10_000 - 1, series_parts(parts), COARSE_MS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"stage 2 and the guard peaked at {peak / 2**20:.1f} MiB"

    states = group_cells(cells.items())
    kinds = Counter(parse_key(key)[0] for key in states)
    assert kinds["http"] <= 2 * (limit + 1)  # two status codes
    assert kinds["route"] <= limit + 1
    assert kinds["requests"] == 1
    assert len(states) <= 3 * (limit + 1) + 1
    routes = {labels[1] for kind, labels in map(parse_key, states) if kind in ("http", "route")}
    assert len(routes) == limit + 1 and OTHER in routes
    assert len(cells) <= 3 * (limit + 1) + 2 * (limit + 1) + 10

    # Totals, __other__ included, are exact.
    http = [state.total for key, state in states.items() if parse_key(key)[0] == "http"]
    assert sum(t["n"] for t in http if t) == len(events)
    requests = states[series_key("requests")]
    assert sum(agg["n"] for agg in requests.fine.values()) == len(events)
    assert sum(agg["e5"] for agg in requests.coarse.values()) == len(events) // 10
    per_route = [
        agg["n"] for key, s in states.items() if parse_key(key)[0] == "route" for agg in s.fine.values()
    ]
    assert sum(per_route) == len(events)
    other = states[series_key("route", "api", OTHER)]
    assert sum(agg["n"] for agg in other.coarse.values()) == len(events) - limit
    window = series_values(series_key("route", "api", OTHER), other, minute + 59_999, CONFIG, SEOUL)
    assert window["windows"]["1m"]["count"] == len(events) - limit

    # pulse_label_folds_total counts exactly the folded events: every route past the first 1000.
    assert registry.get_sample_value("pulse_label_folds_total", {"dimension": "route"}) == len(events) - limit
    assert not registry.get_sample_value("pulse_label_folds_total", {"dimension": "service"})
    assert restored.snapshot() == guard.snapshot()
    assert len(restored.admitted["route"]) == limit

    # A replay of the first flush with the restored guard folds it exactly as the first run did.
    replayed = ACCUMULATORS["request"]()
    for event, ts in events[:10_000]:
        replayed.add(typed("request", event), ts - ts % PANE, False, ts)
    assert replayed.parts(FlushContext(SEOUL, restored)) == blocks[0]
    assert restored.take_folds() == Counter({"route": 10_000 - limit})


# --- retention over a long run -------------------------------------------------------------------------


def test_cells_stay_flat_over_48_hours_of_events() -> None:
    windows = CONFIG.windows
    retention = Retention(int(windows.retention_fine() * 1000), int(windows.retention_coarse() * 1000), SEOUL)
    pipe = Pipeline()
    start = at("2026-11-29T12:00:00+09:00")
    routes = ["/a", "/b", "/c"]
    kinds = ("request", "error", "order", "user", "inventory", "heartbeat", "gauge")
    buffers: dict[str, list[tuple[dict[str, Any], int]]] = {kind: [] for kind in kinds}
    sent: Counter[str] = Counter()
    request_times: list[int] = []
    confirmed: list[tuple[int, float]] = []
    last_beat: dict[str, int] = {}
    seen: dict[int, tuple[Counter[str], set[str]]] = {}
    for minute in range(48 * 60):
        t = start + minute * 60_000
        for j, route in enumerate(routes):
            event = request_event((minute * 3 + j) % 40, route, 500 if minute % 7 == 0 else 200)
            buffers["request"].append((event, t + j * 20_000))
            request_times.append(t + j * 20_000)
        error = {"service": "api", "route": routes[minute % 3], "error_code": "E1", "message": "boom"}
        buffers["error"].append((error, t + 5_000))
        status = "confirmed" if minute % 2 else "created"
        amount = 1000 + minute % 17 + 0.25
        buffers["order"].append((order_event(f"u{minute % 40}", status, amount), t + 30_000))
        if status == "confirmed":
            confirmed.append((t + 30_000, amount))
        buffers["user"].append((user_event(f"u{minute % 45}", minute % 60 == 0), t + 10_000))
        buffers["inventory"].append(
            (inventory_event(f"p{minute % 10}", 100 - minute % 50, 20, minute % 4), t + 15_000)
        )
        service = ("api", "db")[minute % 2]
        beat = {
            "service": service,
            "status": "unhealthy" if minute % 11 == 0 else "healthy",
            "response_time_ms": 5,
        }
        buffers["heartbeat"].append((beat, t + 25_000))
        last_beat[service] = t + 25_000
        gauge = {"name": "queue_depth", "value": float(minute), "labels": {"queue": ("a", "b")[minute % 2]}}
        buffers["gauge"].append((gauge, t + 35_000))
        now = t + 60_000
        if minute % 5 != 4:
            continue
        for kind, events in buffers.items():
            sent[kind] += len(events)
            pipe.flush(kind, events)
            events.clear()
        if minute % 60 == 59:  # a very late confirmed order: totals and calendar, no pane
            pipe.flush("order", [(order_event("late", "confirmed", 5.5), now - 7_200_000)], late=True)
            sent["order"] += 1
            confirmed.append((now - 7_200_000, 5.5))
        for key in retention.expired(list(pipe.cells), now):
            del pipe.cells[key]
        if (minute + 1) % 60:
            continue
        hours = (minute + 1) // 60
        # Totals keep growing with every event; windows still see every pane they need.
        states = pipe.states()
        http_n = sum(s.total["n"] for k, s in states.items() if parse_key(k)[0] == "http" and s.total)
        assert http_n == sent["request"] == len(request_times)
        assert (
            sum(s.total["n"] for k, s in states.items() if parse_key(k)[0] == "errors" and s.total)
            == sent["error"]
        )
        orders_n = sum(s.total["n"] for k, s in states.items() if parse_key(k)[0] == "orders" and s.total)
        assert orders_n == sent["order"]
        revenue = pipe.values(REVENUE, now, states)
        assert revenue["total"]["amount_micro"] == micro([a for _, a in confirmed])
        assert revenue["today"]["revenue_micro"] == micro(
            [a for ts, a in confirmed if local_day(ts) == local_day(now)]
        )
        first = window_first(now, 3600)
        assert pipe.values(series_key("requests"), now, states)["windows"]["1h"]["count"] == sum(
            1 for ts in request_times if first <= ts <= now
        )
        assert pipe.values(INVENTORY, now, states)["stock"]["products"] == 10
        for service, ts in last_beat.items():
            assert pipe.values(series_key("health", service), now, states)["latest"]["ts"] == ts
        if hours in (2, 24, 48):
            seen[hours] = (Counter(split_cell_key(key)[1] for key in pipe.cells), set(states))

    panes = {h: res[FINE] + res[COARSE] for h, (res, _) in seen.items()}
    lasting = {h: res[TOTAL] + res[LATEST] + res[ENTITY] for h, (res, _) in seen.items()}
    periods = {h: res[PERIOD] for h, (res, _) in seen.items()}
    assert seen[2][1] == seen[24][1] == seen[48][1]  # the same series all along
    assert max(panes.values()) - min(panes.values()) <= 2, panes
    assert lasting[2] == lasting[24] == lasting[48], lasting
    # Calendar cells: one per day (revenue, users) and month (revenue) not yet two days past its end.
    assert periods == {2: 3, 24: 5, 48: 8}
    # Two days after the run, only this month's revenue cell is left of the calendar cells.
    later = at("2026-12-04T12:00:00+09:00")
    for key in retention.expired(list(pipe.cells), later):
        del pipe.cells[key]
    assert [split_cell_key(k)[1:] for k in pipe.cells if split_cell_key(k)[1] == PERIOD] == [
        (PERIOD, "m202612")
    ]
    assert not any(split_cell_key(k)[1] in (FINE, COARSE) for k in pipe.cells)
    assert sum(1 for k in pipe.cells if split_cell_key(k)[1] in (TOTAL, LATEST, ENTITY)) == lasting[48]
