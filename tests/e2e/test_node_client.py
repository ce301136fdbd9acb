"""The Node.js client (clients/node, @o4o/pulse-client) against the real thing.

`npm ci` (when node_modules is missing or older than the lock file) and `tsc` build it; its node:test
unit tests run; then a small Express service wired as the monitoring guide wires the platform's
services (clients/node/e2e/service.ts) sends through the real kafkajs to the embedded broker, and one
real `pulse worker` counts: every request the test served, every order change, every Winston error
line and the heartbeats, exactly; the malformed events are dead-lettered as Python input is; SIGTERM
sends what the Emitter still held. Finally every example document of the schema tests goes through
the TypeScript encoder and the worker's decoder and validator, which agree with the validator on the
original document.

Needs `node` and `npm` (Debian packages nodejs, npm) and the npm registry (or npm's cache) for
`npm ci`; skipped without node, failed under PULSE_REQUIRE_E2E=1.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import random
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ingest.decode import decode
from pipeline.tools.broker import EmbeddedBroker
from schemas.events import EVENT_TYPES, NO_TS, Rejection, validate
from tests.support.cluster import Cluster, Worker
from tests.support.groundtruth import SEED_BUCKETS_MS, truth
from tests.support.metrics import Samples, by_label
from tests.support.needs import need_binary
from tests.support.procs import HOST, REPO, Process
from tests.support.waits import wait_until
from tests.unit import test_schemas as schema_tests

pytestmark = pytest.mark.e2e

NODE_DIR = REPO / "clients" / "node"
SERVICE = "shop-api"
SERVED = 1_000
LINGER_MS = 60_000  # longer than the test: what is not in a full envelope is sent only by SIGTERM's flush
NOW_MS = 1_767_225_600_000  # the `ts` the encoder fills in (2026-01-01T00:00:00Z)


def npm(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need_binary("npm", "npm"), *args],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def node() -> str:
    """`node`, with clients/node installed (npm ci when needed) and built (tsc)."""
    binary = need_binary("node", "nodejs")
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        result = npm("ci", "--no-audit", "--no-fund", "--prefer-offline")
        assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
    result = npm("run", "build", timeout=120)
    assert result.returncode == 0, f"npm run build (tsc) failed:\n{result.stdout}\n{result.stderr}"
    return binary


@pytest.mark.usefixtures("cluster")  # the worker starts up while npm installs, builds and tests
def test_node_unit_tests_pass(node: str) -> None:
    """`npm test`: the node:test suites (batching, limits, drops, route templates, Winston, orders,
    heartbeats, signals, the generated types against schemas/json)."""
    result = npm("test", timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    assert re.search(r"^# fail 0$", out, re.M), out[-3000:]
    passed = re.search(r"^# pass (\d+)$", out, re.M)
    assert passed is not None and int(passed.group(1)) >= 30, out[-3000:]


# --- the service, the broker and one worker -----------------------------------------------------------


@dataclass
class Run:
    """What the test served, and what the worker and the broker hold afterwards."""

    requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    orders: Counter[tuple[str, str]] = field(default_factory=Counter)
    revenue_micro: int = 0
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    stats: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    stop_seconds: float = 0.0
    metrics: Samples = field(default_factory=dict)
    request_events: list[dict[str, Any]] = field(default_factory=list)
    dead: list[Any] = field(default_factory=list)
    log: str = ""


ROLES = ("customer", "business", "affiliate")
ORDER_STATUSES = {  # what the service gets -> what pulse counts (None: not an order event)
    "created": "created",
    "CONFIRMED": "confirmed",
    "confirmed": "confirmed",
    "cancelled": "cancelled",
    "canceled": "cancelled",
    "refunded": "refunded",
    "shipped": None,
}


def serve(client: httpx.Client, run: Run, rng: random.Random) -> None:
    """Send SERVED requests of every kind the service has; record what each should count as."""
    for i in range(SERVED):
        n = rng.randint(0, 500)
        kind = rng.choices(
            [
                "health",
                "products",
                "product",
                "order",
                "cart",
                "static",
                "delete",
                "status",
                "charge",
                "boom",
            ],
            [10, 10, 25, 15, 10, 5, 5, 8, 6, 6],
        )[0]
        headers = {"x-user-id": f"u-{n % 37}"}
        if kind == "status":
            status = rng.choice(list(ORDER_STATUSES))
            role = rng.choice(ROLES)
            amount = f"{rng.randint(1_000, 300_000)}.{rng.choice(['00', '50', '25'])}"
            body = {"status": status, "finalAmount": amount, "role": role, "items": rng.randint(1, 4)}
            reply = client.post(f"/api/orders/{n}/status", json=body, headers=headers)
            counted = ORDER_STATUSES[status]
            expected = ("POST", "/api/orders/:id/status", 202 if counted else 422)
            if counted:
                run.orders[(counted, role)] += 1
                if counted == "confirmed":
                    run.revenue_micro += round(float(amount) * 1_000_000)
        elif kind == "charge":
            reply = client.post(f"/api/payments/{n}/charge", headers=headers)
            expected = ("POST", "/api/payments/:id/charge", 502)
            run.errors[(SERVICE, "/api/payments/:id/charge")] += 1
        elif kind == "boom":
            reply = client.get("/api/boom", headers=headers)
            expected = ("GET", "/api/boom", 500)
            run.errors[(SERVICE, "/api/boom")] += 1
        else:
            method, path, expected = {
                "health": ("GET", "/health", ("GET", "/health", 200)),
                "products": ("GET", "/api/products", ("GET", "/api/products", 200)),
                "product": (
                    "GET",
                    f"/api/products/{n}",
                    ("GET", "/api/products/:id", 404 if n == 0 else 200),
                ),
                "order": ("GET", f"/api/orders/{n}", ("GET", "/api/orders/:id", 200)),
                "cart": ("GET", f"/api/users/{n}/cart/items", ("GET", "/api/users/:userId/cart/items", 200)),
                "static": ("GET", f"/static/{n}.js", ("GET", "unmatched", 404)),
                "delete": ("DELETE", f"/api/orders/{n}", ("DELETE", "unmatched", 404)),
            }[kind]
            reply = client.request(method, path, headers=headers)
        assert reply.status_code == expected[2], (i, kind, reply.status_code)
        run.requests[(expected[0], expected[1], str(expected[2]))] += 1


@pytest.fixture(scope="module")
def cluster(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One deployment and one worker for the module (not waited for here: see `run`)."""
    deployment = Cluster(broker.url, tmp_path_factory.mktemp("node-client"))
    try:
        deployment.add_worker(wait=False)
        yield deployment
    finally:
        deployment.stop()


@pytest.fixture(scope="module")
def run(node: str, cluster: Cluster) -> Run:
    """Serve SERVED requests through the Node service, SIGTERM it, and let the worker count it all."""
    worker: Worker = cluster.workers[0]
    worker.wait_healthy()
    env = dict(os.environ)
    env.update(
        PULSE_BROKER_URL=cluster.broker_url,
        PULSE_TOPIC_PREFIX=cluster.prefix,
        PULSE_SERVICE=SERVICE,
        E2E_LINGER_MS=str(LINGER_MS),
        E2E_HEARTBEAT_MS="300",
    )
    service = Process(
        [node, str(NODE_DIR / "dist" / "e2e" / "service.js")], cluster.tmp / "service.log", env=env
    )
    service.start()
    result = Run()
    try:
        service.wait_for("listening ", 30)
        port = re.search(r"listening (\d+)", service.log_text())
        assert port is not None
        with httpx.Client(base_url=f"http://{HOST}:{port.group(1)}", timeout=10) as client:
            serve(client, result, random.Random(15))
            assert client.post("/debug/bad").status_code == 204
            result.requests[("POST", "/debug/bad", "204")] += 1
            result.stats = client.get("/debug/stats").json()
            result.requests[("GET", "/debug/stats", "200")] += 1
        started = time.monotonic()
        service.signal(signal.SIGTERM)
        result.exit_code = service.wait(15)
        result.stop_seconds = time.monotonic() - started
    finally:
        service.stop()
        result.log = service.log_text()

    expected = sum(result.requests.values())
    wait_until(
        lambda: sum(by_label(worker.metrics(), "http_requests_total", "route").values()),
        60,
        f"the worker to count {expected} requests",
        until=lambda counted: counted >= expected,
        context=worker.tail,
    )
    cluster.wait_quiet()
    result.metrics = worker.metrics()
    for record in cluster.read(cluster.topic("request")):
        result.request_events.extend(orjson.loads(record.value))
    result.dead = cluster.read(cluster.prefix + "events.deadletter")
    return result


def test_sigterm_flushes_and_the_service_ends_by_it(run: Run) -> None:
    assert run.exit_code == -signal.SIGTERM, run.log[-3000:]
    assert run.stop_seconds < 9, f"the service took {run.stop_seconds:.1f}s to stop"
    stats = run.stats
    assert stats["dropped"]["buffer_full"] == stats["dropped"]["send_failed"] == 0, stats
    # One order status pulse does not count (`shipped`) per such request, and the unknown type.
    shipped = stats["dropped"]["invalid"] - 1
    assert shipped >= 1, stats
    assert stats["bufferedEvents"] > 0, "some events were still buffered when SIGTERM came"


def test_every_request_served_is_counted_with_its_route_template(run: Run) -> None:
    served = sum(run.requests.values())
    assert served == SERVED + 2
    assert set(run.requests) >= {("GET", "unmatched", "404"), ("GET", "/api/users/:userId/cart/items", "200")}
    got = by_label(run.metrics, "http_requests_total", "method", "route", "status_code")
    assert got == {k: float(v) for k, v in run.requests.items()}
    counts = by_label(run.metrics, "http_request_duration_seconds_count", "method", "route", "status_code")
    assert counts == got
    # The histogram holds exactly the durations the middleware measured and sent.
    sent = [e for e in run.request_events if isinstance(e["status_code"], int)]
    assert len(sent) == served
    assert all(e["service"] == SERVICE for e in sent)
    assert all(re.fullmatch(r"u-\d+", e["user_id"]) for e in sent if not e["route"].startswith("/debug/"))
    want = truth([("request", e) for e in sent])
    assert dict(want.http) == dict(run.requests)
    sums = by_label(run.metrics, "http_request_duration_seconds_sum", "method", "route", "status_code")
    for key, micros in want.http_us.items():
        assert round(sums[key] * 1_000_000) == micros, key
    buckets = by_label(
        run.metrics, "http_request_duration_seconds_bucket", "method", "route", "status_code", "le"
    )
    for key, per_bucket in want.http_buckets.items():
        les = sorted((float(le), n) for (*labels, le), n in buckets.items() if tuple(labels) == key)
        assert [le for le, _ in les] == [b / 1000 for b in SEED_BUCKETS_MS] + [float("inf")], key
        assert [n for _, n in les] == list(itertools.accumulate(per_bucket)), key


def test_order_changes_are_counted(run: Run) -> None:
    got = by_label(run.metrics, "orders_total", "status", "user_role")
    assert got == {k: float(v) for k, v in run.orders.items()}
    assert round(run.metrics[("revenue_total", ())] * 1_000_000) == run.revenue_micro


def test_winston_error_lines_are_counted_by_route(run: Run) -> None:
    got = by_label(run.metrics, "o4o_errors_total", "service", "route")
    assert got == {k: float(v) for k, v in run.errors.items()}


def test_heartbeats_give_service_health(run: Run) -> None:
    up = by_label(run.metrics, "o4o_service_up", "service")
    assert up == {"payment": 1.0, "redis": 0.0}


def test_malformed_events_are_dead_lettered(run: Run) -> None:
    headers = [{k: v.decode() for k, v in record.headers} for record in run.dead]
    assert sorted(h["pulse.code"] for h in headers) == ["missing_field", "wrong_type"]
    assert all("pulse.index" in h for h in headers), "each was one element of an envelope"
    values = sorted(
        orjson.loads(record.value)["route" if b"route" in record.value else "order_id"] for record in run.dead
    )
    assert values == ["/bad", "o-bad"]
    dead = by_label(run.metrics, "pulse_events_deadlettered_total", "reason")
    assert sum(dead.values()) == 2


# --- one schema, two languages ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder(node: str) -> Iterator[subprocess.Popen[str]]:
    """The TypeScript encoder, one process for the module (a JSON line in, an envelope line out)."""
    proc = subprocess.Popen(
        [node, str(NODE_DIR / "dist" / "e2e" / "encode.js")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "E2E_NOW": str(NOW_MS)},
    )
    yield proc
    proc.kill()
    proc.wait(10)


def check_agreement(encoder: subprocess.Popen[str], pairs: list[tuple[str, Any]]) -> None:
    """Each document, through the TypeScript encoder and then the worker's decoder and validator, gets
    the verdict the validator gives the original (`ts` filled in only where it was missing)."""
    assert encoder.stdin is not None and encoder.stdout is not None
    encoder.stdin.write(json.dumps(pairs) + "\n")
    encoder.stdin.flush()
    answer = json.loads(encoder.stdout.readline())
    assert answer["dropped"] == []
    elements = decode(answer["envelope"].encode(), 1 << 30)
    assert isinstance(elements, list) and len(elements) == len(pairs)
    for (kind, doc), element in zip(pairs, elements, strict=True):
        want = validate(kind, copy.deepcopy(doc))
        got = validate(kind, element)
        assert type(got) is type(want), f"{kind} {doc!r}: validator says {want!r}, after TypeScript {got!r}"
        if isinstance(want, Rejection):
            assert isinstance(got, Rejection) and got.code == want.code, (kind, doc, want, got)
        elif isinstance(doc, dict) and "ts" not in doc:
            assert want == NO_TS and got == NOW_MS, (kind, doc)
        else:
            assert got == want, (kind, doc)


def fixed_examples() -> list[tuple[str, Any]]:
    """The documents test_schemas.py writes out by hand."""
    request = schema_tests.REQUEST
    order = schema_tests.ORDER
    user = schema_tests.USER
    gauge = {"name": "db_pool", "value": 3, "labels": {"db": "main", "shard": 2}}
    pairs: list[tuple[str, Any]] = [("request", {**request, "ts": ts}) for ts in schema_tests.TS_VALID]
    pairs += [("request", {**request, "ts": ts}) for ts in schema_tests.TS_INVALID]
    pairs += [
        ("request", {**request, "status_code": v}) for v in ["200", True, False, 200.5, [200], {"code": 200}]
    ]
    pairs += [("request", {**request, k: v}) for k, v in [("status_code", 99), ("status_code", 600)]]
    pairs += [
        ("request", {**request, k: v}) for k, v in [("duration_ms", -0.5), ("method", ""), ("method", "G-T")]
    ]
    pairs += [("request", {k: v for k, v in request.items() if k != "route"}), ("request", dict(request))]
    pairs += [
        ("request", {**request, "service": None}),
        ("request", {**request, "user_id": None, "event_id": None}),
    ]
    pairs += [("request", {**request, "status_code": 200.0, "user_id": 7.0})]
    pairs += [
        ("request", {**request, "ts": t}) for t in (1_710_030_615_250, 1_710_030_615_250.0, -1, True, None)
    ]
    pairs += [
        ("request", {**request, "ts": schema_tests.MAX_TS_MS}),
        ("request", {**request, "ts": schema_tests.MAX_TS_MS + 1}),
    ]
    pairs += [
        ("request", {**request, "ts": "2024-03-10T09:30:15.250+09:00"}),
        ("request", {**request, "ts": "2024-01-01T00:00:00z\n"}),
    ]
    pairs += [("request", {**request, "extra": [1, {"a": None}], "": True})]
    pairs += [
        ("order", order),
        ("order", {**order, "status": "shipped"}),
        ("user", user),
        ("user", {**user, "action": "Active"}),
    ]
    pairs += [("gauge", gauge), ("gauge", {**gauge, "labels": {}})]
    pairs += [(kind, doc) for kind in EVENT_TYPES for doc in [[], [{}], "event", 1, 1.5, None, True]]
    return pairs


def test_typescript_encoder_and_worker_validator_agree_on_the_fixed_examples(
    encoder: subprocess.Popen[str],
) -> None:
    pairs = fixed_examples()
    assert len(pairs) > 100
    check_agreement(encoder, pairs)


@pytest.mark.parametrize("kind", EVENT_TYPES)
@settings(schema_tests.PROPERTY_SETTINGS, max_examples=3)
@given(data=st.data())
def test_typescript_encoder_and_worker_validator_agree_on_generated_documents(
    encoder: subprocess.Popen[str], kind: str, data: st.DataObject
) -> None:
    targets = [None, *(f.name for f in schema_tests.fields_of(kind))]
    docs = data.draw(
        st.lists(
            st.sampled_from(targets).flatmap(lambda t: schema_tests.documents(kind, t)),
            min_size=40,
            max_size=40,
        )
    )
    check_agreement(encoder, [(kind, doc) for doc in docs])


def test_the_node_package_has_only_kafkajs_at_run_time() -> None:
    package = json.loads((NODE_DIR / "package.json").read_text(encoding="utf-8"))
    assert package["dependencies"] == {"kafkajs": "2.2.4"}
    assert not package.get("peerDependencies")
    lock = json.loads((NODE_DIR / "package-lock.json").read_text(encoding="utf-8"))
    assert lock["packages"]["node_modules/kafkajs"]["version"] == "2.2.4"
    assert lock["packages"]["node_modules/typescript"]["version"] == package["devDependencies"]["typescript"]
    for name, spec in {**package["dependencies"], **package["devDependencies"]}.items():
        assert re.fullmatch(r"(npm:[\w@/.-]+@)?\d+\.\d+\.\d+", spec), f"{name} is not pinned: {spec}"
    assert Path(NODE_DIR / "src" / "events.generated.ts").exists()
