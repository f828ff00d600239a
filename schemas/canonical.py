"""A normal form of Avro schemas, used to decide when two schema documents are the same schema.

Two documents that differ only in whitespace, key order, ``{"type": "string"}`` versus ``"string"``, relative
versus fully qualified names or an explicit ``"order": "ascending"`` have the same normal form, and therefore
the same :func:`canonical_json` and :func:`fingerprint`. Everything else is kept (docs, defaults, aliases,
logical types, custom properties), unlike Avro's *Parsing Canonical Form*, which drops defaults and so would
call two schemas equal that resolve differently.

The normal form is itself a valid Avro schema: every named type carries its full name (and ``"namespace": ""``
where an enclosing namespace would otherwise capture a name in the null namespace), every reference is a
full name, and keys come in a fixed order. A schema registry that deduplicates by text (Apicurio does) gives
equal schemas the same id when they are always sent in this form.

Every function here validates its input and raises :class:`~vatic.schemas.errors.InvalidSchemaError` for a
document that is not a valid Avro schema.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, TypeAlias

import fastavro

from vatic.schemas.errors import InvalidSchemaError

#: An Avro schema as parsed JSON: a record/enum/... object, a union list, or a primitive or type name.
AvroSchema: TypeAlias = dict[str, Any] | list[Any] | str

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED_TYPES = frozenset({"record", "error", "enum", "fixed"})

_SCHEMA_KEYS = (
    "type",
    "name",
    "namespace",
    "doc",
    "aliases",
    "fields",
    "symbols",
    "default",
    "items",
    "values",
    "size",
    "logicalType",
    "precision",
    "scale",
)
_FIELD_KEYS = ("name", "type", "doc", "default", "order", "aliases")


@dataclass(frozen=True, slots=True)
class NormalSchema:
    """A schema in normal form plus the index of the named types it defines (full name -> definition)."""

    root: Any
    names: dict[str, dict[str, Any]]

    def deref(self, node: Any) -> Any:
        """Follow a reference (a full name) to its definition; any other node is returned as it is."""
        if isinstance(node, str) and node not in PRIMITIVES:
            return self.names[node]
        return node


def normalize(schema: AvroSchema) -> NormalSchema:
    """Validate ``schema`` and return its normal form (a new object; the input is not modified)."""
    validate(schema)
    normalizer = _Normalizer()
    root = normalizer.walk(schema, "")
    return NormalSchema(root, normalizer.names)


def canonical_json(schema: AvroSchema) -> str:
    """The normal form as compact JSON text: equal schemas give equal text."""
    return json.dumps(normalize(schema).root, separators=(",", ":"), ensure_ascii=False)


def fingerprint(schema: AvroSchema) -> str:
    """SHA-256 (hex) of :func:`canonical_json`: the identity of a schema in vatic's schema stores."""
    return hashlib.sha256(canonical_json(schema).encode()).hexdigest()


def validate(schema: AvroSchema) -> None:
    """Raise :class:`InvalidSchemaError` unless ``schema`` is a valid, self-contained Avro schema."""
    if isinstance(schema, dict) and schema.get("__fastavro_parsed"):
        raise InvalidSchemaError("pass the schema document, not a fastavro parsed schema")
    try:
        fastavro.parse_schema(schema)
    except Exception as exc:  # fastavro raises SchemaParseException, UnknownType, KeyError, TypeError ...
        raise InvalidSchemaError(f"not a valid Avro schema: {type(exc).__name__}: {exc}") from exc


def without_logical_types(node: Any) -> Any:
    """A copy of a schema document (or normal form) with every ``logicalType`` removed.

    Decoding with such a schema yields the underlying Avro values (epoch milliseconds, UUID strings, decimal
    bytes) instead of ``datetime``/``UUID``/``Decimal`` objects.
    """
    if isinstance(node, list):
        return [without_logical_types(branch) for branch in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "logicalType":
            continue
        if key in ("type", "items", "values"):
            out[key] = without_logical_types(value)
        elif key == "fields":
            out[key] = [without_logical_types(field) for field in value]
        else:
            out[key] = value
    if set(out) == {"type"} and isinstance(out["type"], str) and out["type"] in PRIMITIVES:
        return out["type"]
    return out


def _ordered(obj: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    known = {key: obj[key] for key in order if key in obj}
    rest = {key: _sorted_json(obj[key]) for key in sorted(obj) if key not in known}
    return known | rest


def _sorted_json(value: Any) -> Any:
    """Custom properties: order object keys so that key order never changes the normal form."""
    if isinstance(value, dict):
        return {key: _sorted_json(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_json(item) for item in value]
    return value


def _split(name: str, namespace: str | None, enclosing: str) -> tuple[str, str]:
    """Full name and namespace of a named type, by Avro's rules."""
    if "." in name:
        return name, name.rpartition(".")[0]
    space = enclosing if namespace is None else namespace
    return (f"{space}.{name}" if space else name), space


class _Normalizer:
    def __init__(self) -> None:
        self.names: dict[str, dict[str, Any]] = {}

    def walk(self, node: Any, space: str) -> Any:
        if isinstance(node, str):
            return self._reference(node, space)
        if isinstance(node, list):
            return self._union(node, space)
        if not isinstance(node, dict):
            raise InvalidSchemaError(f"not a valid Avro schema node: {node!r}")
        kind = node.get("type")
        if isinstance(kind, (dict, list)):
            return self.walk(kind, space)
        if not isinstance(kind, str):
            raise InvalidSchemaError(f"schema object without a type: {node!r}")
        if kind in NAMED_TYPES:
            return self._named(node, kind, space)
        return self._unnamed(node, kind, space)

    def _unnamed(self, node: dict[str, Any], kind: str, space: str) -> Any:
        out: dict[str, Any] = {key: value for key, value in node.items() if key != "namespace"}
        if kind == "array":
            out["items"] = self.walk(node["items"], space)
        elif kind == "map":
            out["values"] = self.walk(node["values"], space)
        elif kind not in PRIMITIVES:
            out["type"] = self._reference(kind, space)  # {"type": "SomeRecord"}: a reference
        elif len(out) == 1:
            return kind
        return out["type"] if len(out) == 1 else _ordered(out, _SCHEMA_KEYS)

    def _reference(self, name: str, space: str) -> str:
        if name in PRIMITIVES:
            return name
        candidates = [name] if "." in name else ([f"{space}.{name}"] if space else []) + [name]
        for candidate in candidates:
            if candidate in self.names:
                return candidate
        raise InvalidSchemaError(f"unknown type name {name!r}")

    def _union(self, branches: list[Any], space: str) -> list[Any]:
        out = [self.walk(branch, space) for branch in branches]
        seen: set[str] = set()
        for branch in out:
            if isinstance(branch, list):
                raise InvalidSchemaError("a union may not directly contain another union")
            key = _branch_key(branch, self.names)
            if key in seen:
                raise InvalidSchemaError(f"union has two branches of type {key!r}")
            seen.add(key)
        return out

    def _named(self, node: dict[str, Any], kind: str, enclosing: str) -> dict[str, Any]:
        fullname, space = _split(str(node["name"]), node.get("namespace"), enclosing)
        if fullname in self.names or fullname in PRIMITIVES:
            raise InvalidSchemaError(f"type {fullname!r} is defined twice")
        out: dict[str, Any] = {key: value for key, value in node.items() if key != "namespace"}
        out["name"] = fullname
        if "." not in fullname and enclosing:
            out["namespace"] = ""
        if "aliases" in node:
            out["aliases"] = [_split(str(alias), None, space)[0] for alias in node["aliases"]]
        self.names[fullname] = out  # registered before the fields: a record may refer to itself
        if kind in ("record", "error"):
            out["fields"] = self._fields(node["fields"], space, fullname)
        result = _ordered(out, _SCHEMA_KEYS)
        out.clear()
        out.update(result)  # keep the object registered in names
        return out

    def _fields(self, fields: list[dict[str, Any]], space: str, owner: str) -> list[dict[str, Any]]:
        seen: set[str] = set()
        out = []
        for field in fields:
            name = field["name"]
            if name in seen:
                raise InvalidSchemaError(f"record {owner!r} has two fields named {name!r}")
            seen.add(name)
            normal = dict(field)
            normal["type"] = self.walk(field["type"], space)
            if normal.get("order") == "ascending":
                del normal["order"]
            if "default" in normal:
                normal["default"] = _sorted_json(normal["default"])
            out.append(_ordered(normal, _FIELD_KEYS))
        return out


def _branch_key(branch: Any, names: dict[str, dict[str, Any]]) -> str:
    """What makes union branches distinct: the type for unnamed types, the full name for named ones."""
    if isinstance(branch, str):
        return branch
    kind = branch["type"]
    if kind in NAMED_TYPES:
        return str(branch["name"])
    if isinstance(kind, str) and kind in names:
        return kind
    return str(kind)
