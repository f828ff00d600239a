"""The normal form that decides schema identity (same schema -> same id)."""

from __future__ import annotations

import json
from typing import Any

import fastavro
import pytest
from fastavro.schema import to_parsing_canonical_form

from vatic.schemas import load_schema, schema_names
from vatic.schemas.canonical import canonical_json, fingerprint, normalize, without_logical_types
from vatic.schemas.errors import InvalidSchemaError

BASE: dict[str, Any] = {
    "type": "record",
    "name": "Payment",
    "namespace": "dev.vatic",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "channel", "type": {"type": "enum", "name": "Channel", "symbols": ["A", "B"]}},
        {"name": "previous", "type": ["null", "Channel"], "default": None},
    ],
}

SAME_SCHEMA_WRITTEN_DIFFERENTLY: dict[str, Any] = {
    "fields": [
        {"type": {"type": "string"}, "name": "id", "order": "ascending"},
        {"type": {"symbols": ["A", "B"], "type": "enum", "name": "dev.vatic.Channel"}, "name": "channel"},
        {"default": None, "type": ["null", "dev.vatic.Channel"], "name": "previous"},
    ],
    "name": "dev.vatic.Payment",
    "type": "record",
}


def _changed(**field_changes: Any) -> dict[str, Any]:
    schema = json.loads(json.dumps(BASE))
    schema["fields"][0].update(field_changes)
    return schema


def test_spelling_does_not_change_identity() -> None:
    assert canonical_json(SAME_SCHEMA_WRITTEN_DIFFERENTLY) == canonical_json(BASE)
    assert fingerprint(SAME_SCHEMA_WRITTEN_DIFFERENTLY) == fingerprint(BASE)


@pytest.mark.parametrize(
    "changed",
    [_changed(doc="the id"), _changed(default="x"), _changed(aliases=["ident"]), _changed(order="descending")],
)
def test_what_resolution_or_readers_see_changes_identity(changed: dict[str, Any]) -> None:
    assert fingerprint(changed) != fingerprint(BASE)


@pytest.mark.parametrize("name", schema_names())
def test_normal_form_is_the_same_avro_schema(name: str) -> None:
    schema = load_schema(name)
    normal = json.loads(canonical_json(schema))
    # fastavro's Parsing Canonical Form (an independent implementation of "same schema") agrees
    assert to_parsing_canonical_form(fastavro.parse_schema(normal)) == to_parsing_canonical_form(
        fastavro.parse_schema(schema)
    )


def test_null_namespace_inside_a_namespaced_record_is_kept() -> None:
    schema = {
        "type": "record",
        "name": "Outer",
        "namespace": "dev.vatic",
        "fields": [
            {"name": "inner", "type": {"type": "record", "name": "Inner", "namespace": "", "fields": []}},
        ],
    }
    normal = normalize(schema)
    assert set(normal.names) == {"dev.vatic.Outer", "Inner"}
    # the normal form must not move Inner into dev.vatic when read back
    assert set(normalize(json.loads(canonical_json(schema))).names) == {"dev.vatic.Outer", "Inner"}


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ({"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}] * 2}, "two fields"),
        ({"type": "record", "name": "R", "fields": [{"name": "a", "type": ["int", "int"]}]}, "two branches"),
        ({"type": "record", "name": "R", "fields": [{"name": "a", "type": "Missing"}]}, "Missing"),
        ({"type": "fixed", "name": "F"}, "size"),
    ],
)
def test_invalid_schemas_are_refused(bad: dict[str, Any], why: str) -> None:
    with pytest.raises(InvalidSchemaError, match=why):
        normalize(bad)


def test_without_logical_types() -> None:
    stripped = without_logical_types(load_schema("transaction"))
    fields = {field["name"]: field["type"] for field in stripped["fields"]}
    assert fields["event_id"] == "string"
    assert fields["event_time"] == "long"
    assert "logicalType" not in json.dumps(stripped)
