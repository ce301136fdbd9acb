"""`pulse worker` creates its topics, honours the contract's settings and reports health."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from agents.app import Pulse, faust_settings
from pipeline.config.settings import load_config
from tests.support.cluster import Cluster
from tests.support.kafka import topic_partitions
from tests.support.procs import run_pulse
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration


def test_creates_every_topic_with_the_configured_partitions(cluster: Cluster) -> None:
    cluster.partitions = 3
    worker = cluster.add_worker()
    counts = asyncio.run(topic_partitions(cluster.bootstrap, cluster.prefix))
    expected = Pulse(load_config(cluster.env())).all_topic_names()
    assert set(expected) <= set(counts)
    assert {counts[name] for name in expected} == {3}
    # a group's first rebalance may hand out an empty assignment before the real one
    health = wait_until(
        lambda: httpx.get(f"{worker.url}/health", timeout=5).json(),
        30,
        "the worker to own partitions (/health)",
        until=lambda body: body["worker"]["partitions"],
        interval=0.2,
    )
    assert health["status"] == "healthy"
    assert sorted(health["worker"]["partitions"]) == [0, 1, 2]


def test_refuses_topics_with_another_partition_count(cluster: Cluster) -> None:
    async def precreate() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(cluster.topic("request"), 2, 1)])
        finally:
            await admin.close()

    asyncio.run(precreate())
    done = run_pulse("worker", env=cluster.env())
    assert done.returncode != 0
    message = done.stderr
    assert "has 2 partitions" in message and "PULSE_PARTITIONS" in message


def test_short_group_timeouts_only_for_the_embedded_broker() -> None:
    production = faust_settings(load_config({"PULSE_BROKER_URL": "kafka://kafka:9092"}))
    assert "broker_session_timeout" not in production
    assert "broker_rebalance_timeout" not in production
    embedded = faust_settings(load_config({"PULSE_EMBEDDED_BROKER": "1"}))
    assert embedded["broker_session_timeout"] <= 10
    configured = faust_settings(load_config({"PULSE_SESSION_TIMEOUT": "20s"}))
    assert configured["broker_session_timeout"] == 20.0
    assert "broker_rebalance_timeout" not in configured


def test_bad_config_names_the_variable_and_the_fix(cluster: Cluster) -> None:
    env = cluster.env()
    env["PULSE_WEB_PORT"] = "eighty"
    done = run_pulse("worker", env=env)
    assert done.returncode != 0
    assert "PULSE_WEB_PORT" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_worker_that_joined_with_nothing_to_own_takes_over_when_the_owner_leaves(cluster: Cluster) -> None:
    # More workers than partitions: the second worker's first assignment holds no partition (only
    # standby changelogs). It must still recover and read once the owner leaves. (An aiokafka consumer
    # left with an empty assignment used to end Faust's recovery task for good.)
    cluster.partitions = 1
    owner = cluster.add_worker()
    spare = cluster.add_worker(wait=False)
    wait_until(
        lambda: spare.detailed()["state"],
        60,
        "the spare to be ready, owning nothing",
        until=lambda s: s["ready"],
    )
    assert spare.detailed()["kafka"]["partitions"] == []
    cluster.publish_events([("request", _request("/before"))])
    owner.stop()
    cluster.workers.remove(owner)
    spare.wait_healthy(60)
    cluster.publish_events([("request", _request("/after"))])

    def routes() -> set[str]:
        return {s["labels"]["route"] for s in spare.series()["series"] if s["kind"] == "http"}

    found = wait_until(
        routes, 30, "both events (routes counted)", until=lambda seen: seen >= {"/before", "/after"}
    )
    assert found == {"/before", "/after"}


def _request(route: str) -> dict[str, object]:
    return {"service": "api", "method": "GET", "route": route, "status_code": 200, "duration_ms": 5.0}
