"""Rule ticks: evaluate the rules over the series of each owned partition, publish alert transitions.

Stage 2 calls `on_tick` for partition p on the clock, between batches, once p has read its partials to
the end after an assignment (before that its series would look incomplete); rules run every
`rules.interval`. The evaluation itself is
the pure `pipeline.rules.evaluate`; this module feeds it the series and alert states of p and makes the
outcome durable:

- every transition is written to the `alertlog` table, whose changelog *is* the public `alerts` topic
  (key: fingerprint, value: the alert JSON), partition p;
- the evaluation state of every instance (pending since, last true, flap history) is written to the
  `alertstate` table, partition p.

Both are sent in stage 2's next batch of cell writes. After a crash both tables are recovered and the
next evaluation starts from them; where they disagree (one record of the batch landed, the other not),
the published transition wins. So a firing change that reached the topic is never published again,
and one that did not is published by the next evaluation: one firing change per incident, also across
SIGKILL and rebalances.

A firing transition carries its context (`pipeline.alerting.context`): the top contributors behind its
number, read from the series of the whole cluster at the moment it fires. When this worker owns every
partition they are all here and the context is computed at once. Otherwise a task asks the cluster
view (`agents.cluster`) for the kinds the context needs, and the transition waits in a queue, never
more than `CONTEXT_BOUND_S`: the reader loop never waits on HTTP, it publishes what is ready at each
tick (the clock is checked at least every 100 ms). A worker that has not answered in time is left out
and the context says so (`partial`, `missing`). Transitions of one alert leave the queue in order, so a
resolve never overtakes its firing; a rebalance drops the queue (the alert state it left behind is
reconciled against the published transitions, as after a crash, and fires again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from agents.cluster import MISSING, ClusterSeries, series_entries
from agents.kafka.durable import ChangelogWriter
from pipeline.alerting.context import AlertContext, context_for, series_kinds
from pipeline.durations import format_duration
from pipeline.readout.figures import prometheus_families
from pipeline.rules import AlertState, FlapPolicy, Rule, RuleSet, Snapshot, State, evaluate, prunable
from pipeline.rules.engine import Transition
from pipeline.state.series import owner, series_key

if TYPE_CHECKING:
    from faust.types import TableT

    from agents.cluster import ClusterView
    from agents.kafka.positions import Lifecycle
    from agents.stages.aggregate import SeriesView
    from agents.telemetry import PipelineMetrics
    from pipeline.config.settings import Config

log = logging.getLogger(__name__)

KEEP = (State.PENDING, State.FIRING)

CONTEXT_BOUND_S: Final = 1.0
"""A firing transition waits at most this long for its context."""
GATHER_TIMEOUT_S: Final = 0.75
"""How long the cluster view waits for the other workers: the rest of the bound is for the next tick."""
TICK_SLACK_S: Final = 0.1
"""The clock is checked at least this often: a transition leaves by its deadline plus this."""


def _ms(text: str | None) -> int | None:
    if not text:
        return None
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def reconcile(aux: AlertState | None, published: Mapping[str, Any]) -> AlertState:
    """Return the evaluation state of an instance, trusting its last published transition."""
    state = State(published["state"])
    starts = _ms(published.get("starts_at"))
    ends = _ms(published.get("ends_at"))
    if aux is not None and aux.state == state and aux.starts_at_ms == starts:
        return aux
    at = _ms(published.get("timestamp"))
    labels = {k: v for k, v in published.get("labels", {}).items() if k not in ("alertname", "severity")}
    fired = list(aux.fired) if aux is not None else []
    if state == State.FIRING and starts is not None and starts not in fired:
        fired.append(starts)
    return AlertState(
        fingerprint=published["fingerprint"],
        rule=published["rule"],
        labels=labels,
        state=state,
        active_since_ms=(starts or at) if state in KEEP else None,
        starts_at_ms=starts,
        ends_at_ms=ends,
        last_true_ms=at if state in KEEP else None,
        value=published.get("currentValue"),
        fired=fired,
    )


def unpublished(aux: AlertState) -> AlertState:
    """The evaluation state of an instance that has no published transition at all.

    A firing state with nothing published means its firing transition never reached the alerts topic:
    it waited for its context when a rebalance dropped the queue, or the worker died between the two
    writes. It goes back to pending (same start of the condition, this firing taken out of the flap
    count), so that the next evaluation fires again and publishes it.
    """
    if aux.state != State.FIRING:
        return aux
    fired = [t for t in aux.fired if t != aux.starts_at_ms]
    return replace(aux, state=State.PENDING, starts_at_ms=None, cleared_since_ms=None, fired=fired)


@dataclass
class Outgoing:
    """A transition waiting to be published: for its context (`task`), or behind one of its alert's."""

    fingerprint: str
    alert: dict[str, Any]
    rule: Rule | None = None
    labels: Mapping[str, str] | None = None
    at_ms: int = 0
    deadline: float = 0.0
    """Monotonic time after which it leaves without the context it waits for."""
    task: asyncio.Future[ClusterSeries] | None = None
    default_window: str = "1h"

    def settle(self, now: float) -> bool:
        """Whether it may leave at monotonic time `now`: it waits for no context, its context is read
        (a failed read leaves it out), or its deadline has passed (the context then says it is partial)."""
        task, rule = self.task, self.rule
        if task is None or rule is None:
            return True
        labels, at, window = self.labels or {}, self.at_ms, self.default_window
        if task.done():
            try:
                found = task.result()
            except Exception as exc:  # whatever failed, the alert goes out without the series
                log.warning("alert context of %s: the cluster view failed: %r", rule.name, exc)
                context = context_for(rule, labels, [], at, window, [f"the cluster view failed ({exc!r})"])
            else:
                context = context_for(rule, labels, found.series, at, window, missing_parts(found))
        elif now >= self.deadline:
            task.cancel()
            missing = [f"the cluster view did not answer within {CONTEXT_BOUND_S:g} s"]
            context = context_for(rule, labels, [], at, window, missing)
        else:
            return False
        if context is not None and context.partial:
            log.warning("alert context of %s is partial: %s", rule.name, "; ".join(context.missing))
        attach(self.alert, context)
        return True


def take_ready(queue: list[Outgoing], now: float) -> tuple[list[Outgoing], list[Outgoing]]:
    """Split a queue into what may be published now and what waits, in order; a transition waits while
    an earlier one of its alert waits (a resolve never overtakes its firing)."""
    blocked: set[str] = set()
    ready: list[Outgoing] = []
    left: list[Outgoing] = []
    for item in queue:
        if item.fingerprint in blocked or not item.settle(now):
            blocked.add(item.fingerprint)
            left.append(item)
        else:
            ready.append(item)
    return ready, left


def attach(alert: dict[str, Any], context: AlertContext | None) -> None:
    """Put a context into an alert dict (the `context` field of the alert record)."""
    if context is not None:
        alert["context"] = context.to_dict()


def missing_parts(found: ClusterSeries) -> list[str]:
    """What the cluster view could not read, for the context's `missing`: workers with their partitions
    and reason, then partitions no answer covered."""
    out = []
    for worker in found.workers:
        if worker.get("status") == MISSING:
            partitions = ", ".join(str(p) for p in worker.get("partitions", ()))
            out.append(f"{worker.get('url')} (partitions {partitions or 'none'}: {worker.get('error')})")
    if found.missing_partitions:
        out.append("partitions " + ", ".join(str(p) for p in found.missing_partitions))
    return out


@dataclass(eq=False)
class Evaluator:
    """Runtime of the rule ticks on one worker."""

    config: Config
    view: SeriesView
    rules: RuleSet
    alertstate: TableT[str, Any]
    alertlog: TableT[bytes, Any]
    ownership: Lifecycle
    metrics: PipelineMetrics
    flap_policy: FlapPolicy
    cluster: ClusterView | None = None
    """Where the context reads the other workers' series (None: this worker's only)."""

    def __post_init__(self) -> None:
        cfg = self.config
        self.interval_ms = int(cfg.rules.interval * 1000)
        # the clock is checked between batches, at least every 100 ms: that much slack keeps the
        # evaluations from drifting a step late each time
        self.slack_ms = 100
        self.partitions = cfg.topics.partitions
        self.state_writer = ChangelogWriter(self.alertstate)
        self.log_writer = ChangelogWriter(self.alertlog)
        self.last_eval: dict[int, int] = {}
        self.index: dict[int, dict[str, AlertState]] = {}
        self.epoch = -1
        self.outgoing: dict[int, list[Outgoing]] = {}
        """Per partition, transitions waiting to be published, in order."""
        self.default_window = format_duration(max(cfg.windows.windows))

    def owns(self, rule: Rule, labels: Mapping[str, str], partition: int) -> bool:
        """Whether partition p evaluates an instance that has no sample (absent heartbeats)."""
        service = labels.get("service")
        if service is None:
            return True
        return owner(series_key("health", service), self.partitions) == partition

    def states(self, partition: int) -> dict[str, AlertState]:
        """The alert states of one partition, rebuilt from both tables after every rebalance."""
        self._sync_epoch()
        found = self.index.get(partition)
        if found is None:
            found = self.index[partition] = self._load(partition)
        return found

    def _sync_epoch(self) -> None:
        """After a rebalance: forget the alert states and the transitions waiting to be published."""
        if self.epoch == self.ownership.generation:
            return
        self.index, self.epoch = {}, self.ownership.generation
        for queue in self.outgoing.values():
            for item in queue:
                if item.task is not None:
                    item.task.cancel()
        self.outgoing = {}

    def _load(self, partition: int) -> dict[str, AlertState]:
        aux_store = self.alertstate.data
        aux_parts = getattr(aux_store, "_key_partition", {})
        aux: dict[str, AlertState] = {
            key: AlertState.from_dict(value)
            for key, value in list(aux_store.items())
            if value is not None and aux_parts.get(key) == partition
        }
        log_store = self.alertlog.data
        log_parts = getattr(log_store, "_key_partition", {})
        out: dict[str, AlertState] = {}
        for key, published in list(log_store.items()):
            if published is None or log_parts.get(key) != partition:
                continue
            fp = key.decode() if isinstance(key, bytes) else key
            out[fp] = reconcile(aux.get(fp), published)
        for fp, state in aux.items():
            out.setdefault(fp, unpublished(state))
        return out

    async def on_tick(self, partition: int, now_ms: int) -> list[Awaitable[Any]]:
        """Publish the transitions whose context is ready; evaluate the rules for partition p if its
        interval has passed; return the writes to await."""
        self._sync_epoch()
        sends: list[Awaitable[Any]] = []
        if self.outgoing.get(partition):
            await self._publish_ready(partition, sends)
        last = self.last_eval.get(partition)
        if last is not None and now_ms - last < self.interval_ms - self.slack_ms:
            return sends
        self.last_eval[partition] = now_ms
        started = time.perf_counter()
        keys = self.view.keys_of(partition)
        states = self.view.states()
        owned = {key: states[key] for key in keys if key in states}
        snapshot = Snapshot.from_families(prometheus_families(owned, now_ms, self.config))
        current = self.states(partition)
        transitions, changed = evaluate(
            self.rules,
            snapshot,
            current,
            now_ms,
            owns=lambda rule, labels: self.owns(rule, labels, partition),
            flapping=self.flap_policy,
        )
        metrics = self.metrics
        for transition in transitions:
            await self._publish(transition, partition, now_ms, sends)
            metrics.transitions.labels(transition.state.value, transition.severity).inc()
            log.log(
                logging.INFO if transition.state.value in ("firing", "resolved") else logging.DEBUG,
                "alert %s %s %s -> %s on partition %d",
                transition.rule,
                transition.labels,
                transition.previous.value,
                transition.state.value,
                partition,
            )
        policy = self.flap_policy
        for fp, state in changed.items():
            current[fp] = state
            if not prunable(state, now_ms, policy):
                sends.append(await self.state_writer.put(fp, state.to_dict(), partition))
        for fp in [fp for fp, state in current.items() if prunable(state, now_ms, policy)]:
            del current[fp]
            if fp in self.alertstate.data or fp in changed:
                sends.append(await self.state_writer.delete(fp, partition))
        metrics.rule_seconds.observe(time.perf_counter() - started)
        self._count()
        return sends

    # -- publishing, with context ---------------------------------------------------------------

    def _local_is_whole(self) -> bool:
        """Whether this worker reads every partition, so its series are the whole cluster's."""
        return len(self.ownership.active_partitions()) >= self.partitions

    async def _publish(
        self, transition: Transition, partition: int, now_ms: int, sends: list[Awaitable[Any]]
    ) -> None:
        """Publish a transition now, or queue it: for its context, or behind its alert's queued ones."""
        alert = transition.to_alert()
        fp = transition.fingerprint
        queue = self.outgoing.setdefault(partition, [])
        rule = self.rules.get(transition.rule) if transition.state == State.FIRING else None
        kinds = series_kinds(rule) if rule is not None else frozenset()
        if rule is not None and kinds:
            if self.cluster is not None and not self._local_is_whole():
                task = asyncio.ensure_future(self.cluster.series(now_ms, kinds, GATHER_TIMEOUT_S))
                deadline = time.monotonic() + CONTEXT_BOUND_S - TICK_SLACK_S
                labels = transition.labels
                queue.append(Outgoing(fp, alert, rule, labels, now_ms, deadline, task, self.default_window))
                return
            entries = series_entries(self.view.states(), now_ms, self.config, kinds)
            attach(alert, context_for(rule, transition.labels, entries, now_ms, self.default_window))
        if any(item.fingerprint == fp for item in queue):
            queue.append(Outgoing(fp, alert))
        else:
            sends.append(await self.log_writer.put(fp.encode(), alert, partition))

    async def _publish_ready(self, partition: int, sends: list[Awaitable[Any]]) -> None:
        """Publish the queued transitions that are ready, keeping each alert's order."""
        ready, self.outgoing[partition] = take_ready(self.outgoing.get(partition, []), time.monotonic())
        for item in ready:
            sends.append(await self.log_writer.put(item.fingerprint.encode(), item.alert, partition))

    def _count(self) -> None:
        counts: dict[tuple[str, str], int] = {}
        severity = {rule.name: rule.severity for rule in self.rules.rules}
        active = self.ownership.active_partitions()
        for partition, states in self.index.items():
            if partition not in active:
                continue
            for alert in states.values():
                if alert.state in KEEP:
                    key = (alert.state.value, severity.get(alert.rule, "unknown"))
                    counts[key] = counts.get(key, 0) + 1
        gauge = self.metrics.alerts
        for state in KEEP:
            for level in ("critical", "high", "medium", "low"):
                gauge.labels(state.value, level).set(counts.get((state.value, level), 0))
