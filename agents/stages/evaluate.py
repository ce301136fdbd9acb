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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agents.kafka.durable import ChangelogWriter
from pipeline.readout.figures import prometheus_families
from pipeline.rules import AlertState, FlapPolicy, Rule, RuleSet, Snapshot, State, evaluate, prunable
from pipeline.state.series import owner, series_key

if TYPE_CHECKING:
    from faust.types import TableT

    from agents.kafka.positions import Lifecycle
    from agents.stages.aggregate import SeriesView
    from agents.telemetry import PipelineMetrics
    from pipeline.config.settings import Config

log = logging.getLogger(__name__)

KEEP = (State.PENDING, State.FIRING)


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


class Evaluator:
    """Runtime of the rule ticks on one worker."""

    def __init__(
        self,
        cfg: Config,
        view: SeriesView,
        rules: RuleSet,
        alertstate: TableT[str, Any],
        alertlog: TableT[bytes, Any],
        ownership: Lifecycle,
        metrics: PipelineMetrics,
        flap_policy: FlapPolicy,
    ) -> None:
        self.config = cfg
        self.view = view
        self.rules = rules
        self.alertstate = alertstate
        self.alertlog = alertlog
        self.ownership = ownership
        self.metrics = metrics
        self.flap_policy = flap_policy
        self.interval_ms = int(cfg.rules.interval * 1000)
        # the clock is checked between batches, at least every 100 ms: that much slack keeps the
        # evaluations from drifting a step late each time
        self.slack_ms = 100
        self.partitions = cfg.topics.partitions
        self.state_writer = ChangelogWriter(alertstate)
        self.log_writer = ChangelogWriter(alertlog)
        self.last_eval: dict[int, int] = {}
        self.index: dict[int, dict[str, AlertState]] = {}
        self.epoch = -1

    def owns(self, rule: Rule, labels: Mapping[str, str], partition: int) -> bool:
        """Whether partition p evaluates an instance that has no sample (absent heartbeats)."""
        service = labels.get("service")
        if service is None:
            return True
        return owner(series_key("health", service), self.partitions) == partition

    def states(self, partition: int) -> dict[str, AlertState]:
        """The alert states of one partition, rebuilt from both tables after every rebalance."""
        if self.epoch != self.ownership.generation:
            self.index, self.epoch = {}, self.ownership.generation
        found = self.index.get(partition)
        if found is None:
            found = self.index[partition] = self._load(partition)
        return found

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
            out.setdefault(fp, state)
        return out

    async def on_tick(self, partition: int, now_ms: int) -> list[Awaitable[Any]]:
        """Evaluate the rules for partition p if its interval has passed; return the writes to await."""
        last = self.last_eval.get(partition)
        if last is not None and now_ms - last < self.interval_ms - self.slack_ms:
            return []
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
        sends: list[Awaitable[Any]] = []
        metrics = self.metrics
        for transition in transitions:
            alert = transition.to_alert()
            sends.append(await self.log_writer.put(transition.fingerprint.encode(), alert, partition))
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
