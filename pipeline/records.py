"""Every record o4o-pulse writes to Kafka or to a table, with named fields and a format version.

Records are compact on the wire (one-letter keys: cells are written by the million), named in code.
Where the same letter appears in two records it is only a wire key; the field names say what it is.

| record             | where it is stored                                  | key                       |
|--------------------|-----------------------------------------------------|---------------------------|
| FlushRecord        | `flushlog` table: stage 1's last flushed range      | `<topic>:<partition>`     |
| GuardRecord        | `flushlog` table: the label guard's admitted values | `guard:<partition>`       |
| PartialsMessage    | `<app>-partials` topic: stage 1 -> stage 2           | none (partition = owner)  |
| Cell               | `cells` table: one part of one series               | `cells.cell_key(...)`     |
| AppliedRecord      | `cells` table: stage 2's durable partials position  | `applied:<partition>`     |
| AlertStateRecord   | `alertstate` table: rule evaluation state           | alert fingerprint         |
| AlertRecord        | `alertlog` table, whose changelog is `alerts`       | alert fingerprint         |
| LedgerRecord       | `nflog` table: what a channel of a group delivered  | `<group>|<channel>`       |
| SilenceRecord      | `silences` topic                                    | silence id                |
| NotificationFailed | `notifications.deadletter` topic                    | ledger key                |

Versions. Every record carries its format version under the key `V`; records written before formats
carried versions have none and are format 1, which this version still reads (the layouts are the
same). A record of a format this worker cannot read stops the worker with a `StoredFormatError`
that names the record, where it was found, and the migration: run the workers of the version that
wrote it, or replay the topics from the events after `pulse` is upgraded (see
docs/how-it-works.md, "Stored formats"). Bump `CURRENT` when a layout changes, keep reading the
previous one in `upgrade`, and add the previous layout to `tests/unit/test_records.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

import msgspec

from pipeline.errors import PulseError

VERSION_KEY = "V"
LEGACY = 1
"""The format of records written before formats carried a version."""


class StoredFormatError(PulseError):
    """A stored record has a format this worker cannot read; the message names the migration."""


class MalformedRecord(StoredFormatError):
    """A stored record of a readable format whose content does not fit it."""


class Record(msgspec.Struct, frozen=True, omit_defaults=True):
    """Base of the stored records. The format version lives on the wire only (`V`): `to_wire` stamps
    it, `from_wire` checks it; in memory a record is its fields."""

    NAME: ClassVar[str] = "record"
    CURRENT: ClassVar[int] = 2
    READS: ClassVar[tuple[int, ...]] = (LEGACY, 2)

    def to_wire(self) -> dict[str, Any]:
        """The JSON-able value to store, stamped with the current format."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        out[VERSION_KEY] = self.CURRENT
        return out

    @classmethod
    def from_wire(cls, data: Any, where: str = "a stored record") -> Self:
        """Read a stored value (any format this worker reads); `where` names it in errors."""
        data = cls.upgrade(data)
        check_version(cls, data.get(VERSION_KEY, LEGACY) if isinstance(data, Mapping) else LEGACY, where)
        try:
            return msgspec.convert(data, cls)
        except msgspec.ValidationError as exc:
            raise MalformedRecord(f"{where}: not a valid {cls.NAME} record ({exc}); {MIGRATION}") from exc

    @classmethod
    def upgrade(cls, data: Any) -> Any:
        """Turn a value of an older layout into the current one (the layouts of format 1 and 2 match)."""
        return data


MIGRATION = (
    "run the pulse version that wrote it, or reset the pipeline's internal topics and tables and "
    "replay the events (docs/how-it-works.md, 'Stored formats')"
)


def check_version(kind: type[Record], version: Any, where: str) -> None:
    """Stop with a clear message unless this worker reads the format version."""
    if version not in kind.READS:
        raise StoredFormatError(
            f"{where}: a {kind.NAME} record of format {version!r}; this pulse reads formats "
            f"{', '.join(map(str, kind.READS))} of it: {MIGRATION}"
        )


# -- stage 1 ---------------------------------------------------------------------------------------


class FlushRecord(Record, frozen=True, rename={"first": "a", "last": "b"}):
    """The offset range [first, last] of an input partition's last flush."""

    NAME: ClassVar[str] = "flush"
    first: int
    last: int


class GuardRecord(Record, frozen=True, rename={"admitted": "g"}):
    """The label guard's admitted values of one input partition number, by dimension."""

    NAME: ClassVar[str] = "label guard"
    admitted: dict[str, list[str]]

    @classmethod
    def upgrade(cls, data: Any) -> Any:
        """Format 1 stored the admitted values themselves, without a wrapper."""
        if isinstance(data, Mapping) and VERSION_KEY not in data:
            return {"g": dict(data)}
        return data


class SeriesPart(msgspec.Struct, frozen=True, omit_defaults=True, rename={
    "total": "t", "panes": "p", "periods": "c", "latest": "l", "entities": "e"
}):  # fmt: skip
    """What one flush adds to one series: only the sections the series uses."""

    total: dict[str, Any] | None = None
    """All-time delta."""
    panes: dict[int, dict[str, Any]] | None = None
    """Delta per fine pane (pane start, epoch ms)."""
    periods: dict[str, Any] | None = None
    """Delta per calendar period ("d20261126", "m202611")."""
    latest: dict[str, Any] | None = None
    """Latest state (health, gauges)."""
    entities: dict[str, Any] | None = None
    """Latest state per entity (a product)."""


class PartialBlock(msgspec.Struct, frozen=True, rename={
    "source": "src", "first": "a", "last": "b", "series": "s"
}):  # fmt: skip
    """The parts one flush of one input partition sends to one stage-2 owner."""

    source: str
    """The input partition, as `flush_key` names it."""
    first: int
    last: int
    series: dict[str, SeriesPart]


class PartialsMessage(Record, frozen=True):
    """One message of the partials topic (decoded from bytes in one step, so the version is a field)."""

    NAME: ClassVar[str] = "partials"
    blocks: list[PartialBlock] = []
    version: int = msgspec.field(default=LEGACY, name=VERSION_KEY)


_PARTIALS = msgspec.json.Decoder(PartialsMessage)
_ENCODER = msgspec.json.Encoder()


def encode_partials(blocks: list[dict[str, Any]]) -> bytes:
    """Encode blocks as stage 1 builds them: {"source", "first", "last", "series": {key: part}},
    where a part is a dict with the wire keys of SeriesPart (`pipeline.ingest.preagg` builds them)."""
    return _ENCODER.encode(
        {
            VERSION_KEY: PartialsMessage.CURRENT,
            "blocks": [
                {"src": b["source"], "a": b["first"], "b": b["last"], "s": b["series"]} for b in blocks
            ],
        }
    )


def decode_partials(value: bytes, where: str) -> PartialsMessage:
    """Decode one partials message (typed: pane starts come back as ints)."""
    try:
        message = _PARTIALS.decode(value)
    except msgspec.DecodeError as exc:
        raise MalformedRecord(f"{where}: not a valid partials message ({exc}); {MIGRATION}") from exc
    check_version(PartialsMessage, message.version, where)
    return message


# -- stage 2 ---------------------------------------------------------------------------------------

CELL_APPLIED = "a"
CELL_VALUE = "v"


class Cell(Record, frozen=True, rename={"applied": CELL_APPLIED, "value": CELL_VALUE}):
    """One cell: its value, and the last offset of each stage-1 source it has applied.

    Stage 2 keeps cells as plain dicts with these keys in its table (they are updated in place by
    the million); `new_cell` makes one, `check_cells` checks the formats of the recovered ones.
    """

    NAME: ClassVar[str] = "cell"
    applied: dict[str, int] = {}
    value: dict[str, Any] = {}


def new_cell(value: dict[str, Any] | None = None) -> dict[str, Any]:
    """A cell as stage 2 keeps it in its table."""
    return {CELL_APPLIED: {}, CELL_VALUE: {} if value is None else value, VERSION_KEY: Cell.CURRENT}


def check_cells(cells: Mapping[str, Any], where: str) -> int:
    """Check the format of every recovered cell and position record; return how many were checked."""
    checked = 0
    for key, value in cells.items():
        if isinstance(value, Mapping):
            check_version(Cell, value.get(VERSION_KEY, LEGACY), f"{where}, key {key!r}")
            checked += 1
    return checked


class AppliedRecord(Record, frozen=True, rename={"offset": "o"}):
    """The last partials offset of a partition whose cells are durable."""

    NAME: ClassVar[str] = "partials position"
    offset: int

    @classmethod
    def upgrade(cls, data: Any) -> Any:
        """Format 1 stored the offset itself."""
        return {"o": data} if isinstance(data, int) else data


# -- alerts ----------------------------------------------------------------------------------------


class AlertStateRecord(Record, frozen=True, rename={
    "fingerprint": "f", "rule": "r", "labels": "l", "state": "s", "active_since_ms": "a",
    "starts_at_ms": "b", "ends_at_ms": "e", "last_true_ms": "t", "value": "v", "fired": "h",
    "cleared_since_ms": "c",
}):  # fmt: skip
    """The evaluation state of one alert instance (`pipeline.rules.engine.AlertState`)."""

    NAME: ClassVar[str] = "alert state"
    fingerprint: str
    rule: str
    state: str
    labels: dict[str, str]
    active_since_ms: int | None = None
    starts_at_ms: int | None = None
    ends_at_ms: int | None = None
    last_true_ms: int | None = None
    value: float | None = None
    fired: list[int] = []
    cleared_since_ms: int | None = None


class AlertRecord(Record, frozen=True):
    """One alert transition, as published on the `alerts` topic (the public contract: the guide's
    Alert fields plus identity and lifecycle; docs/notifications.md documents every field)."""

    NAME: ClassVar[str] = "alert"
    id: str
    fingerprint: str
    rule: str
    state: str
    previous: str
    severity: str
    title: str
    message: str
    metric: str
    currentValue: float | None  # the guide's field name
    threshold: float | None
    timestamp: str
    service: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str | None
    ends_at: str | None
    context: dict[str, Any] | None = None
    """The top contributors behind a firing transition's number (`pipeline.alerting.context`); optional,
    so records written before it existed read as they did, and older workers ignore it."""


# -- notifications ---------------------------------------------------------------------------------


class LedgerRecord(Record, frozen=True, rename={
    "status": "s", "incidents": "i", "sent_ms": "t", "meta": "m"
}):  # fmt: skip
    """What one channel of one notification group last delivered (or gave up on)."""

    NAME: ClassVar[str] = "delivery ledger"
    status: str
    incidents: list[str]
    sent_ms: int
    meta: dict[str, Any] = {}


class SilenceRecord(Record, frozen=True, omit_defaults=False, rename={
    "starts_at_ms": "startsAt", "ends_at_ms": "endsAt", "created_by": "createdBy"
}):  # fmt: skip
    """A silence, on the silences topic and in the API."""

    NAME: ClassVar[str] = "silence"
    id: str
    matchers: dict[str, str]
    starts_at_ms: int
    ends_at_ms: int
    created_by: str = ""
    comment: str = ""


class NotificationFailed(Record, frozen=True):
    """A notification that could not be delivered, on `notifications.deadletter`."""

    NAME: ClassVar[str] = "failed notification"
    kind: str
    channel: str
    receiver: str
    group_key: str
    status: str
    alerts: list[Any]
    rules: list[str]
    reason: str
    attempts: int
    timestamp: str


def encode(record: Record) -> bytes:
    """JSON bytes of a record for a raw topic, stamped with its current format."""
    return _ENCODER.encode(record.to_wire())


def series_parts(parts: Mapping[str, Mapping[str, Any]]) -> dict[str, SeriesPart]:
    """Typed parts from the dicts `pipeline.ingest.preagg` builds, without a trip through JSON."""
    return msgspec.convert(parts, dict[str, SeriesPart])
