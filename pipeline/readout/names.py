"""The metric families o4o-pulse exports: names, help texts, kinds. Declarations only.

The rules catalogue (`pipeline.rules.catalogue`) reads them to know what rules may name, without
depending on how the figures are computed (`pipeline.readout.figures`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

QUANTILES = (0.5, 0.95, 0.99)


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
    WindowMetric("users", "active_users", "o4o_active_users", "activeUsers: distinct users (sketch)"),
    WindowMetric("users", "registrations", "o4o_new_registrations", "newRegistrations"),
    WindowMetric(
        "users",
        "conversion_ratio",
        "o4o_order_conversion_ratio",
        "orderConversionRate: distinct ordering users / distinct active users (0-1)",
    ),
    WindowMetric("inventory", "units_sold", "o4o_units_sold", "units sold (inventory events)"),
    WindowMetric("inventory", "turnover", "o4o_inventory_turnover", "inventoryTurnover: units sold / stock"),
    WindowMetric("health", "heartbeats", "o4o_heartbeats", "heartbeats received"),
    WindowMetric("health", "unhealthy", "o4o_unhealthy_heartbeats", "heartbeats reporting unhealthy"),
)

STATE_FAMILIES = (
    ("o4o_daily_revenue", "dailyRevenue: confirmed revenue today (metrics.timezone)"),
    ("o4o_monthly_revenue", "monthlyRevenue: confirmed revenue this month (metrics.timezone)"),
    ("o4o_user_retention_ratio", "userRetentionRate: share of yesterday's active users active today"),
    ("o4o_low_stock_products", "lowStockAlerts: products at or under their low-stock threshold"),
    ("o4o_out_of_stock_products", "outOfStockProducts: products with no stock"),
    ("o4o_service_up", "1 when the service's last heartbeat said healthy, else 0"),
    ("o4o_service_last_heartbeat_timestamp_seconds", "event time of the service's last heartbeat"),
    ("o4o_service_response_time_seconds", "response time in the service's last heartbeat"),
)


LATENCY_METRICS = {
    "requests": ("o4o_response_time_seconds", "responseTime p50/p95/p99, all routes"),
    "route": ("o4o_route_response_time_seconds", "responseTime p50/p95/p99 of a route"),
}


TOTAL_FAMILIES = (
    ("http_requests_total", "counter", "Total number of HTTP requests"),
    ("http_request_duration_seconds", "histogram", "HTTP request duration in seconds"),
    ("orders_total", "counter", "Total number of orders"),
    ("revenue_total", "gauge", "Total revenue in real-time"),
    ("o4o_errors_total", "counter", "error events by endpoint, all time"),
    ("o4o_revenue_by_currency_total", "counter", "confirmed revenue by currency, all time"),
)
