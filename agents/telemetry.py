"""The pipeline's own health metrics (per worker process; sum them across workers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar, overload

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

MetricT = TypeVar("MetricT", Counter, Gauge, Histogram)


class _Declared(Generic[MetricT]):
    """A metric declared on `PipelineMetrics`; each instance builds it in its own registry."""

    def __init__(self, build: Callable[[CollectorRegistry], MetricT]) -> None:
        self.build: Callable[[CollectorRegistry], MetricT] = build

    @overload
    def __get__(self, instance: None, owner: type) -> _Declared[MetricT]: ...
    @overload
    def __get__(self, instance: object, owner: type) -> MetricT: ...
    def __get__(self, instance: object | None, owner: type) -> _Declared[MetricT] | MetricT:
        # `PipelineMetrics.__init__` puts each built metric in the instance's __dict__, which Python reads
        # before a descriptor without __set__: this is reached only on the class.
        if instance is None:
            return self
        raise AttributeError("a metric is built by PipelineMetrics.__init__")


def counter(name: str, documentation: str, *labels: str) -> _Declared[Counter]:
    return _Declared(lambda registry: Counter(name, documentation, labels, registry=registry))


def gauge(name: str, documentation: str, *labels: str) -> _Declared[Gauge]:
    return _Declared(lambda registry: Gauge(name, documentation, labels, registry=registry))


def histogram(
    name: str, documentation: str, buckets: tuple[float, ...], *labels: str
) -> _Declared[Histogram]:
    return _Declared(
        lambda registry: Histogram(name, documentation, labels, buckets=buckets, registry=registry)
    )


class PipelineMetrics:
    """Counters and gauges about the pipeline itself, registered in the given registry.

    One line a metric where it fits: name, help text, (buckets,) label names. Each instance builds them all
    in its own registry, so `metrics.events` is a `Counter`.
    """

    events = counter("pulse_events", "Valid events consumed, by topic", "topic")
    messages = counter("pulse_messages", "Kafka messages consumed (events or envelopes), by topic", "topic")
    deadlettered = counter(
        "pulse_events_deadlettered",
        "Messages or envelope elements sent to the dead-letter topic, by topic and reason",
        "topic",
        "reason",
    )
    late = counter(
        "pulse_events_late",
        "Valid events outside the allowed lateness (kept in totals, not in windows)",
        "topic",
        "kind",
    )
    flushes = counter(
        "pulse_flushes", "Stage-1 flushes, by trigger (size, caught-up, tick, replay)", "trigger"
    )
    flush_seconds = histogram(
        "pulse_flush_duration_seconds",
        "Time to pre-aggregate, record and send one stage-1 flush",
        (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
    )
    cells_written = counter("pulse_cells_written", "Stage-2 cells updated from partial aggregates")
    cells_skipped = counter(
        "pulse_cells_skipped",
        "Stage-2 cells that had already applied a replayed partial (duplicates avoided)",
    )
    cells_overlapped = counter(
        "pulse_cells_overlapped",
        "Stage-2 cells that had applied part of a partial's offset range (an exactness defect; see logs)",
    )
    read_holes = counter(
        "pulse_read_holes",
        "Offsets the embedded broker skipped and the reader re-read, by outcome (refilled, accepted)",
        "topic",
        "outcome",
    )
    cells_expired = counter("pulse_cells_expired", "Stage-2 pane cells dropped after their retention")
    replays = counter(
        "pulse_replays", "Input partitions re-read from their last recorded flush after an assignment"
    )
    folds = counter(
        "pulse_label_folds",
        "Events whose label value was folded into __other__ by the cardinality guard",
        "dimension",
    )
    buffered = gauge("pulse_stage1_buffered_events", "Events held in stage-1 buffers, not yet flushed")
    owned_series = gauge("pulse_owned_series", "Series owned (aggregated and exported) by this worker")
    probes = counter(
        "pulse_probe_runs", "Active probe runs by probe and outcome (up/down)", "probe", "outcome"
    )
    rule_seconds = histogram(
        "pulse_rule_evaluation_seconds",
        "Time to evaluate every rule over the series of one partition",
        (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    )
    transitions = counter(
        "pulse_alert_transitions",
        "Alert state changes published to the alerts topic, by new state and severity",
        "state",
        "severity",
    )
    alerts = gauge(
        "pulse_alerts",
        "Alerts of the rules this worker evaluates, by state and severity",
        "state",
        "severity",
    )
    notifications = counter(
        "notifications",
        "Notifications by channel and final outcome (delivered, failed)",
        "channel",
        "outcome",
    )
    notify_seconds = histogram(
        "pulse_notification_delivery_seconds",
        "Time from the start of a delivery to its final outcome, retries included",
        (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
        "channel",
    )
    notify_queue = gauge(
        "pulse_notification_queue_depth", "Notifications waiting for their channel", "channel"
    )
    lag = gauge(
        "pulse_consumer_lag",
        "Messages not yet consumed, by topic, over the partitions this worker owns",
        "topic",
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        for attribute, declared in vars(PipelineMetrics).items():
            if isinstance(declared, _Declared):
                setattr(self, attribute, declared.build(registry))
