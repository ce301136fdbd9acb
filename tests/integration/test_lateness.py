"""Windows follow event time: out-of-order events land in their own pane, too-late ones are counted."""

from __future__ import annotations

import time

import orjson
import pytest

from tests.helpers import Cluster, wait_until

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
        return sum(
            v
            for (name, labels), v in worker.metrics().items()
            if name == "pulse_events_late_total" and dict(labels).get("kind") == "late"
        )

    assert wait_until(late_counted, 30, what="the late event to be counted") == 1.0
    wait_until(lambda: route_window(worker.series(now), "/ooo", "5m") == 2, 30, what="both events")
    # Seen from just after the older event, only it is in the 1m window: it sits in its own pane.
    assert route_window(worker.series(older + 1), "/ooo", "1m") == 1
    assert route_window(worker.series(newer + 1), "/ooo", "1m") == 1
    assert route_window(worker.series(now), "/ooo", "5m") == 2
    # The late event is in the all-time counter but in no window.
    totals = {
        dict(labels)["route"]: v
        for (name, labels), v in worker.metrics().items()
        if name == "http_requests_total"
    }
    assert totals == {"/ooo": 2.0, "/late": 1.0}
    assert route_window(worker.series(now), "/late", "1h") == 0
