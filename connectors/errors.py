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
    InvalidSchemaError,
    Retryable,
    SchemaError,
    SchemaNotFound,
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
    "InvalidSchemaError",
    "MissingFeatures",
    "ModelNotFound",
    "ModelNotReady",
    "ModelRejected",
    "ModelServerUnavailable",
    "RecordTooLarge",
    "Retryable",
    "SchemaError",
    "SchemaNotFound",
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
    """Connect error, reset connection or a 5xx from the model server.

    ``status`` and ``body`` are set when the server answered (a 5xx), None when it could not be reached: a
    server that answers 500 to one input while it is otherwise healthy may have been handed a poison input.
    """

    stage = "infer"

    def __init__(
        self,
        message: str,
        *,
        service: str,
        retry_after: float | None = None,
        status: int | None = None,
        body: str | None = None,
    ) -> None:
        super().__init__(message, service=service, retry_after=retry_after)
        self.status = status
        self.body = body


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


# --- feature client: entity keys ----------------------------------------------------------------------------


class InvalidEntityKey(DataError):
    """Entity keys that cannot be looked up (a join key missing, ``None`` or of the wrong type).

    ``problems`` maps the index of each bad entity in the request batch to what is wrong with it, so that a
    micro-batch can dead-letter exactly those events and look the others up again.
    """

    stage = "enrich"

    def __init__(self, message: str, *, problems: dict[int, str]) -> None:
        super().__init__(message)
        self.problems = problems


# --- model registry -----------------------------------------------------------------------------------------


class ArtifactRejected(ConfigError):
    """A model artifact failed a safety check before anything was loaded from it.

    ``reason`` is one of ``digest_mismatch`` (a sha256 pin does not match), ``missing_file`` (a pinned file is
    not in the artifact), ``unpinned_pickle`` (a pickle or joblib file without a pin), ``path_escape`` (a path
    or symlink leaving the registry root) or ``unsupported_file`` (a symlinked folder, a device, a pipe).
    ``expected``/``actual`` hold the digests involved.
    """

    stage = "load"

    def __init__(
        self,
        message: str,
        *,
        path: str,
        reason: str,
        expected: str | None = None,
        actual: str | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason
        self.expected = expected
        self.actual = actual


__all__ += ["ArtifactRejected", "InvalidEntityKey"]


# --- model server client: batches and answers ---------------------------------------------------------------


class InvalidModelInput(DataError):
    """Rows that cannot be encoded into the V2 request's tensors (an input missing or ``None``, a value of the
    wrong type, a ragged list). Raised before anything is sent.

    ``problems`` maps the index of each bad row in the batch to what is wrong with it, so that a micro-batch can
    dead-letter exactly those events and send the others again.
    """

    stage = "infer"

    def __init__(self, message: str, *, problems: dict[int, str]) -> None:
        super().__init__(message)
        self.problems = problems


class UnexpectedModelResponse(ConfigError):
    """The model server gave an answer that a V2 server does not give to a well-formed call: a 2xx body that is
    not a V2 response, outputs that do not split into the request's rows, 401/403 (credentials), or 404/405 on
    a server endpoint (the URL is not a V2 server). Retrying cannot fix it and the event is not at fault: the
    endpoint, the credentials or the model's contract is wrong. ``status`` and ``body`` keep the answer.
    """

    stage = "infer"

    def __init__(self, message: str, *, status: int, body: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


__all__ += ["InvalidModelInput", "UnexpectedModelResponse"]


class ModelFailedOnInput(DataError):
    """The model server failed (5xx) on this one input, again and again, while it answered other inputs and its
    health checks: a poison input. Dead-letter it with ``attempts`` and the server's last answer."""

    stage = "infer"

    def __init__(self, message: str, *, attempts: int, status: int | None, body: str | None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.status = status
        self.body = body


__all__ += ["ModelFailedOnInput"]
