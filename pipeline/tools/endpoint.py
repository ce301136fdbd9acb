"""Where a running `pulse up` can be found: `endpoint.json` in PULSE_DATA_DIR, removed at exit.

`pulse up` puts its broker on a free port; the other commands (`simulate`, `alerts`, `silence`,
`rules list`) read this record when neither PULSE_BROKER_URL (or a config file's broker.url) nor
`--url` says where to go, and say which one they use. A record whose pid is no longer alive (a
`pulse up` killed with SIGKILL) is ignored.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import orjson

from pipeline.config.settings import BrokerConfig, Config

FILE = "endpoint.json"


@dataclass(frozen=True)
class Endpoint:
    """A running `pulse up`: its broker, its worker's web address and its pid."""

    broker_url: str
    web_url: str
    pid: int


def path(config: Config) -> Path:
    """The record's path for a config (PULSE_DATA_DIR)."""
    return Path(config.worker.data_dir) / FILE


def write(config: Config, endpoint: Endpoint) -> Path:
    """Record a running `pulse up` (atomically: a reader never sees half a file)."""
    target = path(config)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".tmp")
    partial.write_bytes(
        orjson.dumps({"broker_url": endpoint.broker_url, "web_url": endpoint.web_url, "pid": endpoint.pid})
    )
    partial.replace(target)
    return target


def remove(config: Config, pid: int) -> None:
    """Remove the record, if it is this process's."""
    found = read(config, check_alive=False)
    if found is not None and found.pid == pid:
        with contextlib.suppress(FileNotFoundError):
            path(config).unlink()


def alive(pid: int) -> bool:
    """Whether a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read(config: Config, check_alive: bool = True) -> Endpoint | None:
    """The recorded `pulse up`, or None (no record, an unreadable one, or its process is gone)."""
    try:
        data = orjson.loads(path(config).read_bytes())
        found = Endpoint(str(data["broker_url"]), str(data["web_url"]), int(data["pid"]))
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if check_alive and not alive(found.pid):
        return None
    return found


@dataclass(frozen=True)
class Target:
    """Where a client command goes, and why there (for the line it prints)."""

    url: str
    source: str


def broker(config: Config) -> Target:
    """The broker a client command uses: the configured one, else a running `pulse up`'s, else the default."""
    if config.broker.url != BrokerConfig().url or "PULSE_BROKER_URL" in os.environ:
        return Target(config.broker.url, "PULSE_BROKER_URL")
    found = read(config)
    if found is not None:
        return Target(found.broker_url, f"the running `pulse up` (pid {found.pid}, {path(config)})")
    return Target(config.broker.url, "the default (no PULSE_BROKER_URL, no running `pulse up`)")


def web(config: Config, url: str | None) -> Target:
    """The worker a client command asks: --url, else a running `pulse up`'s, else PULSE_WEB_PORT."""
    if url:
        return Target(url, "--url")
    if "PULSE_WEB_PORT" not in os.environ:
        found = read(config)
        if found is not None:
            return Target(found.web_url, f"the running `pulse up` (pid {found.pid}, {path(config)})")
    source = (
        "PULSE_WEB_PORT" if "PULSE_WEB_PORT" in os.environ else "the default port (no running `pulse up`)"
    )
    return Target(f"http://127.0.0.1:{config.web.port}", source)
