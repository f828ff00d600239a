"""vatic's error taxonomy: every error says what the caller should do next.

Callers never parse messages; they catch one of three classes:

* :class:`Retryable` - an outage, a timeout, a model that is not ready. Retry with backoff within a budget;
  when the budget is spent, fail (the Flink task restarts from its checkpoint; REST answers 503/504).
  An outage is never dead-lettered.
* :class:`DataError` - this event or request is bad and will stay bad: dead-letter it on the stream, answer
  4xx on REST. Retrying cannot help.
* :class:`ConfigError` - the deployment is wrong (missing topic, bad endpoint, unknown model). Stop with a
  message that says what to fix.

The taxonomy lives here, in the bottom layer that imports nothing else of vatic, so that every layer (the
codec included) can raise it. :mod:`vatic.connectors.errors` re-exports it for clients of outside systems.
"""

from __future__ import annotations


class VaticError(Exception):
    """Base of every error vatic raises on purpose.

    ``stage`` names the pipeline stage that failed (``decode``, ``enrich``, ``infer``, ``encode``,
    ``produce``) when known; it is copied into dead-letter records.
    """

    stage: str | None = None

    def __init__(self, message: str, *, stage: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if stage is not None:
            self.stage = stage

    @property
    def error_class(self) -> str:
        """The class name as written into dead-letter records and REST error bodies."""
        return type(self).__name__


class Retryable(VaticError):
    """Transient: retry with backoff, then fail loudly. Never dead-letter."""

    #: Seconds the server asked us to wait (``Retry-After``), when it said so.
    retry_after: float | None = None


class DataError(VaticError):
    """This input is bad and retrying cannot fix it: dead-letter it (stream) or answer 4xx (REST)."""


class ConfigError(VaticError):
    """The deployment is misconfigured: stop and tell the operator what to fix."""


class SchemaError(DataError):
    """Base of codec errors about one record."""


class DecodeError(SchemaError):
    """Bytes that are not a valid record: bad magic byte, truncated payload, unreadable Avro.

    ``raw`` holds the undecodable bytes exactly as received, so that they can be dead-lettered untouched.
    """

    stage = "decode"

    def __init__(self, message: str, raw: bytes, *, schema_id: int | None = None) -> None:
        super().__init__(message)
        self.raw = raw
        self.schema_id = schema_id


class UnknownSchemaError(DecodeError):
    """The writer schema id is not known to the schema source (or cannot be resolved by our reader)."""


class EncodeError(SchemaError):
    """A record that does not match its schema (missing field, wrong type)."""

    stage = "encode"


class IncompatibleSchemaError(ConfigError):
    """A new schema version breaks the subject's compatibility rule; registration is refused."""

    def __init__(self, message: str, *, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class SchemaSourceUnavailable(Retryable):
    """The schema registry cannot be reached right now (registry outages are transient, never data errors)."""


class InvalidSchemaError(ConfigError):
    """A document that is not a valid Avro schema, or a schema vatic cannot use (e.g. one with references).

    Raised when parsing, registering or checking such a schema; the schema was written by someone, not sent by
    the stream, so this is a deployment problem.
    """


class SchemaNotFound(ConfigError):
    """A schema source has no such subject, version or schema id (or the schema is not registered under it).

    The codec turns an unknown writer schema id met while decoding into :class:`UnknownSchemaError` (a data
    error carrying the raw bytes); everywhere else a missing schema means the deployment is incomplete.
    """

    def __init__(
        self,
        message: str,
        *,
        subject: str | None = None,
        version: int | None = None,
        schema_id: int | None = None,
    ) -> None:
        super().__init__(message)
        self.subject = subject
        self.version = version
        self.schema_id = schema_id
