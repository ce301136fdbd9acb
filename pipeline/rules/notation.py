"""The input notation of rule tests, as in `promtool test rules`.

A series is written `name{label="value", ...}`; its values as space-separated items, one per interval:
`a` (a number), `a+bxN` / `a-bxN` (a, a+b, ..., a+N*b: N+1 values), `axN` (a, N+1 times), `_` (no sample),
`_xN` (N times no sample) and `stale` (no sample).
"""

from __future__ import annotations

import re

_NAME = re.compile(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|(?=\}))')
_NUM = r"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|Inf|inf|NaN)"
_EXPAND = re.compile(rf"(?P<a>{_NUM})(?:(?P<sign>[+-])(?P<b>{_NUM}))?x(?P<n>\d+)")
_GAP = re.compile(r"_(?:x(\d+))?")
_ESCAPES = {"n": "\n", "\\": "\\", '"': '"'}


def parse_series(text: str) -> tuple[str, dict[str, str]]:
    """Split `name{a="b"}` into the name and labels; raise ValueError when it is not that shape."""
    match = _NAME.match(text)
    if match is None:
        raise ValueError(f"bad series {text!r}: it must start with a metric name")
    name, rest = match.group(1), text[match.end() :].strip()
    labels: dict[str, str] = {}
    if not rest:
        return name, labels
    if not (rest.startswith("{") and rest.endswith("}")):
        raise ValueError(f'bad series {text!r}: labels are written {{name="value", ...}}')
    body, pos = rest[1:-1] + "}", 0
    while pos < len(body) - 1:
        label = _LABEL.match(body, pos)
        if label is None:
            raise ValueError(f'bad series {text!r}: labels are written {{name="value", ...}}')
        labels[label.group(1)] = re.sub(
            r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), label.group(2)
        )
        pos = label.end()
    return name, labels


def parse_values(text: str) -> list[float | None]:
    """Expand a values string into one entry per interval; None means no sample."""
    out: list[float | None] = []
    for item in text.split():
        out.extend(_expand(item))
    if not out:
        raise ValueError("no values: write e.g. '1 2 3' or '0x10'")
    return out


def _expand(item: str) -> list[float | None]:
    if item == "stale":
        return [None]
    gap = _GAP.fullmatch(item)
    if gap is not None:
        return [None] * int(gap.group(1) or 1)
    match = _EXPAND.fullmatch(item)
    if match is not None:
        start = float(match.group("a"))
        step = float(match.group("b") or 0) * (-1 if match.group("sign") == "-" else 1)
        return [start + i * step for i in range(int(match.group("n")) + 1)]
    try:
        return [float(item)]
    except ValueError:
        raise ValueError(f"bad value {item!r}: write a number, a+bxN, a-bxN, axN, _ or stale") from None
