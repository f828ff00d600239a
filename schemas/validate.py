"""Exact validation of a record against an Avro schema, without encoding it (request validation on REST).

The same checks the codec runs before every encode, so that a record accepted over REST is one the stream
would accept too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from vatic.schemas._validator import Invalid, compile_validator
from vatic.schemas.canonical import AvroSchema, normalize
from vatic.schemas.errors import InvalidRecord


def record_validator(schema: AvroSchema, *, allow_extra_fields: bool = False) -> Callable[[Mapping[str, Any]], None]:
    """A function that returns None for a valid record and raises :class:`InvalidRecord` otherwise."""
    normal = normalize(schema)
    check = compile_validator(normal, allow_extra_fields=allow_extra_fields)
    name = str(normal.root.get("name", "record")) if isinstance(normal.root, dict) else "record"
    short = name.rsplit(".", 1)[-1]

    def validate(record: Mapping[str, Any]) -> None:
        try:
            check(record)
        except Invalid as invalid:
            field = "".join(reversed(invalid.path)).lstrip(".")
            named = re.search(r"field '([^']+)'|fields not in the schema: (\S+)", invalid.problem)
            if named:  # a missing or unexpected field is reported on the record: name it
                field = ".".join(p for p in (field, named.group(1) or named.group(2).rstrip(",")) if p)
            raise InvalidRecord(invalid.describe(short), field=field or "(record)", problem=invalid.problem) from None

    return validate
