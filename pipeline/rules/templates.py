"""Annotation templates: `{{ name }}` or `{{ name | filter }}`, substituted, never evaluated.

Names: value, threshold, rule, severity, window, metric, state (pending, firing, resolved or
inactive) and `labels.<x>`. Filters: percent (0.051 ->
"5.1%"), ms (seconds -> "2100 ms"), round (2 decimals), duration (seconds -> "1m30s" style). A missing
value renders as "n/a". Label values are inserted as they are; notifiers escape for their medium.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Collection, Mapping

from pipeline.durations import format_duration

NAMES = ("value", "threshold", "rule", "severity", "window", "metric", "state")
_FIELD = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
MISSING = "n/a"
Value = float | str | None


def number(value: float) -> str:
    """Format a number with at most 2 decimals and no exponent (2100.0 -> "2100", 0.051 -> "0.05")."""
    if not math.isfinite(value):
        return str(value)
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _percent(value: float) -> str:
    return f"{number(value * 100)}%"


def _ms(value: float) -> str:
    return f"{number(value * 1000)} ms"


def _duration(value: float) -> str:
    return format_duration(value) if math.isfinite(value) and value >= 0 else number(value)


FILTERS: dict[str, Callable[[float], str]] = {
    "percent": _percent,
    "ms": _ms,
    "round": number,
    "duration": _duration,
}


def _split(field: str) -> tuple[str, list[str]]:
    name, *filters = (part.strip() for part in field.split("|"))
    return name, filters


def template_errors(text: str, labels: Collection[str] | None) -> list[tuple[str, str]]:
    """Return (message, hint) for every mistake in a template; `labels` None means any label may exist."""
    errors: list[tuple[str, str]] = []
    for match in _FIELD.finditer(text):
        name, filters = _split(match.group(1))
        errors.extend(_name_errors(name, labels))
        if len(filters) > 1:
            errors.append((f"template {match.group(0)!r} has more than one filter", "use one filter"))
        for flt in filters:
            if flt not in FILTERS:
                errors.append((f"unknown template filter {flt!r}", _did_you_mean(flt, FILTERS)))
    rest = _FIELD.sub("", text)
    if "{{" in rest or "}}" in rest:
        errors.append(
            ("unbalanced '{{' or '}}' in template", "write fields as {{ name }} or {{ name | filter }}")
        )
    return errors


def _name_errors(name: str, labels: Collection[str] | None) -> list[tuple[str, str]]:
    if name in NAMES:
        return []
    if name.startswith("labels."):
        label = name[len("labels.") :]
        if labels is None or label in labels:
            return []
        known = ", ".join(sorted(labels))
        return [(f"template label {label!r} is not a label of this rule's alerts", f"labels here: {known}")]
    choices = [*NAMES, *(f"labels.{x}" for x in labels or ())]
    return [(f"unknown template name {name!r}", _did_you_mean(name, choices))]


def _did_you_mean(word: str, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    known = "known: " + ", ".join(sorted(choices))
    return f"did you mean {close[0]!r}? ({known})" if close else known


def render(text: str, values: Mapping[str, Value], labels: Mapping[str, str]) -> str:
    """Substitute every field of a checked template."""

    def field(match: re.Match[str]) -> str:
        name, filters = _split(match.group(1))
        raw = labels.get(name[len("labels.") :], "") if name.startswith("labels.") else values.get(name)
        return _format(raw, filters[0] if filters else None)

    return _FIELD.sub(field, text)


def _format(raw: Value, flt: str | None) -> str:
    if raw is None:
        return MISSING
    if isinstance(raw, str):
        if flt is None:
            return raw
        try:
            number_value = float(raw)
        except ValueError:
            return raw
        raw = number_value
    return FILTERS[flt](raw) if flt is not None and flt in FILTERS else number(raw)
