"""Client of a Confluent-compatible Schema Registry (Confluent, or Apicurio's ``/apis/ccompat/v7``).

:class:`ConfluentSchemaRegistry` implements :class:`vatic.schemas.SchemaSource` over the REST API with one
pooled ``httpx.Client`` (keep-alive, connect and read timeouts). Schemas are sent in vatic's normal form
(:func:`vatic.schemas.canonical.canonical_json`), so that equal schemas always get the same id even from a
registry that deduplicates by text.

Errors (callers catch the taxonomy roots, never httpx errors):

=====================================================  ==========================================
cause                                                  raised
=====================================================  ==========================================
connection refused/reset, DNS failure, timeout,        :class:`SchemaSourceUnavailable` (Retryable;
408, 429, any 5xx                                      ``retry_after`` from ``Retry-After``)
404 with error code 40401/40402/40403/40408            :class:`SchemaNotFound`
409                                                    :class:`IncompatibleSchemaError`
422 (invalid schema / version / level), non-Avro or    :class:`InvalidSchemaError`
schema with references
401 (no or wrong credentials), 403 (not allowed)       :class:`CredentialsRejected` (a ConfigError)
a certificate that does not verify (CA, host name)     :class:`UntrustedCertificate` (a ConfigError)
any other 4xx, a URL that is not a registry            :class:`ConfigError`
=====================================================  ==========================================

Credentials and TLS (:class:`RegistryCredentials`, from the environment unless given): HTTP basic auth from
``VATIC_SCHEMA_REGISTRY_USERNAME`` / ``VATIC_SCHEMA_REGISTRY_PASSWORD`` (secret); an ``https://`` registry is
verified against ``VATIC_SCHEMA_REGISTRY_CA_FILE`` (PEM) when set, else the system CAs, host name included.
A registry URL with credentials in it (``https://user:pw@host``) is refused, and no message, ``repr`` or log
line carries the password (messages name the variables to fix).

Caching: schemas by id (immutable) and the id of each (subject, schema) registered or looked up. Versions,
latest and compatibility levels are always asked afresh. The client is safe to share between threads.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from vatic.connectors.http import cause_of, retry_after
from vatic.schemas.canonical import AvroSchema, canonical_json, validate
from vatic.schemas.compat import CompatibilityLevel
from vatic.schemas.errors import (
    ConfigError,
    CredentialsRejected,
    IncompatibleSchemaError,
    InvalidSchemaError,
    SchemaNotFound,
    SchemaSourceUnavailable,
    UntrustedCertificate,
)
from vatic.schemas.source import LocalSchemaStore, RegisteredSchema, SchemaSource

__all__ = [
    "CA_FILE_ENV",
    "CONTENT_TYPE",
    "PASSWORD_ENV",
    "REGISTRY_URL_ENV",
    "USERNAME_ENV",
    "ConfluentSchemaRegistry",
    "RegistryCredentials",
    "schema_source",
]

#: the environment variable naming the schema registry every vatic process uses (job, CLI, demo, producers)
REGISTRY_URL_ENV = "VATIC_SCHEMA_REGISTRY_URL"
USERNAME_ENV = "VATIC_SCHEMA_REGISTRY_USERNAME"
PASSWORD_ENV = "VATIC_SCHEMA_REGISTRY_PASSWORD"  # noqa: S105 - the variable's name, not a password
CA_FILE_ENV = "VATIC_SCHEMA_REGISTRY_CA_FILE"
_SERVICE = "schema-registry"

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
# subject, version, schema not found; 40408: subject has no compatibility level of its own
_NOT_FOUND_CODES = frozenset({40401, 40402, 40403, 40408})


class RegistryCredentials(BaseSettings):
    """Schema registry credentials and CA, read from ``VATIC_SCHEMA_REGISTRY_*`` (empty variables count as unset).

    ``username`` and ``password`` go together (HTTP basic auth); ``ca_file`` is the PEM CA an ``https://``
    registry's certificate must verify against (default: the system CAs).
    """

    model_config = SettingsConfigDict(env_prefix="VATIC_SCHEMA_REGISTRY_", extra="ignore", env_ignore_empty=True)

    username: str | None = None
    password: SecretStr | None = None
    ca_file: Path | None = None


def _shown(url: str) -> str:
    """``url`` without the credentials it may carry (for messages)."""
    return re.sub(r"(?<=://)[^/@]*@", "***@", url)


class ConfluentSchemaRegistry:
    """A :class:`~vatic.schemas.SchemaSource` backed by a Confluent-compatible registry.

    ``url`` is the API root (``http://registry:8081`` for Confluent, ``http://host:8080/apis/ccompat/v7`` for
    Apicurio). ``timeout_s`` bounds each read/write/pool wait, ``connect_timeout_s`` the TCP/TLS connect.
    ``credentials`` (default: :class:`RegistryCredentials` from the environment) give HTTP basic auth and the
    CA; ``auth`` (user, password) and ``verify`` (a CA file path, an ``ssl.SSLContext`` or ``False``), when
    given, take precedence over them. Nothing is sent until the first call. Raises ``ConfigError`` for a URL
    with credentials in it, a user without a password (or the reverse), or a CA file that cannot be read.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        connect_timeout_s: float = 2.0,
        auth: tuple[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        verify: bool | str | ssl.SSLContext = True,
        max_connections: int = 8,
        credentials: RegistryCredentials | None = None,
    ) -> None:
        try:
            base = httpx.URL(url.rstrip("/") + "/")
        except (httpx.InvalidURL, TypeError, ValueError):
            raise ConfigError(f"schema registry URL {_shown(url)!r} is not a valid URL") from None
        if base.scheme not in ("http", "https") or not base.host:
            raise ConfigError(f"schema registry URL {_shown(url)!r} must be an http:// or https:// URL with a host")
        if base.userinfo:
            raise ConfigError(
                f"schema registry URL {_shown(url)!r} carries credentials: take them out of the URL and set "
                f"{USERNAME_ENV} and {PASSWORD_ENV}"
            )
        self.url = str(base).rstrip("/")
        creds = credentials if credentials is not None else RegistryCredentials()
        if auth is None and (creds.username is not None or creds.password is not None):
            if creds.username is None or creds.password is None:
                given, missing = (
                    (USERNAME_ENV, PASSWORD_ENV) if creds.password is None else (PASSWORD_ENV, USERNAME_ENV)
                )
                raise ConfigError(f"{given} is set without {missing}: the schema registry's basic auth needs both")
            auth = (creds.username, creds.password.get_secret_value())
        self._user = auth[0] if auth is not None else None
        self._ca_file: str | None = verify if isinstance(verify, str) else None
        if verify is True and creds.ca_file is not None:
            path = creds.ca_file.expanduser()
            if not path.is_file():
                raise ConfigError(f"{CA_FILE_ENV}={creds.ca_file} is not a readable file")
            self._ca_file = str(path.resolve())
        if isinstance(verify, str) or self._ca_file is not None:
            ca = self._ca_file or str(verify)
            try:
                verify = ssl.create_default_context(cafile=ca)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"schema registry CA file {ca} cannot be loaded: {exc}") from exc
        self._client = httpx.Client(
            base_url=base,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"Accept": f"{CONTENT_TYPE}, application/json", **(headers or {})},
            auth=auth,
            verify=verify,
            follow_redirects=False,
        )
        self._lock = threading.Lock()
        self._schemas: dict[int, str] = {}  # id -> schema text
        self._ids: dict[tuple[str, str], int] = {}  # (subject, canonical text) -> id

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- SchemaSource ------------------------------------------------------------------------------------------

    def get_schema(self, schema_id: int) -> AvroSchema:
        """GET /schemas/ids/{id}; cached. SchemaNotFound for an unknown id, InvalidSchemaError if not Avro."""
        text = self._schemas.get(schema_id)
        if text is None:
            body = self._call("GET", f"/schemas/ids/{int(schema_id)}", what=f"schema id {schema_id}")
            text = self._avro_text(body, f"schema id {schema_id}")
            with self._lock:
                self._schemas[schema_id] = text
        return self._loads(text, f"schema id {schema_id}")

    def register(self, subject: str, schema: AvroSchema) -> int:
        """POST /subjects/{subject}/versions; returns the id (cached per subject and schema)."""
        text = self._canonical(schema)
        cached = self._ids.get((subject, text))
        if cached is not None:
            return cached
        body = self._call("POST", f"/subjects/{_q(subject)}/versions", {"schema": text}, what=f"subject {subject!r}")
        schema_id = self._int(body, "id")
        with self._lock:
            self._ids[(subject, text)] = schema_id
            self._schemas.setdefault(schema_id, text)
        return schema_id

    def lookup(self, subject: str, schema: AvroSchema) -> RegisteredSchema:
        """POST /subjects/{subject}: the version holding ``schema``; SchemaNotFound when none does."""
        text = self._canonical(schema)
        body = self._call("POST", f"/subjects/{_q(subject)}", {"schema": text}, what=f"subject {subject!r}")
        registered = self._registered(body, subject)
        with self._lock:
            self._ids[(subject, text)] = registered.schema_id
        return registered

    def latest(self, subject: str) -> RegisteredSchema:
        """GET /subjects/{subject}/versions/latest."""
        return self.get_version(subject, "latest")

    def get_version(self, subject: str, version: int | str) -> RegisteredSchema:
        """GET /subjects/{subject}/versions/{version} (``version`` may be ``"latest"``)."""
        path = f"/subjects/{_q(subject)}/versions/{_q(str(version))}"
        body = self._call("GET", path, what=f"subject {subject!r} version {version}")
        return self._registered(body, subject)

    def versions(self, subject: str) -> list[int]:
        """GET /subjects/{subject}/versions, ascending."""
        body = self._call("GET", f"/subjects/{_q(subject)}/versions", what=f"subject {subject!r}")
        if not isinstance(body, list) or not all(isinstance(v, int) for v in body):
            raise ConfigError(f"{self.url}: unexpected versions answer {body!r}")
        return sorted(body)

    def get_compatibility(self, subject: str) -> CompatibilityLevel:
        """GET /config/{subject}?defaultToGlobal=true: the subject's level, else the registry's default
        (GET /config, asked when the registry knows no such subject: Apicurio answers 404 then).
        """
        try:
            body = self._call(
                "GET", f"/config/{_q(subject)}", params={"defaultToGlobal": "true"}, what=f"subject {subject!r}"
            )
        except SchemaNotFound:
            body = self._call("GET", "/config", what="the global config")
        if not isinstance(body, dict) or "compatibilityLevel" not in body:
            raise ConfigError(f"{self.url}: unexpected config answer {body!r}")
        return CompatibilityLevel.parse(body["compatibilityLevel"])

    def set_compatibility(self, subject: str, level: CompatibilityLevel | str) -> None:
        """PUT /config/{subject}."""
        resolved = CompatibilityLevel.parse(level)
        self._call("PUT", f"/config/{_q(subject)}", {"compatibility": resolved.value}, what=f"subject {subject!r}")

    def check_compatibility(self, subject: str, schema: AvroSchema) -> list[str]:
        """Problems registering ``schema`` under ``subject`` would meet now; empty when it would be accepted
        (or the subject does not exist yet).

        Asks the subject's level first (GET /config), then POSTs to ``/compatibility/subjects/{subject}/
        versions`` for a transitive level and to ``.../versions/latest`` otherwise: Apicurio 3 checks
        ``/versions`` against every version and ``/versions/latest`` against the latest only, whatever the
        level, so the endpoint must match the level to get the answer registration would give. (Confluent
        applies the level on both.) Apicurio gives no reasons: the problem is then one generic line.
        """
        text = self._canonical(schema)
        level = self.get_compatibility(subject)
        versions = "versions" if level.transitive else "versions/latest"
        try:
            body = self._call(
                "POST",
                f"/compatibility/subjects/{_q(subject)}/{versions}",
                {"schema": text},
                params={"verbose": "true"},
                what=f"subject {subject!r}",
            )
        except SchemaNotFound:
            return []
        if not isinstance(body, dict) or not isinstance(body.get("is_compatible"), bool):
            raise ConfigError(f"{self.url}: unexpected compatibility answer {body!r}")
        if body["is_compatible"]:
            return []
        messages = [str(message) for message in body.get("messages") or []]
        return messages or [
            f"the registry reports the schema incompatible with subject {subject!r} under {level.value}"
        ]

    # -- HTTP ------------------------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None = None,
        *,
        params: dict[str, str] | None = None,
        what: str,
    ) -> Any:
        headers = {"Content-Type": CONTENT_TYPE} if payload is not None else None
        content = json.dumps(payload).encode() if payload is not None else None
        try:
            response = self._client.request(method, path.lstrip("/"), content=content, headers=headers, params=params)
        except httpx.UnsupportedProtocol as exc:
            raise ConfigError(f"schema registry URL {self.url!r}: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise SchemaSourceUnavailable(
                f"schema registry {self.url} timed out on {method} {path}: {type(exc).__name__}"
            ) from exc
        except httpx.TransportError as exc:
            untrusted = cause_of(exc, ssl.SSLCertVerificationError)
            if untrusted is not None:
                trusted = (
                    f"{CA_FILE_ENV}={self._ca_file}" if self._ca_file else f"the system CAs ({CA_FILE_ENV} is unset)"
                )
                reason = untrusted.verify_message or untrusted.reason or str(untrusted)
                raise UntrustedCertificate(
                    f"schema registry {self.url} presented a TLS certificate that does not verify against "
                    f"{trusted}: {reason}",
                    service=_SERVICE,
                    endpoint=self.url,
                ) from exc
            raise SchemaSourceUnavailable(
                f"schema registry {self.url} unreachable on {method} {path}: {type(exc).__name__}: {exc}"
            ) from exc
        status = response.status_code
        body = _json_or_none(response)
        if 200 <= status < 300:
            if body is None:
                raise ConfigError(
                    f"{self.url}{path} answered {status} without JSON: is this a schema registry API root?"
                )
            return body
        code = body.get("error_code") if isinstance(body, dict) else None
        message = body.get("message") if isinstance(body, dict) else None
        detail = f"{method} {path}: HTTP {status}" + (f" ({code}) {message}" if message else "")
        if status >= 500 or status in (408, 429):
            unavailable = SchemaSourceUnavailable(f"schema registry {self.url} failed {detail}")
            unavailable.retry_after = retry_after(response.headers.get("Retry-After"))
            raise unavailable
        if status == 404 and code in _NOT_FOUND_CODES:
            raise SchemaNotFound(f"{what} not found in {self.url}: {message}")
        if status == 409:
            raise IncompatibleSchemaError(
                f"schema registry {self.url} refused the schema for {what}: {message or 'incompatible'}",
                problems=[str(message or "incompatible with an earlier version")],
            )
        if status == 422:
            raise InvalidSchemaError(f"schema registry {self.url} rejected {detail}")
        if status in (401, 403):
            raise self._denied(method, path, status)
        if status == 404:
            raise ConfigError(f"schema registry {self.url} has no such endpoint ({detail}): check the URL")
        raise ConfigError(f"schema registry {self.url} refused {detail}")

    def _denied(self, method: str, path: str, status: int) -> CredentialsRejected:
        """The error of a 401/403 (the registry's own message is left out: it is not ours to show)."""
        names = f"{USERNAME_ENV} and {PASSWORD_ENV}"
        if status == 403:
            who = f"user {self._user!r}" if self._user is not None else "anonymous callers"
            message = (
                f"schema registry {self.url} forbids {who} to {method} {path} (HTTP 403): grant the access, "
                f"or check {names}"
            )
        elif self._user is None:
            message = f"schema registry {self.url} requires credentials (HTTP 401 on {method} {path}): set {names}"
        else:
            message = (
                f"schema registry {self.url} refused the credentials of user {self._user!r} "
                f"(HTTP 401 on {method} {path}): check {names}"
            )
        return CredentialsRejected(message, service=_SERVICE, endpoint=self.url)

    # -- helpers -------------------------------------------------------------------------------------------

    @staticmethod
    def _canonical(schema: AvroSchema) -> str:
        validate(schema)
        return canonical_json(schema)

    def _avro_text(self, body: Any, what: str) -> str:
        if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
            raise ConfigError(f"{self.url}: unexpected answer for {what}: {body!r}")
        schema_type = body.get("schemaType") or "AVRO"
        if schema_type != "AVRO":
            raise InvalidSchemaError(f"{what} is a {schema_type} schema, not Avro")
        if body.get("references"):
            raise InvalidSchemaError(f"{what} uses schema references, which vatic does not resolve")
        return str(body["schema"])

    def _loads(self, text: str, what: str) -> AvroSchema:
        try:
            schema: AvroSchema = json.loads(text)
        except ValueError as exc:
            raise InvalidSchemaError(f"{what} in {self.url} is not JSON: {exc}") from exc
        return schema

    def _int(self, body: Any, key: str) -> int:
        value = body.get(key) if isinstance(body, dict) else None
        if not isinstance(value, int):
            raise ConfigError(f"{self.url}: answer without an integer {key!r}: {body!r}")
        return value

    def _registered(self, body: Any, subject: str) -> RegisteredSchema:
        what = f"subject {subject!r}"
        text = self._avro_text(body, what)
        schema_id = self._int(body, "id")
        with self._lock:
            self._schemas.setdefault(schema_id, text)
        return RegisteredSchema(
            subject=str(body.get("subject", subject)),
            version=self._int(body, "version"),
            schema_id=schema_id,
            schema=self._loads(text, what),
        )


def _q(segment: str) -> str:
    """A subject or version as one URL path segment."""
    return quote(segment, safe="")


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def schema_source(url: str | None, store: Path | None) -> SchemaSource:
    """The one source of schema ids for a process: the registry at ``url`` when one is given, else the embedded
    store in the folder ``store`` (which hands out ids no registry does, see :mod:`vatic.schemas.source`)."""
    if url:
        return ConfluentSchemaRegistry(url)
    if store is None:
        raise ConfigError(
            f"no schema registry ({REGISTRY_URL_ENV} or --schema-registry-url) and no embedded schema store folder"
        )
    return LocalSchemaStore(store)
