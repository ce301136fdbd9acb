"""The HTTP API contract, fuzzed: schemathesis against live workers from their own OpenAPI document.

Two workers for the module, started together: one with an API token (the fuzzed one) and one without
(every mutation must answer 403). From GET /api/v1/openapi.json schemathesis generates valid and
invalid requests for every operation (a fixed number each, derandomized: the same requests every run)
and checks each answer: no 5xx, the documented status, content type and body schema, invalid data
refused, a refused request (400) naming the field, `X-Content-Type-Options: nosniff` on every answer,
mutations refused (401) without or with a wrong token, and the token never in an answer. Bodies over
the limits get 413; the token is never in the worker's log nor in /health/detailed.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from agents.web import openapi
from pipeline.tools.broker import EmbeddedBroker
from schemas.events import TOPIC_OF_TYPE
from tests.support.cluster import Cluster, Worker

pytestmark = pytest.mark.integration

TOKEN = "contract-" + uuid.uuid4().hex
EVENT_LIMIT = 4096
EXAMPLES = 12
"""Generated requests per operation and mode (valid, invalid): enough to hit every branch of the
handlers' checks, cheap enough for the whole module to stay within its CI budget."""
START_WITHIN = 60.0
MUTATING = {"post", "put", "patch", "delete"}


@dataclass
class Workers:
    """The token worker (fuzzed) and the tokenless one."""

    token: Worker
    tokenless: Worker
    clusters: list[Cluster] = field(default_factory=list)


@pytest.fixture(scope="module")
def workers(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    with_token = Cluster(broker.url, tmp_path_factory.mktemp("token"), partitions=1)
    with_token.extra_env.update({"PULSE_API_TOKEN": TOKEN, "PULSE_MAX_MESSAGE_BYTES": str(EVENT_LIMIT)})
    without = Cluster(broker.url, tmp_path_factory.mktemp("tokenless"), partitions=1)
    without.extra_env["PULSE_API_TOKEN"] = ""
    try:
        # Started together, waited for together: the two starts overlap.
        token, tokenless = with_token.add_worker(wait=False), without.add_worker(wait=False)
        token.wait_healthy(START_WITHIN)
        tokenless.wait_healthy(START_WITHIN, owning=False)
        yield Workers(token, tokenless, [with_token, without])
    finally:
        with_token.stop()
        without.stop()


# --- checks of our own, beside schemathesis' ------------------------------------------------------


def _fail(title: str, message: str) -> None:
    raise AssertionError(f"{title}: {message}")


def nosniff(ctx: Any, response: Any, case: Any) -> bool:
    """Every answer carries X-Content-Type-Options: nosniff."""
    if response.headers.get("x-content-type-options") != ["nosniff"]:
        _fail("no nosniff", f"headers {dict(response.headers)}")
    return True


def names_the_field(ctx: Any, response: Any, case: Any) -> bool:
    """A 400 says which field or parameter is wrong, before its first colon."""
    if response.status_code != 400:
        return True
    operation = case.operation
    names = {"body"} | {p.name for p in operation.iter_parameters()}
    for body in operation.body:
        names |= set(body.definition.get("schema", {}).get("properties", {}))
    message = response.json()["error"]
    named = message.split(":")[0]
    if not all(part.split(".")[0] in names for part in named.split(" or ")):
        _fail("a 400 that names no field", f"{message!r} (fields: {sorted(names)})")
    return True


def token_never_shown(ctx: Any, response: Any, case: Any) -> bool:
    if TOKEN in response.content.decode(errors="replace"):
        _fail("the token in an answer", response.content[:500].decode(errors="replace"))
    return True


def wrong_tokens_refused(ctx: Any, response: Any, case: Any) -> bool:
    """A mutation sent again without the token, or with a wrong one, gets 401 and changes nothing."""
    if case.method.lower() not in MUTATING:
        return True
    for headers in ({}, {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": TOKEN}):
        again = case.call(headers=headers, session=_bare_session())
        if again.status_code != 401:
            _fail("a mutation not refused with 401", f"{headers} -> {again.status_code} {again.text[:200]}")
    return True


def events_land_on_their_topic(ctx: Any, response: Any, case: Any) -> bool:
    """POST /api/v1/events/{type} answers with the type's input topic (stage 1 validates later)."""
    if case.path == "/api/v1/events/{event_type}" and response.status_code == 202:
        topic = response.json()["data"]["topic"]
        if not topic.endswith("." + TOPIC_OF_TYPE[case.path_parameters["event_type"]]):
            _fail("an event on another topic", f"{case.path_parameters} -> {topic}")
    return True


def _bare_session() -> requests.Session:
    return requests.Session()


CHECKS: list[Callable[..., Any]] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
    nosniff,
    names_the_field,
    token_never_shown,
    wrong_tokens_refused,
    events_land_on_their_topic,
]

SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,  # the same requests on every run
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure reports the request as sent
    suppress_health_check=list(HealthCheck),
)


def fuzz(
    worker: Worker, check: Callable[[Any], None], keep: Callable[[Any], bool] = lambda op: True
) -> tuple[dict[str, int], list[str]]:
    """Run `check(case)` on generated valid and invalid cases of every kept operation; return how many
    cases ran per operation and every failure (operation, mode, what failed)."""
    schema = schemathesis.openapi.from_url(f"{worker.url}/api/v1/openapi.json")
    schema.config.update(base_url=worker.url)
    ran: dict[str, int] = {}
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if not keep(operation):
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @SETTINGS
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                name = f"{case.method} {case.path}"
                ran[name] = ran.get(name, 0) + 1
                check(case)

            try:
                run()
            except (AssertionError, Failure) as exc:
                failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {exc}")
            except BaseException as exc:
                if "Unsatisfiable" in type(exc).__name__ or "no examples" in str(exc).lower():
                    continue  # nothing invalid to make of a parameter-less GET
                failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {exc!r}")
    return ran, failures


def test_the_document_served_is_the_contract(workers: Workers) -> None:
    served = httpx.get(f"{workers.token.url}/api/v1/openapi.json", timeout=5)
    assert served.status_code == 200 and served.headers["content-type"].startswith("application/json")
    assert served.json() == openapi.document(EVENT_LIMIT)


def test_schemathesis_finds_no_contract_violation(workers: Workers) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    started = time.monotonic()

    def check(case: Any) -> None:
        case.call_and_validate(headers=auth, checks=CHECKS)

    ran, failures = fuzz(workers.token, check)
    elapsed = time.monotonic() - started
    assert not failures, "\n\n".join(failures)
    # Operations without parameters have one request to make; the others EXAMPLES per mode.
    assert len(ran) == 15 and sum(ran.values()) >= 100, ran
    print(f"schemathesis: {sum(ran.values())} cases in {elapsed:.1f}s")


def test_without_a_token_every_mutation_is_refused_with_403(workers: Workers) -> None:
    seen: dict[str, int] = {}

    def check(case: Any) -> None:
        for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}, {"Authorization": "Bearer "}):
            reply = case.call(headers=headers, session=_bare_session())
            body = reply.json()
            seen[f"{case.method} {case.path}"] = reply.status_code
            assert reply.status_code == 403, f"{case.method} {case.formatted_path} {headers}: {reply.text}"
            assert "PULSE_API_TOKEN" in body["error"], body
            assert reply.headers.get("x-content-type-options") == ["nosniff"], reply.headers

    _, failures = fuzz(workers.tokenless, check, keep=lambda op: op.method.lower() in MUTATING)
    assert not failures, "\n\n".join(failures)
    assert set(seen) == {
        "POST /api/v1/silences",
        "DELETE /api/v1/silences/{silence_id}",
        "POST /api/v1/events/{event_type}",
    }, seen


def test_bodies_over_the_limit_get_413(workers: Workers) -> None:
    url = workers.token.url
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    big_event = b"[" + b'{"service":"x"},' * (EVENT_LIMIT // 16) + b"1]"
    big_silence = b'{"comment": "' + b"x" * openapi.API_BODY_LIMIT + b'"}'
    for path, body in (("/api/v1/events/request", big_event), ("/api/v1/silences", big_silence)):
        declared = httpx.post(url + path, content=body, headers=auth, timeout=10)
        assert declared.status_code == 413, declared.text
        assert declared.json()["error"].startswith("body: over")

        def chunks(body: bytes = body) -> Iterator[bytes]:  # no Content-Length: chunked
            yield from (body[i : i + 1000] for i in range(0, len(body), 1000))

        streamed = httpx.post(url + path, content=chunks(), headers=auth, timeout=10)
        assert streamed.status_code == 413, streamed.text
        # Without the token, the refusal comes first: nothing is read.
        anonymous = httpx.post(url + path, content=body, timeout=10)
        assert anonymous.status_code == 401, anonymous.text
    just = b'{"ts": 1, "pad": "' + b"x" * (EVENT_LIMIT - 21) + b'"}'
    assert len(just) == EVENT_LIMIT - 1
    accepted = httpx.post(url + "/api/v1/events/request", content=just, headers=auth, timeout=10)
    assert accepted.status_code == 202, accepted.text


def test_security_headers_and_the_token_kept_secret(workers: Workers) -> None:
    worker = workers.token
    for path in ("/", "/static/page.js", "/metrics", "/health", "/ready", "/nothing", "/api/v1/nothing"):
        reply = httpx.get(worker.url + path, timeout=5)
        assert reply.headers.get("X-Content-Type-Options") == "nosniff", (path, dict(reply.headers))
        policy = reply.headers.get("Content-Security-Policy", "")
        assert "script-src 'self'" in policy or "default-src 'none'" in policy, (path, policy)
        assert "'unsafe-inline'" not in policy
    page_policy = httpx.get(worker.url + "/", timeout=5).headers["Content-Security-Policy"]
    assert re.search(r"(^|; )script-src 'self'(;|$)", page_policy), page_policy
    missing = httpx.put(worker.url + "/api/v1/silences", timeout=5)
    assert missing.status_code == 405 and missing.json()["status"] == "error", missing.text
    assert "GET" in missing.headers["Allow"]
    detailed = httpx.get(worker.url + "/health/detailed", timeout=5).text
    assert TOKEN not in detailed
    log = worker.log_text()
    assert "Bearer" not in log or TOKEN not in log
    assert TOKEN not in log, "the token is in the worker's log"
    assert TOKEN[: len(TOKEN) // 2] not in log
