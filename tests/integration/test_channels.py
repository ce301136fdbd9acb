"""Every channel against a real local server speaking its wire format, and how failures are mapped."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from agents.notifiers import base
from agents.notifiers.alertmanager import AlertmanagerNotifier
from agents.notifiers.base import Notification, Notifier, Outcome, RetryPolicy, deliver
from agents.notifiers.email import EmailNotifier
from agents.notifiers.pagerduty import PagerDutyNotifier
from agents.notifiers.slack import SlackNotifier
from agents.notifiers.sms import SmsNotifier
from agents.notifiers.webhook import WebhookNotifier
from pipeline.config.settings import ChannelsConfig
from pipeline.tools.procs import free_port
from tests.support.procs import real_alertmanager
from tests.support.servers import (
    HttpServer,
    PagerDutyServer,
    SlackServer,
    SmsServer,
    SmtpServer,
    WebhookServer,
    sample_alert,
)

pytestmark = pytest.mark.integration

EXTERNAL = "http://127.0.0.1:6066"


def note(
    alerts: list[dict[str, Any]],
    status: str = "firing",
    previous: dict[str, Any] | None = None,
    key: str = "ops:g-1:1",
) -> Notification:
    labels = {"alertname": "high_error_rate"}
    return Notification("ops", "g-1", status, tuple(alerts), labels, key, EXTERNAL, previous)


def channels(**sections: Any) -> ChannelsConfig:
    return ChannelsConfig.model_validate({"timeout": 5, **sections})


def send_all(notifier: Notifier, *notes: Notification) -> list[Outcome]:
    """Send each notification once, in order, then close the notifier."""

    async def run() -> list[Outcome]:
        try:
            return [await notifier.send(n) for n in notes]
        finally:
            await notifier.close()

    return asyncio.run(run())


@pytest.fixture
def slack_server() -> Iterator[SlackServer]:
    with SlackServer() as server:
        yield server


def web_api(server: SlackServer) -> SlackNotifier:
    config = channels(slack={"bot_token": server.token, "channel": "#alerts", "api_url": server.api_url})
    return SlackNotifier(config)


# Slack


def test_slack_web_api_posts_then_resolve_updates_the_message_and_replies_in_thread(
    slack_server: SlackServer,
) -> None:
    notifier = web_api(slack_server)
    fired = send_all(notifier, note([sample_alert()]))[0]
    assert fired.kind == base.DELIVERED
    channel, ts = fired.meta["channel"], fired.meta["ts"]
    assert channel == slack_server.channel_id("#alerts") and ts
    original = slack_server.messages[(channel, ts)]
    assert original["attachments"][0]["color"] == "#d40e0d"
    assert original["attachments"][0]["blocks"][0]["type"] == "header"

    resolved = note([sample_alert(state="resolved")], "resolved", previous=fired.meta)
    outcome = send_all(web_api(slack_server), resolved)[0]
    assert outcome.kind == base.DELIVERED and outcome.meta == {"channel": channel, "ts": ts}
    updated = slack_server.messages[(channel, ts)]
    assert updated["edited"] is True
    assert updated["attachments"][0]["color"] == "#2eb67d"
    assert "[RESOLVED:1]" in updated["attachments"][0]["blocks"][0]["text"]["text"]
    assert len(slack_server.messages) == 1  # no second top-level message
    [reply] = slack_server.replies
    assert reply["thread_ts"] == ts and "RESOLVED" in reply["text"]
    methods = [r.path for r in slack_server.requests]
    assert methods == ["/api/chat.postMessage", "/api/chat.update", "/api/chat.postMessage"]
    assert all(r.header("Authorization") == f"Bearer {slack_server.token}" for r in slack_server.requests)


def test_slack_resolve_without_previous_posts_a_new_message(slack_server: SlackServer) -> None:
    outcome = send_all(web_api(slack_server), note([sample_alert(state="resolved")], "resolved"))[0]
    assert outcome.kind == base.DELIVERED
    [message] = slack_server.messages.values()
    assert message["attachments"][0]["color"] == "#2eb67d"
    assert not slack_server.replies


def test_slack_resolve_of_a_deleted_message_posts_a_new_one(slack_server: SlackServer) -> None:
    previous = {"channel": slack_server.channel_id("#alerts"), "ts": "1600000000.000001"}
    outcome = send_all(web_api(slack_server), note([sample_alert(state="resolved")], "resolved", previous))[0]
    assert outcome.kind == base.DELIVERED and outcome.meta["ts"] != previous["ts"]
    assert [r.path for r in slack_server.requests] == ["/api/chat.update", "/api/chat.postMessage"]
    assert len(slack_server.messages) == 1


def test_slack_incoming_webhook(slack_server: SlackServer) -> None:
    notifier = SlackNotifier(channels(slack={"webhook_url": slack_server.webhook_url}))
    alerts = [sample_alert(fingerprint=f"f{i}", severity="medium") for i in range(12)]
    outcome = send_all(notifier, note(alerts))[0]
    assert outcome.kind == base.DELIVERED
    [payload] = slack_server.webhook_posts
    blocks = payload["attachments"][0]["blocks"]
    assert payload["attachments"][0]["color"] == "#f2c744"
    assert sum(1 for b in blocks if b["type"] == "section") == 10
    assert any(b["type"] == "context" and b["elements"][0]["text"] == "and 2 more" for b in blocks)
    assert payload["text"] == "[FIRING:12] high_error_rate medium"


def test_slack_wrong_token_is_a_permanent_failure(slack_server: SlackServer) -> None:
    config = channels(
        slack={"bot_token": "xoxb-wrong", "channel": "#alerts", "api_url": slack_server.api_url}
    )
    outcome = send_all(SlackNotifier(config), note([sample_alert()]))[0]
    assert outcome.kind == base.FAILED and "invalid_auth" in outcome.reason


def test_slack_rate_limit_is_retried_after_the_given_delay(slack_server: SlackServer) -> None:
    body = {"ok": False, "error": "ratelimited"}
    slack_server.answer(429, times=1, headers={"Retry-After": "1"}, body=body)
    notifier = web_api(slack_server)
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def run() -> tuple[Outcome, int]:
        try:
            return await deliver(notifier, note([sample_alert()]), RetryPolicy(), sleep=fake_sleep)
        finally:
            await notifier.close()

    outcome, attempts = asyncio.run(run())
    assert (outcome.kind, attempts, sleeps) == (base.DELIVERED, 2, [1.0])


def test_slack_connection_refused_is_retried() -> None:
    config = channels(
        slack={"bot_token": "xoxb-t", "channel": "#a", "api_url": f"http://127.0.0.1:{free_port()}/api/"}
    )
    outcome = send_all(SlackNotifier(config), note([sample_alert()]))[0]
    assert outcome.kind == base.RETRY and "Cannot connect" in outcome.reason


def test_slack_server_errors_and_webhook_errors_are_mapped(slack_server: SlackServer) -> None:
    slack_server.answer(503, times=1, body="upstream down")
    assert send_all(web_api(slack_server), note([sample_alert()]))[0].kind == base.RETRY
    slack_server.answer(404, times=1, body="no_service")
    hook = SlackNotifier(channels(slack={"webhook_url": slack_server.webhook_url}))
    outcome = send_all(hook, note([sample_alert()]))[0]
    assert outcome.kind == base.FAILED and "no_service" in outcome.reason


# Email


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    with SmtpServer(tmp_path, tls="starttls") as server:
        yield server


def email_config(server: SmtpServer, **overrides: Any) -> ChannelsConfig:
    section = {
        "smtp_host": "127.0.0.1",
        "smtp_port": server.port,
        "smtp_user": server.user,
        "smtp_password": server.password,
        "tls": server.tls,
        "ca_file": str(server.ca_file),
        "sender": "pulse@o4o.example",
        "to": ["oncall@o4o.example", "lead@o4o.example"],
        **overrides,
    }
    return channels(email=section)


def test_email_over_starttls_with_auth(smtp: SmtpServer) -> None:
    alert = sample_alert(annotations={"summary": "<b>orders</b> & <script>x</script>"})
    outcome = send_all(EmailNotifier(email_config(smtp)), note([alert, sample_alert(fingerprint="b")]))[0]
    assert outcome.kind == base.DELIVERED
    [received] = smtp.received
    assert received.tls and received.login == "pulse"
    assert received.mail_from == "pulse@o4o.example"
    assert received.rcpt_tos == ["oncall@o4o.example", "lead@o4o.example"]
    message = received.message
    assert message["Subject"] == "[FIRING:2] high_error_rate critical"
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None and html is not None
    assert "<b>orders</b> & <script>x</script>" in plain.get_content()
    html_text = html.get_content()
    assert "&lt;b&gt;orders&lt;/b&gt; &amp; &lt;script&gt;x&lt;/script&gt;" in html_text
    assert "<script>" not in html_text


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # the session is TLS throughout
def test_email_over_implicit_tls(tmp_path: Path) -> None:
    with SmtpServer(tmp_path, tls="implicit") as server:
        outcome = send_all(EmailNotifier(email_config(server)), note([sample_alert()]))[0]
        assert outcome.kind == base.DELIVERED, outcome.reason
        assert server.received[0].tls and server.received[0].login == "pulse"


def test_email_wrong_password_is_permanent(smtp: SmtpServer) -> None:
    outcome = send_all(EmailNotifier(email_config(smtp, smtp_password="nope")), note([sample_alert()]))[0]
    # (since da346e4 the reason names the refusal and the settings to change: "smtp: authentication
    # refused (535 ...); check PULSE_SMTP_USER ...")
    assert outcome.kind == base.FAILED and outcome.reason.startswith("smtp: ") and "(535 " in outcome.reason
    assert "nope" not in outcome.reason
    assert not smtp.received


def test_email_untrusted_certificate_is_permanent(smtp: SmtpServer) -> None:
    outcome = send_all(EmailNotifier(email_config(smtp, ca_file=None)), note([sample_alert()]))[0]
    assert outcome.kind == base.FAILED and "certificate" in outcome.reason


def test_email_smtp_replies_are_mapped(smtp: SmtpServer) -> None:
    smtp.reply("451 4.3.0 Try again later")
    smtp.reply("550 5.7.1 Message rejected")
    notifier = EmailNotifier(email_config(smtp))
    transient, permanent, ok = send_all(notifier, *[note([sample_alert()])] * 3)
    assert transient.kind == base.RETRY and "451" in transient.reason
    assert permanent.kind == base.FAILED and "550" in permanent.reason
    assert ok.kind == base.DELIVERED and len(smtp.received) == 1


def test_email_connection_refused_is_retried(smtp: SmtpServer) -> None:
    outcome = send_all(EmailNotifier(email_config(smtp, smtp_port=free_port())), note([sample_alert()]))[0]
    assert outcome.kind == base.RETRY


# SMS


@pytest.fixture
def sms_server() -> Iterator[SmsServer]:
    with SmsServer() as server:
        yield server


def sms_config(server: SmsServer, **overrides: Any) -> ChannelsConfig:
    section = {
        "url": server.api_url,
        "account_sid": server.account_sid,
        "auth_token": server.auth_token,
        "sender": "+15005550006",
        "to": ["+821011112222", "+821033334444"],
        "max_chars": 70,
        **overrides,
    }
    return channels(sms=section)


def test_sms_one_request_per_recipient_with_basic_auth(sms_server: SmsServer) -> None:
    alert = sample_alert(annotations={"summary": "Payment\r\nfailures\x07 " + "x" * 200})
    outcome = send_all(SmsNotifier(sms_config(sms_server)), note([alert]))[0]
    assert outcome.kind == base.DELIVERED and outcome.meta["accepted"] == 2
    assert [m["To"] for m in sms_server.messages] == ["+821011112222", "+821033334444"]
    for message in sms_server.messages:
        assert message["From"] == "+15005550006"
        assert len(message["Body"]) <= 70 and message["Body"].endswith("…")
        assert "\r" not in message["Body"] and "\x07" not in message["Body"]
    for request in sms_server.requests:
        assert request.path == f"/2010-04-01/Accounts/{sms_server.account_sid}/Messages.json"
        assert request.header("Content-Type") == "application/x-www-form-urlencoded"
        assert (request.header("Authorization") or "").startswith("Basic ")


def test_sms_wrong_token_is_permanent(sms_server: SmsServer) -> None:
    outcome = send_all(SmsNotifier(sms_config(sms_server, auth_token="wrong")), note([sample_alert()]))[0]
    assert outcome.kind == base.FAILED and "HTTP 401" in outcome.reason
    assert not sms_server.messages


def test_sms_partial_failure_is_reported_and_a_retry_skips_who_got_it(sms_server: SmsServer) -> None:
    notifier = SmsNotifier(sms_config(sms_server))
    sms_server.answer(503, times=1)  # the first recipient's request
    first, second = send_all(notifier, note([sample_alert()]), note([sample_alert()]))
    assert first.kind == base.RETRY and "…2222" in first.reason and first.meta["accepted"] == 1
    assert second.kind == base.DELIVERED
    assert [m["To"] for m in sms_server.messages] == ["+821033334444", "+821011112222"]

    sms_server.invalid_numbers.add("+821033334444")
    outcome = send_all(SmsNotifier(sms_config(sms_server)), note([sample_alert()], key="other"))[0]
    assert outcome.kind == base.FAILED and "…4444" in outcome.reason and "21211" in outcome.reason
    assert outcome.meta["accepted"] == 1


# Webhook


def test_webhook_sends_a_signed_v4_payload() -> None:
    with WebhookServer(secret="hmac-shared-secret") as server:
        config = channels(webhook={"url": f"{server.url}/hooks/pulse", "signing_secret": server.secret})
        alerts = [sample_alert(), sample_alert(fingerprint="f2", state="resolved")]
        outcome = send_all(WebhookNotifier(config), note(alerts))[0]
        assert outcome.kind == base.DELIVERED
        assert server.verified == [True]
        [request] = server.requests
        assert request.path == "/hooks/pulse"
        assert request.header("X-Pulse-Notification-Key") == "ops:g-1:1"
        payload = request.json()
        assert payload["version"] == "4" and payload["groupKey"] == "g-1" and payload["status"] == "firing"
        assert payload["receiver"] == "ops" and payload["externalURL"] == EXTERNAL
        assert set(payload) == {
            "version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels",
            "commonLabels", "commonAnnotations", "externalURL", "alerts",
        }  # fmt: skip
        assert [a["status"] for a in payload["alerts"]] == ["firing", "resolved"]
        assert set(payload["alerts"][0]) == {
            "status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"
        }  # fmt: skip


def test_webhook_signed_with_another_secret_is_rejected() -> None:
    with WebhookServer(secret="right") as server:
        config = channels(webhook={"url": server.url, "signing_secret": "wrong"})
        outcome = send_all(WebhookNotifier(config), note([sample_alert()]))[0]
        assert outcome.kind == base.FAILED and "HTTP 401" in outcome.reason
        assert server.verified == [False]


def test_webhook_without_secret_sends_no_signature() -> None:
    with WebhookServer() as server:
        outcome = send_all(WebhookNotifier(channels(webhook={"url": server.url})), note([sample_alert()]))[0]
        assert outcome.kind == base.DELIVERED
        assert server.requests[0].header("X-Pulse-Signature") is None


# PagerDuty


def test_pagerduty_triggers_then_resolves_by_fingerprint() -> None:
    with PagerDutyServer() as server:
        config = channels(pagerduty={"url": server.api_url, "routing_key": server.routing_key})
        firing = [sample_alert(fingerprint="fp-1"), sample_alert(fingerprint="fp-2", severity="low")]
        resolved = [sample_alert(fingerprint="fp-1", state="resolved")]
        outcomes = send_all(PagerDutyNotifier(config), note(firing), note(resolved, "resolved"))
        assert [o.kind for o in outcomes] == [base.DELIVERED, base.DELIVERED]
        assert outcomes[0].meta == {"sent": 2}
        actions = [(e["event_action"], e["dedup_key"]) for e in server.events]
        assert actions == [("trigger", "fp-1"), ("trigger", "fp-2"), ("resolve", "fp-1")]
        assert [e["payload"]["severity"] for e in server.events[:2]] == ["critical", "info"]


def test_pagerduty_bad_routing_key_is_permanent() -> None:
    with PagerDutyServer() as server:
        config = channels(pagerduty={"url": server.api_url, "routing_key": "not-the-key"})
        outcome = send_all(PagerDutyNotifier(config), note([sample_alert()]))[0]
        assert outcome.kind == base.FAILED and "routing_key" in outcome.reason
        assert "not-the-key" not in outcome.reason


# Alertmanager (the real binary)


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    with real_alertmanager(tmp_path) as url:
        yield url


def test_alertmanager_receives_and_resolves_alerts(alertmanager: str) -> None:
    notifier = AlertmanagerNotifier(channels(alertmanager={"url": alertmanager}))
    now = datetime.now(UTC)
    starts = (now - timedelta(minutes=5)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    firing = [
        {**sample_alert(fingerprint="fp-1", labels={"route": "/orders"}), "starts_at": starts},
        {**sample_alert(fingerprint="fp-2", labels={"route": "/pay"}, severity="high"), "starts_at": starts},
    ]
    assert send_all(notifier, note(firing))[0].kind == base.DELIVERED
    shown = httpx.get(f"{alertmanager}/api/v2/alerts").json()
    routes = sorted(a["labels"]["route"] for a in shown)
    assert routes == ["/orders", "/pay"]
    for alert in shown:
        assert alert["labels"]["alertname"] == "high_error_rate"
        assert alert["labels"]["severity"] in ("critical", "high")
        assert alert["annotations"]["runbook_url"] == "https://runbooks.example/high_error_rate"
        assert alert["status"]["state"] == "active"

    ended = (now - timedelta(seconds=1)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    resolved = {**firing[0], "state": "resolved", "ends_at": ended}
    notifier = AlertmanagerNotifier(channels(alertmanager={"url": alertmanager}))
    assert send_all(notifier, note([resolved], "resolved"))[0].kind == base.DELIVERED
    still = httpx.get(f"{alertmanager}/api/v2/alerts", params={"active": "true"}).json()
    assert [a["labels"]["route"] for a in still] == ["/pay"]


def test_alertmanager_rejects_invalid_alerts_permanently(alertmanager: str) -> None:
    bad = {**sample_alert(), "starts_at": "not a time"}
    outcome = send_all(AlertmanagerNotifier(channels(alertmanager={"url": alertmanager})), note([bad]))[0]
    assert outcome.kind == base.FAILED and "HTTP 400" in outcome.reason


# Failure mapping, shared by the HTTP channels


def http_notifier(kind: str, server: HttpServer) -> Notifier:
    """A notifier of the given channel pointed at a generic scripted server."""
    if kind == "webhook":
        return WebhookNotifier(channels(webhook={"url": server.url, "signing_secret": "s"}))
    if kind == "pagerduty":
        return PagerDutyNotifier(channels(pagerduty={"url": server.url, "routing_key": "k"}))
    if kind == "sms":
        return SmsNotifier(channels(sms={"url": server.url, "auth_token": "t", "to": ["+15550001111"]}))
    return AlertmanagerNotifier(channels(alertmanager={"url": server.url}))


HTTP_CHANNELS = ["webhook", "pagerduty", "sms", "alertmanager"]


@pytest.mark.parametrize("kind", HTTP_CHANNELS)
def test_http_statuses_are_mapped(kind: str) -> None:
    with HttpServer() as server:
        server.answer(503, times=1, body="maintenance")
        server.answer(429, times=1, headers={"Retry-After": "2"})
        server.answer(429, times=1, headers={"Retry-After": format_datetime(_in(30), usegmt=True)})
        server.answer(400, times=1, body='{"error": "bad request"}')
        server.answer(403, times=1)
        server.answer(408, times=1)
        notifier = http_notifier(kind, server)
        got = send_all(notifier, *[note([sample_alert()])] * 6)
        assert [o.kind for o in got] == [
            base.RETRY,
            base.RETRY,
            base.RETRY,
            base.FAILED,
            base.FAILED,
            base.RETRY,
        ]
        assert "HTTP 503: maintenance" in got[0].reason
        assert got[1].retry_after == 2.0
        assert got[2].retry_after is not None and 25 <= got[2].retry_after <= 31
        assert "bad request" in got[3].reason
        assert "HTTP 403" in got[4].reason


def _in(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


@pytest.mark.parametrize("kind", HTTP_CHANNELS)
def test_connection_refused_is_retried(kind: str) -> None:
    server = HttpServer()
    server.port = free_port()  # never started: nothing listens there
    outcome = send_all(http_notifier(kind, server), note([sample_alert()]))[0]
    assert outcome.kind == base.RETRY and "Cannot connect" in outcome.reason


def test_deliver_rides_out_an_outage_with_backoff() -> None:
    with PagerDutyServer() as server:
        server.answer(503, seconds=0.6)
        config = channels(pagerduty={"url": server.api_url, "routing_key": server.routing_key})
        notifier = PagerDutyNotifier(config)
        policy = RetryPolicy(initial_s=0.05, max_s=0.2, multiplier=2, max_attempts=50, budget_s=10)

        async def run() -> tuple[Outcome, int]:
            try:
                return await deliver(notifier, note([sample_alert()]), policy)
            finally:
                await notifier.close()

        started = time.monotonic()
        outcome, attempts = asyncio.run(run())
        assert outcome.kind == base.DELIVERED
        assert attempts >= 3 and time.monotonic() - started >= 0.6
        assert len(server.events) == 1


def test_deliver_gives_up_after_the_budget() -> None:
    with WebhookServer() as server:
        server.answer(503, seconds=60)
        notifier = WebhookNotifier(channels(webhook={"url": server.url}))
        policy = RetryPolicy(initial_s=0.01, max_s=0.02, max_attempts=4, budget_s=5)

        async def run() -> tuple[Outcome, int]:
            try:
                return await deliver(notifier, note([sample_alert()]), policy)
            finally:
                await notifier.close()

        outcome, attempts = asyncio.run(run())
        assert (outcome.kind, attempts) == (base.FAILED, 4)
        assert outcome.reason == "retry budget spent: webhook: HTTP 503"
        assert len(server.requests) == 4


# Redaction


def test_no_secret_reaches_reasons_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    closed = free_port()
    with HttpServer() as echo, SlackServer() as slack:
        sms_url = f"http://AC123:userinfo-pass@127.0.0.1:{echo.port}/2010-04-01"
        # A server that echoes what it got, secrets included, in its error body.
        echo.answer(
            403, seconds=60, body=f"forbidden: {sms_url} token=sms-secret-token key=pd-secret-routing"
        )
        secrets = {
            "slack": {
                "webhook_url": f"http://127.0.0.1:{closed}/services/T111/B222/slackhooksecret",
                "bot_token": "xoxb-slack-bot-secret",
            },
            "sms": {"url": sms_url, "auth_token": "sms-secret-token", "to": ["+15550001111"]},
            "pagerduty": {"url": f"{echo.url}/v2/enqueue", "routing_key": "pd-secret-routing"},
            "webhook": {
                "url": f"http://127.0.0.1:{closed}/hook?token=webhook-q-secret",
                "signing_secret": "sig",
            },
        }
        hook_only = channels(**secrets)
        bot_config = channels(
            **{**secrets, "slack": {**secrets["slack"], "channel": "#x", "api_url": slack.api_url}}
        )
        notifiers: list[Notifier] = [
            SlackNotifier(hook_only),  # webhook at a closed port: connection refused
            SlackNotifier(bot_config),  # Web API with a token the server does not know
            SmsNotifier(hook_only),
            PagerDutyNotifier(hook_only),
            WebhookNotifier(hook_only),
        ]
        outcomes: list[Outcome] = []
        with caplog.at_level(logging.DEBUG):
            for notifier in notifiers:
                policy = RetryPolicy(initial_s=0.01, max_s=0.01, max_attempts=2)
                outcomes.append(asyncio.run(_deliver_and_close(notifier, policy)))
    assert [o.kind for o in outcomes] == [base.FAILED] * 5
    assert "slack_sdk" in caplog.text or "Sending a request" in caplog.text  # the SDK's own lines were seen
    text = caplog.text + "\n".join(o.reason for o in outcomes)
    for secret in (
        "slackhooksecret",
        "xoxb-slack-bot-secret",
        "userinfo-pass",
        "sms-secret-token",
        "pd-secret-routing",
        "webhook-q-secret",
    ):
        assert secret not in text, secret


async def _deliver_and_close(notifier: Notifier, policy: RetryPolicy) -> Outcome:
    try:
        outcome, _ = await deliver(notifier, note([sample_alert()]), policy)
        return outcome
    finally:
        await notifier.close()
