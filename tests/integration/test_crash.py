"""A worker killed with SIGKILL at random moments loses no event and counts none twice."""

from __future__ import annotations

import random
import time

import pytest

from tests.helpers import Cluster, wait_until
from tests.integration.groundtruth import make_events, truth
from tests.integration.test_exactness import check_totals, owned_series, total_count

pytestmark = pytest.mark.integration


def test_sigkill_loses_nothing_and_double_counts_nothing(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random()
    seed = rng.randrange(1_000_000)
    now = int(time.time() * 1000)
    events = make_events(48_000, 6_000, 2_000, seed=seed, now_ms=now)
    third = len(events) // 3
    worker = cluster.add_worker()
    cluster.publish_events(events[:third])
    cluster.publish_events(events[third : 2 * third], envelope=40)
    kills: list[tuple[float, int]] = []
    seen = 0
    for round_ in range(3):
        # Kill while the worker is visibly making progress, at a random moment.
        before = seen
        seen = wait_until(
            lambda before=before: (n := total_count(cluster)) > before and n < len(events) and n,
            90,
            interval=0.1,
            what="progress before the kill",
        )
        delay = rng.uniform(0.0, 1.0)
        time.sleep(delay)
        worker.kill()
        kills.append((round(delay, 2), seen))
        if round_ == 1:
            # Events keep arriving while no worker runs.
            cluster.publish_events(events[2 * third :])
        cluster.workers.remove(worker)
        worker = cluster.add_worker()
    try:
        wait_until(lambda: total_count(cluster) >= len(events), 120, what="every event to be counted")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nworker log:\n{worker.tail(80)}") from None
    time.sleep(3)  # let any straggling duplicate show up
    counted = total_count(cluster)
    double = counted - len(events)
    with capsys.disabled():
        print(
            f"\n[crash test] seed={seed} kills (delay s, counted before)={kills} "
            f"events={len(events)} counted={counted} double-counted={double}"
        )
    if double:
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
            if "seek" in line or "replay" in line or "rebalance" in line.lower()
        )
        raise AssertionError(f"{double} events counted twice; http diffs {diff}\n{logs}")
    check_totals(owned_series(cluster, now + 1000), events)
