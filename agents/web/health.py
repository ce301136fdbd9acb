"""GET /health, /health/detailed and /ready: the monitoring guide's shapes, about the pipeline itself.

- `/ready` (readiness): 200 once the worker has joined its group and recovered its state.
- `/health` (liveness and the guide's health check): 503 with the reason when the worker is not ready,
  cannot reach the broker, or has stopped evaluating rules; notification channels are reported, and a
  failing channel marks the answer `degraded` without failing it (a Slack outage is no reason to
  restart a worker).
- `/health/detailed`: the same plus consumer lag per topic, state sizes, rule freshness, channel
  results and business figures.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from typing import TYPE_CHECKING, Any

from pipeline import __version__
from pipeline.config.settings import shown_url

if TYPE_CHECKING:
    from agents.web.ports import WebDeps

BROKER_SILENT_S = 30.0


def _service(name: str, healthy: bool, error: str | None, response_ms: float | None = None) -> dict[str, Any]:
    return {
        "service": name,
        "status": "healthy" if healthy else "unhealthy",
        "responseTime": response_ms,
        "error": None if healthy else error,
    }


def _kafka(deps: WebDeps) -> dict[str, Any]:
    last = deps.alerts.last_fetch_ok()
    if last is None:
        return _service("kafka", False, f"no successful fetch from {shown_url(deps.config.broker.url)} yet")
    silent = time.monotonic() - last
    ok = silent < BROKER_SILENT_S
    return _service(
        "kafka", ok, f"no successful fetch from {shown_url(deps.config.broker.url)} for {silent:.0f}s"
    )


def _state(deps: WebDeps) -> dict[str, Any]:
    return _service(
        "state",
        deps.ownership.is_ready(),
        "joining the consumer group, recovering state or positioning the partitions",
    )


def rule_lag_s(deps: WebDeps) -> float | None:
    """Seconds since the stalest owned partition evaluated its rules (None: nothing to evaluate)."""
    last_eval = deps.rule_evaluations()
    owned = deps.ownership.active_partitions()
    ready_since = deps.ownership.ready_since
    if last_eval is None or not owned or ready_since is None:
        return None
    now_ms = time.time() * 1000
    since_ready = now_ms - ready_since * 1000
    ages = [now_ms - last_eval[p] if p in last_eval else since_ready for p in owned]
    return max(ages) / 1000.0


def _rules(deps: WebDeps) -> dict[str, Any]:
    lag = rule_lag_s(deps)
    limit = 3 * max(deps.config.rules.interval, deps.config.ingest.flush_interval) + 10.0
    ok = lag is None or lag < limit
    return _service("rules", ok, f"rules not evaluated for {lag or 0:.0f}s (limit {limit:.0f}s)")


def _channels(deps: WebDeps) -> list[dict[str, Any]]:
    out = []
    for channel, last in deps.notifications.channel_results().items():
        ok = last is None or last["outcome"] == "delivered"
        out.append(_service(f"channel:{channel}", ok, last["reason"] if last else None))
    return out


def health_body(deps: WebDeps) -> tuple[int, dict[str, Any]]:
    """Return (HTTP status, body) of GET /health in the monitoring guide's shape."""
    core = [_state(deps), _kafka(deps), _rules(deps)]
    channels = _channels(deps)
    healthy = all(s["status"] == "healthy" for s in core)
    degraded = healthy and any(s["status"] != "healthy" for s in channels)
    body = {
        "status": "degraded" if degraded else ("healthy" if healthy else "unhealthy"),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "services": core + channels,
        "version": __version__,
        "uptime": round(time.time() - deps.started, 3),
        "worker": {
            "pid": os.getpid(),
            "host": platform.node(),
            "partitions": sorted(deps.ownership.active_partitions()) if deps.ownership.is_ready() else [],
        },
    }
    return (200 if healthy else 503), body


def ready_body(deps: WebDeps) -> tuple[int, dict[str, Any]]:
    """Return (HTTP status, body) of GET /ready."""
    state = _state(deps)
    ready = state["status"] == "healthy"
    return (200 if ready else 503), {"ready": ready, "reason": state["error"]}


def detailed_body(deps: WebDeps) -> tuple[int, dict[str, Any]]:
    """Return (HTTP status, body) of GET /health/detailed."""
    status, health = health_body(deps)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    ready = deps.ownership.is_ready()
    states = deps.series.states() if ready else {}
    active = deps.alerts.active()
    by_severity: dict[str, int] = {}
    for alert in active:
        if alert.get("state") == "firing":
            by_severity[alert.get("severity", "")] = by_severity.get(alert.get("severity", ""), 0) + 1
    body = {
        "status": health["status"],
        "application": {
            "status": health["status"],
            "version": __version__,
            "environment": deps.config.worker.environment,
            "uptime": health["uptime"],
            "memory": {"maxRssBytes": usage.ru_maxrss * 1024},
            "cpu": {"userSeconds": usage.ru_utime, "systemSeconds": usage.ru_stime},
        },
        "services": health["services"],
        "kafka": {
            "broker": shown_url(deps.config.broker.url),
            "partitions": sorted(deps.ownership.active_partitions()),
            "consumerLag": deps.reader.lag(),
            "positions": deps.reader.positions(),
        },
        "state": {
            "ready": ready,
            "ownedSeries": len(states),
            "stage1Pending": deps.ingest.pending(),
            "tables": deps.table_sizes(),
        },
        "rules": {
            "count": len(deps.rules.rules),
            "intervalSeconds": deps.config.rules.interval,
            "secondsSinceEvaluation": rule_lag_s(deps),
        },
        "notifications": {
            "channels": deps.notifications.channel_results(),
            "queueDepth": deps.notifications.queue_depths(),
        },
        "business": {
            "firingAlerts": by_severity,
            "activeSilences": len(deps.silences.active(int(time.time() * 1000))),
        },
    }
    return status, body
