"""The event contract: committed JSON Schemas, validator/JSON Schema agreement, precise rejections.

The fast validator in `schemas.events` and the JSON Schemas rendered from the same field table must
accept and reject exactly the same documents; services in other languages only see the schemas.
"""

from __future__ import annotations

import calendar
import copy
import json
import time
from functools import cache
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.events import (
    COMMON_FIELDS,
    EVENT_FIELDS,
    EVENT_TYPES,
    MAX_TS_MS,
    NO_TS,
    SCHEMA_DIR,
    Field,
    Rejection,
    json_schema,
    render_schema_file,
    schema_path,
    validate,
)

FORMAT_CHECKER = jsonschema.FormatChecker()
SCHEMA_VALIDATORS = {
    kind: jsonschema.Draft202012Validator(json_schema(kind), format_checker=FORMAT_CHECKER)
    for kind in EVENT_TYPES
}
EXAMPLES = 300
PROPERTY_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def fields_of(kind: str) -> tuple[Field, ...]:
    return (*EVENT_FIELDS[kind], *COMMON_FIELDS)


def schema_accepts(kind: str, doc: Any) -> bool:
    return SCHEMA_VALIDATORS[kind].is_valid(doc)


def schema_error(kind: str, doc: Any) -> str:
    error = jsonschema.exceptions.best_match(SCHEMA_VALIDATORS[kind].iter_errors(doc))
    return "accepted" if error is None else f"{list(error.absolute_path)}: {error.message}"


def assert_agree(kind: str, doc: Any) -> int | Rejection:
    """Validate a copy (the validator may rewrite 200.0 to 200) and compare with the JSON Schema."""
    mine = copy.deepcopy(doc)
    got = validate(kind, mine)
    expected = schema_accepts(kind, doc)
    assert (type(got) is int) == expected, (
        f"{kind}: validate() -> {got!r} but JSON Schema -> {schema_error(kind, doc)}; document {doc!r}"
    )
    if type(got) is int:
        # Only the Python type of integral floats may change, never a value.
        assert mine == doc
        for field in fields_of(kind):
            value = mine.get(field.name)
            if "integer" in field.kinds and "number" not in field.kinds and isinstance(value, float):
                pytest.fail(f"{kind}: integral float in '{field.name}' was not rewritten to int: {mine!r}")
    return got


# --- (a) the committed files are exactly what the table renders --------------------------------------


def test_schema_dir_holds_one_file_per_kind() -> None:
    assert len(EVENT_TYPES) == 7
    assert sorted(path.name for path in SCHEMA_DIR.iterdir()) == sorted(
        f"{kind}.schema.json" for kind in EVENT_TYPES
    )


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_committed_schema_file_matches_table(kind: str) -> None:
    text = schema_path(kind).read_text(encoding="utf-8")
    assert text == render_schema_file(kind), (
        f"schemas/json/{kind}.schema.json drifted from the field table: "
        "run `python -c 'from schemas.events import write_schema_files; write_schema_files()'`"
    )
    schema = json.loads(text)
    assert schema == json_schema(kind)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert set(schema["properties"]) == {field.name for field in fields_of(kind)}
    assert schema["required"] == [field.name for field in fields_of(kind) if field.required]


def test_format_checker_really_checks_date_time() -> None:
    # Without rfc3339-validator installed, jsonschema silently accepts any string as a date-time.
    assert "date-time" in FORMAT_CHECKER.checkers
    assert not FORMAT_CHECKER.conforms("not-a-date", "date-time")
    assert FORMAT_CHECKER.conforms("2024-01-01T00:00:00Z", "date-time")
    doc = {"service": "api", "method": "GET", "route": "/", "status_code": 200, "duration_ms": 1}
    assert schema_accepts("request", doc)
    assert not schema_accepts("request", {**doc, "ts": "not-a-date"})


# --- (b) generated documents: the validator and the JSON Schemas agree ----------------------------------

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


def two(value: int) -> str:
    return f"{value:02d}"


@st.composite
def date_times(draw: st.DrawFn, strict: bool) -> tuple[str, int | None]:
    """An RFC 3339 date-time built from parts, and its epoch ms (None when the parts are not valid).

    With strict=False the parts range a little past their limits: month 13, Feb 30, year 0000, hour 24,
    second 60 (leap second), offset +24:00 or +01:60, other separators.
    """
    if strict:
        year = draw(st.integers(1, 9999))
        month = draw(st.integers(1, 12))
        day = draw(st.integers(1, calendar.monthrange(year, month)[1]))
        hour, minute, second = draw(st.integers(0, 23)), draw(st.integers(0, 59)), draw(st.integers(0, 59))
        sep = draw(st.sampled_from("Tt"))
        off_h, off_m = draw(st.integers(0, 23)), draw(st.integers(0, 59))
        zulu = draw(st.sampled_from(["Z", "z", None]))
    else:
        year = draw(st.sampled_from([0, 1, 1969, 1970, 2000, 2023, 2024, 2100, 9999]))
        month = draw(st.integers(0, 13))
        day = draw(st.integers(0, 32))
        hour, minute, second = draw(st.integers(0, 25)), draw(st.integers(0, 61)), draw(st.integers(0, 61))
        sep = draw(st.sampled_from("Tt _"))
        off_h, off_m = draw(st.integers(0, 25)), draw(st.integers(0, 61))
        zulu = draw(st.sampled_from(["Z", "z", None, "", "UTC"]))
    frac = draw(st.one_of(st.none(), st.text("0123456789", min_size=0 if not strict else 1, max_size=12)))
    sign = draw(st.sampled_from("+-"))
    zone = zulu if zulu is not None else f"{sign}{two(off_h)}:{two(off_m)}"
    text = f"{year:04d}-{two(month)}-{two(day)}{sep}{two(hour)}:{two(minute)}:{two(second)}"
    text += ("" if frac is None else f".{frac}") + zone
    valid = (
        year >= 1
        and 1 <= month <= 12
        and 1 <= day <= calendar.monthrange(year, month)[1]
        and sep in "Tt"
        and hour <= 23
        and minute <= 59
        and second <= 59
        and (frac is None or frac != "")
        and (zulu in ("Z", "z") or (zulu is None and off_h <= 23 and off_m <= 59))
    )
    if not valid:
        return text, None
    offset_s = 0 if zulu is not None else (1 if sign == "+" else -1) * (off_h * 3600 + off_m * 60)
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) - offset_s
    return text, seconds * 1000 + int(((frac or "") + "000")[:3])


TS_VALID = [
    "2024-02-29T00:00:00Z",  # leap year
    "2000-02-29T12:00:00Z",
    "2024-01-01t00:00:00z",  # RFC 3339 allows lower-case t and z
    "2024-01-01T00:00:00z",
    "2024-01-01t00:00:00+09:00",
    "2024-01-01T00:00:00.1Z",
    "2024-01-01T00:00:00.123456789012Z",  # any number of fraction digits
    "2024-01-01T23:59:59+23:59",
    "2024-01-01T00:00:00-23:59",
    "2024-01-01T00:00:00-00:00",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59.999Z",
    "9999-12-31T23:59:59-23:59",
    "1969-12-31T23:59:59.999Z",
]
TS_INVALID = [
    "not-a-date",
    "",
    "2023-02-29T00:00:00Z",  # not a leap year
    "2024-02-30T00:00:00Z",
    "2024-04-31T00:00:00Z",
    "2024-01-00T00:00:00Z",
    "2024-00-01T00:00:00Z",
    "2024-13-01T00:00:00Z",
    "0000-01-01T00:00:00Z",  # there is no year 0
    "2024-01-01T24:00:00Z",
    "2024-01-01T00:60:00Z",
    "2024-01-01T23:59:60Z",  # leap seconds are not supported
    "2024-01-01T00:00:00+24:00",
    "2024-01-01T00:00:00+01:60",
    "2024-01-01T00:00:00+0100",
    "2024-01-01T00:00:00+01",
    "2024-01-01T00:00:00",  # an offset is required
    "2024-01-01 00:00:00Z",
    "2024-01-01_00:00:00Z",
    "2024-01-01T00:00:00.Z",
    "2024-01-01T00:00:00,5Z",
    "2024-01-01T00:00Z",
    "2024-1-01T00:00:00Z",
    "20240101T000000Z",
    "2024-01-01",
    "2024-W01-1T00:00:00Z",
    " 2024-01-01T00:00:00Z",
    "2024-01-01T00:00:00Z ",
    "2024-01-01T00:00:00Z\n\n",
    "\uff12024-01-01T00:00:00Z",  # a full-width digit
    "2024-01-01T00:00:00\u221201:00",  # a minus sign, not a hyphen
]


def _near_miss_numbers(field: Field) -> list[Any]:
    values: list[Any] = [-1, -0.5, 0, 0.0, -0.0, 0.5, 1e300, -1e300, 2**63, 200.0, 200.5, 1.0, True, False]
    for bound in (field.minimum, field.maximum):
        if bound is not None:
            values += [bound - 1, bound - 0.5, bound, float(bound), bound + 0.5, bound + 1]
    return values


@cache
def _valid_string(field: Field) -> st.SearchStrategy[str]:
    if field.enum is not None:
        return st.sampled_from(field.enum)
    low = field.min_length or 0
    high = field.max_length if field.max_length is not None else 10_000
    if field.pattern is not None:
        return st.from_regex(field.pattern, fullmatch=True).filter(lambda v: low <= len(v) <= high)
    texts = st.text(min_size=low, max_size=min(high, low + 24))
    if field.max_length is None:
        return texts
    return st.one_of(texts, st.characters().map(lambda c: c * high))


@cache
def valid_values(field: Field) -> st.SearchStrategy[Any]:
    """Values the field accepts (not null), from the field table."""
    if field.name == "ts":
        return st.one_of(
            date_times(strict=True).map(lambda pair: pair[0]),
            st.integers(0, MAX_TS_MS),
            st.floats(0, MAX_TS_MS),
            st.sampled_from(TS_VALID),
        )
    low, high = field.minimum, field.maximum
    options: list[st.SearchStrategy[Any]] = []
    for kind in field.kinds:
        if kind == "string":
            options.append(_valid_string(field))
        elif kind in ("integer", "number"):
            ints = st.integers(
                min_value=-(2**53) if low is None else int(low),
                max_value=2**53 if high is None else int(high),
            )
            options += [ints, ints.map(float)]  # integral floats are JSON Schema integers
            if kind == "number":
                options.append(st.floats(low, high, allow_nan=False, allow_infinity=False))
        elif kind == "object":
            options.append(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4))
        else:  # pragma: no cover - a new kind needs a strategy here
            raise AssertionError(f"no strategy for {kind}")
    return st.one_of(options)


@cache
def invalid_values(field: Field) -> st.SearchStrategy[Any]:
    """Values that are wrong, or nearly right, for the field: type, range, length, pattern, enum."""
    wrong_types = st.one_of(
        st.booleans(),
        st.lists(JSON_SCALARS, max_size=2),
        st.dictionaries(st.text(max_size=4), JSON_SCALARS, max_size=2),
        st.floats(allow_nan=False, allow_infinity=False),
        st.integers(),
        st.text(max_size=6),
        JSON_VALUES,
        st.none(),
    )
    options: list[st.SearchStrategy[Any]] = [st.sampled_from(_near_miss_numbers(field))]
    if "string" in field.kinds and field.name != "ts":
        options.append(_valid_string(field).map(lambda v: v + "\n"))
        options.append(_valid_string(field).map(lambda v: v + " "))
        options.append(_valid_string(field).map(str.swapcase))
        options.append(st.sampled_from(["", " ", "\n"]))
        if field.max_length is not None:
            options.append(st.just("x" * (field.max_length + 1)))
            options.append(st.just("x" * field.max_length))
        if field.pattern is not None:
            options.append(st.from_regex(field.pattern))  # not fullmatch: junk around a match
    if "object" in field.kinds:
        labels = st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2)
        options += [
            st.dictionaries(st.text(max_size=4), JSON_VALUES, min_size=1, max_size=3),
            # string labels and one more of any type (not a string, mostly)
            st.builds(lambda good, key, odd: {**good, key: odd}, labels, st.text(max_size=4), JSON_VALUES),
        ]
    if field.name == "ts":
        options += [
            date_times(strict=False).map(lambda pair: pair[0]),
            date_times(strict=True).map(lambda pair: pair[0] + "\n"),
            st.sampled_from(TS_VALID + TS_INVALID),
            st.sampled_from([-1, -0.001, MAX_TS_MS + 1, MAX_TS_MS + 0.5, 10**20, 1e300, -1e300, True, False]),
        ]
    # Half wrong JSON types, half values near the field's limits.
    return st.one_of(st.one_of(options), wrong_types)


ALL_NAMES = sorted({field.name for kind in EVENT_TYPES for field in fields_of(kind)})
# Candidates for unknown fields: any text, other kinds' fields, near-namesakes such as "SERVICE".
UNKNOWN_NAMES = st.one_of(
    st.text(max_size=8), st.sampled_from(ALL_NAMES + [name.upper() for name in ALL_NAMES])
)


@st.composite
def documents(draw: st.DrawFn, kind: str, target: str | None = None) -> dict[str, Any]:
    """A valid document of `kind`; with a target field, that field is then broken or nearly broken.

    Besides the target, one more random field is sometimes broken too, or deleted.
    """
    doc: dict[str, Any] = {}
    for field in fields_of(kind):
        if field.required:
            doc[field.name] = draw(valid_values(field))
        elif draw(st.booleans()):
            doc[field.name] = draw(st.one_of(st.none(), valid_values(field)))
    extra = draw(st.dictionaries(UNKNOWN_NAMES, JSON_VALUES, max_size=2))
    known = {field.name for field in fields_of(kind)}
    doc.update((name, value) for name, value in extra.items() if name not in known)  # ignored
    if target is None:
        return doc
    field = next(field for field in fields_of(kind) if field.name == target)
    if draw(st.sampled_from(("set", "set", "set", "set", "delete"))) == "delete":
        doc.pop(field.name, None)
    else:
        doc[field.name] = draw(invalid_values(field))
    if draw(st.sampled_from(("alone", "alone", "alone", "another"))) == "another":
        other = draw(st.sampled_from(fields_of(kind)))
        doc[other.name] = draw(invalid_values(other))
    return doc


@pytest.mark.parametrize("kind", EVENT_TYPES)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_valid_documents_are_accepted_by_both(kind: str, data: st.DataObject) -> None:
    doc = data.draw(documents(kind))
    assert schema_accepts(kind, doc), schema_error(kind, doc)
    got = assert_agree(kind, doc)
    assert type(got) is int
    if doc.get("ts") is None:
        assert got == NO_TS


# Every field of every kind gets its own run, so each kind sees at least 5 x 60 = 300 broken documents.
FIELD_EXAMPLES = 60


@pytest.mark.parametrize(
    ("kind", "target"), [(kind, field.name) for kind in EVENT_TYPES for field in fields_of(kind)]
)
@settings(PROPERTY_SETTINGS, max_examples=FIELD_EXAMPLES)
@given(data=st.data())
def test_validator_and_json_schema_agree_on_broken_documents(
    kind: str, target: str, data: st.DataObject
) -> None:
    doc = data.draw(documents(kind, target))
    assert_agree(kind, doc)


@pytest.mark.parametrize("kind", EVENT_TYPES)
@pytest.mark.parametrize("doc", [[], [{}], "event", 1, 1.5, None, True])
def test_non_objects_are_rejected_by_both(kind: str, doc: Any) -> None:
    assert not schema_accepts(kind, doc)
    got = validate(kind, doc)
    assert isinstance(got, Rejection)
    assert got.code == "not_object"


REQUEST = {
    "service": "api",
    "method": "GET",
    "route": "/api/orders/:id",
    "status_code": 200,
    "duration_ms": 3.5,
}
ORDER = {
    "order_id": 1,
    "status": "created",
    "amount": 10,
    "currency": "KRW",
    "user_id": "u1",
    "user_role": "customer",
    "payment_method": "card",
    "item_count": 1,
}
USER = {"user_id": 1, "action": "registered", "role": "customer"}


@pytest.mark.parametrize("ts", TS_VALID)
def test_valid_date_times(ts: str) -> None:
    doc = {**REQUEST, "ts": ts}
    assert schema_accepts("request", doc)
    assert type(assert_agree("request", doc)) is int


@pytest.mark.parametrize("ts", TS_INVALID)
def test_invalid_date_times(ts: str) -> None:
    doc = {**REQUEST, "ts": ts}
    assert not schema_accepts("request", doc)
    got = assert_agree("request", doc)
    assert isinstance(got, Rejection)
    assert got.code == "invalid_value"


def test_date_time_with_one_final_newline_follows_jsonschema() -> None:
    # rfc3339-validator ends its grammar with Python's `$`, which also matches before a final newline.
    assert FORMAT_CHECKER.conforms("2024-01-01T00:00:00Z\n", "date-time")
    assert assert_agree("request", {**REQUEST, "ts": "2024-01-01T00:00:00z\n"}) == 1_704_067_200_000
    assert isinstance(assert_agree("request", {**REQUEST, "ts": "2024-01-01T00:00:00Z\n\n"}), Rejection)


@PROPERTY_SETTINGS
@given(date_times(strict=True))
def test_date_time_gives_exact_epoch_ms(pair: tuple[str, int | None]) -> None:
    text, expected = pair
    assert expected is not None
    assert validate("request", {**REQUEST, "ts": text}) == expected


@PROPERTY_SETTINGS
@given(st.integers(0, MAX_TS_MS))
def test_millisecond_date_time_round_trips(ms: int) -> None:
    # Every millisecond in range, written as RFC 3339, comes back exactly (no float rounding).
    seconds, millis = divmod(ms, 1000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    assert validate("request", {**REQUEST, "ts": f"{stamp}.{millis:03d}Z"}) == ms


# --- (c) precise reasons and values ----------------------------------------------------------------------


def rejection(kind: str, doc: Any) -> Rejection:
    got = assert_agree(kind, doc)
    assert isinstance(got, Rejection), got
    return got


def test_missing_required_field() -> None:
    doc = dict(REQUEST)
    del doc["route"]
    got = rejection("request", doc)
    assert got.code == "missing_field"
    assert "route" in got.detail


@pytest.mark.parametrize("value", ["200", True, False, 200.5, [200], {"code": 200}])
def test_wrong_type(value: Any) -> None:
    got = rejection("request", {**REQUEST, "status_code": value})
    assert got.code == "wrong_type"
    assert "status_code" in got.detail


def test_null_in_required_field() -> None:
    got = rejection("request", {**REQUEST, "service": None})
    assert got.code == "null_field"
    assert "service" in got.detail


def test_null_in_optional_field_is_accepted() -> None:
    assert assert_agree("request", {**REQUEST, "user_id": None, "event_id": None}) == NO_TS


@pytest.mark.parametrize(
    ("kind", "field", "value"), [("order", "status", "shipped"), ("user", "action", "Active")]
)
def test_bad_enum(kind: str, field: str, value: str) -> None:
    docs = {"order": ORDER, "user": USER}
    assert type(assert_agree(kind, docs[kind])) is int
    got = rejection(kind, {**docs[kind], field: value})
    assert got.code == "invalid_value"
    assert field in got.detail


@pytest.mark.parametrize(
    ("field", "value"),
    [("status_code", 99), ("status_code", 600), ("duration_ms", -0.5), ("method", ""), ("method", "G-T")],
)
def test_out_of_range_and_pattern(field: str, value: Any) -> None:
    assert rejection("request", {**REQUEST, field: value}).code == "invalid_value"


def test_labels_with_non_string_value() -> None:
    doc = {"name": "db_pool", "value": 3, "labels": {"db": "main", "shard": 2}}
    assert rejection("gauge", doc).code == "wrong_type"
    assert type(assert_agree("gauge", {**doc, "labels": {}})) is int


def test_not_an_object() -> None:
    got = validate("request", [REQUEST])
    assert isinstance(got, Rejection)
    assert got.code == "not_object"


def test_integral_float_is_rewritten_to_int() -> None:
    doc = {**REQUEST, "status_code": 200.0, "user_id": 7.0}
    assert schema_accepts("request", doc)
    assert validate("request", doc) == NO_TS
    assert doc["status_code"] == 200
    assert type(doc["status_code"]) is int
    assert type(doc["user_id"]) is int
    assert type(doc["duration_ms"]) is float  # a number field keeps its float


def test_ts_with_offset_gives_epoch_ms() -> None:
    # 2024-03-10T09:30:15.250+09:00 is 2024-03-10T00:30:15.250Z.
    expected = (calendar.timegm((2024, 3, 10, 0, 30, 15, 0, 0, 0))) * 1000 + 250
    assert expected == 1_710_030_615_250
    assert validate("request", {**REQUEST, "ts": "2024-03-10T09:30:15.250+09:00"}) == expected
    assert validate("request", {**REQUEST, "ts": "2024-03-09T19:00:15.250-05:30"}) == expected
    assert validate("request", {**REQUEST, "ts": "2024-03-10t00:30:15.250z"}) == expected


def test_ts_as_epoch_ms() -> None:
    assert validate("request", {**REQUEST, "ts": 1_710_030_615_250}) == 1_710_030_615_250
    assert validate("request", {**REQUEST, "ts": 1_710_030_615_250.0}) == 1_710_030_615_250
    assert validate("request", {**REQUEST, "ts": MAX_TS_MS}) == MAX_TS_MS
    assert rejection("request", {**REQUEST, "ts": MAX_TS_MS + 1}).code == "invalid_value"
    assert rejection("request", {**REQUEST, "ts": -1}).code == "invalid_value"
    assert rejection("request", {**REQUEST, "ts": True}).code == "wrong_type"


def test_missing_ts_gives_no_ts() -> None:
    assert validate("request", dict(REQUEST)) == NO_TS
    assert validate("request", {**REQUEST, "ts": None}) == NO_TS


def test_unknown_fields_are_ignored() -> None:
    assert assert_agree("request", {**REQUEST, "extra": [1, {"a": None}], "": True}) == NO_TS
