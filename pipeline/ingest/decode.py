"""Decode one Kafka message value into events: a JSON object, or a JSON array of them (an envelope)."""

from __future__ import annotations

from typing import Any

import orjson

from schemas.events import Rejection


def decode(value: bytes | None, max_bytes: int) -> list[Any] | Rejection:
    """Return the message's events (not yet validated), or why the whole message is refused."""
    if value is None:
        return Rejection("invalid_json", "message has no value (tombstone)")
    size = len(value)
    if size > max_bytes:
        return Rejection(
            "too_large",
            f"message is {size} bytes; the limit (ingest.max_message_bytes) is {max_bytes}",
        )
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return Rejection("invalid_utf8", f"message is not valid UTF-8 (byte {uexc.start}: {uexc.reason})")
        return Rejection("invalid_json", f"message is not valid JSON: {exc}")
    if isinstance(data, dict):
        return [data]
    if isinstance(data, list):
        return data
    return Rejection(
        "not_object_or_array",
        f"message must be a JSON object or an array of objects, got {type(data).__name__}",
    )
