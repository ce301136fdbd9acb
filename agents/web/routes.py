"""HTTP endpoints of a worker, served by Faust's web server on PULSE_WEB_PORT."""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from faust.web import Request, Response, View
from msgspec import structs

from agents.history import HistoryQuery
from agents.silences import new_silence
from agents.web import health, metrics, page
from pipeline.config.settings import secret_text
from pipeline.readout.figures import all_series_values
from schemas.events import TOPIC_OF_TYPE

if TYPE_CHECKING:
    from faust import App

    from agents.web.ports import WebDeps


def _now_ms(request: Request) -> int:
    at = request.query.get("at")
    if at:
        return int(float(at))
    return int(time.time() * 1000)


def register(app: App, deps: WebDeps) -> None:
    """Register every view on the worker's web server; the views read only through `deps`."""
    metrics.register_collector(deps)
    page.register(app)

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            status, body = health.health_body(deps)
            return self.json(body, status=status)

    @app.page("/health/detailed")
    class DetailedHealth(View):
        async def get(self, request: Request) -> Response:
            status, body = health.detailed_body(deps)
            return self.json(body, status=status)

    @app.page("/ready")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            status, body = health.ready_body(deps)
            return self.json(body, status=status)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(metrics.render(deps), content_type=metrics.CONTENT_TYPE)

    @app.page("/api/v1/series")
    class Series(View):
        async def get(self, request: Request) -> Response:
            now_ms = _now_ms(request)
            states = deps.series.states()
            kind = request.query.get("kind")
            series = [
                {"key": key, **values}
                for key, values in all_series_values(states, now_ms, deps.config)
                if kind is None or values["kind"] == kind
            ]
            return self.json(
                {
                    "at": now_ms,
                    "partitions": sorted(deps.ownership.active_partitions()),
                    "series": series,
                }
            )

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
                return self.json({"status": "error", "error": denied[1]}, status=denied[0])
            try:
                body = await request.json()
                if not isinstance(body, dict):
                    raise ValueError("the body must be a JSON object")
                silence = new_silence(body, _wall_ms())
            except ValueError as exc:
                return self.json({"status": "error", "error": str(exc)}, status=400)
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
                return self.json({"status": "error", "error": denied[1]}, status=denied[0])
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
                return self.json({"status": "error", "error": denied[1]}, status=denied[0])
            topic = TOPIC_OF_TYPE.get(event_type)
            if topic is None:
                known = ", ".join(sorted(TOPIC_OF_TYPE))
                return self.json(
                    {"status": "error", "error": f"unknown event type; one of {known}"}, status=404
                )
            body = await request.read()
            limit = deps.config.ingest.max_message_bytes
            if len(body) > limit:
                return self.json({"status": "error", "error": f"body over {limit} bytes"}, status=413)
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
        number = float(text)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{name}: expected RFC 3339 or epoch seconds, got {text!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
    else:
        parsed = datetime.fromtimestamp(number / 1000 if number > 1e11 else number, UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{parsed.microsecond // 1000:03d}Z"


def history_query(query: Mapping[str, str]) -> HistoryQuery:
    """Parse the filters of GET /api/v1/alerts/history (severity, rule, state, since, until, limit)."""
    limit_text = query.get("limit", "100")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 10_000:
        raise ValueError(f"limit: expected a whole number from 1 to 10000, got {limit_text!r}")
    return HistoryQuery(
        severity=_listed(query, "severity"),
        rule=_listed(query, "rule"),
        state=_listed(query, "state"),
        since=_instant(query.get("since"), "since"),
        until=_instant(query.get("until"), "until"),
        limit=int(limit_text),
    )


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
