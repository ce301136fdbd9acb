"""Every metric of the catalogue equals ground truth with 1, 2 and 3 workers, across rebalances."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.integration.test_exactness import (
    PANE_MS,
    check_metrics_counted_once,
    check_totals,
    check_windows,
    owned_series,
    wait_counted,
)
from tests.support.cluster import Cluster
from tests.support.groundtruth import catalogue_truth, make_catalogue_events, make_events
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration
SEOUL = ZoneInfo("Asia/Seoul")


def counted_events(events: list[tuple[str, dict[str, Any]]]) -> int:
    """How many events land in all-time totals (requests, orders, errors)."""
    return sum(1 for kind, _ in events if kind in ("request", "order", "error"))


def check_catalogue(series: dict[str, dict[str, Any]], events: list[tuple[str, Any]], at_ms: int) -> None:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for item in series.values():
        by_kind.setdefault(item["kind"], []).append(item)
    for label, window_ms in (("1m", 60_000), ("5m", 300_000)):
        want = catalogue_truth(events, at_ms, window_ms, PANE_MS)
        users = by_kind["users"][0]["windows"][label]
        # Theta sketches are exact below 4096 distinct items, which this data stays under.
        assert users["active_users"] == want["active"]
        assert users["ordering_users"] == want["ordering"]
        assert users["registrations"] == want["registrations"]
        assert users["conversion_ratio"] == pytest.approx(want["ordering"] / want["active"])
        inventory = by_kind["inventory"][0]
        assert inventory["windows"][label]["units_sold"] == want["units_sold"]
    stock = inventory["stock"]
    assert (stock["products"], stock["low_stock"], stock["out_of_stock"], stock["total_stock"]) == (
        want["products"],
        want["low_stock"],
        want["out_of_stock"],
        want["total_stock"],
    )
    health = {h["labels"]["service"]: h["latest"] for h in by_kind["health"]}
    assert {s: (v["status"], v["ts"], v["response_time_ms"]) for s, v in health.items()} == want["health"]
    gauges = {
        (g["labels"]["name"], str(sorted(g["labels"]["labels"].items()))): g["latest"]["value"]
        for g in by_kind["gauge"]
    }
    assert gauges == want["gauges"]
    today = datetime.fromtimestamp(at_ms / 1000, SEOUL)
    confirmed = [
        (e, datetime.fromtimestamp(e["ts"] / 1000, SEOUL))
        for kind, e in events
        if kind == "order" and e["status"] == "confirmed" and e["currency"] == "KRW"
    ]
    revenue = next(r for r in by_kind["revenue"] if r["labels"]["currency"] == "KRW")
    assert revenue["today"]["revenue_micro"] == sum(
        round(e["amount"] * 1_000_000) for e, local in confirmed if local.date() == today.date()
    )
    assert revenue["this_month"]["revenue_micro"] == sum(
        round(e["amount"] * 1_000_000)
        for e, local in confirmed
        if (local.year, local.month) == (today.year, today.month)
    )


def settle(cluster: Cluster, events: list[tuple[str, dict[str, Any]]]) -> None:
    """Wait until stage 2 holds every event and nothing more can arrive; on a miscount, say which series."""
    try:
        wait_counted(cluster, counted_events(events))
    except AssertionError:
        check_totals(owned_series(cluster, int(time.time() * 1000)), events)  # which series, by how much
        raise


def check_all(cluster: Cluster, events: list[tuple[str, dict[str, Any]]], at_ms: int) -> None:
    series = owned_series(cluster, at_ms)
    check_totals(series, events)
    check_windows(series, events, at_ms)
    check_catalogue(series, events, at_ms)
    check_metrics_counted_once(cluster, events)


def test_one_then_three_then_two_workers(cluster: Cluster) -> None:
    cluster.partitions = 6  # so that three workers can all own partitions
    now = int(time.time() * 1000)
    at_ms = now + 1_000
    phases = [
        make_events(1500, 200, 100, seed=s, now_ms=now) + make_catalogue_events(s, now) for s in (21, 22, 23)
    ]
    published: list[tuple[str, dict[str, Any]]] = []

    first = cluster.add_worker()
    cluster.publish_events(phases[0])
    published += phases[0]
    settle(cluster, published)
    check_all(cluster, published, at_ms)

    # Two workers join while events flow: partitions move, nothing is lost or doubled.
    half = len(phases[1]) // 2
    cluster.publish_events(phases[1][:half], envelope=25)
    cluster.add_worker()
    cluster.publish_events(phases[1][half:])
    cluster.add_worker()
    published += phases[1]

    def partitions() -> list[list[int]]:
        return [w.series()["partitions"] for w in cluster.workers]

    def spread(parts: list[list[int]]) -> bool:
        return all(parts) and sorted(p for ps in parts for p in ps) == list(range(6))

    wait_until(partitions, 90, "three workers to share the partitions (partitions of each)", until=spread)
    settle(cluster, published)
    check_all(cluster, published, at_ms)

    # One worker leaves in the middle of the stream.
    half = len(phases[2]) // 2
    cluster.publish_events(phases[2][:half])
    first.stop()
    cluster.workers.remove(first)
    cluster.publish_events(phases[2][half:], envelope=25)
    published += phases[2]
    wait_until(partitions, 90, "two workers to take over the partitions (partitions of each)", until=spread)
    settle(cluster, published)
    check_all(cluster, published, at_ms)
