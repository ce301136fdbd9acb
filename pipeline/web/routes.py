"""HTTP endpoints of a worker, served by Faust's web server on PULSE_WEB_PORT."""

from __future__ import annotations

import os
import platform
import time
from typing import TYPE_CHECKING, Any

from faust.web import Request, Response, View

from pipeline.readout import all_series_values
from pipeline.web import metrics

if TYPE_CHECKING:
    from pipeline.app import Pulse

VERSION = "0.1.0"


def _now_ms(request: Request) -> int:
    at = request.query.get("at")
    if at:
        return int(float(at))
    return int(time.time() * 1000)


def health_body(pulse: Pulse) -> tuple[int, dict[str, Any]]:
    """Return (HTTP status, body) of GET /health in the monitoring guide's shape."""
    ready = pulse.is_ready()
    consuming = ready and pulse.app.consumer is not None
    services = [
        {
            "service": "kafka",
            "status": "healthy" if consuming else "unhealthy",
            "responseTime": None,
            "error": None if consuming else "not yet joined the consumer group / recovering",
        }
    ]
    status = "healthy" if consuming else "unhealthy"
    body = {
        "status": status,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "services": services,
        "version": VERSION,
        "uptime": round(time.time() - pulse.started, 3),
        "worker": {
            "pid": os.getpid(),
            "host": platform.node(),
            "partitions": sorted(pulse.active_partitions()) if ready else [],
        },
    }
    return (200 if consuming else 503), body


def register(pulse: Pulse) -> None:
    """Register every view on the pulse app."""
    app = pulse.app
    metrics.register_collector(pulse)

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            status, body = health_body(pulse)
            return self.json(body, status=status)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(metrics.render(pulse), content_type=metrics.CONTENT_TYPE)

    @app.page("/api/v1/series")
    class Series(View):
        async def get(self, request: Request) -> Response:
            now_ms = _now_ms(request)
            states = pulse.stage2.view.states()
            kind = request.query.get("kind")
            series = [
                {"key": key, **values}
                for key, values in all_series_values(states, now_ms, pulse.config)
                if kind is None or values["kind"] == kind
            ]
            return self.json(
                {
                    "at": now_ms,
                    "partitions": sorted(pulse.active_partitions()),
                    "series": series,
                }
            )
