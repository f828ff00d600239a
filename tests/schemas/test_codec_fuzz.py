"""Fuzzing the Avro decoder (hypothesis): whatever bytes arrive, ``AvroCodec.decode`` returns a record of the
schema or raises vatic's typed ``DecodeError`` (``UnknownSchemaError`` for an id the source does not know)
carrying the exact input bytes - never another exception, so the stream can dead-letter every bad record.

Inputs: arbitrary bytes; Confluent frames with the codec's id around arbitrary bodies; valid records of every
shipped schema (generated from the schema itself), encoded, then truncated, bit-flipped, extended, spliced or
re-framed with a wrong magic byte or an unknown schema id. A real schema source (the in-memory store) answers;
one test uses the HTTP registry client against a port where nothing listens (an outage is Retryable, not a
data error). Bounded: ``EXAMPLES`` per property, a few seconds in all.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vatic.connectors.schema_registry import ConfluentSchemaRegistry
from vatic.schemas import AvroCodec, InMemorySchemaStore, frame, load_schema, schema_names
from vatic.schemas.canonical import normalize
from vatic.schemas.errors import DecodeError, EncodeError, InvalidRecord, SchemaSourceUnavailable, UnknownSchemaError
from vatic.schemas.validate import record_validator

EXAMPLES = 150
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
SCHEMAS = sorted(schema_names())

_LONG = (-(2**63), 2**63 - 1)
_INT = (-(2**31), 2**31 - 1)


def records(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Valid records of ``schema`` (values as the codec decodes them: no logical-type objects)."""
    normal = normalize(schema)

    def build(node: Any) -> st.SearchStrategy[Any]:
        node = normal.deref(node)
        if isinstance(node, list):
            return st.one_of([build(branch) for branch in node])
        if isinstance(node, str):
            node = {"type": node}
        kind, logical = node["type"], node.get("logicalType")
        if kind == "record":
            return st.fixed_dictionaries({f["name"]: build(f["type"]) for f in node["fields"]})
        if kind == "enum":
            return st.sampled_from(node["symbols"])
        if kind == "array":
            return st.lists(build(node["items"]), max_size=3)
        if kind == "map":
            return st.dictionaries(st.text(max_size=8), build(node["values"]), max_size=3)
        if kind == "fixed":
            return st.binary(min_size=node["size"], max_size=node["size"])
        simple: dict[str, st.SearchStrategy[Any]] = {
            "null": st.none(),
            "boolean": st.booleans(),
            "int": st.integers(*_INT),
            "long": st.integers(*_LONG),
            "double": st.floats(allow_nan=False),
            "float": st.floats(allow_nan=False, width=32),
            "bytes": st.binary(max_size=16),
            "string": st.uuids().map(str) if logical == "uuid" else st.text(max_size=16),
        }
        return simple[kind]

    return build(normal.root)


def _codec(name: str) -> AvroCodec:
    store = InMemorySchemaStore()
    return AvroCodec(store, f"{name}-value", load_schema(name))


CODECS = {name: _codec(name) for name in SCHEMAS}
for _codec_of_name in CODECS.values():
    _ = _codec_of_name.schema_id  # register: ids are 1 in each store


def _decode(codec: AvroCodec, data: bytes) -> tuple[dict[str, Any] | None, DecodeError | None]:
    """(record, None) or (None, the DecodeError); any other exception propagates and fails the test."""
    try:
        return codec.decode(data), None
    except DecodeError as exc:
        return None, exc


def _decode_or_typed_error(codec: AvroCodec, data: bytes) -> dict[str, Any] | None:
    """The record, or None after checking that the error is a DecodeError carrying ``data``."""
    record, error = _decode(codec, data)
    if error is not None:
        assert error.raw == data
        assert error.stage == "decode"
        assert error.message
        return None
    assert isinstance(record, dict)
    fields = [f["name"] for f in codec.schema["fields"]]
    assert sorted(record) == sorted(fields)
    return record


@pytest.mark.parametrize("name", SCHEMAS)
def test_valid_records_round_trip(name: str) -> None:
    codec = CODECS[name]

    @FUZZ
    @given(record=records(codec.schema))
    def check(record: dict[str, Any]) -> None:
        assert codec.decode(codec.encode(record)) == record

    check()


@FUZZ
@given(data=st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_a_decode_error(data: bytes) -> None:
    _decode_or_typed_error(CODECS["transaction"], data)


@FUZZ
@given(body=st.binary(max_size=96))
def test_a_frame_with_the_right_id_around_any_body_decodes_or_raises_a_decode_error(body: bytes) -> None:
    codec = CODECS["transaction"]
    data = frame(codec.schema_id, body)
    record = _decode_or_typed_error(codec, data)
    if record is not None:  # a body that happens to be valid Avro re-encodes to the same bytes
        assert codec.encode(record, validate=False) == data


_MUTATIONS = ("truncate", "flip", "insert", "append", "splice", "magic", "unknown_id")


@pytest.mark.parametrize("name", SCHEMAS)
def test_valid_then_mutated_payloads_decode_or_raise_a_decode_error(name: str) -> None:
    codec = CODECS[name]

    @FUZZ
    @given(record=records(codec.schema), how=st.sampled_from(_MUTATIONS), data=st.data())
    def check(record: dict[str, Any], how: str, data: st.DataObject) -> None:
        payload = bytearray(codec.encode(record))
        at = data.draw(st.integers(0, len(payload) - 1), label="at")
        if how == "truncate":
            payload = payload[:at]
        elif how == "flip":
            payload[at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        elif how == "insert":
            payload[at:at] = data.draw(st.binary(min_size=1, max_size=8), label="inserted")
        elif how == "append":
            payload += data.draw(st.binary(min_size=1, max_size=8), label="appended")
        elif how == "splice":
            payload[max(at, 5) :] = data.draw(st.binary(max_size=16), label="tail")
        elif how == "magic":
            payload[0] = data.draw(st.integers(1, 255), label="magic")
        else:
            unknown = data.draw(st.integers(2, 2**32 - 1), label="schema id")
            payload[1:5] = struct.pack(">I", unknown)
        raw = bytes(payload)
        _, error = _decode(codec, raw)
        if error is None:  # only some changes can leave bytes that still make a record
            assert how in ("flip", "insert", "splice"), f"{how} at {at} was decoded"
            return
        assert error.raw == raw
        if isinstance(error, UnknownSchemaError):
            assert how == "unknown_id" or (how in ("flip", "insert") and at < 5)
            assert error.schema_id == struct.unpack(">I", raw[1:5])[0]
        else:
            assert how != "unknown_id"

    check()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
VALIDATE = record_validator(load_schema("transaction"))


@FUZZ
@given(value=JSON, transaction=records(load_schema("transaction")), field=st.sampled_from(["customer_id", "amount"]))
def test_the_rest_validator_raises_only_invalid_record(value: Any, transaction: dict[str, Any], field: str) -> None:
    """What the gateway runs on a predict body (any JSON object, or a valid event with one field replaced by any
    JSON value): None, or InvalidRecord naming the field."""
    for body in (value if isinstance(value, dict) else {}, {**transaction, field: value}):
        error = None
        try:
            VALIDATE(body)
        except InvalidRecord as exc:
            error = exc
        if error is not None:
            assert error.field
            assert error.problem


@pytest.mark.parametrize(
    "text", ["not-a-uuid", "g83d1d2b-e3f1-1065-92fa-8c666c61ed99", "583d1d2be3f1106592fa8c666c61ed99", ""]
)
def test_a_uuid_field_takes_only_uuid_strings(text: str, transaction: dict[str, Any]) -> None:
    """Found by schemathesis on the gateway: a predict body with event_id "g83d..." was accepted and answered with a
    prediction whose event_id broke the documented ``format: uuid``. Avro's uuid logical type is RFC 4122 text."""
    with pytest.raises(InvalidRecord) as info:
        record_validator(load_schema("transaction"))({**transaction, "event_id": text})
    assert info.value.field == "event_id"
    with pytest.raises(EncodeError, match="event_id"):
        CODECS["transaction"].encode({**transaction, "event_id": text})
    upper = {**transaction, "event_id": transaction["event_id"].upper()}
    assert CODECS["transaction"].decode(CODECS["transaction"].encode(upper)) == upper


def test_an_unknown_id_while_the_registry_is_down_is_retryable_not_a_data_error(transaction: dict[str, Any]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    registry = ConfluentSchemaRegistry(f"http://127.0.0.1:{port}", timeout_s=1.0, connect_timeout_s=0.5)
    codec = AvroCodec(registry, "t-value", load_schema("transaction"))
    payload = CODECS["transaction"].encode(transaction)
    with pytest.raises(SchemaSourceUnavailable):
        codec.decode(payload)
    with pytest.raises(DecodeError):  # a payload that is not framed never needs the registry
        codec.decode(b"\x01" + payload[1:])
