"""Event contract: one field table per event type, fast validators, and the JSON Schemas built from it.

The field tables below are the single source of truth. `validate` checks a decoded event in about a
microsecond per event (plain type tests, no model objects); `json_schema` renders the same table as
JSON Schema (draft 2020-12) for services in other languages, written to `schemas/json/`. A test proves
that both accept and reject the same documents.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, NamedTuple

NO_TS: Final = -1
"""Returned by `validate` for a valid event without `ts`: the record timestamp is used instead."""

MAX_TS_MS: Final = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
MAX_LABEL_LEN: Final = 512

# The grammar of rfc3339-validator, which jsonschema's "date-time" format check uses, without its `$`
# (which also matches before a final newline) and in upper case only: `rfc3339_ms` handles the rest.
_RFC3339 = re.compile(
    r"\d{4}-(?:0[1-9]|1[0-2])-\d\dT(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d+)?"
    r"(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)\Z",
    re.ASCII,
)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class Rejection(NamedTuple):
    """Why an event was refused: a stable code for metrics and a sentence for people."""

    code: str
    detail: str

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


@dataclass(frozen=True)
class Field:
    """One field of an event type."""

    name: str
    kinds: tuple[str, ...]
    required: bool = True
    enum: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    description: str = ""


_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "object": (dict,),
}
_ID = ("string", "integer")


def _label(name: str, description: str, required: bool = True) -> Field:
    return Field(name, ("string",), required, min_length=1, max_length=MAX_LABEL_LEN, description=description)


COMMON_FIELDS: tuple[Field, ...] = (
    Field(
        "ts",
        ("string", "number"),
        required=False,
        minimum=0,
        maximum=MAX_TS_MS,
        description="event time: RFC 3339 string or epoch milliseconds; default: record time",
    ),
    Field("event_id", _ID, required=False, description="used to drop duplicate deliveries"),
)

EVENT_FIELDS: dict[str, tuple[Field, ...]] = {
    "order": (
        Field("order_id", _ID, description="order identifier"),
        Field(
            "status",
            ("string",),
            enum=("created", "confirmed", "cancelled", "refunded"),
            description="order status this event reports",
        ),
        Field("amount", ("number",), minimum=0, description="final amount of the order"),
        Field("currency", ("string",), pattern="^[A-Z]{3}$", description="ISO 4217 code, e.g. KRW"),
        Field("user_id", _ID, description="customer"),
        _label("user_role", "role of the customer (customer, business, affiliate, ...)"),
        _label("payment_method", "card, bank_transfer, ..."),
        Field("item_count", ("integer",), minimum=0, description="number of items"),
    ),
    "request": (
        _label("service", "service that served the request"),
        Field(
            "method",
            ("string",),
            min_length=1,
            max_length=16,
            pattern="^[A-Za-z]+$",
            description="HTTP method",
        ),
        _label("route", "route template, e.g. /api/orders/:id"),
        Field("status_code", ("integer",), minimum=100, maximum=599, description="HTTP status"),
        Field("duration_ms", ("number",), minimum=0, description="time to respond, ms"),
        Field("user_id", _ID, required=False, description="caller, when known"),
    ),
    "error": (
        _label("service", "service that raised the error"),
        _label("route", "route template where it happened"),
        Field(
            "error_code",
            _ID,
            min_length=1,
            max_length=MAX_LABEL_LEN,
            description="application error code",
        ),
        Field("message", ("string",), description="error message"),
        Field("stack", ("string",), required=False, description="stack trace"),
    ),
    "inventory": (
        Field("product_id", _ID, description="product"),
        Field("stock", ("integer",), description="units in stock now"),
        Field("low_stock_threshold", ("integer",), minimum=0, description="low-stock level"),
        Field("units_sold", ("integer",), required=False, minimum=0, description="units sold since"),
    ),
    "user": (
        Field("user_id", _ID, description="user"),
        Field(
            "action",
            ("string",),
            enum=("registered", "active"),
            description="registered once, active on each visit",
        ),
        _label("role", "role of the user"),
    ),
    "heartbeat": (
        _label("service", "service or dependency reporting"),
        Field("status", ("string",), enum=("healthy", "unhealthy"), description="reported health"),
        Field(
            "response_time_ms",
            ("number",),
            required=False,
            minimum=0,
            description="health-check latency, ms",
        ),
    ),
    "gauge": (
        Field(
            "name",
            ("string",),
            min_length=1,
            max_length=200,
            pattern="^[a-zA-Z_:][a-zA-Z0-9_:]*$",
            description="figure name, e.g. db_connection_pool",
        ),
        Field("value", ("number",), description="current value"),
        Field("labels", ("object",), description="string labels (may be empty)"),
    ),
}

EVENT_TYPES: tuple[str, ...] = tuple(EVENT_FIELDS)

TOPIC_OF_TYPE: dict[str, str] = {
    "order": "events.orders",
    "request": "events.requests",
    "error": "events.errors",
    "inventory": "events.inventory",
    "user": "events.users",
    "heartbeat": "events.heartbeats",
    "gauge": "events.gauges",
}


def rfc3339_ms(text: str) -> int | None:
    """Return the epoch milliseconds (rounded down) of an RFC 3339 date-time, or None if it is not one.

    Accepts exactly what jsonschema's "date-time" check accepts: the grammar of rfc3339-validator
    applied to the upper-cased string (RFC 3339 allows a lower-case t and z), whose `$` also matches
    before one final newline, with a day that exists in its month and no year 0. The arithmetic is
    exact: no float rounding of the milliseconds.
    """
    if _RFC3339.match(text) is None:
        text = text.upper()
        if text[-1:] == "\n":
            text = text[:-1]
        if _RFC3339.match(text) is None:
            return None
    try:
        parsed = datetime.fromisoformat(text)  # rejects Feb 30 and year 0; always has an offset here
    except ValueError:
        return None
    delta = parsed - _EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def parse_ts(value: Any) -> int | Rejection:
    """Return epoch milliseconds for a `ts` value (RFC 3339 string or epoch ms number)."""
    kind = type(value)
    if kind is int or kind is float:
        if 0 <= value <= MAX_TS_MS:
            return int(value)
        return Rejection("invalid_value", f"field 'ts' must be between 0 and {MAX_TS_MS}")
    if kind is str:
        ms = rfc3339_ms(value)
        if ms is not None:
            return ms
        return Rejection("invalid_value", f"field 'ts' is not an RFC 3339 date-time: {value!r}")
    if value is None:
        return Rejection("null_field", "field 'ts' is null")
    return Rejection("wrong_type", f"field 'ts' must be a string or number, got {_kind(value)}")


_JSON_KINDS: tuple[tuple[type, str], ...] = (
    (type(None), "null"),
    (bool, "boolean"),  # before int: a bool is an int to isinstance
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
)


def _kind(value: Any) -> str:
    """The JSON Schema type name of a decoded value, for error messages."""
    return next((name for cls, name in _JSON_KINDS if isinstance(value, cls)), type(value).__name__)


def _as_integer(field: Field, value: Any) -> int | None:
    """JSON Schema counts 3.0 as an integer: return it as int when the field takes integers."""
    kinds = field.kinds
    if type(value) is float and value.is_integer() and "integer" in kinds and "number" not in kinds:
        return int(value)
    return None


def _check_field(field: Field, value: Any) -> Rejection | None:
    """Slow, precise check of one present field; None when it is valid."""
    name = field.name
    if value is None:
        if field.required:
            return Rejection("null_field", f"field '{name}' is null")
        return None
    kind = _kind(value)
    allowed = set(field.kinds)
    if "number" in allowed:
        allowed.add("integer")
    if kind == "number" and "integer" in allowed and value.is_integer():
        kind = "integer"
    if kind not in allowed:
        return Rejection("wrong_type", f"field '{name}' must be {' or '.join(field.kinds)}, got {kind}")
    if kind == "object":
        for key, item in value.items():
            if not isinstance(item, str):
                return Rejection("wrong_type", f"field '{name}.{key}' must be string, got {_kind(item)}")
        return None
    if kind == "string":
        if field.enum is not None and value not in field.enum:
            return Rejection("invalid_value", f"field '{name}' must be one of {', '.join(field.enum)}")
        if field.min_length is not None and len(value) < field.min_length:
            return Rejection("invalid_value", f"field '{name}' must not be empty")
        if field.max_length is not None and len(value) > field.max_length:
            return Rejection("invalid_value", f"field '{name}' is longer than {field.max_length} characters")
        if field.pattern is not None and re.search(field.pattern, value) is None:
            return Rejection("invalid_value", f"field '{name}' must match {field.pattern}")
        return None
    if field.minimum is not None and value < field.minimum:
        return Rejection("invalid_value", f"field '{name}' must be >= {field.minimum:g}")
    if field.maximum is not None and value > field.maximum:
        return Rejection("invalid_value", f"field '{name}' must be <= {field.maximum:g}")
    return None


_TYPE_SETS: dict[tuple[str, ...], str] = {
    ("string",): "type(v) is not str",
    ("integer",): "type(v) is not int",
    ("number",): "type(v) not in _NUM",
    ("object",): "type(v) is not dict",
    ("string", "integer"): "type(v) not in _STR_INT",
    ("string", "number"): "type(v) not in _STR_NUM",
}


_PATTERN_MEMO: Final = 4096
"""Strings remembered per pattern field as matching (HTTP methods, currencies, gauge names)."""


def _pattern_miss(search: Callable[[str], object], matched: set[str]) -> Callable[[str], bool]:
    """Return a test that is True when a string does not match; strings that match are remembered.

    Pattern fields take few distinct values, so the fast path mostly finds them in `matched` and skips
    the regular expression. Only strings that matched are kept, at most _PATTERN_MEMO of them.
    """

    def miss(value: str) -> bool:
        if search(value) is None:
            return True
        if len(matched) < _PATTERN_MEMO:
            matched.add(value)
        return False

    return miss


def _field_source(field: Field, n: int, env: dict[str, Any]) -> list[str]:
    """Source lines that `return None` unless the field is certainly valid."""
    fails = [_TYPE_SETS[field.kinds]]
    is_str = "string" in field.kinds
    only_str = field.kinds == ("string",)
    guard = "" if only_str else "type(v) is str and "
    if field.enum is not None:
        env[f"_E{n}"] = frozenset(field.enum)
        fails.append(f"v not in _E{n}")
    if is_str and (field.min_length is not None or field.max_length is not None):
        lo = field.min_length or 0
        hi = field.max_length if field.max_length is not None else 1 << 62
        fails.append(f"{guard}not ({lo} <= len(v) <= {hi})")
    if field.pattern is not None:
        matched: set[str] = set()
        env[f"_OK{n}"] = matched
        env[f"_MISS{n}"] = _pattern_miss(re.compile(field.pattern).search, matched)
        fails.append(f"{guard}v not in _OK{n} and _MISS{n}(v)")
    if field.minimum is not None or field.maximum is not None:
        num_guard = "" if not is_str else "type(v) is not str and "
        env[f"_MIN{n}"], env[f"_MAX{n}"] = field.minimum, field.maximum
        if field.maximum is None:
            fails.append(f"{num_guard}v < _MIN{n}")
        elif field.minimum is None:
            fails.append(f"{num_guard}v > _MAX{n}")
        else:
            fails.append(f"{num_guard}not (_MIN{n} <= v <= _MAX{n})")
    if "object" in field.kinds:
        fails.append("not all(type(x) is str for x in v.values())")
    test = " or ".join(f"({f})" for f in fails)
    if field.required:
        return [f"    v = get({field.name!r})", f"    if {test}: return None"]
    return [
        f"    v = get({field.name!r})",
        "    if v is not None:",
        f"        if {test}: return None",
    ]


def _compile_fast(kind: str) -> Callable[[dict[str, Any]], int | None]:
    """Generate the fast path of one event type from its field table.

    It returns the event time (or NO_TS) for an event that is certainly valid, and None for anything
    else, which then takes the slow path for the precise reason. Generated once at import from the
    constant tables above; no input ever becomes code.
    """
    env: dict[str, Any] = {
        "_NUM": frozenset((int, float)),
        "_STR_INT": frozenset((str, int)),
        "_STR_NUM": frozenset((str, int, float)),
        "NO_TS": NO_TS,
        "MAX_TS_MS": MAX_TS_MS,
        "_RFC3339_MATCH": _RFC3339.match,
        "_FROMISO": datetime.fromisoformat,
        "_EPOCH": _EPOCH,
    }
    lines = [f"def fast_{kind}(event):", "    get = event.get"]
    for n, field in enumerate(EVENT_FIELDS[kind]):
        lines.extend(_field_source(field, n, env))
    lines += [
        "    v = get('event_id')",
        "    if v is not None and type(v) not in _STR_INT: return None",
        "    ts = get('ts')",
        "    if ts is None: return NO_TS",
        "    if type(ts) is int:",
        "        return ts if 0 <= ts <= MAX_TS_MS else None",
        # The common RFC 3339 form, inlined from rfc3339_ms; the slow path takes the rest.
        "    if type(ts) is str and _RFC3339_MATCH(ts) is not None:",
        "        try:",
        "            ts = _FROMISO(ts) - _EPOCH",
        "        except ValueError:",
        "            return None",
        "        return ts.days * 86400000 + ts.seconds * 1000 + ts.microseconds // 1000",
        "    return None",
    ]
    exec(compile("\n".join(lines), f"<fast validator: {kind}>", "exec"), env)  # noqa: S102
    fast: Callable[[dict[str, Any]], int | None] = env[f"fast_{kind}"]
    return fast


class _Plan(NamedTuple):
    """Precomputed checks of one event type."""

    fast: Callable[[dict[str, Any]], int | None]
    fields: tuple[Field, ...]


_PLANS: dict[str, _Plan] = {
    kind: _Plan(_compile_fast(kind), (*EVENT_FIELDS[kind], *COMMON_FIELDS)) for kind in EVENT_TYPES
}
_MISSING: Final = object()


def validate(kind: str, event: Any) -> int | Rejection:
    """Check one decoded event of type `kind`; return its event time in ms, NO_TS, or a Rejection.

    Integral floats in integer fields (200.0) are valid JSON Schema integers; they are rewritten to
    int in place so that labels come out the same.
    """
    if type(event) is not dict:
        return Rejection("not_object", f"an event must be a JSON object, got {_kind(event)}")
    plan = _PLANS[kind]
    ts = plan[0](event)  # plan.fast, without the attribute lookup
    if ts is None:
        return _validate_slow(plan, event)
    return ts


def validator(kind: str) -> Callable[[Any], int | Rejection]:
    """Return `validate` bound to one event type (saves a lookup per event on the hot path)."""
    plan = _PLANS[kind]
    fast = plan.fast

    def check(event: Any) -> int | Rejection:
        if type(event) is not dict:
            return Rejection("not_object", f"an event must be a JSON object, got {_kind(event)}")
        ts = fast(event)
        if ts is None:
            return _validate_slow(plan, event)
        return ts

    return check


def _validate_slow(plan: _Plan, event: dict[str, Any]) -> int | Rejection:
    for field in plan.fields:
        value = event.get(field.name, _MISSING)
        if value is _MISSING:
            if field.required:
                return Rejection("missing_field", f"field '{field.name}' is required")
            continue
        problem = _check_field(field, value)
        if problem is not None:
            return problem
        as_int = _as_integer(field, value)
        if as_int is not None:
            event[field.name] = as_int
    return _event_time(event)


def _event_time(event: dict[str, Any]) -> int | Rejection:
    ts = event.get("ts")
    if ts is None:
        return NO_TS
    return parse_ts(ts)


def json_schema(kind: str) -> dict[str, Any]:
    """Render the JSON Schema (draft 2020-12) of one event type from its field table."""
    fields = (*EVENT_FIELDS[kind], *COMMON_FIELDS)
    properties: dict[str, Any] = {}
    for field in fields:
        properties[field.name] = _field_schema(field)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://o4o-pulse.dev/schemas/{kind}.schema.json",
        "title": f"o4o-pulse {kind} event",
        "description": (
            f"One {kind} event, published to the topic '{TOPIC_OF_TYPE[kind]}' (after the prefix) "
            "alone or inside a JSON array (a batch envelope). Unknown fields are kept and ignored."
        ),
        "type": "object",
        "required": [f.name for f in fields if f.required],
        "properties": properties,
        "additionalProperties": True,
    }


def _field_schema(field: Field) -> dict[str, Any]:
    types: list[str] = list(field.kinds)
    if not field.required:
        types.append("null")
    schema: dict[str, Any] = {"type": types[0] if len(types) == 1 else types}
    if field.description:
        schema["description"] = field.description
    if field.name == "ts":
        schema["format"] = "date-time"
    if field.enum is not None:
        schema["enum"] = [*field.enum, *([None] if not field.required else [])]
    if field.minimum is not None:
        schema["minimum"] = field.minimum
    if field.maximum is not None:
        schema["maximum"] = field.maximum
    if field.min_length is not None:
        schema["minLength"] = field.min_length
    if field.max_length is not None:
        schema["maxLength"] = field.max_length
    if field.pattern is not None:
        schema["pattern"] = field.pattern
    if "object" in field.kinds:
        schema["additionalProperties"] = {"type": "string"}
    return schema


SCHEMA_DIR: Final = Path(__file__).with_name("json")


def schema_path(kind: str) -> Path:
    """Return where the JSON Schema file of an event type lives."""
    return SCHEMA_DIR / f"{kind}.schema.json"


def render_schema_file(kind: str) -> str:
    """Return the exact text of a JSON Schema file, as committed in schemas/json/."""
    return json.dumps(json_schema(kind), indent=2, ensure_ascii=False) + "\n"


def write_schema_files() -> list[Path]:
    """Regenerate every file in schemas/json/ from the field tables."""
    SCHEMA_DIR.mkdir(exist_ok=True)
    written = []
    for kind in EVENT_TYPES:
        path = schema_path(kind)
        path.write_text(render_schema_file(kind), encoding="utf-8")
        written.append(path)
    return written
