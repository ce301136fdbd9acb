"""Faust's Kafka transport with three fixes for the embedded Tansu broker, and broker security.

Faust's consumer reads only the table changelogs (recovery and standbys); the hot path has its own
reader (`agents.kafka.reader`). The first two Tansu fixes apply to that changelog reading, and so does
one fix of a Faust recovery crash (`_Consumer.seek_wait`); the third is about the consumer's group
membership:

- Fetch wait: Faust asks the broker to hold an empty fetch for 1.5 s. Apache Kafka answers as soon
  as data arrives; Tansu holds the fetch for the full wait, which would add up to 1.5 s to every hop
  between stages. `broker.fetch_max_wait` (short by default on the embedded broker) sets it.
- High-water marks: Tansu (0.6) answers ListOffsets(latest) with the base offset of the last record
  batch + 1, not the end of the log, while its fetch responses carry the right high-water mark.
  Faust's table recovery reads changelogs up to ListOffsets' answer, so it would stop before the last
  batch and lose state. With `broker.verify_highwaters` (on for the embedded broker) every answer is
  checked by fetching from it and taking the fetch response's high-water mark.
- Group leader's leave: Tansu (0.6) keeps a group's leader when that member leaves while the group is
  re-forming, so every later join names the departed leader and no SyncGroup ever completes: the
  whole group stays unassigned for good (the chaos test saw it: three workers unready for 90 s). On
  the embedded broker the leader therefore does not send LeaveGroup when it stops
  (`keep_leader_membership`); it leaves when its session expires, which Tansu handles.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import faust
from aiokafka.helpers import create_ssl_context
from faust.tables import TableManager
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from pipeline.config.settings import BrokerConfig, Config, secret_text

log = logging.getLogger(__name__)


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Tansu fixes: the configured fetch wait (Faust has no setting for it; `_fetch_max_wait_ms` is
    private), and a leader that does not leave the group on the embedded broker."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait = getattr(self.app, "fetch_max_wait_ms", None)
        if wait is not None:
            consumer._fetch_max_wait_ms = wait
        if getattr(self.app, "leader_stays", False):
            keep_leader_membership(consumer)
        return consumer


def keep_leader_membership(consumer: Any) -> None:
    """Make an aiokafka consumer skip LeaveGroup while it leads the group's current generation.

    Tansu 0.6 wedges a group whose leader leaves while it re-forms (see the module's docstring); a
    leader that simply stops is dropped when its session expires, and then Tansu elects another. The
    cost: the leader's partitions move a session timeout later (6 s on the embedded broker). The
    hooks are aiokafka's private `_coordinator`, `_perform_assignment` (called on the leader only) and
    `_maybe_leave_group` (aiokafka 0.14), set when the consumer starts, since it builds its
    coordinator then.
    """
    start = consumer.start

    async def started() -> None:
        await start()
        coordinator = consumer._coordinator
        if coordinator is None:  # no group (manual assignment): nothing to leave
            return
        led: list[int] = []
        assign, leave = coordinator._perform_assignment, coordinator._maybe_leave_group

        async def perform_assignment(response: Any) -> Any:
            led[:] = [coordinator.generation]
            return await assign(response)

        async def maybe_leave_group() -> None:
            if led == [coordinator.generation] and coordinator.generation > 0:
                log.info(
                    "not leaving the group as its leader (generation %d): the embedded broker would "
                    "wedge it; the session expires instead",
                    coordinator.generation,
                )
                coordinator.reset_generation()
                return
            await leave()

        coordinator._perform_assignment = perform_assignment
        coordinator._maybe_leave_group = maybe_leave_group

    consumer.start = started


class _Consumer(faust_aiokafka.Consumer):
    """Tansu fix: end offsets checked with a fetch before table recovery trusts them."""

    def _new_consumer_thread(self) -> Any:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def seek_wait(self, partitions: Mapping[TP, int | None]) -> None:
        """Faust fix: a changelog offset Faust never looked up is read from the beginning.

        When a rebalance lands while Faust's table recovery waits for its changelogs, the recovery
        loop of the old assignment carries on with the new assignment's standby partitions, whose
        offsets it has not built yet (None), and aiokafka's seek raises, which crashes the worker.
        Reading such a changelog partition from its beginning is what Faust does for -1; the
        recovery of the new assignment, which starts right after, seeks it properly.
        """
        await super().seek_wait({tp: 0 if offset is None else offset for tp, offset in partitions.items()})

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        """Return the end offset of each partition (verified by a fetch on the embedded broker)."""
        answered = await super().highwaters(*partitions)
        if not getattr(self.app, "verify_highwaters", False):
            return answered
        return await true_highwaters(self.app.conf.broker, answered, getattr(self.app, "client_security", {}))


VERIFY_TIMEOUT_S = 30.0
"""How long the embedded broker's end offsets may take to verify before the worker gives up."""


async def true_highwaters(
    broker: Any, answered: Mapping[TP, int], security: Mapping[str, Any] | None = None
) -> dict[TP, int]:
    """Fetch from each answered end offset and return the high-water marks the fetches carry."""
    if not answered:
        # Nothing to check (no active changelog partition). A consumer whose assignment is empty
        # raises CancelledError from stop() (aiokafka 0.14), which would end Faust's recovery task
        # for good: the worker would never recover a later assignment.
        return {}
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    servers = [f"{url.host}:{url.port or 9092}" for url in broker]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        **dict(security or {}),
    )
    await consumer.start()
    try:
        out: dict[TP, int] = {}
        wanted = {TopicPartition(tp.topic, tp.partition): tp for tp in answered}
        consumer.assign(list(wanted))
        for part, tp in wanted.items():
            consumer.seek(part, max((answered[tp] or 0) - 1, 0))
        pending = set(wanted)
        deadline = time.monotonic() + VERIFY_TIMEOUT_S
        while pending:
            if time.monotonic() > deadline:
                # Recovering short of the end would lose state (Tansu under-reports by up to a
                # whole record batch): stop the worker instead; its restart tries again.
                raise RuntimeError(
                    f"could not verify the end offsets of {sorted(str(p) for p in pending)} within "
                    f"{VERIFY_TIMEOUT_S:.0f}s (broker.verify_highwaters)"
                )
            await consumer.getmany(*pending, timeout_ms=200)
            for part in list(pending):
                mark = consumer.highwater(part)
                if mark is not None:
                    out[wanted[part]] = max(mark, answered[wanted[part]] or 0)
                    pending.discard(part)
        return out
    finally:
        await consumer.stop()


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class PromptTableManager(TableManager):
    """Faust's table manager without the fixed second it waits before it registers the changelogs.

    Faust's `TableManager.on_start` sleeps 1 s so that tables defined while the app starts are
    registered too; every pulse table is defined before the worker starts, so the wait only delays
    the group join, and with it every worker start and every rebalance-driven test. The rest is
    Faust's own start (`_update_channels`, private: it registers each changelog and unblocks the
    consumer; then the recovery service).
    """

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class PulseFaustApp(faust.App):
    """faust.App whose consumer uses the configured fetch wait, high-water check and (on the embedded
    broker) a leader that stays, and whose table manager starts without Faust's fixed wait
    (`PromptTableManager`)."""

    fetch_max_wait_ms: int | None = None
    verify_highwaters: bool = False
    leader_stays: bool = False

    def __init__(self, *args: Any, **options: Any) -> None:
        options.setdefault("TableManager", PromptTableManager)
        super().__init__(*args, **options)

    def configure_fetch(self, config: Config) -> None:
        """Take the fetch wait (None keeps Faust's 1.5 s) and the high-water check from the config."""
        wait = config.broker.timings().get("fetch_max_wait")
        self.fetch_max_wait_ms = int(wait * 1000) if wait is not None else None
        verify = config.broker.verify_highwaters
        self.verify_highwaters = config.broker.embedded if verify is None else verify
        self.leader_stays = config.broker.embedded
        self.client_security = client_security(config.broker)

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


def ssl_context(config: BrokerConfig) -> ssl.SSLContext | None:
    """The TLS context of the broker connection (None for PLAINTEXT and SASL_PLAINTEXT)."""
    if not config.security_protocol.endswith("SSL"):
        return None
    context: ssl.SSLContext = create_ssl_context(
        cafile=config.ssl_cafile, certfile=config.ssl_certfile, keyfile=config.ssl_keyfile
    )
    return context


def faust_credentials(config: BrokerConfig) -> Any:
    """Faust's `broker_credentials` for the configured security (None: plaintext)."""
    context = ssl_context(config)
    if config.security_protocol.startswith("SASL"):
        credentials = faust.SASLCredentials(
            username=config.sasl_username,
            password=secret_text(config.sasl_password),
            ssl_context=context,
            mechanism=config.sasl_mechanism,
        )
        return credentials
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def client_security(config: BrokerConfig) -> dict[str, Any]:
    """Keyword arguments that give a raw aiokafka client the configured security."""
    out: dict[str, Any] = {"security_protocol": config.security_protocol}
    context = ssl_context(config)
    if context is not None:
        out["ssl_context"] = context
    if config.security_protocol.startswith("SASL"):
        out["sasl_mechanism"] = config.sasl_mechanism
        out["sasl_plain_username"] = config.sasl_username
        out["sasl_plain_password"] = secret_text(config.sasl_password)
    return out


def connect(signal: Any, receiver: Callable[..., Awaitable[None]]) -> None:
    """Connect an async receiver `(sender, *args, **kwargs)` to a Faust signal."""
    signal.connect(cast(Any, receiver))
