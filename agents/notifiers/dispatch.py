"""Notifications: route alerts into groups, decide what each channel is due, deliver it once.

Every worker reads the whole alerts topic (agents.history), so it knows the latest state of every
alert. A group (receiver + route + group labels) is owned by one partition, `crc32(group key) %
partitions`; the worker that owns that partition plans and delivers the group's notifications.

Delivery ledger: the `nflog` table (changelog partition = the group's partition), one entry per group
and channel, written when a channel has delivered (or given up on) a notification. Planning compares
the group's current alerts with the ledger (pipeline.alerting.group.plan), so after a restart or rebalance
the new owner recovers the ledger and sends exactly what was not yet delivered. The one duplicate
window: a worker killed after a channel accepted a message and before the ledger entry was written
sends that message again — at most one duplicate per channel and notification.

Each channel has its own queue and worker task, so an outage of one channel never delays another;
retries use exponential backoff with jitter and honour Retry-After (agents.notifiers.base.deliver).
A notification that cannot be delivered goes to `notifications.deadletter` with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agents.kafka.durable import ChangelogWriter
from agents.notifiers import notifiers
from agents.notifiers.base import Notification, Notifier, Outcome, RetryPolicy, deliver, redact
from pipeline.alerting.group import Entry, Group, Plan, build_groups
from pipeline.alerting.steps import Muted, any_of, inhibit, plan, silence
from pipeline.records import NotificationFailed, encode

if TYPE_CHECKING:
    from faust import App
    from faust.types import TableT

    from agents.history import AlertHistory
    from agents.kafka.positions import Lifecycle
    from agents.silences import SilenceBook
    from agents.telemetry import PipelineMetrics
    from pipeline.config.settings import Config

log = logging.getLogger(__name__)

STEP_S = 0.5


def ledger_key(group_key: str, channel: str) -> str:
    """Key of a group's channel in the delivery ledger."""
    return f"{group_key}|{channel}"


def owner_of(group_key: str, partitions: int) -> int:
    """The partition that owns a notification group."""
    return zlib.crc32(group_key.encode()) % partitions


@dataclass
class Job:
    """One notification waiting for (or in) delivery."""

    key: str
    partition: int
    plan: Plan
    notification: Notification
    queued_ms: int


@dataclass(eq=False)
class Notifications:
    """Runtime of the notifications on one worker."""

    app: App
    cfg: Config
    nflog: TableT[str, Any]
    ownership: Lifecycle
    alerts: AlertHistory
    silences: SilenceBook
    metrics: PipelineMetrics
    deadletter_topic: str

    def __post_init__(self) -> None:
        cfg = self.cfg
        self.channels = cfg.channels
        self.config = cfg.notify
        self.partitions = cfg.topics.partitions
        self.receivers = {r.name: r for r in cfg.notify.receivers}
        self.notifiers: dict[str, Notifier] = notifiers(cfg.channels)
        self.policy = RetryPolicy(
            initial_s=cfg.notify.retry_initial,
            max_s=cfg.notify.retry_max,
            max_attempts=cfg.notify.retry_attempts,
            budget_s=cfg.notify.retry_budget,
        )
        self.ledger = ChangelogWriter(self.nflog)
        self.queues: dict[str, asyncio.Queue[Job]] = {name: asyncio.Queue() for name in self.notifiers}
        self.inflight: dict[str, str] = {}  # ledger key -> plan digest queued or being delivered
        self.tasks: list[asyncio.Task[None]] = []
        self.last_result: dict[str, dict[str, Any]] = {}

    def start(self) -> None:
        """Start one delivery task per configured channel."""
        for channel in self.notifiers:
            self.tasks.append(asyncio.ensure_future(self._channel_loop(channel)))

    async def close(self) -> None:
        """Stop the delivery tasks and close the channels."""
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for notifier in self.notifiers.values():
            await notifier.close()

    def channel_results(self) -> dict[str, dict[str, Any] | None]:
        """The last delivery outcome of every configured channel (None: nothing sent yet)."""
        return {name: self.last_result.get(name) for name in self.notifiers}

    def queue_depths(self) -> dict[str, int]:
        """Notifications waiting per channel."""
        return {name: queue.qsize() for name, queue in self.queues.items()}

    def entry(self, key: str) -> Entry | None:
        """The ledger entry of a group's channel."""
        data = self.nflog.get(key)
        return Entry.from_dict(data) if data else None

    def step(self, now_ms: int) -> int:
        """Plan every owned group and queue what is due; return how many jobs were queued."""
        history = self.alerts
        if not self.notifiers or not self.ownership.is_ready() or not history.caught_up():
            return 0
        owned = self.ownership.active_partitions()
        alerts = list(history.latest.values())
        firing = [dict(a.get("labels", {})) for a in alerts if a.get("state") == "firing"]
        muted = any_of(
            silence(self.silences.active(now_ms), now_ms),
            inhibit(self.config.inhibit_rules, firing),
        )
        queued = 0
        for group in build_groups(self.config, alerts).values():
            partition = owner_of(group.key, self.partitions)
            if partition not in owned:
                continue
            queued += self._plan_group(group, partition, now_ms, muted)
        for channel, queue in self.queues.items():
            self.metrics.notify_queue.labels(channel).set(queue.qsize())
        return queued

    def _plan_group(self, group: Group, partition: int, now_ms: int, muted: Muted) -> int:
        receiver = self.receivers[group.match.receiver]
        queued = 0
        for channel in receiver.channels:
            if channel not in self.notifiers:
                continue
            key = ledger_key(group.key, channel)
            if key in self.inflight:
                continue
            entry = self.entry(key)
            due = plan(self.config, group, entry, now_ms, muted, receiver.send_resolved)
            if due is None:
                continue
            notification = Notification(
                receiver=receiver.name,
                group_key=group.key,
                status=due.status,
                alerts=due.alerts,
                group_labels=group.labels,
                key=f"{key}|{due.digest}",
                external_url=self.channels.external_url,
                previous=entry.meta if entry is not None else None,
            )
            self.inflight[key] = due.digest
            self.queues[channel].put_nowait(Job(key, partition, due, notification, now_ms))
            queued += 1
        return queued

    async def _channel_loop(self, channel: str) -> None:
        queue = self.queues[channel]
        notifier = self.notifiers[channel]
        while True:
            job = await queue.get()
            try:
                await self._deliver(channel, notifier, job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug in one channel must not stop its queue
                log.error("%s: delivery of %s failed unexpectedly: %r", channel, job.key, exc)
                self.inflight.pop(job.key, None)

    async def _deliver(self, channel: str, notifier: Notifier, job: Job) -> None:
        metrics = self.metrics
        if job.partition not in self.ownership.active_partitions():
            self.inflight.pop(job.key, None)  # the group moved to another worker, which plans it
            return
        started = time.monotonic()
        outcome, attempts = await deliver(notifier, job.notification, self.policy)
        metrics.notify_seconds.labels(channel).observe(time.monotonic() - started)
        metrics.notifications.labels(channel, outcome.kind).inc()
        now_ms = int(time.time() * 1000)
        self.last_result[channel] = {"outcome": outcome.kind, "at": now_ms, "reason": outcome.reason}
        if outcome.kind != "delivered":
            await self._dead_letter(channel, job, outcome, attempts, now_ms)
        meta = dict(outcome.meta) if outcome.kind == "delivered" else {}
        previous = self.entry(job.key)
        if not meta and previous is not None and job.plan.status == "resolved":
            meta = dict(previous.meta)
        entry = Entry(job.plan.status, job.plan.incidents, now_ms, meta)
        try:
            sent = await self.ledger.put(job.key, entry.to_dict(), job.partition)
            await sent
        finally:
            self.inflight.pop(job.key, None)
        # A notification that finally failed is an error: the on-call engineer did not get it.
        log.log(
            logging.INFO if outcome.kind == "delivered" else logging.ERROR,
            "%s: %s notification of group %s (%s, %d alerts): %s after %d attempt(s)%s",
            channel,
            job.plan.status,
            job.notification.group_key,
            job.plan.reason,
            len(job.plan.alerts),
            outcome.kind,
            attempts,
            "" if outcome.kind == "delivered" else f": {redact(outcome.reason, self.channels)}",
        )

    async def _dead_letter(
        self, channel: str, job: Job, outcome: Outcome, attempts: int, now_ms: int
    ) -> None:
        record = NotificationFailed(
            kind="notification_failed",
            channel=channel,
            receiver=job.notification.receiver,
            group_key=job.notification.group_key,
            status=job.plan.status,
            alerts=[a.get("id") for a in job.plan.alerts],
            rules=sorted({str(a.get("rule")) for a in job.plan.alerts}),
            reason=redact(outcome.reason, self.channels),
            attempts=attempts,
            timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_ms / 1000)),
        )
        try:
            topic = self.deadletter_topic
            sent = await self.app.producer.send(topic, job.key.encode(), encode(record), None, None, None)
            await sent
        except Exception as exc:  # the ledger entry still stops endless retries; the log keeps the fact
            log.error("%s: could not dead-letter a failed notification: %r", channel, exc)


def register(app: App, runtime: Notifications) -> Notifications:
    """Run the notification loop with the worker."""

    @app.task
    async def start_notifications() -> None:
        runtime.start()

    @app.timer(STEP_S, name="notifications")
    async def notifications() -> None:
        runtime.step(int(time.time() * 1000))

    async def close(app: Any, *args: Any, **kwargs: Any) -> None:
        await runtime.close()

    from agents.kafka.transport import connect

    connect(app.on_before_shutdown, close)
    return runtime
