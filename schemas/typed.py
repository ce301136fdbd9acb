"""Typed input events: one msgspec Struct per event type, and a decoder exactly as strict as the validator.

`fast_decoder(kind)` turns one Kafka message value (a JSON object, or a JSON array of them) into typed
events with one msgspec call, two to three times cheaper than orjson plus `schemas.events.validator`.
It only ever accepts documents that the old path (`pipeline.ingest.decode.decode`, then the validator per
element) accepts too, with the same event times and the same field values, Python types included; for
anything else it returns None and the caller takes the old path, which gives the precise reason (dead
letter) or accepts a valid but unusual document, and then builds the typed event with `from_dict`.
tests/unit/test_typed.py proves that property.

The Structs are written out (so that mypy knows their fields); a test checks them against the field
tables of `schemas.events`, which stay the single source of truth: `field_type` renders a table field
as the msgspec type it must have, and every Struct field must be exactly that. They hold no reference
cycles, so the garbage collector does not track them (gc=False).

Where msgspec and the old path differ, and how the fast path stays a subset of the old one:

- Integers: orjson keeps an integer literal as int only within [-2**63, 2**64 - 1] and reads any
  other as a float (which the validator accepts, and for an integer field rewrites to int, rounded);
  msgspec keeps every integer exact. So every int is bounded to int64 here (the widest bound msgspec
  supports), and larger literals take the old path.
- Integral floats (200.0) in integer fields: msgspec refuses them (the validator rewrites them to 200).
- Unknown fields: msgspec skips them without the checks orjson makes (it accepts 1e400, which orjson
  refuses as infinite, and nesting deeper than orjson's 1024 levels when the recursion limit is
  raised). The Structs therefore forbid unknown fields: a document that has some takes the old path,
  which ignores them, so the pipeline still ignores them.
- Patterns (method, currency, gauge name) are checked after the decode, not by msgspec, which runs
  the regular expression on every value (0.45 us per request event); like the validator, the decoder
  remembers the strings that matched (the same `re.search`).
- `ts` strings are checked by `schemas.events.rfc3339_ms` itself; numbers as `parse_ts` does
  (between 0 and MAX_TS_MS, floats truncated with int()). A date before 1970 becomes None, as stage 1
  has always used the record timestamp for the validator's negative times.

What msgspec does like orjson (the tests check it): duplicate keys keep the last value (msgspec also
checks the earlier ones, so it may only refuse more); lone surrogate escapes, invalid UTF-8, a BOM,
NaN and Infinity, trailing content and raw control characters in strings are refused; string lengths
count code points, as the validator's do.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Final, Literal, Union

import msgspec
from msgspec import Meta

from schemas.events import (
    COMMON_FIELDS,
    EVENT_FIELDS,
    MAX_LABEL_LEN,
    MAX_TS_MS,
    Field,
    Rejection,
    _pattern_miss,
    parse_ts,
    rfc3339_ms,
)

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

Int = Annotated[int, Meta(ge=INT64_MIN, le=INT64_MAX)]
Count = Annotated[int, Meta(ge=0, le=INT64_MAX)]
Number = Annotated[int, Meta(ge=INT64_MIN, le=INT64_MAX)] | float
NonNegative = Annotated[int, Meta(ge=0, le=INT64_MAX)] | Annotated[float, Meta(ge=0)]
Label = Annotated[str, Meta(min_length=1, max_length=MAX_LABEL_LEN)]
Id = str | Int
Timestamp = Annotated[int, Meta(ge=0, le=MAX_TS_MS)] | Annotated[float, Meta(ge=0, le=MAX_TS_MS)] | str


class Event(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    """Fields common to every event type.

    After `fast_decoder` or `from_dict`, `ts` is the event time in epoch ms (an int >= 0), or None:
    use the record timestamp. None when the event has no `ts` (or null), and also for an RFC 3339
    date before 1970, which the validator returns as a negative number and stage 1 has always
    treated like a missing `ts`.
    """

    ts: Timestamp | None = None
    event_id: Id | None = None


class OrderEvent(Event, kw_only=True, forbid_unknown_fields=True, gc=False):
    """An order event (topic events.orders)."""

    order_id: Id
    status: Literal["created", "confirmed", "cancelled", "refunded"]
    amount: NonNegative
    currency: str  # pattern ^[A-Z]{3}$, checked by fast_decoder
    user_id: Id
    user_role: Label
    payment_method: Label
    item_count: Count


class RequestEvent(Event, kw_only=True, forbid_unknown_fields=True, gc=False):
    """A request event (topic events.requests)."""

    service: Label
    method: Annotated[str, Meta(min_length=1, max_length=16)]  # pattern ^[A-Za-z]+$, checked by fast_decoder
    route: Label
    status_code: Annotated[int, Meta(ge=100, le=599)]
    duration_ms: NonNegative
    user_id: Id | None = None


class ErrorEvent(Event, kw_only=True, forbid_unknown_fields=True, gc=False):
    """An error event (topic events.errors)."""

    service: Label
    route: Label
    error_code: Label | Int
    message: str
    stack: str | None = None


class InventoryEvent(Event, kw_only=True, forbid_unknown_fields=True, gc=False):
    """An inventory event (topic events.inventory)."""

    product_id: Id
    stock: Int
    low_stock_threshold: Count
    units_sold: Count | None = None


class UserEvent(Event, kw_only=True, forbid_unknown_fields=True, gc=False):
    """A user event (topic events.users)."""

    user_id: Id
    action: Literal["registered", "active"]
    role: Label


class HeartbeatEvent(Event, kw_only=True, forbid_unknown_fields=True, gc=False):
    """A heartbeat event (topic events.heartbeats)."""

    service: Label
    status: Literal["healthy", "unhealthy"]
    response_time_ms: NonNegative | None = None


class GaugeEvent(Event, kw_only=True, forbid_unknown_fields=True, gc=False):
    """A gauge event (topic events.gauges)."""

    name: Annotated[str, Meta(min_length=1, max_length=200)]  # pattern: checked by fast_decoder
    value: Number
    labels: dict[str, str]


STRUCTS: dict[str, type[Event]] = {
    "order": OrderEvent,
    "request": RequestEvent,
    "error": ErrorEvent,
    "inventory": InventoryEvent,
    "user": UserEvent,
    "heartbeat": HeartbeatEvent,
    "gauge": GaugeEvent,
}
"""The Struct of each event type."""

_NAMES: dict[str, tuple[str, ...]] = {
    kind: tuple(f.name for f in (*fields, *COMMON_FIELDS) if f.name != "ts")
    for kind, fields in EVENT_FIELDS.items()
}


UINT64_MAX: Final = 2**64 - 1
_INTEGERS: dict[str, tuple[str, ...]] = {
    kind: tuple(f.name for f in fields if f.kinds == ("integer",)) for kind, fields in EVENT_FIELDS.items()
}
"""The integer-only fields of each event type (ids, which may also be strings, are left as they are)."""


def field_type(field: Field) -> Any:
    """Return the msgspec type a field of the tables must have in its Struct.

    Optional fields also take None; ints are bounded to int64; patterns are left to `fast_decoder`.
    """
    options: list[Any] = []
    for kind in field.kinds:
        if kind == "string":
            options.append(_string_type(field))
        elif kind == "integer":
            options.append(_int_type(field))
        elif kind == "number":
            options.append(_int_type(field))
            options.append(Annotated[float, Meta(ge=field.minimum, le=field.maximum)])
        elif kind == "object":
            options.append(dict[str, str])
        else:  # pragma: no cover - a new kind needs a rule here
            raise ValueError(f"no msgspec type for {kind!r}")
    if not field.required:
        options.append(None)
    return options[0] if len(options) == 1 else Union[tuple(options)]  # noqa: UP007


def _string_type(field: Field) -> Any:
    if field.enum is not None:
        return Literal[field.enum]
    return Annotated[str, Meta(min_length=field.min_length, max_length=field.max_length)]


def _int_type(field: Field) -> Any:
    low = INT64_MIN if field.minimum is None else int(field.minimum)
    high = INT64_MAX if field.maximum is None else int(field.maximum)
    return Annotated[int, Meta(ge=max(low, INT64_MIN), le=min(high, INT64_MAX))]


PATTERNS: dict[str, tuple[tuple[str, str], ...]] = {
    kind: tuple((f.name, f.pattern) for f in (*fields, *COMMON_FIELDS) if f.pattern is not None)
    for kind, fields in EVENT_FIELDS.items()
}
"""Fields with a pattern, checked after the msgspec decode (see `fast_decoder`)."""


def fast_decoder(kind: str, max_bytes: int | None = None) -> Callable[[bytes], list[Event] | None]:
    """Return a function that decodes one message value of type `kind` into typed events.

    The function returns the events (a JSON object is one event, a JSON array an envelope of them;
    `[]` gives an empty list) when every one of them is valid, with `ts` normalised to int epoch ms
    or None (see `Event`); it returns None for anything else, and then the caller must take the old path
    (`pipeline.ingest.decode.decode`, the validator and `from_dict` per element). With `max_bytes` it also
    returns None for a value over that size (or None), which the old path refuses as `too_large`;
    without it, the caller must check the size first.

    Patterns are checked here, after the decode, not by msgspec: msgspec runs the regular expression
    on every value (0.45 us per request event, more than the rest of the decode), while these fields
    take few distinct values, so like the validator this remembers the strings that matched (the same
    `re.search`, the same memo). The loop is generated once per decoder from the constant tables (no
    input ever becomes code), as the validator's fast path is.
    """
    cls = STRUCTS[kind]
    env: dict[str, Any] = {
        "_decode": msgspec.json.Decoder(Union[cls, list[cls]]).decode,  # type: ignore[valid-type]  # noqa: UP007
        "_PROBLEMS": (msgspec.DecodeError, TypeError, RecursionError),
        "_RFC3339": rfc3339_ms,
        "_LIMIT": max_bytes,
    }
    body: list[str] = []  # the checks of one `event`, which return None when it is not valid
    for n, (name, pattern) in enumerate(PATTERNS[kind]):
        matched: set[str] = set()
        env[f"_OK{n}"] = matched
        env[f"_MISS{n}"] = _pattern_miss(re.compile(pattern).search, matched)
        body += [f"v = event.{name}", f"if v not in _OK{n} and _MISS{n}(v):", "    return None"]
    body += [
        "ts = event.ts",
        "if ts is not None and type(ts) is not int:",
        "    if type(ts) is float:",
        "        event.ts = int(ts)",  # as parse_ts: truncated
        "    else:",
        "        ts = _RFC3339(ts)",
        "        if ts is None:",
        "            return None",
        "        event.ts = ts if ts >= 0 else None",
    ]
    lines = ["def decode_message(value):"]
    if max_bytes is not None:
        lines += ["    if value is None or len(value) > _LIMIT:", "        return None"]
    lines += [
        "    try:",
        "        event = _decode(value)",
        "    except _PROBLEMS:",
        "        return None",
        "    if type(event) is list:",
        "        events = event",
        "        for event in events:",
        *(" " * 12 + line for line in body),
        "        return events",
        *(" " * 4 + line for line in body),
        "    return [event]",
    ]
    exec(compile("\n".join(lines), f"<fast decoder: {kind}>", "exec"), env)  # noqa: S102
    decode_message: Callable[[bytes], list[Event] | None] = env["decode_message"]
    return decode_message


def from_dict(kind: str, event: dict[str, Any]) -> Event:
    """Build the typed event of a dict that the validator has already accepted (no check again).

    Fields are copied as they are (the validator has rewritten integral floats in integer fields to
    int; one beyond the 64-bit range becomes a float again); unknown fields are dropped, missing
    optional ones are None, and `ts` becomes the event time in epoch ms or None, exactly as
    `fast_decoder` gives it (see `Event`).
    """
    get = event.get
    fields = {name: get(name) for name in _NAMES[kind]}
    for name in _INTEGERS[kind]:
        value = fields[name]
        if value is not None and not INT64_MIN <= value <= UINT64_MAX:
            # An integral float beyond 64 bits (1e30), which the validator rewrote to int: kept as the
            # float it was, as states must stay serializable (orjson writes 64-bit integers only).
            fields[name] = float(value)
    ts = get("ts")
    if ts is not None:
        ms = parse_ts(ts)
        if isinstance(ms, Rejection):
            raise ValueError(f"not a validated {kind} event: {ms}")
        ts = ms if ms >= 0 else None
    return STRUCTS[kind](ts=ts, **fields)
