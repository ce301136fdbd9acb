"""SMS through a Twilio-style REST API: one form-encoded POST per recipient to
{url}/Accounts/{account_sid}/Messages.json (url like https://api.twilio.com/2010-04-01), HTTP basic auth
(account_sid, auth_token, or the credentials written in the URL when it has them).

Partial delivery: a notification counts as delivered only when every recipient's message was accepted.
When some recipients fail, the outcome is a retry if any failure is transient (else failed, naming the
permanent failure). Recipients that already accepted a notification are remembered by its key in this
process, so a retry of the same notification only reaches the ones still missing; after a restart a
retried notification may reach them twice.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import aiohttp

from agents.notifiers.base import (
    DELIVERED,
    FAILED,
    RETRY,
    Notification,
    Notifier,
    Outcome,
    Probe,
    headline,
    hidden_url,
    number,
)
from pipeline.alerting.text import one_line, sms_text
from pipeline.config.settings import ChannelsConfig, secret_text

_REMEMBERED_KEYS = 1024
HINT_AUTH = (
    "the API refused the credentials: check PULSE_SMS_TOKEN and channels.sms.account_sid (or the "
    "credentials written in PULSE_SMS_URL)"
)
HINT_PATH = (
    "the API has no such Messages resource: check channels.sms.account_sid and PULSE_SMS_URL (for "
    "Twilio https://api.twilio.com/2010-04-01)"
)
"""What to change when the SMS API refuses the account's credentials, or has no such account."""


def body(n: Notification, max_chars: int) -> str:
    """The SMS text: headline, first alert's title and value, count of the rest; plain, cut to max_chars."""
    parts = [headline(n)]
    if n.alerts:
        first = n.alerts[0]
        parts.append(f"{one_line(str(first.get('title', '')))} (value {number(first.get('currentValue'))}")
        parts[-1] += f", threshold {number(first.get('threshold'))})"
    if len(n.alerts) > 1:
        parts.append(f"+{len(n.alerts) - 1} more")
    return sms_text(" - ".join(parts), max_chars)


def masked(phone: str) -> str:
    """A phone number for logs and reasons: only its last four digits."""
    return f"…{phone[-4:]}" if len(phone) > 4 else "…"


class SmsNotifier(Notifier):
    """Sends the notification's text to every configured number."""

    channel = "sms"
    needs = ("url", "to")
    """An API URL and at least one recipient."""

    def __init__(self, config: ChannelsConfig) -> None:
        super().__init__(config)
        self._accepted: OrderedDict[str, set[str]] = OrderedDict()

    @property
    def endpoint(self) -> str:
        """The Messages resource of the account."""
        sms = self.config.sms
        base = str(secret_text(sms.url)).rstrip("/")
        return f"{base}/Accounts/{quote(sms.account_sid, safe='')}/Messages.json"

    async def send(self, notification: Notification) -> Outcome:
        """Send to each recipient that has not accepted this notification yet."""
        done = self._accepted.setdefault(notification.key, set())
        self._accepted.move_to_end(notification.key)
        while len(self._accepted) > _REMEMBERED_KEYS:
            self._accepted.popitem(last=False)
        text = body(notification, self.config.sms.max_chars)
        results: dict[str, Outcome] = {}
        for recipient in self.config.sms.to:
            if recipient in done:
                continue
            results[recipient] = outcome = await self._send_one(recipient, text)
            if outcome.kind == DELIVERED:
                done.add(recipient)
        return self._combine(results, len(done), text)

    async def _send_one(self, recipient: str, text: str) -> Outcome:
        url, authorization = self.target()
        form = {"To": recipient, "From": self.config.sms.sender, "Body": text}
        headers = {"Authorization": authorization}
        return await self.post(url, f"sms to {masked(recipient)}", data=form, headers=headers)

    def target(self) -> tuple[str, str]:
        """The endpoint without credentials, and the basic Authorization header value.

        Credentials written in the URL (https://SID:TOKEN@host/...) win over account_sid and auth_token.
        """
        parts = urlsplit(self.endpoint)
        if parts.username is None:
            sms = self.config.sms
            return self.endpoint, aiohttp.encode_basic_auth(
                sms.account_sid, secret_text(sms.auth_token) or ""
            )
        bare = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
        return bare, aiohttp.encode_basic_auth(unquote(parts.username), unquote(parts.password or ""))

    def shown_target(self) -> str:
        """The API's host only: its URL is a secret, and may hold the credentials."""
        return f"{hidden_url(self.target()[0])} ({len(self.config.sms.to)} number(s))"

    async def probe(self) -> Probe:
        """HEAD the Messages resource with the account's credentials: a refusal (401, 403) says they are
        wrong, a 404 that the resource is not there; any other answer below 500 shows the API is
        there. No message is created."""
        url, authorization = self.target()
        refused = {401: HINT_AUTH, 403: HINT_AUTH, 404: HINT_PATH}
        return await self.probe_http(url, refused=refused, headers={"Authorization": authorization})

    def _combine(self, results: Mapping[str, Outcome], accepted: int, text: str) -> Outcome:
        meta: dict[str, Any] = {
            "accepted": accepted,
            "recipients": len(self.config.sms.to),
            "chars": len(text),
        }
        retries = [o for o in results.values() if o.kind == RETRY]
        failures = [o for o in results.values() if o.kind == FAILED]
        if retries:
            waits = [o.retry_after for o in retries if o.retry_after is not None]
            reason = "; ".join(o.reason for o in retries + failures)
            return self.outcome(RETRY, reason, retry_after=max(waits) if waits else None, meta=meta)
        if failures:
            return self.outcome(FAILED, "; ".join(o.reason for o in failures), meta=meta)
        return Outcome(DELIVERED, meta=meta)
