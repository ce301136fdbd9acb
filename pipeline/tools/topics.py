"""Create the pipeline's topics before a worker starts (idempotent)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from agents.kafka.transport import client_security
from pipeline.config.settings import Config, shown_url
from pipeline.errors import BrokerError

log = logging.getLogger(__name__)


async def ensure_topics(config: Config, names: list[str], within: float = 30.0) -> None:
    """Create missing topics with the configured partition count; check existing ones match."""
    servers = config.broker.bootstrap_servers()
    admin = AIOKafkaAdminClient(
        bootstrap_servers=servers, request_timeout_ms=10_000, **client_security(config.broker)
    )
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            await admin.start()
            break
        except KafkaConnectionError as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise BrokerError(
                    f"cannot reach the Kafka broker at {shown_url(config.broker.url)} ({exc}); "
                    "check PULSE_BROKER_URL, or start one with `pulse broker`"
                ) from exc
            await asyncio.sleep(0.5)
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
