"""JSON Schema (draft 2020-12) of an Avro record, for OpenAPI documents and editors.

Types map as JSON carries them: long/int -> integer (with the Avro range), float/double -> number, bytes ->
string (``contentEncoding: base64``), enum -> string enum, map -> object with ``additionalProperties``,
``["null", T]`` -> ``T`` or null. Fields with a default are optional; ``optional`` makes more fields optional
(the REST gateway fills ``event_id`` and ``event_time`` when a caller omits them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from vatic.schemas.canonical import AvroSchema, normalize

_RANGES = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


def to_json_schema(schema: AvroSchema, *, optional: Iterable[str] = ()) -> dict[str, Any]:
    """The JSON Schema of a record schema (named types are inlined)."""
    normal = normalize(schema)
    result = _convert(normal.root, normal.names, set(optional))
    result["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return result


def _convert(node: Any, names: dict[str, Any], optional: set[str]) -> dict[str, Any]:
    if isinstance(node, str):
        if node in names:
            return _convert(names[node], names, set())
        return _primitive(node, None)
    if isinstance(node, list):
        branches = [_convert(branch, names, set()) for branch in node]
        return branches[0] if len(branches) == 1 else {"anyOf": branches}
    kind = node.get("type")
    logical = node.get("logicalType")
    if kind == "record":
        properties = {}
        required = []
        for f in node["fields"]:
            prop = _convert(f["type"], names, set())
            if f.get("doc"):
                prop["description"] = f["doc"]
            properties[f["name"]] = prop
            if "default" not in f and f["name"] not in optional:
                required.append(f["name"])
        out: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
        if required:
            out["required"] = required
        if node.get("doc"):
            out["description"] = node["doc"]
        out["title"] = str(node.get("name", "record")).rsplit(".", 1)[-1]
        return out
    if kind == "enum":
        return {"type": "string", "enum": list(node["symbols"])}
    if kind == "array":
        return {"type": "array", "items": _convert(node["items"], names, set())}
    if kind == "map":
        return {"type": "object", "additionalProperties": _convert(node["values"], names, set())}
    if kind == "fixed":
        return {"type": "string", "contentEncoding": "base64"}
    return _primitive(str(kind), logical)


def _primitive(kind: str, logical: str | None) -> dict[str, Any]:
    if kind == "null":
        return {"type": "null"}
    if kind == "boolean":
        return {"type": "boolean"}
    if kind in _RANGES:
        low, high = _RANGES[kind]
        out: dict[str, Any] = {"type": "integer", "minimum": low, "maximum": high}
        if logical:
            out["description"] = logical
        return out
    if kind in ("float", "double"):
        return {"type": "number"}
    if kind == "bytes":
        return {"type": "string", "contentEncoding": "base64"}
    if kind == "string":
        return {"type": "string", "format": "uuid"} if logical == "uuid" else {"type": "string"}
    raise ValueError(f"no JSON Schema for Avro type {kind!r}")
