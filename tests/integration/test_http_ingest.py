"""POST /api/v1/events/{type}: HTTP ingest, with the same validation and dead letters as Kafka."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.cluster import Cluster
from tests.support.metrics import by_label
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

TOKEN = "ingest-token"


def test_http_ingest_counts_good_events_and_dead_letters_bad_ones(cluster: Cluster) -> None:
    cluster.extra_env["PULSE_API_TOKEN"] = TOKEN
    worker = cluster.add_worker()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    now = int(time.time() * 1000)
    event = {
        "ts": now,
        "service": "api",
        "method": "GET",
        "route": "/api/http",
        "status_code": 200,
        "duration_ms": 3,
    }
    assert httpx.post(f"{worker.url}/api/v1/events/request", json=event, timeout=5).status_code == 401
    assert (
        httpx.post(f"{worker.url}/api/v1/events/nope", json=event, headers=auth, timeout=5).status_code == 404
    )
    ok = httpx.post(f"{worker.url}/api/v1/events/request", json=[event, event], headers=auth, timeout=5)
    assert ok.status_code == 202, ok.text
    assert ok.json()["data"]["topic"] == cluster.topic("request")
    bad = httpx.post(
        f"{worker.url}/api/v1/events/request", content=b'{"ts": 1, "service": 5}', headers=auth, timeout=5
    )
    assert bad.status_code == 202

    def counted() -> float:
        return by_label(cluster.summed_metrics(), "http_requests_total", "route").get("/api/http", 0.0)

    wait_until(counted, 30, "the two events counted (events counted)", until=(2.0).__eq__)
    cluster.wait_quiet()  # the worker read every input to its end offset: its dead letters are out
    letters = cluster.read(cluster.prefix + "events.deadletter")
    assert len(letters) == 1
    assert letters[0].value == b'{"ts": 1, "service": 5}'
