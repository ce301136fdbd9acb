"""Health, readiness and structured logs of a real worker."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
import pytest

from tests.support.cluster import Cluster
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration


def test_ready_health_and_detailed_health_report_the_real_dependencies(cluster: Cluster) -> None:
    cluster.use_config(
        """
notify:
  route: {receiver: integrations, group_wait: 0s, group_interval: 1s}
  retry_initial: 0.2s
  retry_max: 0.5s
  retry_attempts: 3
"""
    )
    cluster.extra_env.update(
        {
            "PULSE_LOG_FORMAT": "json",
            "PULSE_ENVIRONMENT": "staging",
            "PULSE_RULES_INTERVAL": "0.5s",
            # a channel that cannot deliver: reported, but no reason to fail liveness
            "PULSE_WEBHOOK_URL": "http://127.0.0.1:9/hook",
        }
    )
    worker = cluster.add_worker()
    ready = httpx.get(f"{worker.url}/ready", timeout=5)
    assert ready.status_code == 200 and ready.json()["ready"] is True
    health = httpx.get(f"{worker.url}/health", timeout=5).json()
    assert {s["service"] for s in health["services"]} == {"state", "kafka", "rules", "channel:webhook"}
    assert all(s["status"] == "healthy" for s in health["services"] if s["service"] != "channel:webhook")
    now = int(time.time() * 1000)
    cluster.publish_events([("heartbeat", {"ts": now, "service": "payment", "status": "unhealthy"})])
    cluster.publish_events(
        [
            (
                "request",
                {
                    "ts": now,
                    "service": "api",
                    "method": "GET",
                    "route": "/x",
                    "status_code": 200,
                    "duration_ms": 1,
                },
            )
        ]
    )

    def health() -> tuple[int, dict[str, Any]]:
        reply = httpx.get(f"{worker.url}/health", timeout=5)
        return reply.status_code, reply.json()

    def webhook_failed(seen: tuple[int, dict[str, Any]]) -> bool:
        status, body = seen
        hook = next(s for s in body["services"] if s["service"] == "channel:webhook")
        return hook["status"] == "unhealthy" and status == 200

    # connection refused is retried (3 attempts here) before it counts as failed
    _, body = wait_until(
        health,
        60,
        "the webhook channel reported as failing ((status, /health))",
        until=webhook_failed,
        interval=0.5,
    )
    assert body["status"] == "degraded"
    detailed = httpx.get(f"{worker.url}/health/detailed", timeout=5).json()
    assert detailed["application"]["environment"] == "staging"
    assert detailed["kafka"]["consumerLag"].get(cluster.topic("request"), 0) == 0
    assert detailed["state"]["ready"] is True and detailed["state"]["ownedSeries"] > 0
    assert detailed["rules"]["secondsSinceEvaluation"] < 10
    assert detailed["notifications"]["channels"]["webhook"]["outcome"] == "failed"
    assert detailed["business"]["firingAlerts"] == {"critical": 1}

    def failures() -> list[dict[str, Any]]:
        reply = httpx.get(f"{worker.url}/api/v1/alerts/history", timeout=5)
        return list(reply.json()["data"]["notification_failures"])

    # The channel's health is the worker's own; the history reads the failure back from its Kafka topic.
    failed = wait_until(failures, 30, "the webhook failure in /api/v1/alerts/history", interval=0.2)
    assert failed[0]["channel"] == "webhook" and failed[0]["rules"] == ["payment_system_down"]
    assert "127.0.0.1:9/hook" not in orjson.dumps(failed).decode()
    lines = [line for line in worker.tail(2000).splitlines() if line.startswith("{")]
    parsed = [orjson.loads(line) for line in lines]
    assert parsed and all(p["service"] == "o4o-pulse" and p["environment"] == "staging" for p in parsed)
    assert any(p["level"] == "info" and "alert payment_system_down" in p["message"] for p in parsed)
