"""Shared fixtures: one embedded broker per test session, clusters of real worker processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.tools.broker import EmbeddedBroker
from tests.support.cluster import Cluster
from tests.support.needs import embedded_broker

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """The embedded Tansu broker, on a free loopback port, for the whole session."""
    with embedded_broker() as embedded:
        yield embedded


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
