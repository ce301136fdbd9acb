"""Several workers: every figure equals ground truth, and every series is exported by one worker."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.cluster import Cluster
from tests.support.groundtruth import exact_quantile, make_events, truth, window_truth
from tests.support.metrics import by_label
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

PANE_MS = 10_000
SERIES_METRICS = ("http_", "orders_total", "revenue_total", "o4o_")


def owned_series(cluster: Cluster, at_ms: int) -> dict[str, dict[str, Any]]:
    """Union of every worker's series; fails if two workers export the same one."""
    merged: dict[str, dict[str, Any]] = {}
    for worker in cluster.workers:
        for item in worker.series(at_ms)["series"]:
            assert item["key"] not in merged, f"series {item['key']} exported by two workers"
            merged[item["key"]] = item
    return merged


def check_totals(series: dict[str, dict[str, Any]], events: list[tuple[str, dict[str, Any]]]) -> None:
    expected = truth(events)
    http = {tuple(s["labels"].values()): s["total"] for s in series.values() if s["kind"] == "http"}
    assert {k: v["count"] for k, v in http.items()} == dict(expected.http)
    assert {k: v["sum_us"] for k, v in http.items()} == dict(expected.http_us)
    assert {k: v["buckets"] for k, v in http.items()} == expected.http_buckets
    orders = {
        tuple(s["labels"].values()): s["total"]["count"] for s in series.values() if s["kind"] == "orders"
    }
    assert orders == dict(expected.orders)
    revenue = {
        s["labels"]["currency"]: s["total"]["amount_micro"] for s in series.values() if s["kind"] == "revenue"
    }
    assert revenue == dict(expected.revenue_micro)
    errors = {
        tuple(s["labels"].values()): s["total"]["count"] for s in series.values() if s["kind"] == "errors"
    }
    assert errors == dict(expected.errors)


def check_windows(
    series: dict[str, dict[str, Any]], events: list[tuple[str, dict[str, Any]]], at_ms: int
) -> None:
    for label, window_ms in (("1m", 60_000), ("5m", 300_000)):
        want = window_truth(events, at_ms, window_ms, PANE_MS)
        routes = {
            tuple(s["labels"].values()): s["windows"][label] for s in series.values() if s["kind"] == "route"
        }
        for key, items in want["routes"].items():
            got = routes[key]
            assert got["count"] == len(items)
            errors = sum(e["status_code"] >= 500 for e in items)
            assert got["errors_5xx"] == errors
            assert got["error_ratio"] == errors / len(items)
            for q in (0.5, 0.95, 0.99):
                exact = exact_quantile([e["duration_ms"] for e in items], q)
                assert abs(got[f"p{round(q * 100)}_ms"] - exact) <= 0.01 * exact, (key, q)
        assert sum(1 for v in routes.values() if v["count"]) == len(want["routes"])
        overall = next(s for s in series.values() if s["kind"] == "requests")["windows"][label]
        assert overall["count"] == len(want["all"])
        assert overall["errors_5xx"] == sum(e["status_code"] >= 500 for e in want["all"])
        for q in (0.5, 0.95, 0.99):
            exact = exact_quantile([e["duration_ms"] for e in want["all"]], q)
            assert abs(overall[f"p{round(q * 100)}_ms"] - exact) <= 0.01 * exact
        orders_all = next(s for s in series.values() if s["kind"] == "orders_all")["windows"][label]
        assert orders_all["created"] == want["created"]
        revenue = {
            s["labels"]["currency"]: s["windows"][label] for s in series.values() if s["kind"] == "revenue"
        }
        for currency, amounts in want["confirmed"].items():
            assert revenue[currency]["count"] == len(amounts)
            assert revenue[currency]["revenue_micro"] == sum(round(a * 1_000_000) for a in amounts)
        errors_w = {
            tuple(s["labels"].values()): s["windows"][label]["count"]
            for s in series.values()
            if s["kind"] == "errors"
        }
        assert {k: v for k, v in errors_w.items() if v} == dict(want["errors"])


def check_metrics_counted_once(cluster: Cluster, events: list[tuple[str, dict[str, Any]]]) -> None:
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
    for worker in cluster.workers:
        for key in worker.metrics():
            if key[0].startswith(SERIES_METRICS):
                seen[key] = seen.get(key, 0) + 1
    assert seen, "no series metrics exported"
    doubles = [k for k, n in seen.items() if n > 1]
    assert not doubles, f"exported by more than one worker: {doubles[:5]}"
    summed = cluster.summed_metrics()
    expected = truth(events)
    got = by_label(summed, "http_requests_total", "method", "route", "status_code")
    assert got == {k: float(v) for k, v in expected.http.items()}
    got_orders = by_label(summed, "orders_total", "status", "user_role")
    assert got_orders == {k: float(v) for k, v in expected.orders.items()}
    revenue = summed[("revenue_total", ())]
    assert round(revenue * 1_000_000) == expected.revenue_micro["KRW"]


def total_count(cluster: Cluster) -> int:
    count = 0
    for worker in cluster.workers:
        for item in worker.series()["series"]:
            if item["kind"] in ("http", "orders", "errors"):
                count += item["total"]["count"]
    return count


def wait_counted(cluster: Cluster, expected: int, timeout: float = 120) -> None:
    """Wait until stage 2 holds `expected` events, then prove that nothing more arrives.

    Fails at once, saying so, when more than `expected` are counted; on a timeout it says how many
    were counted, so a worker that made no progress is told apart from one that counted too many.
    """

    def counted() -> int:
        count = total_count(cluster)
        if count > expected:
            raise AssertionError(f"counted {count} events, more than the {expected} published")
        return count

    wait_until(counted, timeout, f"{expected} events in stage 2 (events counted)", until=expected.__eq__)
    cluster.wait_quiet()
    final = total_count(cluster)
    assert final == expected, f"counted {final} events once everything was read, not {expected}"


def test_two_workers_match_ground_truth_and_export_each_series_once(cluster: Cluster) -> None:
    first, second = cluster.add_workers(2)

    wait_until(
        lambda: [w.series()["partitions"] for w in (first, second)],
        60,
        "the two workers to split the partitions (partitions of each)",
        until=lambda parts: all(parts) and sorted(parts[0] + parts[1]) == [0, 1, 2, 3],
    )
    now = int(time.time() * 1000)
    events = make_events(4000, 600, 300, seed=11, now_ms=now)
    half = len(events) // 2
    cluster.publish_events(events[:half])
    cluster.publish_events(events[half:], envelope=50)
    wait_counted(cluster, len(events))
    at_ms = now + 1_000
    series = owned_series(cluster, at_ms)
    check_totals(series, events)
    check_windows(series, events, at_ms)
    check_metrics_counted_once(cluster, events)
