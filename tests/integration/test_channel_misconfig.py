"""A channel that is set up wrong fails at once, says what to change, and is logged as an error.

Real servers on 127.0.0.1: aiosmtpd (plain, STARTTLS with a test CA and AUTH) and the Slack Web API
stand-in. Each case is one that no retry can fix, so `deliver` must stop after the first attempt.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agents.notifiers.base import FAILED, Notification, Notifier, Outcome, RetryPolicy, deliver
from agents.notifiers.email import EmailNotifier
from agents.notifiers.slack import SlackNotifier
from pipeline.config.settings import ChannelsConfig
from tests.support.servers import SlackServer, SmtpServer, sample_alert

POLICY = RetryPolicy(initial_s=0.01, max_s=0.01, max_attempts=8, budget_s=5)


def attempt(notifier: Notifier) -> tuple[Outcome, int]:
    """Deliver one notification with the retry policy (tiny backoff); return (outcome, attempts)."""
    note = Notification("ops", "g", "firing", (sample_alert(),), {"alertname": "x"}, "k", "http://x")

    async def run() -> tuple[Outcome, int]:
        try:
            return await deliver(notifier, note, POLICY)
        finally:
            await notifier.close()

    return asyncio.run(run())


def email(server: SmtpServer, **section: Any) -> EmailNotifier:
    config = {"smtp_host": "127.0.0.1", "smtp_port": server.port, "to": ["oncall@o4o.example"], **section}
    return EmailNotifier(ChannelsConfig.model_validate({"timeout": 5, "email": config}))


def test_starttls_against_a_plain_relay_fails_at_once_with_the_setting_to_change(tmp_path: Path) -> None:
    with SmtpServer(tmp_path, tls="none") as server:
        login = {"smtp_user": server.user, "smtp_password": server.password}
        outcome, attempts = attempt(email(server, tls="starttls", **login))
        assert (outcome.kind, attempts) == (FAILED, 1), outcome
        assert "does not offer STARTTLS" in outcome.reason
        assert "PULSE_SMTP_TLS=none" in outcome.reason and "implicit for port 465" in outcome.reason
        assert server.received == []
        # ...and the setting it names works.
        delivered, _ = attempt(email(server, tls="none", **login))
        assert delivered.ok and len(server.received) == 1


def test_implicit_tls_against_a_plain_port_fails_at_once(tmp_path: Path) -> None:
    with SmtpServer(tmp_path, tls="none") as server:
        outcome, attempts = attempt(email(server, tls="implicit"))
    assert (outcome.kind, attempts) == (FAILED, 1), outcome
    assert "PULSE_SMTP_TLS" in outcome.reason


def test_refused_authentication_fails_at_once_and_names_the_credentials(tmp_path: Path) -> None:
    with SmtpServer(tmp_path) as server:
        section = {"smtp_user": server.user, "smtp_password": "wrong", "ca_file": str(server.ca_file)}
        outcome, attempts = attempt(email(server, **section))
    assert (outcome.kind, attempts) == (FAILED, 1), outcome
    assert "authentication refused" in outcome.reason and "PULSE_SMTP_PASSWORD" in outcome.reason
    assert "wrong" not in outcome.reason  # the password itself is never shown


def test_an_untrusted_certificate_fails_at_once_and_names_ca_file(tmp_path: Path) -> None:
    with SmtpServer(tmp_path) as server:
        outcome, attempts = attempt(email(server, smtp_user=server.user, smtp_password=server.password))
    assert (outcome.kind, attempts) == (FAILED, 1), outcome
    assert "certificate not trusted" in outcome.reason and "channels.email.ca_file" in outcome.reason


@pytest.mark.parametrize(
    ("error", "advice"),
    [("invalid_auth", "PULSE_SLACK_BOT_TOKEN"), ("channel_not_found", "PULSE_SLACK_CHANNEL")],
)
def test_slack_errors_no_retry_can_fix_fail_at_once_with_advice(error: str, advice: str) -> None:
    with SlackServer() as server:
        token = "xoxb-wrong" if error == "invalid_auth" else server.token
        if error == "channel_not_found":
            server.answer(200, body={"ok": False, "error": "channel_not_found"})
        config = {"bot_token": token, "channel": "#alerts", "api_url": server.api_url}
        outcome, attempts = attempt(SlackNotifier(ChannelsConfig.model_validate({"slack": config})))
        posts = [r for r in server.requests if r.path.endswith("chat.postMessage")]
    assert (outcome.kind, attempts) == (FAILED, 1), outcome
    assert error in outcome.reason and advice in outcome.reason
    assert len(posts) == 1
