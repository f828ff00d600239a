"""Avro records in the Confluent wire format: ``0x00``, 4-byte big-endian schema id, schemaless Avro body.

:class:`AvroCodec` binds one subject and one schema. That schema is the *writer* schema of :meth:`encode` and
the *reader* schema of :meth:`decode`: records written with any schema that resolves to it (an older or newer
version, by Avro's resolution rules) decode into its shape.

Errors, by the taxonomy of :mod:`vatic.schemas.errors`:

* :meth:`decode` raises :class:`DecodeError` (``.raw`` = the exact input bytes) for an empty or short payload,
  a wrong magic byte, a truncated or unreadable body, or trailing bytes; :class:`UnknownSchemaError` (a
  DecodeError) when the id is unknown to the source or the writer schema cannot be resolved to the reader
  schema. Both are data errors: dead-letter the record. :class:`SchemaSourceUnavailable` (Retryable) when the
  source cannot be reached to look the id up: never dead-letter on that.
* :meth:`encode` raises :class:`EncodeError` naming the offending field. The first encode registers (or looks
  up) the schema and may raise :class:`SchemaSourceUnavailable`, :class:`IncompatibleSchemaError` or
  :class:`SchemaNotFound` (lookup without auto-registration).

Caching: the codec's own schema id is obtained once; writer schemas are fetched and resolved once per id and
kept for the life of the codec (ids are immutable); an id the source does not know is remembered as unknown
for ``unknown_id_ttl_s`` seconds, so a burst of records with a bad id does not hammer the registry. Schemas
are parsed once, never per record.

Thread safety: a codec may be shared by threads; its caches are filled idempotently.
"""

from __future__ import annotations

import copy
import json
import struct
import threading
import time
from collections.abc import Mapping
from io import BytesIO
from typing import Any

import fastavro

from vatic.schemas import compat
from vatic.schemas._validator import Invalid, compile_validator
from vatic.schemas.canonical import AvroSchema, canonical_json, normalize, without_logical_types
from vatic.schemas.errors import (
    ConfigError,
    DecodeError,
    EncodeError,
    InvalidSchemaError,
    SchemaNotFound,
    UnknownSchemaError,
)
from vatic.schemas.source import SchemaSource

__all__ = ["HEADER_SIZE", "MAGIC_BYTE", "AvroCodec", "frame", "schema_id_of"]

MAGIC_BYTE = 0
HEADER_SIZE = 5
_HEADER = struct.Struct(">BI")

# (writer schema, reader schema or None when writer and reader are the same schema)
_Plan = tuple[Any, Any]


def frame(schema_id: int, body: bytes) -> bytes:
    """A Confluent wire-format payload: magic byte, ``schema_id`` (big-endian uint32), ``body``."""
    return _HEADER.pack(MAGIC_BYTE, schema_id) + body


def schema_id_of(data: bytes) -> int:
    """The schema id in a wire-format payload's header; DecodeError (``raw=data``) when there is none."""
    if not data or len(data) < HEADER_SIZE:
        raise DecodeError(
            f"payload of {len(data) if data else 0} bytes is shorter than the {HEADER_SIZE}-byte Confluent header",
            raw=bytes(data) if data else b"",
        )
    magic, schema_id = _HEADER.unpack_from(data)
    if magic != MAGIC_BYTE:
        raise DecodeError(f"magic byte is 0x{data[0]:02x}, not 0x00: not Confluent-framed Avro", raw=bytes(data))
    return int(schema_id)


class AvroCodec:
    """Encode and decode records of one subject; see the module docstring for errors and caching.

    ``schema`` must be a record schema. ``auto_register=False`` looks the schema up instead of registering it
    (production producers whose schemas are registered by CI). Records are always type-checked; a field
    without a default must be present; ``strict=True`` also rejects keys the schema lacks (``False`` ignores
    them). ``logical_types=False`` (the default) decodes ``timestamp-millis`` as epoch-millisecond ints and
    ``uuid`` as strings, so decoded records re-encode unchanged and serialise to JSON; ``True`` yields
    ``datetime``/``UUID``/``Decimal`` objects. :meth:`encode` accepts either form. The codec keeps its own
    copy of ``schema``.
    """

    def __init__(
        self,
        source: SchemaSource,
        subject: str,
        schema: AvroSchema,
        *,
        auto_register: bool = True,
        strict: bool = True,
        logical_types: bool = False,
        unknown_id_ttl_s: float = 30.0,
    ) -> None:
        normal = normalize(schema)
        root = normal.deref(normal.root)
        if not isinstance(root, dict) or root.get("type") not in ("record", "error"):
            raise InvalidSchemaError(f"AvroCodec needs a record schema, got {json.dumps(schema)[:80]}")
        self.source = source
        self.subject = subject
        self.schema: AvroSchema = copy.deepcopy(schema)
        self.auto_register = auto_register
        self.strict = strict
        self.logical_types = logical_types
        self.unknown_id_ttl_s = unknown_id_ttl_s
        self._name = str(root["name"])
        self._canonical = canonical_json(self.schema)
        self._short_name = self._name.rpartition(".")[2]
        self._validate = compile_validator(normal, allow_extra_fields=not strict)
        self._writer = fastavro.parse_schema(normal.root)
        self._reader = self._writer if logical_types else fastavro.parse_schema(without_logical_types(normal.root))
        self._lock = threading.Lock()
        self._header: bytes | None = None
        self._plans: dict[int, _Plan] = {}
        self._unresolvable: dict[int, str] = {}  # id -> why; permanent (an id's schema never changes)
        self._unknown: dict[int, float] = {}  # id -> monotonic time until which it is taken as unknown
        self._unknown_why: dict[int, str] = {}  # id -> what the source said about it

    @property
    def schema_id(self) -> int:
        """The id of this codec's schema in the source, registered (or looked up) on first use."""
        schema_id: int = _HEADER.unpack(self._header or self._ensure_header())[1]
        return schema_id

    def encode(self, record: Mapping[str, Any], *, validate: bool = True) -> bytes:
        """Wire-format bytes of ``record``; EncodeError (naming the field path) when it does not match.

        Values are type-checked exactly before writing (fastavro alone would coerce ``None`` to ``False``
        or truncate ``1.5`` to ``1``); see :mod:`vatic.schemas._validator` for what each type accepts.
        ``validate=False`` skips that check for records a program built with the schema's types (the streaming
        job's prediction and dead-letter records); fastavro still refuses what it cannot write at all.
        """
        try:
            if validate:
                self._validate(record)  # first: a bad record is a data error even while the source is down
        except Invalid as invalid:
            raise EncodeError(
                f"record does not match {self._name} (subject {self.subject}): {invalid.describe(self._short_name)}"
            ) from None
        header = self._header or self._ensure_header()
        out = BytesIO()
        out.write(header)
        try:
            fastavro.schemaless_writer(out, self._writer, record)
        except Exception as exc:  # the validator should have caught it; keep the taxonomy if it did not
            raise EncodeError(f"cannot encode record as {self._name}: {type(exc).__name__}: {exc}") from exc
        return out.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        """The record in a wire-format payload, in the shape of this codec's schema."""
        size = len(data) if data else 0
        if size < HEADER_SIZE or data[0] != MAGIC_BYTE:
            schema_id_of(data)  # raises the precise DecodeError
        schema_id: int = _HEADER.unpack_from(data)[1]
        plan = self._plans.get(schema_id)
        if plan is None:
            plan = self._plan(schema_id, data)
        body = BytesIO(data)
        body.seek(HEADER_SIZE)
        try:
            record = fastavro.schemaless_reader(body, plan[0], plan[1])
        except Exception as exc:  # EOFError, IndexError, UnicodeDecodeError, SchemaResolutionError, ...
            raise DecodeError(
                f"unreadable Avro body for schema id {schema_id} ({self._name}): {type(exc).__name__}: {exc}",
                raw=bytes(data),
                schema_id=schema_id,
            ) from exc
        if body.tell() != size:
            raise DecodeError(
                f"{size - body.tell()} trailing bytes after the Avro body (schema id {schema_id}, {self._name})",
                raw=bytes(data),
                schema_id=schema_id,
            )
        if not isinstance(record, dict):
            raise DecodeError(f"schema id {schema_id} does not describe a record", raw=bytes(data), schema_id=schema_id)
        return record

    # -- internals -----------------------------------------------------------------------------------------

    def _ensure_header(self) -> bytes:
        with self._lock:
            if self._header is None:
                if self.auto_register:
                    schema_id = self.source.register(self.subject, self.schema)
                else:
                    schema_id = self.source.lookup(self.subject, self.schema).schema_id
                self._plans[schema_id] = (self._reader, None)
                self._header = _HEADER.pack(MAGIC_BYTE, schema_id)
            return self._header

    def _plan(self, schema_id: int, data: bytes) -> _Plan:
        """Fetch and resolve the writer schema of ``schema_id``; raise UnknownSchemaError if impossible."""
        why = self._unresolvable.get(schema_id)
        if why is None and self._unknown.get(schema_id, 0.0) > time.monotonic():
            why = self._unknown_why.get(schema_id, f"schema id {schema_id} is unknown")
        if why is None:
            try:
                writer = self.source.get_schema(schema_id)
            except SchemaNotFound as exc:
                self._unknown[schema_id] = time.monotonic() + self.unknown_id_ttl_s
                why = self._unknown_why[schema_id] = f"schema id {schema_id} is unknown: {exc.message}"
            except InvalidSchemaError as exc:
                why = self._unresolvable[schema_id] = f"schema id {schema_id} is unusable: {exc.message}"
            else:
                plan, why = self._resolve(schema_id, writer)
                if plan is not None:
                    self._plans[schema_id] = plan
                    return plan
        raise UnknownSchemaError(why, raw=bytes(data), schema_id=schema_id)

    def _resolve(self, schema_id: int, writer: AvroSchema) -> tuple[_Plan | None, str]:
        try:
            if canonical_json(writer) == self._canonical:
                return (self._reader, None), ""
            problems = compat.resolution_problems(self.schema, writer)
            if problems:
                why = f"writer schema id {schema_id} cannot be read as {self._name}: " + "; ".join(problems)
                self._unresolvable[schema_id] = why
                return None, why
            normal = normalize(writer).root
            parsed = fastavro.parse_schema(normal if self.logical_types else without_logical_types(normal))
        except (InvalidSchemaError, ConfigError) as exc:
            why = self._unresolvable[schema_id] = f"schema id {schema_id} is unusable: {exc.message}"
            return None, why
        return (parsed, self._reader), ""
