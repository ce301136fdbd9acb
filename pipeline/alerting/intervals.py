"""Time intervals: when a route may deliver (Alertmanager's `active_time_intervals`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from pipeline.alerting.route import Match
from pipeline.config.settings import NotifyConfig, TimeIntervalConfig

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _minutes(text: str) -> int:
    hours, minutes = text.strip().split(":")
    return int(hours) * 60 + int(minutes)


def _weekday_set(specs: Sequence[str]) -> set[int]:
    days: set[int] = set()
    for spec in specs:
        first, _, last = spec.lower().partition(":")
        start = WEEKDAYS.index(first.strip())
        end = WEEKDAYS.index(last.strip()) if last else start
        days.update(range(start, end + 1))
    return days


def in_interval(interval: TimeIntervalConfig, now_ms: int) -> bool:
    """Whether an instant falls inside a time interval (weekdays and times in its time zone)."""
    local = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(interval.timezone))
    if interval.weekdays and local.weekday() not in _weekday_set(interval.weekdays):
        return False
    if not interval.times:
        return True
    minute = local.hour * 60 + local.minute
    for span in interval.times:
        start, end = span.split("-")
        if _minutes(start) <= minute < _minutes(end):
            return True
    return False


def active(config: NotifyConfig, match: Match, now_ms: int) -> bool:
    """Whether a route may deliver now (no intervals: always)."""
    if not match.active_time_intervals:
        return True
    return any(in_interval(config.time_intervals[name], now_ms) for name in match.active_time_intervals)
