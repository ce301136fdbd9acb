"""`pulse bench` output: the table shows every figure and ratio; the alert receiver matches firing routes."""

from __future__ import annotations

import json
import threading

import httpx

from pipeline.tools.bench.alerts import _Receiver
from pipeline.tools.bench.suite import MAX_ALERT_LATENCY_S, MAX_RSS_MB, TARGETS, table, targets_met

RESULT = {
    "ceiling_eps": 452_000,
    "ceiling_envelope_eps": 1_435_703,
    "faust_floor_eps": 11_737,
    "pipeline_single_eps": 151_505,
    "pipeline_envelope_eps": 291_772,
    "workers1_single_eps": 163_470,
    "workers2_single_eps": 259_311,
    "quix_eps": 41_454,
    "bytewax_eps": 98_725,
    "single_vs_floor": 12.908,
    "single_vs_quix": 3.655,
    "single_vs_bytewax": 1.535,
    "envelope_vs_ceiling": 0.646,
    "workers2_vs_single": 1.586,
    "scale_events": 600_000,
    "peak_rss_mb": 179.0,
    "alert_latency_s": 0.92,
    "alert_latency_max_s": 1.04,
    "events": 200_000,
    "envelope": 100,
    "repeat": 3,
    "partitions": 4,
    "machine": "x86_64, 2 cpu, Python 3.11.7",
}


def test_the_table_shows_every_figure_ratio_and_the_alert_latency() -> None:
    text = table(RESULT)
    for figure in (
        "452,000",
        "1,435,703",
        "11,737",
        "151,505",
        "291,772",
        "163,470",
        "259,311",
        "41,454",
        "98,725",
    ):
        assert figure in text
    assert "179.0 MB (target <= 250)" in text
    assert "12.91 x floor (target >= 10)" in text
    assert "3.65 x Quix (target >= 3)" in text
    assert "1.53 x Bytewax (target >= 1.2)" in text
    assert "0.65 x 1 event/msg ceiling (target >= 0.6)" in text
    assert "scale-out (600000 events): 2 workers, 1 event/msg" in text
    assert "pipeline, envelopes of 100 (600000 events)" in text
    assert "raw ceiling (getmany + orjson), 1 event/msg (600000 events)" in text
    assert "1.59 x 1 worker (target >= 1.5)" in text
    assert "median 0.92s, max 1.04s (target: median <= 1.2s)" in text
    assert "200000 events where no count is shown, median of 3 runs, 4 partitions, x86_64, 2 cpu" in text
    assert targets_met(RESULT)


def test_a_peer_that_was_not_measured_shows_and_fails_its_target() -> None:
    result = {**RESULT, "quix_eps": None, "single_vs_quix": None}
    text = table(result)
    assert "not measured x Quix" in text
    assert not targets_met(result)


def test_each_target_is_checked() -> None:
    for key, target in TARGETS.items():
        assert not targets_met({**RESULT, key: target - 0.01}), key
    assert not targets_met({**RESULT, "peak_rss_mb": MAX_RSS_MB + 1})
    assert not targets_met({**RESULT, "alert_latency_s": MAX_ALERT_LATENCY_S + 0.01})


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
