"""`pulse check` (alias `pulse doctor`): does the setup work? Checked without sending an alert.

One row per check: the config, the rules (the worker's loader and rules file), the broker (found as
the other client commands find it) and every configured channel (each notifier's `probe`: an SMTP
handshake, Slack's `auth.test`, an HTTP HEAD or Alertmanager's `/-/ready`). The broker and the channels
are checked at the same time, each within the timeout. Exit status: 0 when nothing is broken (skipped
is fine), 1 when something is, 2 when the config does not load (nothing else can be checked then).
No secret appears in a row: targets hide secret URLs, and every text is redacted once more at the end.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import orjson
from pydantic import BaseModel, SecretStr

from agents.notifiers import CHANNELS, notifiers
from agents.notifiers.base import BROKEN, OK, SKIPPED, Notifier, Probe, describe, redact
from pipeline.config.settings import ChannelsConfig, Config, PagerDutyConfig, load_config, shown_url
from pipeline.errors import PulseError
from pipeline.rules import load_rules
from pipeline.tools import endpoint

DEFAULT_TIMEOUT = 5.0
EXIT_OK = 0
EXIT_BROKEN = 1
EXIT_CANNOT_RUN = 2


@dataclass(frozen=True)
class Row:
    """One check: what, its status (ok, broken, skipped), where (no secret) and what it found."""

    check: str
    status: str
    target: str
    detail: str = ""


def exit_status(rows: Sequence[Row]) -> int:
    """2 when the config does not load, 1 when any check is broken, else 0 (skipped counts as fine)."""
    if any(row.check == "config" and row.status == BROKEN for row in rows):
        return EXIT_CANNOT_RUN
    if any(row.status == BROKEN for row in rows):
        return EXIT_BROKEN
    return EXIT_OK


def summary(rows: Sequence[Row]) -> str:
    """The line under the table."""
    code = exit_status(rows)
    if code == EXIT_CANNOT_RUN:
        return "cannot check anything else: the config does not load; fix it and run `pulse check` again"
    broken = [row.check for row in rows if row.status == BROKEN]
    if broken:
        return f"{len(broken)} of {len(rows)} checks broken: {', '.join(broken)}"
    skipped = sum(row.status == SKIPPED for row in rows)
    return f"all {len(rows)} checks pass" + (f" ({skipped} skipped)" if skipped else "")


HEADER = Row("CHECK", "STATUS", "TARGET", "DETAIL")


def table(rows: Sequence[Row]) -> str:
    """The rows as aligned columns; a detail of several lines continues under its column."""
    shown = [HEADER, *rows]
    widths = [max(len(getattr(row, name)) for row in shown) for name in ("check", "status", "target")]
    indent = " " * (sum(widths) + 2 * len(widths))
    lines = []
    for row in shown:
        first, *more = row.detail.splitlines() or [""]
        cells = (row.check, row.status, row.target)
        head = "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        lines.append(f"{head}  {first}".rstrip())
        lines.extend(f"{indent}{line.strip()}" for line in more)
    lines.append(summary(rows))
    return "\n".join(lines)


def as_json(rows: Sequence[Row]) -> str:
    """The rows as one JSON object: {"exit": 0|1|2, "summary": ..., "checks": [{check, status, ...}]}."""
    body = {"exit": exit_status(rows), "summary": summary(rows), "checks": [asdict(row) for row in rows]}
    return orjson.dumps(body).decode()


# --- the checks -----------------------------------------------------------------------------------


def check_config(env: dict[str, str] | None = None) -> tuple[Row, Config | None]:
    """Load the config as every command does; the row carries load_config's message when it fails."""
    source = (env if env is not None else os.environ).get("PULSE_CONFIG")
    target = f"{source} + environment" if source else "environment (no PULSE_CONFIG)"
    try:
        config = load_config(env)
    except PulseError as exc:  # its message may quote a URL setting: hide the password in one
        return Row("config", BROKEN, shown_url(target), shown_url(str(exc))), None
    return Row("config", OK, target, "valid"), config


def check_rules(config: Config) -> Row:
    """Load the rules with the worker's loader, from the configured rules file or the built-in ones."""
    target = config.rules.file or "built-in rules"
    try:
        rules = load_rules(config.rules.file, config.windows.windows)
    except PulseError as exc:
        return Row("rules", BROKEN, target, str(exc))
    names = [rule.name for rule in rules.rules]
    shown = ", ".join(names[:4]) + (f", and {len(names) - 4} more" if len(names) > 4 else "")
    return Row("rules", OK, target, f"{len(names)} from {rules.source}: {shown}")


async def check_broker(config: Config, target: endpoint.Target, within: float) -> Row:
    """Bootstrap an admin client (metadata) and list the topics, within `within` seconds."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaConnectionError, KafkaError

    from agents.kafka.transport import client_security

    shown = shown_url(target.url)
    broker = config.broker.model_copy(update={"url": target.url})
    admin: Any = None
    try:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=broker.bootstrap_servers(),
            request_timeout_ms=max(1, int(within * 1000)),
            **client_security(broker),
        )
        topics = await asyncio.wait_for(_topics(admin), within)
    except TimeoutError:
        return Row("broker", BROKEN, shown, f"no answer within {within:g}s (from {target.source}); {_START}")
    except KafkaConnectionError:
        servers = ", ".join(broker.bootstrap_servers())
        reason = f"cannot connect to {servers} (from {target.source}); {_START}"
        return Row("broker", BROKEN, shown, reason)
    except (KafkaError, OSError, ValueError) as exc:
        reason = f"{describe(exc)} (from {target.source}); {_SETTINGS}"
        return Row("broker", BROKEN, shown, reason)
    finally:
        if admin is not None:
            await admin.close()
    prefix = config.topics.prefix
    own = sum(name.startswith(prefix) for name in topics)
    found = f"{own} topics with prefix {prefix}" if own else f"no topics with prefix {prefix} yet"
    return Row("broker", OK, shown, f"metadata answered (from {target.source}); {found}")


_START = "start one with `pulse up` (or `make demo`), or set PULSE_BROKER_URL"
_SETTINGS = "check PULSE_BROKER_URL and the PULSE_KAFKA_* settings"


async def _topics(admin: Any) -> list[str]:
    await admin.start()
    return list(await admin.list_topics())


async def check_channel(notifier: Notifier, within: float) -> Row:
    """The notifier's own probe, within `within` seconds; it sends no notification."""
    try:
        found = await asyncio.wait_for(notifier.probe(), within)
    except TimeoutError:
        found = Probe(BROKEN, notifier.shown_target(), f"no answer within {within:g}s")
    except Exception as exc:  # one failing check must not hide the others
        found = Probe(BROKEN, notifier.shown_target(), describe(exc))
    finally:
        await notifier.close()
    return Row(notifier.channel, found.status, found.target, found.detail)


def incomplete(channels: ChannelsConfig) -> list[Row]:
    """Channels with some of their settings but not all they need: the worker sends nothing there."""
    slack, email, sms = channels.slack, channels.email, channels.sms
    wanted: dict[str, list[str]] = {
        "slack": ["PULSE_SLACK_CHANNEL"] if slack.bot_token else ["PULSE_SLACK_BOT_TOKEN"],
        "email": _unset(PULSE_SMTP_HOST=email.smtp_host, PULSE_EMAIL_TO=email.to),
        "sms": _unset(PULSE_SMS_URL=sms.url, PULSE_SMS_TO=sms.to),
        "webhook": ["PULSE_WEBHOOK_URL"],
        "pagerduty": ["PULSE_PAGERDUTY_ROUTING_KEY"],
        "alertmanager": ["PULSE_ALERTMANAGER_URL"],
    }
    started = {
        "slack": bool(slack.bot_token or slack.channel),
        "email": bool(email.smtp_host or email.to or email.smtp_user),
        "sms": bool(sms.url or sms.to or sms.auth_token),
        "webhook": bool(channels.webhook.signing_secret),
        "pagerduty": channels.pagerduty.url != PagerDutyConfig().url,
        "alertmanager": False,
    }
    rows = []
    for cls in CHANNELS:
        if started[cls.channel] and not cls.configured(channels):
            missing = " and ".join(wanted[cls.channel])
            detail = f"only part of it is set: the worker sends nothing to {cls.channel} without {missing}"
            rows.append(Row(cls.channel, BROKEN, "not enabled", detail))
    return rows


def _unset(**settings: object) -> list[str]:
    return [name for name, value in settings.items() if not value]


async def check_everything(config: Config, within: float, broker: endpoint.Target) -> list[Row]:
    """The rules, then the broker and every configured channel at the same time."""
    rows = [check_rules(config)]
    channels = config.channels.model_copy(update={"timeout": within})
    enabled = list(notifiers(channels).values())
    found = await asyncio.gather(
        check_broker(config, broker, within), *(check_channel(n, within) for n in enabled)
    )
    partial = incomplete(config.channels)
    rows.extend([*found, *partial])
    if not enabled and not partial:
        detail = "alerts go to the alerts topic and the history only"
        rows.append(Row("channels", SKIPPED, "none configured", detail))
    return rows


def run(timeout: float = DEFAULT_TIMEOUT, echo: Callable[[str], None] | None = None) -> list[Row]:
    """Every check, in table order; only the config row when the config does not load."""
    first, config = check_config()
    if config is None:
        return [first]
    broker = endpoint.broker(config)
    if echo is not None:
        echo(f"check: broker {shown_url(broker.url)} (from {broker.source})")
    rows = [first, *asyncio.run(check_everything(config, timeout, broker))]
    return [scrubbed(row, config) for row in rows]


# --- no secret in any row -------------------------------------------------------------------------


def secrets(config: BaseModel) -> list[str]:
    """Every secret value in the config (each SecretStr setting), longest first."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(config)
    return sorted({s for s in found if s}, key=len, reverse=True)


def scrubbed(row: Row, config: Config) -> Row:
    """The row with every secret of the config (and any URL's credentials or query) replaced by ***."""

    def scrub(text: str) -> str:
        for secret in secrets(config):
            if len(secret) >= 8:
                text = text.replace(secret, "***")
            else:  # a short secret only where it stands alone, as the notifiers' `redact` does
                text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
        return redact(shown_url(text), config.channels)

    return replace(row, target=scrub(row.target), detail=scrub(row.detail))
