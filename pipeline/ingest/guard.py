"""Cardinality guard: each label dimension admits a bounded number of values; the rest fold.

Values past a dimension's limit become "__other__", and every event folded that way is counted. The
admitted values of a stage-1 partition only grow and are written to the flushlog table before the
flush record that depends on them, so a replay after a crash folds exactly as the original flush
did. Each of the P input partitions admits up to the limit, so with more distinct values than the
limit the per-value figures become partial (the totals, `__other__` included, stay exact); below the
limit every figure is exact.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any, Final

OTHER: Final = "__other__"


class LabelGuard:
    """Admitted values per dimension for one stage-1 partition number."""

    def __init__(self, limits: Mapping[str, int], admitted: Mapping[str, Any] | None = None) -> None:
        self.limits = dict(limits)
        self.admitted: dict[str, set[str]] = {dim: set(values) for dim, values in (admitted or {}).items()}
        self.folds: Counter[str] = Counter()
        self.changed = False

    def admit(self, dimension: str, value: str, events: int = 1) -> str:
        """Return `value` if its dimension admits it (admitting it if there is room), else OTHER."""
        seen = self.admitted.get(dimension)
        if seen is None:
            seen = self.admitted[dimension] = set()
        if value in seen:
            return value
        if len(seen) < self.limits.get(dimension, 1_000_000):
            seen.add(value)
            self.changed = True
            return value
        self.folds[dimension] += events
        return OTHER

    def snapshot(self) -> dict[str, list[str]]:
        """The admitted values, for the flushlog table."""
        return {dim: sorted(values) for dim, values in self.admitted.items()}

    def take_folds(self) -> Counter[str]:
        """Return and reset the fold counts since the last call."""
        folds, self.folds = self.folds, Counter()
        return folds
