"""Parse and format durations written like Prometheus does ("90s", "5m", "1h30m", "250ms")."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
HINT = "write a number of seconds or a duration such as '250ms', '10s', '5m', '1h30m', '1d'"


def parse_duration(value: object) -> float:
    """Return seconds for a duration string or a number of seconds; raise ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: {HINT}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"invalid duration {value!r}: must not be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"invalid duration {value!r}: {HINT}")
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return parse_duration(number)
    pos = 0
    total = 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"invalid duration {value!r}: {HINT}")
    return total


def format_duration(seconds: float) -> str:
    """Return the shortest readable form of a duration ("1h", "5m", "10s", "250ms")."""
    if seconds and seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    if whole != seconds:
        return f"{seconds:g}s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"
