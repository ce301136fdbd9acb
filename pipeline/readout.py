"""Read series state out as numbers: window values, totals, and the Prometheus metric families.

`series_values` computes every figure of one series at one instant; `/api/v1/series`, `/metrics` and
the rules all read these same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.aggregates import MICRO, Agg
from pipeline.cells import SeriesState
from pipeline.config import Config
from pipeline.durations import format_duration
from pipeline.preagg import SEED_BUCKETS_S
from pipeline.series import KINDS, parse_key
from pipeline.sketches import quantiles
from pipeline.windows import merge_window, span

QUANTILES = (0.5, 0.95, 0.99)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def window_values(kind: str, agg: Agg, covered_s: float) -> dict[str, float | None]:
    """Return the figures of one series over one window."""
    n = agg.get("n", 0)
    if kind in ("route", "requests"):
        qs = quantiles(agg.get("q", {}), agg.get("qz", 0), QUANTILES)
        return {
            "count": n,
            "errors_5xx": agg.get("e5", 0),
            "rps": n / covered_s,
            "rpm": n * 60.0 / covered_s,
            "error_ratio": _ratio(agg.get("e5", 0), n),
            "avg_ms": _ratio(agg.get("ds", 0) / 1000.0, n),
            "p50_ms": qs.get(0.5),
            "p95_ms": qs.get(0.95),
            "p99_ms": qs.get(0.99),
        }
    if kind == "errors":
        return {"count": n, "per_minute": n * 60.0 / covered_s}
    if kind == "orders":
        return {"count": n, "amount": agg.get("am", 0) / MICRO}
    if kind == "orders_all":
        created = agg.get("nc", 0)
        return {"count": n, "created": created, "per_hour": created * 3600.0 / covered_s}
    if kind == "revenue":
        amount = agg.get("am", 0) / MICRO
        return {
            "count": n,
            "revenue": amount,
            "revenue_micro": agg.get("am", 0),
            "per_hour": amount * 3600.0 / covered_s,
            "average_order_value": _ratio(amount, n),
        }
    return {"count": n}


def total_values(kind: str, agg: Agg) -> dict[str, Any]:
    """Return the all-time figures of one series."""
    n = agg.get("n", 0)
    if kind == "http":
        micros = agg.get("ds", 0)
        return {
            "count": n,
            "sum_s": micros / 1e6,
            "sum_us": micros,
            "buckets": list(agg.get("h", [])),
        }
    if kind in ("orders", "revenue"):
        return {"count": n, "amount": agg.get("am", 0) / MICRO, "amount_micro": agg.get("am", 0)}
    return {"count": n}


def series_values(key: str, state: SeriesState, now_ms: int, config: Config) -> dict[str, Any]:
    """Return every figure of one series at `now_ms`: its labels, total and windows."""
    kind, labels = parse_key(key)
    spec = KINDS[kind]
    out: dict[str, Any] = {"kind": kind, "labels": dict(zip(spec.labels, labels, strict=True))}
    if spec.total:
        out["total"] = total_values(kind, state.total or {})
    if spec.windowed:
        windows: dict[str, Any] = {}
        cfg = config.windows
        for window in cfg.windows:
            pane_s = cfg.pane_for(window)
            panes = state.fine if pane_s == cfg.pane else state.coarse
            sp = span(now_ms, int(window * 1000), int(pane_s * 1000))
            windows[format_duration(window)] = window_values(kind, merge_window(panes, sp), sp.covered_s)
        out["windows"] = windows
    return out


@dataclass
class Family:
    """One Prometheus metric family and its samples (suffix, labels, value)."""

    name: str
    type: str
    help: str
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)


@dataclass(frozen=True)
class WindowMetric:
    """How one window figure of a kind is exported."""

    kind: str
    value: str
    name: str
    help: str
    scale: float = 1.0


WINDOW_METRICS: tuple[WindowMetric, ...] = (
    WindowMetric("requests", "count", "o4o_request_count", "request events in the window"),
    WindowMetric("requests", "rps", "o4o_requests_per_second", "requestsPerSecond"),
    WindowMetric("requests", "rpm", "o4o_requests_per_minute", "requestsPerMinute"),
    WindowMetric("requests", "error_ratio", "o4o_error_ratio", "errorRate: 5xx share (0-1)"),
    WindowMetric("route", "count", "o4o_route_request_count", "request events of a route"),
    WindowMetric("route", "rps", "o4o_route_requests_per_second", "requests per second"),
    WindowMetric("route", "rpm", "o4o_route_requests_per_minute", "requests per minute"),
    WindowMetric("route", "error_ratio", "o4o_route_error_ratio", "5xx share of a route (0-1)"),
    WindowMetric("errors", "count", "o4o_errors_by_endpoint", "errorsByEndpoint: error events"),
    WindowMetric("orders", "count", "o4o_order_count", "order events by status and user role"),
    WindowMetric("orders_all", "created", "o4o_created_order_count", "orders created"),
    WindowMetric("orders_all", "per_hour", "o4o_orders_per_hour", "ordersPerHour (created)"),
    WindowMetric("revenue", "revenue", "o4o_revenue", "confirmed revenue in the window"),
    WindowMetric("revenue", "per_hour", "o4o_revenue_per_hour", "revenuePerHour"),
    WindowMetric("revenue", "average_order_value", "o4o_average_order_value", "averageOrderValue"),
)

LATENCY_METRICS = {
    "requests": ("o4o_response_time_seconds", "responseTime p50/p95/p99, all routes"),
    "route": ("o4o_route_response_time_seconds", "responseTime p50/p95/p99 of a route"),
}


def _window_label(window: float) -> str:
    return format_duration(window)


def prometheus_families(states: Mapping[str, SeriesState], now_ms: int, config: Config) -> list[Family]:
    """Build every metric family of the owned series."""
    families: dict[str, Family] = {}

    def family(name: str, kind: str, text: str) -> Family:
        fam = families.get(name)
        if fam is None:
            fam = families[name] = Family(name, kind, text)
        return fam

    by_kind: dict[str, list[WindowMetric]] = {}
    for metric in WINDOW_METRICS:
        by_kind.setdefault(metric.kind, []).append(metric)
        family(metric.name, "gauge", metric.help)
    for name, text in LATENCY_METRICS.values():
        family(name, "gauge", text)
    for name, kind, text in TOTAL_FAMILIES:
        family(name, kind, text)

    for key, state in sorted(states.items()):
        values = series_values(key, state, now_ms, config)
        kind, labels = values["kind"], values["labels"]
        for window, figures in values.get("windows", {}).items():
            wl = {**labels, "window": window}
            for metric in by_kind.get(kind, ()):
                value = figures.get(metric.value)
                if value is not None:
                    families[metric.name].samples.append(("", wl, value * metric.scale))
            if kind in LATENCY_METRICS:
                fam = families[LATENCY_METRICS[kind][0]]
                for q in QUANTILES:
                    value = figures.get(f"p{round(q * 100)}_ms")
                    if value is not None:
                        fam.samples.append(("", {**wl, "quantile": f"{q:g}"}, value / 1000.0))
        if "total" in values:
            _total_samples(families, kind, labels, values["total"], config)
    return list(families.values())


TOTAL_FAMILIES = (
    ("http_requests_total", "counter", "Total number of HTTP requests"),
    ("http_request_duration_seconds", "histogram", "HTTP request duration in seconds"),
    ("orders_total", "counter", "Total number of orders"),
    ("revenue_total", "gauge", "Total revenue in real-time"),
    ("o4o_errors_total", "counter", "error events by endpoint, all time"),
    ("o4o_revenue_by_currency_total", "counter", "confirmed revenue by currency, all time"),
)


def _total_samples(
    families: dict[str, Family],
    kind: str,
    labels: dict[str, str],
    total: dict[str, Any],
    config: Config,
) -> None:
    if kind == "http":
        families["http_requests_total"].samples.append(("", labels, total["count"]))
        hist = families["http_request_duration_seconds"]
        cumulative = 0
        for bound, count in zip((*SEED_BUCKETS_S, float("inf")), total["buckets"] or [0] * 10, strict=True):
            cumulative += count
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            hist.samples.append(("_bucket", {**labels, "le": le}, cumulative))
        hist.samples.append(("_sum", labels, total["sum_s"]))
        hist.samples.append(("_count", labels, total["count"]))
    elif kind == "orders":
        families["orders_total"].samples.append(("", labels, total["count"]))
    elif kind == "errors":
        families["o4o_errors_total"].samples.append(("", labels, total["count"]))
    elif kind == "revenue":
        families["o4o_revenue_by_currency_total"].samples.append(("", labels, total["amount"]))
        if labels.get("currency") == config.metrics.currency:
            families["revenue_total"].samples.append(("", {}, total["amount"]))


def all_series_values(
    states: Mapping[str, SeriesState], now_ms: int, config: Config
) -> Iterable[tuple[str, dict[str, Any]]]:
    """Yield (key, values) of every owned series, sorted by key."""
    for key in sorted(states):
        yield key, series_values(key, states[key], now_ms, config)
