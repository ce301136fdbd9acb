"""Build the Faust application of one worker from a Config and wire in the agents and web views.

Every pulse topic has the same partition count. Faust's consumer subscribes to the table changelogs
only, and co-assigns partition p of every changelog to one worker; that worker then reads input
partition p of every event topic and partials partition p with its own reader (`agents.kafka.reader`): it
pre-aggregates input partition p (stage 1) and owns every series whose key hashes to p (stage 2).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from faust.types import TopicT
from prometheus_client import CollectorRegistry, disable_created_metrics

from agents import cluster, history, probes, silences
from agents.kafka import reader
from agents.kafka.durable import crasher
from agents.kafka.positions import Lifecycle
from agents.kafka.transport import PulseFaustApp, faust_credentials
from agents.notifiers import dispatch
from agents.stages.aggregate import Stage2
from agents.stages.evaluate import Evaluator
from agents.stages.ingest import Stage1
from agents.telemetry import PipelineMetrics
from agents.web import routes
from agents.web.ports import WebDeps
from pipeline.config.settings import Config
from pipeline.rules import FlapPolicy, RuleSet, load_rules
from pipeline.state.calendar import Calendar
from schemas.events import TOPIC_OF_TYPE

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
        self.partials_name = config.internal_topic(PARTIALS)
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
        self._build()

    def _build(self) -> None:
        """Build the runtime pieces, each with what it needs (the one place that wires them)."""
        app, config, metrics = self.app, self.config, self.metrics
        crash = crasher(app)
        lifecycle = Lifecycle()
        self.stage1 = Stage1(
            config,
            self.input_topics,
            self.flushlog,
            self.partials,
            self.deadletter,
            metrics,
            self.calendar,
            crash,
        )
        self.stage2 = Stage2(config, self.partials_name, self.cells, lifecycle, metrics, self.calendar, crash)
        self.reader = reader.register(
            app,
            reader.Reader(
                config, lifecycle, self.stage1, self.stage2, self.input_topics, self.partials_name, crash
            ),
            self.flushlog.changelog_topic.get_topic_name(),
        )
        self.cluster = cluster.register(
            app, config, self.stage2.view.states, self.reader.active_partitions, "cells"
        )
        self.stage2.evaluator = Evaluator(
            config,
            self.stage2.view,
            self.rules,
            self.alertstate,
            self.alertlog,
            lifecycle,
            metrics,
            self.flap_policy,
            self.cluster,
        )
        self.history = history.register(app, config, self.alerts_name, self.notify_deadletter_name)
        self.prober = probes.register(app, config, lifecycle, metrics)
        self.silences = silences.register(app, config.broker, self.silences_name)
        self.notifications = dispatch.register(
            app,
            dispatch.Notifications(
                app,
                config,
                self.nflog,
                lifecycle,
                self.history,
                self.silences,
                metrics,
                self.notify_deadletter_name,
            ),
        )
        routes.register(app, self.web_deps())

    @property
    def ready_since(self) -> float | None:
        """Wall time the worker became ready after its last rebalance (None while not ready)."""
        return self.reader.ready_since

    @property
    def generation(self) -> int:
        """Changes at every assignment and revocation (caches of owned state key on it)."""
        return self.reader.lifecycle.generation

    def _raw_topic(self, *names: str) -> TopicT:
        return self.app.topic(*names, key_serializer="raw", value_serializer="raw")

    def all_topic_names(self) -> list[str]:
        """Return every topic this worker needs to exist before it starts."""
        return [
            *self.input_topics,
            self.partials_name,
            self.config.topic(DEADLETTER),
            self.config.topic(ALERTS),
            self.silences_name,
            self.notify_deadletter_name,
        ]

    def active_partitions(self) -> set[int]:
        """Return the partitions this worker owns and reads right now (none during a rebalance)."""
        return self.reader.active_partitions()

    def is_ready(self) -> bool:
        """Whether the worker holds an assignment, recovered its state and reads its partitions."""
        return self.reader.is_ready()

    def web_deps(self) -> WebDeps:
        """What the HTTP handlers read or do, each through its small protocol."""
        tables = (self.cells, self.flushlog, self.alertstate, self.nflog)
        producer = self.app.producer

        async def send_event(topic: str, body: bytes) -> tuple[int, int]:
            record = await (await producer.send(topic, None, body, None, None, None))
            return record.partition, record.offset

        def rule_evaluations() -> Mapping[int, int] | None:
            evaluator = self.stage2.evaluator
            return evaluator.last_eval if evaluator is not None else None

        return WebDeps(
            config=self.config,
            started=self.started,
            ownership=self.reader,
            reader=self.reader,
            series=self.stage2.view,
            cluster=self.cluster,
            ingest=self.stage1,
            alerts=self.history,
            silences=self.silences,
            notifications=self.notifications,
            rules=self.rules,
            rule_evaluations=rule_evaluations,
            table_sizes=lambda: {t.name: len(t.data) for t in tables},
            registry=self.registry,
            metrics=self.metrics,
            lag_topics=lambda: {*self.input_topics, self.partials_name},
            send_event=send_event,
        )


GC_THRESHOLDS = (50_000, 20, 100)
"""Collect the youngest generation every 50,000 allocations instead of 700."""


def tune_gc() -> None:
    """Tune the garbage collector for a streaming worker (call once everything is built).

    The hot path allocates short-lived tuples, lists and events by the million, which (nearly) never
    form cycles; with the default thresholds the collector ran hundreds of times a second and took
    12-20% of a benchmark run. `gc.freeze` moves what exists at start (modules, the app, tables)
    out of the collector's way for good.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


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
        # What the assignor hands every member with the assignment: the cluster view (agents.cluster)
        # reaches the other workers there, never at the address they bind (0.0.0.0 in containers).
        "canonical_url": config.web.advertised(),
        "datadir": str(Path(config.worker.data_dir) / config.app_id),
        "consumer_auto_offset_reset": "earliest",
        "stream_wait_empty": False,
        # Standby replicas would replay every other worker's changelogs for nothing: with the memory
        # store, Faust recovers a newly active partition from the start of its changelog anyway, and
        # drops standby keys when a recovery completes.
        "table_standby_replicas": 0,
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
