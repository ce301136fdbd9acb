"""The OpenAPI document against the routes a worker registers, and the API's input checks.

The live contract (schemathesis against a worker) is tests/integration/test_api_contract.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import faust
import orjson
import pytest
import schemathesis
from multidict import MultiDict
from prometheus_client import CollectorRegistry

from agents.web import openapi, routes
from agents.web.ports import WebDeps
from pipeline.config.settings import Config


def _registered() -> set[tuple[str, str]]:
    """(METHOD, path) of every route `routes.register` adds to a Faust app's aiohttp router."""
    app = faust.App("openapi-test", web_enabled=True)
    unused: Any = None  # the handlers are not called: only their registration is read
    deps = WebDeps(
        config=Config(),
        started=0.0,
        ownership=unused,
        reader=unused,
        series=unused,
        cluster=unused,
        ingest=unused,
        alerts=unused,
        silences=unused,
        notifications=unused,
        rules=unused,
        rule_evaluations=lambda: None,
        table_sizes=dict,
        registry=CollectorRegistry(),
        metrics=unused,
        lag_topics=set,
        send_event=unused,
    )
    routes.register(app, deps)
    router = app.web.web_app.router  # type: ignore[attr-defined]
    # Faust adds HEAD to every view (it answers as GET does, or 405): not part of the contract.
    return {(r.method, r.resource.canonical) for r in router.routes() if r.method != "HEAD"}


def test_the_document_describes_every_route_and_nothing_else() -> None:
    registered = _registered()
    documented = openapi.documented(openapi.document(1_048_576))
    assert sorted(registered - documented) == [], "routes missing from the document"
    assert sorted(documented - registered) == [], "documented routes that do not exist"
    for required in ("/api/v1/series", "/api/v1/alerts", "/api/v1/alerts/history", "/api/v1/silences"):
        assert ("GET", required) in documented
    assert {("POST", "/api/v1/events/{event_type}"), ("GET", "/health/detailed")} <= documented


def test_the_document_is_openapi_3_1_that_schemathesis_loads() -> None:
    doc = openapi.document(4096)
    assert doc["openapi"] == "3.1.0"
    orjson.dumps(doc)  # served as JSON
    loaded = schemathesis.openapi.from_dict(doc)
    operations = [result.ok() for result in loaded.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in operations} == openapi.documented(doc)
    mutating = {(op.method.upper(), op.path) for op in operations if op.method != "get"}
    secured = {(m, p) for m, p in openapi.documented(doc) if "security" in doc["paths"][p][m.lower()]}
    assert mutating == secured, "every mutating operation declares the bearer token"
    events = doc["paths"]["/api/v1/events/{event_type}"]["post"]
    assert "4096" in events["responses"]["413"]["description"]


def _refusal(body: Any) -> str:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(ValueError) as caught:
        routes.silence_body(raw, 1_000)
    return str(caught.value)


GOOD = {"matchers": {"alertname": "x"}, "duration": "1h", "createdBy": "me", "comment": "why"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        (b"", "body"),
        ([GOOD], "body"),
        (None, "body"),
        ({**GOOD, "matchers": {}}, "matchers"),
        ({**GOOD, "matchers": ["alertname=x"]}, "matchers"),
        ({**GOOD, "matchers": {"service": 5}}, "matchers.service"),
        ({**GOOD, "matchers": {"route": "=~("}}, "matchers.route"),
        ({**GOOD, "matchers": {"route": "!~[z-a]"}}, "matchers.route"),
        ({**GOOD, "startsAt": "soon"}, "startsAt"),
        ({**GOOD, "startsAt": {"a": 1}}, "startsAt"),
        ({**GOOD, "startsAt": -1}, "startsAt"),
        ({**GOOD, "startsAt": True}, "startsAt"),
        ({**GOOD, "endsAt": 1.5}, "endsAt"),
        ({**GOOD, "endsAt": 10**30}, "endsAt"),
        ({**GOOD, "endsAt": None}, "endsAt"),
        ({k: v for k, v in GOOD.items() if k != "duration"}, "endsAt or duration"),
        ({**GOOD, "duration": "soon"}, "duration"),
        ({**GOOD, "duration": -5}, "duration"),
        ({**GOOD, "duration": [1]}, "duration"),
        ({**GOOD, "duration": 1e300}, "duration"),
        ({**GOOD, "createdBy": " "}, "createdBy"),
        ({**GOOD, "createdBy": 7}, "createdBy"),
        ({**GOOD, "comment": ["why"]}, "comment"),
        ({**GOOD, "duration": "0s"}, "endsAt"),
        ({**GOOD, "startsAt": 5000, "endsAt": 5000}, "endsAt"),
        ({**GOOD, "endsAt": 999}, "endsAt"),
        ({k: v for k, v in GOOD.items() if k != "comment"}, "comment"),
    ],
)
def test_an_invalid_silence_body_is_refused_with_the_field_named(body: Any, field: str) -> None:
    message = _refusal(body)
    assert message.startswith(field + ":"), message


def test_a_valid_silence_body_passes_with_its_duration_in_seconds() -> None:
    assert routes.silence_body(orjson.dumps(GOOD), 1_000)["duration"] == 3600.0
    regex = {**GOOD, "matchers": {"route": "=~/api/.*", "service": "!=web"}, "endsAt": 5000}
    assert routes.silence_body(orjson.dumps(regex), 1_000)["endsAt"] == 5000


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "²"}, "limit"),
        ({"limit": "1e3"}, "limit"),
        ({"since": "nan"}, "since"),
        ({"since": "inf"}, "since"),
        ({"until": "1e300"}, "until"),
        ({"until": "-1e20"}, "until"),
        ({"since": "0001-01-01T00:00:00+01:00"}, "since"),
        ({"until": "9999-12-31T23:59:59-01:00"}, "until"),
        ({"since": "yesterday"}, "since"),
        (MultiDict([("limit", "5"), ("limit", "6")]), "limit"),
        (MultiDict([("since", "1"), ("since", "")]), "since"),
    ],
)
def test_an_invalid_history_query_is_refused_with_the_parameter_named(
    query: Mapping[str, str], field: str
) -> None:
    with pytest.raises(ValueError, match=f"^{field}: "):
        routes.history_query(query)


def test_a_history_query_reads_instants_in_either_form() -> None:
    query = routes.history_query({"since": "1700000000", "until": "2023-11-14T22:13:20+00:00", "limit": "7"})
    assert query.since == query.until == "2023-11-14T22:13:20.000Z" and query.limit == 7


@pytest.mark.parametrize("text", ["", "x", "nan", "inf", "-1", "1e300", "253402300800000"])
def test_an_invalid_at_is_refused_with_its_name(text: str) -> None:
    with pytest.raises(ValueError, match=r"^at: "):
        routes.epoch_ms(text, "at")
    assert routes.epoch_ms("1700000000000.7", "at") == 1_700_000_000_000
