"""GET /metrics: the owned series as Prometheus metrics, plus the pipeline's own metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric

from agents.web.health import consumer_lag
from pipeline.readout.figures import prometheus_families

if TYPE_CHECKING:
    from agents.app import Pulse

CONTENT_TYPE = "text/plain; version=0.0.4"


class SeriesCollector:
    """Prometheus collector that reads the owned series at scrape time."""

    def __init__(self, pulse: Pulse) -> None:
        self.pulse = pulse

    def collect(self) -> Iterator[Metric]:
        """Yield one metric family per catalogued metric (samples only for owned series)."""
        pulse = self.pulse
        now_ms = int(time.time() * 1000)
        states = pulse.stage2.view.states()
        for fam in prometheus_families(states, now_ms, pulse.config):
            name = fam.name
            if fam.type == "counter" and name.endswith("_total"):
                name = name[: -len("_total")]
            metric = Metric(name, fam.help, fam.type)
            for suffix, labels, value in fam.samples:
                metric.add_sample(fam.name + suffix, labels, float(value))
            yield metric


def register_collector(pulse: Pulse) -> None:
    """Add the series collector to the worker's registry."""
    pulse.registry.register(SeriesCollector(pulse))


def render(pulse: Pulse) -> bytes:
    """Return the full /metrics body."""
    pulse.metrics.buffered.set(pulse.stage1.buffered())
    lag = consumer_lag(pulse)
    for topic in {*pulse.input_topics, pulse.partials_name} | set(lag):
        pulse.metrics.lag.labels(topic).set(lag.get(topic, 0))
    return generate_latest(pulse.registry)
