"""`pulse check` as a user runs it: a subprocess against real servers on 127.0.0.1, never an alert sent.

The embedded broker (found through `pulse up`'s endpoint.json, or PULSE_BROKER_URL), aiosmtpd with
STARTTLS, a test CA and AUTH, the Slack Web API, webhook, PagerDuty and SMS stand-ins of
tests/support/servers.py, and a real Alertmanager.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.config.settings import ChannelsConfig
from pipeline.tools.broker import EmbeddedBroker
from pipeline.tools.procs import free_port
from tests.support.procs import REPO, pulse_env, real_alertmanager, run_pulse
from tests.support.servers import PagerDutyServer, SlackServer, SmsServer, SmtpServer, WebhookServer

pytestmark = pytest.mark.integration

TIMEOUT = "3"
RULES = REPO / "examples" / "rules" / "seed.yaml"


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Alertmanager; its base URL."""
    with real_alertmanager(tmp_path_factory.mktemp("alertmanager")) as url:
        yield url


def check(tmp: Path, *args: str, **settings: str) -> tuple[int, str, str]:
    """Run `pulse check ARGS` with only `settings` as PULSE_* environment; (exit code, stdout, stderr)."""
    env = pulse_env(tmp, free_port(), **settings)
    done = run_pulse("check", "--timeout", TIMEOUT, *args, env=env, cwd=tmp, timeout=30)
    return done.returncode, done.stdout, done.stderr


def rows(stdout: str) -> dict[str, dict[str, Any]]:
    """The --json report's checks by name."""
    return {row["check"]: row for row in orjson.loads(stdout)["checks"]}


def test_everything_configured_and_reachable_is_ok_and_nothing_is_sent(
    broker: EmbeddedBroker, alertmanager: str, tmp_path: Path
) -> None:
    # The broker is found as the other client commands find it: through a running `pulse up`'s record.
    data = tmp_path / "data"
    data.mkdir()
    record = {"broker_url": broker.url, "web_url": "http://127.0.0.1:1", "pid": os.getpid()}
    (data / "endpoint.json").write_bytes(orjson.dumps(record))
    sms = SmsServer()
    with (
        SmtpServer(tmp_path) as smtp,
        SlackServer() as slack,
        WebhookServer(secret="hook-signing-secret") as hook,
        PagerDutyServer() as pagerduty,
        sms,
    ):
        config = tmp_path / "pulse.yaml"
        channels = {"email": {"ca_file": str(smtp.ca_file)}, "sms": {"account_sid": sms.account_sid}}
        config.write_bytes(orjson.dumps({"channels": channels}))  # JSON is YAML
        code, out, err = check(
            tmp_path,
            "--json",
            PULSE_CONFIG=str(config),
            PULSE_RULES=str(RULES),
            PULSE_SMTP_HOST="127.0.0.1",
            PULSE_SMTP_PORT=str(smtp.port),
            PULSE_SMTP_USER=smtp.user,
            PULSE_SMTP_PASSWORD=smtp.password,
            PULSE_EMAIL_TO="oncall@o4o.example",
            PULSE_SLACK_BOT_TOKEN=slack.token,
            PULSE_SLACK_CHANNEL="#alerts",
            PULSE_SLACK_API_URL=slack.api_url,
            PULSE_WEBHOOK_URL=f"{hook.url}/hooks/pulse",
            PULSE_WEBHOOK_SECRET="hook-signing-secret",
            PULSE_PAGERDUTY_URL=pagerduty.api_url,
            PULSE_PAGERDUTY_ROUTING_KEY=pagerduty.routing_key,
            PULSE_SMS_URL=sms.api_url,
            PULSE_SMS_TOKEN=sms.auth_token,
            PULSE_SMS_TO="+821012345678",
            PULSE_ALERTMANAGER_URL=alertmanager,
        )
        assert code == 0, f"stdout:\n{out}\nstderr:\n{err}"
        found = rows(out)
        names = ["config", "rules", "broker", "slack", "email", "sms", "webhook", "pagerduty", "alertmanager"]
        assert list(found) == names, out
        assert {name: row["status"] for name, row in found.items()} == dict.fromkeys(found, "ok"), out
        assert found["config"]["target"] == f"{config} + environment"
        assert found["rules"]["detail"].startswith(f"4 from {RULES}: high_error_rate"), out
        pulse_up = f"from the running `pulse up` (pid {os.getpid()}"
        assert pulse_up in found["broker"]["detail"] and pulse_up in err, (out, err)
        assert "STARTTLS, AUTH accepted, QUIT" in found["email"]["detail"], out
        assert "auth.test: the token is valid" in found["slack"]["detail"], out
        assert found["alertmanager"]["detail"] == "GET /-/ready answered HTTP 200", out
        # Nothing was sent: no mail, no Slack message, only HEADs to the HTTP channels.
        assert smtp.received == [] and slack.messages == {} and slack.replies == []
        assert [r.path for r in slack.requests] == ["/api/auth.test"]
        assert {r.method for server in (hook, pagerduty, sms) for r in server.requests} == {"HEAD"}
        assert pagerduty.events == [] and sms.messages == []
        for secret in (smtp.password, slack.token, sms.auth_token, pagerduty.routing_key, "hook-signing"):
            assert secret not in out + err


def test_a_plain_relay_under_starttls_and_a_refused_slack_token_are_broken_with_hints(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    password, token, sms_token = "pw-do-not-show-7f3a", "xoxb-refused-token-9c1d", "sms-wrong-token-5e2b"
    with (
        SmtpServer(tmp_path, tls="none", password=password) as smtp,
        SlackServer() as slack,
        SmsServer(account_sid=ChannelsConfig().sms.account_sid) as sms,
    ):
        # Twilio-style credentials written in the URL, the token a wrong one.
        sms_url = sms.api_url.replace("://", f"://{sms.account_sid}:{sms_token}@")
        code, out, err = check(
            tmp_path,
            PULSE_BROKER_URL=broker.url,
            PULSE_SMTP_HOST="127.0.0.1",
            PULSE_SMTP_PORT=str(smtp.port),
            PULSE_SMTP_USER=smtp.user,
            PULSE_SMTP_PASSWORD=password,
            PULSE_EMAIL_TO="oncall@o4o.example",
            PULSE_SLACK_BOT_TOKEN=token,
            PULSE_SLACK_CHANNEL="#alerts",
            PULSE_SLACK_API_URL=slack.api_url,
            PULSE_SMS_URL=sms_url,
            PULSE_SMS_TO="+821012345678",
            PULSE_WEBHOOK_SECRET="hook-secret-without-url",  # no PULSE_WEBHOOK_URL: the worker sends none
        )
        assert smtp.received == [] and slack.messages == {} and sms.messages == []
    assert code == 1, f"stdout:\n{out}\nstderr:\n{err}"
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    status = {name: line.split()[1] for name, line in lines.items() if len(line.split()) > 1}
    assert status["config"] == status["rules"] == status["broker"] == "ok", out
    assert "from PULSE_BROKER_URL" in lines["broker"], out
    assert status["email"] == "broken" and "does not offer STARTTLS" in lines["email"], out
    assert "set PULSE_SMTP_TLS=none for a plain relay such as Mailpit, or implicit for port 465" in out
    assert status["slack"] == "broken" and "invalid_auth" in lines["slack"], out
    assert "check PULSE_SLACK_BOT_TOKEN" in lines["slack"], out
    assert status["sms"] == "broken" and "HTTP 401" in lines["sms"] and "PULSE_SMS_TOKEN" in lines["sms"]
    assert status["webhook"] == "broken" and "without PULSE_WEBHOOK_URL" in lines["webhook"], out
    assert out.rstrip().endswith("4 of 7 checks broken: slack, email, sms, webhook"), out
    for secret in (password, token, token.removeprefix("xoxb-"), sms_token, "hook-secret"):
        assert secret not in out + err


def test_a_config_that_does_not_load_exits_2_with_the_file_key_and_fix(tmp_path: Path) -> None:
    config = tmp_path / "pulse.yaml"
    config.write_text("topics:\n  prefix: t.\nwindows:\n  pane: ten\n", encoding="utf-8")
    code, out, err = check(tmp_path, PULSE_CONFIG=str(config), PULSE_SMTP_PASSWORD="pw-unseen-4411")
    assert code == 2, f"stdout:\n{out}\nstderr:\n{err}"
    assert f"{config} line 4, key windows.pane: invalid duration 'ten'" in out, out
    assert out.splitlines()[1].split()[:2] == ["config", "broken"], out
    assert "cannot check anything else: the config does not load" in out
    assert "pw-unseen-4411" not in out + err
