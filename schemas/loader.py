"""The Avro schemas shipped with vatic (``avro/<name>.avsc``, package data) and fastavro parsing.

``load_schema`` returns a fresh dict on every call (callers may change it); the file text is read once.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import fastavro

from vatic.schemas.canonical import AvroSchema, validate
from vatic.schemas.errors import ConfigError

__all__ = ["load_schema", "parse", "schema_names"]

_SUFFIX = ".avsc"


@cache
def _texts() -> dict[str, str]:
    folder = resources.files("vatic.schemas").joinpath("avro")
    return {
        entry.name.removesuffix(_SUFFIX): entry.read_text(encoding="utf-8")
        for entry in folder.iterdir()
        if entry.name.endswith(_SUFFIX)
    }


def schema_names() -> list[str]:
    """Names of the shipped schemas (file names without ``.avsc``), sorted."""
    return sorted(_texts())


def load_schema(name: str) -> dict[str, Any]:
    """The parsed JSON of ``avro/<name>.avsc``; ConfigError for an unknown name."""
    text = _texts().get(name)
    if text is None:
        raise ConfigError(f"no Avro schema named {name!r} (known: {', '.join(schema_names())})")
    schema: dict[str, Any] = json.loads(text)
    return schema


def parse(schema: AvroSchema) -> Any:
    """fastavro's parsed form of a schema document; InvalidSchemaError when it is not valid Avro.

    Parse once and reuse the result: it is what fastavro's readers and writers take.
    """
    validate(schema)
    return fastavro.parse_schema(schema)
