"""Silences: alerts whose labels match are not notified while the silence is in force."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.alerting.route import all_match, matchers
from pipeline.records import SilenceRecord


class Silence(SilenceRecord, frozen=True):
    """A silence: alerts whose labels match are not notified between starts_at and ends_at.

    Its fields are its stored record's (`pipeline.records.SilenceRecord`): id, matchers, starts_at_ms,
    ends_at_ms, created_by, comment.
    """

    def active(self, now_ms: int) -> bool:
        """Whether the silence is in force at an instant."""
        return self.starts_at_ms <= now_ms < self.ends_at_ms

    def silences(self, labels: Mapping[str, str], now_ms: int) -> bool:
        """Whether it mutes an alert with these labels now."""
        return self.active(now_ms) and all_match(matchers(self.matchers), labels)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the silences topic and the API)."""
        return self.to_wire()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "silences topic") -> Silence:
        """Read the JSON form (any format this version reads)."""
        return cls.from_wire(data, where)


def silenced(silences: Iterable[Silence], labels: Mapping[str, str], now_ms: int) -> bool:
    """Whether any silence mutes an alert now."""
    return any(s.silences(labels, now_ms) for s in silences)
