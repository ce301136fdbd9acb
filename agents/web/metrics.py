"""GET /metrics: the owned series as Prometheus metrics, plus the pipeline's own metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric

from pipeline.readout.figures import prometheus_families

if TYPE_CHECKING:
    from agents.web.ports import SeriesSource, WebDeps
    from pipeline.config.settings import Config

CONTENT_TYPE = "text/plain; version=0.0.4"


class SeriesCollector:
    """Prometheus collector that reads the owned series at scrape time."""

    def __init__(self, series: SeriesSource, config: Config) -> None:
        self.series = series
        self.config = config

    def collect(self) -> Iterator[Metric]:
        """Yield one metric family per catalogued metric (samples only for owned series)."""
        now_ms = int(time.time() * 1000)
        states = self.series.states()
        for fam in prometheus_families(states, now_ms, self.config):
            name = fam.name
            if fam.type == "counter" and name.endswith("_total"):
                name = name[: -len("_total")]
            metric = Metric(name, fam.help, fam.type)
            for suffix, labels, value in fam.samples:
                metric.add_sample(fam.name + suffix, labels, float(value))
            yield metric


def register_collector(deps: WebDeps) -> None:
    """Add the series collector to the worker's registry."""
    deps.registry.register(SeriesCollector(deps.series, deps.config))


def render(deps: WebDeps) -> bytes:
    """Return the full /metrics body."""
    deps.metrics.buffered.set(deps.ingest.buffered())
    lag = deps.reader.lag()
    for topic in deps.lag_topics() | set(lag):
        deps.metrics.lag.labels(topic).set(lag.get(topic, 0))
    return generate_latest(deps.registry)
