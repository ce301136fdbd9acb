"""Bad input never stops the pipeline: every rejected message or element is dead-lettered."""

from __future__ import annotations

import time

import orjson
import pytest

from tests.support.cluster import Cluster
from tests.support.metrics import by_label
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration


def request(**overrides: object) -> dict[str, object]:
    event: dict[str, object] = {
        "service": "api",
        "method": "GET",
        "route": "/api/orders/:id",
        "status_code": 200,
        "duration_ms": 42.5,
        "ts": int(time.time() * 1000),
    }
    event.update(overrides)
    return event


def test_every_bad_message_is_deadlettered_and_the_good_ones_counted(cluster: Cluster) -> None:
    cluster.extra_env["PULSE_MAX_MESSAGE_BYTES"] = "4096"
    worker = cluster.add_worker()
    topic = cluster.topic("request")
    missing = request()
    del missing["route"]
    bad_element = (
        b'{"service": "api", "method": "GET", "route": "/x", "status_code": "oops",  "duration_ms": 1}'
    )
    envelope = (
        b"["
        + orjson.dumps(request(route="/a"))
        + b",\n  "
        + bad_element
        + b" , "
        + orjson.dumps(request(route="/b"))
        + b"]"
    )
    cases: list[tuple[bytes, str]] = [
        (b"this is not json {", "invalid_json"),
        (b'{"service": "\xff\xfe", "method": "GET"}', "invalid_utf8"),
        (b"42", "not_object_or_array"),
        (b'"a string"', "not_object_or_array"),
        (orjson.dumps(missing), "missing_field"),
        (orjson.dumps(request(status_code="200")), "wrong_type"),
        (orjson.dumps(request(duration_ms=None)), "null_field"),
        (orjson.dumps(request(route="/big", padding="x" * 5000)), "too_large"),
        (orjson.dumps([1, 2]), "not_object"),
    ]
    messages = [(topic, value) for value, _ in cases]
    messages.append((topic, envelope))
    messages.append((topic, orjson.dumps(request(route="/after"))))
    cluster.publish(messages)

    cluster.wait_quiet()  # the worker read every input to its end offset: its dead letters are out
    dead = cluster.read(cluster.prefix + "events.deadletter")
    headers = [dict((k, v.decode()) for k, v in record.headers) for record in dead]
    codes = sorted(h["pulse.code"] for h in headers)
    expected = sorted(
        [code for _, code in cases if code != "not_object"] + ["not_object", "not_object", "wrong_type"]
    )
    assert codes == expected
    by_offset = {}
    for record, head in zip(dead, headers, strict=True):
        assert head["pulse.topic"] == topic
        assert head["pulse.reason"].startswith(head["pulse.code"] + ": ")
        by_offset.setdefault(int(head["pulse.offset"]), []).append((record, head))
    # Whole-message rejections carry the original bytes untouched.
    for record, head in (r for rs in by_offset.values() for r in rs):
        if "pulse.index" not in head:
            original = next(v for v, c in cases if c == head["pulse.code"] and v == record.value)
            assert record.value == original
    # The bad element of the envelope is dead-lettered alone, with its exact original bytes.
    elements = [
        (r, h)
        for rs in by_offset.values()
        for r, h in rs
        if h.get("pulse.index") == "1" and h["pulse.code"] == "wrong_type"
    ]
    assert len(elements) == 1
    assert elements[0][0].value == bad_element
    assert "status_code" in elements[0][1]["pulse.reason"]

    routes = wait_until(
        lambda: by_label(worker.metrics(), "http_requests_total", "route"),
        30,
        "the event after the bad ones to be counted (requests per route)",
        until=lambda counted: counted.get("/after") == 1.0,
    )
    # Good elements of the envelope are counted; nothing from a rejected message or element is.
    assert routes == {"/a": 1.0, "/b": 1.0, "/after": 1.0}
    dlq = by_label(worker.metrics(), "pulse_events_deadlettered_total", "reason")
    assert sum(dlq.values()) == len(dead)
    assert worker.alive(), "the worker must keep running"
