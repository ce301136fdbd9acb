"""The group leader that stops while the group re-forms does not wedge the embedded broker's group.

Tansu 0.6 keeps a group's leader when that member sends LeaveGroup while the group re-forms: every
later join names the departed leader, no SyncGroup completes, and the group stays unassigned for good
(the chaos test saw three workers unready for 90 s). On the embedded broker the worker's consumer
therefore skips LeaveGroup while it leads (`keep_leader_membership`); its session expires instead.
Without that hook this test never sees the partitions assigned again (checked by hand: the survivors
join the same generation every 8 s, for as long as one waits).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from agents.kafka.transport import keep_leader_membership
from tests.support.cluster import unique
from tests.support.waits import wait_until_async

pytestmark = pytest.mark.integration

PARTITIONS = 4
SESSION_MS = 6000


def _consumer(bootstrap: str, topic: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        session_timeout_ms=SESSION_MS,
        heartbeat_interval_ms=1000,
        rebalance_timeout_ms=SESSION_MS,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
    )


async def _poll_until(consumers: list[AIOKafkaConsumer], done: Any, within: float, what: str) -> None:
    """Wait until `done()` holds; fail saying what each consumer held.

    Group membership runs in aiokafka's background tasks, so nothing is fetched here (`getmany` of an
    unassigned consumer waits for an assignment).
    """

    def held() -> str:
        seen = [
            (sorted(tp.partition for tp in c.assignment()), getattr(c._coordinator, "generation", None))
            for c in consumers
        ]
        return f"(partitions, generation) per consumer: {seen}"

    await wait_until_async(done, within, what, context=held)


async def _scenario(bootstrap: str) -> float:
    topic, group = unique("leader"), unique("leader-group")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()
    leader = _consumer(bootstrap, topic, group)
    keep_leader_membership(leader)
    await leader.start()
    await _poll_until([leader], lambda: leader.assignment(), 30, "the first member's assignment")
    follower = _consumer(bootstrap, topic, group)
    await follower.start()
    both = [leader, follower]
    # aiokafka sends LeaveGroup only from generation 1 on: the second member's join makes it
    await _poll_until(
        both,
        lambda: leader.assignment() and follower.assignment() and leader._coordinator.generation > 0,
        30,
        "both members assigned in a generation after the first",
    )
    # The leader stops noticing rebalances, a third member joins, and the leader stops while the group
    # re-forms (the follower's heartbeat has been told so: it rejoins; aiokafka 0.14's private future).
    await leader._coordinator._stop_heartbeat_task()
    joiner = _consumer(bootstrap, topic, group)
    joining = asyncio.create_task(joiner.start())  # start() returns once it has joined
    await _poll_until(
        [follower],
        lambda: follower._coordinator._rejoin_needed_fut.done(),
        5,
        "the group to re-form (the follower told to rejoin)",
    )
    generation = leader._coordinator.generation
    stopped = time.monotonic()
    await leader.stop()
    survivors = [follower, joiner]

    def assigned() -> bool:
        if not joining.done():
            return False
        coordinators = [c._coordinator for c in survivors]
        if any(c._rejoin_needed_fut.done() or c.generation <= generation for c in coordinators):
            return False
        owned = [tp.partition for c in survivors for tp in c.assignment()]
        return sorted(owned) == list(range(PARTITIONS))

    try:
        await _poll_until(
            survivors,
            assigned,
            SESSION_MS / 1000 + 25,
            f"the two survivors to own all {PARTITIONS} partitions in a generation after {generation}",
        )
        return time.monotonic() - stopped
    finally:
        await asyncio.gather(*(c.stop() for c in survivors))


def test_a_leader_stopping_while_the_group_reforms_leaves_it_assignable(broker: Any) -> None:
    took = asyncio.run(_scenario(broker.bootstrap))
    # the leader's partitions move once its session expires, not at once (the cost of the fix)
    assert took >= SESSION_MS / 1000 - 1, f"the survivors were assigned {took:.1f}s after the stop"
