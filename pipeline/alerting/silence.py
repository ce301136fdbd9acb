"""Silences: alerts whose labels match are not notified while the silence is in force."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.alerting.route import all_match, matchers
from pipeline.records import SilenceRecord


@dataclass(frozen=True)
class Silence:
    """A silence: alerts whose labels match are not notified between starts_at and ends_at."""

    id: str
    matchers: Mapping[str, str]
    starts_at_ms: int
    ends_at_ms: int
    created_by: str
    comment: str

    def active(self, now_ms: int) -> bool:
        """Whether the silence is in force at an instant."""
        return self.starts_at_ms <= now_ms < self.ends_at_ms

    def silences(self, labels: Mapping[str, str], now_ms: int) -> bool:
        """Whether it mutes an alert with these labels now."""
        return self.active(now_ms) and all_match(matchers(self.matchers), labels)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the silences topic and the API): `pipeline.records.SilenceRecord`."""
        return SilenceRecord(
            id=self.id,
            matchers=dict(self.matchers),
            starts_at_ms=self.starts_at_ms,
            ends_at_ms=self.ends_at_ms,
            created_by=self.created_by,
            comment=self.comment,
        ).to_wire()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "silences topic") -> Silence:
        """Read the JSON form (any format this version reads)."""
        record = SilenceRecord.from_wire(data, where)
        return cls(
            id=record.id,
            matchers=dict(record.matchers),
            starts_at_ms=record.starts_at_ms,
            ends_at_ms=record.ends_at_ms,
            created_by=record.created_by,
            comment=record.comment,
        )


def silenced(silences: Iterable[Silence], labels: Mapping[str, str], now_ms: int) -> bool:
    """Whether any silence mutes an alert now."""
    return any(s.silences(labels, now_ms) for s in silences)
