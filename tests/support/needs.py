"""What a test needs from the machine: skipped without it, failed instead under PULSE_REQUIRE_E2E=1."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from pipeline.errors import BrokerError
from pipeline.tools.broker import EmbeddedBroker

REQUIRE_E2E = os.environ.get("PULSE_REQUIRE_E2E") == "1"


def need(condition: bool, reason: str) -> None:
    """Skip when something the machine may lack is missing; fail instead when CI requires it."""
    if condition:
        return
    if REQUIRE_E2E:
        pytest.fail(f"PULSE_REQUIRE_E2E=1 but {reason}")
    pytest.skip(reason)


def need_binary(name: str, package: str) -> str:
    """Return the path of a program, or skip (fail under PULSE_REQUIRE_E2E=1) when missing."""
    path = shutil.which(name)
    need(path is not None, f"{name} is not installed (Debian package {package})")
    assert path is not None
    return path


def need_broker() -> None:
    """Skip (or fail under PULSE_REQUIRE_E2E=1) when the embedded Tansu broker cannot run here."""
    try:
        from pipeline.tools.broker import broker_binary

        binary = broker_binary()
    except Exception as exc:
        binary = ""
        need(False, f"the Tansu broker binary is unavailable: {exc}")
    need(os.access(binary, os.X_OK), f"the Tansu broker binary {binary} is not executable")


@contextmanager
def embedded_broker() -> Iterator[EmbeddedBroker]:
    """An embedded Tansu broker on a free loopback port, stopped on leaving; skipped (failed under
    PULSE_REQUIRE_E2E=1) when it cannot start."""
    embedded = EmbeddedBroker()
    try:
        embedded.start()
    except BrokerError as exc:
        need(False, f"the embedded broker cannot start: {exc}")
    try:
        yield embedded
    finally:
        embedded.stop()
