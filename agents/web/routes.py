"""HTTP endpoints of a worker, served by Faust's web server on PULSE_WEB_PORT."""

from __future__ import annotations

import hmac
import math
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import orjson
from aiohttp.web import HTTPException, middleware
from aiohttp.web import Response as JsonResponse
from faust.web import Request, Response, View
from msgspec import structs

from agents.history import HistoryQuery
from agents.silences import new_silence
from agents.web import health, metrics, openapi, page
from pipeline.config.settings import secret_text
from pipeline.durations import parse_duration
from schemas.events import TOPIC_OF_TYPE

if TYPE_CHECKING:
    from aiohttp import web
    from faust import App

    from agents.web.ports import WebDeps

NOSNIFF = {"X-Content-Type-Options": "nosniff"}
"""Sent with every response of the worker (API, page, metrics, health, errors and 404s alike)."""
API_CSP = "default-src 'none'; frame-ancestors 'none'"
"""The policy of every response that sets none itself (the page sets its own): nothing may run."""
_WHOLE_NUMBER = re.compile(r"[0-9]{1,16}")
SCOPES = openapi.SERIES_SCOPES
"""/api/v1/series?scope=: this worker's share (local, the default) or every worker's (cluster)."""


def _now_ms(request: Request) -> int:
    return epoch_ms(_once(request.query, "at"), "at")


def _once(query: Mapping[str, str], name: str) -> str | None:
    """The value of a query parameter given at most once (None: absent); raise ValueError naming it."""
    values = query.getall(name, []) if hasattr(query, "getall") else [query[name]] if name in query else []
    if len(values) > 1:
        raise ValueError(f"{name}: give it once, not {len(values)} times")
    return values[0] if values else None


def epoch_ms(text: str | None, name: str) -> int:
    """Return the epoch ms of a query parameter (now when absent); raise ValueError naming it."""
    if text is None:
        return int(time.time() * 1000)
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not 0 <= number <= openapi.MAX_EPOCH_MS:
        raise ValueError(
            f"{name}: expected epoch milliseconds from 0 to {openapi.MAX_EPOCH_MS}, got {text!r}"
        )
    return int(number)


async def _secure(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(NOSNIFF)
    response.headers.setdefault("Content-Security-Policy", API_CSP)


async def _api_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Answer the router's own refusals under /api/ (404 no route, 405 no method) in the API's JSON shape."""
    try:
        response: web.StreamResponse = await handler(request)
    except HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status < 400:
            raise
        body = orjson.dumps({"status": "error", "error": f"{exc.status} {exc.reason}"})
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow",)}
        return JsonResponse(body=body, status=exc.status, headers=headers, content_type="application/json")
    return response


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None when it is over `limit` bytes (refused before it is all read)."""
    # Faust's web driver is aiohttp's: its request streams the body.
    raw = cast("web.Request", request)
    declared = raw.content_length
    if declared is not None and declared > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while chunk := await raw.content.read(65_536):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def register(app: App, deps: WebDeps) -> None:
    """Register every view on the worker's web server; the views read only through `deps`."""
    metrics.register_collector(deps)
    page.register(app)
    # Faust's web driver is aiohttp's: the hook sees every response, the router's 404s and 405s too.
    web_app = app.web.web_app  # type: ignore[attr-defined]
    web_app.on_response_prepare.append(_secure)
    web_app.middlewares.append(middleware(_api_errors))
    spec = openapi.document(deps.config.ingest.max_message_bytes)

    def refused(view: View, status: int, message: str) -> Response:
        return view.json({"status": "error", "error": message}, status=status)

    @app.page("/api/v1/openapi.json")
    class OpenApi(View):
        async def get(self, request: Request) -> Response:
            return self.json(spec)

    def health_page(path: str, name: str, answer: Callable[[WebDeps], tuple[int, dict[str, Any]]]) -> None:
        @app.page(path, name=name)
        class HealthView(View):
            async def get(self, request: Request) -> Response:
                status, body = answer(deps)
                return self.json(body, status=status)

    health_page("/health", "Health", health.health_body)
    health_page("/health/detailed", "DetailedHealth", health.detailed_body)
    health_page("/ready", "Ready", health.ready_body)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(metrics.render(deps), content_type=metrics.CONTENT_TYPE)

    @app.page("/api/v1/series")
    class Series(View):
        async def get(self, request: Request) -> Response:
            try:
                now_ms = _now_ms(request)
                scope = _once(request.query, "scope") or "local"
                if scope not in SCOPES:
                    raise ValueError(f"scope: expected {' or '.join(SCOPES)}, got {scope!r}")
            except ValueError as exc:
                return refused(self, 400, str(exc))
            kinds = _listed(request.query, "kind") or None
            if scope == "cluster":
                whole = await deps.cluster.series(now_ms, kinds)
                return self.json(whole.to_dict())
            partitions, series = deps.cluster.local(now_ms, kinds)
            return self.json({"at": now_ms, "partitions": partitions, "series": series})

    @app.page("/api/v1/alerts")
    class Alerts(View):
        async def get(self, request: Request) -> Response:
            active = deps.alerts.active()
            return self.json({"status": "success", "data": {"alerts": active}})

    @app.page("/api/v1/alerts/history")
    class AlertHistory(View):
        async def get(self, request: Request) -> Response:
            try:
                query = history_query(request.query)
            except ValueError as exc:
                return self.json({"status": "error", "error": str(exc)}, status=400)
            found = deps.alerts.query(query)
            failed = [f for f in deps.alerts.failed_notifications() if query.matches_failure(f)][
                : query.limit
            ]
            data = {"alerts": found, "count": len(found), "notification_failures": failed}
            return self.json({"status": "success", "data": data})

    @app.page("/api/v1/silences")
    class Silences(View):
        async def get(self, request: Request) -> Response:
            listed = deps.silences.listed(_wall_ms())
            return self.json({"status": "success", "data": {"silences": listed}})

        async def post(self, request: Request) -> Response:
            denied = _authorize(deps, request)
            if denied is not None:
                return refused(self, *denied)
            raw = await _read_body(request, openapi.API_BODY_LIMIT)
            if raw is None:
                return refused(self, 413, f"body: over {openapi.API_BODY_LIMIT} bytes")
            try:
                now = _wall_ms()
                silence = new_silence(silence_body(raw, now), now)
            except ValueError as exc:
                return refused(self, 400, str(exc))
            await deps.silences.publish(silence)
            return self.json({"status": "success", "data": {"silenceID": silence.id}}, status=201)

    @app.page("/api/v1/silences/{silence_id}")
    class OneSilence(View):
        async def get(self, request: Request, silence_id: str) -> Response:
            found = deps.silences.get(silence_id)
            if found is None:
                return self.json({"status": "error", "error": "no such silence"}, status=404)
            return self.json({"status": "success", "data": found.to_dict()})

        async def delete(self, request: Request, silence_id: str) -> Response:
            denied = _authorize(deps, request)
            if denied is not None:
                return refused(self, *denied)
            found = deps.silences.get(silence_id)
            if found is None:
                return self.json({"status": "error", "error": "no such silence"}, status=404)
            now = _wall_ms()
            if found.ends_at_ms > now:
                await deps.silences.publish(structs.replace(found, ends_at_ms=max(now, found.starts_at_ms)))
            return self.json({"status": "success", "data": {"silenceID": silence_id, "expired": True}})

    @app.page("/api/v1/events/{event_type}")
    class Events(View):
        async def post(self, request: Request, event_type: str) -> Response:
            denied = _authorize(deps, request)
            if denied is not None:
                return refused(self, *denied)
            topic = TOPIC_OF_TYPE.get(event_type)
            if topic is None:
                known = ", ".join(sorted(TOPIC_OF_TYPE))
                return self.json(
                    {"status": "error", "error": f"unknown event type; one of {known}"}, status=404
                )
            limit = deps.config.ingest.max_message_bytes
            body = await _read_body(request, limit)
            if body is None:
                return refused(self, 413, f"body: over {limit} bytes (ingest.max_message_bytes)")
            # Validation happens where every event is validated (stage 1): what is malformed goes to
            # the dead-letter topic with its reason, exactly as when it is published to Kafka.
            name = deps.config.topic(topic)
            partition, offset = await deps.send_event(name, body)
            data = {"topic": name, "partition": partition, "offset": offset}
            return self.json({"status": "success", "data": data}, status=202)

    @app.page("/api/v1/rules")
    class Rules(View):
        async def get(self, request: Request) -> Response:
            rules = [rule.to_dict() for rule in deps.rules.rules]
            return self.json({"status": "success", "data": {"source": deps.rules.source, "rules": rules}})


def _listed(query: Mapping[str, str], name: str) -> frozenset[str]:
    values = query.getall(name, []) if hasattr(query, "getall") else [query.get(name, "")]
    return frozenset(v for value in values for v in str(value).split(",") if v)


def _instant(text: str | None, name: str) -> str | None:
    """Return an RFC 3339 UTC instant ("...Z", ms) from RFC 3339 text or epoch seconds/ms."""
    if not text:
        return None
    try:
        try:
            number = float(text)
        except ValueError:
            parsed = datetime.fromisoformat(text)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
        else:
            parsed = datetime.fromtimestamp(number / 1000 if number > 1e11 else number, UTC)
        parsed = parsed.astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        # Not a date, NaN, or out of datetime's years 1 to 9999 (also after the zone is applied).
        raise ValueError(f"{name}: expected RFC 3339 or epoch seconds/ms, got {text!r}") from None
    return parsed.strftime("%Y-%m-%dT%H:%M:%S.") + f"{parsed.microsecond // 1000:03d}Z"


def history_query(query: Mapping[str, str]) -> HistoryQuery:
    """Parse the filters of GET /api/v1/alerts/history (severity, rule, state, since, until, limit)."""
    limit_text = _once(query, "limit") or "100"
    if not _WHOLE_NUMBER.fullmatch(limit_text) or not 1 <= int(limit_text) <= 10_000:
        raise ValueError(f"limit: expected a whole number from 1 to 10000, got {limit_text!r}")
    return HistoryQuery(
        severity=_listed(query, "severity"),
        rule=_listed(query, "rule"),
        state=_listed(query, "state"),
        since=_instant(_once(query, "since"), "since"),
        until=_instant(_once(query, "until"), "until"),
        limit=int(limit_text),
    )


def silence_body(raw: bytes, now_ms: int) -> dict[str, Any]:
    """Parse and check the body of POST /api/v1/silences; raise ValueError naming the bad field.

    `new_silence` then builds the silence from a body that passed.
    """
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"body: not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise ValueError("body: must be a JSON object with matchers, createdBy, comment, endsAt or duration")
    spec = body.get("matchers")
    if not isinstance(spec, dict) or not spec:
        raise ValueError('matchers: give a non-empty object of label filters, e.g. {"alertname": "x"}')
    for label, value in spec.items():
        if not isinstance(value, str):
            raise ValueError(f"matchers.{label}: must be a string (value, !=value, =~regex or !~regex)")
        if value.startswith(("=~", "!~")):
            try:
                re.compile(value[2:])
            except (re.error, RecursionError, OverflowError) as exc:
                raise ValueError(f"matchers.{label}: invalid regex ({exc})") from None
    for name in ("startsAt", "endsAt"):
        value = body.get(name)
        if value is None and name == "startsAt":
            continue
        if name in body and (
            isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= openapi.MAX_EPOCH_MS
        ):
            raise ValueError(f"{name}: expected epoch milliseconds from 0 to {openapi.MAX_EPOCH_MS}")
    if "endsAt" not in body:
        if "duration" not in body:
            raise ValueError('endsAt or duration: give endsAt (epoch ms) or duration (e.g. "2h")')
        try:
            seconds = parse_duration(body["duration"])
        except ValueError as exc:
            raise ValueError(f"duration: {exc}") from None
        if not seconds * 1000 <= openapi.MAX_EPOCH_MS:  # also NaN and infinity
            raise ValueError(f"duration: at most {openapi.MAX_EPOCH_MS // 1000} seconds")
        body["duration"] = seconds
    starts = body.get("startsAt") or now_ms
    ends = body["endsAt"] if "endsAt" in body else starts + int(body["duration"] * 1000)
    if ends <= starts:
        raise ValueError(f"endsAt: must be after startsAt ({starts}), got {ends}")
    for name in ("createdBy", "comment"):
        if not isinstance(body.get(name), str) or not body[name].strip():
            raise ValueError(f"{name}: required, a non-empty string (createdBy and comment say who and why)")
    return body


def _wall_ms() -> int:
    return int(time.time() * 1000)


def _authorize(deps: WebDeps, request: Request) -> tuple[int, str] | None:
    """Check `Authorization: Bearer $PULSE_API_TOKEN`; return (status, reason) when refused."""
    token = secret_text(deps.config.api_token)
    if not token:
        return 403, "mutating endpoints are disabled: set PULSE_API_TOKEN on the workers"
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return 401, "missing or wrong bearer token"
    return None
