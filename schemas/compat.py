"""Avro schema compatibility: can a reader schema read data written with a writer schema?

:func:`resolution_problems` implements the resolution rules of the Avro specification ("Schema Resolution"),
the same rules fastavro applies when it decodes with a reader schema:

* records match when their unqualified names are equal or a reader alias is the writer's full name; every
  reader field must be found in the writer (by name or by one of the reader field's aliases) or have a
  default; writer fields the reader lacks are skipped;
* enums match by name; a writer symbol the reader lacks is an error unless the reader enum has a default;
* fixed types match by name and size; arrays and maps match when their items/values do;
* promotions: int -> long, float, double; long -> float, double; float -> double; string <-> bytes;
* a writer union is readable when each of its branches is; a reader union reads a writer type when one of its
  branches does (so ``"string"`` -> ``["null", "string"]`` is fine, the reverse is not).

Logical types are ignored, as Avro and the Confluent registry ignore them: only the underlying types resolve.

:func:`check` applies a :class:`CompatibilityLevel` to a new schema and the history of a subject. Each problem
is one human-readable line naming the path of the offending field (``Transaction.channel``); an empty list
means compatible. Invalid schemas raise :class:`~vatic.schemas.errors.InvalidSchemaError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from vatic.schemas.canonical import NAMED_TYPES, PRIMITIVES, AvroSchema, NormalSchema, normalize
from vatic.schemas.errors import ConfigError

__all__ = ["CompatibilityLevel", "check", "resolution_problems"]

_PROMOTIONS = frozenset(
    {
        ("int", "long"),
        ("int", "float"),
        ("int", "double"),
        ("long", "float"),
        ("long", "double"),
        ("float", "double"),
        ("string", "bytes"),
        ("bytes", "string"),
    }
)


class CompatibilityLevel(StrEnum):
    """Compatibility rules of a subject, as named by the Confluent Schema Registry.

    BACKWARD: the new schema reads data written with the previous one (upgrade consumers first).
    FORWARD: the previous schema reads data written with the new one (upgrade producers first).
    FULL: both. The ``_TRANSITIVE`` variants check against every earlier version, not only the latest.
    """

    NONE = "NONE"
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"

    @classmethod
    def parse(cls, value: CompatibilityLevel | str) -> CompatibilityLevel:
        """The level named by ``value`` (case-insensitive); raises ConfigError for an unknown name."""
        try:
            return cls(str(value).upper())
        except ValueError:
            known = ", ".join(level.value for level in cls)
            raise ConfigError(f"unknown compatibility level {value!r} (known: {known})") from None

    @property
    def backward(self) -> bool:
        """Whether the new schema must read data written with earlier ones."""
        return self.value.startswith(("BACKWARD", "FULL"))

    @property
    def forward(self) -> bool:
        """Whether earlier schemas must read data written with the new one."""
        return self.value.startswith(("FORWARD", "FULL"))

    @property
    def transitive(self) -> bool:
        """Whether every earlier version is checked, not only the latest."""
        return self.value.endswith("_TRANSITIVE")


def check(
    new_schema: AvroSchema,
    history: Sequence[AvroSchema],
    level: CompatibilityLevel | str,
) -> list[str]:
    """Problems that registering ``new_schema`` after ``history`` (oldest first) would break under ``level``.

    Non-transitive levels compare with ``history[-1]`` only; transitive ones with every entry. Problems are
    prefixed with which earlier schema (``previous schema 2/3``) and which direction failed. An empty
    history is compatible with anything. The new schema is validated even under ``NONE``.
    """
    resolved_level = CompatibilityLevel.parse(level)
    new = normalize(new_schema)
    if resolved_level is CompatibilityLevel.NONE or not history:
        return []
    count = len(history)
    indexes = range(count) if resolved_level.transitive else [count - 1]
    problems: list[str] = []
    for index in indexes:
        old = normalize(history[index])
        label = f"previous schema {index + 1}/{count}"
        if resolved_level.backward:
            problems += [
                f"new schema cannot read data written with {label}: {problem}"
                for problem in _Resolver(new, old).problems()
            ]
        if resolved_level.forward:
            problems += [
                f"{label} cannot read data written with the new schema: {problem}"
                for problem in _Resolver(old, new).problems()
            ]
    return problems


def resolution_problems(reader: AvroSchema, writer: AvroSchema) -> list[str]:
    """Why data written with ``writer`` cannot be read with ``reader``; empty when it can."""
    return _Resolver(normalize(reader), normalize(writer)).problems()


def describe(node: Any, schema: NormalSchema) -> str:
    """Short human-readable name of a schema node: ``long``, ``record dev.vatic.R``, ``array<string>``."""
    node = schema.deref(node) if isinstance(node, str) else node
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return "union[" + ", ".join(describe(branch, schema) for branch in node) + "]"
    kind = node["type"]
    if kind in NAMED_TYPES:
        return f"{kind} {node['name']}"
    if kind == "array":
        return f"array<{describe(node['items'], schema)}>"
    if kind == "map":
        return f"map<{describe(node['values'], schema)}>"
    return str(kind)


def _kind(node: Any) -> str:
    if isinstance(node, list):
        return "union"
    if isinstance(node, str):
        return node
    return str(node["type"])


def _short(name: str) -> str:
    return name.rpartition(".")[2]


class _Resolver:
    """One reader/writer pair; recursive named types are assumed compatible while being checked."""

    def __init__(self, reader: NormalSchema, writer: NormalSchema) -> None:
        self.reader = reader
        self.writer = writer
        self._in_progress: set[tuple[str, str]] = set()

    def problems(self) -> list[str]:
        root = self.reader.deref(self.reader.root)
        path = _short(root["name"]) if isinstance(root, dict) and "name" in root else "<root>"
        return self._check(self.reader.root, self.writer.root, path)

    def _check(self, reader_node: Any, writer_node: Any, path: str) -> list[str]:
        reader = self.reader.deref(reader_node)
        writer = self.writer.deref(writer_node)
        reader_kind, writer_kind = _kind(reader), _kind(writer)
        if writer_kind == "union":
            return self._writer_union(reader, writer, path)
        if reader_kind == "union":
            if any(not self._check(branch, writer, path) for branch in reader):
                return []
            return [
                f"{path}: reader union {describe(reader, self.reader)} has no branch that reads writer type "
                f"{describe(writer, self.writer)}"
            ]
        if reader_kind == writer_kind:
            return self._same_kind(reader, writer, reader_kind, path)
        if (writer_kind, reader_kind) in _PROMOTIONS:
            return []
        return [
            f"{path}: reader type {describe(reader, self.reader)} cannot read writer type "
            f"{describe(writer, self.writer)}"
        ]

    def _writer_union(self, reader: Any, writer: list[Any], path: str) -> list[str]:
        """Every branch the writer may have used must be readable."""
        problems: list[str] = []
        for branch in writer:
            branch_problems = self._check(reader, branch, path)
            if not branch_problems:
                continue
            if isinstance(reader, list):
                problems.append(
                    f"{path}: writer union branch {describe(branch, self.writer)} is not readable by the "
                    f"reader union {describe(reader, self.reader)}"
                )
            else:
                problems += branch_problems
        return problems

    def _same_kind(self, reader: Any, writer: Any, kind: str, path: str) -> list[str]:
        if kind in PRIMITIVES:
            return []
        if kind in ("array", "map"):
            child, suffix = ("items", "[]") if kind == "array" else ("values", "{}")
            return self._check(reader[child], writer[child], path + suffix)
        reader_name, writer_name = reader["name"], writer["name"]
        if _short(reader_name) != _short(writer_name) and writer_name not in reader.get("aliases", []):
            return [
                f"{path}: reader {kind} {reader_name} does not match writer {kind} {writer_name} "
                "(names differ and no reader alias names it)"
            ]
        if kind in _NAMED_CHECKS:
            return _NAMED_CHECKS[kind](reader, writer, path)
        key = (reader_name, writer_name)
        if key in self._in_progress:
            return []  # a recursive record: assume compatible while its first occurrence is being checked
        self._in_progress.add(key)
        try:
            return self._record(reader, writer, path)
        finally:
            self._in_progress.discard(key)

    def _record(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> list[str]:
        writer_fields = {field["name"]: field for field in writer["fields"]}
        problems: list[str] = []
        for field in reader["fields"]:
            name = field["name"]
            match = writer_fields.get(name)
            if match is None:
                match = next((writer_fields[a] for a in field.get("aliases", []) if a in writer_fields), None)
            if match is not None:
                problems += self._check(field["type"], match["type"], f"{path}.{name}")
            elif "default" not in field:
                problems.append(f"{path}.{name}: reader field has no default and the writer has no such field")
        return problems


def _fixed(reader: dict[str, Any], writer: dict[str, Any], path: str) -> list[str]:
    if reader["size"] != writer["size"]:
        return [f"{path}: fixed {reader['name']} has size {reader['size']}, the writer's has {writer['size']}"]
    return []


def _enum(reader: dict[str, Any], writer: dict[str, Any], path: str) -> list[str]:
    missing = [symbol for symbol in writer["symbols"] if symbol not in reader["symbols"]]
    if missing and "default" not in reader:
        return [f"{path}: writer enum symbols {missing} are not in reader enum {reader['name']}, which has no default"]
    return []


_NAMED_CHECKS = {"fixed": _fixed, "enum": _enum}
