"""Local servers speaking the real wire formats of the notification channels, on 127.0.0.1.

Each HTTP server runs an aiohttp.web app in a background thread with its own event loop, records every
request, and can be told to answer a given status for some requests or some seconds before behaving
normally again. The SMTP server is aiosmtpd with STARTTLS or implicit TLS (certificates from trustme)
and AUTH. `sample_alert` builds the alert objects the notifiers send to them.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import hashlib
import hmac
import itertools
import json
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qsl

import trustme
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from pipeline.rules.engine import State, Transition
from pipeline.tools.procs import free_port


@dataclass(frozen=True)
class Request:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        """The body parsed as application/x-www-form-urlencoded."""
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))

    def header(self, name: str) -> str | None:
        """A header's value, case-insensitively."""
        lowered = {k.lower(): v for k, v in self.headers.items()}
        return lowered.get(name.lower())


@dataclass
class Scripted:
    """An answer given instead of the normal one, a number of times or until a deadline."""

    status: int
    headers: dict[str, str]
    body: bytes
    remaining: int | None
    until: float | None

    def live(self, now: float) -> bool:
        """Whether this answer still applies."""
        if self.until is not None and now >= self.until:
            return False
        return self.remaining is None or self.remaining > 0


class HttpServer:
    """Base of the fake HTTP APIs: threaded aiohttp server, request log, scriptable failures."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.port = 0
        self._script: list[Scripted] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    def answer(
        self,
        status: int,
        *,
        times: int | None = None,
        seconds: float | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | str | Mapping[str, Any] = b"",
    ) -> None:
        """Answer `status` to the next `times` requests, or for `seconds`, instead of the normal answer."""
        if isinstance(body, Mapping):
            raw = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        else:
            raw = body.encode() if isinstance(body, str) else body
        until = time.monotonic() + seconds if seconds is not None else None
        with self._lock:
            self._script.append(Scripted(status, dict(headers or {}), raw, times, until))

    def handle(self, request: Request) -> web.Response:
        """The normal answer; subclasses implement their API here."""
        return web.Response(status=404, text="not found")

    def start(self) -> Self:
        """Start serving on a free loopback port."""
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start")
        return self

    def stop(self) -> None:
        """Stop the server and its thread."""
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._startup())
        ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _startup(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _dispatch(self, raw: web.Request) -> web.Response:
        request = Request(raw.method, raw.path, dict(raw.query), dict(raw.headers), await raw.read())
        with self._lock:
            self.requests.append(request)
            scripted = self._next_scripted()
        if scripted is not None:
            return web.Response(status=scripted.status, headers=scripted.headers, body=scripted.body)
        return self.handle(request)

    def _next_scripted(self) -> Scripted | None:
        now = time.monotonic()
        self._script = [s for s in self._script if s.live(now)]
        if not self._script:
            return None
        current = self._script[0]
        if current.remaining is not None:
            current.remaining -= 1
        return current


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data), content_type="application/json")


def _basic_auth(request: Request) -> tuple[str, str] | None:
    value = request.header("Authorization") or ""
    if not value.startswith("Basic "):
        return None
    user, _, password = base64.b64decode(value[6:]).decode().partition(":")
    return user, password


class SlackServer(HttpServer):
    """Slack's Web API (auth.test, chat.postMessage, chat.update) and one incoming webhook, as Slack
    answers them."""

    webhook_path = "/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"

    def __init__(self, token: str = "xoxb-test-token") -> None:
        super().__init__()
        self.token = token
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}  # (channel id, ts) -> latest args
        self.replies: list[dict[str, Any]] = []  # messages posted with thread_ts
        self.webhook_posts: list[dict[str, Any]] = []
        self._channels: dict[str, str] = {}
        self._ts = itertools.count(100)

    @property
    def api_url(self) -> str:
        """Base URL for slack_sdk's AsyncWebClient."""
        return f"{self.url}/api/"

    @property
    def webhook_url(self) -> str:
        """The incoming webhook's URL (its path is the secret)."""
        return f"{self.url}{self.webhook_path}"

    def channel_id(self, name: str) -> str:
        """The id Slack gives a channel name ("#alerts" -> "C0000000001")."""
        if name.startswith("C") and name[1:].isdigit():
            return name
        return self._channels.setdefault(name, f"C{len(self._channels) + 1:010d}")

    def handle(self, request: Request) -> web.Response:
        """Route to the webhook or to a Web API method."""
        if request.path == self.webhook_path:
            return self._webhook(request)
        method = request.path.removeprefix("/api/")
        if request.header("Authorization") != f"Bearer {self.token}":
            return _json({"ok": False, "error": "invalid_auth"})
        if method == "auth.test":
            return self._auth_test()
        args = self._args(request)
        if method == "chat.postMessage":
            return self._post(args)
        if method == "chat.update":
            return self._update(args)
        return _json({"ok": False, "error": "unknown_method"}, 404)

    def _auth_test(self) -> web.Response:
        """What Slack answers a bot token's auth.test (an invalid token gets invalid_auth, above)."""
        identity = {"team": "O4O", "user": "pulse-bot", "team_id": "T000", "user_id": "U000"}
        return _json({"ok": True, "url": f"{self.url}/", "bot_id": "B000", **identity})

    def _args(self, request: Request) -> dict[str, Any]:
        if (request.header("Content-Type") or "").startswith("application/json"):
            return dict(request.json())
        args: dict[str, Any] = request.form()
        for key in ("blocks", "attachments"):
            if isinstance(args.get(key), str):
                args[key] = json.loads(args[key])
        return args

    def _post(self, args: dict[str, Any]) -> web.Response:
        if not args.get("channel"):
            return _json({"ok": False, "error": "channel_not_found"})
        if not (args.get("text") or args.get("blocks") or args.get("attachments")):
            return _json({"ok": False, "error": "no_text"})
        channel = self.channel_id(str(args["channel"]))
        ts = f"1700000000.{next(self._ts):06d}"
        message = {"type": "message", "ts": ts, **{k: v for k, v in args.items() if k != "channel"}}
        with self._lock:
            if args.get("thread_ts"):
                self.replies.append({"channel": channel, **message})
            else:
                self.messages[(channel, ts)] = message
        return _json({"ok": True, "channel": channel, "ts": ts, "message": message})

    def _update(self, args: dict[str, Any]) -> web.Response:
        key = (self.channel_id(str(args.get("channel", ""))), str(args.get("ts", "")))
        with self._lock:
            if key not in self.messages:
                return _json({"ok": False, "error": "message_not_found"})
            self.messages[key] = {"type": "message", "ts": key[1], "edited": True, **args}
        return _json({"ok": True, "channel": key[0], "ts": key[1], "text": args.get("text", "")})

    def _webhook(self, request: Request) -> web.Response:
        try:
            payload = request.json()
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        if not (payload.get("text") or payload.get("blocks") or payload.get("attachments")):
            return web.Response(status=400, text="no_text")
        with self._lock:
            self.webhook_posts.append(payload)
        return web.Response(text="ok", content_type="text/html")


class SmsServer(HttpServer):
    """Twilio's Messages resource: POST /2010-04-01/Accounts/{sid}/Messages.json with basic auth."""

    base_path = "/2010-04-01"

    def __init__(self, account_sid: str = "AC" + "1" * 32, auth_token: str = "sms-auth-token") -> None:
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.messages: list[dict[str, str]] = []
        self.invalid_numbers: set[str] = set()

    @property
    def api_url(self) -> str:
        """What channels.sms.url is set to."""
        return f"{self.url}{self.base_path}"

    def handle(self, request: Request) -> web.Response:
        """Create a message resource, as Twilio does."""
        if request.path != f"{self.base_path}/Accounts/{self.account_sid}/Messages.json":
            return _json(
                {"code": 20404, "message": "The requested resource was not found", "status": 404}, 404
            )
        if _basic_auth(request) != (self.account_sid, self.auth_token):
            return _json({"code": 20003, "message": "Authenticate", "status": 401}, 401)
        form = request.form()
        if not all(form.get(k) for k in ("To", "From", "Body")):
            return _json({"code": 21602, "message": "Message body is required.", "status": 400}, 400)
        if form["To"] in self.invalid_numbers:
            message = f"The 'To' number {form['To']} is not a valid phone number."
            return _json({"code": 21211, "message": message, "status": 400}, 400)
        with self._lock:
            self.messages.append(form)
            sid = f"SM{len(self.messages):032d}"
        resource = {
            "sid": sid,
            "account_sid": self.account_sid,
            "to": form["To"],
            "from": form["From"],
            "body": form["Body"],
            "status": "queued",
            "num_segments": "1",
            "direction": "outbound-api",
        }
        return _json(resource, 201)


class WebhookServer(HttpServer):
    """A webhook receiver that verifies X-Pulse-Signature over "timestamp.body" with the shared secret."""

    def __init__(self, secret: str | None = None, max_skew_s: float = 300.0) -> None:
        super().__init__()
        self.secret = secret
        self.max_skew_s = max_skew_s
        self.verified: list[bool] = []

    def verify(self, request: Request) -> bool:
        """Whether the request carries a valid, fresh signature."""
        if self.secret is None:
            return False
        timestamp = request.header("X-Pulse-Timestamp") or ""
        given = request.header("X-Pulse-Signature") or ""
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > self.max_skew_s:
            return False
        mac = hmac.new(self.secret.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256)
        return hmac.compare_digest(given, f"sha256={mac.hexdigest()}")

    def handle(self, request: Request) -> web.Response:
        """Accept the payload, rejecting bad signatures with 401 when a secret is set."""
        valid = self.verify(request)
        with self._lock:
            self.verified.append(valid)
        if self.secret is not None and not valid:
            return web.Response(status=401, text="bad signature")
        return web.Response(status=200, text="")


class PagerDutyServer(HttpServer):
    """PagerDuty's Events API v2 (POST /v2/enqueue), with its validation of event bodies."""

    severities = ("critical", "error", "warning", "info")

    def __init__(self, routing_key: str = "R" * 32) -> None:
        super().__init__()
        self.routing_key = routing_key
        self.events: list[dict[str, Any]] = []

    @property
    def api_url(self) -> str:
        """What channels.pagerduty.url is set to."""
        return f"{self.url}/v2/enqueue"

    def problems(self, event: Mapping[str, Any]) -> list[str]:
        """What PagerDuty would reject in an event."""
        errors = []
        if event.get("routing_key") != self.routing_key:
            errors.append("'routing_key' is invalid")
        if event.get("event_action") not in ("trigger", "acknowledge", "resolve"):
            errors.append("'event_action' is invalid")
        if event.get("event_action") != "trigger":
            if not event.get("dedup_key"):
                errors.append("'dedup_key' is missing")
            return errors
        payload = event.get("payload") or {}
        for name in ("summary", "source", "severity"):
            if not payload.get(name):
                errors.append(f"'payload.{name}' is missing")
        if len(str(payload.get("summary", ""))) > 1024:
            errors.append("'payload.summary' is too long")
        if payload.get("severity") not in self.severities:
            errors.append("'payload.severity' is invalid")
        return errors

    def handle(self, request: Request) -> web.Response:
        """Accept a valid event with 202, as PagerDuty does."""
        if request.path != "/v2/enqueue":
            return _json({"status": "not found"}, 404)
        try:
            event = request.json()
        except ValueError:
            return _json({"status": "invalid event", "message": "Event object is invalid"}, 400)
        errors = self.problems(event)
        if errors:
            return _json(
                {"status": "invalid event", "message": "Event object is invalid", "errors": errors}, 400
            )
        with self._lock:
            self.events.append(event)
        return _json(
            {"status": "success", "message": "Event processed", "dedup_key": event["dedup_key"]}, 202
        )


@dataclass
class Received:
    """One email as the SMTP server received it."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    login: str | None

    @property
    def message(self) -> EmailMessage:
        """The parsed message."""
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class _Handler:
    """aiosmtpd handler: stores messages, or answers a scripted SMTP reply to DATA."""

    received: list[Received] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        if self.replies:
            return self.replies.pop(0)
        self.received.append(
            Received(
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                data=bytes(envelope.original_content or b""),
                # STARTTLS sets session.ssl; implicit TLS shows on the transport only.
                tls=session.ssl is not None or server.transport.get_extra_info("sslcontext") is not None,
                login=str(session.auth_data) if session.authenticated else None,
            )
        )
        return "250 Message accepted for delivery"


class SmtpServer:
    """aiosmtpd on loopback with STARTTLS ("starttls"), implicit TLS ("implicit") or none, and AUTH."""

    def __init__(
        self, directory: Path, tls: str = "starttls", user: str = "pulse", password: str = "s3cret"
    ) -> None:
        self.tls = tls
        self.user = user
        self.password = password
        self.handler = _Handler()
        self.ca = trustme.CA()
        self.ca_file = directory / "smtp-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.port = free_port()
        self._controller: Controller | None = None

    @property
    def received(self) -> list[Received]:
        """Messages accepted so far."""
        return self.handler.received

    def reply(self, line: str, times: int = 1) -> None:
        """Answer DATA with this SMTP reply (e.g. "451 4.3.0 try later") for the next `times` messages."""
        self.handler.replies.extend([line] * times)

    def _authenticate(
        self, server: Any, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data == LoginPassword(
            self.user.encode(), self.password.encode()
        )
        return AuthResult(success=ok, handled=False, auth_data=self.user if ok else None)

    def start(self) -> Self:
        """Start the server in its own thread."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        kwargs: dict[str, Any] = {"authenticator": self._authenticate, "auth_required": True}
        if self.tls == "starttls":
            kwargs.update(tls_context=context, require_starttls=True)
        elif self.tls == "implicit":
            # aiosmtpd only counts STARTTLS as TLS when deciding to offer AUTH; this session is TLS from
            # its first byte.
            kwargs.update(ssl_context=context, auth_require_tls=False)
        else:
            kwargs.update(auth_require_tls=False)
        self._controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, **kwargs)
        self._controller.start()
        return self

    def stop(self) -> None:
        """Stop the server."""
        if self._controller is not None:
            self._controller.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sample_alert(
    rule: str = "high_error_rate",
    severity: str = "critical",
    state: str = "firing",
    value: float | None = 0.12,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    fingerprint: str = "a1b2c3d4e5f60718",
) -> dict[str, Any]:
    """An alert object exactly as the rule engine publishes it (Transition.to_alert())."""
    resolved = state == "resolved"
    all_labels = {"alertname": rule, "severity": severity, "service": "order-api", **(labels or {})}
    transition = Transition(
        fingerprint=fingerprint,
        rule=rule,
        state=State(state),
        previous=State.FIRING if resolved else State.PENDING,
        labels=all_labels,
        annotations={
            "summary": "Error rate above 5% on order-api",
            "description": "5xx responses are 12% of requests over 5m",
            "runbook_url": "https://runbooks.example/high_error_rate",
            **(annotations or {}),
        },
        severity=severity,
        value=value,
        threshold=0.05,
        metric="error_rate",
        service=all_labels["service"],
        at_ms=1_767_322_000_000 + (600_000 if resolved else 0),
        starts_at_ms=1_767_322_000_000,
        ends_at_ms=1_767_322_600_000 if resolved else None,
    )
    return transition.to_alert()
