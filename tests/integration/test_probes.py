"""Active probes: HTTP and TCP checks on loopback become heartbeats, and heartbeat rules see them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from pipeline.tools.procs import free_port
from tests.support.cluster import Cluster
from tests.support.metrics import by_label, summed
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/ok" else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_probes_feed_heartbeats_and_fire_heartbeat_rules(cluster: Cluster, http_server: str) -> None:
    closed_port = free_port()
    cluster.use_config(
        f"""
probes:
  - {{name: storage, type: http, url: "{http_server}/ok", interval: 1s, timeout: 1s}}
  - {{name: payment-api, type: http, url: "{http_server}/broken", interval: 1s, timeout: 1s}}
  - {{name: database, type: tcp, host: 127.0.0.1, port: {closed_port}, interval: 1s, timeout: 1s}}
"""
    )
    cluster.use_rules(
        """
rules:
  - name: dependency_down
    heartbeat: {unhealthy: true}
    severity: critical
"""
    )
    cluster.extra_env["PULSE_RULES_INTERVAL"] = "0.5s"
    workers = cluster.add_workers(2)

    def health() -> dict[str, str]:
        out = {}
        for worker in workers:
            for series in worker.series()["series"]:
                if series["kind"] == "health" and "latest" in series:
                    out[series["labels"]["service"]] = series["latest"]["status"]
        return out

    seen = wait_until(health, 30, "three probed services", until=lambda found: len(found) == 3)
    assert seen == {"storage": "healthy", "payment-api": "unhealthy", "database": "unhealthy"}

    def down() -> set[str]:
        reply = httpx.get(f"{workers[0].url}/api/v1/alerts", timeout=5).json()
        return {a["labels"]["service"] for a in reply["data"]["alerts"] if a["state"] == "firing"}

    wait_until(down, 30, "alerts (services down)", until={"payment-api", "database"}.__eq__)
    runs = {
        f"{probe}:{outcome}": value
        for (probe, outcome), value in by_label(
            summed(w.metrics() for w in workers), "pulse_probe_runs_total", "probe", "outcome"
        ).items()
    }
    assert runs.get("storage:up", 0) >= 1 and runs.get("database:down", 0) >= 1
    assert "storage:down" not in runs and "database:up" not in runs
