"""Structured JSON logs in the monitoring guide's shape."""

from __future__ import annotations

import logging
import logging.config
from pathlib import Path

import orjson

from pipeline.config.settings import load_config
from pipeline.tools.logs import JsonFormatter, logging_config


def test_a_record_becomes_one_json_line_in_the_guide_shape() -> None:
    record = logging.LogRecord(
        "agents.notifiers.dispatch", logging.WARNING, __file__, 1, "slack: %s", ("retry",), None
    )
    record.channel = "slack"
    line = JsonFormatter("production").format(record)
    body = orjson.loads(line)
    assert set(body) == {"timestamp", "level", "message", "service", "environment", "meta"}
    assert body["level"] == "warning" and body["message"] == "slack: retry"
    assert body["service"] == "o4o-pulse" and body["environment"] == "production"
    assert body["meta"]["logger"] == "agents.notifiers.dispatch" and body["meta"]["channel"] == "slack"
    assert body["timestamp"].endswith("Z") and "\n" not in line


def test_error_and_combined_files_are_optional(tmp_path: Path) -> None:
    combined, errors = tmp_path / "combined.log", tmp_path / "error.log"
    env = {"PULSE_LOG_FORMAT": "json", "PULSE_LOG_FILE": str(combined), "PULSE_ERROR_LOG_FILE": str(errors)}
    config = logging_config(load_config(env))
    assert config["handlers"]["console"]["formatter"] == "json"
    assert "combined" not in logging_config(load_config({}))["handlers"]
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logging.config.dictConfig(config)
        logging.getLogger("t").info("kept in combined only")
        logging.getLogger("t").error("kept in both")
        for handler in root.handlers:
            handler.flush()
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    all_lines = [orjson.loads(x)["message"] for x in combined.read_text().splitlines()]
    error_lines = [orjson.loads(x)["message"] for x in errors.read_text().splitlines()]
    assert all_lines == ["kept in combined only", "kept in both"]
    assert error_lines == ["kept in both"]
