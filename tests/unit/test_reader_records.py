"""The reader's consumer gets aiokafka's fetched records as they are; every other consumer gets
`ConsumerRecord`s (`agents/kafka/reader.py`, `_records_as_fetched`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.structs import ConsumerRecord

from agents.kafka import reader


@dataclass
class FetchedRecord:
    """The fields aiokafka's decoded record has (the ones `ConsumerRecord` is built from)."""

    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int
    timestamp_type: int = 0
    checksum: int | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass
class Batch:
    """Stands for a `PartitionRecords`: only its two deserializers are read."""

    _value_deserializer: Any
    _key_deserializer: Any = None


TP = TopicPartition("pulse-events", 3)
RECORD = FetchedRecord(offset=41, key=b"k", value=b'{"type":"order"}', timestamp=1_700_000_000_000)


def test_the_override_is_installed() -> None:
    assert PartitionRecords._consumer_record is reader._records_as_fetched


def test_the_reader_consumer_gets_the_fetched_record_itself() -> None:
    got = reader._records_as_fetched(Batch(_value_deserializer=reader.keep_record), TP, RECORD)
    assert got is RECORD
    assert (got.offset, got.key, got.value, got.timestamp) == (
        41,
        b"k",
        b'{"type":"order"}',
        1_700_000_000_000,
    )


def test_every_other_consumer_gets_a_consumer_record() -> None:
    for deserializer in (None, bytes.upper):
        got = reader._records_as_fetched(Batch(_value_deserializer=deserializer), TP, RECORD)
        assert isinstance(got, ConsumerRecord)
        assert (got.topic, got.partition, got.offset, got.key) == ("pulse-events", 3, 41, b"k")
        expected = RECORD.value if deserializer is None else deserializer(RECORD.value)
        assert got.value == expected
        assert got.serialized_value_size == len(RECORD.value or b"")


def test_keep_record_returns_the_bytes_unchanged() -> None:
    assert reader.keep_record(b"\x00raw") == b"\x00raw"
    assert reader.keep_record(None) is None
