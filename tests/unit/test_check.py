"""`pulse check`'s pure parts: exit status, the table, JSON, config and rules rows, half-set channels,
and that no secret reaches a row or a notifier's shown target."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from agents.notifiers import CHANNELS, notifiers
from agents.notifiers.base import BROKEN, OK, SKIPPED, hidden_url
from agents.notifiers.slack import SlackNotifier
from pipeline.config.settings import ChannelsConfig, load_config
from pipeline.tools.check import (
    Row,
    as_json,
    check_config,
    check_rules,
    exit_status,
    incomplete,
    scrubbed,
    secrets,
    summary,
    table,
)

CONFIG = Row("config", OK, "environment (no PULSE_CONFIG)", "valid")
RULES = Row("rules", OK, "built-in rules", "4 from defaults")


@pytest.mark.parametrize(
    ("statuses", "code"),
    [
        ({"broker": OK, "email": OK}, 0),
        ({"broker": OK, "slack": SKIPPED}, 0),
        ({"broker": BROKEN, "slack": SKIPPED}, 1),
        ({"broker": OK, "email": BROKEN, "slack": BROKEN}, 1),
    ],
)
def test_exit_status_is_1_when_any_check_is_broken_and_skipped_counts_as_fine(
    statuses: dict[str, str], code: int
) -> None:
    rows = [CONFIG, RULES, *(Row(name, status, "t") for name, status in statuses.items())]
    assert exit_status(rows) == code


def test_a_config_that_does_not_load_is_exit_status_2_and_says_nothing_else_was_checked() -> None:
    rows = [Row("config", BROKEN, "pulse.yaml + environment", "invalid configuration:\n  ...")]
    assert exit_status(rows) == 2
    assert summary(rows).startswith("cannot check anything else: the config does not load")
    # A broken rules file does not stop the other checks: exit status 1, not 2.
    assert exit_status([CONFIG, Row("rules", BROKEN, "r.yaml", "2 problems")]) == 1


def test_summary_names_the_broken_checks_or_counts_the_passing_ones() -> None:
    assert summary([CONFIG, RULES]) == "all 2 checks pass"
    assert summary([CONFIG, RULES, Row("slack", SKIPPED, "hook")]) == "all 3 checks pass (1 skipped)"
    broken = [CONFIG, Row("email", BROKEN, "h"), Row("sms", BROKEN, "h")]
    assert summary(broken) == "2 of 3 checks broken: email, sms"


def test_the_table_aligns_its_columns_and_continues_long_details_under_their_column() -> None:
    rows = [
        CONFIG,
        Row(
            "rules",
            BROKEN,
            "/etc/rules.yaml",
            "2 problems in rules file /etc/rules.yaml:\n  line 3: x\n  line 9: y",
        ),
        Row("email", BROKEN, "smtp.example:587 (starttls)", "smtp: the server does not offer STARTTLS"),
    ]
    lines = table(rows).splitlines()
    assert lines[0].split() == ["CHECK", "STATUS", "TARGET", "DETAIL"]
    column = {name: lines[0].index(name) for name in ("STATUS", "TARGET", "DETAIL")}
    email = next(line for line in lines if line.startswith("email"))
    assert email.index("broken") == column["STATUS"]
    assert email.index("smtp.example") == column["TARGET"]
    assert email.index("smtp: the server") == column["DETAIL"]
    rules = lines.index(next(line for line in lines if line.startswith("rules")))
    assert lines[rules + 1] == " " * column["DETAIL"] + "line 3: x"
    assert lines[rules + 2] == " " * column["DETAIL"] + "line 9: y"
    assert lines[-1] == "2 of 3 checks broken: rules, email"


def test_json_has_the_exit_status_the_summary_and_every_row() -> None:
    rows = [CONFIG, Row("slack", SKIPPED, "incoming webhook https://hooks.slack.com/***", "skipped: ...")]
    report = orjson.loads(as_json(rows))
    assert report["exit"] == 0 and report["summary"] == "all 2 checks pass (1 skipped)"
    assert report["checks"][1] == {
        "check": "slack",
        "status": "skipped",
        "target": "incoming webhook https://hooks.slack.com/***",
        "detail": "skipped: ...",
    }


def test_the_config_row_carries_load_configs_message(tmp_path: Path) -> None:
    row, config = check_config({"PULSE_WEB_PORT": "web"})
    assert config is None and row.status == BROKEN and row.target == "environment (no PULSE_CONFIG)"
    assert "environment variable PULSE_WEB_PORT (config key web.port)" in row.detail
    path = tmp_path / "pulse.yaml"
    path.write_text("web:\n  port: 6066\nchannels:\n  emial: {}\n", encoding="utf-8")
    row, config = check_config({"PULSE_CONFIG": str(path)})
    assert config is None and row.target == f"{path} + environment"
    assert f"{path} line 4, key channels.emial: unknown key" in row.detail
    row, config = check_config({"PULSE_BROKER_URL": "http://ops:broker-pw@kafka.example:9092"})
    assert config is None and "invalid broker URL 'http://ops:***@kafka.example:9092'" in row.detail
    assert "broker-pw" not in row.detail
    row, config = check_config({})
    assert config is not None and row == CONFIG


def test_the_rules_row_uses_the_workers_loader_and_names_file_and_line(tmp_path: Path) -> None:
    config = load_config({})
    assert check_rules(config).detail.startswith("4 from defaults: high_error_rate, payment_system_down")
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  - name: x\n    metric: o4o_error_ratio\n    op: '>'\n", encoding="utf-8")
    row = check_rules(load_config({"PULSE_RULES": str(bad)}))
    assert row.status == BROKEN and row.target == str(bad)
    assert f"in rules file {bad}" in row.detail and "line " in row.detail
    row = check_rules(load_config({"PULSE_RULES": str(tmp_path / "missing.yaml")}))
    assert row.status == BROKEN and "cannot read rules file" in row.detail and "PULSE_RULES" in row.detail


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, {}),
        ({"PULSE_SMTP_HOST": "smtp.example"}, {"email": "PULSE_EMAIL_TO"}),
        ({"PULSE_EMAIL_TO": "a@o4o.example"}, {"email": "PULSE_SMTP_HOST"}),
        ({"PULSE_SLACK_BOT_TOKEN": "xoxb-1"}, {"slack": "PULSE_SLACK_CHANNEL"}),
        ({"PULSE_SLACK_CHANNEL": "#alerts"}, {"slack": "PULSE_SLACK_BOT_TOKEN"}),
        ({"PULSE_SLACK_BOT_TOKEN": "xoxb-1", "PULSE_SLACK_WEBHOOK_URL": "https://hooks.slack.com/x"}, {}),
        ({"PULSE_SMS_TOKEN": "t"}, {"sms": "PULSE_SMS_URL and PULSE_SMS_TO"}),
        ({"PULSE_WEBHOOK_SECRET": "s"}, {"webhook": "PULSE_WEBHOOK_URL"}),
        (
            {"PULSE_PAGERDUTY_URL": "https://pd.example/v2/enqueue"},
            {"pagerduty": "PULSE_PAGERDUTY_ROUTING_KEY"},
        ),
        ({"PULSE_SMTP_HOST": "smtp.example", "PULSE_EMAIL_TO": "a@o4o.example"}, {}),
    ],
)
def test_a_channel_with_only_part_of_its_settings_is_broken_and_names_what_is_missing(
    env: dict[str, str], expected: dict[str, str]
) -> None:
    rows = incomplete(load_config(env).channels)
    assert {row.check: row.status for row in rows} == dict.fromkeys(expected, BROKEN)
    for row in rows:
        assert row.detail.endswith(f"without {expected[row.check]}")


ALL_SECRETS = {
    "PULSE_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T1/B2/hooksecretpath",
    "PULSE_SLACK_BOT_TOKEN": "xoxb-bot-secret-token",
    "PULSE_SLACK_CHANNEL": "#alerts",
    "PULSE_SMTP_HOST": "smtp.example",
    "PULSE_SMTP_USER": "pulse",
    "PULSE_SMTP_PASSWORD": "smtp-password-secret",
    "PULSE_EMAIL_TO": "oncall@o4o.example",
    "PULSE_SMS_URL": "https://ACsid:sms-url-password@api.twilio.example/2010-04-01",
    "PULSE_SMS_TOKEN": "sms-token-secret",
    "PULSE_SMS_TO": "+821012345678",
    "PULSE_WEBHOOK_URL": "https://hooks.example/in/webhook-path-secret",
    "PULSE_WEBHOOK_SECRET": "hmac-secret",
    "PULSE_PAGERDUTY_ROUTING_KEY": "pd-routing-key-secret",
    "PULSE_ALERTMANAGER_URL": "https://ops:am-password@am.example:9093",
    "PULSE_API_TOKEN": "api-token-secret",
    "PULSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "PULSE_KAFKA_SASL_USERNAME": "pulse",
    "PULSE_KAFKA_SASL_PASSWORD": "sasl-password-secret",
}
SECRET_TEXTS = [
    "hooksecretpath",
    "xoxb-bot-secret-token",
    "smtp-password-secret",
    "sms-url-password",
    "sms-token-secret",
    "webhook-path-secret",
    "hmac-secret",
    "pd-routing-key-secret",
    "am-password",
    "api-token-secret",
    "sasl-password-secret",
]


def test_no_notifier_shows_a_secret_in_its_target() -> None:
    channels = load_config(ALL_SECRETS).channels
    enabled = notifiers(channels)
    assert set(enabled) == {cls.channel for cls in CHANNELS}
    targets = {name: notifier.shown_target() for name, notifier in enabled.items()}
    for secret in SECRET_TEXTS:
        assert not [name for name, target in targets.items() if secret in target], secret
    assert targets["webhook"] == "https://hooks.example/*** (signed)"
    assert targets["sms"] == "https://api.twilio.example/*** (1 number(s))"
    assert targets["email"] == "smtp.example:587 (starttls, AUTH as pulse)"
    assert targets["alertmanager"] == "https://ops:***@am.example:9093"


def test_every_secret_of_the_config_is_scrubbed_from_every_row() -> None:
    config = load_config(ALL_SECRETS)
    assert {"xoxb-bot-secret-token", "sasl-password-secret", "api-token-secret"} <= set(secrets(config))
    # Each secret as a library may print it: the value, a URL's path, a URL with its credentials.
    printed = [*ALL_SECRETS.values(), "/services/T1/B2/hooksecretpath", "/in/webhook-path-secret"]
    text = " | ".join(printed)
    row = scrubbed(Row("x", BROKEN, text, f"reason: {text}"), config)
    for secret in SECRET_TEXTS:
        assert secret not in row.target and secret not in row.detail, secret
    # A short secret is hidden where it stands alone, not inside words.
    short = load_config({"PULSE_API_TOKEN": "abc"})
    assert scrubbed(Row("x", OK, "t", "token abc in abcd"), short).detail == "token *** in abcd"


def test_hidden_url_keeps_only_scheme_host_and_port() -> None:
    assert hidden_url("https://user:pw@hooks.example:8443/a/secret?x=1") == "https://hooks.example:8443/***"
    assert hidden_url("http://127.0.0.1/p") == "http://127.0.0.1/***"
    assert hidden_url("not a url") == "***"


def test_an_incoming_webhook_is_skipped_without_a_request() -> None:
    config = ChannelsConfig.model_validate(
        {"slack": {"webhook_url": "https://hooks.slack.com/services/T/B/secret", "bot_token": "xoxb-t"}}
    )
    found = asyncio.run(SlackNotifier(config).probe())
    assert found.status == SKIPPED and found.target == "incoming webhook https://hooks.slack.com/***"
    assert found.detail.startswith("skipped: an incoming webhook cannot be tested without posting")
    assert "PULSE_SLACK_BOT_TOKEN is not used without PULSE_SLACK_CHANNEL" in found.detail
