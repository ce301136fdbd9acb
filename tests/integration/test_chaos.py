"""Chaos: workers are killed, stopped and added while 90 s of traffic flow; nothing is lost or counted
twice, and no alert fires twice for one incident.

Three workers start; the test process publishes 90 s of known traffic (2,100 events/s and more,
single events and envelopes of 10-50) while eight disruptions drawn from a seeded sequence happen:
SIGKILL of a worker, SIGTERM of a worker (graceful stop), a new worker joining; at least one worker is
always alive. The rules are the built-in ones plus `chaos_route_errors` (a route's 1m error ratio above
30%, `for: 0`), which a burst of 503s in the middle of the traffic makes fire.

Set PULSE_CHAOS_SEED to replay a run: the traffic and the disruption plan depend on the seed only.
"""

from __future__ import annotations

import os
import random
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from schemas.events import TOPIC_OF_TYPE
from tests.integration.chaos_support import (
    COUNTED,
    Diffs,
    Disruption,
    Member,
    Publisher,
    Traffic,
    alert_violations,
    check_metrics,
    check_totals,
    check_windows,
    count_events,
    decode_events,
    log_digest,
    merged_series,
    plan_disruptions,
    repeated_transitions,
    summarize_alerts,
    wait_all,
)
from tests.support.cluster import Cluster
from tests.support.kafka import end_offsets, read_to_end
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 6
INITIAL_WORKERS = 3
RULE = "chaos_route_errors"
RULES = """
extends: defaults
rules:
  - name: chaos_route_errors
    metric: o4o_route_error_ratio
    window: 1m
    where:
      service: api
      route: /api/chaos/checkout
    op: ">"
    threshold: 30%
    for: 0
    severity: high
    annotations:
      summary: "{{ labels.route }}: 5xx {{ value | percent }}"
"""
SCRAPE_EVERY_S = 3.0
START_TIMEOUT_S = 60.0
TRAFFIC_GRACE_S = 45.0
"""How long the publisher may take beyond the traffic's duration (a loaded machine slows it)."""
STOP_TIMEOUT_S = 30.0
"""A SIGTERMed worker must exit within this (its own shutdown limit is 15 s)."""
QUIET_TIMEOUT_S = 75.0


class Run:
    """The state of one chaos run, and the report printed with its outcome."""

    def __init__(self, cluster: Cluster, seed: int, artifacts: Path) -> None:
        self.cluster = cluster
        self.seed = seed
        self.artifacts = artifacts
        self.traffic = Traffic(seed)
        self.plan: list[Disruption] = plan_disruptions(random.Random(seed), INITIAL_WORKERS)
        self.members: list[Member] = []
        self.publisher: Publisher | None = None
        self.began = time.monotonic()
        self.phases: dict[str, float] = {}
        self.failures: list[str] = []
        self.notes: list[str] = []
        self.diffs = Diffs()
        self.counters: dict[str, float] = {}
        self.alerts = "(not read)"
        self.last_scrape = 0.0

    # -- bookkeeping -----------------------------------------------------------------------------

    def mark(self, phase: str) -> None:
        self.phases[phase] = round(time.monotonic() - self.began, 1)

    def now(self) -> float:
        """Seconds of traffic (negative before it starts)."""
        publisher = self.publisher
        return publisher.elapsed() if publisher is not None and publisher.t0 else -1.0

    def live(self) -> list[Member]:
        return [m for m in self.members if m.state == "live"]

    def member(self, name: str) -> Member | None:
        return next((m for m in self.members if m.name == name), None)

    def join(self, name: str) -> Member:
        worker = self.cluster.add_worker(wait=False)
        member = Member(name, worker, round(self.now(), 1))
        assert f"worker{len(self.members)}" in worker.log_path.name, (name, worker.log_path)
        self.members.append(member)
        return member

    def watch(self) -> None:
        """Scrape every live worker's overlap counter now and then; note workers that died alone."""
        for member in self.live():
            if not member.worker.alive():
                member.state, member.ended_at = "crashed", round(self.now(), 1)
                member.exit_code = member.worker.returncode
                self.failures.append(f"{member.describe()} exited by itself:\n{member.worker.tail(40)}")
        if time.monotonic() - self.last_scrape < SCRAPE_EVERY_S:
            return
        self.last_scrape = time.monotonic()
        for member in self.live():
            member.scrape(self.now())

    # -- phases ----------------------------------------------------------------------------------

    def start_workers(self) -> None:
        for i in range(INITIAL_WORKERS):
            self.join(f"w{i}")

        def owned() -> dict[str, list[int]]:
            self.watch()
            return {m.name: m.worker.detailed()["kafka"]["partitions"] for m in self.live()}

        def shared(parts: dict[str, list[int]]) -> bool:
            return all(parts.values()) and sorted(p for ps in parts.values() for p in ps) == list(
                range(PARTITIONS)
            )

        wait_until(
            owned,
            START_TIMEOUT_S,
            f"{INITIAL_WORKERS} workers to share the {PARTITIONS} partitions (partitions per worker)",
            until=shared,
            ignore=(httpx.HTTPError, OSError, ValueError),
        )
        self.mark("workers ready")

    def disrupt(self) -> None:
        publisher = self.publisher
        assert publisher is not None
        for disruption in self.plan:
            while self.now() < disruption.at:
                if publisher.error is not None or not publisher.is_alive():
                    raise AssertionError(f"the publisher stopped at {self.now():.1f}s: {publisher.error!r}")
                self.watch()
                time.sleep(0.05)  # the plan's schedule (pacing, not a proof of anything)
            self.execute(disruption)
        self.mark("disruptions done")

    def execute(self, disruption: Disruption) -> None:
        at = round(self.now(), 1)
        if disruption.kind == "join":
            member = self.join(disruption.target)
            disruption.note = f"pid {member.worker.pid}"
        else:
            victim = self.member(disruption.target)
            if victim is None or victim.state != "live":
                disruption.note = f"skipped: {victim.describe() if victim else 'no such worker'}"
                self.notes.append(f"disruption {disruption.describe()}")
                return
            if len(self.live()) == 1:  # (the plan never does this; a crash could)
                disruption.note = "skipped: the last live worker"
                return
            disruption.note = f"pid {victim.worker.pid}"
            if disruption.kind == "kill":
                victim.kill(at)
            else:
                victim.terminate(at)
        disruption.done_at = at

    def finish_traffic(self) -> None:
        publisher = self.publisher
        assert publisher is not None

        def progress() -> str:
            self.watch()
            return (
                f"error {publisher.error!r}, at tick {publisher.tick} of {self.traffic.ticks}, "
                f"{publisher.messages} messages, at {self.now():.1f}s"
            )

        wait_until(
            progress,
            self.traffic.duration_s + TRAFFIC_GRACE_S,
            "the publisher to finish, every send acknowledged",
            until=lambda _: publisher.done.is_set(),
            interval=0.1,
            alive=lambda: publisher.done.is_set() or (publisher.error is None and publisher.is_alive()),
        )
        self.mark("traffic acknowledged")

        def late(member: Member) -> None:
            self.failures.append(
                f"{member.describe()} did not exit within {STOP_TIMEOUT_S}s of SIGTERM; killed:\n"
                f"{member.worker.tail(40)}"
            )
            member.worker.kill()
            member.exit_code = member.worker.returncode

        stopped = [m for m in self.members if m.state == "stopped"]
        wait_all(stopped, STOP_TIMEOUT_S, late)
        for member in stopped:
            if member.exit_code not in (0, None):
                self.notes.append(f"{member.describe()}: a graceful stop exited with {member.exit_code}")
        self.mark("stopped workers exited")

    def ground_truth(self) -> tuple[list[tuple[str, dict[str, Any]]], dict[tuple[str, int], int]]:
        """The events the input topics hold (read back to their end offsets), and those offsets.

        Every send was acknowledged, so the end offsets are final. The log is the truth the pipeline
        must match; it is also compared with what the publisher sent.
        """
        publisher = self.publisher
        assert publisher is not None
        cluster = self.cluster
        kind_of = {cluster.topic(kind): kind for kind in TOPIC_OF_TYPE}
        ends, records = read_to_end(cluster.bootstrap, sorted(kind_of), timeout=60)
        events = decode_events(records, kind_of)

        def identity(items: list[tuple[str, dict[str, Any]]]) -> Counter[bytes]:
            return Counter(orjson.dumps(e, option=orjson.OPT_SORT_KEYS) for _, e in items)

        held, sent = identity(events), identity(publisher.sent)
        lost, extra = sent - held, held - sent
        if lost:
            raise AssertionError(
                f"the broker lacks {sum(lost.values())} acknowledged events, e.g. {list(lost)[:3]}"
            )
        if extra:
            self.notes.append(f"the input topics hold {sum(extra.values())} events twice (producer retries)")
        self.mark("ground truth read")
        return events, ends

    def check(self, events: list[tuple[str, dict[str, Any]]], input_ends: dict[tuple[str, int], int]) -> None:
        cluster = self.cluster
        partials = cluster.internal_topic("partials")
        self.watch()  # a worker that ended by itself is no longer live (and is a failure)
        live = self.live()
        quiet = cluster.wait_quiet(input_ends, QUIET_TIMEOUT_S)
        self.mark("quiet")
        self.notes.append(f"quiet: partitions per worker {quiet['ownership']}")
        at_ms = max(e["ts"] for _, e in events) + 1
        series = merged_series(live, at_ms, self.diffs)
        check_totals(series, events, self.diffs)
        check_windows(series, events, at_ms, self.diffs)
        self.counters = check_metrics(live, events, self.diffs)
        counted = sum(1 for kind, _ in events if kind in COUNTED)
        self.mark("figures checked")

        for member in self.members:
            overlaps = member.worker.count("overlaps what")
            if member.overlapped or overlaps:
                self.failures.append(
                    f"{member.describe()}: pulse_cells_overlapped_total={member.overlapped} at its last "
                    f"scrape ({member.scraped_at}s), {overlaps} overlap warnings in its log"
                )
            elif member.overlapped is None:
                self.notes.append(f"{member.describe()} was never scraped (its log has no overlap warning)")

        _, records = read_to_end(cluster.bootstrap, [cluster.alerts_topic], timeout=30)
        violations, by_fp = alert_violations(records)
        self.alerts = summarize_alerts(by_fp)
        self.failures.extend(violations)
        repeats = [r for r in repeated_transitions(by_fp) if not r.split(":")[-1].startswith("firing ")]
        if repeats:
            self.notes.append(f"non-firing transitions published more than once: {repeats}")
        if not any(a["rule"] == RULE and a["state"] == "firing" for alerts in by_fp.values() for a in alerts):
            self.failures.append(
                f"{RULE} never fired (the burst ran {self.traffic.burst} s into the traffic)"
            )
        self.mark("alerts checked")

        # Nothing arrived while the checks ran: the partials end offsets and the counts did not move.
        ends_after = end_offsets(cluster.bootstrap, [partials])
        if ends_after != quiet["partials"]:
            moved = {k: (v, ends_after[k]) for k, v in quiet["partials"].items() if ends_after[k] != v}
            self.failures.append(f"partials arrived after quiescence (end offsets before, after): {moved}")
        final = count_events(live)
        if final != counted:
            self.failures.append(f"{final} events counted after the checks, {counted} in the input topics")

    def stop_all(self) -> None:
        if self.publisher is not None:
            self.publisher.abort.set()
        running = [m for m in self.members if m.worker.alive()]
        for member in running:
            member.worker.terminate()
        wait_all(running, 25, lambda m: m.worker.kill())

    # -- the report ------------------------------------------------------------------------------

    def summary(self) -> str:
        publisher = self.publisher
        traffic = ""
        if publisher is not None and publisher.acked_at:
            took = publisher.sent_at - publisher.t0
            traffic = (
                f"{len(publisher.sent)} events in {publisher.messages} messages over {took:.1f}s "
                f"({len(publisher.sent) / took:.0f} events/s; "
                f"a tick was at most {publisher.behind_s:.2f}s late)"
            )
        schedule = "\n  ".join(d.describe() for d in self.plan)
        return (
            f"[chaos] seed={self.seed} (PULSE_CHAOS_SEED={self.seed} replays it) "
            f"took {time.monotonic() - self.began:.1f}s; phases (s): {self.phases}\n"
            f"traffic: {traffic or 'not finished'}\n"
            f"disruptions (planned second of traffic, kind, worker):\n  {schedule}\n"
            f"workers (log marks):\n  {log_digest(self.members)}\n"
            f"counters summed over the live workers: {self.counters}\n"
            f"alerts (transitions per fingerprint, in log order):\n  {self.alerts}\n"
            f"notes: {self.notes}"
        )

    def keep_logs(self) -> Path:
        """Copy every worker's log (killed ones' too) where it outlives the test's temporary files."""
        kept = self.artifacts / f"chaos-{self.seed}-{time.strftime('%Y%m%dT%H%M%S')}"
        kept.mkdir(parents=True, exist_ok=True)
        for member in self.members:
            (kept / f"{member.name}.log").write_text(member.worker.log_text())
        (kept / "summary.txt").write_text(self.summary())
        return kept

    def failure_report(self) -> str:
        tails = "\n".join(f"----- {m.describe()} log tail -----\n{m.worker.tail(60)}" for m in self.members)
        failures = "\n".join(f"- {f}" for f in self.failures)
        diffs = self.diffs.report() if self.diffs.items else "no differences from ground truth"
        kept = self.keep_logs()
        return f"{self.summary()}\nfailures:\n{failures}\n{diffs}\nworker logs kept in {kept}\n{tails}"


@pytest.fixture
def run(cluster: Cluster, artifacts: Path) -> Iterator[Run]:
    seed = int(os.environ.get("PULSE_CHAOS_SEED") or random.SystemRandom().randrange(1_000_000))
    cluster.partitions = PARTITIONS
    cluster.use_rules(RULES)
    cluster.extra_env["PULSE_RULES_INTERVAL"] = "1s"
    state = Run(cluster, seed, artifacts)
    try:
        yield state
    finally:
        state.stop_all()


def test_chaos_loses_nothing_counts_nothing_twice_and_fires_each_incident_once(
    run: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        run.start_workers()
        run.publisher = Publisher(run.cluster.bootstrap, run.cluster.prefix, run.traffic)
        run.publisher.start()
        if not run.publisher.began.wait(30) or run.publisher.error is not None:
            raise AssertionError(f"the publisher did not start: {run.publisher.error!r}")
        run.disrupt()
        run.finish_traffic()
        events, ends = run.ground_truth()
        run.check(events, ends)
    except AssertionError as exc:
        run.failures.append(str(exc))
    except Exception:
        run.failures.append(traceback.format_exc())
    with capsys.disabled():
        print("\n" + run.summary())
    if run.failures or run.diffs.items:
        raise AssertionError(run.failure_report())
