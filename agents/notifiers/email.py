"""Email: one multipart/alternative message (plain text and escaped HTML) per notification, over SMTP."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import aiosmtplib

from agents.notifiers.base import (
    BROKEN,
    DELIVERED,
    FAILED,
    OK,
    RETRY,
    Notification,
    Notifier,
    Outcome,
    Probe,
    describe,
    group_severity,
    headline,
    number,
    redact,
    runbook,
)
from agents.notifiers.slack import COLOURS
from pipeline.alerting.context import footer, of_alert, partial_note, table, text_lines
from pipeline.alerting.text import html_text, one_line, strip_control
from pipeline.config.settings import ChannelsConfig, secret_text

log = logging.getLogger(__name__)

MAX_ALERTS = 50
_SUBJECT_MAX = 200


def subject(n: Notification) -> str:
    """The subject line, e.g. "[FIRING:2] high_error_rate critical"."""
    return one_line(headline(n), _SUBJECT_MAX)


def text_body(n: Notification) -> str:
    """The plain-text part."""
    lines = [headline(n), ""]
    for alert in n.alerts[:MAX_ALERTS]:
        lines.extend(_alert_text(alert))
    if len(n.alerts) > MAX_ALERTS:
        lines.append(f"... and {len(n.alerts) - MAX_ALERTS} more")
    lines.append(f"o4o-pulse: {n.external_url}")
    return "\n".join(lines) + "\n"


def _alert_text(alert: Mapping[str, Any]) -> list[str]:
    state = str(alert.get("state", "")).upper()
    lines = [f"{state} {alert.get('severity', '')}: {one_line(str(alert.get('title', '')))}"]
    message = strip_control(str(alert.get("message") or ""))
    if message:
        lines.append(f"  {message}")
    lines.append(f"  value {number(alert.get('currentValue'))}, threshold {number(alert.get('threshold'))}")
    labels = alert.get("labels") or {}
    if labels:
        lines.append("  labels: " + ", ".join(f"{k}={one_line(str(v))}" for k, v in sorted(labels.items())))
    url = runbook(alert)
    if url:
        lines.append(f"  runbook: {url}")
    found = of_alert(alert)
    if found is not None:
        lines.append("  context:")
        lines.extend(f"    {line}" for line in text_lines(found))
    lines.append("")
    return lines


def html_body(n: Notification) -> str:
    """The HTML part; every event-derived text is escaped."""
    accent = COLOURS["resolved"] if n.status == "resolved" else COLOURS.get(group_severity(n), COLOURS["low"])
    rows = "".join(_alert_html(alert) for alert in n.alerts[:MAX_ALERTS])
    if len(n.alerts) > MAX_ALERTS:
        rows += f"<p>and {len(n.alerts) - MAX_ALERTS} more</p>"
    return (
        '<!DOCTYPE html><html><body style="font-family:sans-serif">'
        f'<h2 style="border-left:6px solid {accent};padding-left:8px">{html_text(headline(n))}</h2>'
        f"{rows}"
        f'<p><a href="{html_text(n.external_url)}">Open o4o-pulse</a></p>'
        "</body></html>"
    )


def _alert_html(alert: Mapping[str, Any]) -> str:
    labels = alert.get("labels") or {}
    label_items = "".join(
        f"<li><code>{html_text(str(k))}={html_text(str(v))}</code></li>" for k, v in sorted(labels.items())
    )
    url = runbook(alert)
    link = f'<p><a href="{html_text(url)}">Runbook</a></p>' if url else ""
    message = html_text(str(alert.get("message") or "")).replace("\n", "<br>")
    return (
        f"<h3>{html_text(str(alert.get('state', '')).upper())} "
        f"{html_text(str(alert.get('severity', '')))}: {html_text(str(alert.get('title', '')))}</h3>"
        f"<p>{message}</p>"
        f"<p>Value <b>{number(alert.get('currentValue'))}</b>, "
        f"threshold <b>{number(alert.get('threshold'))}</b></p>"
        f"<ul>{label_items}</ul>{link}{_context_html(alert)}"
    )


_CELL = 'style="border:1px solid #ddd;padding:2px 8px;text-align:{align}"'


def _html_row(tag: str, cells: list[str]) -> str:
    """One table row of escaped cells: the name column left-aligned, the figures right-aligned."""
    return (
        "<tr>"
        + "".join(
            f"<{tag} {_CELL.format(align='left' if i == 0 else 'right')}>{html_text(c)}</{tag}>"
            for i, c in enumerate(cells)
        )
        + "</tr>"
    )


def _context_html(alert: Mapping[str, Any]) -> str:
    """The alert's context as HTML tables, one per section; every cell escaped."""
    found = of_alert(alert)
    if found is None:
        return ""
    window = f" ({html_text(found.window)})" if found.window else ""
    parts = []
    for section in found.sections:
        rows = table(section)
        head = _html_row("th", rows[0])
        body = "".join(_html_row("td", row) for row in rows[1:])
        more = f"<p>{html_text(footer(section))}</p>" if section.more else ""
        empty = "" if rows[1:] else "<p>none</p>"
        parts.append(
            f"<h4>{html_text(section.title)}{window}</h4>"
            f'<table style="border-collapse:collapse">{head}{body}</table>{empty}{more}'
        )
    note = partial_note(found)
    if note:
        parts.append(f"<p><i>{html_text(note)}</i></p>")
    return "".join(parts)


def build_message(n: Notification, config: ChannelsConfig) -> EmailMessage:
    """The whole email: headers, text/plain and text/html alternatives."""
    message = EmailMessage()
    message["Subject"] = subject(n)
    message["From"] = config.email.sender
    message["To"] = ", ".join(config.email.to)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain="o4o-pulse")
    # Lets receiving systems (and people) drop duplicates of one notification.
    message["X-Pulse-Notification-Key"] = one_line(n.key)
    message["X-Pulse-Group-Key"] = one_line(n.group_key)
    message.set_content(text_body(n))
    message.add_alternative(html_body(n), subtype="html")
    return message


HINT_TLS = "set PULSE_SMTP_TLS=none for a plain relay such as Mailpit, or implicit for port 465"
HINT_AUTH = "check PULSE_SMTP_USER and PULSE_SMTP_PASSWORD (or PULSE_SMTP_PASSWORD_FILE)"
HINT_CERT = "trust the server's CA with channels.email.ca_file, or check PULSE_SMTP_HOST"
"""What to change when an email fails in a way no retry can fix."""


class EmailNotifier(Notifier):
    """Sends through the configured SMTP server (STARTTLS, implicit TLS or plain; AUTH when a user is set).

    Recipients the server refuses while it accepts others are logged and listed in the outcome's meta
    ("refused"); the notification counts as delivered, since retrying would mail the others again.
    """

    channel = "email"
    needs = ("smtp_host", "to")
    """An SMTP host and at least one recipient."""

    async def send(self, notification: Notification) -> Outcome:
        """Send the email in one SMTP session."""
        try:
            message = build_message(notification, self.config)
            refused, _ = await aiosmtplib.send(message, **self._session_options())
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [error.code for error in exc.recipients]
            kind = RETRY if any(400 <= code < 500 for code in codes) else FAILED
            return self.outcome(kind, f"smtp: every recipient refused ({', '.join(map(str, codes))})")
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return self._failure(exc)
        if refused:
            log.warning("email: %d recipient(s) refused: %s", len(refused), redact(str(refused), self.config))
        return Outcome(DELIVERED, meta={"refused": sorted(refused)} if refused else {})

    def shown_target(self) -> str:
        """host:port, the TLS mode and the SMTP user (never the password)."""
        email = self.config.email
        login = f", AUTH as {email.smtp_user}" if email.smtp_user else ""
        return f"{email.smtp_host}:{email.smtp_port} ({email.tls}{login})"

    async def probe(self) -> Probe:
        """Connect, EHLO, STARTTLS or implicit TLS as configured, AUTH when a user is set, then QUIT;
        never MAIL or DATA."""
        try:
            smtp = aiosmtplib.SMTP(**self._session_options())
            await smtp.connect()  # the greeting, EHLO, STARTTLS and AUTH, as `send` does them
            await smtp.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return Probe(BROKEN, self.shown_target(), self._failure(exc).reason)
        steps = {"starttls": "STARTTLS", "implicit": "TLS", "none": "no TLS"}[self.config.email.tls]
        login = ", AUTH accepted" if self.config.email.smtp_user else ""
        return Probe(OK, self.shown_target(), f"EHLO, {steps}{login}, QUIT (no message sent)")

    def _session_options(self) -> dict[str, Any]:
        """How to open the SMTP session: server, TLS mode, login and timeout."""
        email = self.config.email
        return {
            "hostname": email.smtp_host,
            "port": email.smtp_port,
            "username": email.smtp_user,
            "password": secret_text(email.smtp_password) if email.smtp_user else None,
            "use_tls": email.tls == "implicit",
            "start_tls": {"starttls": True, "implicit": False, "none": False}[email.tls],
            "tls_context": self._tls_context(),
            "timeout": self.config.timeout,
        }

    def _failure(self, exc: BaseException) -> Outcome:
        """The outcome of a failed SMTP session, with the setting to change when no retry can help."""
        if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
            reason = f"smtp: authentication refused ({exc.code} {one_line(exc.message, 200)})"
            return self.outcome(FAILED, f"{reason}; {HINT_AUTH}")
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            kind = FAILED if exc.code >= 500 else RETRY
            return self.outcome(kind, f"smtp: {exc.code} {one_line(exc.message, 200)}")
        if isinstance(exc, ssl.SSLCertVerificationError):
            return self.outcome(FAILED, f"smtp: certificate not trusted: {describe(exc)}; {HINT_CERT}")
        if isinstance(exc, ssl.SSLError):  # e.g. implicit TLS against a plain port: no retry changes that
            return self.outcome(FAILED, f"smtp: TLS handshake failed: {describe(exc)}; {HINT_TLS}")
        if isinstance(exc, aiosmtplib.SMTPNotSupported):
            return self.outcome(FAILED, f"smtp: {describe(exc)}")
        if isinstance(exc, aiosmtplib.SMTPException):
            if "STARTTLS" in str(exc):  # the server does not offer it: the setting is wrong, not the moment
                return self.outcome(FAILED, f"smtp: the server does not offer STARTTLS; {HINT_TLS}")
            if isinstance(exc.__cause__, ssl.SSLError) or "WRONG_VERSION_NUMBER" in str(exc):
                return self.outcome(FAILED, f"smtp: TLS handshake failed: {describe(exc)}; {HINT_TLS}")
        return self.outcome(RETRY, f"smtp: {describe(exc)}")

    def _tls_context(self) -> ssl.SSLContext | None:
        """A context trusting ca_file when one is configured; the system CAs otherwise."""
        if self.config.email.tls == "none":
            return None
        return ssl.create_default_context(cafile=self.config.email.ca_file)
