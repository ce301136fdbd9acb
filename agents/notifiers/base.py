"""The notifier interface: one notification, one attempt, one outcome; retries with backoff; redaction."""

from __future__ import annotations

import abc
import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar
from urllib.parse import quote, unquote, urlsplit

import aiohttp

from pipeline.alerting.text import one_line
from pipeline.config.settings import ChannelsConfig, secret_text

log = logging.getLogger(__name__)

DELIVERED = "delivered"
RETRY = "retry"
FAILED = "failed"
OK = "ok"
BROKEN = "broken"
SKIPPED = "skipped"
"""What `pulse check` found: a channel that answers, one that does not, or one it cannot test."""
USER_AGENT = "o4o-pulse"
_BODY_EXCERPT = 200


@dataclass(frozen=True)
class Notification:
    """One message to one receiver about one alert group."""

    receiver: str
    group_key: str
    status: str  # "firing" or "resolved"; firing when any alert of the group fires
    alerts: tuple[Mapping[str, Any], ...]  # Transition.to_alert() objects
    group_labels: Mapping[str, str]
    key: str  # idempotency key (the ledger key)
    external_url: str
    previous: Mapping[str, Any] | None = None  # meta of this channel's delivered firing notification

    @property
    def firing(self) -> tuple[Mapping[str, Any], ...]:
        """Alerts of the group that are not resolved."""
        return tuple(a for a in self.alerts if not is_resolved(a))

    @property
    def resolved(self) -> tuple[Mapping[str, Any], ...]:
        """Alerts of the group that are resolved."""
        return tuple(a for a in self.alerts if is_resolved(a))


@dataclass(frozen=True)
class Outcome:
    """The result of one delivery attempt."""

    kind: str  # DELIVERED, RETRY or FAILED (permanent)
    reason: str = ""
    retry_after: float | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the notification was delivered."""
        return self.kind == DELIVERED


@dataclass(frozen=True)
class Probe:
    """What a channel's check found, without sending a notification: OK, BROKEN or SKIPPED."""

    status: str
    target: str  # where it connected, without secrets
    detail: str = ""


class Notifier(abc.ABC):
    """One channel: renders a notification in its wire format and makes one delivery attempt."""

    channel: ClassVar[str]
    needs: ClassVar[tuple[str, ...]] = ()
    """The settings of `channels.<channel>` that must all be set for the channel to be on."""

    def __init__(self, config: ChannelsConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def configured(cls, config: ChannelsConfig) -> bool:
        """Whether the config has what this channel needs (every one of `needs`)."""
        section = getattr(config, cls.channel)
        return bool(cls.needs) and all(getattr(section, name) for name in cls.needs)

    @abc.abstractmethod
    async def send(self, notification: Notification) -> Outcome:
        """Make one delivery attempt; delivery problems become an Outcome, never an exception."""

    def shown_target(self) -> str:
        """Where the channel connects, for `pulse check`; no secret."""
        return self.channel

    async def probe(self) -> Probe:
        """Check that the channel can be reached without sending a notification (`pulse check`)."""
        return Probe(SKIPPED, self.shown_target(), "skipped: this channel has no check that does not send")

    async def probe_http(
        self,
        url: str,
        method: str = "HEAD",
        *,
        what: str | None = None,
        refused: Mapping[int, str] | None = None,
        only_2xx: str | None = None,
        **kwargs: Any,
    ) -> Probe:
        """Ask `url` once, following no redirect. Any answer below 500 proves that the server answers
        (a 404 or 405 to HEAD too), except the statuses in `refused`, which mean that the setting their
        hint names is wrong; with `only_2xx` (a hint), every answer but 2xx means that."""
        target, what = self.shown_target(), what or method
        try:
            async with self.session().request(method, url, allow_redirects=False, **kwargs) as response:
                status = response.status
        except aiohttp.InvalidURL:
            return Probe(BROKEN, target, f"{what}: invalid URL")
        except TimeoutError:
            return Probe(BROKEN, target, f"{what}: no answer within {self.config.timeout:g}s")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return Probe(BROKEN, target, redact(f"{what}: {describe(exc)}", self.config))
        answered = f"{what} answered HTTP {status}"
        if status >= 500:
            return Probe(BROKEN, target, f"{answered}: the server fails")
        hint = (refused or {}).get(status)
        if hint is None and only_2xx is not None and not 200 <= status < 300:
            hint = only_2xx
        if hint is not None:
            return Probe(BROKEN, target, f"{answered}; {hint}")
        if status >= 400:
            return Probe(OK, target, f"{answered} (the server answers; only a notification tests the rest)")
        return Probe(OK, target, answered)

    async def close(self) -> None:
        """Release the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def session(self) -> aiohttp.ClientSession:
        """The notifier's one HTTP session, created on first use inside the running loop."""
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.config.timeout)
            self._session = aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": USER_AGENT})
        return self._session

    async def post(self, url: str, what: str, **kwargs: Any) -> Outcome:
        """POST once and classify the answer; network errors and timeouts become a retry."""
        try:
            async with self.session().post(url, **kwargs) as response:
                body = await response.text(errors="replace")
                outcome = classify_http(response.status, response.headers, what)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if isinstance(exc, aiohttp.InvalidURL):
                return self.outcome(FAILED, f"{what}: invalid URL")
            return self.outcome(RETRY, f"{what}: {describe(exc)}")
        except ValueError as exc:  # aiohttp refuses a request it cannot build: a config problem
            return self.outcome(FAILED, f"{what}: {describe(exc)}")
        if outcome.kind != DELIVERED and body.strip():
            outcome = replace(outcome, reason=f"{outcome.reason}: {one_line(body, _BODY_EXCERPT)}")
        return replace(outcome, reason=redact(outcome.reason, self.config))

    def outcome(self, kind: str, reason: str = "", **kwargs: Any) -> Outcome:
        """Build an Outcome whose reason has every secret of the config redacted."""
        return Outcome(kind, redact(reason, self.config), **kwargs)


def hidden_url(url: str) -> str:
    """A URL whose path or credentials are its secret, shown as scheme://host:port/*** only."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "***"
    if not parts.scheme or not host:
        return "***"
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}/***"


def is_resolved(alert: Mapping[str, Any]) -> bool:
    """Whether an alert object is resolved."""
    return alert.get("state") == "resolved"


def describe(exc: BaseException) -> str:
    """Short text of an exception: its type and message (callers redact it)."""
    text = str(exc) or "no detail"
    return f"{type(exc).__name__}: {one_line(text, _BODY_EXCERPT)}"


def classify_http(status: int, headers: Mapping[str, str], what: str) -> Outcome:
    """Map an HTTP status to an Outcome: 2xx delivered, 408/429/5xx retry, other 4xx failed."""
    meta = {"status": status}
    if 200 <= status < 300:
        return Outcome(DELIVERED, meta=meta)
    reason = f"{what}: HTTP {status}"
    if status == 429:
        return Outcome(RETRY, reason, retry_after=parse_retry_after(headers.get("Retry-After")), meta=meta)
    if status == 408 or status >= 500:
        return Outcome(RETRY, reason, meta=meta)
    # 1xx and 3xx should not reach here (redirects are followed); treat them as broken endpoints.
    return Outcome(FAILED, reason, meta=meta)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (delta seconds or an HTTP date); None if unusable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, moment.timestamp() - current)


_QUERY = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s?#'\"<>]*)\?[^\s#'\"<>]*", re.IGNORECASE)
_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^\s/@'\"<>]+@", re.IGNORECASE)


def _secrets(config: ChannelsConfig) -> list[str]:
    """Every secret value of the channels config, with the forms it may take inside messages."""
    raw = [
        secret_text(config.slack.webhook_url),
        secret_text(config.slack.bot_token),
        secret_text(config.email.smtp_password),
        secret_text(config.sms.url),
        secret_text(config.sms.auth_token),
        secret_text(config.webhook.url),
        secret_text(config.webhook.signing_secret),
        secret_text(config.pagerduty.routing_key),
    ]
    found: set[str] = set()
    for value in raw:
        if not value:
            continue
        found.update({value, quote(value, safe=""), unquote(value)})
        found.update(_url_parts(value))
    return sorted((s for s in found if s), key=len, reverse=True)


def _url_parts(value: str) -> set[str]:
    """The secret-bearing parts of a URL (path, userinfo), which libraries may print on their own."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return set()
    if not parts.scheme or not parts.netloc:
        return set()
    found = {parts.path} if len(parts.path) > 1 else set()
    if parts.password:
        found.add(parts.password)
    if parts.username:
        found.add(parts.username)
    return found


_SHORT = 8


def redact(text: str, config: ChannelsConfig) -> str:
    """Replace every configured secret, URL query string and URL userinfo in text by '***'."""
    for secret in _secrets(config):
        if len(secret) >= _SHORT:
            text = text.replace(secret, "***")
        else:
            # A short secret is hidden where it stands alone; replacing it inside words would shred
            # every message (a secret "t" would turn "timeout" into "***imeou***").
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
    text = _USERINFO.sub(r"\1***@", text)
    return _QUERY.sub(r"\1?***", text)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by attempts and by total time."""

    initial_s: float = 1.0
    max_s: float = 60.0
    multiplier: float = 2.0
    max_attempts: int = 8
    budget_s: float = 600.0

    def backoff(self, retry: int, rand: Callable[[], float]) -> float:
        """Delay before retry number `retry` (0 for the first): uniform in [0, min(max, initial*mult^k)]."""
        ceiling = min(self.max_s, self.initial_s * self.multiplier**retry)
        return rand() * ceiling


async def deliver(
    notifier: Notifier,
    n: Notification,
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[Outcome, int]:
    """Send until delivered, permanently failed, or out of attempts or time; return (outcome, attempts)."""
    started = clock()
    attempts = 0
    while True:
        outcome = await notifier.send(n)
        attempts += 1
        if outcome.kind != RETRY:
            return outcome, attempts
        if attempts >= policy.max_attempts:
            return _spent(outcome, notifier), attempts
        # A server's Retry-After is what it asked for: waiting less only earns another 429.
        delay = outcome.retry_after if outcome.retry_after is not None else policy.backoff(attempts - 1, rand)
        if clock() - started + delay > policy.budget_s:
            return _spent(outcome, notifier), attempts
        log.info(
            "%s to %s: attempt %d will be retried in %.1fs: %s",
            notifier.channel,
            n.receiver,
            attempts,
            delay,
            redact(outcome.reason, notifier.config),
        )
        await sleep(delay)


def _spent(outcome: Outcome, notifier: Notifier) -> Outcome:
    reason = redact(f"retry budget spent: {outcome.reason}", notifier.config)
    return replace(outcome, kind=FAILED, reason=reason, retry_after=None)


def group_name(n: Notification) -> str:
    """The group's alert name: the alertname group label, else the first alert's rule."""
    name = n.group_labels.get("alertname")
    if name:
        return str(name)
    return str(n.alerts[0].get("rule", "alert")) if n.alerts else "alert"


SEVERITY_ORDER = ("critical", "high", "medium", "low")


def group_severity(n: Notification) -> str:
    """The group's severity: its severity label, else the highest among its alerts."""
    label = n.group_labels.get("severity")
    if label:
        return str(label)
    found = {str(a.get("severity", "")) for a in n.alerts}
    for severity in SEVERITY_ORDER:
        if severity in found:
            return severity
    return next(iter(sorted(found)), "") if found else ""


def headline(n: Notification) -> str:
    """Alertmanager-style headline, e.g. "[FIRING:2] high_error_rate critical" (not escaped)."""
    count = len(n.firing) if n.status == "firing" else len(n.alerts)
    parts = [f"[{n.status.upper()}:{count}]", group_name(n), group_severity(n)]
    return " ".join(p for p in parts if p)


def number(value: Any) -> str:
    """A metric value for people: 4 significant digits, or n/a."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "n/a"
    return f"{value:.4g}"


def runbook(alert: Mapping[str, Any]) -> str | None:
    """The alert's runbook URL when it is an http(s) URL."""
    annotations = alert.get("annotations") or {}
    url = str(annotations.get("runbook_url") or "")
    return url if urlsplit(url).scheme in ("http", "https") else None


def now_rfc3339() -> str:
    """The current UTC time in RFC 3339 with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
