"""GET /api/v1/openapi.json: the OpenAPI 3.1 document of every endpoint a worker serves.

The document is the HTTP contract: tests/unit/test_openapi.py checks it against the routes the worker
registers (every route documented, nothing documented that does not exist), and
tests/integration/test_api_contract.py fuzzes a live worker with schemathesis from it. The health
endpoints are described from the outside (what a monitor may rely on), loosely enough that adding a
field is no breaking change.
"""

from __future__ import annotations

from typing import Any

from pipeline import __version__
from schemas.events import TOPIC_OF_TYPE

API_BODY_LIMIT = 65_536
"""Largest JSON body of the API's own endpoints (silences): larger ones get 413."""

MAX_EPOCH_MS = 253_402_300_799_999
"""The last millisecond of year 9999, as in the event schemas."""

SERIES_SCOPES = ("local", "cluster")
"""The scopes of /api/v1/series: this worker's share, or the whole cluster's series."""

_ERROR = {"$ref": "#/components/schemas/Error"}
_JSON = "application/json"


def _reply(description: str, schema: dict[str, Any] | None = None, media: str = _JSON) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema if schema else {}}}}


def _error(description: str) -> dict[str, Any]:
    return _reply(description, _ERROR)


def _success(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["status", "data"],
        "properties": {"status": {"const": "success"}, "data": data},
    }


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


_STRING = {"type": "string"}
_ARRAY_OF_OBJECTS = {"type": "array", "items": {"type": "object"}}
_MUTATION_REFUSED = {
    "401": _error("Authorization is missing or not `Bearer <PULSE_API_TOKEN>`"),
    "403": _error("PULSE_API_TOKEN is not set on this worker: mutating endpoints are disabled"),
}


def _query_param(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    schema = schema if schema else {"type": "string"}
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _list_param(name: str, description: str) -> dict[str, Any]:
    return _query_param(name, description + " (comma-separated or repeated; any of them matches)")


def _instant_param(name: str, description: str) -> dict[str, Any]:
    return _query_param(name, description + ": RFC 3339, or epoch seconds or milliseconds")


def _health(description: str, status: str) -> dict[str, Any]:
    body = {"type": "object", "required": [status], "properties": {status: {}}}
    return {
        "get": {
            "operationId": description.split(":")[0].replace(" ", "_"),
            "summary": description,
            "tags": ["health"],
            "responses": {
                "200": _reply("Up", body),
                "503": _reply("Not ready or unhealthy; the body says why", body),
            },
        }
    }


def _paths(event_limit: int) -> dict[str, Any]:
    silence_body = {
        "type": "object",
        "required": ["matchers", "createdBy", "comment"],
        "anyOf": [{"required": ["endsAt"]}, {"required": ["duration"]}],
        "properties": {
            "matchers": {
                "type": "object",
                "minProperties": 1,
                "description": "label -> value, !=value, =~regex or !~regex (regexes match whole values)",
                "additionalProperties": {"type": "string"},
            },
            "startsAt": {"type": "integer", "minimum": 0, "maximum": MAX_EPOCH_MS, "description": "epoch ms"},
            "endsAt": {"type": "integer", "minimum": 0, "maximum": MAX_EPOCH_MS, "description": "epoch ms"},
            "duration": {
                "description": 'from startsAt (or now): "2h", "30m", or seconds',
                "anyOf": [{"type": "string", "minLength": 1}, {"type": "number", "minimum": 0}],
            },
            "createdBy": {"type": "string", "minLength": 1, "description": "kept to 200 characters"},
            "comment": {"type": "string", "minLength": 1, "description": "kept to 1000 characters"},
        },
    }
    silence_id = {"name": "silence_id", "in": "path", "required": True, "schema": {"type": "string"}}
    silence = {"type": "object", "required": ["id", "matchers", "startsAt", "endsAt"]}
    return {
        "/": {
            "get": {
                "operationId": "live_page",
                "summary": "The live page (HTML; its script and style come from /static)",
                "tags": ["page"],
                "responses": {"200": _reply("The page", media="text/html")},
            }
        },
        "/static/{name}": {
            "get": {
                "operationId": "static_file",
                "summary": "A file of the live page (page.js, page.css, favicon.svg, index.html)",
                "tags": ["page"],
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {
                        "description": "The file",
                        "content": {
                            media: {"schema": {}}
                            for media in ("text/html", "text/javascript", "text/css", "image/svg+xml")
                        },
                    },
                    "404": _reply("No such file", media="text/plain"),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics: the owned series and the pipeline's own (docs/metrics.md)",
                "tags": ["health"],
                "responses": {"200": _reply("Text exposition format 0.0.4", media="text/plain")},
            }
        },
        "/health": _health("health: liveness, the monitoring guide's HealthStatus", "status"),
        "/health/detailed": _health(
            "health detailed: services, Kafka, state, rules, channels, the cluster's workers", "status"
        ),
        "/ready": _health("ready: readiness, 200 once the worker reads its partitions", "ready"),
        "/api/v1/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "tags": ["api"],
                "responses": {"200": _reply("OpenAPI 3.1", {"type": "object", "required": ["openapi"]})},
            }
        },
        "/api/v1/series": {
            "get": {
                "operationId": "series",
                "summary": "Every series with its totals and windows: this worker's, or the whole cluster's",
                "description": (
                    "scope=local (the default): the series this worker owns (its `partitions`). "
                    "scope=cluster: every worker's series, read from the worker that owns them; a "
                    "worker that does not answer within web.cluster_timeout (1 s by default) is listed "
                    "in `workers` as `missing`, its partitions in `missing_partitions`, and `partial` "
                    "is true."
                ),
                "tags": ["api"],
                "parameters": [
                    _query_param(
                        "at",
                        "evaluate the windows at this instant (epoch ms; default now)",
                        {"type": "number", "minimum": 0, "maximum": MAX_EPOCH_MS},
                    ),
                    _list_param("kind", "only series of these kinds (requests, route, health ...)"),
                    _query_param(
                        "scope",
                        "local: this worker's series (default); cluster: every worker's",
                        {"type": "string", "enum": list(SERIES_SCOPES), "default": "local"},
                    ),
                ],
                "responses": {
                    "200": _reply(
                        "The series",
                        {
                            **_object(
                                ["at", "partitions", "series"],
                                at={"type": "integer"},
                                partitions={"type": "array", "items": {"type": "integer"}},
                                series=_ARRAY_OF_OBJECTS,
                                scope={"enum": list(SERIES_SCOPES)},
                                workers={"type": "array", "items": {"$ref": "#/components/schemas/Worker"}},
                                missing_partitions={"type": "array", "items": {"type": "integer"}},
                                partial={"type": "boolean"},
                            ),
                            "description": "workers, missing_partitions and partial with scope=cluster",
                        },
                    ),
                    "400": _error("A query parameter is invalid (the message names it)"),
                },
            }
        },
        "/api/v1/alerts": {
            "get": {
                "operationId": "alerts",
                "summary": "Pending and firing alerts",
                "tags": ["api"],
                "responses": {
                    "200": _reply(
                        "The alerts (a firing one with its context)",
                        _success(
                            _object(
                                ["alerts"],
                                alerts={"type": "array", "items": {"$ref": "#/components/schemas/Alert"}},
                            )
                        ),
                    )
                },
            }
        },
        "/api/v1/alerts/history": {
            "get": {
                "operationId": "alert_history",
                "summary": "Alert transitions, newest first, and failed notifications",
                "tags": ["api"],
                "parameters": [
                    _list_param("severity", "only these severities"),
                    _list_param("rule", "only these rules"),
                    _list_param("state", "only these states (pending, firing, resolved)"),
                    _instant_param("since", "transitions at or after"),
                    _instant_param("until", "transitions at or before"),
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 10_000, "default": 100},
                    },
                ],
                "responses": {
                    "200": _reply(
                        "The transitions",
                        _success(
                            _object(
                                ["alerts", "count", "notification_failures"],
                                alerts=_ARRAY_OF_OBJECTS,
                                count={"type": "integer"},
                                notification_failures=_ARRAY_OF_OBJECTS,
                            )
                        ),
                    ),
                    "400": _error("A query parameter is invalid (the message names it)"),
                },
            }
        },
        "/api/v1/silences": {
            "get": {
                "operationId": "silences",
                "summary": "Every silence with its status, newest first",
                "tags": ["silences"],
                "responses": {
                    "200": _reply("The silences", _success(_object(["silences"], silences=_ARRAY_OF_OBJECTS)))
                },
            },
            "post": {
                "operationId": "create_silence",
                "summary": "Create a silence (published to the silences topic, read by every worker)",
                "tags": ["silences"],
                "security": [{"bearer": []}],
                "requestBody": {"required": True, "content": {_JSON: {"schema": silence_body}}},
                "responses": {
                    "201": _reply("Created", _success(_object(["silenceID"], silenceID={"type": "string"}))),
                    "400": _error("The body is invalid (the message names the field)"),
                    **_MUTATION_REFUSED,
                    "413": _error(f"The body is over {API_BODY_LIMIT} bytes"),
                },
            },
        },
        "/api/v1/silences/{silence_id}": {
            "get": {
                "operationId": "silence",
                "summary": "One silence",
                "tags": ["silences"],
                "parameters": [silence_id],
                "responses": {
                    "200": _reply("The silence", _success(silence)),
                    "404": _error("No such silence"),
                },
            },
            "delete": {
                "operationId": "expire_silence",
                "summary": "Expire a silence now",
                "tags": ["silences"],
                "security": [{"bearer": []}],
                "parameters": [silence_id],
                "responses": {
                    "200": _reply(
                        "Expired",
                        _success(_object(["silenceID", "expired"], silenceID={"type": "string"}, expired={})),
                    ),
                    **_MUTATION_REFUSED,
                    "404": _error("No such silence"),
                },
            },
        },
        "/api/v1/events/{event_type}": {
            "post": {
                "operationId": "ingest_events",
                "summary": "Publish events to their input topic, as a producer would",
                "description": (
                    "One event or a JSON array of events (an envelope). Accepted (202) once the broker "
                    "has them; validated by stage 1 like any Kafka input, so malformed events go to "
                    "the dead-letter topic with their reason instead of failing the request."
                ),
                "tags": ["events"],
                "security": [{"bearer": []}],
                "parameters": [
                    {
                        "name": "event_type",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": sorted(TOPIC_OF_TYPE)},
                    }
                ],
                "requestBody": {"required": True, "content": {_JSON: {"schema": {}}}},
                "responses": {
                    "202": _reply(
                        "Accepted: written to the input topic",
                        _success(
                            _object(
                                ["topic", "partition", "offset"],
                                topic={"type": "string"},
                                partition={"type": "integer"},
                                offset={"type": "integer"},
                            )
                        ),
                    ),
                    **_MUTATION_REFUSED,
                    "404": _error("Unknown event type"),
                    "413": _error(f"The body is over ingest.max_message_bytes ({event_limit})"),
                },
            }
        },
        "/api/v1/rules": {
            "get": {
                "operationId": "rules",
                "summary": "The rules this worker evaluates",
                "tags": ["api"],
                "responses": {
                    "200": _reply(
                        "The rules",
                        _success(_object(["source", "rules"], source={}, rules=_ARRAY_OF_OBJECTS)),
                    )
                },
            }
        },
    }


def document(event_limit: int) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document (`event_limit`: the events endpoint's body limit in bytes)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "o4o-pulse worker",
            "version": __version__,
            "description": (
                "Every response carries X-Content-Type-Options: nosniff. Mutating endpoints need "
                "`Authorization: Bearer $PULSE_API_TOKEN`: 403 while no token is configured, 401 "
                "with a missing or wrong one. Errors are `{status: error, error: <message>}`."
            ),
        },
        "paths": _paths(event_limit),
        "components": {
            "schemas": {
                "Error": _object(["status", "error"], status={"const": "error"}, error={"type": "string"}),
                "Worker": _object(
                    ["url", "partitions", "self", "status"],
                    url={"type": "string"},
                    partitions={"type": "array", "items": {"type": "integer"}},
                    self={"type": "boolean"},
                    status={"enum": ["ok", "missing"]},
                    error={"type": "string", "description": "why it is missing"},
                    elapsed_ms={"type": "number"},
                    served={"type": "array", "items": {"type": "integer"}},
                ),
                **_ALERT_SCHEMAS,
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


_NUMBER_OR_NULL = {"type": ["number", "null"]}
_STRING_OR_NULL = {"type": ["string", "null"]}
_STRINGS = {"type": "object", "additionalProperties": _STRING}
_ALERT_SCHEMAS: dict[str, Any] = {
    "Alert": _object(
        ["fingerprint", "rule", "state", "severity"],
        id=_STRING,
        fingerprint=_STRING,
        rule=_STRING,
        state={"enum": ["pending", "firing", "resolved", "inactive"]},
        previous=_STRING,
        severity=_STRING,
        title=_STRING,
        message=_STRING,
        metric=_STRING,
        currentValue=_NUMBER_OR_NULL,
        threshold=_NUMBER_OR_NULL,
        timestamp=_STRING,
        service=_STRING,
        labels=_STRINGS,
        annotations=_STRINGS,
        starts_at=_STRING_OR_NULL,
        ends_at=_STRING_OR_NULL,
        context={"$ref": "#/components/schemas/AlertContext"},
    ),
    "AlertContext": {
        **_object(
            ["kind", "at_ms"],
            kind={"enum": ["errors", "latency", "stock", "orders"]},
            at_ms={"type": "integer"},
            window=_STRING,
            sections={"type": "array", "items": {"$ref": "#/components/schemas/ContextSection"}},
            partial={"type": "boolean"},
            missing={"type": "array", "items": _STRING},
        ),
        "description": "The top contributors behind a firing alert's number (docs/notifications.md)",
    },
    "ContextSection": _object(
        ["name", "title"],
        name={
            "enum": [
                "routes_5xx",
                "error_codes",
                "slowest_routes",
                "out_of_stock",
                "payment_method",
                "user_role",
            ]
        },
        title=_STRING,
        rows={"type": "array", "items": {"$ref": "#/components/schemas/ContextRow"}},
        more={"type": "integer", "description": "contributors left out after the rows"},
        total={"type": "integer"},
        value={"type": "string", "description": "what each row's value is: error_ratio, p95_ms, amount..."},
    ),
    "ContextRow": _object(
        ["name"],
        name=_STRING,
        labels=_STRINGS,
        count={"type": "integer"},
        share={"type": "number"},
        value={"type": "number"},
    ),
}


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    """The (METHOD, path) pairs a document describes."""
    methods = {"get", "post", "put", "patch", "delete"}
    return {
        (method.upper(), path) for path, item in doc["paths"].items() for method in item if method in methods
    }
