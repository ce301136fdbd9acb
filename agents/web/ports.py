"""What the HTTP handlers need from the runtime, as small protocols: the web reads through these.

`agents.app` builds one `WebDeps` from the runtime pieces (each implements its protocol) and hands it
to `agents.web.routes.register`; no handler reaches into the worker for anything else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from agents.cluster import ClusterView
from agents.telemetry import PipelineMetrics
from pipeline.alerting.silence import Silence
from pipeline.config.settings import Config
from pipeline.rules import RuleSet
from pipeline.state.cells import SeriesState


class Ownership(Protocol):
    """Which partitions this worker owns and reads, and since when (the reader)."""

    def active_partitions(self) -> set[int]:
        """The partitions read now (none during a rebalance)."""
        ...

    def is_ready(self) -> bool:
        """Whether the worker holds an assignment, recovered its state and reads its partitions."""
        ...

    @property
    def ready_since(self) -> float | None:
        """Wall time reading started after the last assignment (None while not ready)."""
        ...


class ReaderStatus(Protocol):
    """Read positions and consumer lag of the owned partitions (the reader)."""

    def lag(self) -> dict[str, int]:
        """Messages not yet read per topic."""
        ...

    def positions(self) -> dict[str, dict[int, int]]:
        """Next offset to read per topic and partition."""
        ...


class SeriesSource(Protocol):
    """The owned series (stage 2's view)."""

    def states(self) -> Mapping[str, SeriesState]:
        """Series key -> state of every owned series."""
        ...


class IngestStatus(Protocol):
    """Events in stage 1 that stage 2 has not yet applied."""

    def pending(self) -> int:
        """Events buffered or flushed but not yet delivered."""
        ...

    def buffered(self) -> int:
        """Events waiting in the buffers."""
        ...


class AlertsSource(Protocol):
    """The alerts read model (every worker reads the whole alerts topic)."""

    def active(self) -> list[dict[str, Any]]:
        """Pending and firing alerts."""
        ...

    def query(self, query: Any) -> list[dict[str, Any]]:
        """Transitions matching a `HistoryQuery`, newest first."""
        ...

    def failed_notifications(self) -> list[dict[str, Any]]:
        """Notifications that could not be delivered, newest first."""
        ...

    def last_fetch_ok(self) -> float | None:
        """Monotonic time of the last successful fetch from the broker (None: none yet)."""
        ...


class SilencesSource(Protocol):
    """The silences every worker has read, and how a new version of one is published."""

    def get(self, silence_id: str) -> Silence | None:
        """One silence by id."""
        ...

    def active(self, now_ms: int) -> list[Silence]:
        """Silences in force now."""
        ...

    def listed(self, now_ms: int) -> list[dict[str, Any]]:
        """Every silence with its status, newest first."""
        ...

    def publish(self, silence: Silence) -> Awaitable[None]:
        """Write a silence (or a new version of one) to the silences topic."""
        ...


class NotificationStatus(Protocol):
    """The notification channels of this worker."""

    def channel_results(self) -> dict[str, dict[str, Any] | None]:
        """The last delivery outcome of every configured channel (None: nothing sent yet)."""
        ...

    def queue_depths(self) -> dict[str, int]:
        """Notifications waiting per channel."""
        ...


SendEvent = Callable[[str, bytes], Awaitable[tuple[int, int]]]
"""Publish raw event bytes to a topic; returns (partition, offset) once the broker has them."""


@dataclass(frozen=True)
class WebDeps:
    """Everything the HTTP handlers read or do."""

    config: Config
    started: float
    """Wall time the worker started."""
    ownership: Ownership
    reader: ReaderStatus
    series: SeriesSource
    cluster: ClusterView
    """Every worker's series, and the members of the assignment (`agents.cluster`)."""
    ingest: IngestStatus
    alerts: AlertsSource
    silences: SilencesSource
    notifications: NotificationStatus
    rules: RuleSet
    rule_evaluations: Callable[[], Mapping[int, int] | None]
    """When each owned partition last evaluated its rules (epoch ms; None: no evaluator yet)."""
    table_sizes: Callable[[], dict[str, int]]
    registry: CollectorRegistry
    metrics: PipelineMetrics
    lag_topics: Callable[[], set[str]]
    """The topics whose lag /metrics always reports (input and partials)."""
    send_event: SendEvent
