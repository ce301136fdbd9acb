"""Slack: Block Kit messages through the Web API (updatable on resolve) or an incoming webhook."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from agents.notifiers.base import (
    BROKEN,
    DELIVERED,
    FAILED,
    OK,
    RETRY,
    SKIPPED,
    Notification,
    Notifier,
    Outcome,
    Probe,
    classify_http,
    describe,
    group_severity,
    headline,
    hidden_url,
    number,
    parse_retry_after,
    redact,
    runbook,
)
from pipeline.alerting.context import of_alert, text_lines
from pipeline.alerting.text import clip, clip_escaped, one_line, slack_text
from pipeline.config.settings import ChannelsConfig, secret_text, shown_url

log = logging.getLogger(__name__)

COLOURS = {
    "critical": "#d40e0d",
    "high": "#ff7f00",
    "medium": "#f2c744",
    "low": "#439fe0",
    "resolved": "#2eb67d",
}
EMOJI = {
    "critical": ":red_circle:",
    "high": ":large_orange_circle:",
    "medium": ":large_yellow_circle:",
    "low": ":large_blue_circle:",
    "resolved": ":white_check_mark:",
}
MAX_SECTIONS = 10
_HEADER_MAX = 150  # Block Kit limit of a header's text
_SECTION_MAX = 3000  # Block Kit limit of a section's text
_LABELS_MAX = 1500
# Errors after which the same request may succeed later; every other Slack error is permanent.
_TRANSIENT = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
_AUTH_ADVICE = "check PULSE_SLACK_BOT_TOKEN (a bot token, xoxb-...) and the app's installation"
_CHANNEL_HINT = "check PULSE_SLACK_CHANNEL and invite the app to that channel (/invite @app)"
HINTS = {
    "invalid_auth": _AUTH_ADVICE,
    "not_authed": _AUTH_ADVICE,
    "token_revoked": _AUTH_ADVICE,
    "account_inactive": _AUTH_ADVICE,
    "missing_scope": "give the app the chat:write scope and reinstall it",
    "channel_not_found": _CHANNEL_HINT,
    "not_in_channel": _CHANNEL_HINT,
    "is_archived": "the channel is archived: set PULSE_SLACK_CHANNEL to a live one",
}
"""What to change for the Slack errors that no retry can fix."""
# The original message cannot be edited any more: say "resolved" in a new message instead.
_GONE = {"message_not_found", "cant_update_message", "edit_window_closed", "msg_too_long"}


def colour(n: Notification) -> str:
    """Attachment colour: green when resolved, else by the group's severity."""
    if n.status == "resolved":
        return COLOURS["resolved"]
    return COLOURS.get(group_severity(n), COLOURS["low"])


def render(n: Notification) -> dict[str, Any]:
    """The message: fallback text plus one coloured attachment holding the Block Kit blocks."""
    key = "resolved" if n.status == "resolved" else group_severity(n)
    title = one_line(f"{EMOJI.get(key, EMOJI['low'])} {headline(n)}")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": clip(title, _HEADER_MAX), "emoji": True}}
    ]
    for alert in n.alerts[:MAX_SECTIONS]:
        blocks.extend(alert_blocks(alert))
    if len(n.alerts) > MAX_SECTIONS:
        more = len(n.alerts) - MAX_SECTIONS
        blocks.append(context(f"and {more} more"))
    blocks.append(context(f"<{link(n.external_url)}|Open o4o-pulse>"))
    return {
        "text": slack_text(one_line(headline(n))),
        "attachments": [{"color": colour(n), "blocks": blocks}],
    }


def alert_blocks(alert: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One section (title, message, value vs threshold, runbook) and a context line of labels."""
    state = "resolved" if alert.get("state") == "resolved" else str(alert.get("severity", ""))
    lines = [f"{EMOJI.get(state, EMOJI['low'])} *{slack_text(str(alert.get('title', '')))}*"]
    message = str(alert.get("message") or "")
    if message:
        lines.append(slack_text(message))
    value, threshold = number(alert.get("currentValue")), number(alert.get("threshold"))
    lines.append(f"*Value:* `{value}`  *Threshold:* `{threshold}`")
    url = runbook(alert)
    if url:
        lines.append(f"<{link(url)}|Runbook>")
    section = {
        "type": "section",
        "text": {"type": "mrkdwn", "text": clip_escaped("\n".join(lines), _SECTION_MAX)},
    }
    blocks = [section, *context_table(alert)]
    labels = alert.get("labels") or {}
    text = "  ".join(f"`{slack_text(str(k))}={slack_text(str(v))}`" for k, v in sorted(labels.items()))
    return [*blocks, context(clip_escaped(text, _LABELS_MAX))] if text else blocks


def context_table(alert: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The alert's context (top routes, error codes...) as a monospace table in one section, or nothing.

    Slack has no tables: the columns are aligned in a code block. Event text is escaped, and a backtick
    in it cannot close the block (it is shown as a look-alike).
    """
    found = of_alert(alert)
    if found is None:
        return []
    table = slack_text("\n".join(text_lines(found)).replace("`", "\u02cb"))
    body = clip_escaped(table, _SECTION_MAX - 20)
    return [{"type": "section", "text": {"type": "mrkdwn", "text": f"*Context*\n```{body}```"}}]


def context(text: str) -> dict[str, Any]:
    """A context block with one mrkdwn element (text already escaped)."""
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def link(url: str) -> str:
    """A URL made safe inside Slack's <url|label> syntax."""
    return slack_text(url).replace("|", "%7C")


class SlackNotifier(Notifier):
    """Posts to Slack; with a bot token and channel a resolve edits the original message and replies in
    its thread, with only an incoming webhook a resolve is a new message."""

    channel = "slack"

    def __init__(self, config: ChannelsConfig) -> None:
        super().__init__(config)
        self._web: AsyncWebClient | None = None
        self._hook: AsyncWebhookClient | None = None
        self._sdk_log = _sdk_logger(config)

    @classmethod
    def configured(cls, config: ChannelsConfig) -> bool:
        """A webhook URL, or a bot token with a channel."""
        slack = config.slack
        return bool(slack.webhook_url or (slack.bot_token and slack.channel))

    @property
    def uses_web_api(self) -> bool:
        """Whether messages go through the Web API (bot token and channel set)."""
        return bool(self.config.slack.bot_token and self.config.slack.channel)

    async def send(self, notification: Notification) -> Outcome:
        """Post (or update) the group's message; one attempt."""
        try:
            if self.uses_web_api:
                return await self._send_web(notification)
            return await self._send_hook(notification)
        except SlackApiError as exc:
            return self._api_error(exc)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return self.outcome(RETRY, f"slack: {describe(exc)}")
        except SlackClientError as exc:
            return self.outcome(FAILED, f"slack: {describe(exc)}")

    def shown_target(self) -> str:
        """The Web API and its channel, or "incoming webhook" (the webhook's URL is its secret)."""
        if self.uses_web_api:
            return f"{shown_url(self.config.slack.api_url)} (Web API, {self.config.slack.channel})"
        return f"incoming webhook {hidden_url(str(secret_text(self.config.slack.webhook_url)))}"

    async def probe(self) -> Probe:
        """`auth.test` with the bot token (it posts nothing); an incoming webhook cannot be tested."""
        if not self.uses_web_api:
            detail = "skipped: an incoming webhook cannot be tested without posting"
            if self.config.slack.bot_token:
                detail += " (PULSE_SLACK_BOT_TOKEN is not used without PULSE_SLACK_CHANNEL)"
            return Probe(SKIPPED, self.shown_target(), detail)
        try:
            reply = await self.web().auth_test()
        except SlackApiError as exc:
            return Probe(BROKEN, self.shown_target(), self._api_error(exc).reason)
        except (aiohttp.ClientError, TimeoutError, OSError, SlackClientError) as exc:
            reason = redact(f"slack auth.test: {describe(exc)}", self.config)
            return Probe(BROKEN, self.shown_target(), reason)
        who = ", ".join(f"{key} {reply.get(key)}" for key in ("user", "team") if reply.get(key))
        valid = f"the token is valid ({who})" if who else "the token is valid"
        detail = f"auth.test: {valid}; the channel is checked only by a post"
        return Probe(OK, self.shown_target(), redact(detail, self.config))

    async def _send_web(self, n: Notification) -> Outcome:
        client = self.web()
        message = render(n)
        previous = n.previous or {}
        channel, ts = previous.get("channel"), previous.get("ts")
        if n.status == "resolved" and channel and ts:
            try:
                await client.chat_update(channel=str(channel), ts=str(ts), **message)
            except SlackApiError as exc:
                if _error(exc) not in _GONE:
                    raise
                log.info(
                    "slack: original message gone (%s), posting the resolve anew",
                    redact(_error(exc), self.config),
                )
            else:
                await client.chat_postMessage(
                    channel=str(channel), thread_ts=str(ts), text=f":white_check_mark: {message['text']}"
                )
                return Outcome(DELIVERED, meta={"channel": str(channel), "ts": str(ts)})
        response = await client.chat_postMessage(channel=str(self.config.slack.channel), **message)
        return Outcome(DELIVERED, meta={"channel": response.get("channel"), "ts": response.get("ts")})

    async def _send_hook(self, n: Notification) -> Outcome:
        response = await self.hook().send(**render(n))
        headers = {str(k): str(v) for k, v in (response.headers or {}).items()}
        outcome = classify_http(response.status_code, headers, "slack webhook")
        if outcome.kind == DELIVERED:
            return outcome
        body = one_line(str(response.body or ""), 200)
        return self.outcome(outcome.kind, f"{outcome.reason}: {body}", retry_after=outcome.retry_after)

    def _api_error(self, exc: SlackApiError) -> Outcome:
        response = exc.response
        status = int(getattr(response, "status_code", 0) or 0)
        error = _error(exc) or f"HTTP {status}"
        reason = f"slack {getattr(response, 'api_url', '').rsplit('/', 1)[-1]}: {error}"
        if status == 429 or error == "ratelimited":
            headers = getattr(response, "headers", {}) or {}
            retry_after = parse_retry_after(headers.get("Retry-After") or headers.get("retry-after"))
            return self.outcome(RETRY, reason, retry_after=retry_after)
        if error in _TRANSIENT or status >= 500 or status == 408:
            return self.outcome(RETRY, reason)
        hint = HINTS.get(error)
        return self.outcome(FAILED, f"{reason}; {hint}" if hint else reason)

    def web(self) -> AsyncWebClient:
        """The Web API client, sharing the notifier's session; it never retries on its own."""
        if self._web is None:
            self._web = AsyncWebClient(
                token=secret_text(self.config.slack.bot_token),
                base_url=self.config.slack.api_url,
                timeout=math.ceil(self.config.timeout),
                session=self.session(),
                logger=self._sdk_log,
                retry_handlers=[],
            )
        return self._web

    def hook(self) -> AsyncWebhookClient:
        """The incoming-webhook client, sharing the notifier's session; it never retries on its own."""
        if self._hook is None:
            self._hook = AsyncWebhookClient(
                url=str(secret_text(self.config.slack.webhook_url)),
                timeout=math.ceil(self.config.timeout),
                session=self.session(),
                logger=self._sdk_log,
                retry_handlers=[],
            )
        return self._hook

    async def close(self) -> None:
        """Close the session the SDK clients share."""
        self._web = self._hook = None
        await super().close()


def _error(exc: SlackApiError) -> str:
    data = getattr(exc.response, "data", None)
    return str(data.get("error", "")) if isinstance(data, dict) else ""


class _Redacting(logging.Filter):
    """Rewrites the SDK's debug lines, which print the webhook URL and the Authorization header."""

    def __init__(self, config: ChannelsConfig) -> None:
        super().__init__()
        self.config = config

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage(), self.config), None
        return True


def _sdk_logger(config: ChannelsConfig) -> logging.Logger:
    """A logger for the SDK, private to this notifier (its filter knows this config's secrets)."""
    sdk = logging.Logger(f"{__name__}.sdk")
    sdk.parent = log  # unregistered, so the filter is not shared, yet records still reach our handlers
    sdk.addFilter(_Redacting(config))
    return sdk
