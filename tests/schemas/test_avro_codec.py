"""AvroCodec: Confluent wire format, error taxonomy, schema evolution, caching."""

from __future__ import annotations

import copy
import io
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest

from vatic.schemas import AvroCodec, InMemorySchemaStore, frame, load_schema, schema_id_of
from vatic.schemas.errors import (
    DataError,
    DecodeError,
    EncodeError,
    IncompatibleSchemaError,
    InvalidSchemaError,
    SchemaNotFound,
    UnknownSchemaError,
)
from vatic.schemas.source import EMBEDDED_ID_BASE

SUBJECT = "transactions-value"


def _with_field(schema: dict[str, Any], field: dict[str, Any]) -> dict[str, Any]:
    evolved = copy.deepcopy(schema)
    evolved["fields"].append(field)
    return evolved


def _avro_body(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    """Schemaless Avro written by fastavro directly: the oracle for the codec's body."""
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


@pytest.fixture
def store() -> InMemorySchemaStore:
    return InMemorySchemaStore()


@pytest.fixture
def codec(store: InMemorySchemaStore) -> AvroCodec:
    return AvroCodec(store, SUBJECT, load_schema("transaction"))


def test_wire_format_is_magic_byte_id_and_schemaless_body(
    store: InMemorySchemaStore, transaction: dict[str, Any]
) -> None:
    # two unrelated schemas first, so the codec's schema gets the store's third id, not its first
    store.register("products-value", load_schema("product_created"))
    store.register("predictions-value", load_schema("prediction"))
    codec = AvroCodec(store, SUBJECT, load_schema("transaction"))

    data = codec.encode(transaction)

    third = EMBEDDED_ID_BASE + 2
    assert data[0] == 0
    assert data[1:5] == third.to_bytes(4, "big")
    assert data[5:] == _avro_body(load_schema("transaction"), transaction)
    assert codec.schema_id == third == store.lookup(SUBJECT, load_schema("transaction")).schema_id


def test_frame_and_schema_id_of() -> None:
    assert frame(0x01020304, b"body") == b"\x00\x01\x02\x03\x04body"
    assert schema_id_of(b"\x00\x01\x02\x03\x04body") == 0x01020304
    assert schema_id_of(b"\x00\xff\xff\xff\xff") == 2**32 - 1


@pytest.mark.parametrize(
    "name", ["transaction", "product_created", "fraud_prediction", "category_prediction", "dead_letter"]
)
def test_round_trip_of_every_shipped_schema(
    store: InMemorySchemaStore, name: str, request: pytest.FixtureRequest
) -> None:
    record = request.getfixturevalue(name)
    schema_name = name if name in ("transaction", "product_created", "dead_letter") else "prediction"
    codec = AvroCodec(store, f"{schema_name}-value", load_schema(schema_name))
    assert codec.decode(codec.encode(record)) == record


def test_decoded_logical_types_are_plain_values_by_default(codec: AvroCodec, transaction: dict[str, Any]) -> None:
    decoded = codec.decode(codec.encode(transaction))
    assert decoded["event_time"] == transaction["event_time"]
    assert type(decoded["event_time"]) is int
    assert decoded["event_id"] == transaction["event_id"]
    assert type(decoded["event_id"]) is str


def test_logical_types_on_request(store: InMemorySchemaStore, transaction: dict[str, Any]) -> None:
    codec = AvroCodec(store, SUBJECT, load_schema("transaction"), logical_types=True)
    when = datetime(2025, 11, 25, 14, 0, 0, 123000, tzinfo=UTC)
    decoded = codec.decode(codec.encode({**transaction, "event_time": when}))
    assert decoded["event_time"] == when
    assert decoded["event_id"] == uuid.UUID(transaction["event_id"])


def test_encode_accepts_datetime_for_timestamp_fields(codec: AvroCodec, transaction: dict[str, Any]) -> None:
    as_datetime = {**transaction, "event_time": datetime(2025, 11, 25, 14, 0, 0, 123000, tzinfo=UTC)}
    assert codec.encode(as_datetime) == codec.encode(transaction)


# -- decode errors ------------------------------------------------------------------------------------------


def _bad_payloads(valid: bytes) -> dict[str, bytes]:
    return {
        "empty": b"",
        "shorter than the header": valid[:3],
        "header only": valid[:5],
        "bad magic byte": b"\x01" + valid[1:],
        "json instead of avro": b'{"event_id": "x"}',
        "truncated body": valid[:-4],
        "garbage body": valid[:5] + b"\xff" * 24,
        "trailing bytes": valid + b"\x00\x00",
    }


@pytest.mark.parametrize(
    "case",
    [
        "empty",
        "shorter than the header",
        "header only",
        "bad magic byte",
        "json instead of avro",
        "truncated body",
        "garbage body",
        "trailing bytes",
    ],
)
def test_undecodable_bytes_raise_decode_error_with_the_raw_bytes(
    codec: AvroCodec, transaction: dict[str, Any], case: str
) -> None:
    raw = _bad_payloads(codec.encode(transaction))[case]
    with pytest.raises(DecodeError) as caught:
        codec.decode(raw)
    assert caught.value.raw == raw
    assert caught.value.stage == "decode"
    assert isinstance(caught.value, DataError)
    assert not isinstance(caught.value, UnknownSchemaError)


def test_bytearray_input_is_reported_as_bytes(codec: AvroCodec) -> None:
    with pytest.raises(DecodeError) as caught:
        codec.decode(bytearray(b"\x07\x00\x00\x00\x01\x02"))  # type: ignore[arg-type]
    assert caught.value.raw == b"\x07\x00\x00\x00\x01\x02"
    assert type(caught.value.raw) is bytes


def test_unknown_schema_id_raises_unknown_schema_error(codec: AvroCodec, transaction: dict[str, Any]) -> None:
    valid = codec.encode(transaction)
    raw = frame(4242, valid[5:])
    with pytest.raises(UnknownSchemaError) as caught:
        codec.decode(raw)
    assert caught.value.raw == raw
    assert caught.value.schema_id == 4242
    assert isinstance(caught.value, DecodeError)
    assert "4242" in str(caught.value)


def test_unknown_id_is_remembered_for_the_ttl(store: InMemorySchemaStore, transaction: dict[str, Any]) -> None:
    schema = load_schema("transaction")
    body = _avro_body(schema, transaction)
    remembering = AvroCodec(store, SUBJECT, schema)
    forgetting = AvroCodec(store, SUBJECT, schema, unknown_id_ttl_s=0.0)
    first = EMBEDDED_ID_BASE
    for codec in (remembering, forgetting):
        with pytest.raises(UnknownSchemaError):
            codec.decode(frame(first, body))

    assert store.register(SUBJECT, schema) == first  # now the id exists

    assert forgetting.decode(frame(first, body)) == transaction
    with pytest.raises(UnknownSchemaError):
        remembering.decode(frame(first, body))


def test_a_registry_issued_id_is_refused_by_the_embedded_store_naming_it(
    store: InMemorySchemaStore, transaction: dict[str, Any]
) -> None:
    """A record a Confluent serializer wrote against a registry (ids from 1) never meets an embedded store's
    schema of the same number: the embedded store hands out ids from 2^30, so the id is unknown and refused."""
    for name in ("product_created", "prediction", "transaction"):
        store.register(f"{name}-value", load_schema(name))
    raw = frame(2, _avro_body(load_schema("transaction"), transaction))
    with pytest.raises(UnknownSchemaError, match=r"schema id 2 .*not issued by vatic.s embedded") as caught:
        AvroCodec(store, SUBJECT, load_schema("transaction")).decode(raw)
    assert "--schema-registry-url" in caught.value.message


def test_writer_schema_that_cannot_be_resolved_is_an_unknown_schema(
    store: InMemorySchemaStore, transaction: dict[str, Any]
) -> None:
    # someone wrote amounts as strings under another subject: the id exists but cannot be read as ours
    foreign = copy.deepcopy(load_schema("transaction"))
    next(f for f in foreign["fields"] if f["name"] == "amount")["type"] = "string"
    producer = AvroCodec(store, "other-value", foreign)
    raw = producer.encode({**transaction, "amount": "129.99"})

    consumer = AvroCodec(store, SUBJECT, load_schema("transaction"))
    with pytest.raises(UnknownSchemaError, match="amount") as caught:
        consumer.decode(raw)
    assert caught.value.raw == raw
    assert caught.value.schema_id == producer.schema_id


# -- schema evolution ---------------------------------------------------------------------------------------


def test_old_writer_new_reader_fills_the_default(store: InMemorySchemaStore, transaction: dict[str, Any]) -> None:
    v1 = load_schema("transaction")
    v2 = _with_field(v1, {"name": "is_recurring", "type": "boolean", "default": False, "doc": "Subscription payment."})
    old_bytes = AvroCodec(store, SUBJECT, v1).encode(transaction)

    new_reader = AvroCodec(store, SUBJECT, v2)
    assert new_reader.decode(old_bytes) == {**transaction, "is_recurring": False}
    assert store.versions(SUBJECT) == [1]  # decoding never registers the reader schema


def test_new_writer_old_reader_drops_the_new_field(store: InMemorySchemaStore, transaction: dict[str, Any]) -> None:
    v1 = load_schema("transaction")
    v2 = _with_field(v1, {"name": "is_recurring", "type": "boolean", "default": False, "doc": "Subscription."})
    AvroCodec(store, SUBJECT, v1).encode(transaction)  # v1 registered first
    new_bytes = AvroCodec(store, SUBJECT, v2).encode({**transaction, "is_recurring": True})

    assert schema_id_of(new_bytes) == EMBEDDED_ID_BASE + 1
    assert AvroCodec(store, SUBJECT, v1).decode(new_bytes) == transaction


def test_enum_symbol_unknown_to_the_reader_reads_as_the_default(
    store: InMemorySchemaStore, transaction: dict[str, Any]
) -> None:
    newer = copy.deepcopy(load_schema("transaction"))
    channel = next(f for f in newer["fields"] if f["name"] == "channel")["type"]
    channel["symbols"].insert(-1, "WEARABLE")
    raw = AvroCodec(store, "newer-value", newer).encode({**transaction, "channel": "WEARABLE"})

    decoded = AvroCodec(store, SUBJECT, load_schema("transaction")).decode(raw)
    assert decoded["channel"] == "UNKNOWN"


# -- encode errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"amount": "129.99"}, "Transaction.amount"),
        ({"amount": True}, "Transaction.amount"),
        ({"card_present": None}, "Transaction.card_present"),
        ({"card_present": "no"}, "Transaction.card_present"),
        ({"event_time": 1.5}, "Transaction.event_time"),
        ({"event_time": 2**63}, "Transaction.event_time"),
        ({"channel": "TELEPATHY"}, "Transaction.channel"),
        ({"merchant_id": None}, "Transaction.merchant_id"),
        ({"device_hash": 42}, "Transaction.device_hash"),
        ({"amount_cents": 12999}, "amount_cents"),  # a field the schema lacks (strict)
    ],
)
def test_encode_error_names_the_bad_field(
    codec: AvroCodec, transaction: dict[str, Any], change: dict[str, Any], path: str
) -> None:
    # fastavro alone would write most of these, coerced (None -> false, 1.5 -> 1, "129.99" -> 129.99)
    with pytest.raises(EncodeError) as caught:
        codec.encode({**transaction, **change})
    assert path in str(caught.value)
    assert caught.value.stage == "encode"
    assert isinstance(caught.value, DataError)


def test_missing_required_field_is_named(codec: AvroCodec, transaction: dict[str, Any]) -> None:
    del transaction["customer_id"]
    with pytest.raises(EncodeError, match="customer_id"):
        codec.encode(transaction)


def test_missing_field_with_default_is_filled(codec: AvroCodec, transaction: dict[str, Any]) -> None:
    del transaction["device_hash"]
    assert codec.decode(codec.encode(transaction))["device_hash"] is None


def test_non_strict_codec_ignores_extra_fields(store: InMemorySchemaStore, transaction: dict[str, Any]) -> None:
    codec = AvroCodec(store, SUBJECT, load_schema("transaction"), strict=False)
    assert codec.decode(codec.encode({**transaction, "note": "ignored"})) == transaction


def test_nested_encode_error_names_the_path(store: InMemorySchemaStore, fraud_prediction: dict[str, Any]) -> None:
    predictions = AvroCodec(store, "predictions-value", load_schema("prediction"))
    fraud_prediction["features"]["customer_stats:txn_count_1h"]["missing"] = "no"
    with pytest.raises(EncodeError, match=r"features\['customer_stats:txn_count_1h'\]\.missing"):
        predictions.encode(fraud_prediction)


def test_output_of_an_unsupported_type_is_refused(store: InMemorySchemaStore, fraud_prediction: dict[str, Any]) -> None:
    predictions = AvroCodec(store, "predictions-value", load_schema("prediction"))
    fraud_prediction["outputs"]["fraud_probability"] = {"p": "high"}  # a map of strings is not a branch
    with pytest.raises(EncodeError, match=r"outputs\['fraud_probability'\]"):
        predictions.encode(fraud_prediction)


def test_non_mapping_record_is_an_encode_error(codec: AvroCodec) -> None:
    with pytest.raises(EncodeError, match="mapping"):
        codec.encode(["not", "a", "record"])  # type: ignore[arg-type]


# -- registration -------------------------------------------------------------------------------------------


def test_first_encode_registers_once(store: InMemorySchemaStore, transaction: dict[str, Any]) -> None:
    codec = AvroCodec(store, SUBJECT, load_schema("transaction"))
    with pytest.raises(SchemaNotFound):
        store.latest(SUBJECT)  # nothing registered before the first use
    results: list[bytes] = []

    def work() -> None:
        for _ in range(200):
            results.append(codec.decode(codec.encode(transaction))["event_id"].encode())

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 1600
    assert store.versions(SUBJECT) == [1]


def test_lookup_only_codec_needs_a_registered_schema(store: InMemorySchemaStore, transaction: dict[str, Any]) -> None:
    codec = AvroCodec(store, SUBJECT, load_schema("transaction"), auto_register=False)
    with pytest.raises(SchemaNotFound):
        codec.encode(transaction)
    schema_id = store.register(SUBJECT, load_schema("transaction"))
    assert schema_id_of(codec.encode(transaction)) == schema_id


def test_incompatible_schema_is_refused_on_first_encode(
    store: InMemorySchemaStore, transaction: dict[str, Any]
) -> None:
    AvroCodec(store, SUBJECT, load_schema("transaction")).encode(transaction)
    breaking = _with_field(load_schema("transaction"), {"name": "risk_tier", "type": "int", "doc": "No default."})
    codec = AvroCodec(store, SUBJECT, breaking)
    with pytest.raises(IncompatibleSchemaError) as caught:
        codec.encode({**transaction, "risk_tier": 2})
    assert any("risk_tier" in problem for problem in caught.value.problems)


def test_codec_keeps_its_own_copy_of_the_schema(store: InMemorySchemaStore, transaction: dict[str, Any]) -> None:
    schema = load_schema("transaction")
    codec = AvroCodec(store, SUBJECT, schema)
    schema["fields"].clear()
    assert codec.decode(codec.encode(transaction)) == transaction
    assert len(store.get_schema(codec.schema_id)["fields"]) == len(transaction)  # type: ignore[index]


def test_codec_needs_a_record_schema(store: InMemorySchemaStore) -> None:
    with pytest.raises(InvalidSchemaError):
        AvroCodec(store, "keys", "string")
    with pytest.raises(InvalidSchemaError):
        AvroCodec(store, "bad", {"type": "record", "name": "R", "fields": [{"name": "a", "type": "nope"}]})
