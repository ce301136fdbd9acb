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
    from agents.app import Pulse

BROKER_SILENT_S = 30.0


def _service(name: str, healthy: bool, error: str | None, response_ms: float | None = None) -> dict[str, Any]:
    return {
        "service": name,
        "status": "healthy" if healthy else "unhealthy",
        "responseTime": response_ms,
        "error": None if healthy else error,
    }


def _kafka(pulse: Pulse) -> dict[str, Any]:
    reader = pulse.history.reader
    last = reader.last_ok if reader is not None else None
    if last is None:
        return _service("kafka", False, f"no successful fetch from {shown_url(pulse.config.broker.url)} yet")
    silent = time.monotonic() - last
    ok = silent < BROKER_SILENT_S
    return _service(
        "kafka", ok, f"no successful fetch from {shown_url(pulse.config.broker.url)} for {silent:.0f}s"
    )


def _state(pulse: Pulse) -> dict[str, Any]:
    return _service(
        "state",
        pulse.is_ready(),
        "joining the consumer group, recovering state or positioning the partitions",
    )


def rule_lag_s(pulse: Pulse) -> float | None:
    """Seconds since the stalest owned partition evaluated its rules (None: nothing to evaluate)."""
    evaluator = pulse.stage2.evaluator
    owned = pulse.active_partitions()
    if evaluator is None or not owned or pulse.ready_since is None:
        return None
    now_ms = time.time() * 1000
    since_ready = now_ms - pulse.ready_since * 1000
    ages = [now_ms - evaluator.last_eval[p] if p in evaluator.last_eval else since_ready for p in owned]
    return max(ages) / 1000.0


def _rules(pulse: Pulse) -> dict[str, Any]:
    lag = rule_lag_s(pulse)
    limit = 3 * max(pulse.config.rules.interval, pulse.config.ingest.flush_interval) + 10.0
    ok = lag is None or lag < limit
    return _service("rules", ok, f"rules not evaluated for {lag or 0:.0f}s (limit {limit:.0f}s)")


def _channels(pulse: Pulse) -> list[dict[str, Any]]:
    out = []
    runtime = pulse.notifications
    for channel in runtime.notifiers:
        last = runtime.last_result.get(channel)
        ok = last is None or last["outcome"] == "delivered"
        out.append(_service(f"channel:{channel}", ok, last["reason"] if last else None))
    return out


def health_body(pulse: Pulse) -> tuple[int, dict[str, Any]]:
    """Return (HTTP status, body) of GET /health in the monitoring guide's shape."""
    core = [_state(pulse), _kafka(pulse), _rules(pulse)]
    channels = _channels(pulse)
    healthy = all(s["status"] == "healthy" for s in core)
    degraded = healthy and any(s["status"] != "healthy" for s in channels)
    body = {
        "status": "degraded" if degraded else ("healthy" if healthy else "unhealthy"),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "services": core + channels,
        "version": __version__,
        "uptime": round(time.time() - pulse.started, 3),
        "worker": {
            "pid": os.getpid(),
            "host": platform.node(),
            "partitions": sorted(pulse.active_partitions()) if pulse.is_ready() else [],
        },
    }
    return (200 if healthy else 503), body


def ready_body(pulse: Pulse) -> tuple[int, dict[str, Any]]:
    """Return (HTTP status, body) of GET /ready."""
    state = _state(pulse)
    ready = state["status"] == "healthy"
    return (200 if ready else 503), {"ready": ready, "reason": state["error"]}


def consumer_lag(pulse: Pulse) -> dict[str, int]:
    """Messages not yet read per topic, over the partitions this worker owns (input and partials)."""
    return pulse.reader.lag()


def detailed_body(pulse: Pulse) -> tuple[int, dict[str, Any]]:
    """Return (HTTP status, body) of GET /health/detailed."""
    status, health = health_body(pulse)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    states = pulse.stage2.view.states() if pulse.is_ready() else {}
    active = pulse.history.active()
    by_severity: dict[str, int] = {}
    for alert in active:
        if alert.get("state") == "firing":
            by_severity[alert.get("severity", "")] = by_severity.get(alert.get("severity", ""), 0) + 1
    runtime = pulse.notifications
    body = {
        "status": health["status"],
        "application": {
            "status": health["status"],
            "version": __version__,
            "environment": pulse.config.worker.environment,
            "uptime": health["uptime"],
            "memory": {"maxRssBytes": usage.ru_maxrss * 1024},
            "cpu": {"userSeconds": usage.ru_utime, "systemSeconds": usage.ru_stime},
        },
        "services": health["services"],
        "kafka": {
            "broker": shown_url(pulse.config.broker.url),
            "partitions": sorted(pulse.active_partitions()),
            "consumerLag": consumer_lag(pulse),
            "positions": pulse.reader.positions(),
        },
        "state": {
            "ready": pulse.is_ready(),
            "ownedSeries": len(states),
            "stage1Pending": pulse.stage1.pending(),
            "tables": {
                t.name: len(t.data) for t in (pulse.cells, pulse.flushlog, pulse.alertstate, pulse.nflog)
            },
        },
        "rules": {
            "count": len(pulse.rules.rules),
            "intervalSeconds": pulse.config.rules.interval,
            "secondsSinceEvaluation": rule_lag_s(pulse),
        },
        "notifications": {
            "channels": {name: runtime.last_result.get(name) for name in runtime.notifiers},
            "queueDepth": {name: queue.qsize() for name, queue in runtime.queues.items()},
        },
        "business": {
            "firingAlerts": by_severity,
            "activeSilences": len(pulse.silences.store.active(int(time.time() * 1000))),
        },
    }
    return status, body
