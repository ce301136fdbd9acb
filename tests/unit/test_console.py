"""The first ten minutes, in pure parts: a calm console, a banner without secrets, and the record that
lets the other commands find a running `pulse up`."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config.settings import load_config
from pipeline.rules import default_rules
from pipeline.tools import endpoint
from pipeline.tools.banner import MAX_LINES, banner
from pipeline.tools.logs import QuietLibraries, logging_config


def record(name: str, level: int) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, "x", (), None)


def test_library_info_stays_off_the_console_but_their_warnings_and_ours_pass() -> None:
    quiet = QuietLibraries()
    assert not quiet.filter(record("faust.tables.recovery", logging.INFO))
    assert not quiet.filter(record("aiokafka.consumer.group_coordinator", logging.INFO))
    assert not quiet.filter(record("mode.services", logging.DEBUG))
    assert quiet.filter(record("aiokafka", logging.ERROR))
    assert quiet.filter(record("faust.worker", logging.WARNING))
    assert quiet.filter(record("agents.kafka.reader", logging.INFO))
    assert quiet.filter(record("faustian", logging.INFO))  # a prefix, not a substring


@pytest.mark.parametrize(
    ("env", "filtered"),
    [
        ({}, True),
        ({"PULSE_LOG_VERBOSE": "1"}, False),
        ({"PULSE_LOG_LEVEL": "debug"}, False),
        ({"PULSE_LOG_FORMAT": "json"}, False),
    ],
)
def test_verbose_debug_and_json_keep_every_record(env: dict[str, str], filtered: bool) -> None:
    config = logging_config(load_config(env | {"PULSE_LOG_FILE": "/tmp/pulse-test.log"}))
    assert ("filters" in config["handlers"]["console"]) is filtered
    assert "filters" not in config["handlers"]["combined"]  # the log file keeps everything


def test_the_banner_is_short_names_everything_and_hides_secrets() -> None:
    env = {
        "PULSE_BROKER_URL": "kafka://user:kafka-pass@broker:9092",
        "PULSE_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/hook-secret",
        "PULSE_SMTP_HOST": "smtp.example",
        "PULSE_SMTP_PASSWORD": "smtp-secret",
        "PULSE_EMAIL_TO": "a@x,b@x",
        "PULSE_WEBHOOK_URL": "https://hooks.example/x?token=webhook-secret",
        "PULSE_PAGERDUTY_ROUTING_KEY": "pd-secret",
    }
    lines = banner(load_config(env), default_rules(), 42)
    text = "\n".join(lines)
    assert len(lines) <= MAX_LINES
    for secret in ("kafka-pass", "hook-secret", "smtp-secret", "webhook-secret", "pd-secret"):
        assert secret not in text
    assert "kafka://user:***@broker:9092" in text and "http://127.0.0.1:6066/" in text
    assert "4 from defaults" in text and "payment_system_down" in text
    assert "slack (incoming webhook)" in text and "email (2 recipient(s) via smtp.example:587" in text
    assert "webhook (unsigned)" in text and "pagerduty (https://events.pagerduty.com/v2/enqueue)" in text
    quiet = "\n".join(banner(load_config({}), default_rules(), 42))
    assert "none: alerts go to the alerts topic" in quiet


def test_a_recorded_pulse_up_is_found_and_a_dead_one_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PULSE_BROKER_URL", raising=False)
    monkeypatch.delenv("PULSE_WEB_PORT", raising=False)
    config = load_config({"PULSE_DATA_DIR": str(tmp_path)})
    assert endpoint.read(config) is None
    assert endpoint.broker(config).url == "kafka://127.0.0.1:9092"
    assert "default" in endpoint.broker(config).source
    mine = endpoint.Endpoint("kafka://127.0.0.1:41000", "http://127.0.0.1:6999", os.getpid())
    endpoint.write(config, mine)
    assert endpoint.read(config) == mine
    assert endpoint.broker(config).url == "kafka://127.0.0.1:41000"
    assert "running `pulse up`" in endpoint.broker(config).source
    assert endpoint.web(config, None).url == "http://127.0.0.1:6999"
    assert endpoint.web(config, "http://elsewhere:1").source == "--url"
    # What is set wins over the record.
    monkeypatch.setenv("PULSE_BROKER_URL", "kafka://configured:9092")
    given = load_config({"PULSE_DATA_DIR": str(tmp_path), "PULSE_BROKER_URL": "kafka://configured:9092"})
    assert endpoint.broker(given).url == "kafka://configured:9092"
    # A record whose process is gone (a `pulse up` killed with SIGKILL) is ignored.
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    endpoint.write(config, endpoint.Endpoint("kafka://127.0.0.1:1", "http://127.0.0.1:2", int(gone.stdout)))
    assert endpoint.read(config) is None
    # Only its owner removes the record.
    endpoint.write(config, mine)
    endpoint.remove(config, os.getpid() + 1)
    assert endpoint.read(config) == mine
    endpoint.remove(config, os.getpid())
    assert not endpoint.path(config).exists()
