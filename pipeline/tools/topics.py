"""Create the pipeline's topics before a worker starts (idempotent)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from agents.kafka.transport import client_security
from pipeline.config.settings import Config, shown_url
from pipeline.errors import BrokerError

log = logging.getLogger(__name__)

FIRST_RETRY_S = 0.5
"""Pause after the first failed attempt to reach the broker; it doubles after each, up to `MAX_RETRY_S`."""
MAX_RETRY_S = 5.0


async def ensure_topics(config: Config, names: list[str], within: float | None = 30.0) -> None:
    """Create missing topics with the configured partition count; check existing ones match.

    An unreachable broker is retried with backoff, with one warning per failed attempt, for `within`
    seconds (None: until it answers; `pulse worker` waits for its broker that way).
    """
    servers = config.broker.bootstrap_servers()
    admin = AIOKafkaAdminClient(
        bootstrap_servers=servers, request_timeout_ms=10_000, **client_security(config.broker)
    )
    clock = asyncio.get_running_loop().time
    deadline = None if within is None else clock() + within
    pause = FIRST_RETRY_S
    attempt = 0
    while True:
        attempt += 1
        try:
            await admin.start()
            break
        except KafkaError as exc:
            broker = shown_url(config.broker.url)
            if deadline is not None and clock() + pause > deadline:
                raise BrokerError(
                    f"cannot reach the Kafka broker at {broker} ({exc}); "
                    "check PULSE_BROKER_URL, or start one with `pulse broker`"
                ) from exc
            log.warning(
                "cannot reach the Kafka broker at %s (attempt %d: %s); retrying in %.1fs",
                broker,
                attempt,
                exc,
                pause,
            )
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_RETRY_S)
    if attempt > 1:
        log.info("reached the Kafka broker at %s after %d attempts", shown_url(config.broker.url), attempt)
    try:
        existing = set(await admin.list_topics())
        wanted = config.topics.partitions
        missing = [
            NewTopic(name, wanted, config.topics.replication) for name in names if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
            log.info("created topics %s", ", ".join(t.name for t in missing))
        present = [name for name in names if name in existing]
        if present:
            described = await admin.describe_topics(present)
            for topic in described:
                count = len(topic.get("partitions", []))
                if count and count != wanted:
                    raise BrokerError(
                        f"topic {topic['topic']} has {count} partitions but topics.partitions "
                        f"(PULSE_PARTITIONS) is {wanted}; every pulse topic must have the same "
                        "count: set PULSE_PARTITIONS to match, or use a new PULSE_TOPIC_PREFIX"
                    )
    finally:
        await admin.close()
