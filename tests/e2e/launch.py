"""What the end-to-end tests share to start `pulse` commands as real processes."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import need

HOST = "127.0.0.1"


def pulse_argv(*args: str) -> list[str]:
    """argv of the installed `pulse` console script (or `python -m pipeline.tools.cli` without it)."""
    script = Path(sys.executable).with_name("pulse")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "pipeline.tools.cli", *args]


def need_broker() -> None:
    """Skip (or fail under PULSE_REQUIRE_E2E=1) when the embedded Tansu broker cannot run here."""
    try:
        from pipeline.tools.broker import broker_binary

        binary = broker_binary()
    except Exception as exc:
        binary = ""
        need(False, f"the Tansu broker binary is unavailable: {exc}")
    need(os.access(binary, os.X_OK), f"the Tansu broker binary {binary} is not executable")


def pulse_env(tmp: Path, web_port: int, **settings: str) -> dict[str, str]:
    """This process's environment without PULSE_* variables, plus a web port, a data dir and `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(
        PULSE_WEB_HOST=HOST,
        PULSE_WEB_PORT=str(web_port),
        PULSE_DATA_DIR=str(tmp / "data"),
        PYTHONUNBUFFERED="1",
    )
    env.update(settings)
    return env


def wait_healthy(port: int, alive: Callable[[], bool], tail: Callable[[], str], within: float) -> None:
    """Wait until the worker behind `pulse up` answers /health with 200; fail if it exits or is late."""
    deadline = time.monotonic() + within
    while True:
        assert alive(), f"`pulse` exited before its worker was healthy:\n{tail()}"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://{HOST}:{port}/health", timeout=2).status_code == 200:
                return
        assert time.monotonic() < deadline, f"worker not healthy within {within:g}s:\n{tail()}"
        time.sleep(0.2)
