"""The pipeline's own health metrics (per worker process; sum them across workers)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class PipelineMetrics:
    """Counters and gauges about the pipeline itself, registered in the given registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "pulse_events",
            "Valid events consumed, by topic",
            ["topic"],
            registry=registry,
        )
        self.messages = Counter(
            "pulse_messages",
            "Kafka messages consumed (events or envelopes), by topic",
            ["topic"],
            registry=registry,
        )
        self.deadlettered = Counter(
            "pulse_events_deadlettered",
            "Messages or envelope elements sent to the dead-letter topic, by topic and reason",
            ["topic", "reason"],
            registry=registry,
        )
        self.late = Counter(
            "pulse_events_late",
            "Valid events outside the allowed lateness (kept in totals, not in windows)",
            ["topic", "kind"],
            registry=registry,
        )
        self.flushes = Counter(
            "pulse_flushes",
            "Stage-1 flushes, by trigger (size, caught-up, tick, replay)",
            ["trigger"],
            registry=registry,
        )
        self.flush_seconds = Histogram(
            "pulse_flush_duration_seconds",
            "Time to pre-aggregate, record and send one stage-1 flush",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
            registry=registry,
        )
        self.cells_written = Counter(
            "pulse_cells_written",
            "Stage-2 cells updated from partial aggregates",
            registry=registry,
        )
        self.cells_skipped = Counter(
            "pulse_cells_skipped",
            "Stage-2 cells that had already applied a replayed partial (duplicates avoided)",
            registry=registry,
        )
        self.cells_overlapped = Counter(
            "pulse_cells_overlapped",
            "Stage-2 cells that had applied part of a partial's offset range (an exactness defect; see logs)",
            registry=registry,
        )
        self.cells_expired = Counter(
            "pulse_cells_expired",
            "Stage-2 pane cells dropped after their retention",
            registry=registry,
        )
        self.replays = Counter(
            "pulse_replays",
            "Input partitions re-read from their last recorded flush after an assignment",
            registry=registry,
        )
        self.folds = Counter(
            "pulse_label_folds",
            "Events whose label value was folded into __other__ by the cardinality guard",
            ["dimension"],
            registry=registry,
        )
        self.buffered = Gauge(
            "pulse_stage1_buffered_events",
            "Events held in stage-1 buffers, not yet flushed",
            registry=registry,
        )
        self.owned_series = Gauge(
            "pulse_owned_series",
            "Series owned (aggregated and exported) by this worker",
            registry=registry,
        )
        self.probes = Counter(
            "pulse_probe_runs",
            "Active probe runs by probe and outcome (up/down)",
            ["probe", "outcome"],
            registry=registry,
        )
        self.rule_seconds = Histogram(
            "pulse_rule_evaluation_seconds",
            "Time to evaluate every rule over the series of one partition",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=registry,
        )
        self.transitions = Counter(
            "pulse_alert_transitions",
            "Alert state changes published to the alerts topic, by new state and severity",
            ["state", "severity"],
            registry=registry,
        )
        self.alerts = Gauge(
            "pulse_alerts",
            "Alerts of the rules this worker evaluates, by state and severity",
            ["state", "severity"],
            registry=registry,
        )
        self.notifications = Counter(
            "notifications",
            "Notifications by channel and final outcome (delivered, failed)",
            ["channel", "outcome"],
            registry=registry,
        )
        self.notify_seconds = Histogram(
            "pulse_notification_delivery_seconds",
            "Time from the start of a delivery to its final outcome, retries included",
            ["channel"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
            registry=registry,
        )
        self.notify_queue = Gauge(
            "pulse_notification_queue_depth",
            "Notifications waiting for their channel",
            ["channel"],
            registry=registry,
        )
        self.lag = Gauge(
            "pulse_consumer_lag",
            "Messages not yet consumed, by topic, over the partitions this worker owns",
            ["topic"],
            registry=registry,
        )
