"""One typed, strict configuration: YAML file (PULSE_CONFIG) overlaid by PULSE_* environment variables.

Every setting is listed in `ENV_VARS` and in docs/configuration.md. Unknown keys are
errors; secrets are redacted whenever the config is shown.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
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


class BrokerConfig(_Section):
    """Kafka connection and the consumer-group timing that suits it."""

    url: str = "kafka://127.0.0.1:9092"
    embedded: bool = False
    session_timeout: Duration | None = None
    heartbeat_interval: Duration | None = None
    rebalance_timeout: Duration | None = None
    fetch_max_wait: Duration | None = None
    verify_highwaters: bool | None = None
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

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

    prefix: str = "o4o."
    partitions: int = Field(default=4, ge=1, le=1024)
    replication: int = Field(default=1, ge=1, le=16)


class WebConfig(_Section):
    """The worker's HTTP server (health, metrics, API, live page)."""

    host: str = "127.0.0.1"
    port: int = Field(default=6066, ge=0, le=65535)
    advertised_url: str | None = None
    cluster_timeout: Duration = 1.0

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

    app_id: str | None = None
    data_dir: str = ".pulse-data"
    log_level: str = "info"
    log_format: Literal["text", "json"] = "text"
    log_file: str | None = None
    error_log_file: str | None = None
    verbose: bool = False
    environment: str = "development"

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        levels = ("debug", "info", "warn", "warning", "error", "critical")
        if value.lower() not in levels:
            raise ValueError(f"unknown log level {value!r}: use one of {', '.join(levels)}")
        return value.lower()


class IngestConfig(_Section):
    """Decoding, validation and stage-1 flushing."""

    max_message_bytes: int = Field(default=1_048_576, ge=1024)
    flush_interval: Duration = 1.0
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
    timezone: str = "Asia/Seoul"

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

    file: str | None = None
    interval: Duration = 5.0
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

    webhook_url: SecretStr | None = None
    bot_token: SecretStr | None = None
    channel: str | None = None
    api_url: str = "https://slack.com/api/"


def _split_list(value: Any) -> Any:
    """Accept a comma-separated string (environment variables) as a list."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


Recipients = Annotated[tuple[str, ...], BeforeValidator(_split_list)]
"""Addresses or numbers: a list, or one comma-separated string (as environment variables give)."""


class EmailConfig(_Section):
    """Email through SMTP (STARTTLS, implicit TLS or plain), HTML and plain-text parts."""

    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    sender: str = "o4o-pulse@localhost"
    to: Recipients = ()
    ca_file: str | None = None


class SmsConfig(_Section):
    """SMS through a Twilio-style REST API: POST {url}/Accounts/{account_sid}/Messages.json."""

    url: SecretStr | None = None
    account_sid: str = "AC00000000000000000000000000000000"
    auth_token: SecretStr | None = None
    sender: str = "+10000000000"
    to: Recipients = ()
    max_chars: int = Field(default=320, ge=70, le=1600)


class WebhookConfig(_Section):
    """A generic webhook receiving the Alertmanager v4 payload, signed with HMAC-SHA256."""

    url: SecretStr | None = None
    signing_secret: SecretStr | None = None


class PagerDutyConfig(_Section):
    """PagerDuty Events API v2."""

    url: str = "https://events.pagerduty.com/v2/enqueue"
    routing_key: SecretStr | None = None


class AlertmanagerConfig(_Section):
    """Forward alerts to an Alertmanager (POST /api/v2/alerts) to keep its routing."""

    url: str | None = None


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
    worker: WorkerConfig = WorkerConfig()
    ingest: IngestConfig = IngestConfig()
    windows: WindowsConfig = WindowsConfig()
    metrics: MetricsConfig = MetricsConfig()
    cardinality: CardinalityConfig = CardinalityConfig()
    rules: RulesConfig = RulesConfig()
    probes: tuple[ProbeConfig, ...] = ()
    channels: ChannelsConfig = ChannelsConfig()
    notify: NotifyConfig = NotifyConfig()
    api_token: SecretStr | None = None

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
    help: str
    secret: bool = False


ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar("PULSE_BROKER_URL", ("broker", "url"), "Kafka bootstrap URL, kafka://HOST:PORT"),
    EnvVar(
        "PULSE_EMBEDDED_BROKER",
        ("broker", "embedded"),
        "1 when the broker is the embedded Tansu (short group timeouts)",
    ),
    EnvVar("PULSE_SESSION_TIMEOUT", ("broker", "session_timeout"), "consumer session timeout"),
    EnvVar("PULSE_HEARTBEAT_INTERVAL", ("broker", "heartbeat_interval"), "consumer heartbeat"),
    EnvVar("PULSE_REBALANCE_TIMEOUT", ("broker", "rebalance_timeout"), "rebalance timeout"),
    EnvVar("PULSE_FETCH_MAX_WAIT", ("broker", "fetch_max_wait"), "longest wait of an empty fetch"),
    EnvVar(
        "PULSE_VERIFY_HIGHWATERS",
        ("broker", "verify_highwaters"),
        "check end offsets by a fetch (needed on Tansu)",
    ),
    EnvVar(
        "PULSE_KAFKA_SECURITY_PROTOCOL",
        ("broker", "security_protocol"),
        "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
    ),
    EnvVar("PULSE_KAFKA_SASL_MECHANISM", ("broker", "sasl_mechanism"), "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
    EnvVar("PULSE_KAFKA_SASL_USERNAME", ("broker", "sasl_username"), "SASL user"),
    EnvVar("PULSE_KAFKA_SASL_PASSWORD", ("broker", "sasl_password"), "SASL password", True),
    EnvVar(
        "PULSE_KAFKA_SSL_CAFILE", ("broker", "ssl_cafile"), "CA bundle that signs the brokers' certificates"
    ),
    EnvVar("PULSE_KAFKA_SSL_CERTFILE", ("broker", "ssl_certfile"), "client certificate (mutual TLS)"),
    EnvVar("PULSE_KAFKA_SSL_KEYFILE", ("broker", "ssl_keyfile"), "client private key file (mutual TLS)"),
    EnvVar("PULSE_TOPIC_PREFIX", ("topics", "prefix"), "prefix of every topic name"),
    EnvVar("PULSE_PARTITIONS", ("topics", "partitions"), "partitions of every pulse topic"),
    EnvVar("PULSE_REPLICATION", ("topics", "replication"), "replication factor of new topics"),
    EnvVar("PULSE_WEB_HOST", ("web", "host"), "address the HTTP server binds"),
    EnvVar("PULSE_WEB_PORT", ("web", "port"), "port of the HTTP server"),
    EnvVar(
        "PULSE_WEB_ADVERTISED_URL",
        ("web", "advertised_url"),
        "URL the other workers reach this one at (the cluster view)",
    ),
    EnvVar(
        "PULSE_CLUSTER_TIMEOUT",
        ("web", "cluster_timeout"),
        "how long the cluster view waits for another worker",
    ),
    EnvVar(
        "PULSE_APP_ID",
        ("worker", "app_id"),
        "consumer group and internal-topic prefix; default: PULSE_TOPIC_PREFIX + 'pulse'",
    ),
    EnvVar("PULSE_DATA_DIR", ("worker", "data_dir"), "directory for worker-local state"),
    EnvVar("PULSE_LOG_LEVEL", ("worker", "log_level"), "debug, info, warning or error"),
    EnvVar("PULSE_LOG_FORMAT", ("worker", "log_format"), "text, or json (the guide's structured logs)"),
    EnvVar("PULSE_LOG_VERBOSE", ("worker", "verbose"), "1: show Faust's and aiokafka's INFO records too"),
    EnvVar("PULSE_LOG_FILE", ("worker", "log_file"), "also write every log line to this file"),
    EnvVar("PULSE_ERROR_LOG_FILE", ("worker", "error_log_file"), "also write errors to this file"),
    EnvVar("PULSE_ENVIRONMENT", ("worker", "environment"), "environment name in logs and health"),
    EnvVar("PULSE_FLUSH_INTERVAL", ("ingest", "flush_interval"), "tick: idle flush interval"),
    EnvVar("PULSE_TIMEZONE", ("metrics", "timezone"), "time zone of daily and monthly figures"),
    EnvVar("PULSE_RULES", ("rules", "file"), "rules YAML path; default: the built-in seed rules"),
    EnvVar("PULSE_RULES_INTERVAL", ("rules", "interval"), "how often rules are evaluated"),
    EnvVar("PULSE_SLACK_WEBHOOK_URL", ("channels", "slack", "webhook_url"), "Slack incoming webhook", True),
    EnvVar("PULSE_SLACK_BOT_TOKEN", ("channels", "slack", "bot_token"), "Slack bot token (Web API)", True),
    EnvVar("PULSE_SLACK_CHANNEL", ("channels", "slack", "channel"), "Slack channel for the Web API"),
    EnvVar("PULSE_SLACK_API_URL", ("channels", "slack", "api_url"), "Slack Web API base URL"),
    EnvVar("PULSE_SMTP_HOST", ("channels", "email", "smtp_host"), "SMTP server host"),
    EnvVar("PULSE_SMTP_PORT", ("channels", "email", "smtp_port"), "SMTP server port"),
    EnvVar("PULSE_SMTP_USER", ("channels", "email", "smtp_user"), "SMTP user"),
    EnvVar("PULSE_SMTP_PASSWORD", ("channels", "email", "smtp_password"), "SMTP password", True),
    EnvVar("PULSE_SMTP_TLS", ("channels", "email", "tls"), "starttls, implicit or none"),
    EnvVar("PULSE_EMAIL_FROM", ("channels", "email", "sender"), "sender address of alert emails"),
    EnvVar("PULSE_EMAIL_TO", ("channels", "email", "to"), "recipients, comma-separated"),
    EnvVar("PULSE_SMS_URL", ("channels", "sms", "url"), "base URL of the Twilio-style SMS API", True),
    EnvVar("PULSE_SMS_TOKEN", ("channels", "sms", "auth_token"), "SMS API auth token", True),
    EnvVar("PULSE_SMS_TO", ("channels", "sms", "to"), "SMS recipients, comma-separated"),
    EnvVar(
        "PULSE_WEBHOOK_URL", ("channels", "webhook", "url"), "webhook URL (Alertmanager v4 payload)", True
    ),
    EnvVar("PULSE_WEBHOOK_SECRET", ("channels", "webhook", "signing_secret"), "HMAC-SHA256 key", True),
    EnvVar("PULSE_PAGERDUTY_ROUTING_KEY", ("channels", "pagerduty", "routing_key"), "PagerDuty key", True),
    EnvVar("PULSE_PAGERDUTY_URL", ("channels", "pagerduty", "url"), "PagerDuty Events API v2 URL"),
    EnvVar("PULSE_ALERTMANAGER_URL", ("channels", "alertmanager", "url"), "Alertmanager base URL"),
    EnvVar("PULSE_API_TOKEN", ("api_token",), "bearer token of the mutating HTTP endpoints", True),
    EnvVar("PULSE_MAX_MESSAGE_BYTES", ("ingest", "max_message_bytes"), "larger messages are dead-lettered"),
)


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
        if var.path in (("broker", "embedded"), ("worker", "verbose")):
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
