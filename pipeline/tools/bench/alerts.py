"""`pulse bench` alert latency: from publishing events that cross a threshold to the notification received.

A real worker (`pulse worker`, its own process) runs on the bench's embedded broker with one route rule
(error ratio > 50% over 1 minute, no `for`), rules evaluated every second, and the webhook channel
pointing at a local HTTP receiver in this process. The notification route has `group_wait: 0s`, so the
figure is the pipeline's own delay (stage 1 flush, stage 2, the rule tick, the alerts topic, the
notifier) and not a grouping delay chosen by the operator. Each round uses a new route, so each round
is a new alert and a new notification group.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson

from pipeline.tools.broker import EmbeddedBroker
from pipeline.tools.procs import child_env, free_port, spawn, stop
from schemas.events import TOPIC_OF_TYPE

HOST = "127.0.0.1"
RULES = """
rules:
  - name: bench_route_failing
    metric: o4o_route_error_ratio
    window: 1m
    op: ">"
    threshold: 50%
    severity: high
"""
CONFIG = """
notify:
  receivers: [{name: hook, channels: [webhook]}]
  route: {receiver: hook, group_by: [alertname, route], group_wait: 0s, group_interval: 1s}
  inhibit_rules: []
"""
RULES_INTERVAL_S = 1.0
ROUND_TIMEOUT_S = 30.0
START_TIMEOUT_S = 90.0


class _Receiver(ThreadingHTTPServer):
    """Webhook receiver: keeps (arrival time, decoded body) of every POST."""

    def __init__(self) -> None:
        super().__init__((HOST, 0), _Handler)
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/hook"

    def arrived(self, route: str) -> float | None:
        """When a firing notification for `route` arrived, if it did."""
        with self.lock:
            for at, body in self.received:
                for alert in body.get("alerts", ()):
                    if alert.get("status") == "firing" and alert.get("labels", {}).get("route") == route:
                        return at
        return None


class _Handler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        at = time.time()
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.server.lock:
            self.server.received.append((at, json.loads(body or b"{}")))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


async def _publish(bootstrap: str, topic: str, route: str, count: int) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        now_ms = int(time.time() * 1000)
        for _ in range(count):
            event = {
                "ts": now_ms,
                "service": "bench",
                "method": "GET",
                "route": route,
                "status_code": 503,
                "duration_ms": 5.0,
            }
            await producer.send(topic, orjson.dumps(event))
        await producer.flush()
    finally:
        await producer.stop()


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bench worker exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            ready = httpx.get(f"http://{HOST}:{port}/ready", timeout=1).status_code == 200
            # a group's first rebalance may hand out an empty assignment before the real one
            if ready and httpx.get(f"http://{HOST}:{port}/health", timeout=1).json()["worker"]["partitions"]:
                return
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"bench worker not ready within {START_TIMEOUT_S:g}s:\n{log.read_text()[-3000:]}")


def measure(broker: EmbeddedBroker, rounds: int, partitions: int, echo: Any = print) -> list[float]:
    """Return the alert latency (seconds) of each round."""
    receiver = _Receiver()
    serving = threading.Thread(target=receiver.serve_forever, daemon=True)
    serving.start()
    prefix = f"benchalert{int(time.time())}."
    latencies: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "rules.yaml").write_text(RULES, encoding="utf-8")
        (folder / "pulse.yaml").write_text(CONFIG, encoding="utf-8")
        port = free_port()
        env = child_env(
            PULSE_BROKER_URL=broker.url,
            PULSE_EMBEDDED_BROKER="1",
            PULSE_TOPIC_PREFIX=prefix,
            PULSE_APP_ID=f"{prefix}pulse",
            PULSE_PARTITIONS=str(partitions),
            PULSE_WEB_PORT=str(port),
            PULSE_DATA_DIR=str(folder / "data"),
            PULSE_CONFIG=str(folder / "pulse.yaml"),
            PULSE_RULES=str(folder / "rules.yaml"),
            PULSE_RULES_INTERVAL=f"{RULES_INTERVAL_S}s",
            PULSE_WEBHOOK_URL=receiver.url,
            PULSE_LOG_LEVEL="warning",
        )
        log = folder / "worker.log"
        with open(log, "wb") as out:
            proc = spawn(
                [sys.executable, "-m", "pipeline.tools.cli", "worker"],
                env=env,
                stdout=out.fileno(),
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_ready(proc, port, log)
            topic = prefix + TOPIC_OF_TYPE["request"]
            for i in range(rounds):
                route = f"/bench/alert/{i}"
                sent = time.time()
                asyncio.run(_publish(broker.bootstrap, topic, route, 5))
                deadline = time.monotonic() + ROUND_TIMEOUT_S
                while (arrived := receiver.arrived(route)) is None:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError(f"no notification for {route}:\n{log.read_text()[-3000:]}")
                    time.sleep(0.01)
                latencies.append(arrived - sent)
                echo(f"  alert latency round {i + 1}/{rounds}: {latencies[-1]:.2f}s")
        finally:
            stop(proc)
            receiver.shutdown()
            receiver.server_close()
    return latencies
