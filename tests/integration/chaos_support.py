"""Support of the chaos test: paced traffic with known events, a disruption plan, and comparisons with
ground truth that list every difference. (Reading topics to their end offsets and the proof of
quiescence are tests.support.kafka and tests.support.quiet.)"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from schemas.events import TOPIC_OF_TYPE
from tests.support.cluster import Worker
from tests.support.groundtruth import exact_quantile, make_events, truth, window_truth
from tests.support.metrics import by_label, parse_metrics

TICK_S = 0.1
"""The publisher sends one tick of traffic every TICK_S."""
PANE_MS = 10_000
COUNTED = ("request", "order", "error")

Events = list[tuple[str, dict[str, Any]]]


# -- traffic ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Traffic:
    """What the publisher sends: the same for a given seed (only the timestamps follow the clock).

    Every tick carries `per_tick` (requests, orders, errors) from `make_events`, with event times in
    the 100 ms before it is sent, plus `route_per_tick` healthy requests of the watched `route`; from
    `burst[0]` to `burst[1]` seconds the route also gets `burst_per_tick` 503s, which makes its 1m
    error ratio climb past the extra rule's threshold. A share `singles` of each tick's events goes
    out one per message, the rest in envelopes of 10-50 events of one type.
    """

    seed: int
    duration_s: float = 90.0
    per_tick: tuple[int, int, int] = (180, 20, 10)
    service: str = "api"
    route: str = "/api/chaos/checkout"
    route_per_tick: int = 3
    burst: tuple[float, float] = (35.0, 50.0)
    burst_per_tick: int = 30
    singles: float = 0.3
    envelope: tuple[int, int] = (10, 50)

    @property
    def ticks(self) -> int:
        return round(self.duration_s / TICK_S)

    @property
    def rate(self) -> float:
        """Events per second outside the burst."""
        return (sum(self.per_tick) + self.route_per_tick) / TICK_S

    def events(self, tick: int, now_ms: int) -> Events:
        n_requests, n_orders, n_errors = self.per_tick
        spread = int(TICK_S * 1000) - 1
        out = make_events(n_requests, n_orders, n_errors, self.seed * 10_000 + tick, now_ms, spread)
        rng = random.Random(f"{self.seed}/{tick}/route")
        burst = self.burst[0] <= tick * TICK_S < self.burst[1]
        watched = [200] * self.route_per_tick + ([503] * self.burst_per_tick if burst else [])
        for i, status in enumerate(watched):
            event = {
                "service": self.service,
                "method": "POST",
                "route": self.route,
                "status_code": status,
                "duration_ms": round(rng.uniform(5, 400), 3),
                "ts": now_ms - rng.randint(0, spread),
                "event_id": f"c{self.seed}-{tick}-{i}",
            }
            out.append(("request", event))
        return out

    def messages(self, tick: int, events: Events) -> list[tuple[str, bytes]]:
        """(event type, message value): single events and envelopes, shuffled."""
        rng = random.Random(f"{self.seed}/{tick}/pack")
        by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for kind, event in events:
            by_kind[kind].append(event)
        out: list[tuple[str, bytes]] = []
        for kind, items in by_kind.items():
            single = round(len(items) * self.singles)
            out.extend((kind, orjson.dumps(item)) for item in items[:single])
            i = single
            while i < len(items):
                n = rng.randint(*self.envelope)
                out.append((kind, orjson.dumps(items[i : i + n])))
                i += n
        rng.shuffle(out)
        return out


class Publisher(threading.Thread):
    """Publish the traffic at its pace with an aiokafka producer of its own; keep what was sent.

    A tick that is due is sent at once, so a slow moment is caught up (its events carry the time they
    were sent). At the end every send future is awaited: `done` is set only when the broker
    acknowledged every message, and `error` holds the first failure.
    """

    def __init__(self, bootstrap: str, prefix: str, traffic: Traffic) -> None:
        super().__init__(daemon=True, name="chaos-publisher")
        self.bootstrap = bootstrap
        self.topics = {kind: prefix + topic for kind, topic in TOPIC_OF_TYPE.items()}
        self.traffic = traffic
        self.sent: Events = []
        self.messages = 0
        self.tick = 0
        self.behind_s = 0.0
        """The longest a tick was sent after it was due."""
        self.error: BaseException | None = None
        self.t0 = 0.0
        self.sent_at = 0.0
        """Monotonic time the last tick was handed to the producer."""
        self.acked_at = 0.0
        self.began = threading.Event()
        self.done = threading.Event()
        self.abort = threading.Event()

    def elapsed(self) -> float:
        """Seconds of traffic so far (0 before it starts)."""
        return time.monotonic() - self.t0 if self.t0 else 0.0

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.began.set()

    async def _main(self) -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, linger_ms=5, acks="all", max_request_size=8 << 20
        )
        await producer.start()
        futures: list[asyncio.Future[Any]] = []
        try:
            self.t0 = time.monotonic()
            self.began.set()
            for tick in range(self.traffic.ticks):
                if self.abort.is_set():
                    return
                delay = self.t0 + tick * TICK_S - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    self.behind_s = max(self.behind_s, -delay)
                events = self.traffic.events(tick, int(time.time() * 1000))
                for kind, value in self.traffic.messages(tick, events):
                    futures.append(await producer.send(self.topics[kind], value))
                    self.messages += 1
                self.sent.extend(events)
                self.tick = tick + 1
                if tick % 50 == 49:
                    futures = _settled(futures)
            self.sent_at = time.monotonic()
            await asyncio.wait_for(asyncio.gather(*futures), 60)
            self.acked_at = time.monotonic()
            self.done.set()
        finally:
            await producer.stop()


def _settled(futures: list[asyncio.Future[Any]]) -> list[asyncio.Future[Any]]:
    """Raise the first failed send; return the sends still in flight."""
    for future in futures:
        if future.done() and future.exception() is not None:
            raise AssertionError(f"publishing failed: {future.exception()!r}")
    return [f for f in futures if not f.done()]


# -- the input topics, read back ---------------------------------------------------------------------


def decode_events(records: list[Any], kind_of: dict[str, str]) -> Events:
    """The events in input records (single events and envelopes)."""
    out: Events = []
    for record in records:
        value = orjson.loads(record.value)
        kind = kind_of[record.topic]
        out.extend((kind, e) for e in (value if isinstance(value, list) else [value]))
    return out


# -- workers and disruptions ------------------------------------------------------------------------


@dataclass
class Member:
    """One worker process of the test, and what happened to it."""

    name: str
    worker: Worker
    joined_at: float
    """Seconds of traffic when it was started (negative: before the traffic)."""
    state: str = "live"
    """live, killed (SIGKILL) or stopped (SIGTERM sent)."""
    ended_at: float | None = None
    exit_code: int | None = None
    overlapped: float | None = None
    """pulse_cells_overlapped_total at its last scrape."""
    scraped_at: float | None = None

    def scrape(self, at: float, timeout: float = 3.0) -> None:
        """Remember its overlap counter (a killed worker's last scrape is all there will be)."""
        try:
            text = httpx.get(f"{self.worker.url}/metrics", timeout=timeout).text
        except httpx.HTTPError:
            return
        for (name, _), value in parse_metrics(text).items():
            if name == "pulse_cells_overlapped_total":
                self.overlapped, self.scraped_at = value, at

    def kill(self, at: float) -> None:
        self.scrape(at)
        self.worker.kill()
        self.state, self.ended_at = "killed", at
        self.exit_code = self.worker.returncode

    def terminate(self, at: float) -> None:
        """SIGTERM, not waited for: the worker drains and leaves the group while traffic goes on."""
        self.scrape(at)
        self.worker.terminate()
        self.state, self.ended_at = "stopped", at

    def describe(self) -> str:
        ended = f", {self.state} at {self.ended_at:.1f}s" if self.ended_at is not None else ""
        code = f", exit {self.exit_code}" if self.exit_code is not None else ""
        pid = self.worker.proc.pid if self.worker.proc is not None else None
        where = f"pid {pid}, port {self.worker.port}"
        return f"{self.name} ({where}, joined {self.joined_at:.1f}s{ended}{code})"


@dataclass
class Disruption:
    at: float
    """Planned second of traffic."""
    kind: str
    """kill (SIGKILL), stop (SIGTERM) or join (a new worker)."""
    target: str
    done_at: float | None = None
    note: str = ""

    def describe(self) -> str:
        done = f"done at {self.done_at:.1f}s" if self.done_at is not None else "not done"
        return (
            f"{self.at:5.1f}s {self.kind:<4} {self.target:<4} ({done}{', ' + self.note if self.note else ''})"
        )


def plan_disruptions(
    rng: random.Random, initial: int, count: int = 8, start: float = 6.0, end: float = 82.0, most: int = 4
) -> list[Disruption]:
    """A seeded schedule: one disruption per equal slot of [start, end], at a random point of it.

    The kinds are a shuffle of one of each and `count - 3` random ones; a kill or stop that would
    leave no worker becomes a join, and a join past `most` workers becomes a kill or stop. Victims
    are drawn among the workers alive at that point of the plan, so the plan depends on the seed only.
    """
    kinds = ["kill", "stop", "join"] + [rng.choice(["kill", "stop", "join"]) for _ in range(count - 3)]
    rng.shuffle(kinds)
    alive = [f"w{i}" for i in range(initial)]
    next_index = initial
    slot = (end - start) / count
    out: list[Disruption] = []
    for i, kind in enumerate(kinds):
        at = round(start + i * slot + rng.uniform(0, slot * 0.7), 1)
        if kind != "join" and len(alive) == 1:
            kind = "join"
        elif kind == "join" and len(alive) >= most:
            kind = rng.choice(["kill", "stop"])
        if kind == "join":
            target = f"w{next_index}"
            next_index += 1
            alive.append(target)
        else:
            target = rng.choice(alive)
            alive.remove(target)
        out.append(Disruption(at, kind, target))
    return out


# -- comparisons with ground truth ------------------------------------------------------------------


class Diffs:
    """Differences from ground truth, by figure."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.by_figure: Counter[str] = Counter()

    def compare(self, figure: str, got: dict[Any, Any], want: dict[Any, Any]) -> None:
        for key in sorted(set(got) | set(want), key=repr):
            if got.get(key) != want.get(key):
                self.add(figure, f"{key}: got {got.get(key)!r}, want {want.get(key)!r}")

    def add(self, figure: str, text: str) -> None:
        self.by_figure[figure] += 1
        self.items.append(f"{figure} {text}")

    def report(self, limit: int = 60) -> str:
        head = "\n  ".join(self.items[:limit])
        more = f"\n  ... and {len(self.items) - limit} more" if len(self.items) > limit else ""
        return f"{len(self.items)} differences {dict(self.by_figure)}:\n  {head}{more}"


def merged_series(live: list[Member], at_ms: int, diffs: Diffs) -> dict[str, dict[str, Any]]:
    """Union of the live workers' series; a series served by two workers is a difference."""
    merged: dict[str, dict[str, Any]] = {}
    owner: dict[str, str] = {}
    for member in live:
        for item in member.worker.series(at_ms)["series"]:
            key = item["key"]
            if key in merged:
                diffs.add("owned", f"series {key} served by {owner[key]} and {member.name}")
            merged[key], owner[key] = item, member.name
    return merged


def count_events(live: list[Member]) -> int:
    """Requests, orders and errors counted in all-time totals over the live workers."""
    total = 0
    for member in live:
        for item in member.worker.series()["series"]:
            if item["kind"] in ("http", "orders", "errors"):
                total += item["total"]["count"]
    return total


def _of(series: dict[str, dict[str, Any]], kind: str, *labels: str) -> dict[Any, dict[str, Any]]:
    out = {}
    for item in series.values():
        if item["kind"] == kind:
            key = tuple(item["labels"][name] for name in labels)
            out[key[0] if len(key) == 1 else key] = item
    return out


def check_totals(series: dict[str, dict[str, Any]], events: Events, diffs: Diffs) -> None:
    """All-time totals: requests per http series (count, µs, buckets), orders, revenue, errors."""
    want = truth(events)
    http = {k: v["total"] for k, v in _of(series, "http", "method", "route", "status_code").items()}
    diffs.compare("http.count", {k: v["count"] for k, v in http.items()}, dict(want.http))
    diffs.compare("http.sum_us", {k: v["sum_us"] for k, v in http.items()}, dict(want.http_us))
    diffs.compare("http.buckets", {k: v["buckets"] for k, v in http.items()}, want.http_buckets)
    orders = {k: v["total"]["count"] for k, v in _of(series, "orders", "status", "user_role").items()}
    diffs.compare("orders.count", orders, dict(want.orders))
    revenue = {k: v["total"]["amount_micro"] for k, v in _of(series, "revenue", "currency").items()}
    diffs.compare("revenue.micro", revenue, dict(want.revenue_micro))
    errors = {k: v["total"]["count"] for k, v in _of(series, "errors", "service", "route").items()}
    diffs.compare("errors.count", errors, dict(want.errors))


def check_windows(series: dict[str, dict[str, Any]], events: Events, at_ms: int, diffs: Diffs) -> None:
    """1m and 5m windows at `at_ms`: per route and overall counts, 5xx, ratios, quantiles (1%),
    created orders, orders per status and role, revenue per currency, errors per endpoint."""
    routes = _of(series, "route", "service", "route")
    overall = next((v for v in series.values() if v["kind"] == "requests"), None)
    orders_all = next((v for v in series.values() if v["kind"] == "orders_all"), None)
    orders = _of(series, "orders", "status", "user_role")
    revenue = _of(series, "revenue", "currency")
    errors = _of(series, "errors", "service", "route")

    def windowed(items: dict[Any, dict[str, Any]], label: str, figure: str) -> dict[Any, Any]:
        return {k: v["windows"][label][figure] for k, v in items.items() if v["windows"][label]["count"]}

    for label, window_ms in (("1m", 60_000), ("5m", 300_000)):
        want = window_truth(events, at_ms, window_ms, PANE_MS)
        diffs.compare(
            f"route[{label}].count",
            windowed(routes, label, "count"),
            {k: len(v) for k, v in want["routes"].items()},
        )
        groups: list[tuple[str, list[dict[str, Any]], dict[str, Any] | None]] = [
            (f"route[{label}]{key}", items, routes[key]["windows"][label] if key in routes else None)
            for key, items in want["routes"].items()
        ]
        groups.append((f"requests[{label}]", want["all"], overall["windows"][label] if overall else None))
        for name, items, got in groups:
            if got is None:
                diffs.add(name, "missing")
                continue
            bad = sum(e["status_code"] >= 500 for e in items)
            expected = {"count": len(items), "errors_5xx": bad, "error_ratio": bad / len(items)}
            for figure, value in expected.items():
                if got.get(figure) != value:
                    diffs.add(name, f"{figure}: got {got.get(figure)!r}, want {value!r}")
            for q in (0.5, 0.95, 0.99):
                exact = exact_quantile([e["duration_ms"] for e in items], q)
                value = got.get(f"p{round(q * 100)}_ms")
                if value is None or abs(value - exact) > 0.01 * exact:
                    diffs.add(name, f"p{round(q * 100)}_ms: got {value}, want {exact} within 1%")
        created = orders_all["windows"][label]["created"] if orders_all else None
        if created != want["created"]:
            diffs.add(f"orders_all[{label}].created", f"got {created}, want {want['created']}")
        want_orders: Counter[tuple[str, str]] = Counter(
            (e["status"], e["user_role"])
            for kind, e in events
            if kind == "order" and _inside(e["ts"], at_ms, window_ms)
        )
        diffs.compare(f"orders[{label}].count", windowed(orders, label, "count"), dict(want_orders))
        diffs.compare(
            f"revenue[{label}].count",
            windowed(revenue, label, "count"),
            {k: len(v) for k, v in want["confirmed"].items()},
        )
        diffs.compare(
            f"revenue[{label}].micro",
            windowed(revenue, label, "revenue_micro"),
            {k: sum(round(a * 1_000_000) for a in v) for k, v in want["confirmed"].items()},
        )
        diffs.compare(f"errors[{label}].count", windowed(errors, label, "count"), dict(want["errors"]))


def _inside(ts: int, at_ms: int, window_ms: int) -> bool:
    last = at_ms - at_ms % PANE_MS
    pane = ts - ts % PANE_MS
    return last - window_ms + PANE_MS <= pane <= last


SERIES_METRICS = ("http_", "orders_total", "revenue_total", "o4o_")


def check_metrics(live: list[Member], events: Events, diffs: Diffs) -> dict[str, float]:
    """/metrics: no series sample exported by two workers, http_requests_total and orders_total summed
    equal ground truth, and the pipeline's own counters summed (returned)."""
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
    summed: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
    for member in live:
        samples = member.worker.metrics()
        member.overlapped = samples.get(("pulse_cells_overlapped_total", ()), member.overlapped)
        for key, value in samples.items():
            if key[0].startswith(SERIES_METRICS):
                if key in seen:
                    diffs.add("metrics", f"{key} exported by {seen[key]} and {member.name}")
                seen[key] = member.name
            summed[key] += value
    want = truth(events)
    got_http = {
        k: int(v)
        for k, v in by_label(summed, "http_requests_total", "method", "route", "status_code").items()
    }
    diffs.compare("http_requests_total", got_http, dict(want.http))
    got_orders = {k: int(v) for k, v in by_label(summed, "orders_total", "status", "user_role").items()}
    diffs.compare("orders_total", got_orders, dict(want.orders))
    own = (
        "pulse_replays_total",
        "pulse_cells_skipped_total",
        "pulse_cells_overlapped_total",
        "pulse_read_holes_total",
    )
    return {name: sum(v for (n, _), v in summed.items() if n == name) for name in own}


# -- alerts -----------------------------------------------------------------------------------------


def alert_violations(records: list[Any]) -> tuple[list[str], dict[str, list[dict[str, Any]]]]:
    """Check every fingerprint's transitions, in log order, for a second firing of one incident.

    An incident fires once: no two `firing` transitions with the same `starts_at`, and no `firing`
    after a `firing` without a `resolved` between them (the incident never ended). Returns the
    violations and the transitions per fingerprint.
    """
    by_fp: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        if not record.value:
            continue
        alert = orjson.loads(record.value)
        alert["_where"] = f"{record.partition}@{record.offset}"
        by_fp[alert["fingerprint"]].append(alert)
    out: list[str] = []
    for fp, alerts in by_fp.items():
        fired: dict[Any, str] = {}
        open_since: dict[str, Any] | None = None
        for alert in alerts:
            if alert["state"] == "firing":
                where = alert["_where"]
                if alert["starts_at"] in fired:
                    out.append(
                        f"{alert['rule']} {fp} {alert['labels']}: fired twice for the incident starting "
                        f"{alert['starts_at']} (records {fired[alert['starts_at']]} and {where})"
                    )
                elif open_since is not None:
                    out.append(
                        f"{alert['rule']} {fp} {alert['labels']}: fired at {where} (starts_at "
                        f"{alert['starts_at']}) while the incident of {open_since['starts_at']} "
                        f"({open_since['_where']}) was never resolved"
                    )
                fired[alert["starts_at"]] = where
                open_since = alert
            elif alert["state"] == "resolved":
                open_since = None
    return out, dict(by_fp)


def repeated_transitions(by_fp: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Transitions published more than once (same id: fingerprint, incident start and state)."""
    ids = Counter(a["id"] for alerts in by_fp.values() for a in alerts)
    return [f"{i} published {n} times" for i, n in ids.items() if n > 1]


def summarize_alerts(by_fp: dict[str, list[dict[str, Any]]]) -> str:
    lines = []
    for fp, alerts in sorted(by_fp.items(), key=lambda item: item[1][0]["rule"]):
        states = " ".join(f"{a['state']}@{a['timestamp'][11:23]}" for a in alerts)
        lines.append(f"{alerts[0]['rule']} {fp} {alerts[0]['labels']}: {states}")
    return "\n  ".join(lines) if lines else "(none)"


# -- evidence ---------------------------------------------------------------------------------------

LOG_MARKS = {
    "assigned": "assigned partitions",
    "replays": "replaying its last recorded flush",
    "overlaps": "overlaps what",
    "drain-timeouts": "still in flight after",
    "crashes": "failed, stopping the worker",
    "tracebacks": "Traceback",
}


def positioned_early(text: str) -> int:
    """How often the reader positioned an assignment before Faust began recovering its tables.

    (A diagnostic from the log: "reading partitions" after "assigned partitions" with no "Highwater for
    active changelog partitions" of Faust's recovery between them.)
    """
    count = 0
    waiting = False
    for line in text.splitlines():
        if "assigned partitions" in line and "recovering tables" in line:
            waiting = True
        elif "Highwater for active changelog partitions" in line:
            waiting = False
        elif "reading partitions" in line and waiting:
            count += 1
            waiting = False
    return count


def log_digest(members: list[Member]) -> str:
    lines = []
    for member in members:
        text = member.worker.log_text()
        counts = {name: text.count(needle) for name, needle in LOG_MARKS.items()}
        counts["positioned-before-recovery"] = positioned_early(text)
        lines.append(f"{member.describe()}: {counts}")
    return "\n  ".join(lines)


def wait_all(members: list[Member], timeout: float, on_late: Callable[[Member], None]) -> None:
    """Wait (bounded, together) for stopped workers to exit; call `on_late` for each that did not."""
    deadline = time.monotonic() + timeout
    for member in members:
        proc = member.worker.proc
        if proc is None:
            continue
        try:
            member.exit_code = proc.wait(max(deadline - time.monotonic(), 0.1))
        except Exception:  # subprocess.TimeoutExpired
            on_late(member)
