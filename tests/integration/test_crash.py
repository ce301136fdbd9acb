"""A worker killed with SIGKILL at random moments loses no event and counts none twice."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

from tests.integration.test_exactness import check_totals, owned_series, total_count
from tests.support.cluster import Cluster
from tests.support.groundtruth import make_events, truth
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

CHUNK = 2_000
PACE_S = 1.0
"""A chunk of events every PACE_S: 56,000 events arrive over about 28 s, while the kills happen."""


class Publisher(threading.Thread):
    """Publish the events in chunks on a schedule, alternating single events and envelopes of 40."""

    def __init__(self, cluster: Cluster, events: list[tuple[str, dict[str, Any]]]) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.events = events
        self.published = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for n, start in enumerate(range(0, len(self.events), CHUNK)):
                chunk = self.events[start : start + CHUNK]
                self.cluster.publish_events(chunk, envelope=40 if n % 2 else 1)
                self.published += len(chunk)
                time.sleep(PACE_S)  # paces the traffic, so that the kills fall in the middle of it
        except BaseException as exc:  # reported by the test
            self.error = exc


def test_sigkill_loses_nothing_and_double_counts_nothing(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random()
    seed = rng.randrange(1_000_000)
    now = int(time.time() * 1000)
    events = make_events(48_000, 6_000, 2_000, seed=seed, now_ms=now)
    worker = cluster.add_worker()
    publisher = Publisher(cluster, events)
    publisher.start()
    kills: list[tuple[float, int, int]] = []
    seen = 0
    for _ in range(3):
        # Kill while the worker is visibly making progress, at a random moment.
        before = seen

        def progress() -> tuple[int, int]:
            n = total_count(cluster)
            if n > len(events):
                raise AssertionError(f"counted {n} events, more than the {len(events)} in the test")
            return n, publisher.published

        seen, _ = wait_until(
            progress,
            90,
            f"progress before the kill ((counted, published); counted before the previous kill: {before})",
            until=lambda counted, before=before: counted[0] > before,
            interval=0.1,
            context=lambda worker=worker: f"worker log:\n{worker.tail(40)}",
        )
        delay = rng.uniform(0.0, 1.0)
        time.sleep(delay)  # a random moment for the kill
        worker.kill()
        kills.append((round(delay, 2), seen, publisher.published))
        cluster.workers.remove(worker)
        worker = cluster.add_worker()
    publisher.join(120)
    assert publisher.error is None, f"publishing failed: {publisher.error!r}"
    assert publisher.published == len(events)
    try:
        cluster.wait_quiet()
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nworker log:\n{worker.tail(80)}") from None
    counted = total_count(cluster)
    double = counted - len(events)
    with capsys.disabled():
        print(
            f"\n[crash test] seed={seed} kills (delay s, counted before, published before)={kills} "
            f"events={len(events)} counted={counted} double-counted={double}"
        )
    if counted != len(events):
        series = owned_series(cluster, now + 1000)
        expected = truth(events)
        got = {
            tuple(s["labels"].values()): s["total"]["count"] for s in series.values() if s["kind"] == "http"
        }
        diff = {k: (got.get(k), v) for k, v in expected.http.items() if got.get(k) != v}
        logs = "\n".join(
            line
            for w in cluster.workers
            for line in w.tail(4000).splitlines()
            if "replay" in line or "reading" in line or "assigned" in line
        )
        raise AssertionError(f"counted {counted} of {len(events)} events; http diffs {diff}\n{logs}")
    check_totals(owned_series(cluster, now + 1000), events)
