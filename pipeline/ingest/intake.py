"""Stage 1's per-message logic without Kafka: decode, validate, dead-letter and pre-aggregate records.

`agents.stages.ingest.Stage1` runs `buffer_records` on every batch it reads; `pipeline.tools.fuzz`
runs the very same function on records it makes up. A record is anything with `.offset`, `.value`,
`.key` and `.timestamp` (in the worker, the record aiokafka's fetcher decoded: see
`agents.kafka.reader._records_as_fetched`).

The hot path decodes and validates each message into typed events with one msgspec call
(`schemas.typed.fast_decoder`) and adds them to the partition's accumulator (`pipeline.ingest.preagg`).
Anything the fast decoder refuses takes the precise path (`refuse_message`: `pipeline.ingest.decode`,
`schemas.events.validator`), which names the reason and keeps the exact original bytes of each refused
element; the caller's `dead_letter` turns each into a dead-letter record.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass
from itertools import pairwise
from typing import Any, Final, Protocol

from pipeline.config.settings import Config
from pipeline.ingest.decode import decode
from pipeline.ingest.preagg import Accumulator
from schemas.events import Rejection
from schemas.typed import Event, from_dict

REASON_CODES: Final = (
    "invalid_json",
    "invalid_utf8",
    "not_object_or_array",
    "too_large",
    "not_object",
    "missing_field",
    "null_field",
    "wrong_type",
    "invalid_value",
)
"""Every reason code a dead letter can carry (`pulse.code`), as docs/events.md lists them."""

Refused = tuple[int | None, Rejection, bytes]
"""One refused element: its index in the envelope (None: the whole message), why, its original bytes."""


class Record(Protocol):
    """What stage 1 reads of a Kafka record."""

    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def timestamp(self) -> int: ...


@dataclass(eq=False)
class Buffer:
    """The per-partition buffer that `buffer_records` fills: a base of `agents.stages.ingest.InputPartition`
    and of the fuzz harness's buffer (`pipeline.tools.fuzz`). Plain attributes, read and written once
    per batch."""

    kind: str
    acc: Accumulator
    """The partition's accumulator (`pipeline.ingest.preagg`)."""
    fast: Callable[[bytes], list[Any] | None]
    """The fast typed decoder of the partition's event type (`schemas.typed.fast_decoder`)."""
    check: Callable[[Any], int | Rejection]
    """The validator of the partition's event type (`schemas.events.validator`)."""
    _: KW_ONLY
    first: int = -1
    last: int = -1
    messages: int = 0
    count: int = 0
    """Elements read (valid or not) since the last flush."""
    valid: int = 0
    late: int = 0
    future: int = 0


@dataclass(frozen=True)
class Limits:
    """The settings the per-message logic reads (ms, bytes)."""

    pane_ms: int
    lateness_ms: int
    future_ms: int
    max_bytes: int

    @classmethod
    def of(cls, cfg: Config) -> Limits:
        """The limits a worker with this config applies."""
        windows = cfg.windows
        return cls(
            int(windows.pane * 1000),
            int(windows.allowed_lateness * 1000),
            int(windows.max_future_skew * 1000),
            cfg.ingest.max_message_bytes,
        )


DeadLetterSink = Callable[[Any, Any, Rejection, int | None, bytes], None]
"""Called as `dead_letter(buffer, record, rejection, index, original bytes)` for each refused element."""


def buffer_records(
    state: Buffer, records: Sequence[Any], limits: Limits, dead_letter: DeadLetterSink
) -> None:
    """Decode, validate and pre-aggregate a batch of one partition's records (at least one); refused
    messages and elements go to `dead_letter`. Every element read is counted in `state.count`: each
    is either added to the accumulator (as valid, late or ahead of time) or dead-lettered."""
    if state.first < 0:
        state.first = records[0].offset
    state.last = records[-1].offset
    state.messages += len(records)
    fast = state.fast
    add = state.acc.add
    pane_ms = limits.pane_ms
    lateness = limits.lateness_ms
    future = -limits.future_ms
    max_bytes = limits.max_bytes
    count = valid = late = ahead = 0
    event: Any  # typed events, whose `ts` is an int or None here (see `schemas.typed.Event`)
    for record in records:
        value = record.value
        events: list[Any] | None = fast(value) if value is not None and len(value) <= max_bytes else None
        if events is None:
            events, refused = refuse_message(state.kind, state.check, value, max_bytes)
            count += len(refused)
            for index, rejection, original in refused:
                dead_letter(state, record, rejection, index, original)
        count += len(events)
        record_ms = record.timestamp
        for event in events:
            ts = event.ts
            if ts is None:
                ts = record_ms
            age = record_ms - ts
            if age > lateness:
                late += 1
                add(event, ts - ts % pane_ms, True, ts)
            elif age < future:
                ahead += 1
                add(event, ts - ts % pane_ms, True, ts)
            else:
                valid += 1
                add(event, ts - ts % pane_ms, False, ts)
    state.count += count
    state.valid += valid
    state.late += late
    state.future += ahead


def refuse_message(
    kind: str, check: Callable[[Any], int | Rejection], value: bytes | None, max_bytes: int
) -> tuple[list[Event], list[Refused]]:
    """The precise path: return a message's valid events and its refused elements.

    A message refused as a whole (not JSON, too large, ...) is one refused element with index None and
    its original bytes (b"" for a tombstone); so is a single event. Each refused element of an envelope
    comes with its index and its exact original bytes.
    """
    decoded = decode(value, max_bytes)
    if isinstance(decoded, Rejection):
        return [], [(None, decoded, value or b"")]
    events: list[Event] = []
    problems: list[tuple[int, Rejection]] = []
    for index, item in enumerate(decoded):
        ts = check(item)
        if type(ts) is not int:
            problems.append((index, ts))  # type: ignore[arg-type]
            continue
        event = from_dict(kind, item)
        event.ts = ts if ts >= 0 else None
        events.append(event)
    if not problems:
        return events, []
    assert value is not None
    if value.lstrip()[:1] == b"{":
        return events, [(None, problems[0][1], value)]
    spans = element_spans(value)
    return events, [
        (index, rejection, spans[index] if index < len(spans) else value) for index, rejection in problems
    ]


_TOKEN: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]', re.DOTALL)
"""A JSON string, or a bracket or comma outside strings."""
_JSON_SPACE: Final = b" \t\r\n"


def element_spans(value: bytes) -> list[bytes]:
    """Return the exact original bytes of each element of a valid JSON array (slow path, rare).

    It scans for the array's own commas and brackets, skipping strings, with no recursion: an element
    nested as deep as the decoder allows (1024 levels) is cut out like any other.
    """
    cuts: list[int] = []
    depth = 0
    for match in _TOKEN.finditer(value):
        at = match.start()
        char = value[at]
        if char == 0x22:  # '"': a string
            continue
        if char == 0x5B or char == 0x7B:  # '[' or '{'
            depth += 1
            if depth == 1:
                cuts.append(at)
        elif char == 0x5D or char == 0x7D:  # ']' or '}'
            if depth == 1:
                cuts.append(at)
                break
            depth -= 1
        elif depth == 1:  # a comma between two elements
            cuts.append(at)
    spans = (value[start + 1 : end].strip(_JSON_SPACE) for start, end in pairwise(cuts))
    return [span for span in spans if span]


def dead_letter_headers(
    topic: str, partition: int, offset: int, rejection: Rejection, index: int | None
) -> list[tuple[str, bytes]]:
    """The headers of one dead-letter record (docs/events.md, "Dead letters")."""
    headers = [
        ("pulse.reason", str(rejection).encode()),
        ("pulse.code", rejection.code.encode()),
        ("pulse.topic", topic.encode()),
        ("pulse.partition", str(partition).encode()),
        ("pulse.offset", str(offset).encode()),
    ]
    if index is not None:
        headers.append(("pulse.index", str(index).encode()))
    return headers
