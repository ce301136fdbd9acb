"""Fuzzing the event path (issue 13): the CI profile of `pipeline.tools.fuzz`, its seeds, and the crashes
it found.

The CI profile runs a fixed seed over a bounded number of inputs in a subprocess (atheris needs one:
libFuzzer never returns), within about 15 s on a loaded two-core machine; `make fuzz` runs a long one.
The seeds in tests/fuzz_corpus are every example document and dead-letter case of the tests below;
`python -m tests.unit.test_fuzz_event_path` writes them again after those tests change.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.ingest.intake import REASON_CODES, element_spans, refuse_message
from pipeline.tools import fuzz
from pipeline.tools.fuzz import CORPUS, Harness, decode_input, encode_input, load_corpus
from schemas.events import EVENT_TYPES, MAX_TS_MS, validator
from tests.unit.test_typed import DEAD_LETTERS, EDGES, INGEST_REQUEST, ORDER, schema_examples

ROOT = Path(__file__).resolve().parents[2]
CI_INPUTS = 20_000
CI_SEED = 1
CI_SECONDS = 11.0
"""The CI profile's cap; the fuzzer stops early (the test says how far it got) on a machine that slow."""
ATHERIS_INPUTS = 3_000

# Valid documents of the types the tests above have no example of (docs/events.md's table).
EXAMPLES: list[tuple[str, dict[str, Any]]] = [
    (
        "request",
        {
            "service": "api",
            "method": "GET",
            "route": "/api/products",
            "status_code": 200,
            "duration_ms": 41.7,
        },
    ),
    (
        "error",
        {
            "service": "api",
            "route": "/api/orders/:id",
            "error_code": "E42",
            "message": "boom",
            "stack": "at x",
        },
    ),
    ("error", {"service": "api", "route": "/", "error_code": 500, "message": ""}),
    ("inventory", {"product_id": "p1", "stock": 3, "low_stock_threshold": 5, "units_sold": 2}),
    ("inventory", {"product_id": 7, "stock": -1, "low_stock_threshold": 0}),
    ("heartbeat", {"service": "db", "status": "healthy", "response_time_ms": 3.5}),
    ("heartbeat", {"service": "db", "status": "unhealthy"}),
    ("user", {"user_id": "u1", "action": "active", "role": "customer", "ts": "2026-12-01T00:00:00Z"}),
    ("gauge", {"name": "db_connection_pool", "value": 0.75, "labels": {"db": "main"}}),
    ("order", {**ORDER, "status": "confirmed", "amount": 12.5, "ts": 1_796_035_000_000}),
]


def corpus_cases() -> list[bytes]:
    """Every seed input: the examples and dead-letter cases of the tests, alone and in envelopes."""
    cases: list[bytes] = []
    for value, _ in DEAD_LETTERS:  # tests/integration/test_ingest.py's cases are among them
        cases.append(encode_input("request", value))
    for _, kind, value, _, _ in EDGES:
        cases.append(encode_input(kind, value))
    for kind, doc in [*schema_examples(), *EXAMPLES]:
        for value in (
            orjson.dumps(doc),
            orjson.dumps([doc]),
            orjson.dumps([doc, doc]),
            orjson.dumps([ORDER, doc]),
        ):
            cases.append(encode_input(kind, value))
    good = orjson.dumps(INGEST_REQUEST)
    cases += [
        encode_input("request", None),  # a tombstone
        encode_input("request", b"[" + good + b", 1, " + good + b', "x", null, [], {}]'),
        encode_input("request", b"[" + good + b", [" + b"[" * 900 + b"]" * 900 + b"]]"),
    ]
    for kind in EVENT_TYPES:
        cases += [encode_input(kind, b"[]"), encode_input(kind, b"{}"), encode_input(kind, b"[{}]")]
    return list(dict.fromkeys(cases))


def corpus_name(data: bytes) -> str:
    kind, _ = decode_input(data)
    return f"{kind}-{hashlib.sha1(data).hexdigest()[:12]}"


def write_corpus() -> None:
    for path in CORPUS.glob("*"):
        path.unlink()
    CORPUS.mkdir(exist_ok=True)
    for data in corpus_cases():
        (CORPUS / corpus_name(data)).write_bytes(data)


def test_corpus_holds_every_example_and_dead_letter_case() -> None:
    want = {corpus_name(data): data for data in corpus_cases()}
    have = {path.name: path.read_bytes() for path in CORPUS.iterdir()}
    assert have == want, "run `python -m tests.unit.test_fuzz_event_path` to write tests/fuzz_corpus again"


def documented_codes() -> list[str]:
    text = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")
    match = re.search(r"`pulse\.code` \(([^)]*)\)", text)
    assert match is not None, "docs/events.md lists the dead-letter reason codes after `pulse.code`"
    return re.findall(r"`([a-z_0-9]+)`", match.group(1))


def test_reason_codes_are_the_documented_ones() -> None:
    assert sorted(REASON_CODES) == sorted(documented_codes())


def test_every_seed_holds_and_every_reason_code_occurs() -> None:
    harness = Harness()
    for data in load_corpus(CORPUS):
        harness.run(data)
    harness.finish()
    report = harness.report()
    assert report["findings"] == []
    assert report["counted"] + report["dead_lettered"] == report["elements"]
    assert all(report["by_code"][code] > 0 for code in REASON_CODES), report["by_code"]


def fuzz_run(engine: str, inputs: int, seconds: float) -> tuple[dict[str, Any], float]:
    """Run `python -m pipeline.tools.fuzz` with the CI seed; return its report and wall time."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    command = [sys.executable, "-m", "pipeline.tools.fuzz", "--engine", engine, "--seed", str(CI_SEED)]
    command += ["--inputs", str(inputs), "--seconds", str(seconds)]
    started = time.monotonic()
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    elapsed = time.monotonic() - started
    assert done.returncode in (0, 1), done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["findings"] == [], json.dumps(report["findings"], indent=2)[:5000]
    assert done.returncode == 0
    assert report["engine"] == engine
    assert report["counted"] + report["dead_lettered"] == report["elements"]
    assert report["inputs"] >= inputs // 2, f"only {report['inputs']} inputs in {elapsed:.1f} s"
    assert all(report["by_code"][code] > 0 for code in REASON_CODES), report["by_code"]
    return report, elapsed


def test_ci_profile() -> None:
    """The deterministic profile: the seeded mutation engine, a fixed seed, CI_INPUTS inputs (the same
    inputs on every run, unless a very slow machine reaches CI_SECONDS first)."""
    report, elapsed = fuzz_run("random", CI_INPUTS, CI_SECONDS)
    print(f"fuzz CI profile: {report['inputs']} inputs, seed {CI_SEED}, {elapsed:.1f} s, {report['digest']}")


def test_make_fuzz_engine_runs() -> None:
    """`make fuzz`'s engine, coverage-guided atheris (libFuzzer), briefly: it runs and finds nothing."""
    if fuzz.atheris is None:
        assert not (sys.platform == "linux" and os.uname().machine == "x86_64"), (
            "`make install` installs atheris"
        )
        pytest.skip("atheris has no wheel for this platform")
    fuzz_run("atheris", ATHERIS_INPUTS, 5.0)


# --- the crashes the fuzzer found, one regression test each --------------------------------------------


def test_a_deeply_nested_bad_element_is_cut_out_exactly() -> None:
    """Found by the fuzzer: an envelope with an element nested ~1000 deep (which orjson takes, up to
    1024) made the precise path's `element_spans` raise RecursionError (it used json.raw_decode) out
    of the hot path: the worker would have stopped on it, and again after each restart."""
    good = orjson.dumps(INGEST_REQUEST)
    deep = b"[" * 1000 + b"]" * 1000
    value = b"[" + good + b", " + deep + b" ,\n" + good + b"]"
    events, refused = refuse_message("request", validator("request"), value, 1 << 20)
    assert len(events) == 2
    assert [(index, rejection.code, original) for index, rejection, original in refused] == [
        (1, "not_object", deep)
    ]


@pytest.mark.parametrize(
    ("kind", "doc"),
    [
        (
            "request",
            {"service": "a", "method": "GET", "route": "/", "status_code": 200, "duration_ms": 1.7e308},
        ),
        ("order", {**ORDER, "status": "confirmed", "amount": 1.7976931348623157e308}),
        ("order", {**ORDER, "amount": 1e303}),
    ],
)
def test_the_largest_numbers_flush(kind: str, doc: dict[str, Any]) -> None:
    """Found by the fuzzer: a valid duration_ms above 1.7e305 (amount above 1.7e302) made the flush
    raise OverflowError (`round(inf)`: the value scaled to micro-units is infinite), which stops the
    worker at every restart. Such a value is a whole number: it is scaled exactly."""
    harness = Harness()
    value = orjson.dumps([doc, {**doc, "ts": 1_796_035_000_000}])
    harness.run(encode_input(kind, value))
    harness.finish()
    assert harness.report()["findings"] == []
    acc = fuzz.ACCUMULATORS[kind]()
    events = fuzz.fast_decoder(kind)(value)
    assert events is not None
    for event in events:
        acc.add(event, 0, False, 0)
    parts = acc.parts(fuzz.FlushContext(harness.calendar, fuzz.LabelGuard({})))
    scale = 1000 if kind == "request" else 1_000_000
    sums = [agg.get("ds", agg.get("am")) for part in parts.values() for agg in [part.get("t", {})] if agg]
    assert sums and all(total == 2 * int(doc.get("duration_ms", doc.get("amount"))) * scale for total in sums)


def test_integers_beyond_64_bits_keep_states_serializable() -> None:
    """Found by the fuzzer: `"stock": 1e30` is a valid integer (the validator rewrites integral floats
    to int), and the inventory state then held int(1e30); the next event of the same product at the
    same time compares states with orjson, which writes 64-bit integers only: TypeError out of the hot
    path. from_dict now keeps such a value as the float it was."""
    first = {"product_id": "p1", "stock": 1e30, "low_stock_threshold": 1e20}
    second = {"product_id": "p1", "stock": -1e30, "low_stock_threshold": 0}
    harness = Harness()
    harness.run(encode_input("inventory", orjson.dumps([first, second])))
    harness.run(encode_input("inventory", orjson.dumps(first)))
    harness.finish()
    assert harness.report()["findings"] == []
    assert harness.report()["counted"] == 3


@pytest.mark.parametrize("ts", ["9999-12-31T23:59:59.999Z", "9999-12-15T00:00:00Z", MAX_TS_MS])
def test_the_latest_event_times_have_calendar_periods(ts: Any) -> None:
    """Found by the fuzzer: an order or user event at the latest valid time (9999-12-31T23:59:59.999Z)
    made the flush raise OverflowError in Asia/Seoul (its local date is in the year 10000); a month key
    m999912 would also overflow stage 2's retention (`Calendar.end_ms`). Calendar periods stop at
    LAST_CALENDAR_MS."""
    harness = Harness()
    user = {"user_id": "u1", "action": "registered", "role": "customer", "ts": ts}
    harness.run(encode_input("order", orjson.dumps({**ORDER, "status": "confirmed", "ts": ts})))
    harness.run(encode_input("user", orjson.dumps(user)))
    harness.finish()
    assert harness.report()["findings"] == []
    acc = fuzz.ACCUMULATORS["order"]()
    events = fuzz.fast_decoder("order")(orjson.dumps({**ORDER, "status": "confirmed", "ts": ts}))
    assert events is not None
    acc.add(events[0], 0, True, events[0].ts)
    parts = acc.parts(fuzz.FlushContext(harness.calendar, fuzz.LabelGuard({})))
    periods = {key for part in parts.values() for key in part.get("c", {})}
    assert periods == {"d99991030", "m999910"}
    for key in periods:
        harness.calendar.end_ms(key)


@pytest.mark.parametrize(
    "value",
    [
        b"[]",
        b" [ ] ",
        b'[1,"a,]\\"[{",{"a":[1,{"b":"]"}]} ,\n\t[ ] , null]',
        b'\r\n[ "\xc3\xa9" ,{"x":"\\\\"}]\n',
    ],
)
def test_element_spans_are_the_exact_elements(value: bytes) -> None:
    spans = element_spans(value)
    assert [orjson.loads(span) for span in spans] == orjson.loads(value)
    assert all(span in value and span == span.strip() for span in spans)


if __name__ == "__main__":
    write_corpus()
    print(f"wrote {len(corpus_cases())} seeds to {CORPUS}")
