"""Read series state out as numbers: window values, totals, and the Prometheus metric families.

`series_values` computes every figure of one series at one instant; `/api/v1/series`, `/metrics` and
the rules all read these same numbers.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from pipeline.config.settings import Config
from pipeline.durations import format_duration
from pipeline.ingest.preagg import SEED_BUCKETS_S
from pipeline.readout.names import (
    LATENCY_METRICS,
    QUANTILES,
    STATE_FAMILIES,
    TOTAL_FAMILIES,
    WINDOW_METRICS,
    Family,
    WindowMetric,
)
from pipeline.sketches.distinct import bounds, estimate, intersection_estimate
from pipeline.sketches.quantiles import quantiles
from pipeline.state.aggregates import MICRO, Agg
from pipeline.state.calendar import Calendar
from pipeline.state.cells import SeriesState
from pipeline.state.series import KINDS, parse_key
from pipeline.state.windows import merge_window, span

OUT_OF_STOCK_LISTED = 10
"""How many out-of-stock product ids the inventory series lists (the first, in `product_order`)."""


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
    if kind in ("orders", "payments"):
        return {"count": n, "amount": agg.get("am", 0) / MICRO}
    if kind == "orders_all":
        created = agg.get("nc", 0)
        return {"count": n, "created": created, "per_hour": created * 3600.0 / covered_s}
    if kind == "users":
        active = estimate(agg.get("xa"))
        ordering = estimate(agg.get("xc"))
        low, high = bounds(agg.get("xa"))
        return {
            "events": n,
            "registrations": agg.get("nr", 0),
            "active_users": active,
            "active_users_low": low,
            "active_users_high": high,
            "ordering_users": ordering,
            "conversion_ratio": _ratio(ordering, active),
        }
    if kind == "inventory":
        return {"events": n, "units_sold": agg.get("us", 0)}
    if kind == "health":
        return {"heartbeats": n, "unhealthy": agg.get("nu", 0)}
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


def series_values(
    key: str,
    state: SeriesState,
    now_ms: int,
    config: Config,
    calendar: Calendar | None = None,
) -> dict[str, Any]:
    """Return every figure of one series at `now_ms`: its labels, total, windows and states."""
    kind, labels = parse_key(key)
    spec = KINDS[kind]
    calendar = calendar or Calendar(config.metrics.timezone)
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
    extra = _EXTRAS.get(kind)
    if extra is not None:
        extra(out, state, now_ms, calendar)
    return out


def _revenue_periods(out: dict[str, Any], state: SeriesState, now_ms: int, cal: Calendar) -> None:
    for name, period in (("today", cal.today(now_ms)), ("this_month", cal.this_month(now_ms))):
        agg = state.periods.get(period, {})
        out[name] = {
            "period": period[1:],
            "count": agg.get("n", 0),
            "revenue": agg.get("am", 0) / MICRO,
            "revenue_micro": agg.get("am", 0),
        }


def _user_retention(out: dict[str, Any], state: SeriesState, now_ms: int, cal: Calendar) -> None:
    today = state.periods.get(cal.today(now_ms), {})
    yesterday = state.periods.get(cal.yesterday(now_ms), {})
    before = estimate(yesterday.get("xa"))
    retained = intersection_estimate(yesterday.get("xa"), today.get("xa"))
    out["days"] = {
        "active_today": estimate(today.get("xa")),
        "active_yesterday": before,
        "retained": retained,
        "retention_ratio": _ratio(retained, before),
        "registrations_today": today.get("nr", 0),
    }


def product_order(product: str) -> tuple[Any, ...]:
    """Sort key of product ids: numeric ids by number (2 before 10), before other ids by text."""
    return (0, int(product), product) if product.isascii() and product.isdigit() else (1, 0, product)


def _inventory_state(out: dict[str, Any], state: SeriesState, now_ms: int, cal: Calendar) -> None:
    products = state.entities.values()
    total_stock = sum(max(p["s"], 0) for p in products)
    empty = [product for product, p in state.entities.items() if p["s"] <= 0]
    out["stock"] = {
        "products": len(state.entities),
        "low_stock": sum(1 for p in products if p["s"] <= p["l"]),
        "out_of_stock": len(empty),
        "out_of_stock_first": heapq.nsmallest(OUT_OF_STOCK_LISTED, empty, key=product_order),
        "total_stock": total_stock,
    }
    for figures in out.get("windows", {}).values():
        figures["turnover"] = _ratio(figures["units_sold"], total_stock)


def _latest_state(out: dict[str, Any], state: SeriesState, now_ms: int, cal: Calendar) -> None:
    latest = state.latest
    if latest is None:
        return
    if out["kind"] == "health":
        out["latest"] = {
            "status": "healthy" if latest["s"] else "unhealthy",
            "ts": latest["t"],
            "age_s": max(now_ms - latest["t"], 0) / 1000.0,
            "response_time_ms": latest.get("rt"),
        }
    else:
        out["latest"] = {"value": latest["v"], "ts": latest["t"]}
        out["labels"]["labels"] = orjson.loads(out["labels"]["labels"])


_EXTRAS = {
    "revenue": _revenue_periods,
    "users": _user_retention,
    "inventory": _inventory_state,
    "health": _latest_state,
    "gauge": _latest_state,
}


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
    for name, text in STATE_FAMILIES:
        family(name, "gauge", text)
    calendar = Calendar(config.metrics.timezone)

    for key, state in sorted(states.items()):
        values = series_values(key, state, now_ms, config, calendar)
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
        _state_samples(families, values)
    return list(families.values())


def _state_samples(families: dict[str, Family], values: dict[str, Any]) -> None:
    kind, labels = values["kind"], values["labels"]

    def put(name: str, value: float | None, sample_labels: dict[str, str] | None = None) -> None:
        if value is not None:
            families[name].samples.append(("", labels if sample_labels is None else sample_labels, value))

    if kind == "revenue":
        put("o4o_daily_revenue", values["today"]["revenue"])
        put("o4o_monthly_revenue", values["this_month"]["revenue"])
    elif kind == "users":
        put("o4o_user_retention_ratio", values["days"]["retention_ratio"])
    elif kind == "inventory":
        put("o4o_low_stock_products", values["stock"]["low_stock"])
        put("o4o_out_of_stock_products", values["stock"]["out_of_stock"])
    elif kind == "health" and "latest" in values:
        latest = values["latest"]
        put("o4o_service_up", 1.0 if latest["status"] == "healthy" else 0.0)
        put("o4o_service_last_heartbeat_timestamp_seconds", latest["ts"] / 1000.0)
        rt = latest["response_time_ms"]
        put("o4o_service_response_time_seconds", None if rt is None else rt / 1000.0)
    elif kind == "gauge" and "latest" in values:
        name = gauge_metric_name(labels["name"])
        fam = families.get(name)
        if fam is None:
            text = f"latest value of gauge events named {labels['name']}"
            fam = families[name] = Family(name, "gauge", text)
        own = {_label_name(k): str(v) for k, v in labels["labels"].items()}
        fam.samples.append(("", own, float(values["latest"]["value"])))


def gauge_metric_name(event_name: str) -> str:
    """Prometheus name of gauge events: o4o_<name>, or o4o_gauge_<name> if that is taken.

    Names starting with "gauge_" always take the second form, so that no two gauge names share a
    family (e.g. "active_users" -> o4o_gauge_active_users, "gauge_active_users" ->
    o4o_gauge_gauge_active_users).
    """
    name = "o4o_" + event_name
    taken = {m.name for m in WINDOW_METRICS} | {n for n, _ in STATE_FAMILIES}
    taken |= {n for n, _, _ in TOTAL_FAMILIES} | {n for n, _ in LATENCY_METRICS.values()}
    taken |= {n.removesuffix("_total") for n in taken}
    return "o4o_gauge_" + event_name if name in taken or event_name.startswith("gauge_") else name


def _label_name(name: str) -> str:
    """A valid Prometheus label name for a gauge event's label key."""
    clean = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return clean if clean and not clean[0].isdigit() else f"_{clean}"


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
    calendar = Calendar(config.metrics.timezone)
    for key in sorted(states):
        yield key, series_values(key, states[key], now_ms, config, calendar)
