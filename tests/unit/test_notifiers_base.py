"""The notifier contract: HTTP status mapping, Retry-After, backoff with jitter, budgets, redaction."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.notifiers import CHANNELS, base, notifiers
from agents.notifiers.base import (
    Notification,
    Notifier,
    Outcome,
    RetryPolicy,
    classify_http,
    deliver,
    headline,
    parse_retry_after,
    redact,
)
from pipeline.config.settings import ChannelsConfig


@pytest.mark.parametrize(
    ("status", "kind"),
    [(200, base.DELIVERED), (201, base.DELIVERED), (202, base.DELIVERED), (204, base.DELIVERED),
     (408, base.RETRY), (429, base.RETRY), (500, base.RETRY), (502, base.RETRY), (503, base.RETRY),
     (400, base.FAILED), (401, base.FAILED), (403, base.FAILED), (404, base.FAILED), (410, base.FAILED),
     (422, base.FAILED)],
)  # fmt: skip
def test_classify_http(status: int, kind: str) -> None:
    outcome = classify_http(status, {}, "test")
    assert outcome.kind == kind
    assert outcome.meta == {"status": status}
    assert outcome.reason == ("" if kind == base.DELIVERED else f"test: HTTP {status}")


def test_classify_429_carries_retry_after() -> None:
    assert classify_http(429, {"Retry-After": "3"}, "x").retry_after == 3.0
    assert classify_http(429, {}, "x").retry_after is None
    assert classify_http(503, {"Retry-After": "3"}, "x").retry_after is None


def test_parse_retry_after_seconds_and_http_dates() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    later = format_datetime(datetime(2026, 1, 2, 3, 4, 35, tzinfo=UTC), usegmt=True)
    assert parse_retry_after(later, now=now) == 30.0
    assert parse_retry_after(format_datetime(datetime(2020, 1, 1, tzinfo=UTC), usegmt=True), now=now) == 0.0


class Scripted(Notifier):
    """A notifier that returns prepared outcomes, one per attempt."""

    channel = "scripted"

    def __init__(self, outcomes: list[Outcome], config: ChannelsConfig | None = None) -> None:
        super().__init__(config or ChannelsConfig())
        self.outcomes = outcomes
        self.calls = 0

    @classmethod
    def configured(cls, config: ChannelsConfig) -> bool:
        return True

    async def send(self, notification: Notification) -> Outcome:
        self.calls += 1
        return self.outcomes[min(self.calls, len(self.outcomes)) - 1]


NOTE = Notification(
    "ops", "g1", "firing", (), {"alertname": "high_error_rate"}, "k1", "http://127.0.0.1:6066"
)


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def run_deliver(
    outcomes: list[Outcome], policy: RetryPolicy, rand: float = 1.0, notifier: Notifier | None = None
) -> tuple[Outcome, int, FakeTime]:
    fake = FakeTime()
    target = notifier or Scripted(outcomes)
    outcome, attempts = asyncio.run(
        deliver(target, NOTE, policy, sleep=fake.sleep, rand=lambda: rand, clock=fake.clock)
    )
    return outcome, attempts, fake


def test_deliver_returns_at_once_when_delivered() -> None:
    outcome, attempts, fake = run_deliver([Outcome(base.DELIVERED, meta={"status": 200})], RetryPolicy())
    assert (outcome.kind, attempts, fake.sleeps) == (base.DELIVERED, 1, [])


def test_deliver_stops_at_once_on_a_permanent_failure() -> None:
    outcome, attempts, fake = run_deliver([Outcome(base.FAILED, "x: HTTP 403")], RetryPolicy())
    assert (outcome.kind, outcome.reason, attempts, fake.sleeps) == (base.FAILED, "x: HTTP 403", 1, [])


def test_deliver_backs_off_exponentially_up_to_the_cap() -> None:
    retry = Outcome(base.RETRY, "x: HTTP 503")
    policy = RetryPolicy(initial_s=1, max_s=10, multiplier=2, max_attempts=7, budget_s=1e9)
    outcome, attempts, fake = run_deliver([retry], policy, rand=1.0)
    assert fake.sleeps == [1, 2, 4, 8, 10, 10]
    assert attempts == 7
    assert outcome.kind == base.FAILED
    assert outcome.reason == "retry budget spent: x: HTTP 503"


def test_deliver_retries_until_delivered() -> None:
    script = [Outcome(base.RETRY, "a"), Outcome(base.RETRY, "b"), Outcome(base.DELIVERED)]
    outcome, attempts, fake = run_deliver(script, RetryPolicy(), rand=0.5)
    assert (outcome.kind, attempts, fake.sleeps) == (base.DELIVERED, 3, [0.5, 1.0])


@given(st.floats(min_value=0.0, max_value=0.999999), st.integers(min_value=2, max_value=10))
def test_deliver_jitter_stays_within_zero_and_the_ceiling(rand: float, attempts: int) -> None:
    policy = RetryPolicy(initial_s=0.5, max_s=30, multiplier=3, max_attempts=attempts, budget_s=1e9)
    _, _, fake = run_deliver([Outcome(base.RETRY, "x")], policy, rand=rand)
    for k, delay in enumerate(fake.sleeps):
        ceiling = min(30, 0.5 * 3**k)
        assert 0 <= delay <= ceiling
        assert delay == pytest.approx(rand * ceiling)


def test_deliver_honours_retry_after_exactly() -> None:
    script = [Outcome(base.RETRY, "x: HTTP 429", retry_after=7.0), Outcome(base.DELIVERED)]
    outcome, attempts, fake = run_deliver(script, RetryPolicy(initial_s=1, max_s=2), rand=0.0)
    assert (outcome.kind, attempts, fake.sleeps) == (base.DELIVERED, 2, [7.0])


def test_deliver_gives_up_when_the_time_budget_is_spent() -> None:
    policy = RetryPolicy(initial_s=10, max_s=10, multiplier=1, max_attempts=100, budget_s=35)
    outcome, attempts, fake = run_deliver([Outcome(base.RETRY, "smtp: timeout")], policy, rand=1.0)
    assert fake.sleeps == [10, 10, 10]  # a fourth wait would end past 35 s
    assert attempts == 4
    assert (outcome.kind, outcome.reason) == (base.FAILED, "retry budget spent: smtp: timeout")


def test_deliver_does_not_wait_for_a_retry_after_beyond_the_budget() -> None:
    script = [Outcome(base.RETRY, "x: HTTP 429", retry_after=3600.0)]
    outcome, attempts, fake = run_deliver(script, RetryPolicy(budget_s=600))
    assert (outcome.kind, attempts, fake.sleeps) == (base.FAILED, 1, [])
    assert outcome.retry_after is None


SECRETS = ChannelsConfig.model_validate(
    {
        "slack": {
            "webhook_url": "https://hooks.slack.com/services/T0/B0/hooksecret123",
            "bot_token": "xoxb-bot",
        },
        "email": {"smtp_host": "mail", "smtp_password": "mail-pass"},
        "sms": {"url": "https://sid:smspass@sms.example/2010-04-01", "auth_token": "sms-tok"},
        "webhook": {"url": "https://hook.example/in/abc?key=zz", "signing_secret": "sign-me"},
        "pagerduty": {"routing_key": "pdkey0123456789"},
    }
)


@pytest.mark.parametrize(
    "text",
    [
        "POST https://hooks.slack.com/services/T0/B0/hooksecret123 failed",
        "path /services/T0/B0/hooksecret123 not found",
        "Authorization: Bearer xoxb-bot",
        "login mail-pass refused",
        "url https://sid:smspass@sms.example/2010-04-01/Accounts",
        "token sms-tok",
        "to https://hook.example/in/abc?key=zz",
        "hmac sign-me",
        "routing pdkey0123456789",
        "encoded https%3A%2F%2Fhooks.slack.com%2Fservices%2FT0%2FB0%2Fhooksecret123",
    ],
)
def test_redact_removes_every_configured_secret(text: str) -> None:
    out = redact(text, SECRETS)
    for secret in (
        "hooksecret123",
        "xoxb-bot",
        "mail-pass",
        "smspass",
        "sms-tok",
        "key=zz",
        "sign-me",
        "pdkey",
    ):
        assert secret not in out
    assert "***" in out


def test_redact_removes_any_query_string_and_userinfo() -> None:
    text = "GET http://user:pw@api.example/x?token=abc&b=1 and https://h.example/p?sig=s#frag"
    assert (
        redact(text, ChannelsConfig()) == "GET http://***@api.example/x?*** and https://h.example/p?***#frag"
    )


def test_redact_leaves_plain_text_alone() -> None:
    text = "sms to …4567: HTTP 400: invalid number"
    assert redact(text, SECRETS) == text


def test_deliver_log_lines_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    reason = "POST https://hooks.slack.com/services/T0/B0/hooksecret123: HTTP 503"
    notifier = Scripted([Outcome(base.RETRY, reason), Outcome(base.DELIVERED)], SECRETS)
    with caplog.at_level(logging.DEBUG):
        run_deliver([], RetryPolicy(), notifier=notifier)
    assert "will be retried" in caplog.text
    assert "hooksecret123" not in caplog.text


def test_notifiers_builds_only_configured_channels() -> None:
    assert notifiers(ChannelsConfig()) == {}
    built = notifiers(SECRETS)
    assert sorted(built) == ["pagerduty", "slack", "webhook"]  # sms and email lack recipients
    config = SECRETS.model_copy(
        update={
            "sms": SECRETS.sms.model_copy(update={"to": ("+15550001111",)}),
            "email": SECRETS.email.model_copy(update={"to": ("ops@example.com",)}),
            "alertmanager": SECRETS.alertmanager.model_copy(update={"url": "http://127.0.0.1:9093"}),
        }
    )
    everything = notifiers(config)
    assert sorted(everything) == sorted(cls.channel for cls in CHANNELS)
    assert all(n.channel == name for name, n in everything.items())


def test_headline_counts_firing_alerts() -> None:
    alerts = ({"state": "firing", "severity": "high"}, {"state": "resolved", "severity": "critical"})
    firing = Notification("r", "g", "firing", alerts, {"alertname": "high_error_rate"}, "k", "http://x")
    resolved = Notification(
        "r", "g", "resolved", alerts[1:], {"alertname": "high_error_rate"}, "k", "http://x"
    )
    assert headline(firing) == "[FIRING:1] high_error_rate critical"
    assert headline(resolved) == "[RESOLVED:1] high_error_rate critical"
