"""Seeded input events of a reliability case: mostly good transactions plus every kind of bad input.

Each :class:`InputRecord` knows its bytes, its Kafka key, its event id (None when the bytes cannot be decoded)
and what the platform must do with it: ``P`` (a prediction) or ``D`` (a dead letter at ``stage`` with an
``error_class`` among ``classes``). Ids are unique except for the ``duplicate`` kind (an upstream resend of an
earlier record's exact bytes, which must be answered again: the job does not deduplicate input).

Schemas come from the schema source given (the private stack's registry): the good records' writer schema is
registered under the input topic's subject, an ``old_writer`` record's (the transaction without its two
newest optional fields, a compatible older version) too, and the rogue schema under a subject of its own.
"""

from __future__ import annotations

import random
import struct
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from vatic.schemas import AvroCodec, SchemaSource, load_schema, topic_subject

REJECT = "vatic:reject"
CRASH = "vatic:crash"
BIG = "vatic:big"

#: per 1000 events, the bad kinds every case carries (about 5% in all)
BASE_MIX: dict[str, int] = {
    "garbage": 6,
    "truncated": 6,
    "unknown_schema_id": 5,
    "incompatible_schema": 5,
    "unknown_entity": 10,
    "model_rejected": 10,
    "duplicate": 8,
}
#: per 10,000 events: oversized inputs are 1.5 MB each, so few of them
BASE_OVERSIZED = 2

#: what each kind must become: (route, stage, accepted error classes)
EXPECTED: dict[str, tuple[str, str | None, frozenset[str]]] = {
    "good": ("P", None, frozenset()),
    "duplicate": ("P", None, frozenset()),
    "garbage": ("D", "decode", frozenset({"MalformedRecord", "DecodeError", "UnknownSchemaError"})),
    "truncated": ("D", "decode", frozenset({"DecodeError", "MalformedRecord"})),
    "unknown_schema_id": ("D", "decode", frozenset({"UnknownSchemaError", "UnknownSchema"})),
    "incompatible_schema": ("D", "decode", frozenset({"UnknownSchemaError", "UnknownSchema"})),
    "unknown_entity": ("D", "enrich", frozenset({"MissingFeatures"})),
    "model_rejected": ("D", "infer", frozenset({"ModelRejected"})),
    "poison": ("D", "infer", frozenset({"ModelFailedOnInput"})),
    "old_writer": ("P", None, frozenset()),
    "oversized_input": ("D", "decode", frozenset({"RecordTooLarge"})),
    "oversized_output": ("D", "encode", frozenset({"RecordTooLarge"})),
}

#: an Avro schema the job's reader cannot resolve (event_id is an int, required fields are gone)
ROGUE_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Transaction",
    "namespace": "dev.vatic",
    "fields": [{"name": "event_id", "type": "long"}, {"name": "note", "type": "string"}],
}


@dataclass
class InputRecord:
    index: int
    kind: str
    value: bytes
    key: bytes
    event_id: str | None
    partition: int = -1
    offset: int = -1

    @property
    def route(self) -> str:
        return EXPECTED[self.kind][0]

    @property
    def stage(self) -> str | None:
        return EXPECTED[self.kind][1]


@dataclass
class EventSet:
    records: list[InputRecord] = field(default_factory=list)

    def kinds(self) -> Counter[str]:
        return Counter(r.kind for r in self.records)

    def __len__(self) -> int:
        return len(self.records)


def transaction(rng: random.Random, event_id: str, customers: int = 50) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_time": time.time_ns() // 1_000_000,
        "customer_id": f"c{rng.randrange(customers)}",
        "merchant_id": f"m{rng.randrange(100)}",
        "amount": round(rng.uniform(1, 500), 2),
        "currency": "EUR",
        "channel": rng.choice(["ONLINE", "POS", "ATM", "MOBILE_APP", "PHONE"]),
        "card_present": rng.random() < 0.5,
        "merchant_category": rng.choice(["5411", "5812", "5999", "4111"]),
        "country": "DE",
    }


def older_transaction_schema() -> dict[str, Any]:
    """The transaction schema as an older producer has it: without ``device_hash`` and ``ip_hash``."""
    schema = load_schema("transaction")
    return {**schema, "fields": [f for f in schema["fields"] if f["name"] not in ("device_hash", "ip_hash")]}


def generate(
    source: SchemaSource,
    input_topic: str,
    n: int = 10_000,
    *,
    seed: int = 7,
    extra: dict[str, int] | None = None,
    late: dict[str, int] | None = None,
) -> EventSet:
    """``n`` records (good ones fill what ``BASE_MIX``, ``BASE_OVERSIZED``, ``extra`` and ``late`` leave);
    the ``late`` kinds only in the second half of the stream."""
    rng = random.Random(seed)
    subject = topic_subject(input_topic)
    codecs = {
        "current": AvroCodec(source, subject, load_schema("transaction")),
        "rogue": AvroCodec(source, f"{input_topic}-rogue-value", ROGUE_SCHEMA),
    }
    if "old_writer" in {**(extra or {}), **(late or {})}:
        codecs["old"] = AvroCodec(source, subject, older_transaction_schema())
    counts = {kind: n * per // 1000 for kind, per in BASE_MIX.items()}
    counts["oversized_input"] = max(1, n * BASE_OVERSIZED // 10_000)
    for kind, k in (extra or {}).items():
        counts[kind] = counts.get(kind, 0) + k
    counts["good"] = n - sum(counts.values()) - sum((late or {}).values())
    kinds = [kind for kind, k in counts.items() for _ in range(k) if kind != "duplicate"]
    rng.shuffle(kinds)
    for kind, k in (late or {}).items():
        for _ in range(k):
            kinds.insert(rng.randrange(len(kinds) // 2, len(kinds) + 1), kind)
    records: list[InputRecord] = []
    for kind in kinds:
        records.append(_make(rng, codecs, len(records), kind))
    # duplicates: exact resends of earlier good records, inserted after their originals
    goods = [r for r in records if r.kind == "good"]
    for _ in range(counts.get("duplicate", 0)):
        original = rng.choice(goods)
        at = rng.randrange(original.index + 1, len(records) + 1)
        records.insert(at, InputRecord(0, "duplicate", original.value, original.key, original.event_id))
        for i, r in enumerate(records):
            r.index = i
    return EventSet(records)


def _make(rng: random.Random, codecs: dict[str, AvroCodec], index: int, kind: str) -> InputRecord:
    codec = codecs["current"]
    event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    event = transaction(rng, event_id)
    key = event["customer_id"].encode()
    if kind == "garbage":
        return InputRecord(index, kind, f"not avro #{index} {rng.random()}".encode(), b"garbage", None)
    if kind == "truncated":
        return InputRecord(index, kind, codec.encode(event)[:-5], key, None)
    if kind == "unknown_schema_id":
        body = codec.encode(event)[5:]
        return InputRecord(index, kind, b"\x00" + struct.pack(">I", 900_000 + index) + body, key, None)
    if kind == "incompatible_schema":
        rogue = codecs["rogue"].encode({"event_id": index, "note": "rogue producer"})
        return InputRecord(index, kind, rogue, key, None)
    if kind == "old_writer":
        return InputRecord(index, kind, codecs["old"].encode(event), key, event_id)
    if kind == "unknown_entity":
        event["customer_id"] = f"ghost-{index}"
        key = event["customer_id"].encode()
    elif kind == "model_rejected":
        event["merchant_category"] = REJECT
    elif kind == "poison":
        event["merchant_category"] = CRASH
    elif kind == "oversized_output":
        event["merchant_category"] = BIG
    elif kind == "oversized_input":
        event["merchant_id"] = "m" + "x" * 1_500_000
    return InputRecord(index, kind, codec.encode(event), key, event_id)
