"""What a parsed rules file is made of: rules, label matchers, heartbeat conditions, problems."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.durations import format_duration

SEVERITIES = ("critical", "high", "medium", "low")
OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
MATCH_OPS = ("!=", "=~", "!~")  # prefixes of a `where` value; no prefix means equality


@dataclass(frozen=True)
class Problem:
    """One mistake in a rules or rule-test file, with where it is and how to fix it."""

    file: str
    line: int | None
    message: str
    hint: str = ""

    def __str__(self) -> str:
        where = f"{self.file} line {self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}" + (f" — hint: {self.hint}" if self.hint else "")


@dataclass(frozen=True)
class Matcher:
    """One label filter of `where`: equality, inequality, or a full-match regex (negated or not)."""

    label: str
    op: str  # "=", "!=", "=~" or "!~"
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        """True when the labels pass this filter; a missing label counts as the empty string."""
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = _compiled(self.value).fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    def text(self) -> str:
        """The filter as written in a rules file."""
        return self.value if self.op == "=" else self.op + self.value


_PATTERNS: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    # Why a cache: matchers run for every sample on every tick, and the pattern was checked at load.
    compiled = _PATTERNS.get(pattern)
    if compiled is None:
        compiled = _PATTERNS[pattern] = re.compile(pattern)
    return compiled


@dataclass(frozen=True)
class Heartbeat:
    """The conditions of a heartbeat rule, OR-ed: an unhealthy last heartbeat, or none for a while."""

    service: str | None = None
    unhealthy: bool = False
    absent_for: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The conditions as written in a rules file."""
        out: dict[str, Any] = {}
        if self.service is not None:
            out["service"] = self.service
        if self.unhealthy:
            out["unhealthy"] = True
        if self.absent_for is not None:
            out["absent_for"] = format_duration(self.absent_for)
        return out


@dataclass(frozen=True)
class Rule:
    """One alerting rule: a threshold on a metric, or a heartbeat (state and deadman) rule."""

    name: str
    severity: str
    metric: str | None = None
    window: float | None = None
    where: tuple[Matcher, ...] = ()
    by: tuple[str, ...] | None = None
    quantile: float | None = None
    op: str | None = None
    threshold: float | None = None
    resolve_threshold: float | None = None
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0
    service: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    heartbeat: Heartbeat | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description in the rules-file format (loading it again gives the same rule)."""
        out: dict[str, Any] = {"name": self.name}
        if self.heartbeat is not None:
            out["heartbeat"] = self.heartbeat.to_dict()
        else:
            out.update(self._metric_dict())
        out["for"] = format_duration(self.for_s)
        out["keep_firing_for"] = format_duration(self.keep_firing_for_s)
        out["severity"] = self.severity
        if self.service is not None:
            out["service"] = self.service
        out["labels"] = dict(self.labels)
        out["annotations"] = dict(self.annotations)
        return out

    def _metric_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"metric": self.metric}
        if self.window is not None:
            out["window"] = format_duration(self.window)
        if self.where:
            out["where"] = {m.label: m.text() for m in self.where}
        if self.by is not None:
            out["by"] = list(self.by)
        if self.quantile is not None:
            out["quantile"] = self.quantile
        out["op"] = self.op
        out["threshold"] = self.threshold
        if self.resolve_threshold is not None:
            out["resolve_threshold"] = self.resolve_threshold
        return out


@dataclass(frozen=True)
class RuleSet:
    """The rules one evaluator runs, and where they came from (a path, "defaults", or both)."""

    rules: tuple[Rule, ...]
    source: str

    def get(self, name: str) -> Rule | None:
        """Return the rule of that name, if any."""
        return next((rule for rule in self.rules if rule.name == name), None)
