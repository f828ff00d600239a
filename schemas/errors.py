"""vatic's one error tree: every error vatic raises on purpose, sorted by what the caller does next.

Callers never parse messages; they catch one of the three roots. ``stage`` says where an error happened
(``decode``, ``enrich``, ``infer``, ``encode``, ``produce``, ``load``) and ``error_class`` (the class name) is what
dead-letter records and REST/gRPC error bodies carry, so the names below are part of vatic's wire contract::

    VaticError
    |
    +-- Retryable                  an outage, a timeout, a model not ready: retry with backoff within a budget,
    |   |                          then fail (the Flink task restarts from its checkpoint; REST 503 + Retry-After)
    |   +-- ServiceUnavailable
    |   |   +-- ModelServerUnavailable
    |   |   +-- FeatureStoreUnavailable
    |   +-- DeadlineExceeded       (REST 504, gRPC DEADLINE_EXCEEDED)
    |   +-- ModelNotReady
    |   +-- DeliveryFailed
    |   +-- SchemaSourceUnavailable
    |
    +-- DataError                  this event or request is bad and stays bad: dead-letter it (stream),
    |   |                          answer 4xx with a JSON body (REST), INVALID_ARGUMENT (gRPC). Never retried.
    |   +-- SchemaError
    |   |   +-- DecodeError
    |   |   |   +-- UnknownSchemaError
    |   |   +-- EncodeError
    |   |       +-- InvalidRecord
    |   +-- BinaryFormatError
    |   +-- InvalidEntityKey
    |   +-- MissingEntityKey
    |   +-- MissingFeatures
    |   +-- InputProblem
    |   +-- ModelRejected
    |   +-- ModelFailedOnInput
    |   +-- OutputProblem
    |   +-- RecordTooLarge
    |   +-- ServiceNotFound        (REST 404, gRPC NOT_FOUND)
    |
    +-- ConfigError                the deployment is wrong: stop with a message that says what to fix
        +-- AccessDenied           an outside system refused our identity, or a grant (ACL) is missing
        |   +-- CredentialsRejected
        |   +-- UntrustedCertificate
        |       +-- ModelServerUntrusted
        +-- ConfigFileError
        +-- InvalidSchemaError
        +-- IncompatibleSchemaError
        +-- SchemaNotFound
        +-- ModelNotFound
        +-- UnexpectedModelResponse
        +-- TopicNotFound
        +-- ArtifactRejected
        +-- ArtifactsMissing
        +-- ManifestInvalid
        +-- MissingArtifact        (local stack: a jar or distribution not downloaded)
        +-- MissingDependency      (local stack: java, redis-server not installed)
        +-- PortInUse              (local stack)
        +-- StartFailed            (local stack)

An outage is never dead-lettered and a bad event never fails the job. The tree lives in the bottom layer, which
imports nothing else of vatic, so every layer (the Avro codec included) raises from it. Parse errors that never
leave their module (the V2 wire's ``WireError``, the model contract's ``BadInput``) are turned into one of these
at the door that meets them.
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "ArtifactRejected",
    "ArtifactsMissing",
    "BinaryFormatError",
    "ConfigError",
    "ConfigFileError",
    "CredentialsRejected",
    "DataError",
    "DeadlineExceeded",
    "DecodeError",
    "DeliveryFailed",
    "EncodeError",
    "FeatureStoreUnavailable",
    "IncompatibleSchemaError",
    "InputProblem",
    "InvalidEntityKey",
    "InvalidRecord",
    "InvalidSchemaError",
    "ManifestInvalid",
    "MissingArtifact",
    "MissingDependency",
    "MissingEntityKey",
    "MissingFeatures",
    "ModelFailedOnInput",
    "ModelNotFound",
    "ModelNotReady",
    "ModelRejected",
    "ModelServerUnavailable",
    "ModelServerUntrusted",
    "OutputProblem",
    "PortInUse",
    "RecordTooLarge",
    "Retryable",
    "SchemaError",
    "SchemaNotFound",
    "SchemaSourceUnavailable",
    "ServiceNotFound",
    "ServiceUnavailable",
    "StartFailed",
    "TopicNotFound",
    "UnexpectedModelResponse",
    "UnknownSchemaError",
    "UntrustedCertificate",
    "VaticError",
]


class VaticError(Exception):
    """Base of every error vatic raises on purpose.

    ``stage`` names the pipeline stage that failed (``decode``, ``enrich``, ``infer``, ``encode``,
    ``produce``) when known; it is copied into dead-letter records.
    """

    stage: str | None = None
    #: the inference-graph step that failed, when the service is a graph (dead letters and REST bodies name it)
    step: str | None = None

    def __init__(self, message: str, *, stage: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if stage is not None:
            self.stage = stage

    @property
    def error_class(self) -> str:
        """The class name as written into dead-letter records and REST error bodies."""
        return type(self).__name__


# --- Retryable: retry within a budget, then fail ------------------------------------------------------------------


class Retryable(VaticError):
    """Transient: retry with backoff, then fail loudly. Never dead-letter."""

    #: Seconds the server asked us to wait (``Retry-After``), when it said so.
    retry_after: float | None = None


class ServiceUnavailable(Retryable):
    """An outside service is down, refusing connections or answering 5xx."""

    def __init__(self, message: str, *, service: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.service = service
        self.retry_after = retry_after


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


class FeatureStoreUnavailable(ServiceUnavailable):
    """The online store (Redis, SQLite) failed or timed out: an outage, never a feature miss."""

    stage = "enrich"


class DeadlineExceeded(Retryable):
    """The call did not finish within its deadline (REST maps this to 504)."""

    def __init__(self, message: str, *, deadline_s: float) -> None:
        super().__init__(message)
        self.deadline_s = deadline_s


class ModelNotReady(Retryable):
    """The model exists but is loading or reloading (MLServer answers 400 ``ModelNotReady``; KServe 503)."""

    stage = "infer"

    def __init__(self, message: str, *, model: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.model = model
        self.retry_after = retry_after


class DeliveryFailed(Retryable):
    """A produced record was not acknowledged (broker down, timeout). Nothing may be committed past it."""

    stage = "produce"

    def __init__(self, message: str, *, topic: str, code: str) -> None:
        super().__init__(message)
        self.topic = topic
        self.code = code


class SchemaSourceUnavailable(Retryable):
    """The schema registry cannot be reached right now (registry outages are transient, never data errors)."""


# --- DataError: dead-letter the event (stream) or answer 4xx (REST) -----------------------------------------------


class DataError(VaticError):
    """This input is bad and retrying cannot fix it: dead-letter it (stream) or answer 4xx (REST)."""


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


class InvalidRecord(EncodeError):
    """A record that does not match its schema. ``field`` is the path of the first bad value
    (``amount``, ``attributes['k']``); ``problem`` says what is wrong with it."""

    def __init__(self, message: str, *, field: str, problem: str) -> None:
        super().__init__(message)
        self.field = field
        self.problem = problem


class BinaryFormatError(DataError):
    """A request in the binary extension that cannot be read: a bad header length, sizes that do not add up, a
    datatype the JSON protocol cannot carry. ``field`` names the header or the input at fault."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class InvalidEntityKey(DataError):
    """Entity keys that cannot be looked up (a join key missing, ``None`` or of the wrong type).

    ``problems`` maps the index of each bad entity in the request batch to what is wrong with it, so that a
    micro-batch can dead-letter exactly those events and look the others up again.
    """

    stage = "enrich"

    def __init__(self, message: str, *, problems: dict[int, str]) -> None:
        super().__init__(message)
        self.problems = problems


class MissingEntityKey(DataError):
    """An event without one of the entity keys its features are looked up by."""

    stage = "enrich"


class MissingFeatures(DataError):
    """A required feature is missing or stale for an entity and its policy is ``reject``."""

    stage = "enrich"

    def __init__(self, message: str, *, missing: dict[str, str]) -> None:
        super().__init__(message)
        #: feature reference -> Feast status (``NOT_FOUND``, ``OUTSIDE_MAX_AGE``, ``NULL_VALUE``)
        self.missing = missing


class InputProblem(DataError):
    """An event that cannot be turned into model inputs (absent field, unknown category, wrong type)."""

    stage = "infer"


class ModelRejected(DataError):
    """The model server refused this input (4xx other than not-ready): dead-letter it.

    ``status`` and ``body`` keep the server's answer for the dead-letter record.
    """

    stage = "infer"

    def __init__(self, message: str, *, status: int, body: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class ModelFailedOnInput(DataError):
    """The model server failed (5xx) on this one input, again and again, while it answered other inputs and its
    health checks: a poison input. Dead-letter it with ``attempts`` and the server's last answer."""

    stage = "infer"

    def __init__(self, message: str, *, attempts: int, status: int | None, body: str | None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.status = status
        self.body = body


class OutputProblem(DataError):
    """The model's answer for this event does not fit the configured outputs (e.g. a class out of range)."""

    stage = "infer"


class RecordTooLarge(DataError):
    """The record exceeds the broker's or topic's size limit: dead-letter a truncated copy instead."""

    stage = "produce"

    def __init__(self, message: str, *, topic: str, size: int) -> None:
        super().__init__(message)
        self.topic = topic
        self.size = size


class ServiceNotFound(DataError):
    """The request names no service behind this gateway (REST 404 ``ServiceNotFound``; gRPC NOT_FOUND)."""


# --- ConfigError: stop and tell the operator what to fix ----------------------------------------------------------


class ConfigError(VaticError):
    """The deployment is misconfigured: stop and tell the operator what to fix."""


class ConfigFileError(ConfigError):
    """A service config that does not validate; ``lines`` has one ``file:line: problem; fix`` per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class InvalidSchemaError(ConfigError):
    """A document that is not a valid Avro schema, or a schema vatic cannot use (e.g. one with references).

    Raised when parsing, registering or checking such a schema; the schema was written by someone, not sent by
    the stream, so this is a deployment problem.
    """


class IncompatibleSchemaError(ConfigError):
    """A new schema version breaks the subject's compatibility rule; registration is refused."""

    def __init__(self, message: str, *, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


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


class ModelNotFound(ConfigError):
    """No such model (or version) on the model server: the service config points at the wrong model."""

    stage = "infer"

    def __init__(self, message: str, *, model: str, version: str | None = None) -> None:
        super().__init__(message)
        self.model = model
        self.version = version


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


class TopicNotFound(ConfigError):
    """The topic does not exist (and auto-creation is off) or we are not authorised to write it."""

    stage = "produce"

    def __init__(self, message: str, *, topic: str) -> None:
        super().__init__(message)
        self.topic = topic


class AccessDenied(ConfigError):
    """An outside system refused vatic's identity, or a permission is missing (a Kafka ACL, a Redis ACL, a
    registry role). Retrying cannot help: the message names the setting or the grant to fix and never carries a
    secret. ``service`` names the system (``kafka``, ``redis``, ``schema-registry``, ``model-server``),
    ``endpoint`` its ``host:port`` or URL when known, and ``reason`` is ``authentication``, ``tls`` or
    ``authorization``.
    """

    reason = "authorization"

    def __init__(
        self, message: str, *, service: str, endpoint: str | None = None, reason: str | None = None,
        stage: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message, stage=stage)
        self.service = service
        self.endpoint = endpoint
        if reason is not None:
            self.reason = reason


class CredentialsRejected(AccessDenied):
    """The service refused our credentials, or asked for credentials we did not send (the message names the
    variable to fix, such as ``VATIC_REDIS_PASSWORD`` or ``VATIC_KAFKA_SASL_PASSWORD``)."""

    reason = "authentication"


class UntrustedCertificate(AccessDenied):
    """A server's TLS certificate failed verification: not signed by the configured CA, expired, or not issued
    for the host name we connected to. The CA file (named in the message) or the server's certificate is wrong."""

    reason = "tls"


class ModelServerUntrusted(UntrustedCertificate):
    """An ``https://`` model server whose certificate does not verify against the CA the client trusts (an
    unknown CA, a self-signed certificate, a name that does not match, an expired certificate). ``url`` is the
    server."""

    stage = "infer"

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message, service="model-server", endpoint=url)
        self.url = url


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


class ArtifactsMissing(ConfigError):
    """The registry has no artifacts for the service's model yet (run ``vatic usecases prepare`` locally)."""


class ManifestInvalid(ConfigError):
    """A rendered manifest does not validate (a bug of the renderer or a value the config let through)."""


class MissingArtifact(ConfigError):
    """A jar or distribution the local stack needs is not in the cache (or a tool to fetch it is missing)."""


class MissingDependency(ConfigError):
    """A program the local stack needs (java, redis-server) is not installed."""


class PortInUse(ConfigError):
    """A port the local stack needs is already bound by a process that is not ours."""


class StartFailed(ConfigError):
    """A local stack component exited or did not become ready in time; the message quotes its log."""
