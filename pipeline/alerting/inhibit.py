"""Inhibition: a firing source alert mutes target alerts that share the `equal` labels."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from pipeline.alerting.route import all_match, matchers
from pipeline.config.settings import InhibitConfig


def inhibited(
    rules: Sequence[InhibitConfig], target: Mapping[str, str], firing: Iterable[Mapping[str, str]]
) -> bool:
    """Whether a firing source alert mutes this target alert (an alert never inhibits itself)."""
    sources = list(firing)
    for rule in rules:
        if not all_match(matchers(rule.target_matchers), target):
            continue
        wanted = matchers(rule.source_matchers)
        for source in sources:
            if source is target or dict(source) == dict(target):
                continue
            if all_match(wanted, source) and all(source.get(k, "") == target.get(k, "") for k in rule.equal):
                return True
    return False
