"""Shared fixtures: one embedded broker per test session, clusters of real worker processes."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import BrokerError
from pipeline.tools.broker import EmbeddedBroker
from tests.helpers import Cluster

REQUIRE_E2E = os.environ.get("PULSE_REQUIRE_E2E") == "1"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


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


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """The embedded Tansu broker, on a free loopback port, for the whole session."""
    embedded = EmbeddedBroker()
    try:
        embedded.start()
    except BrokerError as exc:
        need(False, f"the embedded broker cannot start: {exc}")
    yield embedded
    embedded.stop()


@pytest.fixture
def cluster(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[Cluster]:
    """A fresh deployment (unique topic prefix and app id); its workers stop after the test."""
    deployment = Cluster(broker.url, tmp_path)
    yield deployment
    deployment.stop()


@pytest.fixture
def artifacts() -> Path:
    """Directory for files tests keep (screenshots, reports)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
