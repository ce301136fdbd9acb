"""Alert context: the top contributors behind a firing alert's number, from the pipeline's own series.

`context_for(rule, labels, series, at_ms, ...)` is pure: it reads series entries as `/api/v1/series`
gives them (`pipeline.readout.figures.all_series_values`: kind, labels, windows, stock) and returns an
`AlertContext`. What a rule gets depends on the metric it reads (`rule_kind`):

- error rules (`o4o_error_ratio`, `o4o_route_error_ratio`, error counts): the routes with the most 5xx
  in the rule's window, and the most frequent `error_code`s of error events in the same window, each
  with its count and its share;
- latency rules (`o4o_response_time_seconds`, `o4o_route_response_time_seconds`): the slowest routes at
  the rule's quantile in its window;
- stock rules (`o4o_out_of_stock_products`, `o4o_low_stock_products`): the out-of-stock product ids
  (the first 10 in `product_order`, and how many more);
- order and revenue rules: orders split by `payment_method` and by `user_role` (count, share, amount).

Rows are ordered by their figure, largest first, ties by name, so the same series give the same
context. Contributing series are narrowed by the rule's `where` and the alert's own labels wherever
their kind has that label (a per-route rule's context shows that route); error codes are counted over
all routes (their series has no route label). Text in rows comes from events: every channel escapes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import msgspec

from pipeline.alerting.text import clip, one_line
from pipeline.durations import format_duration
from pipeline.readout.figures import OUT_OF_STOCK_LISTED
from pipeline.rules.model import Rule

TOP_ROUTES: Final = 3
TOP_CODES: Final = 3
TOP_SPLIT: Final = 5
"""Rows per section: routes (5xx or latency), error codes, payment methods and user roles."""

ERRORS: Final = "errors"
LATENCY: Final = "latency"
STOCK: Final = "stock"
ORDERS: Final = "orders"

_RULE_KINDS: Final[dict[str, str]] = {
    "o4o_error_ratio": ERRORS,
    "o4o_route_error_ratio": ERRORS,
    "o4o_errors_by_endpoint": ERRORS,
    "o4o_errors_total": ERRORS,
    "o4o_response_time_seconds": LATENCY,
    "o4o_route_response_time_seconds": LATENCY,
    "o4o_out_of_stock_products": STOCK,
    "o4o_low_stock_products": STOCK,
    "o4o_order_count": ORDERS,
    "o4o_created_order_count": ORDERS,
    "o4o_orders_per_hour": ORDERS,
    "orders_total": ORDERS,
    "o4o_revenue": ORDERS,
    "o4o_revenue_per_hour": ORDERS,
    "o4o_average_order_value": ORDERS,
    "o4o_daily_revenue": ORDERS,
    "o4o_monthly_revenue": ORDERS,
    "revenue_total": ORDERS,
    "o4o_revenue_by_currency_total": ORDERS,
}
"""Which context each metric's rules carry; rules of other metrics carry none."""

_STATUS_OF: Final[dict[str, str]] = {
    "o4o_created_order_count": "created",
    "o4o_orders_per_hour": "created",
    "o4o_revenue": "confirmed",
    "o4o_revenue_per_hour": "confirmed",
    "o4o_average_order_value": "confirmed",
    "o4o_daily_revenue": "confirmed",
    "o4o_monthly_revenue": "confirmed",
    "revenue_total": "confirmed",
    "o4o_revenue_by_currency_total": "confirmed",
}
"""The order status a metric counts (the others count every status its rule selects)."""

SERIES_KINDS: Final[dict[str, frozenset[str]]] = {
    ERRORS: frozenset({"route", "error_codes"}),
    LATENCY: frozenset({"route"}),
    STOCK: frozenset({"inventory"}),
    ORDERS: frozenset({"payments", "orders"}),
}
"""The series kinds each context reads (what the cluster view is asked for)."""


class Row(msgspec.Struct, frozen=True, omit_defaults=True):
    """One contributor: its name (a route, an error code, a product id...) and its figures."""

    name: str
    labels: dict[str, str] = {}
    count: int | None = None
    share: float | None = None
    """Of the section's total, 0-1."""
    value: float | None = None
    """The section's own figure (`Section.value`): a route's error ratio, a latency in ms, an amount."""


class Section(msgspec.Struct, frozen=True, omit_defaults=True):
    """One table of the context."""

    name: str
    """routes_5xx, error_codes, slowest_routes, out_of_stock, payment_method or user_role."""
    title: str
    rows: list[Row] = []
    more: int = 0
    """Contributors left out after the rows."""
    total: int | None = None
    """What the shares are of (all 5xx, all error events, all orders...), or the number of products."""
    value: str | None = None
    """What `Row.value` is: "error_ratio", "p95_ms", "amount"."""


class AlertContext(msgspec.Struct, frozen=True, omit_defaults=True):
    """The context of one firing transition."""

    kind: str
    at_ms: int
    window: str | None = None
    sections: list[Section] = []
    partial: bool = False
    """Some contributing series could not be read in time: the figures cover only part of them."""
    missing: list[str] = []
    """What could not be read (workers, partitions), when partial."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as the alert record carries it."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlertContext:
        """Read the form `to_dict` wrote (from an alert record)."""
        return msgspec.convert(data, cls)


def rule_kind(rule: Rule) -> str | None:
    """The context a rule carries (ERRORS, LATENCY, STOCK, ORDERS), or None."""
    if rule.heartbeat is not None or rule.metric is None:
        return None
    return _RULE_KINDS.get(rule.metric)


def series_kinds(rule: Rule) -> frozenset[str]:
    """The series kinds a rule's context reads (empty: no context)."""
    kind = rule_kind(rule)
    return SERIES_KINDS[kind] if kind is not None else frozenset()


def context_for(
    rule: Rule,
    labels: Mapping[str, str],
    series: Iterable[Mapping[str, Any]],
    at_ms: int,
    default_window: str,
    missing: Sequence[str] = (),
) -> AlertContext | None:
    """The context of a firing alert of `rule` with `labels`, from series entries read at `at_ms`.

    `default_window` serves rules without a window (totals, daily revenue); `missing` names what
    could not be read, which makes the context partial.
    """
    kind = rule_kind(rule)
    if kind is None:
        return None
    window: str | None = format_duration(rule.window) if rule.window is not None else default_window
    wanted = SERIES_KINDS[kind]
    by_kind: dict[str, list[Mapping[str, Any]]] = {k: [] for k in wanted}
    for entry in series:
        entry_kind = entry.get("kind")
        if entry_kind in wanted and _selected(rule, labels, entry.get("labels") or {}):
            by_kind[str(entry_kind)].append(entry)
    if kind == ERRORS:
        sections = [_routes_5xx(by_kind["route"], window), _error_codes(by_kind["error_codes"], window)]
    elif kind == LATENCY:
        sections = [_slowest(by_kind["route"], window, rule.quantile or 0.95)]
    elif kind == STOCK:
        sections = [_out_of_stock(by_kind["inventory"])]
        window = None
    else:
        status = _STATUS_OF.get(rule.metric or "")
        sections = [
            _split(by_kind["payments"], window, "payment_method", "Orders by payment method", status),
            _split(by_kind["orders"], window, "user_role", "Orders by user role", status),
        ]
    return AlertContext(
        kind=kind, at_ms=at_ms, window=window, sections=sections, partial=bool(missing), missing=list(missing)
    )


def _selected(rule: Rule, alert_labels: Mapping[str, str], labels: Mapping[str, Any]) -> bool:
    """Whether a series passes the rule's `where` and the alert's labels, on the labels it has."""
    for matcher in rule.where:
        if matcher.label in labels and not matcher.matches({matcher.label: str(labels[matcher.label])}):
            return False
    return all(str(labels[name]) == value for name, value in alert_labels.items() if name in labels)


def _figures(entry: Mapping[str, Any], window: str | None) -> Mapping[str, Any]:
    return (entry.get("windows") or {}).get(window) or {}


def ranked(rows: Iterable[Row], key: str = "count") -> list[Row]:
    """Rows by their figure, largest first; ties by name, then labels (a total order)."""

    def order(row: Row) -> tuple[float, str, list[tuple[str, str]]]:
        figure = getattr(row, key)
        return (-(figure if figure is not None else float("-inf")), row.name, sorted(row.labels.items()))

    return sorted(rows, key=order)


def _shared(rows: list[Row], total: int, top: int) -> tuple[list[Row], int]:
    """The first `top` rows with their shares of `total`, and how many were left out."""
    shown = [msgspec.structs.replace(r, share=(r.count or 0) / total if total else None) for r in rows[:top]]
    return shown, len(rows) - len(shown)


def _route_name(labels: Mapping[str, Any]) -> str:
    return f"{labels.get('service', '')} {labels.get('route', '')}".strip()


def _str_labels(labels: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in labels.items()}


def _routes_5xx(entries: list[Mapping[str, Any]], window: str | None) -> Section:
    rows = []
    for entry in entries:
        figures = _figures(entry, window)
        errors = int(figures.get("errors_5xx") or 0)
        if errors:
            labels = entry.get("labels") or {}
            ratio = figures.get("error_ratio")
            rows.append(Row(_route_name(labels), _str_labels(labels), count=errors, value=ratio))
    total = sum(r.count or 0 for r in rows)
    shown, more = _shared(ranked(rows), total, TOP_ROUTES)
    return Section("routes_5xx", "Routes with the most 5xx", shown, more, total, "error_ratio")


def _error_codes(entries: list[Mapping[str, Any]], window: str | None) -> Section:
    rows = []
    for entry in entries:
        count = int(_figures(entry, window).get("count") or 0)
        if count:
            labels = entry.get("labels") or {}
            rows.append(Row(str(labels.get("error_code", "")), _str_labels(labels), count=count))
    total = sum(r.count or 0 for r in rows)
    shown, more = _shared(ranked(rows), total, TOP_CODES)
    return Section("error_codes", "Most frequent error codes", shown, more, total)


def _slowest(entries: list[Mapping[str, Any]], window: str | None, quantile: float) -> Section:
    figure = f"p{round(quantile * 100)}_ms"
    rows = []
    for entry in entries:
        figures = _figures(entry, window)
        latency = figures.get(figure)
        if latency is not None:
            labels = entry.get("labels") or {}
            count = int(figures.get("count") or 0)
            rows.append(Row(_route_name(labels), _str_labels(labels), count=count, value=float(latency)))
    ordered = ranked(rows, "value")
    shown = ordered[:TOP_ROUTES]
    return Section(
        "slowest_routes", f"Slowest routes ({figure[:-3]})", shown, len(ordered) - len(shown), value=figure
    )


def _out_of_stock(entries: list[Mapping[str, Any]]) -> Section:
    first: list[str] = []
    count = 0
    for entry in entries:  # one inventory series; a list keeps the function total
        stock = entry.get("stock") or {}
        first.extend(str(p) for p in stock.get("out_of_stock_first") or ())
        count += int(stock.get("out_of_stock") or 0)
    rows = [Row(product) for product in first[:OUT_OF_STOCK_LISTED]]
    return Section("out_of_stock", "Out-of-stock products", rows, max(count - len(rows), 0), count)


def _split(
    entries: list[Mapping[str, Any]], window: str | None, label: str, title: str, status: str | None
) -> Section:
    counts: dict[str, int] = {}
    amounts: dict[str, float] = {}
    for entry in entries:
        labels = entry.get("labels") or {}
        if status is not None and labels.get("status") != status:
            continue
        figures = _figures(entry, window)
        name = str(labels.get(label, ""))
        counts[name] = counts.get(name, 0) + int(figures.get("count") or 0)
        amounts[name] = amounts.get(name, 0.0) + float(figures.get("amount") or 0.0)
    rows = [Row(name, {label: name}, count=n, value=amounts[name]) for name, n in counts.items() if n]
    total = sum(counts.values())
    shown, more = _shared(ranked(rows), total, TOP_SPLIT)
    return Section(label, title, shown, more, total, "amount")


def format_value(section: Section, value: float | None) -> str:
    """A row's value as text: a ratio in percent, a latency in ms, an amount with two decimals."""
    if value is None:
        return ""
    if section.value == "error_ratio":
        return f"{value * 100:.1f}%"
    if section.value is not None and section.value.endswith("_ms"):
        return f"{value:,.0f} ms"
    return f"{value:,.2f}"


def format_share(share: float | None) -> str:
    """A share as text ("42.9%")."""
    return "" if share is None else f"{share * 100:.1f}%"


def table(section: Section) -> list[list[str]]:
    """The section as rows of plain cells, a header row first (not escaped: the channel escapes)."""
    header = ["name"]
    if section.name != "out_of_stock":
        header += ["count", "share"]
        if section.value is not None:
            header.append(_VALUE_HEADERS.get(section.value, section.value))
    out = [header]
    for row in section.rows:
        cells = [row.name]
        if section.name != "out_of_stock":
            cells += [str(row.count if row.count is not None else ""), format_share(row.share)]
            if section.value is not None:
                cells.append(format_value(section, row.value))
        out.append(cells)
    return out


_VALUE_HEADERS: Final = {"error_ratio": "5xx ratio", "amount": "amount"}


def footer(section: Section) -> str:
    """What follows the rows: "and N more", or an empty string."""
    return f"and {section.more} more" if section.more else ""


def partial_note(context: AlertContext) -> str:
    """The line that says the context is partial, or an empty string."""
    if not context.partial:
        return ""
    what = ", ".join(context.missing) or "some workers"
    return f"partial: not read in time from {what}"


def summary(context: AlertContext) -> str:
    """One line per section, e.g. "Routes with the most 5xx: api /pay 40 (66.7%), ..." (plain text)."""
    lines = []
    for section in context.sections:
        items = []
        for row in section.rows:
            figures = [str(row.count)] if row.count is not None and section.name != "out_of_stock" else []
            if row.share is not None:
                figures.append(f"({format_share(row.share)})")
            if section.name == "slowest_routes":
                figures = [format_value(section, row.value)]
            items.append(" ".join([row.name, *figures]))
        if section.more:
            items.append(footer(section))
        lines.append(f"{section.title}: {', '.join(items) if items else 'none'}")
    note = partial_note(context)
    if note:
        lines.append(note)
    return "\n".join(lines)


CELL_MAX: Final = 48
"""Longest cell of a text table (a longer route or code is cut with an ellipsis)."""


def of_alert(alert: Mapping[str, Any]) -> AlertContext | None:
    """The context an alert dict carries, or None (none, or not in a form this version reads)."""
    data = alert.get("context")
    if not isinstance(data, Mapping):
        return None
    try:
        return AlertContext.from_dict(data)
    except msgspec.ValidationError:
        return None


def text_lines(context: AlertContext) -> list[str]:
    """The context as aligned plain-text tables, one line each (not escaped: the channel escapes)."""
    lines = []
    for section in context.sections:
        lines.append(f"{section.title} ({context.window})" if context.window else section.title)
        rows = [[clip(one_line(cell), CELL_MAX) for cell in row] for row in table(section)]
        if len(rows) == 1:
            lines.append("  none")
            continue
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            cells = [
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append(("  " + "  ".join(cells)).rstrip())
        if section.more:
            lines.append("  " + footer(section))
    note = partial_note(context)
    if note:
        lines.append(note)
    return lines
