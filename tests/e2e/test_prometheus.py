"""The real Prometheus against the deploy/ files: promtool checks, rule unit tests, and every dashboard
query and recording rule evaluated by a `prometheus` process scraping `pulse up --demo` on loopback.

Needs the Debian package `prometheus` (it ships `prometheus` and `promtool`); skipped without it, failed
under PULSE_REQUIRE_E2E=1.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from pipeline.tools.procs import free_port
from tests.support.kafka import publish
from tests.support.needs import need_binary, need_broker
from tests.support.procs import HOST, REPO, Process, pulse_process
from tests.support.waits import wait_until
from tests.unit.test_deploy_files import PENDING, exported_metrics, metric_names

pytestmark = pytest.mark.e2e

PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
DASHBOARDS = sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json"))
# Grafana's variables, as the test substitutes them (scrapes are 1 s apart here, not 15 s).
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "5s", "$__range": "5m"}
DATA_WITHIN = 120.0


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = need_binary("promtool", "prometheus")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, cwd=REPO)


# --- static checks ----------------------------------------------------------------------------------


def test_promtool_accepts_the_compose_config_and_its_rules() -> None:
    result = promtool("check", "config", "deploy/prometheus/prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in result.stdout + result.stderr


def test_promtool_accepts_every_rule_file() -> None:
    result = promtool("check", "rules", *(str(p.relative_to(REPO)) for p in RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout + result.stderr
    assert out.count("SUCCESS") == len(RULE_FILES), out


def test_promtool_unit_tests_of_the_alerting_rules_pass() -> None:
    result = promtool("test", "rules", "deploy/prometheus/tests/alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_accepts_the_kubernetes_scrape_config(tmp_path: Path) -> None:
    """prometheus-k8s.yml, with pod discovery swapped for a static target when this promtool lacks it
    (Debian builds Prometheus without Kubernetes discovery): the relabelling is checked either way."""
    original = promtool("check", "config", "deploy/prometheus/prometheus-k8s.yml")
    if "field kubernetes_sd_configs not found" not in original.stdout + original.stderr:
        assert original.returncode == 0, original.stdout + original.stderr
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus-k8s.yml").read_text(encoding="utf-8"))
    for job in config["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
        job["static_configs"] = [{"targets": [f"{HOST}:6066"]}]
    config["rule_files"] = [str(path) for path in RULE_FILES]
    variant = tmp_path / "prometheus-k8s.yml"
    variant.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = promtool("check", "config", str(variant))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in result.stdout + result.stderr


# --- live: pulse up --demo + prometheus -------------------------------------------------------------


class _Sink(BaseHTTPRequestHandler):
    """A webhook receiver that accepts everything (notifications must be delivered somewhere)."""

    received: list[bytes] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.received.append(self.rfile.read(length))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    server = ThreadingHTTPServer((HOST, 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{HOST}:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


@pytest.fixture
def procs() -> Iterator[list[Process]]:
    """Processes started in sessions of their own; each stopped, with what is left of its tree, after."""
    started: list[Process] = []
    yield started
    for proc in reversed(started):
        proc.stop(15)


def tails(*started: Process) -> str:
    return "\n".join(f"--- {p.name} ---\n{p.tail(30)}" for p in started)


E2E_RULES = """
extends: defaults
rules:
  # Fires as soon as there is traffic: gives the alert and notification panels something to show.
  - name: e2e_traffic_present
    metric: o4o_requests_per_second
    window: 1m
    op: ">"
    threshold: 0
    severity: critical
    annotations:
      summary: "traffic: {{ value }} requests/s"
"""


def start_pulse(procs: list[Process], tmp: Path, webhook: str) -> tuple[Process, int, str]:
    """`pulse up --demo` with a probe, an always-firing rule and a webhook; return (proc, port, broker)."""
    need_broker()
    port = free_port(HOST)
    config = {
        "probes": [
            {
                "name": "e2e-self",
                "type": "http",
                "url": f"http://{HOST}:{port}/health",
                "interval": "2s",
                "timeout": "1s",
            }
        ]
    }
    (tmp / "pulse.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (tmp / "rules.yaml").write_text(E2E_RULES, encoding="utf-8")
    pulse = pulse_process(
        tmp,
        "up",
        "--demo",
        port=port,
        PULSE_CONFIG=str(tmp / "pulse.yaml"),
        PULSE_RULES=str(tmp / "rules.yaml"),
        PULSE_RULES_INTERVAL="1s",
        PULSE_WEBHOOK_URL=webhook,
    )
    procs.append(pulse.start())
    pulse.wait_healthy(90)
    found = re.search(r"broker\s+kafka://(\S+)", pulse.log_text())
    assert found, pulse.tail()
    return pulse, port, found.group(1)


def _publish_odd_events(bootstrap: str) -> None:
    """One message that is not JSON (dead letter) and one order two hours old (late event)."""
    late = {
        "order_id": "e2e-late",
        "status": "created",
        "amount": 1000,
        "currency": "KRW",
        "user_id": "u-e2e",
        "user_role": "customer",
        "payment_method": "card",
        "item_count": 1,
        "ts": int(time.time() * 1000) - 2 * 3600 * 1000,
    }
    publish(bootstrap, [("o4o.events.orders", b"{not json"), ("o4o.events.orders", orjson.dumps(late))])


def start_prometheus(procs: list[Process], tmp: Path, target_port: int) -> tuple[Process, str]:
    """The real prometheus, scraping the worker every second and evaluating deploy/prometheus/rules."""
    binary = need_binary("prometheus", "prometheus")
    deployed = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    [job] = deployed["scrape_configs"]
    job["static_configs"] = [{"targets": [f"{HOST}:{target_port}"]}]
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in RULE_FILES],
        "scrape_configs": [job],
    }
    config_file = tmp / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port(HOST)
    argv = [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={tmp / 'tsdb'}",
        f"--web.listen-address={HOST}:{port}",
        "--log.level=warn",
    ]
    prometheus = Process(argv, tmp / "prometheus.log", cwd=tmp, session=True, port=port)
    procs.append(prometheus.start())
    prometheus.wait_ready(30)
    return prometheus, prometheus.url


def dashboard_queries() -> list[tuple[str, str, str, set[str]]]:
    """(dashboard, panel title, expr with Grafana variables substituted, metrics it waits for)."""
    out = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for panel in dashboard["panels"]:
            pending = set(PENDING.findall(panel.get("description", "")))
            for target in panel.get("targets", []):
                expr = target["expr"]
                for variable, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(variable, value)
                assert "$" not in expr, f"unsubstituted Grafana variable in {expr}"
                out.append((path.name, panel["title"], expr, pending))
    return out


def query(url: str, expr: str) -> list[Any]:
    reply = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    body = reply.json()
    assert reply.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
    result: list[Any] = body["data"]["result"]
    return result


@pytest.mark.timeout(240)
def test_every_dashboard_query_and_recording_rule_returns_data(
    tmp_path: Path, procs: list[Process], webhook: str
) -> None:
    need_binary("prometheus", "prometheus")
    catalogue = exported_metrics()
    queries: dict[str, str] = {}
    skipped = []
    for dashboard, title, expr, pending in dashboard_queries():
        waiting = {m for m in pending if m not in catalogue and m in metric_names(expr)}
        if waiting:  # a panel for a metric that o4o-pulse does not export yet
            skipped.append(f"{dashboard}: {title}: waits for {', '.join(sorted(waiting))}")
            continue
        queries[expr] = f"{dashboard}: {title}"
    records = [rule["record"] for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"]
               for rule in g["rules"] if "record" in rule]  # fmt: skip
    for record in records:
        queries[record] = f"recording rule {record}"

    pulse, port, bootstrap = start_pulse(procs, tmp_path, webhook)
    _publish_odd_events(bootstrap)
    prometheus, url = start_prometheus(procs, tmp_path, port)

    missing = dict(queries)

    def returning_nothing() -> list[str]:
        for expr in list(missing):
            if query(url, expr):
                del missing[expr]
        return [f"{where}: {expr}" for expr, where in missing.items()]

    wait_until(
        returning_nothing,
        DATA_WITHIN,
        f"each of the {len(queries)} queries to return data (the queries returning nothing)",
        until=lambda left: not left,
        interval=2,
        alive=lambda: pulse.alive() and prometheus.alive(),
        context=lambda: tails(pulse, prometheus),
    )

    # Every rule, recording and alerting, evaluates without error against the real series.
    groups = httpx.get(f"{url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == sum(
        len(g["rules"]) for p in RULE_FILES for g in yaml.safe_load(p.read_text())["groups"]
    )
    broken = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not broken, broken
    # The target is up, and the built-in rule engine's own view agrees that traffic flows.
    [target] = httpx.get(f"{url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    assert target["health"] == "up", target
    assert float(query(url, "sum(rate(pulse_events_total[1m]))")[0]["value"][1]) > 0
    print(f"{len(queries)} queries returned data; skipped (metric not exported yet): {skipped or 'none'}")
