"""Deployment files agree with the code: Dockerfile, docker-compose.yml, deploy/ (Prometheus, Grafana, k8s).

There is no container engine in the test environment, so these files are checked by parsing them and
comparing every name, port, path and metric they use with what the code defines.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from agents.telemetry import PipelineMetrics
from pipeline.config.settings import ENV_VARS, WebConfig, load_config
from pipeline.durations import parse_duration
from pipeline.readout import figures as readout
from pipeline.rules import check_rules, load_rules
from pipeline.tools.simulate import Traffic

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
K8S = DEPLOY / "k8s"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))

ENV_NAMES = {var.name for var in ENV_VARS}
SECRET_NAMES = {var.name for var in ENV_VARS if var.secret}
# Read by load_config itself rather than mapped to a config key, so not in ENV_VARS.
OUTSIDE_ENV_VARS = {"PULSE_CONFIG"}
ALLOWED_PULSE_VARS = ENV_NAMES | OUTSIDE_ENV_VARS | {f"{name}_FILE" for name in SECRET_NAMES}
# Environment prefixes of the third-party images in docker-compose.yml.
THIRD_PARTY_ENV = {
    "kafka": ("KAFKA_", "CLUSTER_ID"),
    "grafana": ("GF_",),
    "mailpit": ("MP_",),
    "prometheus": (),
}
PULSE_IMAGE = "o4o-pulse:local"
PENDING = re.compile(r"\[pending-metric: ([a-zA-Z_:][a-zA-Z0-9_:]*)\]")


# --- loading ----------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return data


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def pulse_services() -> dict[str, dict[str, Any]]:
    """Compose services that run the o4o-pulse image."""
    return {name: svc for name, svc in services().items() if svc.get("image") == PULSE_IMAGE}


def workers() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in pulse_services().items() if name.startswith("worker-")}


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def k8s_docs() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                yield path, doc


def k8s(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d for _, d in k8s_docs() if d["kind"] == kind and name in (None, d.get("metadata", {}).get("name"))
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''} in deploy/k8s, found {len(found)}"
    return found[0]


def worker_container() -> dict[str, Any]:
    containers = k8s("StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text(encoding="utf-8")) for path in DASHBOARDS}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def panel_queries() -> Iterator[tuple[str, dict[str, Any], str]]:
    """(dashboard file, panel, expr) of every query target."""
    for name, dashboard in dashboards().items():
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                yield name, panel, target["expr"]


def prometheus_rules() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                yield path.name, rule


# --- the metric catalogue of the code --------------------------------------------------------------


def _family_samples(name: str, kind: str) -> set[str]:
    if kind == "counter":
        return {name if name.endswith("_total") else f"{name}_total"}
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return {name}


def exported_metrics() -> set[str]:
    """Every sample name /metrics can carry: the series catalogue and the pipeline's own metrics."""
    names: set[str] = set()
    for metric in readout.WINDOW_METRICS:
        names.add(metric.name)
    names |= {name for name, _ in readout.STATE_FAMILIES}
    names |= {name for name, _ in readout.LATENCY_METRICS.values()}
    for name, kind, _ in readout.TOTAL_FAMILIES:
        names |= _family_samples(name, kind)
    for name, kind in _pipeline_families():
        names |= _family_samples(name, kind)
    # Gauge events become o4o_<name> metrics; these are the guide's DB figures the platform sends.
    traffic = Traffic("steady", seed=1)
    for kind, event in traffic.periodic(0, 0.0):
        if kind == "gauge":
            names.add(readout.gauge_metric_name(event["name"]))
    return names


def _pipeline_families() -> list[tuple[str, str]]:
    registry = CollectorRegistry()
    PipelineMetrics(registry)
    return [(family.name, family.type) for family in registry.collect()]


PROMETHEUS_OWN = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds", "scrape_samples_scraped"}
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
    "offset", "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (approximate parser: enough for our own files)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges, including Grafana's [$__rate_interval]
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def recorded_names() -> set[str]:
    return {rule["record"] for _, rule in prometheus_rules() if "record" in rule}


def test_metric_name_parser_finds_selectors_not_functions_or_labels() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, route) (rate(http_request_duration_seconds_bucket{a="b(c)"}'
        "[$__rate_interval]))) / on () group_left sum(up) or vector(0) > bool 2"
    )
    assert metric_names(expr) == {"http_request_duration_seconds_bucket", "up"}
    assert metric_names("sum by (user_role) (rate(orders_total[5m]))") == {"orders_total"}


def test_catalogue_holds_the_seed_metrics_and_the_pipeline_metrics() -> None:
    names = exported_metrics()
    for expected in (
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "orders_total",
        "revenue_total",
        "o4o_orders_per_hour",
        "pulse_events_total",
        "pulse_alerts",
        "pulse_rule_evaluation_seconds_bucket",
        "o4o_db_connection_pool",
    ):
        assert expected in names


# --- environment variables --------------------------------------------------------------------------


def deploy_text_files() -> list[Path]:
    files = [COMPOSE_FILE, DOCKERFILE, REPO / ".dockerignore"]
    files += [
        p for p in sorted(DEPLOY.rglob("*")) if p.is_file() and p.suffix in {".yml", ".yaml", ".json", ".md"}
    ]
    return files


def test_every_pulse_variable_named_anywhere_in_the_deploy_files_exists() -> None:
    unknown: dict[str, list[str]] = {}
    for path in deploy_text_files():
        for name in set(re.findall(r"\bPULSE_[A-Z0-9_]+", path.read_text(encoding="utf-8"))):
            if name not in ALLOWED_PULSE_VARS:
                unknown.setdefault(name, []).append(str(path.relative_to(REPO)))
    assert not unknown, f"variables not in pipeline.config.settings.ENV_VARS: {unknown}"


def test_pulse_config_is_read_by_load_config(tmp_path: Path) -> None:
    config_file = tmp_path / "pulse.yaml"
    config_file.write_text("topics: {prefix: 'x.', partitions: 3}\n", encoding="utf-8")
    assert load_config({"PULSE_CONFIG": str(config_file)}).topics.partitions == 3


def test_compose_environment_uses_only_known_variables() -> None:
    for name, service in services().items():
        env = env_of(service)
        if service.get("image") == PULSE_IMAGE or "build" in service:
            assert set(env) <= ALLOWED_PULSE_VARS, f"{name}: {set(env) - ALLOWED_PULSE_VARS}"
            continue
        image = service["image"].split("/")[-1].split(":")[0]
        if name == "topic-init":  # the Kafka image with the deployment's PULSE_* values for its script
            assert set(env) <= ALLOWED_PULSE_VARS
            continue
        prefixes = THIRD_PARTY_ENV[image]
        strays = {key for key in env if not key.startswith(prefixes)}
        assert not strays, f"{name} ({image}): unexpected variables {strays}"


def test_compose_secrets_are_interpolated_never_written_in_the_file() -> None:
    for name, service in pulse_services().items():
        for key, value in env_of(service).items():
            if key in SECRET_NAMES:
                assert re.fullmatch(r"\$\{" + key + r":-\}", value), (
                    f"{name}: {key} must come from ${{{key}}}"
                )


def test_compose_workers_have_the_required_settings() -> None:
    found = workers()
    assert sorted(found) == ["worker-1", "worker-2"]
    for name, service in found.items():
        env = env_of(service)
        assert env["PULSE_BROKER_URL"] == "kafka://kafka:9092"
        assert env["PULSE_WEB_HOST"] == "0.0.0.0"
        assert int(env["PULSE_PARTITIONS"]) >= len(found)
        assert env["PULSE_SMTP_HOST"] == "mailpit"
        assert env["PULSE_SMTP_PORT"] == "1025"
        assert env["PULSE_SMTP_TLS"] == "none"
        assert env["PULSE_EMAIL_TO"] == "oncall@example.com"
        config = load_config(env | {"PULSE_RULES": str(DEPLOY / "rules.yaml")})
        assert config.channels.email.tls == "none"
        assert config.broker.bootstrap_servers() == ["kafka:9092"]
        assert not config.broker.embedded, "Tansu timings must not be forced on Kafka"
        data_mounts = [v for v in service["volumes"] if v.split(":")[1] == env["PULSE_DATA_DIR"]]
        assert len(data_mounts) == 1 and not data_mounts[0].startswith("."), f"{name}: state volume"
        assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert service["depends_on"]["topic-init"]["condition"] == "service_completed_successfully"
    volumes = [next(v for v in s["volumes"] if "/var/lib/pulse" in v) for s in found.values()]
    assert len(set(volumes)) == len(volumes), "each worker needs its own state volume"


def test_k8s_environment_uses_only_known_variables_and_secrets_come_from_secrets() -> None:
    container = worker_container()
    env_config = k8s("ConfigMap", "pulse-env")["data"]
    assert set(env_config) <= ALLOWED_PULSE_VARS, set(env_config) - ALLOWED_PULSE_VARS
    assert not set(env_config) & SECRET_NAMES, "secrets must not be in a ConfigMap"
    refs = {}
    for item in container["env"]:
        if item["name"] == "POD_IP":  # the downward API's pod IP, for PULSE_WEB_ADVERTISED_URL
            continue
        assert item["name"] in ALLOWED_PULSE_VARS, item["name"]
        if item["name"] in SECRET_NAMES:
            ref = item["valueFrom"]["secretKeyRef"]
            refs[item["name"]] = ref
            assert ref["name"] == "pulse-secrets"
        assert "value" not in item or item["name"] not in SECRET_NAMES
    assert set(refs) == SECRET_NAMES, (
        f"wire every secret of ENV_VARS through secretKeyRef in deploy/k8s/statefulset.yaml "
        f"(and secret.example.yaml); missing: {SECRET_NAMES - set(refs)}"
    )
    example_keys = set(k8s("Secret", "pulse-secrets")["stringData"])
    assert {ref["key"] for ref in refs.values()} == example_keys
    assert [f["configMapRef"]["name"] for f in container["envFrom"]] == ["pulse-env"]


# --- ports, paths, commands -------------------------------------------------------------------------


def test_dockerfile_runs_the_console_script_as_a_non_root_user() -> None:
    stage = final_stage()
    words = dict(stage)  # the last of each instruction wins, as in Docker
    assert stage[0][1].startswith("${PYTHON_IMAGE}") or stage[0][1].startswith("python:3.11-slim")
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in " ".join(f"{w} {a}" for w, a in dockerfile_instructions())
    assert json.loads(words["ENTRYPOINT"]) == ["pulse"]
    assert json.loads(words["CMD"]) == ["worker"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts["pulse"] == "pipeline.tools.cli:main"
    assert words["EXPOSE"] == str(WebConfig().port) == "6066"
    user = words["USER"].split(":")[0]
    assert user.isdigit() and int(user) > 0, "a numeric non-root UID (Kubernetes runAsNonRoot checks it)"
    env = dict(shlex.split(part)[0].split("=", 1) for part in re.findall(r"\S+=\S+", words["ENV"]))
    assert env["PULSE_WEB_HOST"] == "0.0.0.0"
    assert env["PULSE_WEB_PORT"] == words["EXPOSE"]
    assert set(env) - {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"} <= ALLOWED_PULSE_VARS
    health = words["HEALTHCHECK"]
    assert "urllib.request" in health and "/health" in health and "curl" not in health


def test_dockerfile_installs_with_the_pinned_constraints_and_copies_existing_sources() -> None:
    instructions = dockerfile_instructions()
    runs = " ".join(args for word, args in instructions if word == "RUN")
    assert "-c constraints.txt" in runs
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    for word, args in instructions:
        if word == "COPY" and not args.startswith("--from"):
            *sources, _ = args.split()
            for source in sources:
                assert (REPO / source).exists(), source
                assert source.rstrip("/") not in ignored, f"{source} is excluded by .dockerignore"
    found = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    copied = {args.split()[0] for word, args in instructions if word == "COPY"}
    assert {p.rstrip("*") for p in found["include"]} <= copied


def test_ports_agree_with_the_code_default() -> None:
    port = WebConfig().port
    for name, service in workers().items():
        env = env_of(service)
        assert int(env["PULSE_WEB_PORT"]) == port
        assert [p.split(":")[1] for p in service["ports"]] == [str(port)], name
    scrape = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["scrape_configs"]
    targets = [t for job in scrape for sc in job["static_configs"] for t in sc["targets"]]
    assert sorted(targets) == sorted(f"{name}:{port}" for name in workers())
    container = worker_container()
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert int(k8s("ConfigMap", "pulse-env")["data"]["PULSE_WEB_PORT"]) == port
    annotations = k8s("StatefulSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/scrape"] == "true"
    for _, doc in k8s_docs():
        if doc["kind"] == "Service":
            assert doc["spec"]["ports"] == [
                {"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}
            ]


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Paths the worker's web server serves, from a real (not started) worker app."""
    from agents.app import Pulse

    data = tmp_path_factory.mktemp("pulse-data")
    pulse = Pulse(load_config({"PULSE_DATA_DIR": str(data)}))
    return set(pulse.app.web.views)


# Probe paths of the deployment contract that the worker does not serve yet (reported, issue 6).
PENDING_ROUTES: set[str] = set()


def test_probe_and_scrape_paths_are_served(routes: set[str]) -> None:
    container = worker_container()
    used = {
        "startupProbe": container["startupProbe"]["httpGet"]["path"],
        "livenessProbe": container["livenessProbe"]["httpGet"]["path"],
        "readinessProbe": container["readinessProbe"]["httpGet"]["path"],
        "prometheus.io/path": k8s("StatefulSet")["spec"]["template"]["metadata"]["annotations"][
            "prometheus.io/path"
        ],
        "HEALTHCHECK": re.search(r"/[a-z/]+(?=')", dict(final_stage())["HEALTHCHECK"]).group(0),  # type: ignore[union-attr]
        "prometheus.yml": yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["scrape_configs"][0][
            "metrics_path"
        ],
    }
    assert used["livenessProbe"] == used["HEALTHCHECK"] == "/health"
    assert used["readinessProbe"] == "/ready"
    for what, path in used.items():
        assert path in routes or path in PENDING_ROUTES, f"{what}: {path} is not served ({sorted(routes)})"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"


def test_topic_init_creates_exactly_the_topics_a_worker_needs(tmp_path: Path) -> None:
    from agents.app import Pulse

    init = services()["topic-init"]
    script = init["command"][0]
    listed = re.search(r"for name in ([^;]+);", script)
    assert listed is not None
    env = env_of(init)
    created = [env["PULSE_TOPIC_PREFIX"] + name for name in listed.group(1).split()]
    assert '--partitions "$${PULSE_PARTITIONS}"' in script
    assert "--if-not-exists" in script
    for name, service in workers().items():
        worker_env = env_of(service)
        assert worker_env["PULSE_TOPIC_PREFIX"] == env["PULSE_TOPIC_PREFIX"], name
        assert worker_env["PULSE_PARTITIONS"] == env["PULSE_PARTITIONS"], name
        assert "PULSE_APP_ID" not in worker_env, (
            "internal topic names in topic-init assume the default app id"
        )
        config = load_config(worker_env | {"PULSE_DATA_DIR": str(tmp_path), "PULSE_RULES": ""})
        assert sorted(created) == sorted(Pulse(config).all_topic_names())
    kafka = env_of(services()["kafka"])
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "PLAINTEXT://kafka:9092" in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_compose_references_existing_files_and_valid_commands() -> None:
    from pipeline.tools.cli import main

    for name, service in services().items():
        if "build" in service:
            assert (REPO / service["build"] / "Dockerfile").is_file()
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: {source}"
    built = [name for name, service in services().items() if "build" in service]
    assert built, "some service builds the image"
    for name, service in pulse_services().items():
        argv = service.get("command", ["worker"])
        command = main.get_command(None, argv[0])  # type: ignore[arg-type]
        assert command is not None, f"{name}: unknown command {argv[0]}"
        command.make_context(argv[0], list(argv[1:]))  # raises on unknown options or bad choices
    sim = services()["simulator"]
    assert sim["profiles"] == ["demo"]
    args = sim["command"]
    assert args[args.index("--scenario") + 1] == "steady"
    assert args[args.index("--rate") + 1] == "200"
    assert args[args.index("--duration") + 1] == "0"
    prometheus = services()["prometheus"]
    config_mount = next(v for v in prometheus["volumes"] if v.startswith("./deploy/prometheus"))
    assert config_mount.split(":")[1] == "/etc/prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]


def test_grafana_provisioning_matches_the_compose_mounts() -> None:
    grafana = services()["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"] if v.startswith(".")}
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/dashboards.yml").read_text())["providers"]
    assert provider[0]["options"]["path"] == mounts["./deploy/grafana/dashboards"]
    home = env_of(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (GRAFANA / "dashboards" / Path(home).name).is_file()
    assert home.startswith(provider[0]["options"]["path"] + "/")
    datasource = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    [source] = datasource["datasources"]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in services()
    for name, dashboard in dashboards().items():
        for panel in panels(dashboard):
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == source["uid"], f"{name}: {panel['title']}"


# --- dashboards and rules use real metrics ----------------------------------------------------------


def test_dashboards_are_the_three_expected_with_unique_ids() -> None:
    found = dashboards()
    titles = {d["title"] for d in found.values()}
    assert titles == {
        "O4O Platform - Business Metrics",
        "O4O Platform - System Performance",
        "o4o-pulse - Pipeline",
    }
    assert len({d["uid"] for d in found.values()}) == len(found)
    for name, dashboard in found.items():
        ids = [p["id"] for p in panels(dashboard)]
        assert len(ids) == len(set(ids)), name
        for panel in panels(dashboard):
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, f"{name}: {panel['title']}"
            for target in panel.get("targets", []):
                assert target["expr"].strip() and target["refId"]


def test_every_dashboard_query_uses_exported_metrics() -> None:
    known = exported_metrics() | recorded_names() | PROMETHEUS_OWN
    seen = set()
    for name, panel, expr in panel_queries():
        used = metric_names(expr)
        assert used, f"{name}: {panel['title']}: no metric in {expr!r}"
        # A panel may wait for a metric that is not exported yet, marked "[pending-metric: NAME]".
        pending = set(PENDING.findall(panel.get("description", "")))
        assert pending <= used, f"{name}: {panel['title']} waits for {pending - used} but does not use it"
        unknown = used - known - pending
        assert not unknown, f"{name}: {panel['title']}: {unknown} not exported by o4o-pulse"
        seen |= used
    for expected in (
        "o4o_orders_per_hour",
        "revenue_total",
        "o4o_daily_revenue",
        "o4o_monthly_revenue",
        "orders_total",
        "http_request_duration_seconds_bucket",
        "o4o_response_time_seconds",
        "http_requests_total",
        "pulse_events_total",
        "pulse_events_deadlettered_total",
        "pulse_stage1_buffered_events",
        "pulse_alerts",
        "pulse_alert_transitions_total",
        "pulse_rule_evaluation_seconds_bucket",
        "pulse_probe_runs_total",
        "notifications_total",
    ):
        assert expected in seen, f"no panel shows {expected}"


def test_queries_aggregate_correctly() -> None:
    queries = [expr for _, _, expr in panel_queries()]
    queries += [rule["expr"] for _, rule in prometheus_rules()]
    for expr in queries:
        compact = " ".join(expr.split())
        for call in re.finditer(r"histogram_quantile\(([^,]+),\s*(.*)", compact):
            inner = call.group(2)
            assert re.match(r"sum by \((?:[a-z_]+, )*le(?:, [a-z_]+)*\) \(rate\(", inner), compact
        for bucket in re.finditer(r"(\w+)_bucket", compact):
            assert f"rate({bucket.group(0)}" in compact, f"{compact}: rate() the buckets"
        assert not re.search(r"\b\w+_total\s+by\s*\(", compact), f"{compact}: not PromQL"
        for counter in re.finditer(r"\b(\w+_total)\b", compact):
            if counter.group(1) in ("revenue_total",):  # a gauge, despite its name
                continue
            before = compact[: counter.start()]
            assert re.search(r"(rate|increase)\($", before), (
                f"{compact}: use rate/increase on {counter.group(1)}"
            )
    orders_by_role = [q for q in queries if "user_role" in q and "orders_total" in q]
    assert "sum by (user_role) (rate(orders_total[5m]))" in orders_by_role


def test_every_rule_expression_uses_exported_metrics() -> None:
    known = exported_metrics() | recorded_names() | PROMETHEUS_OWN
    for name, rule in prometheus_rules():
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{name}: {rule.get('record') or rule.get('alert')}: {unknown}"


def test_prometheus_loads_the_rule_files_next_to_its_config() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    matched = sorted(p for pattern in config["rule_files"] for p in PROMETHEUS.glob(pattern))
    assert matched == RULE_FILES
    assert {p.name for p in RULE_FILES} == {"alerts.yml", "recording.yml"}


def test_kubernetes_scrape_config_keeps_the_worker_pods_by_their_annotations() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus-k8s.yml").read_text(encoding="utf-8"))
    [job] = config["scrape_configs"]
    assert config["rule_files"] == yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["rule_files"]
    template = k8s("StatefulSet")["spec"]["template"]["metadata"]
    keep = {
        tuple(r["source_labels"]): re.compile(r["regex"])
        for r in job["relabel_configs"]
        if r.get("action") == "keep"
    }
    label = keep[("__meta_kubernetes_pod_label_app_kubernetes_io_name",)]
    assert label.fullmatch(template["labels"]["app.kubernetes.io/name"])
    scrape = keep[("__meta_kubernetes_pod_annotation_prometheus_io_scrape",)]
    assert scrape.fullmatch(template["annotations"]["prometheus.io/scrape"])
    sources = {tuple(r["source_labels"]) for r in job["relabel_configs"]}
    assert ("__meta_kubernetes_pod_annotation_prometheus_io_path",) in sources
    assert ("__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port") in sources


def test_prometheus_alerts_mirror_the_built_in_rules() -> None:
    alerts = {rule["alert"]: rule for _, rule in prometheus_rules() if "alert" in rule}
    for builtin in load_rules(None).rules:
        spec = builtin.to_dict()
        alert = alerts.get(spec["name"])
        assert alert is not None, f"no Prometheus alert for the built-in rule {spec['name']}"
        assert alert["labels"]["severity"] == spec["severity"]
        assert parse_duration(alert.get("for", "0s")) == parse_duration(spec["for"])
        expr = " ".join(alert["expr"].split())
        if "heartbeat" in spec:
            service = spec["heartbeat"]["service"]
            absent_s = parse_duration(spec["heartbeat"]["absent_for"])
            assert f'o4o_service_up{{service="{service}"}}) == 0' in expr
            assert (
                f'o4o_service_last_heartbeat_timestamp_seconds{{service="{service}"}}) > {absent_s:g}' in expr
            )
            assert f'absent(o4o_service_last_heartbeat_timestamp_seconds{{service="{service}"}})' in expr
            continue
        selector = spec["metric"]
        matchers = [f'window="{spec["window"]}"'] if "window" in spec else []
        if "quantile" in spec:
            matchers.insert(0, f'quantile="{spec["quantile"]:g}"')
        if matchers:
            selector += "{" + ", ".join(matchers) + "}"
        assert f"sum({selector}) {spec['op']} {spec['threshold']:g}" in expr, expr
        if "resolve_threshold" in spec:
            assert f"sum({selector}) {spec['op']} {spec['resolve_threshold']:g}" in expr
            assert f'ALERTS{{alertname="{spec["name"]}", alertstate="firing"}}' in expr


def test_pipeline_health_alerts_exist() -> None:
    alerts = {rule["alert"]: rule for _, rule in prometheus_rules() if "alert" in rule}
    assert "pulse_events_deadlettered_total" in alerts["pulse_deadletters_rising"]["expr"]
    assert 'up{job="pulse"}' in alerts["pulse_worker_down"]["expr"]
    for alert in alerts.values():
        assert alert["labels"]["severity"] in ("critical", "high", "medium", "low")
        assert alert["annotations"]["summary"]


# --- Kubernetes -------------------------------------------------------------------------------------


def test_k8s_statefulset_shape() -> None:
    sts = k8s("StatefulSet")
    spec = sts["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    headless = k8s("Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"].items() <= labels.items()
    assert k8s("Service", "pulse")["spec"]["selector"].items() <= labels.items()
    uid = int(dict(final_stage())["USER"].split(":")[0])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    assert pod["securityContext"]["fsGroup"] == uid
    container = worker_container()
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["args"] == ["worker"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    [claim] = spec["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    env = k8s("ConfigMap", "pulse-env")["data"]
    assert mounts[claim["metadata"]["name"]] == env["PULSE_DATA_DIR"]
    assert "metadata" not in sts or "namespace" not in sts["metadata"]
    for _, doc in k8s_docs():
        assert "namespace" not in doc.get("metadata", {}), "manifests are namespace-less"


def _configmap_file(path: str) -> str:
    """The ConfigMap content mounted at `path` in the worker container."""
    container = worker_container()
    volumes = {v["name"]: v for v in k8s("StatefulSet")["spec"]["template"]["spec"]["volumes"]}
    for mount in container["volumeMounts"]:
        directory = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(directory):
            source = volumes[mount["name"]]["configMap"]["name"]
            data: str = k8s("ConfigMap", source)["data"][path[len(directory) :]]
            return data
    raise AssertionError(f"nothing mounted at {path}")


def test_k8s_config_and_rules_files_are_valid(tmp_path: Path) -> None:
    env = k8s("ConfigMap", "pulse-env")["data"]
    config_file = tmp_path / "config.yaml"
    config_file.write_text(_configmap_file(env["PULSE_CONFIG"]), encoding="utf-8")
    config = load_config({"PULSE_CONFIG": str(config_file)})
    assert config.topics.partitions >= k8s("StatefulSet")["spec"]["replicas"]
    rules_text = _configmap_file(env["PULSE_RULES"])
    assert check_rules(rules_text, "pulse-rules") == []
    assert check_rules((DEPLOY / "rules.yaml").read_text(encoding="utf-8"), "deploy/rules.yaml") == []
    kustomization = k8s("Kustomization")
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource
    assert "secret.example.yaml" not in kustomization["resources"], "no Secret is applied from git"
