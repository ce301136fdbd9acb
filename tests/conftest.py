"""Shared fixtures: one embedded broker per test session, clusters of real worker processes."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from pipeline.tools.broker import EmbeddedBroker
from tests.support.cluster import Cluster
from tests.support.needs import embedded_broker

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

# Property tests draw new examples on every local run, so that they keep finding what nobody thought
# of (a failure is kept in .hypothesis/ and replayed first next time). CI (`.ci/run` sets
# PULSE_REQUIRE_E2E=1) runs one fixed set of examples per test, so that its verdict on a commit does
# not depend on the luck of the draw: a random draw once failed CI on a test's own wrong expectation.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("PULSE_REQUIRE_E2E") == "1":
    settings.load_profile("ci")


@pytest.fixture(scope="session", autouse=True)
def one_tls_context() -> Iterator[None]:
    """Build httpx's default TLS context once per session, not once per request.

    `httpx.get` (and post, delete, ...) makes a client for the one request, whose transport builds a
    TLS context and loads certifi's CA bundle into it: about 40 ms of CPU, even for plain HTTP. The
    tests poll the workers' HTTP APIs thousands of times, on a 2-core machine where the workers need
    that CPU. Every such context is the same (verify=True, no client certificate, the same
    SSL_CERT_FILE/SSL_CERT_DIR), so one is shared; any other TLS setting builds its own as before.
    """
    import httpx._transports.default as transport  # httpx 0.28 (constraints.txt)

    original = getattr(transport, "create_ssl_context", None)
    if original is None:  # another httpx: each request builds its own context, as it did
        yield
        return
    shared: dict[tuple[str | None, str | None], ssl.SSLContext] = {}

    def create_ssl_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> ssl.SSLContext:
        if verify is not True or cert is not None or not trust_env:
            return original(verify=verify, cert=cert, trust_env=trust_env)
        key = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
        if key not in shared:
            shared[key] = original(verify=verify, cert=cert, trust_env=trust_env)
        return shared[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transport, "create_ssl_context", create_ssl_context)
        yield


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """The embedded Tansu broker, on a free loopback port, for the whole session."""
    with embedded_broker() as embedded:
        yield embedded


@pytest.fixture
def cluster(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[Cluster]:
    """A fresh deployment (unique topic prefix and app id); its workers are killed after the test (no
    other test uses its topics or group)."""
    deployment = Cluster(broker.url, tmp_path)
    yield deployment
    deployment.kill()


@pytest.fixture
def artifacts() -> Path:
    """Directory for files tests keep (screenshots, reports)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
