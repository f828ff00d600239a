"""Dead-letter records (``schemas/avro/dead_letter.avsc``): the original bytes plus everything needed to replay.

Limits keep a dead-letter record itself deliverable: the error message and the model's answer are truncated,
and an original value larger than ``max_value_bytes`` (the case of an oversized input) is cut to that size;
the error message then says so and gives the original size.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MESSAGE_LIMIT = 4096
RESPONSE_LIMIT = 4096
STAGES = frozenset({"decode", "enrich", "infer", "encode", "produce"})


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """Where an input record came from and its original bytes (what a dead-letter record preserves)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    headers: Sequence[tuple[str, bytes | None]] = ()


def schema_id_of(value: bytes | None) -> int | None:
    """The Confluent wire-format schema id, when the 5-byte header is there."""
    if value is None or len(value) < 5 or value[0] != 0:
        return None
    return int.from_bytes(value[1:5], "big")


def dead_letter(
    *,
    service: str,
    stage: str,
    error_class: str,
    message: str,
    attempts: int,
    source: SourceRecord,
    event_id: str | None = None,
    model_name: str | None = None,
    model_version: str | None = None,
    model_response: bytes | None = None,
    step: str | None = None,
    max_value_bytes: int = 900_000,
) -> dict[str, Any]:
    """One dead-letter record as a dict for the ``DeadLetter`` Avro schema."""
    value = source.value
    if value is not None and len(value) > max_value_bytes:
        message = f"[original value of {len(value)} bytes truncated to {max_value_bytes}] {message}"
        value = value[:max_value_bytes]
    return {
        "service": service,
        "stage": stage if stage in STAGES else "unknown",
        "error_class": error_class,
        "error_message": message[:MESSAGE_LIMIT],
        "attempts": max(1, int(attempts)),
        "failure_time": time.time_ns() // 1_000_000,
        "topic": source.topic,
        "partition": int(source.partition),
        "offset": int(source.offset),
        "record_time": source.timestamp_ms,
        "key": source.key,
        "value": value,
        "headers": [{"key": k, "value": v} for k, v in source.headers],
        "schema_id": schema_id_of(source.value),
        "event_id": event_id,
        "model_name": model_name,
        "step": step,
        "model_version": model_version,
        "model_response": model_response[:RESPONSE_LIMIT] if model_response else None,
    }
