"""Build the Faust application of one worker from a Config and wire in the agents and web views.

Every pulse topic has the same partition count, so Faust co-assigns partition p of the event topics,
the tick topic, the partials topic and the table changelogs to one worker: that worker pre-aggregates
input partition p (stage 1) and owns every series whose key hashes to p (stage 2).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, cast

from faust.types import TP, TopicT
from prometheus_client import CollectorRegistry, disable_created_metrics

from pipeline.calendar import Calendar
from pipeline.config import Config
from pipeline.kafka import PulseFaustApp, faust_credentials
from pipeline.rules import FlapPolicy, RuleSet, load_rules
from pipeline.telemetry import PipelineMetrics
from schemas.events import TOPIC_OF_TYPE

TICKS = "ticks"
PARTIALS = "partials"
DEADLETTER = "events.deadletter"
ALERTS = "alerts"
SILENCES = "silences"
NOTIFY_DEADLETTER = "notifications.deadletter"


class Pulse:
    """One worker: its config, Faust app, topics, tables, metrics registry and runtime stages."""

    def __init__(self, config: Config, rules: RuleSet | None = None) -> None:
        self.config = config
        self.rules = rules if rules is not None else load_rules(config.rules.file, config.windows.windows)
        cfg = config.rules
        self.flap_policy = FlapPolicy(cfg.flap_window, cfg.flap_max_fires, cfg.flap_hold)
        self.started = time.time()
        self.calendar = Calendar(config.metrics.timezone)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        self.metrics = PipelineMetrics(self.registry)
        settings = faust_settings(config)
        Path(settings["datadir"]).parent.mkdir(parents=True, exist_ok=True)
        self.app = PulseFaustApp(config.app_id, **settings)
        self.app.configure_fetch(config)
        self.input_topics = {config.topic(t): kind for kind, t in TOPIC_OF_TYPE.items()}
        self.ticks_name = config.internal_topic(TICKS)
        self.partials_name = config.internal_topic(PARTIALS)
        self.ingest_topic = self._raw_topic(*self.input_topics, self.ticks_name)
        self.ticks = self._raw_topic(self.ticks_name)
        self.partials = self._raw_topic(self.partials_name)
        self.deadletter = self._raw_topic(config.topic(DEADLETTER))
        self.alerts_name = config.topic(ALERTS)
        self.silences_name = config.topic(SILENCES)
        self.notify_deadletter_name = config.topic(NOTIFY_DEADLETTER)
        self.flushlog = self.app.Table(
            "flushlog", help="last recorded stage-1 flush range of each input partition"
        )
        self.cells = self.app.Table(
            "cells", help="stage-2 series cells: totals and panes with their applied offsets"
        )
        self.alertstate = self.app.Table(
            "alertstate", help="evaluation state of every alert instance (pending since, flap history)"
        )
        alerts = self.app.topic(
            self.alerts_name,
            key_serializer="raw",
            value_serializer="json",
            partitions=config.topics.partitions,
        )
        self.alertlog = self.app.Table(
            "alertlog",
            key_type=bytes,
            changelog_topic=alerts,
            help="last published transition of every alert; its changelog is the alerts topic",
        )
        self.nflog = self.app.Table(
            "nflog", help="delivery ledger: what each channel of each alert group last delivered"
        )
        self.ready_since: float | None = None
        """Wall time the worker became ready after its last rebalance (None while not ready)."""
        self.epoch = 0
        """Incremented on every revocation and assignment; stage 1 restarts a partition on change."""
        connect(self.app.on_partitions_revoked, self._on_rebalance)
        connect(self.app.on_partitions_assigned, self._on_rebalance)
        # Imported here: the agents and views import this module for typing.
        from agents import aggregate, evaluate, history, ingest, notify, probes, silences, ticks
        from pipeline.web import routes

        self.stage1 = ingest.register(self)
        self.stage2 = aggregate.register(self)
        self.app.resume_positions = self._resume_positions
        self.stage2.evaluator = evaluate.Evaluator(self, self.stage2.view, self.rules)
        self.history = history.register(self)
        self.prober = probes.register(self)
        self.silences = silences.register(self)
        self.notifications = notify.register(self)
        ticks.register(self)
        routes.register(self)

    async def _on_rebalance(self, app: Any, *args: Any, **kwargs: Any) -> None:
        self.epoch += 1
        self.ready_since = None

    def _resume_positions(
        self, tps: set[TP], committed: Mapping[TP, int | None] | None
    ) -> dict[TP, int | None]:
        """Where input and partials partitions resume: from the flush and position records."""
        return {**self.stage1.resume(tps, committed), **self.stage2.resume(tps, committed)}

    def _raw_topic(self, *names: str) -> TopicT:
        return self.app.topic(*names, key_serializer="raw", value_serializer="raw")

    def all_topic_names(self) -> list[str]:
        """Return every topic this worker needs to exist before it starts."""
        return [
            *self.input_topics,
            self.ticks_name,
            self.partials_name,
            self.config.topic(DEADLETTER),
            self.config.topic(ALERTS),
            self.silences_name,
            self.notify_deadletter_name,
        ]

    def active_partitions(self) -> set[int]:
        """Return the partitions this worker actively owns right now."""
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == self.partials_name}

    def is_ready(self) -> bool:
        """Whether the worker has joined the group and finished recovering its state."""
        if self.epoch == 0:
            return False
        if self.app.assignor.assigned_actives():
            ready = bool(cast(Any, self.app.tables).recovery.completed.is_set())
        else:
            ready = True  # more workers than partitions: nothing to recover, nothing to consume
        if ready and self.ready_since is None:
            self.ready_since = time.time()
        return ready


def connect(signal: Any, receiver: Callable[..., Awaitable[None]]) -> None:
    """Connect an async receiver `(sender, *args, **kwargs)` to a Faust signal."""
    signal.connect(cast(Any, receiver))


def faust_settings(config: Config) -> dict[str, Any]:
    """Return the Faust settings for a Config (short group timeouts only on the embedded broker)."""
    timings = config.broker.timings()
    settings: dict[str, Any] = {
        "broker": config.broker.url,
        "store": "memory://",
        "topic_partitions": config.topics.partitions,
        "topic_replication_factor": config.topics.replication,
        "web_port": config.web.port,
        "web_bind": config.web.host,
        "web_host": config.web.host,
        "datadir": str(Path(config.worker.data_dir) / config.app_id),
        "consumer_auto_offset_reset": "earliest",
        "stream_wait_empty": False,
        "table_standby_replicas": 1,
        "web_router_enabled": False,
        "web_tables_enabled": False,
        "producer_max_request_size": max(config.ingest.max_message_bytes * 2, 1_048_576),
        "producer_max_batch_size": 1_048_576,
        "consumer_max_fetch_size": max(config.ingest.max_message_bytes * 4, 4_194_304),
    }
    credentials = faust_credentials(config.broker)
    if credentials is not None:
        settings["broker_credentials"] = credentials
    if "session_timeout" in timings:
        settings["broker_session_timeout"] = timings["session_timeout"]
    if "heartbeat_interval" in timings:
        settings["broker_heartbeat_interval"] = timings["heartbeat_interval"]
    if "rebalance_timeout" in timings:
        settings["broker_rebalance_timeout"] = timings["rebalance_timeout"]
    return settings
