"""Structured JSON logs in the monitoring guide's shape, and the logging setup of a worker.

One JSON object per line: `timestamp`, `level`, `message`, `service`, `environment`, and `meta` (the
logger, process, and any `extra` fields). Text logs stay the default for humans at a terminal.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from pipeline.config.settings import Config

SERVICE = "o4o-pulse"
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line in the guide's shape."""

    def __init__(self, environment: str = "development") -> None:
        super().__init__()
        self.environment = environment

    def format(self, record: logging.LogRecord) -> str:
        """Return the JSON line of one record."""
        meta: dict[str, Any] = {"logger": record.name, "pid": record.process}
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                meta[key] = value
        if record.exc_info:
            meta["stack"] = self.formatException(record.exc_info)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        body = {
            "timestamp": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "message": record.getMessage(),
            "service": SERVICE,
            "environment": self.environment,
            "meta": meta,
        }
        return orjson.dumps(body, default=str).decode()


LIBRARIES = ("faust", "mode", "aiokafka", "kafka", "slack_sdk", "aiosmtplib", "agents.kafka.transport")
"""Loggers whose INFO records are the libraries' business, not an operator's (the Faust services that
`agents.kafka.transport` subclasses log their start-ups under that module's name)."""


class QuietLibraries(logging.Filter):
    """Keep the libraries' INFO and DEBUG records off the console; their warnings and errors pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether the record goes to the console."""
        if record.levelno >= logging.WARNING:
            return True
        name = record.name
        return not any(name == lib or name.startswith(lib + ".") for lib in LIBRARIES)


def logging_config(config: Config) -> dict[str, Any]:
    """The dictConfig of a worker: console in the configured format, optional combined and error files.

    A text console is calm: Faust's and aiokafka's INFO records (service start-ups, recovery tables)
    are left out unless `worker.verbose` (`-v`) or the debug level asks for them. JSON logs and the
    log files keep every record at the configured level.
    """
    cfg = config.worker
    level = {"warn": "WARNING"}.get(cfg.log_level, cfg.log_level.upper())
    json_formatter = {"()": JsonFormatter, "environment": cfg.environment}
    text_formatter = {"format": "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"}
    formatters = {"json": json_formatter, "text": text_formatter}
    console: dict[str, Any] = {"class": "logging.StreamHandler", "formatter": cfg.log_format, "level": level}
    if cfg.log_format == "text" and not cfg.verbose and level != "DEBUG":
        console["filters"] = ["quiet_libraries"]
    handlers: dict[str, Any] = {"console": console}
    if cfg.log_file:
        handlers["combined"] = {"class": "logging.FileHandler", "filename": cfg.log_file, "formatter": "json"}
    if cfg.error_log_file:
        handlers["errors"] = {
            "class": "logging.FileHandler",
            "filename": cfg.error_log_file,
            "formatter": "json",
            "level": "ERROR",
        }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": formatters,
        "filters": {"quiet_libraries": {"()": QuietLibraries}},
        "handlers": handlers,
        "root": {"level": level, "handlers": list(handlers)},
    }
