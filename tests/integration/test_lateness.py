"""Windows follow event time: out-of-order events land in their own pane, too-late ones are counted."""

from __future__ import annotations

import time

import orjson
import pytest

from tests.support.cluster import Cluster
from tests.support.metrics import by_label
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration


def route_window(worker_series: dict[str, object], route: str, window: str) -> int:
    for item in worker_series["series"]:  # type: ignore[index]
        if item["kind"] == "route" and item["labels"]["route"] == route:
            return int(item["windows"][window]["count"])
    return 0


def test_out_of_order_and_late_events(cluster: Cluster) -> None:
    cluster.partitions = 1
    worker = cluster.add_worker()
    now = int(time.time() * 1000)
    newer = now - 1_000
    older = now - 100_000  # out of order, within the allowed lateness (5m)
    too_late = now - 20 * 60_000  # beyond the allowed lateness
    base = {"service": "api", "method": "GET", "status_code": 200, "duration_ms": 12.0}
    topic = cluster.topic("request")
    cluster.publish(
        [
            (topic, orjson.dumps({**base, "route": "/ooo", "ts": newer})),
            (topic, orjson.dumps({**base, "route": "/ooo", "ts": older})),
            (topic, orjson.dumps({**base, "route": "/late", "ts": too_late})),
        ]
    )

    def late_counted() -> float:
        return by_label(worker.metrics(), "pulse_events_late_total", "kind").get("late", 0.0)

    assert wait_until(late_counted, 30, "the late event to be counted") == 1.0
    wait_until(
        lambda: route_window(worker.series(now), "/ooo", "5m"),
        30,
        "both events (in the 5m window of /ooo)",
        until=(2).__eq__,
    )
    # Seen from just after the older event, only it is in the 1m window: it sits in its own pane.
    assert route_window(worker.series(older + 1), "/ooo", "1m") == 1
    assert route_window(worker.series(newer + 1), "/ooo", "1m") == 1
    assert route_window(worker.series(now), "/ooo", "5m") == 2
    # The late event is in the all-time counter but in no window.
    totals = by_label(worker.metrics(), "http_requests_total", "route")
    assert totals == {"/ooo": 2.0, "/late": 1.0}
    assert route_window(worker.series(now), "/late", "1h") == 0
