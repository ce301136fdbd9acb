"""The stored records (pipeline.records): named fields, a format version, and the previous format read.

"Format 1" is what o4o-pulse wrote before records carried a version: the examples below are records
of that format, byte for byte as the previous version stored them.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from agents.kafka.positions import Replay, input_plan
from pipeline.alerting.group import Entry
from pipeline.alerting.silence import Silence
from pipeline.records import (
    AlertRecord,
    AppliedRecord,
    Cell,
    FlushRecord,
    GuardRecord,
    LedgerRecord,
    MalformedRecord,
    NotificationFailed,
    PartialsMessage,
    SilenceRecord,
    StoredFormatError,
    check_cells,
    check_version,
    decode_partials,
    encode,
    encode_partials,
    new_cell,
)
from pipeline.rules.engine import AlertState, State

ALERT_V1: dict[str, Any] = {
    "id": "fp1:1700000000000:firing",
    "fingerprint": "fp1",
    "rule": "high_error_rate",
    "state": "firing",
    "previous": "pending",
    "severity": "critical",
    "title": "error rate",
    "message": "",
    "metric": "o4o_error_ratio",
    "currentValue": 0.07,
    "threshold": 0.05,
    "timestamp": "2023-11-14T22:13:20.000Z",
    "service": "api",
    "labels": {"alertname": "high_error_rate"},
    "annotations": {},
    "starts_at": "2023-11-14T22:13:20.000Z",
    "ends_at": None,
}


def test_stage_one_records_of_the_previous_format_are_read() -> None:
    assert FlushRecord.from_wire({"a": 100, "b": 180}) == FlushRecord(first=100, last=180)
    assert input_plan(FlushRecord.from_wire({"a": 100, "b": 180})) == Replay(100, 180)
    # The guard's admitted values were stored bare.
    assert GuardRecord.from_wire({"route": ["/a", "/b"]}).admitted == {"route": ["/a", "/b"]}


def test_stage_two_records_of_the_previous_format_are_read() -> None:
    assert AppliedRecord.from_wire(41).offset == 41  # the offset itself
    old = orjson.dumps(
        {"blocks": [{"src": "events.requests:0", "a": 3, "b": 9, "s": {"k": {"p": {"60000": {"n": 2}}}}}]}
    )
    message = decode_partials(old, "partials 0")
    block = message.blocks[0]
    assert (block.source, block.first, block.last, message.version) == ("events.requests:0", 3, 9, 1)
    assert block.series["k"].panes == {60000: {"n": 2}}  # pane starts come back as ints
    assert block.series["k"].total is None
    assert check_cells({'["http"]\x1et': {"a": {"s:0": 9}, "v": {"n": 2}}, "applied:0": 41}, "cells") == 1


def test_alert_records_of_the_previous_format_are_read() -> None:
    state = AlertState.from_dict(
        {"f": "fp1", "r": "high_error_rate", "l": {}, "s": "firing", "b": 5, "h": [5]}
    )
    assert (state.fingerprint, state.state, state.starts_at_ms, state.fired) == ("fp1", State.FIRING, 5, [5])
    assert AlertRecord.from_wire(ALERT_V1).currentValue == 0.07
    entry = Entry.from_dict({"s": "firing", "i": ["fp1:x"], "t": 7, "m": {"ts": "1.2"}})
    assert entry == Entry("firing", ("fp1:x",), 7, {"ts": "1.2"})
    silence = Silence.from_dict(
        {"id": "s1", "matchers": {"a": "b"}, "startsAt": 1, "endsAt": 2, "createdBy": "ops", "comment": "c"}
    )
    assert silence == Silence("s1", {"a": "b"}, 1, 2, "ops", "c")


def test_every_record_is_written_with_named_fields_and_its_format() -> None:
    assert FlushRecord(1, 2).to_wire() == {"a": 1, "b": 2, "V": 2}
    assert GuardRecord({"route": ["/a"]}).to_wire() == {"g": {"route": ["/a"]}, "V": 2}
    assert AppliedRecord(41).to_wire() == {"o": 41, "V": 2}
    assert new_cell()["V"] == Cell.CURRENT == 2
    sent = encode_partials([{"source": "s:0", "first": 1, "last": 2, "series": {"k": {"t": {"n": 1}}}}])
    assert orjson.loads(sent) == {
        "V": 2,
        "blocks": [{"src": "s:0", "a": 1, "b": 2, "s": {"k": {"t": {"n": 1}}}}],
    }
    assert decode_partials(sent, "here").version == PartialsMessage.CURRENT
    state = AlertState("fp", "r", {"x": "y"}, State.PENDING, active_since_ms=3, value=float("nan"))
    stored = state.to_dict()
    assert stored == {"f": "fp", "r": "r", "l": {"x": "y"}, "s": "pending", "a": 3, "V": 2}
    assert AlertState.from_dict(stored) == AlertState("fp", "r", {"x": "y"}, State.PENDING, active_since_ms=3)
    assert AlertRecord.from_wire(ALERT_V1).to_wire() == {**ALERT_V1, "V": 2}
    entry = Entry("resolved", (), 9)
    assert entry.to_dict() == {"s": "resolved", "i": [], "t": 9, "V": 2}
    assert Entry.from_dict(entry.to_dict()) == entry
    silence = Silence("s1", {"a": "b"}, 1, 2, "", "")
    assert silence.to_dict()["createdBy"] == "" and Silence.from_dict(silence.to_dict()) == silence
    failed = NotificationFailed(
        kind="notification_failed",
        channel="slack",
        receiver="slack",
        group_key="g",
        status="firing",
        alerts=["fp:1:firing"],
        rules=["r"],
        reason="503",
        attempts=8,
        timestamp="2026-11-30T00:00:00Z",
    )
    assert orjson.loads(encode(failed))["V"] == 2
    assert LedgerRecord.from_wire(entry.to_dict()).incidents == []
    assert SilenceRecord.from_wire(silence.to_dict()).created_by == ""


@pytest.mark.parametrize("version", [0, 3, "2"])
def test_a_format_this_version_cannot_read_stops_with_the_migration(version: Any) -> None:
    with pytest.raises(StoredFormatError) as caught:
        FlushRecord.from_wire({"a": 1, "b": 2, "V": version}, "flushlog key 'events.requests:0'")
    message = str(caught.value)
    assert "flushlog key 'events.requests:0'" in message and "flush record" in message
    assert f"format {version!r}" in message and "reads formats 1, 2" in message
    assert "Stored formats" in message and "replay the events" in message
    with pytest.raises(StoredFormatError, match="cells, key 'k'"):
        check_cells({"k": {"a": {}, "v": {}, "V": version}}, "cells")
    with pytest.raises(StoredFormatError, match="partials 3"):
        decode_partials(orjson.dumps({"V": version, "blocks": []}), "partials 3")
    with pytest.raises(StoredFormatError, match="alerts topic"):
        check_version(AlertRecord, version, "alerts topic")


def test_a_record_that_does_not_fit_its_format_is_malformed() -> None:
    with pytest.raises(MalformedRecord, match="not a valid flush record"):
        FlushRecord.from_wire({"a": "x", "b": 2})
    with pytest.raises(MalformedRecord):
        Silence.from_dict({"id": "s"})
    with pytest.raises(MalformedRecord):
        decode_partials(b"{not json", "partials 0")
