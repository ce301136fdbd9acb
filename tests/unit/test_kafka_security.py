"""Kafka TLS and SASL settings reach Faust and every raw aiokafka client."""

from __future__ import annotations

from pathlib import Path

import faust
import pytest
import trustme
from faust.types.auth import AuthProtocol, SASLMechanism

from agents.app import faust_settings
from agents.kafka.transport import client_security, faust_credentials
from pipeline.config.settings import load_config
from pipeline.errors import ConfigError


@pytest.fixture
def cafile(tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return str(path)


def test_plaintext_by_default() -> None:
    broker = load_config({}).broker
    assert faust_credentials(broker) is None
    assert client_security(broker) == {"security_protocol": "PLAINTEXT"}
    assert "broker_credentials" not in faust_settings(load_config({}))


def test_sasl_scram_over_tls(cafile: str) -> None:
    env = {
        "PULSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "PULSE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "PULSE_KAFKA_SASL_USERNAME": "pulse",
        "PULSE_KAFKA_SASL_PASSWORD": "s3cret-password",
        "PULSE_KAFKA_SSL_CAFILE": cafile,
    }
    config = load_config(env)
    credentials = faust_credentials(config.broker)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol is AuthProtocol.SASL_SSL
    assert credentials.mechanism is SASLMechanism.SCRAM_SHA_512
    assert (credentials.username, credentials.password) == ("pulse", "s3cret-password")
    passed = faust_settings(config)["broker_credentials"]
    assert (passed.protocol, passed.mechanism, passed.username) == (
        AuthProtocol.SASL_SSL,
        SASLMechanism.SCRAM_SHA_512,
        "pulse",
    )
    kwargs = client_security(config.broker)
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_password"] == "s3cret-password"
    assert kwargs["ssl_context"].verify_mode.name == "CERT_REQUIRED"
    assert "s3cret-password" not in str(config.redacted())


def test_sasl_plain_without_tls_and_tls_only() -> None:
    env = {
        "PULSE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "PULSE_KAFKA_SASL_USERNAME": "u",
        "PULSE_KAFKA_SASL_PASSWORD": "p",
    }
    credentials = faust_credentials(load_config(env).broker)
    assert credentials.protocol is AuthProtocol.SASL_PLAINTEXT
    assert credentials.mechanism is SASLMechanism.PLAIN
    tls = load_config({"PULSE_KAFKA_SECURITY_PROTOCOL": "SSL"}).broker
    assert isinstance(faust_credentials(tls), faust.SSLCredentials)
    assert "sasl_mechanism" not in client_security(tls)


def test_sasl_without_password_names_the_variables() -> None:
    with pytest.raises(ConfigError, match="PULSE_KAFKA_SASL_PASSWORD"):
        load_config({"PULSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "PULSE_KAFKA_SASL_USERNAME": "u"})
