"""The metrics rules can read (names, labels, windows) and the Snapshot of their current samples.

The catalogue is built from pipeline.readout.figures's exported families, so a metric added there is readable
by rules without a change here. Any other name starting with `o4o_` is a gauge metric (gauge events
are exported as `o4o_<name>`), except names one typo away from a catalogued metric: those are far more
likely misspellings than gauges, so the checker reports them.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pipeline.readout import names
from pipeline.state.series import KINDS

WINDOW = "window"
QUANTILE = "quantile"
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# Similarity at which an unknown o4o_ name counts as a misspelling rather than a gauge:
# "o4o_eror_ratio" vs "o4o_error_ratio" scores 0.97, unrelated gauge names score well below.
_TYPO_CUTOFF = 0.9

# Why a table: STATE_FAMILIES and TOTAL_FAMILIES do not say which series kind their samples come from,
# and rules need the label names to check `where` and `by`. A unit test keeps it complete.
_FAMILY_LABELS: dict[str, tuple[str, ...]] = {
    "o4o_daily_revenue": KINDS["revenue"].labels,
    "o4o_monthly_revenue": KINDS["revenue"].labels,
    "o4o_user_retention_ratio": KINDS["users"].labels,
    "o4o_low_stock_products": KINDS["inventory"].labels,
    "o4o_out_of_stock_products": KINDS["inventory"].labels,
    "o4o_service_up": KINDS["health"].labels,
    "o4o_service_last_heartbeat_timestamp_seconds": KINDS["health"].labels,
    "o4o_service_response_time_seconds": KINDS["health"].labels,
    "http_requests_total": KINDS["http"].labels,
    "http_request_duration_seconds": KINDS["http"].labels,
    "orders_total": KINDS["orders"].labels,
    "revenue_total": (),
    "o4o_errors_total": KINDS["errors"].labels,
    "o4o_revenue_by_currency_total": KINDS["revenue"].labels,
}


@dataclass(frozen=True)
class MetricInfo:
    """What rules need to know about one metric: its series labels and whether it has windows/quantiles."""

    name: str
    labels: tuple[str, ...] | None  # series labels except window and quantile; None when not known
    windowed: bool = False
    latency: bool = False

    @property
    def seconds(self) -> bool:
        """True when values are seconds, so thresholds may be written as durations."""
        return self.name.endswith("_seconds")


def _build() -> dict[str, MetricInfo]:
    infos: dict[str, MetricInfo] = {}
    for metric in names.WINDOW_METRICS:
        infos[metric.name] = MetricInfo(metric.name, KINDS[metric.kind].labels, windowed=True)
    for kind, (name, _help) in names.LATENCY_METRICS.items():
        infos[name] = MetricInfo(name, KINDS[kind].labels, windowed=True, latency=True)
    for name, _help in names.STATE_FAMILIES:
        infos[name] = MetricInfo(name, _FAMILY_LABELS.get(name))
    for name, kind, _help in names.TOTAL_FAMILIES:
        labels = _FAMILY_LABELS.get(name)
        if kind != "histogram":
            infos[name] = MetricInfo(name, labels)
            continue
        # A histogram has no bare samples, only these three series.
        infos[f"{name}_bucket"] = MetricInfo(f"{name}_bucket", None if labels is None else (*labels, "le"))
        infos[f"{name}_sum"] = MetricInfo(f"{name}_sum", labels)
        infos[f"{name}_count"] = MetricInfo(f"{name}_count", labels)
    return infos


CATALOGUE: dict[str, MetricInfo] = _build()


def lookup(name: str) -> MetricInfo | None:
    """Return what is known of a metric name: catalogued, a gauge, or None when it is not readable."""
    info = CATALOGUE.get(name)
    if info is not None:
        return info
    if name.startswith("o4o_") and METRIC_NAME.fullmatch(name) and not _typo_of(name):
        return MetricInfo(name, None)
    return None


def _typo_of(name: str) -> list[str]:
    return difflib.get_close_matches(name, CATALOGUE, n=1, cutoff=_TYPO_CUTOFF)


def suggest(name: str) -> list[str]:
    """Return the catalogued names closest to a misspelt one, best first."""
    return difflib.get_close_matches(name, CATALOGUE, n=3, cutoff=0.6)


def quantile_label(quantile: float) -> str:
    """The `quantile` label value readout exports for a quantile (0.95 -> "0.95")."""
    return f"{quantile:g}"


LATENCY_QUANTILES: tuple[float, ...] = names.QUANTILES

Sample = tuple[Mapping[str, str], float]


@dataclass(frozen=True)
class Snapshot:
    """Samples visible to one evaluation: metric name -> list of (labels, value)."""

    samples: Mapping[str, Sequence[Sample]]

    @classmethod
    def from_families(cls, families: Iterable[names.Family]) -> Snapshot:
        """Collect the samples of exported families, suffixed ones (histogram _bucket etc) as name+suffix."""
        samples: dict[str, list[Sample]] = {}
        for family in families:
            for suffix, labels, value in family.samples:
                samples.setdefault(family.name + suffix, []).append((labels, float(value)))
        return cls(samples)

    def get(self, name: str) -> Sequence[Sample]:
        """Return the samples of one metric, empty when there are none."""
        return self.samples.get(name, ())
