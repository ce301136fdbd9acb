"""Sliding windows served from fine tumbling panes, merged on read ("no pane, no gain").

A window of length W at time `now` is the pane that contains `now` plus the W / pane - 1 panes
before it. It therefore covers between W - pane and W of event time; rates divide by the span it
really covers, `covered_s`, so a young current pane does not bias them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.state.aggregates import Agg, merged


def pane_start(ts_ms: int, pane_ms: int) -> int:
    """Return the start (ms) of the pane holding ts_ms."""
    return ts_ms - ts_ms % pane_ms


@dataclass(frozen=True)
class Span:
    """The panes of one window at one instant."""

    first: int
    last: int
    covered_s: float

    def holds(self, start: int) -> bool:
        """Whether the pane starting at `start` belongs to the window."""
        return self.first <= start <= self.last


def span(now_ms: int, window_ms: int, pane_ms: int) -> Span:
    """Return which panes make up the window ending at now_ms."""
    last = pane_start(now_ms, pane_ms)
    first = last - window_ms + pane_ms
    covered_ms = window_ms - pane_ms + max(now_ms - last, 1)
    return Span(first, last, covered_ms / 1000.0)


def merge_window(panes: Mapping[int, Mapping[str, Any]], window: Span) -> Agg:
    """Sum the panes that fall in `window`."""
    return merged(agg for start, agg in panes.items() if window.first <= start <= window.last)
