"""Avro schemas (``avro/*.avsc``), the codec (fastavro + Confluent wire format) and compatibility checks.

This package imports nothing else of vatic: it is the bottom layer every other package may use.

* :func:`load_schema`, :func:`schema_names`, :func:`parse` - the shipped schemas (``transaction``,
  ``product_created``, ``prediction``, ``dead_letter``);
* :class:`AvroCodec` - Confluent wire-format encode/decode against a :class:`SchemaSource`;
* :class:`LocalSchemaStore` / :class:`InMemorySchemaStore` - embedded schema sources;
* :mod:`vatic.schemas.compat` - Avro schema resolution and compatibility levels.
"""

from vatic.schemas.codec import AvroCodec, frame, schema_id_of
from vatic.schemas.compat import CompatibilityLevel
from vatic.schemas.loader import load_schema, parse, schema_names
from vatic.schemas.source import (
    InMemorySchemaStore,
    LocalSchemaStore,
    RegisteredSchema,
    SchemaSource,
    topic_subject,
)

__all__ = [
    "AvroCodec",
    "CompatibilityLevel",
    "InMemorySchemaStore",
    "LocalSchemaStore",
    "RegisteredSchema",
    "SchemaSource",
    "frame",
    "load_schema",
    "parse",
    "schema_id_of",
    "schema_names",
    "topic_subject",
]
