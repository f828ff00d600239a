"""Errors raised by vatic's clients of outside systems, sorted by what the caller should do.

The three roots come from :mod:`vatic.schemas.errors` (the bottom layer) and are re-exported here:

=================  ==========================================  ==================================
root               stream                                      REST
=================  ==========================================  ==================================
``Retryable``      retry with backoff in a budget, then fail   503 (+ Retry-After) / 504 deadline
``DataError``      dead-letter record (stage, error, attempts)  4xx with a JSON body
``ConfigError``    stop the job with the message               500-free: 404 / startup failure
=================  ==========================================  ==================================

Each subclass below names one cause; callers catch the root.
"""

from __future__ import annotations

from vatic.schemas.errors import (
    ConfigError,
    DataError,
    DecodeError,
    EncodeError,
    IncompatibleSchemaError,
    Retryable,
    SchemaError,
    SchemaSourceUnavailable,
    UnknownSchemaError,
    VaticError,
)

__all__ = [
    "ConfigError",
    "DataError",
    "DeadlineExceeded",
    "DecodeError",
    "DeliveryFailed",
    "EncodeError",
    "FeatureStoreUnavailable",
    "IncompatibleSchemaError",
    "MissingFeatures",
    "ModelNotFound",
    "ModelNotReady",
    "ModelRejected",
    "ModelServerUnavailable",
    "RecordTooLarge",
    "Retryable",
    "SchemaError",
    "SchemaSourceUnavailable",
    "ServiceUnavailable",
    "TopicNotFound",
    "UnknownSchemaError",
    "VaticError",
]


class ServiceUnavailable(Retryable):
    """An outside service is down, refusing connections or answering 5xx."""

    def __init__(self, message: str, *, service: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.service = service
        self.retry_after = retry_after


class DeadlineExceeded(Retryable):
    """The call did not finish within its deadline (REST maps this to 504)."""

    def __init__(self, message: str, *, deadline_s: float) -> None:
        super().__init__(message)
        self.deadline_s = deadline_s


# --- model server (V2 / Open Inference protocol) ---------------------------------------------------------


class ModelServerUnavailable(ServiceUnavailable):
    """Connect error, reset connection or a 5xx from the model server."""

    stage = "infer"


class ModelNotReady(Retryable):
    """The model exists but is loading or reloading (MLServer answers 400 ``ModelNotReady``; KServe 503)."""

    stage = "infer"

    def __init__(self, message: str, *, model: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.model = model
        self.retry_after = retry_after


class ModelRejected(DataError):
    """The model server refused this input (4xx other than not-ready): dead-letter it.

    ``status`` and ``body`` keep the server's answer for the dead-letter record.
    """

    stage = "infer"

    def __init__(self, message: str, *, status: int, body: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class ModelNotFound(ConfigError):
    """No such model (or version) on the model server: the service config points at the wrong model."""

    stage = "infer"

    def __init__(self, message: str, *, model: str, version: str | None = None) -> None:
        super().__init__(message)
        self.model = model
        self.version = version


# --- feature store ------------------------------------------------------------------------------------------


class FeatureStoreUnavailable(ServiceUnavailable):
    """The online store (Redis, SQLite) failed or timed out: an outage, never a feature miss."""

    stage = "enrich"


class MissingFeatures(DataError):
    """A required feature is missing or stale for an entity and its policy is ``reject``."""

    stage = "enrich"

    def __init__(self, message: str, *, missing: dict[str, str]) -> None:
        super().__init__(message)
        #: feature reference -> Feast status (``NOT_FOUND``, ``OUTSIDE_MAX_AGE``, ``NULL_VALUE``)
        self.missing = missing


# --- Kafka --------------------------------------------------------------------------------------------------


class DeliveryFailed(Retryable):
    """A produced record was not acknowledged (broker down, timeout). Nothing may be committed past it."""

    stage = "produce"

    def __init__(self, message: str, *, topic: str, code: str) -> None:
        super().__init__(message)
        self.topic = topic
        self.code = code


class RecordTooLarge(DataError):
    """The record exceeds the broker's or topic's size limit: dead-letter a truncated copy instead."""

    stage = "produce"

    def __init__(self, message: str, *, topic: str, size: int) -> None:
        super().__init__(message)
        self.topic = topic
        self.size = size


class TopicNotFound(ConfigError):
    """The topic does not exist (and auto-creation is off) or we are not authorised to write it."""

    stage = "produce"

    def __init__(self, message: str, *, topic: str) -> None:
        super().__init__(message)
        self.topic = topic
