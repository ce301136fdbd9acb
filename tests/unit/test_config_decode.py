"""Config loading (defaults, YAML, env, secrets, error messages) and message decoding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from pipeline.config import settings as config_mod
from pipeline.config.settings import Config, EnvVar, load_config
from pipeline.durations import HINT
from pipeline.errors import ConfigError
from pipeline.ingest.decode import decode
from schemas.events import Rejection

# --- config ----------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "pulse.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(env: dict[str, str], path: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(env, path)
    return str(info.value)


def test_defaults() -> None:
    config = load_config({})
    assert config == Config()
    assert config.broker.url == "kafka://127.0.0.1:9092"
    assert config.broker.embedded is False
    assert config.broker.bootstrap_servers() == ["127.0.0.1:9092"]
    assert config.topics.prefix == "o4o."
    assert config.topics.partitions == 4
    assert config.web.host == "127.0.0.1"
    assert config.web.port == 6066
    assert config.worker.log_level == "info"
    assert config.ingest.max_message_bytes == 1_048_576
    assert config.ingest.flush_interval == 1.0
    assert config.windows.pane == 10.0
    assert config.windows.coarse_pane == 60.0
    assert config.windows.windows == (60.0, 300.0, 3600.0)
    assert config.windows.pane_for(300.0) == 10.0
    assert config.windows.pane_for(3600.0) == 60.0
    assert config.metrics.currency == "KRW"
    assert config.app_id == "o4o.pulse"
    assert config.topic("events.orders") == "o4o.events.orders"
    assert config.internal_topic("partials") == "o4o.pulse-partials"


def test_empty_yaml_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config({}, write(tmp_path, "")) == Config()
    assert load_config({}, write(tmp_path, "# only a comment\n")) == Config()


def test_yaml_file_from_pulse_config(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "topics:\n  prefix: yaml.\n  partitions: 8\nwindows:\n  pane: 5s\n  allowed_lateness: 2m\n"
        "worker:\n  log_level: DEBUG\n",
    )
    config = load_config({"PULSE_CONFIG": str(path)})
    assert config.topics.prefix == "yaml."
    assert config.topics.partitions == 8
    assert config.windows.pane == 5.0
    assert config.windows.allowed_lateness == 120.0
    assert config.worker.log_level == "debug"
    assert config.app_id == "yaml.pulse"


def test_env_overrides_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "topics:\n  prefix: yaml.\n  partitions: 8\nweb:\n  port: 7000\n")
    env = {
        "PULSE_PARTITIONS": "16",
        "PULSE_WEB_PORT": "7100",
        "PULSE_APP_ID": "envapp",
        "PULSE_FLUSH_INTERVAL": "250ms",
    }
    config = load_config(env, path)
    assert config.topics.partitions == 16
    assert config.web.port == 7100
    assert config.topics.prefix == "yaml."  # not overridden: the file's value stays
    assert config.app_id == "envapp"
    assert config.ingest.flush_interval == 0.25


def test_empty_env_value_does_not_override(tmp_path: Path) -> None:
    path = write(tmp_path, "topics:\n  partitions: 8\n")
    assert load_config({"PULSE_PARTITIONS": ""}, path).topics.partitions == 8


def test_env_replaces_a_null_section(tmp_path: Path) -> None:
    path = write(tmp_path, "web:\n")
    assert load_config({"PULSE_WEB_PORT": "7001"}, path).web.port == 7001


# Secrets: every setting typed SecretStr is one, and only those read a `*_FILE` variable.


def secret_value(var: EnvVar, text: str) -> str:
    """A valid value for the setting `var` that contains `text`."""
    return f"http://127.0.0.1/{text}" if var.path[-1] in ("url", "webhook_url") else text


def read_setting(config: Config, path: tuple[str, ...]) -> Any:
    node: Any = config
    for part in path:
        node = getattr(node, part)
    return node.get_secret_value() if isinstance(node, SecretStr) else node


def dig(data: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


SECRET_VARS = [v for v in config_mod.ENV_VARS if v.secret]


@pytest.fixture(params=[v.name for v in SECRET_VARS])
def secret(request: pytest.FixtureRequest) -> EnvVar:
    return next(v for v in SECRET_VARS if v.name == request.param)


def secret_paths(model: type, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every setting whose type is SecretStr (optional or not)."""
    found: set[tuple[str, ...]] = set()
    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        annotation = field.annotation
        if hasattr(annotation, "model_fields"):
            found |= secret_paths(annotation, (*prefix, name))
        elif SecretStr in getattr(annotation, "__args__", (annotation,)):
            found.add((*prefix, name))
    return found


def test_the_secret_variables_are_exactly_the_secret_typed_settings() -> None:
    assert len(SECRET_VARS) >= 9
    assert {v.path for v in SECRET_VARS} == secret_paths(Config)


def test_secret_from_file(tmp_path: Path, secret: EnvVar) -> None:
    path = write(tmp_path, secret_value(secret, "s3cret-from-file") + "\n", "secret.txt")
    config = load_config({f"{secret.name}_FILE": str(path)})
    assert read_setting(config, secret.path) == secret_value(secret, "s3cret-from-file")
    # The variable itself wins over its _FILE form.
    both = load_config({secret.name: secret_value(secret, "direct"), f"{secret.name}_FILE": str(path)})
    assert read_setting(both, secret.path) == secret_value(secret, "direct")


def test_secret_file_missing_names_the_variable_and_the_fix(tmp_path: Path, secret: EnvVar) -> None:
    missing = tmp_path / "nope.txt"
    message = config_error({f"{secret.name}_FILE": str(missing)})
    assert f"{secret.name}_FILE" in message
    assert str(missing) in message
    assert "readable file" in message


def test_only_secret_variables_read_a_file(tmp_path: Path) -> None:
    assert not any(v.secret for v in config_mod.ENV_VARS if v.name == "PULSE_PARTITIONS")
    path = write(tmp_path, "9\n", "partitions.txt")
    assert load_config({"PULSE_PARTITIONS_FILE": str(path)}).topics.partitions == 4


def test_unknown_key_names_file_line_and_known_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "topics:\n  prefix: a.\nweb:\n  host: 0.0.0.0\n  prot: 8080\n")
    message = config_error({}, path)
    assert f"{path} line 5" in message
    assert "web.prot" in message
    assert "unknown key" in message
    assert "known keys here: advertised_url, cluster_timeout, host, port" in message


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, "topics:\n  prefix: a.\nwindow:\n  pane: 10s\n")
    message = config_error({}, path)
    assert f"{path} line 3" in message
    assert "key window:" in message
    assert "known keys here: " + ", ".join(sorted(Config.model_fields)) in message
    assert "windows" in message


def test_bad_duration_names_the_key_and_the_fix(tmp_path: Path) -> None:
    path = write(tmp_path, "windows:\n  pane: 10s\n  allowed_lateness: five minutes\n")
    message = config_error({}, path)
    assert f"{path} line 3" in message
    assert "windows.allowed_lateness" in message
    assert "'five minutes'" in message
    assert HINT in message


def test_bad_duration_in_a_list_names_the_element(tmp_path: Path) -> None:
    path = write(tmp_path, "windows:\n  windows:\n    - 1m\n    - 5 minutes\n")
    message = config_error({}, path)
    assert f"{path} line 4" in message
    assert "windows.windows.1" in message
    assert HINT in message


def test_bad_duration_from_env_names_the_variable() -> None:
    message = config_error({"PULSE_FLUSH_INTERVAL": "soon"})
    assert "environment variable PULSE_FLUSH_INTERVAL" in message
    assert "ingest.flush_interval" in message
    assert HINT in message


def test_bad_value_from_env_names_the_variable_not_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "web:\n  port: 7000\n")
    message = config_error({"PULSE_WEB_PORT": "70000"}, path)
    assert "environment variable PULSE_WEB_PORT" in message
    assert "web.port" in message


def test_invalid_yaml_and_non_mapping(tmp_path: Path) -> None:
    message = config_error({}, write(tmp_path, "web:\n  port: [1, 2\n"))
    assert "not valid YAML" in message
    assert "line" in message
    message = config_error({}, write(tmp_path, "- a\n- b\n"))
    assert "YAML mapping" in message
    message = config_error({"PULSE_CONFIG": str(tmp_path / "absent.yaml")})
    assert "absent.yaml" in message
    assert "PULSE_CONFIG" in message


def test_window_shape_errors(tmp_path: Path) -> None:
    message = config_error({}, write(tmp_path, "windows:\n  pane: 10s\n  coarse_pane: 25s\n"))
    assert "multiple of windows.pane" in message
    message = config_error({}, write(tmp_path, "windows:\n  windows: [1m]\n  allowed_lateness: 2m\n"))
    assert "allowed_lateness" in message


def test_embedded_broker_gets_short_timeouts() -> None:
    embedded = load_config({"PULSE_EMBEDDED_BROKER": "1"}).broker
    assert embedded.embedded is True
    timings = embedded.timings()
    assert timings == {
        "session_timeout": 6.0,
        "heartbeat_interval": 1.0,
        "rebalance_timeout": 6.0,
        "fetch_max_wait": 0.1,
    }
    assert timings["heartbeat_interval"] < timings["session_timeout"]


def test_production_default_keeps_faust_timings() -> None:
    production = load_config({}).broker
    assert production.embedded is False
    assert production.timings() == {}
    assert load_config({"PULSE_EMBEDDED_BROKER": "0"}).broker.timings() == {}


def test_explicit_timings_win_over_both_defaults() -> None:
    embedded = load_config({"PULSE_EMBEDDED_BROKER": "true", "PULSE_SESSION_TIMEOUT": "30s"}).broker
    assert embedded.timings()["session_timeout"] == 30.0
    assert embedded.timings()["heartbeat_interval"] == 1.0
    production = load_config({"PULSE_SESSION_TIMEOUT": "45s"}).broker
    assert production.timings() == {"session_timeout": 45.0}


def test_bad_broker_url() -> None:
    message = config_error({"PULSE_BROKER_URL": "http://broker:9092"})
    assert "PULSE_BROKER_URL" in message
    assert "kafka://HOST:PORT" in message
    config = load_config({"PULSE_BROKER_URL": "kafka://a:1;b"})
    assert config.broker.bootstrap_servers() == ["a:1", "b:9092"]


def test_redacted_hides_secrets(secret: EnvVar) -> None:
    config = load_config({secret.name: secret_value(secret, "hunter2-very-secret")})
    data = config.redacted()
    assert dig(data, secret.path) == "***"
    assert "hunter2-very-secret" not in orjson.dumps(data).decode()
    # Everything else is shown as it is.
    assert data["topics"]["prefix"] == "o4o."
    assert data["windows"]["windows"] == [60.0, 300.0, 3600.0]


def test_redacted_shows_what_is_not_secret_and_hides_every_secret() -> None:
    env = {v.name: secret_value(v, f"secret-{i}-of-{v.name.lower()}") for i, v in enumerate(SECRET_VARS)}
    env |= {
        "PULSE_BROKER_URL": "kafka://b:9092",
        "PULSE_PAGERDUTY_URL": "https://events.example.com/v2/enqueue",
        "PULSE_ALERTMANAGER_URL": "https://ops:am-password@alertmanager.example.com:9093",
        "PULSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "PULSE_KAFKA_SASL_USERNAME": "pulse",
    }
    config = load_config(env)
    data = config.redacted()
    text = orjson.dumps(data).decode()
    # Every secret is hidden, wherever it is...
    for var in SECRET_VARS:
        assert dig(data, var.path) == "***", var.name
        assert env[var.name] not in text, var.name
    # ...and so is a password written inside any URL, while the rest of that URL stays readable.
    assert data["channels"]["alertmanager"]["url"] == "https://ops:***@alertmanager.example.com:9093"
    assert "am-password" not in text
    # What is not secret is shown as it is.
    assert data["broker"]["url"] == "kafka://b:9092"
    assert data["channels"]["pagerduty"]["url"] == "https://events.example.com/v2/enqueue"
    assert data["broker"]["sasl_username"] == "pulse"
    assert data["topics"]["prefix"] == "o4o."
    # A SecretStr never shows its value by accident either (repr, str, f-strings in logs).
    assert "secret-" not in repr(config) and "secret-" not in str(config)


# --- decode ----------------------------------------------------------------------------------------


def test_decode_too_large() -> None:
    value = orjson.dumps({"pad": "x" * 2000})
    rejected = decode(value, 1024)
    assert isinstance(rejected, Rejection)
    assert rejected.code == "too_large"
    assert str(len(value)) in rejected.detail
    assert "ingest.max_message_bytes" in rejected.detail
    # Exactly at the limit is fine.
    assert decode(value, len(value)) == [{"pad": "x" * 2000}]


def test_decode_invalid_utf8() -> None:
    rejected = decode(b'{"a": "\xff\xfe"}', 1024)
    assert isinstance(rejected, Rejection)
    assert rejected.code == "invalid_utf8"
    rejected = decode(b"\xc3\x28", 1024)
    assert isinstance(rejected, Rejection)
    assert rejected.code == "invalid_utf8"


@pytest.mark.parametrize(
    "value", [b"{", b"", b"{'a': 1}", b"[1, 2,]", b"NaN", b'{"a": 1} {"b": 2}', "{\u00e9}".encode()]
)
def test_decode_invalid_json(value: bytes) -> None:
    rejected = decode(value, 1024)
    assert isinstance(rejected, Rejection)
    assert rejected.code == "invalid_json"


def test_decode_tombstone() -> None:
    rejected = decode(None, 1024)
    assert isinstance(rejected, Rejection)
    assert rejected.code == "invalid_json"


@pytest.mark.parametrize("value", [b"1", b"2.5", b'"text"', b"true", b"null"])
def test_decode_neither_object_nor_array(value: bytes) -> None:
    rejected = decode(value, 1024)
    assert isinstance(rejected, Rejection)
    assert rejected.code == "not_object_or_array"


def test_decode_object_is_one_event() -> None:
    event = {"type": "order", "amount": 1.5, "name": "\u00e9\u65e5"}
    assert decode(orjson.dumps(event), 1024) == [event]


def test_decode_array_is_its_elements() -> None:
    events = [{"n": 1}, {"n": 2}, {"n": 3}]
    assert decode(orjson.dumps(events), 1024) == events
    assert decode(b"[]", 1024) == []
    # Elements are returned as they are; validation refuses non-objects later, one by one.
    assert decode(b'[{"n": 1}, 2, "x"]', 1024) == [{"n": 1}, 2, "x"]
