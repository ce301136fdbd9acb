"""The Node.js client (clients/node, @o4o/pulse-client) against the real thing.

`npm ci` (when node_modules is missing or older than the lock file) and `tsc` build it; then Node's own
test runner runs its two suites, and this file asserts that they passed and shows node's messages when
they did not:
- `npm test`, the unit tests (clients/node/test);
- `npm run test:e2e` (clients/node/e2e/worker.test.ts), which starts the embedded broker (`pulse
  broker`) and one real `pulse worker` as its own child processes, serves 1,000 requests, order changes,
  Winston error lines, heartbeats and malformed events through a small Express service and the real
  kafkajs, SIGTERMs the service, proves the worker read everything there is (topics read to their end
  offsets), and compares the worker's /metrics with what was served, exactly; the dead letters and the
  SIGTERM flush too. It runs while the unit tests run.
Finally every example document of the schema tests goes through the TypeScript encoder and the worker's
decoder and validator, which agree with the validator on the original document (here, since it needs
the Python validator).

Needs `node` and `npm` (Debian packages nodejs, npm) and the npm registry (or npm's cache) for
`npm ci`; skipped without node, failed under PULSE_REQUIRE_E2E=1.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ingest.decode import decode
from schemas.events import EVENT_TYPES, NO_TS, Rejection, validate
from tests.support.needs import need_binary
from tests.support.procs import REPO, Process, pulse_argv
from tests.unit import test_schemas as schema_tests

pytestmark = pytest.mark.e2e

NODE_DIR = REPO / "clients" / "node"
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


@dataclass
class Suite:
    """One `npm run SCRIPT` of node:test suites, started in a session of its own (killed, tree and all,
    at the end)."""

    script: str
    process: Process

    def result(self, timeout: float) -> tuple[int, str]:
        """Its exit code and output, once it ended (at most `timeout` s)."""
        try:
            code = self.process.wait(timeout)
        finally:
            self.process.cleanup()
        return code, self.process.log_text()


def start_suite(script: str, log: Path) -> Suite:
    env = {**os.environ, "NO_COLOR": "1"}
    pulse = pulse_argv()
    if len(pulse) == 1:  # the `pulse` script beside this Python (else the suite's own default)
        env["PULSE_BIN"] = pulse[0]
    argv = [need_binary("npm", "npm"), "run", "--silent", script]
    return Suite(script, Process(argv, log, env=env, cwd=NODE_DIR, session=True).start())


def failures(out: str) -> str:
    """Node's report of every failed test ("not ok" and its YAML block; those cancelled only because
    their suite failed, by name), or the end of the output."""
    blocks = re.findall(r"^ *not ok .*?^ *\.\.\.$", out, re.M | re.S)
    cancelled = [b.splitlines()[0].strip() for b in blocks if "cancelledByParent" in b]
    report = [b for b in blocks if "cancelledByParent" not in b]
    if cancelled:
        report.append(f"cancelled with their suite: {'; '.join(cancelled)}")
    return "\n".join(report)[-12000:] or out[-6000:]


def assert_passed(suite: Suite, timeout: float, at_least: int) -> None:
    """The suite ended with exit code 0, every test passed (none failed, cancelled, skipped or todo),
    and it ran at least `at_least` tests."""
    code, out = suite.result(timeout)
    summary = dict(re.findall(r"^# (tests|pass|fail|cancelled|skipped|todo) (\d+)$", out, re.M))
    assert code == 0, f"npm run {suite.script} exited with {code}; {summary}\n{failures(out)}"
    assert {k: summary.get(k) for k in ("fail", "cancelled", "skipped", "todo")} == dict.fromkeys(
        ("fail", "cancelled", "skipped", "todo"), "0"
    ), f"npm run {suite.script}: {summary}\n{failures(out)}"
    assert int(summary.get("pass", 0)) >= at_least, f"npm run {suite.script}: {summary}\n{out[-3000:]}"


@pytest.fixture(scope="module")
def e2e(node: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    """`npm run test:e2e`, started once the client is built (it runs while the unit tests run)."""
    suite = start_suite("test:e2e", tmp_path_factory.mktemp("node-e2e") / "test-e2e.log")
    try:
        yield suite
    finally:
        suite.process.cleanup()


@pytest.mark.usefixtures("e2e")
def test_node_unit_tests_pass(node: str, tmp_path: Path) -> None:
    """`npm test`: the node:test suites (batching, limits, drops, route templates, Winston, orders,
    heartbeats, signals, the generated types against schemas/json)."""
    assert_passed(start_suite("test", tmp_path / "test.log"), 120, 30)


def test_node_end_to_end_tests_pass(e2e: Suite) -> None:
    """`npm run test:e2e`: the client, the embedded broker and a real `pulse worker` (see the docstring)."""
    assert_passed(e2e, 300, 6)


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
