"""A stalled broker (SIGSTOP for 20 s) and a broker that appears after the worker: issue 13, point 3.

The broker of this module is its own (an `EmbeddedBroker`, not the session's): it is stopped with
SIGSTOP while events flow and an alert is due, and the other tests must not share the stall.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from pipeline.tools.broker import EmbeddedBroker
from pipeline.tools.procs import free_port
from tests.integration.chaos_support import alert_violations, repeated_transitions, summarize_alerts
from tests.integration.test_exactness import check_totals, owned_series
from tests.support.cluster import Cluster, Worker
from tests.support.groundtruth import make_events
from tests.support.kafka import read_to_end
from tests.support.needs import embedded_broker
from tests.support.servers import Request, WebhookServer
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

STALL_S = 20.0
"""How long the broker stays stopped (the issue's figure)."""
DETECT_S = 10.0
"""Within this long of the stall, /ready must answer 503; within this long of the resume, 200 again."""
CHUNK = 500
PACE_S = 0.25

RULES = """
rules:
  - name: stalled_dependency
    heartbeat: {service: stall-probe, unhealthy: true}
    for: 3s
    severity: critical
"""

CONFIG = """
notify:
  route: {receiver: integrations, group_wait: 0s, group_interval: 1s}
  retry_initial: 0.2s
  retry_max: 1s
"""


@pytest.fixture(scope="module")
def own_broker() -> Iterator[EmbeddedBroker]:
    """A broker for this module only; resumed (SIGCONT) and stopped whatever happens."""
    with embedded_broker() as embedded:
        try:
            yield embedded
        finally:
            if embedded.proc is not None and embedded.proc.poll() is None:
                os.kill(embedded.proc.pid, signal.SIGCONT)


class Publisher(threading.Thread):
    """Publish chunks of `events` every PACE_S until told to stop; `published` is what the broker acked.

    One producer for the whole run: during the stall its sends wait for the broker (they are acked after
    the resume), so the events keep coming before, during and after it.
    """

    def __init__(self, cluster: Cluster, events: list[tuple[str, dict[str, Any]]]) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.events = events
        self.published = 0
        self.sent = 0
        """Events handed to the producer (acked or waiting for the broker)."""
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by the test
            self.error = exc

    async def _main(self) -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(
            bootstrap_servers=self.cluster.bootstrap, linger_ms=5, acks="all", request_timeout_ms=60_000
        )
        await producer.start()
        try:
            while not self.stopping.is_set() and self.published < len(self.events):
                chunk = self.events[self.published : self.published + CHUNK]
                acks = []
                for kind, event in chunk:
                    acks.append(await producer.send(self.cluster.topic(kind), orjson.dumps(event)))
                    self.sent += 1
                await asyncio.gather(*acks)
                self.published += len(chunk)
                await asyncio.sleep(PACE_S)
        finally:
            await producer.stop()


@dataclass
class Probe:
    """What the worker's health endpoints answered at one moment (seconds since the stall began)."""

    at: float
    ready: int | str
    health: int | str
    status: str
    kafka_error: str | None = None


@dataclass
class Probes:
    worker: Worker
    stalled_at: float
    seen: list[Probe] = field(default_factory=list)

    def poll(self, detailed: bool = False) -> Probe:
        at = time.monotonic() - self.stalled_at
        try:
            ready: int | str = httpx.get(f"{self.worker.url}/ready", timeout=2).status_code
        except httpx.HTTPError as exc:
            ready = repr(exc)
        try:
            reply = httpx.get(f"{self.worker.url}/health", timeout=2)
            health: int | str = reply.status_code
            status = reply.json()["status"]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            health, status = repr(exc), "?"
        probe = Probe(round(at, 2), ready, health, status)
        if detailed:
            body = self.worker.get("/health/detailed")
            kafka = next(s for s in body["services"] if s["service"] == "kafka")
            probe.kafka_error = kafka["error"] if kafka["status"] != "healthy" else None
        self.seen.append(probe)
        return probe

    def report(self) -> str:
        return "\n".join(f"  {p}" for p in self.seen)


class TimedWebhook(WebhookServer):
    """A webhook receiver that notes when (monotonic) each request arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[tuple[float, Request]] = []

    def handle(self, request: Request) -> web.Response:
        self.arrivals.append((time.monotonic(), request))
        return super().handle(request)


def webhook_alerts(server: TimedWebhook) -> list[tuple[float, str, str]]:
    """(arrival, rule, status) of every alert the webhook received."""
    out = []
    for arrived, request in list(server.arrivals):
        for alert in request.json().get("alerts", []):
            out.append((arrived, alert["labels"].get("alertname", ""), alert["status"]))
    return out


def test_a_broker_stalled_for_20s_loses_nothing_and_fires_once(
    own_broker: EmbeddedBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = Cluster(own_broker.url, tmp_path, partitions=2)
    cluster.use_rules(RULES)
    cluster.use_config(CONFIG)
    webhook = TimedWebhook().start()
    cluster.extra_env.update({"PULSE_RULES_INTERVAL": "0.5s", "PULSE_WEBHOOK_URL": f"{webhook.url}/hook"})
    publisher: Publisher | None = None
    assert own_broker.proc is not None
    broker_pid = own_broker.proc.pid
    try:
        worker = cluster.add_worker()
        now = int(time.time() * 1000)
        events = make_events(60_000, 8_000, 2_000, seed=13, now_ms=now)
        publisher = Publisher(cluster, events)
        publisher.start()
        # The rule's condition becomes true just before the stall; it is due (for: 3s) in the gap.
        cluster.publish_events([("heartbeat", {"ts": now, "service": "stall-probe", "status": "unhealthy"})])
        wait_until(
            lambda: {a["rule"]: a["state"] for a in worker.get("/api/v1/alerts")["data"]["alerts"]},
            15,
            "the rule pending before the stall (state of each active rule)",
            until=lambda states: states.get("stalled_dependency") == "pending",
            interval=0.1,
            context=lambda: worker.tail(40),
        )
        wait_until(
            lambda: publisher.published if publisher.error is None else -1,
            15,
            "events flowing before the stall (events acked)",
            until=lambda n: n >= 3 * CHUNK or n < 0,
            interval=0.1,
        )
        before = publisher.published

        os.kill(broker_pid, signal.SIGSTOP)
        probes = Probes(worker, time.monotonic())
        while time.monotonic() - probes.stalled_at < STALL_S:
            probes.poll(detailed=True)
            time.sleep(0.25)
        waiting = publisher.sent - publisher.published  # sent, waiting for the stalled broker
        os.kill(broker_pid, signal.SIGCONT)
        resumed = time.monotonic()
        notified_before_resume = [a for a in webhook_alerts(webhook) if a[1] == "stalled_dependency"]

        def recovered() -> Probe:
            return probes.poll()

        wait_until(
            recovered,
            DETECT_S + 5,
            "/ready 200 and /health 200 healthy after the resume (the last probe)",
            until=lambda p: p.ready == 200 and p.health == 200 and p.status == "healthy",
            interval=0.25,
            context=lambda: f"probes:\n{probes.report()}\nworker log:\n{worker.tail(40)}",
        )
        back_after = time.monotonic() - resumed
        context = f"probes (s since the stall):\n{probes.report()}\nworker log:\n{worker.tail(60)}"
        assert worker.alive(), f"the worker exited during the stall\n{context}"
        assert waiting > 0, f"no event waited for the stalled broker (publisher error: {publisher.error!r})"

        # Within 10 s of the stall, /ready says 503 and /health/detailed names Kafka; /health stays 200.
        stall = [p for p in probes.seen if p.at < STALL_S]
        first_503 = next((p.at for p in stall if p.ready == 503), None)
        assert first_503 is not None and first_503 <= DETECT_S, f"/ready never 503 in time\n{context}"
        assert all(p.ready == 503 for p in stall if p.at >= first_503), f"/ready flapped\n{context}"
        named = [p for p in stall if p.kafka_error and "has not answered a fetch" in p.kafka_error]
        assert named and named[0].at <= DETECT_S, f"/health/detailed did not name Kafka\n{context}"
        assert all(p.health == 200 for p in probes.seen), f"liveness failed\n{context}"
        assert all(p.status == "degraded" for p in stall if p.at >= first_503), f"not degraded\n{context}"
        assert back_after <= DETECT_S, f"recovered {back_after:.1f}s after the resume\n{context}"

        # Events published before, during and after the stall: each counted exactly once.
        wait_until(
            lambda: publisher.published if publisher.error is None else -1,
            20,
            "events flowing after the resume (events acked)",
            until=lambda n: n >= before + waiting + 4 * CHUNK or n < 0,
            interval=0.1,
        )
        publisher.stopping.set()
        publisher.join(30)
        assert publisher.error is None, f"publishing failed: {publisher.error!r}"
        published = events[: publisher.published]
        cluster.wait_quiet(timeout=30)
        check_totals(owned_series(cluster, int(time.time() * 1000) + 1000), published)

        # The alert due in the gap fired once, and its notification went out once, after the resume.
        _, records = read_to_end(cluster.bootstrap, [cluster.alerts_topic])
        violations, by_fp = alert_violations(records)
        violations += repeated_transitions(by_fp)
        assert not violations, f"{violations}\nalerts: {summarize_alerts(by_fp)}"
        fired = [a for alerts in by_fp.values() for a in alerts if a["state"] == "firing"]
        assert [a["rule"] for a in fired] == ["stalled_dependency"], summarize_alerts(by_fp)
        got = wait_until(
            lambda: [a for a in webhook_alerts(webhook) if a[1] == "stalled_dependency"],
            10,
            "the firing notification at the webhook (alerts received)",
            interval=0.2,
        )
        assert notified_before_resume == [], f"notified during the stall: {notified_before_resume}"
        assert [status for _, _, status in got] == ["firing"], got
        with capsys.disabled():
            print(
                f"\n[broker stall] /ready 503 after {first_503:.1f}s of the stall, back "
                f"{back_after:.1f}s after the resume; events {len(published)} "
                f"({before} acked before the stall, {waiting} waiting for the broker at its end); "
                f"notification {got[0][0] - resumed:+.1f}s after the resume"
            )
    finally:
        os.kill(broker_pid, signal.SIGCONT)
        if publisher is not None:
            publisher.stopping.set()
        cluster.stop()
        webhook.stop()


ATTEMPT = re.compile(r"cannot reach the Kafka broker at \S+ \(attempt (\d+): .*\); retrying in ([\d.]+)s")


def test_a_worker_started_before_its_broker_retries_and_becomes_ready(tmp_path: Path) -> None:
    port = free_port()
    late = EmbeddedBroker(port)
    cluster = Cluster(late.url, tmp_path, partitions=2)
    try:
        worker = cluster.add_worker(wait=False)
        lines = wait_until(
            lambda: ATTEMPT.findall(worker.log_text()),
            15,
            "3 failed attempts to reach the absent broker in the worker's log (attempts seen)",
            until=lambda found: len(found) >= 3,
            interval=0.2,
            alive=worker.alive,
            context=lambda: worker.tail(30),
        )
        time.sleep(max(0.0, 5.0 - 0.5 - 1.0))  # the broker appears about 5 s after the worker
        late.start()
        appeared = time.monotonic()
        worker.wait_healthy(30)
        ready = httpx.get(f"{worker.url}/ready", timeout=5)
        assert ready.status_code == 200, ready.text
        attempts = ATTEMPT.findall(worker.log_text())
        numbers = [int(n) for n, _ in attempts]
        pauses = [float(p) for _, p in attempts]
        assert numbers == list(range(1, len(numbers) + 1)), attempts
        assert pauses == sorted(pauses) and pauses[-1] > pauses[0], f"no backoff: {pauses}"
        assert "reached the Kafka broker" in worker.log_text()
        print(f"{len(attempts)} attempts ({lines[:3]}...), ready {time.monotonic() - appeared:.1f}s after")
    finally:
        cluster.stop()
        late.stop()
