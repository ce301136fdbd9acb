"""Silences: alerts whose labels match are not notified while the silence is in force."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.alerting.route import all_match, matchers


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
        """JSON form (the silences topic and the API)."""
        return {
            "id": self.id,
            "matchers": dict(self.matchers),
            "startsAt": self.starts_at_ms,
            "endsAt": self.ends_at_ms,
            "createdBy": self.created_by,
            "comment": self.comment,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Silence:
        """Read the JSON form."""
        return cls(
            id=str(data["id"]),
            matchers=dict(data["matchers"]),
            starts_at_ms=int(data["startsAt"]),
            ends_at_ms=int(data["endsAt"]),
            created_by=str(data.get("createdBy", "")),
            comment=str(data.get("comment", "")),
        )


def silenced(silences: Iterable[Silence], labels: Mapping[str, str], now_ms: int) -> bool:
    """Whether any silence mutes an alert now."""
    return any(s.silences(labels, now_ms) for s in silences)
