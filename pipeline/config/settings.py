"""One typed, strict configuration: YAML file (PULSE_CONFIG) overlaid by PULSE_* environment variables.

Every setting is listed in docs/configuration.md; one that an environment variable sets carries its
`Env` mark, and `ENV_VARS` gathers them. Unknown keys are errors; secrets (`SecretStr`) are redacted
whenever the config is shown.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import to_jsonable_python

from pipeline.durations import HINT as DURATION_HINT
from pipeline.durations import parse_duration
from pipeline.errors import ConfigError

Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Env:
    """Marks a setting that an environment variable sets: `port: Annotated[int, Env("PULSE_WEB_PORT")]`.
    `ENV_VARS` gathers the marks."""

    name: str


class BrokerConfig(_Section):
    """Kafka connection and the consumer-group timing that suits it."""

    url: Annotated[str, Env("PULSE_BROKER_URL")] = "kafka://127.0.0.1:9092"
    embedded: Annotated[bool, Env("PULSE_EMBEDDED_BROKER")] = False
    session_timeout: Annotated[Duration | None, Env("PULSE_SESSION_TIMEOUT")] = None
    heartbeat_interval: Annotated[Duration | None, Env("PULSE_HEARTBEAT_INTERVAL")] = None
    rebalance_timeout: Annotated[Duration | None, Env("PULSE_REBALANCE_TIMEOUT")] = None
    fetch_max_wait: Annotated[Duration | None, Env("PULSE_FETCH_MAX_WAIT")] = None
    verify_highwaters: Annotated[bool | None, Env("PULSE_VERIFY_HIGHWATERS")] = None
    security_protocol: Annotated[
        Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"], Env("PULSE_KAFKA_SECURITY_PROTOCOL")
    ] = "PLAINTEXT"
    sasl_mechanism: Annotated[
        Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"], Env("PULSE_KAFKA_SASL_MECHANISM")
    ] = "PLAIN"
    sasl_username: Annotated[str | None, Env("PULSE_KAFKA_SASL_USERNAME")] = None
    sasl_password: Annotated[SecretStr | None, Env("PULSE_KAFKA_SASL_PASSWORD")] = None
    ssl_cafile: Annotated[str | None, Env("PULSE_KAFKA_SSL_CAFILE")] = None
    ssl_certfile: Annotated[str | None, Env("PULSE_KAFKA_SSL_CERTFILE")] = None
    ssl_keyfile: Annotated[str | None, Env("PULSE_KAFKA_SSL_KEYFILE")] = None

    @model_validator(mode="after")
    def _check_security(self) -> BrokerConfig:
        sasl = self.security_protocol.startswith("SASL")
        if sasl and not (self.sasl_username and self.sasl_password):
            raise ValueError(
                f"broker.security_protocol {self.security_protocol} needs PULSE_KAFKA_SASL_USERNAME and "
                "PULSE_KAFKA_SASL_PASSWORD"
            )
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ValueError(
                "a client certificate needs both PULSE_KAFKA_SSL_CERTFILE and PULSE_KAFKA_SSL_KEYFILE"
            )
        return self

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        for part in value.split(";"):
            parsed = urlsplit(part if "://" in part else f"kafka://{part}")
            if parsed.scheme not in ("kafka", "aiokafka") or not parsed.hostname:
                raise ValueError(
                    f"invalid broker URL {value!r}: use kafka://HOST:PORT (several separated by ';')"
                )
        return value

    def timings(self) -> dict[str, float]:
        """Consumer timings: short ones for the embedded broker, Faust's own otherwise."""
        embedded = {
            "session_timeout": 6.0,
            "heartbeat_interval": 1.0,
            "rebalance_timeout": 6.0,
            "fetch_max_wait": 0.1,
        }
        chosen = {
            "session_timeout": self.session_timeout,
            "heartbeat_interval": self.heartbeat_interval,
            "rebalance_timeout": self.rebalance_timeout,
            "fetch_max_wait": self.fetch_max_wait,
        }
        out: dict[str, float] = {}
        for key, value in chosen.items():
            if value is not None:
                out[key] = value
            elif self.embedded:
                out[key] = embedded[key]
        return out

    def bootstrap_servers(self) -> list[str]:
        """Return host:port strings for raw aiokafka clients."""
        servers = []
        for part in self.url.split(";"):
            parsed = urlsplit(part if "://" in part else f"kafka://{part}")
            servers.append(f"{parsed.hostname}:{parsed.port or 9092}")
        return servers


class TopicsConfig(_Section):
    """Topic naming and layout; every topic of the pipeline shares one partition count."""

    prefix: Annotated[str, Env("PULSE_TOPIC_PREFIX")] = "o4o."
    partitions: Annotated[int, Env("PULSE_PARTITIONS")] = Field(default=4, ge=1, le=1024)
    replication: Annotated[int, Env("PULSE_REPLICATION")] = Field(default=1, ge=1, le=16)


class WebConfig(_Section):
    """The worker's HTTP server (health, metrics, API, live page)."""

    host: Annotated[str, Env("PULSE_WEB_HOST")] = "127.0.0.1"
    port: Annotated[int, Env("PULSE_WEB_PORT")] = Field(default=6066, ge=0, le=65535)
    advertised_url: Annotated[str | None, Env("PULSE_WEB_ADVERTISED_URL")] = None
    cluster_timeout: Annotated[Duration, Env("PULSE_CLUSTER_TIMEOUT")] = 1.0

    @field_validator("advertised_url")
    @classmethod
    def _check_advertised(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlsplit(value)
        try:
            port_ok = parsed.port is None or parsed.port > 0
        except ValueError:  # not a number, or out of range
            port_ok = False
        if (
            parsed.scheme not in ("http", "https")
            or not parsed.hostname
            or not port_ok
            or parsed.path not in ("", "/")
        ):
            raise ValueError(
                f"invalid advertised URL {value!r}: use http://HOST:PORT, an address the other workers "
                "can reach (no path)"
            )
        if parsed.hostname in UNSPECIFIED_HOSTS:
            raise ValueError(
                f"advertised URL {value!r} names no host: use this worker's name or address "
                "(e.g. http://worker-1:6066), not the address it binds"
            )
        return value.rstrip("/")

    @field_validator("cluster_timeout")
    @classmethod
    def _check_cluster_timeout(cls, value: float) -> float:
        if not 0 < value <= 60:
            raise ValueError("web.cluster_timeout must be more than 0 and at most 60s")
        return value

    def advertised(self, hostname: Callable[[], str] = socket.gethostname) -> str:
        """The URL other workers reach this one at (Faust's `canonical_url`): `advertised_url` when set;
        else `http://<host>:<port>` for a concrete host, and the machine's name (`hostname()`) when the
        server binds every address (0.0.0.0 or ::), which no other worker could reach."""
        if self.advertised_url:
            return self.advertised_url
        host = hostname() if self.host in UNSPECIFIED_HOSTS else self.host
        if ":" in host:  # an IPv6 address
            host = f"[{host.strip('[]')}]"
        return f"http://{host}:{self.port}"


UNSPECIFIED_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})
"""Hosts that mean "every address" when bound: never an address to advertise."""


class WorkerConfig(_Section):
    """Identity and local state of a worker process."""

    app_id: Annotated[str | None, Env("PULSE_APP_ID")] = None
    data_dir: Annotated[str, Env("PULSE_DATA_DIR")] = ".pulse-data"
    log_level: Annotated[str, Env("PULSE_LOG_LEVEL")] = "info"
    log_format: Annotated[Literal["text", "json"], Env("PULSE_LOG_FORMAT")] = "text"
    log_file: Annotated[str | None, Env("PULSE_LOG_FILE")] = None
    error_log_file: Annotated[str | None, Env("PULSE_ERROR_LOG_FILE")] = None
    verbose: Annotated[bool, Env("PULSE_LOG_VERBOSE")] = False
    environment: Annotated[str, Env("PULSE_ENVIRONMENT")] = "development"

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        levels = ("debug", "info", "warn", "warning", "error", "critical")
        if value.lower() not in levels:
            raise ValueError(f"unknown log level {value!r}: use one of {', '.join(levels)}")
        return value.lower()


class IngestConfig(_Section):
    """Decoding, validation and stage-1 flushing."""

    max_message_bytes: Annotated[int, Env("PULSE_MAX_MESSAGE_BYTES")] = Field(default=1_048_576, ge=1024)
    flush_interval: Annotated[Duration, Env("PULSE_FLUSH_INTERVAL")] = 1.0
    min_flush_interval: Duration = 0.1
    flush_max_events: int = Field(default=20_000, ge=1)


class WindowsConfig(_Section):
    """Pane sizes, served windows and event-time tolerance."""

    pane: Duration = 10.0
    coarse_pane: Duration = 60.0
    windows: tuple[Duration, ...] = (60.0, 300.0, 3600.0)
    allowed_lateness: Duration = 300.0
    max_future_skew: Duration = 60.0
    fine_horizon: Duration = 600.0

    @model_validator(mode="after")
    def _check_shape(self) -> WindowsConfig:
        if self.pane < 1 or self.pane != int(self.pane):
            raise ValueError("windows.pane must be a whole number of seconds, at least 1s")
        if self.coarse_pane % self.pane:
            raise ValueError("windows.coarse_pane must be a multiple of windows.pane")
        for window in self.windows:
            size = self.pane if window <= self.fine_horizon else self.coarse_pane
            if window % size or window < size:
                raise ValueError(
                    f"window {window:g}s must be a multiple of its pane ({size:g}s); windows up "
                    "to windows.fine_horizon use windows.pane, longer ones windows.coarse_pane"
                )
        if not self.windows:
            raise ValueError("windows.windows must list at least one window")
        if self.allowed_lateness > max(self.windows):
            raise ValueError("windows.allowed_lateness must not exceed the longest window")
        return self

    def pane_for(self, window: float) -> float:
        """Return the pane size that serves a window."""
        return self.pane if window <= self.fine_horizon else self.coarse_pane

    def retention_fine(self) -> float:
        """How long fine panes are kept."""
        fine = [w for w in self.windows if w <= self.fine_horizon]
        return max(fine, default=0.0) + self.allowed_lateness + self.pane

    def retention_coarse(self) -> float:
        """How long coarse panes are kept."""
        coarse = [w for w in self.windows if w > self.fine_horizon]
        return max(coarse, default=0.0) + self.allowed_lateness + self.coarse_pane


class MetricsConfig(_Section):
    """What the export computes from events."""

    currency: str = Field(default="KRW", pattern="^[A-Z]{3}$")
    timezone: Annotated[str, Env("PULSE_TIMEZONE")] = "Asia/Seoul"

    @field_validator("timezone")
    @classmethod
    def _check_tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}: use an IANA name like Asia/Seoul") from exc
        return value


class CardinalityConfig(_Section):
    """Most distinct values each label dimension admits per input partition; the rest fold."""

    service: int = Field(default=200, ge=1)
    route: int = Field(default=1000, ge=1)
    method: int = Field(default=20, ge=1)
    user_role: int = Field(default=50, ge=1)
    currency: int = Field(default=50, ge=1)
    product: int = Field(default=100_000, ge=1)
    gauge: int = Field(default=2000, ge=1)
    error_code: int = Field(default=500, ge=1)
    payment_method: int = Field(default=50, ge=1)

    def limits(self) -> dict[str, int]:
        """Limit by dimension name."""
        return self.model_dump()


class RulesConfig(_Section):
    """Which rules are evaluated, how often, and how flapping alerts are damped."""

    file: Annotated[str | None, Env("PULSE_RULES")] = None
    interval: Annotated[Duration, Env("PULSE_RULES_INTERVAL")] = 5.0
    flap_window: Duration = 1800.0
    flap_max_fires: int = Field(default=3, ge=2)
    flap_hold: Duration = 600.0
    history_max: int = Field(default=10_000, ge=100)

    @field_validator("interval")
    @classmethod
    def _check_interval(cls, value: float) -> float:
        if value < 0.1:
            raise ValueError("rules.interval must be at least 100ms")
        return value


class ProbeConfig(_Section):
    """One active health check; its results become heartbeat events of service `name`."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    type: Literal["http", "tcp"]
    url: str | None = None
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    method: Literal["GET", "HEAD", "POST"] = "GET"
    interval: Duration = 15.0
    timeout: Duration = 5.0
    expect_status: tuple[int, ...] = (200,)
    slow_ms: float | None = None

    @model_validator(mode="after")
    def _check_target(self) -> ProbeConfig:
        if self.type == "http":
            if not self.url or urlsplit(self.url).scheme not in ("http", "https"):
                raise ValueError(f"probe {self.name!r}: an http probe needs url: http(s)://HOST[:PORT]/PATH")
        elif not self.host or not self.port:
            raise ValueError(f"probe {self.name!r}: a tcp probe needs host: and port:")
        if self.timeout <= 0 or self.timeout > self.interval:
            raise ValueError(f"probe {self.name!r}: timeout must be > 0 and at most its interval")
        return self


class SlackConfig(_Section):
    """Slack: an incoming webhook, or the Web API (bot token + channel) for updatable messages."""

    webhook_url: Annotated[SecretStr | None, Env("PULSE_SLACK_WEBHOOK_URL")] = None
    bot_token: Annotated[SecretStr | None, Env("PULSE_SLACK_BOT_TOKEN")] = None
    channel: Annotated[str | None, Env("PULSE_SLACK_CHANNEL")] = None
    api_url: Annotated[str, Env("PULSE_SLACK_API_URL")] = "https://slack.com/api/"


def _split_list(value: Any) -> Any:
    """Accept a comma-separated string (environment variables) as a list."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


Recipients = Annotated[tuple[str, ...], BeforeValidator(_split_list)]
"""Addresses or numbers: a list, or one comma-separated string (as environment variables give)."""


class EmailConfig(_Section):
    """Email through SMTP (STARTTLS, implicit TLS or plain), HTML and plain-text parts."""

    smtp_host: Annotated[str | None, Env("PULSE_SMTP_HOST")] = None
    smtp_port: Annotated[int, Env("PULSE_SMTP_PORT")] = Field(default=587, ge=1, le=65535)
    smtp_user: Annotated[str | None, Env("PULSE_SMTP_USER")] = None
    smtp_password: Annotated[SecretStr | None, Env("PULSE_SMTP_PASSWORD")] = None
    tls: Annotated[Literal["starttls", "implicit", "none"], Env("PULSE_SMTP_TLS")] = "starttls"
    sender: Annotated[str, Env("PULSE_EMAIL_FROM")] = "o4o-pulse@localhost"
    to: Annotated[Recipients, Env("PULSE_EMAIL_TO")] = ()
    ca_file: str | None = None


class SmsConfig(_Section):
    """SMS through a Twilio-style REST API: POST {url}/Accounts/{account_sid}/Messages.json."""

    url: Annotated[SecretStr | None, Env("PULSE_SMS_URL")] = None
    account_sid: str = "AC00000000000000000000000000000000"
    auth_token: Annotated[SecretStr | None, Env("PULSE_SMS_TOKEN")] = None
    sender: str = "+10000000000"
    to: Annotated[Recipients, Env("PULSE_SMS_TO")] = ()
    max_chars: int = Field(default=320, ge=70, le=1600)


class WebhookConfig(_Section):
    """A generic webhook receiving the Alertmanager v4 payload, signed with HMAC-SHA256."""

    url: Annotated[SecretStr | None, Env("PULSE_WEBHOOK_URL")] = None
    signing_secret: Annotated[SecretStr | None, Env("PULSE_WEBHOOK_SECRET")] = None


class PagerDutyConfig(_Section):
    """PagerDuty Events API v2."""

    url: Annotated[str, Env("PULSE_PAGERDUTY_URL")] = "https://events.pagerduty.com/v2/enqueue"
    routing_key: Annotated[SecretStr | None, Env("PULSE_PAGERDUTY_ROUTING_KEY")] = None


class AlertmanagerConfig(_Section):
    """Forward alerts to an Alertmanager (POST /api/v2/alerts) to keep its routing."""

    url: Annotated[str | None, Env("PULSE_ALERTMANAGER_URL")] = None


class ChannelsConfig(_Section):
    """Where notifications go; a channel without its URL or host is off."""

    slack: SlackConfig = SlackConfig()
    email: EmailConfig = EmailConfig()
    sms: SmsConfig = SmsConfig()
    webhook: WebhookConfig = WebhookConfig()
    pagerduty: PagerDutyConfig = PagerDutyConfig()
    alertmanager: AlertmanagerConfig = AlertmanagerConfig()
    timeout: Duration = 10.0
    external_url: str = "http://127.0.0.1:6066"


def _check_matchers(value: dict[str, str]) -> dict[str, str]:
    """Label filters as in rules files: a value, or one prefixed by !=, =~ or !~ (full-match regex)."""
    import re

    for label, text in value.items():
        for prefix in ("=~", "!~"):
            if text.startswith(prefix):
                try:
                    re.compile(text[len(prefix) :])
                except re.error as exc:
                    raise ValueError(f"bad regex for label {label!r}: {exc}") from None
    return value


Matchers = Annotated[dict[str, str], AfterValidator(_check_matchers)]


class RouteConfig(_Section):
    """One node of the routing tree (Alertmanager's model): matchers, receiver, grouping, children."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    receiver: str | None = None
    matchers: Matchers = {}
    group_by: tuple[str, ...] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    continue_: bool = Field(default=False, alias="continue")
    active_time_intervals: tuple[str, ...] = ()
    routes: tuple[RouteConfig, ...] = ()


class TimeIntervalConfig(_Section):
    """When a route may deliver: weekdays ("monday:friday") and times ("09:00-18:00") in a time zone."""

    weekdays: tuple[str, ...] = ()
    times: tuple[str, ...] = ()
    timezone: str = "Asia/Seoul"


class ReceiverConfig(_Section):
    """A named set of channels, and whether it gets resolved notifications."""

    name: str
    channels: tuple[Literal["slack", "email", "sms", "webhook", "pagerduty", "alertmanager"], ...]
    send_resolved: bool = True


class InhibitConfig(_Section):
    """A firing source alert mutes matching target alerts that share the `equal` labels."""

    source_matchers: Matchers
    target_matchers: Matchers
    equal: tuple[str, ...] = ()


_DEFAULT_ROUTE = RouteConfig(
    receiver="slack",
    group_by=("alertname",),
    group_wait=10.0,
    group_interval=60.0,
    repeat_interval=4 * 3600.0,
    routes=(
        RouteConfig.model_validate({"receiver": "integrations", "continue": True}),
        RouteConfig(
            receiver="slack", matchers={"severity": "low"}, active_time_intervals=("business_hours",)
        ),
        RouteConfig.model_validate({"receiver": "slack", "continue": True}),
        RouteConfig(receiver="oncall", matchers={"severity": "critical"}),
    ),
)


class NotifyConfig(_Section):
    """Routing, grouping, timing, inhibition and retries of notifications."""

    receivers: tuple[ReceiverConfig, ...] = (
        ReceiverConfig(name="slack", channels=("slack",)),
        ReceiverConfig(name="oncall", channels=("email", "sms")),
        ReceiverConfig(name="integrations", channels=("webhook", "pagerduty", "alertmanager")),
    )
    route: RouteConfig = _DEFAULT_ROUTE
    time_intervals: dict[str, TimeIntervalConfig] = {
        "business_hours": TimeIntervalConfig(weekdays=("monday:friday",), times=("09:00-18:00",))
    }
    inhibit_rules: tuple[InhibitConfig, ...] = (
        InhibitConfig(
            source_matchers={"alertname": "payment_system_down"},
            target_matchers={"alertname": "=~high_error_rate|.*error.*", "route": "=~.*pay.*"},
        ),
    )
    retry_initial: Duration = 1.0
    retry_max: Duration = 60.0
    retry_attempts: int = Field(default=8, ge=1)
    retry_budget: Duration = 600.0

    @model_validator(mode="after")
    def _check_names(self) -> NotifyConfig:
        names = {r.name for r in self.receivers}
        for route in _walk(self.route):
            if route.receiver is not None and route.receiver not in names:
                raise ValueError(
                    f"route receiver {route.receiver!r} is not a receiver; known: {', '.join(sorted(names))}"
                )
            for interval in route.active_time_intervals:
                if interval not in self.time_intervals:
                    raise ValueError(f"time interval {interval!r} is not defined under notify.time_intervals")
        if self.route.receiver is None:
            raise ValueError("notify.route needs a receiver (the default for alerts no child route takes)")
        return self


def _walk(route: RouteConfig) -> list[RouteConfig]:
    out = [route]
    for child in route.routes:
        out.extend(_walk(child))
    return out


class Config(_Section):
    """The whole configuration of one o4o-pulse process."""

    broker: BrokerConfig = BrokerConfig()
    topics: TopicsConfig = TopicsConfig()
    web: WebConfig = WebConfig()
    api_token: Annotated[SecretStr | None, Env("PULSE_API_TOKEN")] = None
    """The bearer token of the web API's mutating endpoints."""
    worker: WorkerConfig = WorkerConfig()
    # The sections below follow the events: in, into windows and series, then to alerts and out.
    ingest: IngestConfig = IngestConfig()
    windows: WindowsConfig = WindowsConfig()
    metrics: MetricsConfig = MetricsConfig()
    cardinality: CardinalityConfig = CardinalityConfig()
    probes: tuple[ProbeConfig, ...] = ()
    rules: RulesConfig = RulesConfig()
    channels: ChannelsConfig = ChannelsConfig()
    notify: NotifyConfig = NotifyConfig()

    def topic(self, name: str) -> str:
        """Return the full name of a contract topic (prefix + name)."""
        return f"{self.topics.prefix}{name}"

    @property
    def app_id(self) -> str:
        """Consumer group and name of internal topics; default: the topic prefix + "pulse"."""
        return self.worker.app_id or f"{self.topics.prefix}pulse"

    def internal_topic(self, name: str) -> str:
        """Return the name of an internal topic of this deployment (app id + name)."""
        return f"{self.app_id}-{name}"

    def redacted(self) -> dict[str, Any]:
        """Return the config as plain data to show: every secret (a `SecretStr` setting) is '***', and
        so is a password written inside any URL (`https://user:***@host`); everything else is shown."""
        data: dict[str, Any] = to_jsonable_python(_redact(self.model_dump(mode="python")))
        return data


@dataclass(frozen=True)
class EnvVar:
    """One environment variable of the contract and the config key it sets."""

    name: str
    path: tuple[str, ...]
    secret: bool = False
    """The setting is a `SecretStr`: it may also be read from the file named by `<name>_FILE`."""
    flag: bool = False
    """The setting is a plain bool: 1, true, yes or on turn it on, any other value off."""


def _env_vars(model: type[BaseModel], path: tuple[str, ...] = ()) -> Iterator[EnvVar]:
    """The environment variables of a section's settings (their `Env` marks), its subsections' too."""
    for key, info in model.model_fields.items():
        here = (*path, info.alias or key)
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, _Section):
            yield from _env_vars(kind, here)
        for mark in info.metadata:
            if isinstance(mark, Env):
                secret = kind is SecretStr or SecretStr in get_args(kind)
                yield EnvVar(mark.name, here, secret=secret, flag=kind is bool)


ENV_VARS: Final = tuple(_env_vars(Config))
"""Every environment variable of the contract, in the order of the settings."""


def _redact(data: Any) -> Any:
    """Hide secrets by their type, and passwords written inside URLs by their place."""
    if isinstance(data, SecretStr):
        return "***"
    if isinstance(data, str):
        return shown_url(data)
    if isinstance(data, dict):
        return {key: _redact(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_redact(v) for v in data]
    return data


_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*:)[^/@\s]*@")


def shown_url(text: str) -> str:
    """Text with the password of every URL in it replaced by '***' (`https://user:***@host/`)."""
    return _URL_PASSWORD.sub(r"\g<head>***@", text)


def secret_text(value: SecretStr | None) -> str | None:
    """The plain text of an optional secret setting, for the one place that uses it."""
    return value.get_secret_value() if value is not None else None


def _line_index(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path of a YAML document to its 1-based line number."""
    index: dict[tuple[str, ...], int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return index

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = str(key_node.value)
                index[(*path, key)] = key_node.start_mark.line + 1
                walk(value_node, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                index[(*path, str(i))] = item.start_mark.line + 1
                walk(item, (*path, str(i)))

    if root is not None:
        walk(root, ())
    return index


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}; check PULSE_CONFIG") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax"
        ) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} line 1: the config must be a YAML mapping of sections")
    return data, _line_index(text)


def _secret_from_file(var: EnvVar, env: Mapping[str, str]) -> str | None:
    file_var = f"{var.name}_FILE"
    if file_var not in env:
        return None
    try:
        return Path(env[file_var]).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"environment variable {file_var}: cannot read {env[file_var]!r} ({exc.strerror}); "
            "point it at a readable file holding the secret"
        ) from exc


def _set_path(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = data
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value


def _env_overlay(data: dict[str, Any], env: Mapping[str, str]) -> dict[tuple[str, ...], str]:
    origin: dict[tuple[str, ...], str] = {}
    for var in ENV_VARS:
        value = env.get(var.name)
        if value is None and var.secret:
            value = _secret_from_file(var, env)
        if value is None or value == "":
            continue
        if var.flag:
            parsed: Any = value.strip().lower() in ("1", "true", "yes", "on")
        else:
            parsed = value
        _set_path(data, var.path, parsed)
        origin[var.path] = var.name
    return origin


def _describe_error(
    err: Mapping[str, Any],
    source: str,
    lines: dict[tuple[str, ...], int],
    origin: dict[tuple[str, ...], str],
) -> str:
    loc = tuple(str(p) for p in err["loc"])
    key = ".".join(loc) or "(top level)"
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "extra_forbidden":
        known = _known_keys(loc[:-1])
        msg = f"unknown key; known keys here: {', '.join(known)}"
    elif "duration" in msg and "invalid duration" not in msg:
        msg = f"{msg}; {DURATION_HINT}"
    for depth in range(len(loc), 0, -1):
        if loc[:depth] in origin:
            return f"environment variable {origin[loc[:depth]]} (config key {key}): {msg}"
    line = None
    for depth in range(len(loc), 0, -1):
        if loc[:depth] in lines:
            line = lines[loc[:depth]]
            break
    where = f"{source} line {line}" if line else source
    return f"{where}, key {key}: {msg}"


def _known_keys(path: tuple[str, ...]) -> list[str]:
    model: Any = Config
    for part in path:
        if part.isdigit():  # an item of a list section such as probes
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
        if getattr(model, "__origin__", None) is tuple:
            model = model.__args__[0]
    return sorted(getattr(model, "model_fields", {}))


def load_config(env: Mapping[str, str] | None = None, path: str | os.PathLike[str] | None = None) -> Config:
    """Load the config from `path` (or PULSE_CONFIG) and the environment; env wins."""
    env = os.environ if env is None else env
    file_path = path if path is not None else env.get("PULSE_CONFIG")
    data: dict[str, Any] = {}
    lines: dict[tuple[str, ...], int] = {}
    source = "environment"
    if file_path:
        data, lines = _read_yaml(Path(file_path))
        source = str(file_path)
    origin = _env_overlay(data, env)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = [_describe_error(e, source, lines, origin) for e in exc.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None
    return config
