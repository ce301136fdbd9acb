"""Typed events: the Structs follow the field tables; `fast_decoder` is never more lenient than the old path.

The old path is what stage 1 does without the typed decoder: `pipeline.ingest.decode.decode` (orjson) for the
message, then `schemas.events.validator` per element, then `from_dict`. The property proved here: every
message value that `fast_decoder` accepts, the old path accepts too, with the same events, the same
event times and the same field values, Python types included (200 is not 200.0, -0.0 is not 0.0).
So a caller that falls back to the old path whenever `fast_decoder` returns None accepts, rejects and
dead-letters exactly what it did before. The documents are written as JSON text here, not with
orjson, so that duplicate keys, escapes, number spellings, whitespace and broken bytes all occur.
"""

from __future__ import annotations

import json
import random
from decimal import Decimal
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pipeline.ingest.decode import decode
from pipeline.tools.simulate import Traffic
from schemas.events import (
    COMMON_FIELDS,
    EVENT_FIELDS,
    EVENT_TYPES,
    MAX_TS_MS,
    NO_TS,
    Rejection,
    validate,
    validator,
)
from schemas.typed import (
    INT64_MAX,
    INT64_MIN,
    STRUCTS,
    UINT64_MAX,
    Event,
    GaugeEvent,
    RequestEvent,
    fast_decoder,
    field_type,
    from_dict,
)
from tests.unit.test_schemas import (
    JSON_VALUES,
    ORDER,
    REQUEST,
    TS_INVALID,
    TS_VALID,
    USER,
    documents,
    fields_of,
    invalid_values,
    valid_values,
)

MAX_BYTES = 1 << 20
DECODERS = {kind: fast_decoder(kind) for kind in EVENT_TYPES}
VALIDATORS = {kind: validator(kind) for kind in EVENT_TYPES}
SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


# --- the two paths ---------------------------------------------------------------------------------


def old_path(kind: str, value: bytes) -> list[tuple[int, dict[str, Any]]] | Rejection:
    """What stage 1 did before: decode, then validate each element.

    Returns the (event time, validated dict) of every element, or the first rejection (of the message
    or of an element): the fast path may only accept a message all of whose elements are valid.
    """
    decoded = decode(value, MAX_BYTES)
    if isinstance(decoded, Rejection):
        return decoded
    check = VALIDATORS[kind]
    out = []
    for item in decoded:
        ts = check(item)
        if isinstance(ts, Rejection):
            return ts
        out.append((ts, item))
    return out


def same(a: Any, b: Any) -> bool:
    """Equal and of the same Python types, all the way down (floats by repr: -0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return repr(a) == repr(b)
    if type(a) is dict:
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def assert_same_event(got: Event, want: Event) -> None:
    assert type(got) is type(want)
    for name in got.__struct_fields__:
        mine, theirs = getattr(got, name), getattr(want, name)
        assert same(mine, theirs), f"field {name!r}: fast path {mine!r}, old path {theirs!r}"


def check_message(kind: str, value: bytes) -> bool:
    """Assert the subset property for one message value; return whether the fast path accepted it."""
    fast = DECODERS[kind](value)
    if fast is None:
        return False
    old = old_path(kind, value)
    assert not isinstance(old, Rejection), f"fast path accepted {value!r}, the old path refuses: {old}"
    assert len(fast) == len(old)
    for event, (ts, item) in zip(fast, old, strict=True):
        # The validator's time, where a negative one (no ts, or a date before 1970) means record time.
        assert event.ts == (ts if ts >= 0 else None), value
        assert event.ts is None or type(event.ts) is int
        for field in fields_of(kind):  # the validated dict, field by field
            if field.name != "ts":
                mine, theirs = getattr(event, field.name), item.get(field.name)
                assert same(mine, theirs), f"{field.name!r}: fast path {mine!r}, old path {theirs!r}"
        assert_same_event(event, from_dict(kind, item))  # and what the slow path hands to `add`
    return True


# --- JSON text, written by hand ------------------------------------------------------------------------


class Raw:
    """A piece of JSON text (valid or not) to put where a value goes."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text!r})"


class Dup:
    """A document written with one more `"name": value` pair in front: the same key twice."""

    def __init__(self, name: str, first: Any, doc: dict[str, Any]) -> None:
        self.name, self.first, self.doc = name, first, doc

    def __repr__(self) -> str:
        return f"Dup({self.name!r}, {self.first!r}, {self.doc!r})"


WHITESPACE = ["", "", "", " ", "\n", "\t", "\r\n", "  "]
# Tokens where orjson and msgspec could disagree: numbers at the edges of int64/uint64/double, integral
# floats, NaN and Infinity, broken literals and numbers, surrogate escapes, raw control characters, deep
# nesting, and strings that end in a newline (which `$` in a pattern lets through).
SPECIAL_TOKENS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "1E309",
    "1" + "0" * 400,
    "0." + "0" * 400 + "1",
    "1e-400",
    "18446744073709551616",
    "18446744073709551615",
    "9223372036854775808",
    "9223372036854775807",
    "-9223372036854775808",
    "-9223372036854775809",
    "123456789012345678901234567890",
    "200.0",
    "2e2",
    "2.00E+2",
    "-0",
    "-0.0",
    "0.1e1",
    "1.0000000000000000000000001",
    "100.00000000000000000000000001",
    "01",
    "1.",
    ".5",
    "+1",
    "tru",
    "nul",
    "true",
    "false",
    "null",
    '"\\ud800"',
    '"\\udc00"',
    '"\\ud800\\u0041"',
    '"\\ud83d\\ude00"',
    '"\\ud83d\\ude00\\ud83d"',
    '"\\u0000"',
    '"\\/"',
    '"a\x01b"',
    '"a\x7fb"',
    '"KRW\\n"',
    '"GET\\n"',
    '"KRW"',
    '"GET"',
    '"\\u004BRW"',
    "[" * 1100 + "]" * 1100,
    "[" * 20 + "]" * 20,
    "{}",
    "[]",
    '{"a":"b","a":"c"}',
    '{"a":"b","a":1}',
    '{"a":1,"a":"b"}',
    '{"a":1}',
]
# Strings at the length limits (16 for a method, 200 for a gauge name, 512 for labels), in characters
# that take 1 to 4 UTF-8 bytes and 1 or 2 JSON escapes.
for limit in (0, 1, 16, 17, 200, 201, 512, 513):
    for char in ("x", "\u00e9", "\u65e5", "\U0001f600"):
        SPECIAL_TOKENS.append(json.dumps(char * limit, ensure_ascii=False))
    SPECIAL_TOKENS.append(json.dumps("\U0001f600" * limit))
BAD_BYTES = [
    b"\xff",
    b"\xfe",
    b"\x80",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xe2\x82",
    b"\xc3",
]


def render_string(text: str, rng: random.Random) -> str:
    """A JSON string literal of `text`, each character written raw or escaped at random."""
    style = rng.random()
    out = ['"']
    for char in text:
        code = ord(char)
        if char == '"' or char == "\\" or code < 0x20 or (style > 0.5 and rng.random() < style - 0.4):
            short = {
                '"': '\\"',
                "\\": "\\\\",
                "\n": "\\n",
                "\t": "\\t",
                "\r": "\\r",
                "\b": "\\b",
                "\f": "\\f",
            }
            if char in short and rng.random() < 0.5:
                out.append(short[char])
            elif code > 0xFFFF:
                code -= 0x10000
                out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04X}")
            else:
                out.append(f"\\u{code:04x}" if rng.random() < 0.5 else f"\\u{code:04X}")
        elif char == "/" and rng.random() < 0.5:
            out.append("\\/")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def render_float(value: float, rng: random.Random) -> str:
    choice = rng.randrange(6)
    if choice == 0:
        return f"{value:.17g}".replace("inf", "1e999")
    if choice == 1:
        return f"{value:.25e}"
    if choice == 2 and abs(value) < 1e30:
        return str(Decimal(value))  # the exact decimal expansion of the double
    text = repr(value)
    return text if "." in text or "e" in text else text + ".0"


def render(value: Any, rng: random.Random, odd: bool = True) -> str:
    """JSON text of a Python value, with random escapes and whitespace; with `odd`, also integers
    spelled as floats (200.0, 2e2) and duplicate keys."""

    def ws() -> str:
        return rng.choice(WHITESPACE)

    if isinstance(value, Raw):
        return value.text
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is int:
        if odd and rng.random() < 0.1:
            return rng.choice([f"{value}.0", f"{value}e0", f"{value}E+00", f"{value}.000"])
        return "-0" if value == 0 and rng.random() < 0.2 else str(value)
    if type(value) is float:
        return render_float(value, rng) if odd else repr(value)
    if type(value) is str:
        return render_string(value, rng)
    if type(value) is list:
        return "[" + ws() + ("," + ws()).join(render(v, rng, odd) + ws() for v in value) + "]"
    if type(value) is dict:
        pairs = [(k, v) for k, v in value.items()]
        if odd and pairs and rng.random() < 0.1:  # a duplicate key, before or after, with another value
            key = rng.choice(pairs)[0]
            other = rng.choice([v for _, v in pairs])
            pairs.insert(rng.randrange(len(pairs) + 1), (key, other))
        items = [
            ws() + render_string(k, rng) + ws() + ":" + ws() + render(v, rng, odd) + ws() for k, v in pairs
        ]
        return "{" + ",".join(items) + ws() + "}"
    raise AssertionError(f"cannot render {value!r}")


@st.composite
def object_values(draw: st.DrawFn, kind: str) -> Any:
    """A document of `kind` as a Python value: valid, broken in one field, with duplicate keys, or raw
    tokens in known or unknown fields (possibly everywhere)."""
    target = draw(st.one_of(st.none(), st.sampled_from([f.name for f in fields_of(kind)])))
    doc: dict[str, Any] = draw(documents(kind, target))
    roll = draw(st.integers(0, 9))  # Hypothesis favours 0: the plain document
    if roll >= 7:
        name = draw(st.one_of(st.sampled_from([f.name for f in fields_of(kind)]), st.text(max_size=4)))
        doc[name] = Raw(draw(st.sampled_from(SPECIAL_TOKENS)))
    elif roll == 6:
        # A duplicate key whose two values are both taken from the field's valid or invalid values.
        field = draw(st.sampled_from(fields_of(kind)))
        first = draw(st.one_of(valid_values(field), invalid_values(field)))
        second = draw(st.one_of(valid_values(field), invalid_values(field)))
        return Dup(field.name, first, {**doc, field.name: second})
    return doc


def message_text(value: Any, rng: random.Random) -> str:
    if isinstance(value, Dup):
        body = render(value.doc, rng)  # "{...}"
        pair = render_string(value.name, rng) + ":" + render(value.first, rng)
        return "{" + pair + ("," if body[1:].strip() != "}" else "") + body[1:]
    return render(value, rng)


@st.composite
def messages(draw: st.DrawFn, kind: str) -> bytes:
    """One message value: an object, or an envelope mixing objects with anything else; sometimes
    with broken bytes: a BOM, trailing content, cut short, or a byte that is not UTF-8."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    if draw(st.integers(0, 3)) == 3:
        elements = draw(
            st.lists(
                st.one_of(
                    object_values(kind),
                    object_values(kind),
                    st.builds(Raw, st.sampled_from(["1", '"x"', "null", "[]", "[{}]", "{}", "true"])),
                    JSON_VALUES,
                ),
                max_size=4,
            )
        )
        text = "[" + ",".join(rng.choice(WHITESPACE) + message_text(e, rng) for e in elements) + "]"
    else:
        text = message_text(draw(object_values(kind)), rng)
    value = (rng.choice(WHITESPACE) + text + rng.choice(WHITESPACE)).encode("utf-8", "surrogatepass")
    mutation = draw(st.integers(0, 19))  # 0 to 14: none
    if mutation == 15:
        value = b"\xef\xbb\xbf" + value
    elif mutation == 16:
        value += draw(st.sampled_from([b"x", b"}", b"]", b"\x00", b" {}", b"\x0c", b",", b"[]"]))
    elif mutation == 17:
        value = value[: draw(st.integers(0, max(0, len(value) - 1)))]
    elif mutation == 18:
        at = draw(st.integers(0, len(value)))
        value = value[:at] + draw(st.sampled_from(BAD_BYTES)) + value[at:]
    elif mutation == 19 and b'"' in value:
        # A broken byte inside a string (the first quote opens a key or a string value).
        at = value.index(b'"') + 1
        value = value[:at] + draw(st.sampled_from(BAD_BYTES)) + value[at:]
    return value


# --- (a) the Structs are the field tables -----------------------------------------------------------


def test_one_struct_per_event_type() -> None:
    assert list(STRUCTS) == list(EVENT_TYPES)


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_struct_fields_follow_the_table(kind: str) -> None:
    info = msgspec.inspect.type_info(STRUCTS[kind])
    assert isinstance(info, msgspec.inspect.StructType)
    fields = {f.name: f for f in info.fields}
    table = {f.name: f for f in (*EVENT_FIELDS[kind], *COMMON_FIELDS)}
    assert set(fields) == set(table), "every field of the table, and only those"
    assert info.forbid_unknown_fields, "unknown fields must send a document to the old path"
    for name, field in table.items():
        got = fields[name]
        assert got.required == field.required, name
        if not field.required:
            assert got.default is None, name
        want = msgspec.inspect.type_info(field_type(field))
        assert union_members(got.type) == union_members(want), name


def union_members(info: msgspec.inspect.Type) -> list[str]:
    types = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
    return sorted(repr(t) for t in types)


def test_field_type_of_each_kind_of_field() -> None:
    request = {f.name: f for f in (*EVENT_FIELDS["request"], *COMMON_FIELDS)}
    status = msgspec.inspect.type_info(field_type(request["status_code"]))
    assert status == msgspec.inspect.IntType(ge=100, le=599)
    duration = union_members(msgspec.inspect.type_info(field_type(request["duration_ms"])))
    assert duration == sorted(
        [repr(msgspec.inspect.FloatType(ge=0)), repr(msgspec.inspect.IntType(ge=0, le=INT64_MAX))]
    )
    user = union_members(msgspec.inspect.type_info(field_type(request["user_id"])))
    assert repr(msgspec.inspect.NoneType()) in user
    order = {f.name: f for f in EVENT_FIELDS["order"]}
    status_type = msgspec.inspect.type_info(field_type(order["status"]))
    assert isinstance(status_type, msgspec.inspect.LiteralType)
    assert sorted(status_type.values) == sorted(("created", "confirmed", "cancelled", "refunded"))


# --- (b) the subset property on generated messages ------------------------------------------------------


@pytest.mark.parametrize("kind", EVENT_TYPES)
@settings(SETTINGS, max_examples=80)
@given(data=st.data())
def test_fast_path_accepts_only_what_the_old_path_accepts_identically(kind: str, data: st.DataObject) -> None:
    check_message(kind, data.draw(messages(kind)))


def canonical(kind: str, doc: dict[str, Any]) -> dict[str, Any]:
    """The usual spelling of a valid document: ints in integer fields, known fields only."""
    out = {}
    for field in fields_of(kind):
        if field.name in doc:
            value = doc[field.name]
            if (
                type(value) is float
                and value.is_integer()
                and field.kinds in (("integer",), ("string", "integer"))
            ):
                value = int(value)
            out[field.name] = value
    return out


@pytest.mark.parametrize("kind", EVENT_TYPES)
@settings(SETTINGS, max_examples=20)
@given(data=st.data())
def test_fast_path_takes_ordinary_valid_documents(kind: str, data: st.DataObject) -> None:
    # The fast path must be the common path: valid events as services write them never fall back.
    docs = [canonical(kind, data.draw(documents(kind))) for _ in range(data.draw(st.integers(1, 3)))]
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    text = render(docs[0] if len(docs) == 1 else docs, rng, odd=False)
    try:
        value = text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: no JSON text holds them (escaped, orjson refuses them)
        assume(False)
    assert check_message(kind, value), value
    assert check_message(kind, orjson.dumps(docs[0]))
    assert check_message(kind, orjson.dumps(docs))


NUMBER_SLOTS = [
    ("gauge", '{{"name": "g", "labels": {{}}, "value": {}}}'),
    ("request", '{{"service": "a", "method": "GET", "route": "/", "status_code": 200, "duration_ms": {}}}'),
    ("request", '{{"service": "a", "method": "GET", "route": "/", "status_code": {}, "duration_ms": 1}}'),
    (
        "request",
        '{{"service": "a", "method": "GET", "route": "/", "status_code": 200, "duration_ms": 1, "ts": {}}}',
    ),
    ("user", '{{"user_id": {}, "action": "active", "role": "r"}}'),
    ("inventory", '{{"product_id": "p", "stock": {}, "low_stock_threshold": 1, "event_id": 1}}'),
    ("inventory", '{{"product_id": "p", "stock": 1, "low_stock_threshold": 1, "event_id": {}}}'),
    ("heartbeat", '{{"service": "s", "status": "healthy", "response_time_ms": {}}}'),
]


@settings(SETTINGS, max_examples=100)
@given(
    st.one_of(
        st.integers(-(2**70), 2**70),
        st.integers(-(2**64) - 5, -(2**63) + 5),
        st.integers(2**63 - 5, 2**64 + 5),
        st.integers(0, MAX_TS_MS + 5),
    ),
    st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.floats(0, MAX_TS_MS + 5)),
    st.integers(0, 40),
)
def test_numbers_read_alike(integer: int, number: float, digits: int) -> None:
    # Integers around the int64/uint64 edges and floats in many spellings (exact expansions, many
    # digits, exponents) in every kind of numeric field: the same value and type, or the fast path
    # declines.
    spellings = [str(integer), f"{integer}.0", f"{integer}e0", repr(number)]
    spellings += [f"{number:.{digits}e}", f"{number:.{digits}f}", str(Decimal(number))]
    for text in spellings:
        for kind, template in NUMBER_SLOTS:
            check_message(kind, template.format(text).encode())


# --- (c) the examples and dead-letter cases of the other tests -------------------------------------------

INGEST_REQUEST = {**REQUEST, "route": "/api/orders/:id", "duration_ms": 42.5, "ts": 1_796_035_000_000}
MISSING_ROUTE = {k: v for k, v in INGEST_REQUEST.items() if k != "route"}
BAD_ELEMENT = b'{"service": "api", "method": "GET", "route": "/x", "status_code": "oops",  "duration_ms": 1}'
# tests/integration/test_ingest.py, test_http_ingest.py and tests/unit/test_config_decode.py
DEAD_LETTERS: list[tuple[bytes, str | None]] = [
    (b"this is not json {", "invalid_json"),
    (b'{"service": "\xff\xfe", "method": "GET"}', "invalid_utf8"),
    (b"42", "not_object_or_array"),
    (b'"a string"', "not_object_or_array"),
    (orjson.dumps(MISSING_ROUTE), "missing_field"),
    (orjson.dumps({**INGEST_REQUEST, "status_code": "200"}), "wrong_type"),
    (orjson.dumps({**INGEST_REQUEST, "duration_ms": None}), "null_field"),
    (orjson.dumps([1, 2]), "not_object"),
    (
        b"["
        + orjson.dumps({**INGEST_REQUEST, "route": "/a"})
        + b",\n  "
        + BAD_ELEMENT
        + b" , "
        + orjson.dumps({**INGEST_REQUEST, "route": "/b"})
        + b"]",
        "wrong_type",
    ),
    (b'{"ts": 1, "service": 5}', "wrong_type"),
    (b'{"a": "\xff\xfe"}', "invalid_utf8"),
    (b"\xc3\x28", "invalid_utf8"),
    (b"{", "invalid_json"),
    (b"", "invalid_json"),
    (b"{'a': 1}", "invalid_json"),
    (b"[1, 2,]", "invalid_json"),
    (b"NaN", "invalid_json"),
    (b'{"a": 1} {"b": 2}', "invalid_json"),
    ("{\u00e9}".encode(), "invalid_json"),
    (b"1", "not_object_or_array"),
    (b"2.5", "not_object_or_array"),
    (b"true", "not_object_or_array"),
    (b"null", "not_object_or_array"),
    (b'[{"n": 1}, 2, "x"]', "missing_field"),
    (orjson.dumps({**INGEST_REQUEST, "route": "/after"}), None),
    (orjson.dumps([INGEST_REQUEST, INGEST_REQUEST]), None),
    (orjson.dumps({**INGEST_REQUEST, "padding": "x" * 5000}), None),  # too_large only under a 4 KiB limit
]


@pytest.mark.parametrize(("value", "code"), DEAD_LETTERS)
def test_ingest_cases(value: bytes, code: str | None) -> None:
    accepted = check_message("request", value)
    old = old_path("request", value)
    if code is None:
        assert not isinstance(old, Rejection)
    else:
        assert not accepted
        assert isinstance(old, Rejection)
        assert old.code == code


def schema_examples() -> list[tuple[str, dict[str, Any]]]:
    """The example documents of tests/unit/test_schemas.py."""
    docs: list[tuple[str, dict[str, Any]]] = [
        ("request", {**REQUEST, "ts": ts}) for ts in TS_VALID + TS_INVALID
    ]
    docs += [
        ("request", {**REQUEST, "ts": "2024-01-01T00:00:00z\n"}),
        ("request", {**REQUEST, "ts": "2024-01-01T00:00:00Z\n\n"}),
    ]
    docs += [
        ("request", {**REQUEST, "status_code": v}) for v in ["200", True, False, 200.5, [200], {"code": 200}]
    ]
    docs += [
        ("request", {k: v for k, v in REQUEST.items() if k != "route"}),
        ("request", {**REQUEST, "service": None}),
    ]
    docs += [
        ("request", {**REQUEST, "user_id": None, "event_id": None}),
        ("order", ORDER),
        ("order", {**ORDER, "status": "shipped"}),
    ]
    docs += [("user", USER), ("user", {**USER, "action": "Active"})]
    docs += [
        ("request", {**REQUEST, field: value})
        for field, value in [
            ("status_code", 99),
            ("status_code", 600),
            ("duration_ms", -0.5),
            ("method", ""),
            ("method", "G-T"),
        ]
    ]
    gauge = {"name": "db_pool", "value": 3, "labels": {"db": "main", "shard": 2}}
    docs += [("gauge", gauge), ("gauge", {**gauge, "labels": {}})]
    docs += [
        ("request", {**REQUEST, "status_code": 200.0, "user_id": 7.0}),
        ("request", {**REQUEST, "ts": "2024-03-10T09:30:15.250+09:00"}),
    ]
    docs += [
        ("request", {**REQUEST, "ts": t})
        for t in (1_710_030_615_250, 1_710_030_615_250.0, MAX_TS_MS, MAX_TS_MS + 1, -1, True, None)
    ]
    docs += [("request", {**REQUEST, "extra": [1, {"a": None}], "": True})]
    return docs


@pytest.mark.parametrize(("kind", "doc"), schema_examples())
def test_schema_examples(kind: str, doc: dict[str, Any]) -> None:
    for value in (
        orjson.dumps(doc),
        orjson.dumps([doc]),
        orjson.dumps([doc, doc]),
        orjson.dumps([ORDER, doc]),
    ):
        check_message(kind, value)


# --- (d) where msgspec and the old path differ, one by one --------------------------------------------------


def req(extra: str = "", **fields: str) -> bytes:
    """A request event written by hand: the given fields' JSON text replaces the defaults'."""
    texts = {
        "service": '"api"',
        "method": '"GET"',
        "route": '"/a"',
        "status_code": "200",
        "duration_ms": "1.5",
    }
    texts.update(fields)
    body = ", ".join(f'"{name}": {text}' for name, text in texts.items())
    return f"{{{body}{extra}}}".encode("utf-8", "surrogatepass")


GAUGE = '{{"name": "g", "value": 1, "labels": {}}}'
# (case, kind, message value, does the fast path take it, old path's rejection code or None)
EDGES: list[tuple[str, str, bytes, bool, str | None]] = [
    ("integral float in an integer field", "request", req(status_code="200.0"), False, None),
    (
        "int beyond uint64: orjson rounds",
        "request",
        req(user_id="123456789012345678901234567890"),
        False,
        None,
    ),
    ("int beyond int64, within uint64", "request", req(user_id="9223372036854775808"), False, None),
    ("largest int64", "request", req(user_id="9223372036854775807"), True, None),
    ("int beyond uint64 in a number field", "request", req(duration_ms="18446744073709551616"), False, None),
    ("unknown field", "request", req(', "x": 1'), False, None),
    ("unknown field orjson refuses: 1e400", "request", req(', "x": 1e400'), False, "invalid_json"),
    (
        "unknown field deeper than 1024",
        "request",
        req(', "x": ' + "[" * 1100 + "]" * 1100),
        False,
        "invalid_json",
    ),
    ("unknown field not UTF-8", "request", req(', "x": "\udcff"'), False, "invalid_utf8"),
    (
        "duplicate key, the first invalid",
        "request",
        req(', "status_code": 201', status_code='"x"'),
        False,
        None,
    ),
    ("duplicate key, the last invalid", "request", req(', "status_code": "x"'), False, "wrong_type"),
    ("duplicate key, both valid: the last", "request", req(', "status_code": 201'), True, None),
    ("lone surrogate escape", "request", req(route='"\\ud800"'), False, "invalid_json"),
    ("surrogate pair escape", "request", req(route='"\\ud83d\\ude00"'), True, None),
    ("BOM", "request", b"\xef\xbb\xbf" + req(), False, "invalid_json"),
    ("trailing garbage", "request", req() + b" x", False, "invalid_json"),
    ("NaN", "request", req(duration_ms="NaN"), False, "invalid_json"),
    ("number orjson refuses: 1e400", "request", req(duration_ms="1e400"), False, "invalid_json"),
    ("underflow to 0.0", "request", req(duration_ms="1e-400"), True, None),
    ("-0.0 stays -0.0", "request", req(duration_ms="-0.0"), True, None),
    ("bool in an int field", "request", req(status_code="true"), False, "wrong_type"),
    ("null in a required field", "request", req(route="null"), False, "null_field"),
    ("null in an optional field", "request", req(user_id="null"), True, None),
    ("empty label", "request", req(route='""'), False, "invalid_value"),
    ("512 astral characters", "request", req(route=json.dumps("\U0001f600" * 512)), True, None),
    ("513 astral characters", "request", req(route=json.dumps("\U0001f600" * 513)), False, "invalid_value"),
    ("pattern: `$` before a final newline", "request", req(method='"GET\\n"'), True, None),
    ("pattern", "request", req(method='"G-T"'), False, "invalid_value"),
    ("enum", "order", orjson.dumps({**ORDER, "status": "shipped"}), False, "invalid_value"),
    ("currency pattern", "order", orjson.dumps({**ORDER, "currency": "krw"}), False, "invalid_value"),
    ("empty id", "order", orjson.dumps({**ORDER, "order_id": ""}), True, None),
    ("negative number", "request", req(duration_ms="-0.5"), False, "invalid_value"),
    (
        "float in an integer field",
        "inventory",
        b'{"product_id": 1, "stock": 1.5, "low_stock_threshold": 0}',
        False,
        "wrong_type",
    ),
    ("RFC 3339 without a time", "request", req(ts='"2024-01-01"'), False, "invalid_value"),
    ("RFC 3339 without an offset", "request", req(ts='"2024-01-01T00:00:00"'), False, "invalid_value"),
    ("RFC 3339 lower case and final newline", "request", req(ts='"2024-01-01t00:00:00z\\n"'), True, None),
    ("RFC 3339 before 1970", "request", req(ts='"0001-01-01T00:00:00Z"'), True, None),
    ("RFC 3339 Feb 30", "request", req(ts='"2024-02-30T00:00:00Z"'), False, "invalid_value"),
    ("float ts truncates", "request", req(ts="1500000000000.9"), True, None),
    ("ts past the maximum", "request", req(ts="253402300799999.5"), False, "invalid_value"),
    ("empty envelope", "request", b"[]", True, None),
    ("nested envelope", "request", b"[[]]", False, "not_object"),
    (
        "envelope with a bad element",
        "request",
        b"[" + req() + b", " + req(route="5") + b"]",
        False,
        "wrong_type",
    ),
    (
        "labels: duplicate, the last not a string",
        "gauge",
        GAUGE.format('{"a": "b", "a": 1}').encode(),
        False,
        "wrong_type",
    ),
    (
        "labels: duplicate, the first not a string",
        "gauge",
        GAUGE.format('{"a": 1, "a": "b"}').encode(),
        False,
        None,
    ),
    ("labels: duplicate strings", "gauge", GAUGE.format('{"a": "b", "a": "c"}').encode(), True, None),
]


@pytest.mark.parametrize(
    ("kind", "value", "fast", "code"), [case[1:] for case in EDGES], ids=[case[0] for case in EDGES]
)
def test_edges(kind: str, value: bytes, fast: bool, code: str | None) -> None:
    assert check_message(kind, value) is fast
    old = old_path(kind, value)
    if code is None:
        assert not isinstance(old, Rejection), old
    else:
        assert isinstance(old, Rejection)
        assert old.code == code


def test_duplicate_keys_keep_the_last_value_on_both_paths() -> None:
    events = DECODERS["request"](req(', "status_code": 201'))
    assert events is not None
    assert isinstance(events[0], RequestEvent)
    assert events[0].status_code == 201
    gauges = DECODERS["gauge"](GAUGE.format('{"a": "b", "a": "c"}').encode())
    assert gauges is not None
    assert isinstance(gauges[0], GaugeEvent)
    assert gauges[0].labels == {"a": "c"}


def test_ts_is_normalised_to_epoch_ms() -> None:
    decode_request = DECODERS["request"]
    for text, ms in [
        ('"2024-03-10T09:30:15.250+09:00"', 1_710_030_615_250),
        ("1710030615250", 1_710_030_615_250),
        ("1710030615250.9", 1_710_030_615_250),
        ('"1970-01-01T00:00:00.000Z"', 0),
    ]:
        events = decode_request(req(ts=text))
        assert events is not None
        assert events[0].ts == ms
        assert type(events[0].ts) is int
    for text in ("null", '"1969-12-31T23:59:59.999Z"', '"0001-01-01T00:00:00Z"'):
        events = decode_request(req(ts=text))  # no ts, or one that stage 1 treats as none
        assert events is not None
        assert events[0].ts is None
    assert validate("request", {**REQUEST, "ts": "1969-12-31T23:59:59.999Z"}) == NO_TS


def test_max_bytes() -> None:
    limited = fast_decoder("request", max_bytes=len(req()))
    assert limited(req()) is not None
    assert limited(req(', "event_id": 1')) is None
    # The too_large case of tests/integration/test_ingest.py (a 4 KiB limit), on a valid event.
    big = orjson.dumps({"service": "api", "route": "/a", "error_code": 7, "message": "x" * 5000})
    assert check_message("error", big)
    assert fast_decoder("error", max_bytes=4096)(big) is None
    too_large = decode(big, 4096)
    assert isinstance(too_large, Rejection)
    assert too_large.code == "too_large"
    assert limited(None) is None  # type: ignore[arg-type]
    assert DECODERS["request"](None) is None  # type: ignore[arg-type]


def test_patterns_are_checked_after_the_decode() -> None:
    decoder = fast_decoder("request")
    for _ in range(2):  # the second time from the memo of matching strings
        assert decoder(req(method='"GET"')) is not None
        assert decoder(req(method='"G-T"')) is None
        assert decoder(req(method='"GET\\n"')) is not None
    gauges = fast_decoder("gauge")
    assert gauges(GAUGE.format("{}").replace('"g"', '"db:pool_1"').encode()) is not None
    assert gauges(GAUGE.format("{}").replace('"g"', '"1db"').encode()) is None
    orders = fast_decoder("order")
    assert orders(orjson.dumps(ORDER)) is not None
    assert orders(orjson.dumps({**ORDER, "currency": "KRWX"})) is None


@pytest.mark.parametrize("scenario", ["steady", "payment-outage", "stock-out"])
def test_simulated_traffic_takes_the_fast_path(scenario: str) -> None:
    # What `pulse simulate` sends (as single events and as envelopes) never needs the old path.
    traffic = Traffic(scenario, seed=5)
    by_kind: dict[str, list[dict[str, Any]]] = {kind: [] for kind in EVENT_TYPES}
    for i in range(300):
        kind, event = traffic.event(1_796_035_000_000 + i, i / 300)
        by_kind[kind].append(event)
        if i % 50 == 0:
            for periodic_kind, periodic_event in traffic.periodic(1_796_035_000_000 + i, i / 300):
                by_kind[periodic_kind].append(periodic_event)
    for kind, events in by_kind.items():
        assert events, kind
        assert check_message(kind, orjson.dumps(events))
        for event in events:
            assert check_message(kind, orjson.dumps(event)), (kind, event)


# --- (e) from_dict ----------------------------------------------------------------------------------------


def from_dict_expects(field_kinds: tuple[str, ...], value: Any) -> Any:
    """What `from_dict` keeps of a validated value: the value itself, except an integer beyond 64 bits
    in an integer-only field (ids, which may also be strings, keep theirs). The validator rewrote it
    from an integral float (1e300), and `from_dict` turns it back into that float: states stay
    serializable, as orjson writes 64-bit integers only."""
    if field_kinds == ("integer",) and type(value) is int and not INT64_MIN <= value <= UINT64_MAX:
        return float(value)
    return value


def check_from_dict(kind: str, doc: dict[str, Any]) -> None:
    ts = validate(kind, doc)
    if isinstance(ts, Rejection):
        return
    event = from_dict(kind, doc)
    assert event.ts == (ts if ts >= 0 else None)
    for field in fields_of(kind):
        if field.name != "ts":
            want = from_dict_expects(field.kinds, doc.get(field.name))
            assert same(getattr(event, field.name), want), field.name


@pytest.mark.parametrize("kind", EVENT_TYPES)
@settings(SETTINGS, max_examples=20)
@given(data=st.data())
def test_from_dict_takes_every_validated_dict(kind: str, data: st.DataObject) -> None:
    target = data.draw(st.one_of(st.none(), st.sampled_from([f.name for f in fields_of(kind)])))
    check_from_dict(kind, data.draw(documents(kind, target)))


@pytest.mark.parametrize("stock", [1e300, -1e30, 2.0**64, float(INT64_MIN), 7.0])
def test_from_dict_keeps_an_integral_float_beyond_64_bits_as_a_float(stock: float) -> None:
    """Found by the property above in CI: an integral float beyond 64 bits in an integer field."""
    doc: dict[str, Any] = {"product_id": "p", "stock": stock, "low_stock_threshold": 0}
    check_from_dict("inventory", doc)
    event = from_dict("inventory", doc)
    assert type(event.stock) is (float if not INT64_MIN <= stock <= UINT64_MAX else int)


def test_from_dict_takes_what_msgspec_would_refuse() -> None:
    doc: dict[str, Any] = {**REQUEST, "user_id": 2**70, "event_id": -(2**80), "status_code": 200.0}
    doc["ts"] = "2024-01-01T00:00:00Z"
    assert validate("request", doc) == 1_704_067_200_000
    event = from_dict("request", doc)
    assert isinstance(event, RequestEvent)
    assert (event.user_id, event.event_id, event.status_code, event.ts) == (
        2**70,
        -(2**80),
        200,
        1_704_067_200_000,
    )
    assert type(event.status_code) is int
    with pytest.raises(ValueError, match="not a validated"):
        from_dict("request", {**REQUEST, "ts": "yesterday"})
