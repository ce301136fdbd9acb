"""Prometheus text exposition as samples: {(sample name, sorted labels): value}."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    """Parse Prometheus text into {(sample name, sorted labels): value}."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def summed(scrapes: Iterable[Samples]) -> Samples:
    """Every sample summed over several scrapes (workers)."""
    total: Samples = {}
    for samples in scrapes:
        for key, value in samples.items():
            total[key] = total.get(key, 0.0) + value
    return total


def by_label(samples: Samples, name: str, *labels: str) -> dict[Any, float]:
    """Samples of `name` summed by the values of `labels` (one label: its value; several: a tuple)."""
    out: dict[Any, float] = {}
    for (sample, pairs), value in samples.items():
        if sample != name:
            continue
        found = dict(pairs)
        key = tuple(found.get(label, "") for label in labels)
        key = key[0] if len(key) == 1 else key
        out[key] = out.get(key, 0.0) + value
    return out
