"""The shipped Avro schemas: present as package data, documented, and able to carry realistic records."""

from __future__ import annotations

import copy
import io
import uuid
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import fastavro
import pytest

from vatic.schemas import errors, load_schema, parse, schema_names
from vatic.schemas.errors import ConfigError, InvalidSchemaError

SHIPPED = {"transaction", "product_created", "prediction", "dead_letter", "drift"}


def _named_types(node: Any) -> list[dict[str, Any]]:
    """Every record and enum defined anywhere in a schema document."""
    found: list[dict[str, Any]] = []
    if isinstance(node, list):
        for branch in node:
            found += _named_types(branch)
    elif isinstance(node, dict):
        if node.get("type") in ("record", "enum"):
            found.append(node)
        for field in node.get("fields", []):
            found += _named_types(field["type"])
        for key in ("items", "values"):
            if key in node:
                found += _named_types(node[key])
        if isinstance(node.get("type"), (dict, list)):
            found += _named_types(node["type"])
    return found


def _round_trip(schema: dict[str, Any], record: dict[str, Any]) -> Any:
    parsed = parse(schema)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, record, strict=True)
    out.seek(0)
    return fastavro.schemaless_reader(out, parsed)


def test_the_shipped_schemas_are_package_data() -> None:
    assert set(schema_names()) == SHIPPED
    folder = resources.files("vatic.schemas").joinpath("avro")
    assert {entry.name for entry in folder.iterdir() if entry.name.endswith(".avsc")} == {
        f"{name}.avsc" for name in SHIPPED
    }


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_schema_is_valid_avro_in_the_dev_vatic_namespace(name: str) -> None:
    schema = load_schema(name)
    parse(schema)  # raises InvalidSchemaError otherwise
    assert schema["type"] == "record"
    assert schema["namespace"] == "dev.vatic"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_record_enum_and_field_has_a_doc(name: str) -> None:
    named = _named_types(load_schema(name))
    assert named, "found no record"
    for node in named:
        assert node.get("doc", "").strip(), f"{node['name']} has no doc"
        for field in node.get("fields", []):
            assert field.get("doc", "").strip(), f"{node['name']}.{field['name']} has no doc"


@pytest.mark.parametrize(
    ("name", "entity_keys"),
    [("transaction", ["customer_id", "merchant_id"]), ("product_created", ["product_id", "seller_id"])],
)
def test_input_events_carry_event_id_event_time_and_entity_keys(name: str, entity_keys: list[str]) -> None:
    fields = {field["name"]: field["type"] for field in load_schema(name)["fields"]}
    assert fields["event_id"] == {"type": "string", "logicalType": "uuid"}
    assert fields["event_time"] == {"type": "long", "logicalType": "timestamp-millis"}
    for key in entity_keys:
        assert fields[key] == "string", f"entity key {key} must be a required string"


def test_dead_letter_stages_cover_the_error_taxonomy_stages() -> None:
    stage_field = next(f for f in load_schema("dead_letter")["fields"] if f["name"] == "stage")
    symbols = stage_field["type"]["symbols"]
    assert {"decode", "enrich", "infer", "encode", "produce"} <= set(symbols)
    assert errors.DecodeError.stage in symbols
    assert errors.EncodeError.stage in symbols
    assert stage_field["type"]["default"] in symbols


def test_transaction_round_trip(transaction: dict[str, Any]) -> None:
    # fastavro applies the logical types (the codec does not, by default: see test_avro_codec)
    assert _round_trip(load_schema("transaction"), transaction) == {
        **transaction,
        "event_id": uuid.UUID(transaction["event_id"]),
        "event_time": datetime(2025, 11, 25, 14, 0, 0, 123000, tzinfo=UTC),
    }


def test_product_created_round_trip(product_created: dict[str, Any]) -> None:
    decoded = _round_trip(load_schema("product_created"), product_created)
    assert decoded["title"] == product_created["title"]
    assert decoded["description"] == product_created["description"]  # non-ASCII survives
    assert decoded["attributes"] == product_created["attributes"]
    assert decoded["price"] == 149.0


def test_prediction_carries_a_fraud_score_with_lineage(fraud_prediction: dict[str, Any]) -> None:
    decoded = _round_trip(load_schema("prediction"), fraud_prediction)
    assert decoded["outputs"] == fraud_prediction["outputs"]
    assert decoded["outputs"]["is_fraud"] is True  # a boolean stays a boolean, not 1
    assert decoded["features"] == fraud_prediction["features"]
    assert decoded["features"]["merchant_stats:chargeback_rate_90d"] == {"value": None, "missing": True}


def test_prediction_carries_a_category_with_scores(category_prediction: dict[str, Any]) -> None:
    decoded = _round_trip(load_schema("prediction"), category_prediction)
    assert decoded["outputs"] == category_prediction["outputs"]
    assert decoded["origin"] == "REST"
    assert decoded["timings"]["enrich_ms"] is None


def test_dead_letter_keeps_the_original_bytes(dead_letter: dict[str, Any]) -> None:
    decoded = _round_trip(load_schema("dead_letter"), dead_letter)
    assert decoded["key"] == dead_letter["key"]
    assert decoded["value"] == dead_letter["value"]
    assert decoded["headers"] == dead_letter["headers"]


def test_dead_letter_of_a_tombstone_with_minimal_fields(dead_letter: dict[str, Any]) -> None:
    minimal = {
        name: dead_letter[name]
        for name in (
            "service",
            "stage",
            "error_class",
            "error_message",
            "attempts",
            "failure_time",
            "topic",
            "partition",
            "offset",
        )
    }
    minimal["stage"] = "decode"
    minimal["value"] = None
    parsed = parse(load_schema("dead_letter"))
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, minimal)  # defaults fill the optional fields
    out.seek(0)
    decoded = fastavro.schemaless_reader(out, parsed)
    assert decoded["value"] is None
    assert decoded["key"] is None
    assert decoded["headers"] == []


def test_load_schema_returns_a_fresh_copy() -> None:
    first = load_schema("transaction")
    pristine = copy.deepcopy(first)
    first["fields"].clear()
    assert load_schema("transaction") == pristine


def test_parse_leaves_the_document_unchanged() -> None:
    schema = load_schema("prediction")
    pristine = copy.deepcopy(schema)
    parse(schema)
    assert schema == pristine


def test_unknown_schema_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="transaction"):
        load_schema("transactions")


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "recordx"},
        {"type": "record", "name": "R", "fields": [{"name": "a", "type": "nope"}]},
        {"type": "record", "name": "R", "fields": [{"name": "a", "type": "int", "default": "x"}]},
        {"type": "enum", "name": "E", "symbols": ["A", "A"]},
    ],
)
def test_parse_rejects_invalid_schemas(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidSchemaError):
        parse(bad)
