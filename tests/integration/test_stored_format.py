"""A real worker that meets a stored record of a format it cannot read stops and says which, and the fix."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from agents.kafka.positions import flush_key
from pipeline.config.settings import load_config
from pipeline.records import MIGRATION
from pipeline.tools.topics import ensure_topics
from tests.support.cluster import Cluster

pytestmark = pytest.mark.integration

FUTURE = 99
"""A format no pulse writes yet (this one writes 2 and reads 1 and 2)."""


def test_a_worker_stops_on_a_flush_record_of_a_future_format(cluster: Cluster) -> None:
    # One partition: the producer then has to put the record where the worker recovers it, in flushlog
    # changelog partition 0, the partition that holds the flush records of input partitions 0.
    cluster.partitions = 1
    config = load_config(cluster.env())
    changelog = config.internal_topic("flushlog-changelog")
    asyncio.run(ensure_topics(config, [changelog]))
    # As the worker writes it (ChangelogWriter, the table's JSON codecs): key "<topic>:<partition>".
    key = orjson.dumps(flush_key(cluster.topic("request"), 0))
    cluster.publish([(changelog, orjson.dumps({"a": 1, "b": 2, "V": FUTURE}))], key=key)

    started = time.monotonic()
    worker = cluster.add_worker(wait=False)
    code = worker.wait(30)  # fails with the log tail if the worker is still running
    log = worker.log_text()
    assert code != 0, f"the worker exited with 0 after {time.monotonic() - started:.1f}s:\n{worker.tail()}"
    assert f"a flush record of format {FUTURE}" in log, worker.tail()
    assert f"flushlog key {flush_key(cluster.topic('request'), 0)!r}" in log, worker.tail()
    assert MIGRATION in log, worker.tail()
    assert "a restart of this version stops again" in log and "restart replays it" not in log, worker.tail()
