"""`pulse bench` output: the table shows every figure and ratio; the alert receiver matches firing routes."""

from __future__ import annotations

import json
import threading

import httpx

from pipeline.bench import table
from pipeline.bench_alerts import _Receiver


def test_the_table_shows_every_figure_ratio_and_the_alert_latency() -> None:
    result = {
        "ceiling_eps": 572_000,
        "ceiling_envelope_eps": 1_435_703,
        "faust_floor_eps": 11_737,
        "pipeline_single_eps": 10_505,
        "pipeline_envelope_eps": 174_772,
        "single_vs_floor": 0.895,
        "envelope_vs_ceiling": 0.306,
        "peak_rss_mb": 179.0,
        "alert_latency_s": 1.52,
        "alert_latency_max_s": 2.04,
        "events": 200_000,
        "envelope": 100,
        "repeat": 3,
        "partitions": 4,
        "machine": "x86_64, 2 cpu, Python 3.11.7",
    }
    text = table(result)
    for figure in ("572,000", "1,435,703", "11,737", "10,505", "174,772", "179.0 MB"):
        assert figure in text
    assert "0.90 x floor (target >= 0.80)" in text
    assert "0.31 x ceiling (target >= 0.25)" in text
    assert "median 1.52s, max 2.04s" in text
    assert "median of 3 runs, 4 partitions, x86_64, 2 cpu" in text


def test_the_receiver_keeps_firing_notifications_by_route() -> None:
    receiver = _Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        body = {"alerts": [{"status": "firing", "labels": {"route": "/a"}}]}
        resolved = {"alerts": [{"status": "resolved", "labels": {"route": "/b"}}]}
        for payload in (body, resolved):
            assert httpx.post(receiver.url, content=json.dumps(payload), timeout=5).status_code == 200
        assert receiver.arrived("/a") is not None
        assert receiver.arrived("/b") is None
    finally:
        receiver.shutdown()
        receiver.server_close()
