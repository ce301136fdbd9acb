"""Notifications end to end on loopback: a real SMTP server, Slack-webhook and SMS HTTP servers."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiosmtpd.controller import Controller

from pipeline.tools.procs import free_port
from tests.helpers import Cluster, wait_until

pytestmark = pytest.mark.integration

TOKEN = "test-api-token"


@dataclass
class Recorder:
    """An HTTP server that records every POST and answers 503 until `fail_until` (monotonic)."""

    ok_body: bytes
    ok_status: int = 200
    fail_until: float = 0.0
    delay: float = 0.0
    requests: list[tuple[float, str, dict[str, str], bytes]] = field(default_factory=list)
    refused: int = 0

    def start(self) -> tuple[ThreadingHTTPServer, str]:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if time.monotonic() < recorder.fail_until:
                    recorder.refused += 1
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                time.sleep(recorder.delay)  # a slow receiver: deliveries are in flight when a worker dies
                recorder.requests.append((time.monotonic(), self.path, dict(self.headers), body))
                self.send_response(recorder.ok_status)
                self.send_header("Content-Length", str(len(recorder.ok_body)))
                self.end_headers()
                self.wfile.write(recorder.ok_body)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_address[1]}"


class Mailbox:
    """aiosmtpd handler keeping every message."""

    def __init__(self) -> None:
        self.messages: list[tuple[float, Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((time.monotonic(), message_from_bytes(envelope.content)))
        return "250 OK"


@dataclass
class Receivers:
    slack: Recorder
    sms: Recorder
    mail: Mailbox
    env: dict[str, str]


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[Receivers]:
    slack = Recorder(b"ok")
    sms = Recorder(orjson.dumps({"sid": "SM1", "status": "queued"}), ok_status=201)
    slack_server, slack_url = slack.start()
    sms_server, sms_url = sms.start()
    mail = Mailbox()
    smtp_port = free_port()
    controller = Controller(mail, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    config = tmp_path / "pulse.yaml"
    config.write_text(
        """
notify:
  route:
    receiver: slack
    group_by: [alertname]
    group_wait: 0s
    group_interval: 1s
    routes:
      - {receiver: slack, continue: true}
      - {receiver: oncall, matchers: {severity: critical}}
  retry_initial: 0.5s
  retry_max: 4s
  retry_attempts: 30
  retry_budget: 2m
"""
    )
    env = {
        "PULSE_CONFIG": str(config),
        "PULSE_RULES_INTERVAL": "0.5s",
        "PULSE_API_TOKEN": TOKEN,
        "PULSE_SLACK_WEBHOOK_URL": f"{slack_url}/services/T000/B000/secretpath",
        "PULSE_SMTP_HOST": "127.0.0.1",
        "PULSE_SMTP_PORT": str(smtp_port),
        "PULSE_SMTP_TLS": "none",
        "PULSE_EMAIL_TO": "oncall@example.com",
        "PULSE_SMS_URL": sms_url,
        "PULSE_SMS_TOKEN": "sms-secret-token",
        "PULSE_SMS_TO": "+821000000000",
    }
    yield Receivers(slack, sms, mail, env)
    controller.stop()
    slack_server.shutdown()
    sms_server.shutdown()


def heartbeat(cluster: Cluster, status: str) -> None:
    cluster.publish_events(
        [("heartbeat", {"ts": int(time.time() * 1000), "service": "payment", "status": status})]
    )


def slack_texts(recorder: Recorder) -> list[str]:
    return [body.decode() for _, _, _, body in recorder.requests]


def sms_bodies(recorder: Recorder) -> list[str]:
    return [urllib.parse.parse_qs(body.decode())["Body"][0] for _, _, _, body in recorder.requests]


def test_a_critical_alert_reaches_slack_email_and_sms_once_and_so_does_its_resolve(
    cluster: Cluster, receivers: Receivers
) -> None:
    cluster.extra_env.update(receivers.env)
    cluster.add_worker()
    cluster.add_worker()
    heartbeat(cluster, "unhealthy")
    wait_until(
        lambda: receivers.slack.requests and receivers.mail.messages and receivers.sms.requests,
        timeout=30,
        what="the firing notifications",
    )
    heartbeat(cluster, "healthy")
    wait_until(
        lambda: len(receivers.slack.requests) >= 2 and len(receivers.mail.messages) >= 2,
        timeout=30,
        what="the resolved notifications",
    )
    wait_until(lambda: len(receivers.sms.requests) >= 2, timeout=15, what="the resolved SMS")
    time.sleep(4)  # several group intervals: nothing else may arrive
    slack = slack_texts(receivers.slack)
    assert len(slack) == 2, slack
    assert "payment_system_down" in slack[0] and "FIRING" in slack[0].upper()
    assert "RESOLVED" in slack[1].upper()
    mails = [m for _, m in receivers.mail.messages]
    assert len(mails) == 2
    assert "payment_system_down" in mails[0]["Subject"] and "FIRING" in mails[0]["Subject"].upper()
    assert "RESOLVED" in mails[1]["Subject"].upper()
    assert {part.get_content_type() for part in mails[0].walk()} >= {"text/plain", "text/html"}
    texts = sms_bodies(receivers.sms)
    assert len(texts) == 2
    auth = receivers.sms.requests[0][2]["Authorization"]
    assert base64.b64decode(auth.split()[1]).decode().endswith(":sms-secret-token")
    worker = cluster.workers[0]
    sent = {
        (dict(labels)["channel"], dict(labels)["outcome"]): value
        for (name, labels), value in cluster.summed_metrics().items()
        if name == "notifications_total"
    }
    assert sent == {("slack", "delivered"): 2.0, ("email", "delivered"): 2.0, ("sms", "delivered"): 2.0}
    assert "secretpath" not in worker.tail(400) and "sms-secret-token" not in worker.tail(400)


def test_a_slack_outage_does_not_delay_email_and_slack_catches_up(
    cluster: Cluster, receivers: Receivers
) -> None:
    cluster.extra_env.update(receivers.env)
    cluster.add_worker()
    receivers.slack.fail_until = time.monotonic() + 30
    heartbeat(cluster, "unhealthy")
    started = time.monotonic()
    wait_until(lambda: receivers.mail.messages, timeout=15, what="the email during the Slack outage")
    assert receivers.mail.messages[0][0] - started < 10
    assert not receivers.slack.requests
    wait_until(lambda: receivers.slack.requests, timeout=60, what="Slack after its recovery")
    assert receivers.slack.refused >= 2
    assert receivers.slack.requests[0][0] >= receivers.slack.fail_until
    assert len(receivers.slack.requests) == 1


def test_a_silence_mutes_an_alert_until_it_is_expired(cluster: Cluster, receivers: Receivers) -> None:
    cluster.extra_env.update(receivers.env)
    worker = cluster.add_worker()
    body = {
        "matchers": {"alertname": "payment_system_down"},
        "duration": "1h",
        "createdBy": "test",
        "comment": "drill",
    }
    denied = httpx.post(f"{worker.url}/api/v1/silences", json=body, timeout=5)
    assert denied.status_code == 401
    created = httpx.post(
        f"{worker.url}/api/v1/silences", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    )
    assert created.status_code == 201, created.text
    silence_id = created.json()["data"]["silenceID"]
    heartbeat(cluster, "unhealthy")
    wait_until(
        lambda: any(
            a["rule"] == "payment_system_down"
            for a in httpx.get(f"{worker.url}/api/v1/alerts").json()["data"]["alerts"]
        ),
        timeout=30,
        what="the alert firing",
    )
    time.sleep(3)
    assert not receivers.slack.requests and not receivers.mail.messages
    listed = httpx.get(f"{worker.url}/api/v1/silences", timeout=5).json()["data"]["silences"]
    assert [(s["id"], s["status"]) for s in listed] == [(silence_id, "active")]
    expired = httpx.delete(
        f"{worker.url}/api/v1/silences/{silence_id}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    )
    assert expired.status_code == 200
    wait_until(
        lambda: receivers.slack.requests and receivers.mail.messages,
        timeout=30,
        what="notifications after expiry",
    )


SERVICE_RULES = """
rules:
  - name: dependency_down
    heartbeat: {unhealthy: true}
    severity: high
"""


def test_sigkill_in_the_middle_of_deliveries_loses_none_and_repeats_at_most_one(
    cluster: Cluster, receivers: Receivers, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(SERVICE_RULES)
    config = tmp_path / "pulse.yaml"
    config.write_text(
        """
notify:
  route: {receiver: slack, group_by: [alertname, service], group_wait: 0s, group_interval: 1s}
"""
    )
    cluster.extra_env.update({**receivers.env, "PULSE_RULES": str(rules), "PULSE_CONFIG": str(config)})
    receivers.slack.delay = 0.4
    victim = cluster.add_worker()
    cluster.add_worker()
    services = [f"svc{i}" for i in range(16)]
    now = int(time.time() * 1000)
    cluster.publish_events(
        [("heartbeat", {"ts": now, "service": s, "status": "unhealthy"}) for s in services]
    )
    wait_until(lambda: len(receivers.slack.requests) >= 2, timeout=30, what="the first deliveries")
    victim.kill()
    victim.start()

    def delivered() -> dict[str, int]:
        counts: dict[str, int] = {}
        for text in slack_texts(receivers.slack):
            for service in set(re.findall(r"service=(svc\d+)`", text)):
                counts[service] = counts.get(service, 0) + 1
        return counts

    wait_until(lambda: set(delivered()) == set(services), timeout=90, what="a notification for every service")
    time.sleep(4)
    counts = delivered()
    assert len(receivers.slack.requests) == sum(counts.values()), "each message names exactly one service"
    repeated = {s: n for s, n in counts.items() if n > 1}
    print(
        f"\n[notify sigkill] {len(receivers.slack.requests)} messages for {len(services)} groups; "
        f"repeated {repeated}"
    )
    # one channel delivers one message at a time: at most the one in flight at the kill is repeated
    assert sum(n - 1 for n in repeated.values()) <= 1, repeated


SPIKE_RULES = """
extends: defaults
rules:
  # the built-in high_error_rate, with a 1m window and a 10s `for` so that the test takes a minute
  - name: high_error_rate
    metric: o4o_error_ratio
    window: 1m
    op: ">"
    threshold: 5%
    resolve_threshold: 4%
    for: 10s
    severity: critical
"""


@pytest.mark.timeout(240)
def test_an_error_spike_from_the_simulator_ends_in_one_message_per_channel_and_its_resolve(
    cluster: Cluster, receivers: Receivers, tmp_path: Path
) -> None:
    rules = tmp_path / "spike.yaml"
    rules.write_text(SPIKE_RULES)
    cluster.extra_env.update({**receivers.env, "PULSE_RULES": str(rules)})
    cluster.add_worker()
    cluster.add_worker()
    simulate = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.tools.cli",
            "simulate",
            "--scenario",
            "error-spike",
            "--rate",
            "200",
            "--duration",
            "30",
            "--quiet",
            "--seed",
            "7",
        ],
        env=cluster.env(),
        capture_output=True,
        timeout=90,
        check=False,
    )
    assert simulate.returncode == 0, simulate.stderr

    def about_errors(texts: list[str]) -> list[str]:
        return [t for t in texts if "high_error_rate" in t]

    wait_until(
        lambda: (
            len(about_errors(slack_texts(receivers.slack))) >= 2
            and len(about_errors(sms_bodies(receivers.sms))) >= 2
        ),
        timeout=150,
        what="the firing and resolved notifications of high_error_rate",
    )
    time.sleep(3)
    slack = about_errors(slack_texts(receivers.slack))
    assert len(slack) == 2 and "RESOLVED" not in slack[0].upper() and "RESOLVED" in slack[1].upper()
    mails = [m for _, m in receivers.mail.messages if "high_error_rate" in m["Subject"]]
    assert [("RESOLVED" in m["Subject"].upper()) for m in mails] == [False, True]
    # (when the simulator stops, its heartbeats stop too: payment_system_down may follow, rightly)
    texts = about_errors(sms_bodies(receivers.sms))
    assert len(texts) == 2 and "RESOLVED" in texts[1].upper()


def test_pulse_silence_and_pulse_alerts_commands(cluster: Cluster) -> None:
    cluster.extra_env["PULSE_API_TOKEN"] = TOKEN
    worker = cluster.add_worker()

    def pulse(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline.tools.cli", *args, "--url", worker.url],
            env=cluster.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    added = pulse(
        "silence", "add", "alertname=high_error_rate", "route=~/api/pay.*", "--comment", "PG maintenance"
    )
    assert added.returncode == 0, added.stderr
    silence_id = added.stdout.strip()
    listed = pulse("silence", "list")
    assert silence_id in listed.stdout and "active" in listed.stdout and "PG maintenance" in listed.stdout
    api = httpx.get(f"{worker.url}/api/v1/silences/{silence_id}", timeout=5).json()["data"]
    assert api["matchers"] == {"alertname": "high_error_rate", "route": "=~/api/pay.*"}
    assert pulse("silence", "expire", silence_id).returncode == 0
    assert "expired" in pulse("silence", "list").stdout
    bad = pulse("silence", "add", "nonsense", "--comment", "x")
    assert bad.returncode != 0 and "LABEL=VALUE" in bad.stderr
    heartbeat(cluster, "unhealthy")
    wait_until(
        lambda: "firing" in pulse("alerts", "--history", "--rule", "payment_system_down").stdout,
        timeout=30,
        what="`pulse alerts --history` showing the firing change",
    )
    assert "payment_system_down" in pulse("alerts").stdout
