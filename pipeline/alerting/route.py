"""The routing tree: which receiver, grouping and timing an alert's labels lead to.

Alertmanager's model. An alert (its labels) walks the routing tree from the root: a child route whose
matchers all match takes it; without `continue` the first matching child ends the walk; when no child
matches, the node itself is the match. Each match names a receiver and carries the grouping and timing
settings inherited down the tree. Alerts with equal `group_by` label values on one route form one
group, notified together (`group_wait` after the group appears, then at most every `group_interval`
when it changes, and again every `repeat_interval` while it fires).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pipeline.config.settings import NotifyConfig, RouteConfig
from pipeline.rules.model import MATCH_OPS, Matcher


def matchers(spec: Mapping[str, str]) -> tuple[Matcher, ...]:
    """Parse label filters written as in rules files (`value`, `!=value`, `=~regex`, `!~regex`)."""
    out = []
    for label, text in sorted(spec.items()):
        op = next((prefix for prefix in MATCH_OPS if text.startswith(prefix)), "=")
        out.append(Matcher(label, op, text if op == "=" else text[len(op) :]))
    return tuple(out)


def all_match(filters: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """Whether every filter matches the labels."""
    return all(m.matches(labels) for m in filters)


@dataclass(frozen=True)
class Match:
    """Where one alert goes: a receiver and the settings of the route that chose it."""

    route_id: str
    receiver: str
    group_by: tuple[str, ...]
    group_wait: float
    group_interval: float
    repeat_interval: float
    active_time_intervals: tuple[str, ...]


def route(config: NotifyConfig, labels: Mapping[str, str]) -> list[Match]:
    """Return every route match of an alert, in tree order."""
    root = config.route
    settings = Match(
        route_id="0",
        receiver=root.receiver or "",
        group_by=root.group_by or ("alertname",),
        group_wait=30.0 if root.group_wait is None else root.group_wait,
        group_interval=300.0 if root.group_interval is None else root.group_interval,
        repeat_interval=14400.0 if root.repeat_interval is None else root.repeat_interval,
        active_time_intervals=root.active_time_intervals,
    )
    return _walk(root, settings, labels)


def _inherit(node: RouteConfig, parent: Match, route_id: str) -> Match:
    return Match(
        route_id=route_id,
        receiver=node.receiver or parent.receiver,
        group_by=parent.group_by if node.group_by is None else node.group_by,
        group_wait=parent.group_wait if node.group_wait is None else node.group_wait,
        group_interval=parent.group_interval if node.group_interval is None else node.group_interval,
        repeat_interval=parent.repeat_interval if node.repeat_interval is None else node.repeat_interval,
        active_time_intervals=node.active_time_intervals or parent.active_time_intervals,
    )


def _walk(node: RouteConfig, here: Match, labels: Mapping[str, str]) -> list[Match]:
    found: list[Match] = []
    for index, child in enumerate(node.routes):
        if not all_match(matchers(child.matchers), labels):
            continue
        found.extend(_walk(child, _inherit(child, here, f"{here.route_id}.{index}"), labels))
        if not child.continue_:
            break
    return found or [here]


def group_labels(match: Match, labels: Mapping[str, str]) -> dict[str, str]:
    """The labels that identify an alert's group on one route (`...` in group_by groups by all)."""
    if "..." in match.group_by:
        return dict(sorted(labels.items()))
    return {name: labels.get(name, "") for name in match.group_by}


def group_key(match: Match, grouped: Mapping[str, str]) -> str:
    """Stable id of a group: receiver, route and group labels (16 hex digits of a SHA-256)."""
    canonical = json.dumps(
        [match.receiver, match.route_id, sorted(grouped.items())], separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
