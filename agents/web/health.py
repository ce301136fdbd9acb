"""GET /health, /health/detailed and /ready: the monitoring guide's shapes, about the pipeline itself.

- `/ready` (readiness): 200 once the worker has joined its group and recovered its state, and while the
  broker answers its fetches; 503 with the reason otherwise (a stalled or unreachable broker within
  `BROKER_SILENT_S`).
- `/health` (liveness and the guide's health check): 503 with the reason when the worker is not ready
  or has stopped evaluating rules. A broker that answered before and has gone silent makes it 200
  `degraded` instead, whatever else it causes (a lost assignment, no rule evaluation): restarting the
  worker does not bring the broker back, and an orchestrator would restart every worker at once.
  Notification channels are reported, and a failing channel marks the answer `degraded` without failing
  it either (a Slack outage is no reason to restart a worker).
- `/health/detailed`: the same plus consumer lag per topic, state sizes, rule freshness, channel
  results, business figures, and every worker of the assignment with its URL and partitions
  (`cluster`).

Everything is judged from state the worker keeps anyway, on each request: the time the broker last
answered a fetch of the alerts topic (every worker reads all of it, idle or busy, see
`agents.kafka.tail`), the reader's lifecycle and the evaluator's last evaluations. The hot path does
no work for it.
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

BROKER_SILENT_S = 5.0
"""Kafka is unhealthy once the broker has not answered a fetch for this long (it answers an idle fetch
every `fetch_max_wait`, 0.1 s on the embedded broker and 0.5 s by default)."""


def _service(name: str, healthy: bool, error: str | None, response_ms: float | None = None) -> dict[str, Any]:
    return {
        "service": name,
        "status": "healthy" if healthy else "unhealthy",
        "responseTime": response_ms,
        "error": None if healthy else error,
    }


def broker_silent_s(deps: WebDeps) -> float | None:
    """Seconds since the broker last answered a fetch (None: it never has)."""
    last = deps.alerts.last_fetch_ok()
    return None if last is None else max(time.monotonic() - last, 0.0)


def _kafka(deps: WebDeps) -> dict[str, Any]:
    silent = broker_silent_s(deps)
    broker = shown_url(deps.config.broker.url)
    if silent is None:
        return _service("kafka", False, f"the broker at {broker} has not answered a fetch yet")
    return _service(
        "kafka",
        silent < BROKER_SILENT_S,
        f"the broker at {broker} has not answered a fetch for {silent:.0f}s (stalled or unreachable)",
    )


def _broker_outage(kafka: dict[str, Any], deps: WebDeps) -> bool:
    """Whether a broker that answered before has gone silent (not a worker that never reached it)."""
    return kafka["status"] != "healthy" and deps.alerts.last_fetch_ok() is not None


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
    kafka = _kafka(deps)
    core = [_state(deps), kafka, _rules(deps)]
    channels = _channels(deps)
    outage = _broker_outage(kafka, deps)
    healthy = outage or all(s["status"] == "healthy" for s in core)
    degraded = outage or (healthy and any(s["status"] != "healthy" for s in channels))
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
    failing = [s for s in (_state(deps), _kafka(deps)) if s["status"] != "healthy"]
    ready = not failing
    reason = "; ".join(f"{s['service']}: {s['error']}" for s in failing) or None
    return (200 if ready else 503), {"ready": ready, "reason": reason}


def cluster_body(deps: WebDeps) -> dict[str, Any]:
    """Every worker of the current assignment, with the URL it advertises and the partitions it owns,
    as Faust's assignor handed them to this worker (no request to the others: this stays fast)."""
    members = deps.cluster.members()
    assigned = {p for m in members for p in m.partitions}
    return {
        "self": deps.cluster.self_url,
        "partitions": deps.config.topics.partitions,
        "workers": [{"url": m.url, "partitions": list(m.partitions), "self": m.is_self} for m in members],
        "unassigned": sorted(set(range(deps.config.topics.partitions)) - assigned),
    }


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
            "secondsSinceBrokerAnswered": broker_silent_s(deps),
            "error": next(s["error"] for s in health["services"] if s["service"] == "kafka"),
            "partitions": sorted(deps.ownership.active_partitions()),
            "consumerLag": deps.reader.lag(),
            "positions": deps.reader.positions(),
        },
        "cluster": cluster_body(deps),
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
