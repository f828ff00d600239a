"""Exact type checks of records before encoding, compiled once per schema.

fastavro's writer coerces instead of refusing: it writes ``None`` or ``"no"`` as a boolean, truncates ``1.5``
into a long and parses ``"129.99"`` into a double. The codec must never put a value on a topic that is not
the value it was given, so :class:`~vatic.schemas.codec.AvroCodec` runs this check first (why not fastavro's own
validator: docs/decisions/0008-avro-type-check.md).

Accepted Python values, per Avro type: null ``None``; boolean ``bool``; int/long ``int`` (not ``bool``, in
range); float/double ``int`` or ``float`` (not ``bool``); bytes ``bytes``/``bytearray``; string ``str``;
enum a symbol; fixed ``bytes`` of the size; array ``list``/``tuple``; map a ``Mapping`` with ``str`` keys;
record a ``Mapping`` holding every field without a default and no other key. Logical types also accept what
fastavro converts: ``datetime``/``date``/``time`` for the time types, ``uuid.UUID``, ``decimal.Decimal``. A
``uuid`` string must be a UUID in its canonical 8-4-4-4-12 hex form (any case), as the Avro specification
(RFC 4122) and JSON Schema's ``format: uuid`` say.
"""

from __future__ import annotations

import datetime
import decimal
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from vatic.schemas.canonical import NormalSchema

Validator = Callable[[Any], None]

_INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_LOGICAL_EXTRAS: dict[str, tuple[type, ...]] = {
    "timestamp-millis": (datetime.datetime,),
    "timestamp-micros": (datetime.datetime,),
    "local-timestamp-millis": (datetime.datetime,),
    "local-timestamp-micros": (datetime.datetime,),
    "date": (datetime.date,),
    "time-millis": (datetime.time,),
    "time-micros": (datetime.time,),
    "uuid": (uuid.UUID,),
    "decimal": (decimal.Decimal,),
}


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class Invalid(Exception):
    """A value that does not match its schema; ``path`` is filled in on the way up."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path: list[str] = []

    def describe(self, root: str) -> str:
        return "".join([root, *reversed(self.path)]) + ": " + self.problem


def compile_validator(schema: NormalSchema, *, allow_extra_fields: bool = False) -> Validator:
    """A function that returns None for a valid datum and raises :class:`Invalid` otherwise.

    ``allow_extra_fields`` accepts records with keys the schema lacks (they are not written).
    """
    return _Compiler(schema, allow_extra_fields).compile(schema.root)


def _shown(value: Any) -> str:
    text = repr(value)
    return (text[:60] + "...") if len(text) > 60 else text


class _Compiler:
    def __init__(self, schema: NormalSchema, allow_extra_fields: bool) -> None:
        self.schema = schema
        self.allow_extra_fields = allow_extra_fields
        self.named: dict[str, Validator] = {}

    def compile(self, node: Any) -> Validator:
        if isinstance(node, list):
            return self._union(node)
        if isinstance(node, str):
            return self._reference(node) if node in self.schema.names else self._primitive(node, None)
        kind = node["type"]
        complex_types: dict[str, Callable[[dict[str, Any]], Validator]] = {
            "record": self._record,
            "error": self._record,
            "enum": self._enum,
            "fixed": self._fixed,
            "array": self._array,
            "map": self._map,
        }
        if kind in complex_types:
            return complex_types[kind](node)
        if kind in self.schema.names:
            return self._reference(kind)
        return self._primitive(kind, node.get("logicalType"))

    def _reference(self, name: str) -> Validator:
        if name not in self.named:
            self.compile(self.schema.names[name])  # registers itself in self.named before recursing
        named = self.named

        def check(value: Any) -> None:
            named[name](value)

        return check

    def _primitive(self, kind: str, logical: str | None) -> Validator:
        extras = _LOGICAL_EXTRAS.get(logical or "", ())
        if kind == "null":
            return _check_null
        if kind == "boolean":
            return _check_boolean
        if kind in _INT_RANGE:
            return _integer(kind, extras)
        if kind in ("float", "double"):
            return _number(kind, extras)
        if kind == "string":
            return _uuid_string if logical == "uuid" else _instance(str, "string", extras)
        if kind == "bytes":
            return _instance((bytes, bytearray), "bytes", extras)
        raise ValueError(f"unknown Avro type {kind!r}")  # normalize() has validated the schema

    def _record(self, node: dict[str, Any]) -> Validator:
        fields: list[tuple[str, Validator, bool]] = []
        names = frozenset(field["name"] for field in node["fields"])
        record_name = node["name"]
        strict = not self.allow_extra_fields

        def check(value: Any) -> None:
            if not isinstance(value, Mapping):
                raise Invalid(f"expected a mapping for record {record_name}, got {type(value).__name__}")
            present = 0
            for name, validate, has_default in fields:
                if name in value:
                    present += 1
                    try:
                        validate(value[name])
                    except Invalid as invalid:
                        invalid.path.append(f".{name}")
                        raise
                elif not has_default:
                    raise Invalid(f"required field {name!r} is missing")
            if strict and present != len(value):
                extra = sorted(str(key) for key in value if key not in names)
                raise Invalid(f"fields not in the schema: {', '.join(extra)}")

        self.named[record_name] = check
        fields.extend((field["name"], self.compile(field["type"]), "default" in field) for field in node["fields"])
        return check

    def _enum(self, node: dict[str, Any]) -> Validator:
        symbols = frozenset(node["symbols"])
        name = node["name"]

        def check(value: Any) -> None:
            if not isinstance(value, str) or value not in symbols:
                raise Invalid(f"{_shown(value)} is not a symbol of enum {name}")

        self.named[name] = check
        return check

    def _fixed(self, node: dict[str, Any]) -> Validator:
        size, name = node["size"], node["name"]

        def check(value: Any) -> None:
            if not isinstance(value, (bytes, bytearray)) or len(value) != size:
                raise Invalid(f"expected {size} bytes for fixed {name}, got {_shown(value)}")

        self.named[name] = check
        return check

    def _array(self, node: dict[str, Any]) -> Validator:
        items = self.compile(node["items"])

        def check(value: Any) -> None:
            if not isinstance(value, (list, tuple)):
                raise Invalid(f"expected a list, got {type(value).__name__}")
            for index, item in enumerate(value):
                try:
                    items(item)
                except Invalid as invalid:
                    invalid.path.append(f"[{index}]")
                    raise

        return check

    def _map(self, node: dict[str, Any]) -> Validator:
        values = self.compile(node["values"])

        def check(value: Any) -> None:
            if not isinstance(value, Mapping):
                raise Invalid(f"expected a mapping, got {type(value).__name__}")
            for key, item in value.items():
                if not isinstance(key, str):
                    raise Invalid(f"map key {_shown(key)} is not a string")
                try:
                    values(item)
                except Invalid as invalid:
                    invalid.path.append(f"[{key!r}]")
                    raise

        return check

    def _union(self, branches: list[Any]) -> Validator:
        nullable = "null" in branches
        others = [branch for branch in branches if branch != "null"]
        shown = "[" + ", ".join(_branch_name(branch) for branch in branches) + "]"
        if nullable and len(others) == 1:
            only = self.compile(others[0])

            def check_optional(value: Any) -> None:
                if value is not None:
                    only(value)

            return check_optional

        # a cheap type guard picks the candidate branches, so that no exception is raised on the way to the
        # right one (a float in [null, boolean, long, double] must not pay for two failed checks)
        candidates = [(self._guard(branch), self.compile(branch)) for branch in others]

        def check(value: Any) -> None:
            if value is None and nullable:
                return
            failures: list[Invalid] = []
            for guard, validate in candidates:
                if guard(value):
                    try:
                        validate(value)
                    except Invalid as invalid:
                        failures.append(invalid)
                        continue
                    return
            if len(failures) == 1:
                raise failures[0]  # one branch of the right shape: its precise complaint
            raise Invalid(f"{_shown(value)} ({type(value).__name__}) matches no branch of union {shown}")

        return check

    def _guard(self, node: Any) -> Callable[[Any], bool]:
        """Whether a value has the Python shape of a branch (not whether it is valid for it)."""
        node = self.schema.deref(node)
        if isinstance(node, str):
            kind, logical = node, None
        else:
            kind = node["type"]
            logical = node.get("logicalType")
            node = self.schema.deref(kind) if isinstance(kind, str) and kind in self.schema.names else node
            kind = node["type"] if isinstance(node, dict) else kind
        extras = _LOGICAL_EXTRAS.get(logical or "", ())
        shapes: dict[str, tuple[type, ...]] = {
            "string": (str, *extras),
            "enum": (str,),
            "bytes": (bytes, bytearray, *extras),
            "fixed": (bytes, bytearray),
            "array": (list, tuple),
            "map": (Mapping,),
            "record": (Mapping,),
            "error": (Mapping,),
        }
        if kind in shapes:
            types = shapes[kind]
            return lambda value: isinstance(value, types)
        if kind == "boolean":
            return lambda value: value is True or value is False
        if kind in ("int", "long", "float", "double"):
            numeric = (int,) if kind in ("int", "long") else (int, float)
            return lambda value: (
                (isinstance(value, numeric) and not isinstance(value, bool))
                or (bool(extras) and isinstance(value, extras))
            )
        return lambda value: value is None


def _branch_name(branch: Any) -> str:
    if isinstance(branch, str):
        return branch
    return str(branch.get("name") or branch["type"])


def _check_null(value: Any) -> None:
    if value is not None:
        raise Invalid(f"expected null, got {_shown(value)}")


def _check_boolean(value: Any) -> None:
    if value is not True and value is not False:
        raise Invalid(f"expected a boolean, got {_shown(value)} ({type(value).__name__})")


def _integer(kind: str, extras: tuple[type, ...]) -> Validator:
    low, high = _INT_RANGE[kind]

    def check(value: Any) -> None:
        if type(value) is int or (isinstance(value, int) and not isinstance(value, bool)):
            if not low <= value <= high:
                raise Invalid(f"{value} is out of range for {kind}")
        elif not (extras and isinstance(value, extras)):
            raise Invalid(f"expected {kind}, got {_shown(value)} ({type(value).__name__})")

    return check


def _number(kind: str, extras: tuple[type, ...]) -> Validator:
    def check(value: Any) -> None:
        if type(value) is float or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            return
        if not (extras and isinstance(value, extras)):
            raise Invalid(f"expected {kind}, got {_shown(value)} ({type(value).__name__})")

    return check


def _uuid_string(value: Any) -> None:
    if isinstance(value, uuid.UUID):
        return
    if not isinstance(value, str):
        raise Invalid(f"expected a UUID string, got {_shown(value)} ({type(value).__name__})")
    if _UUID.fullmatch(value) is None:
        raise Invalid(f"{_shown(value)} is not a UUID (8-4-4-4-12 hex digits)")


def _instance(types: type | tuple[type, ...], kind: str, extras: tuple[type, ...]) -> Validator:
    accepted = (types if isinstance(types, tuple) else (types,)) + extras

    def check(value: Any) -> None:
        if not isinstance(value, accepted):
            raise Invalid(f"expected {kind}, got {_shown(value)} ({type(value).__name__})")

    return check
