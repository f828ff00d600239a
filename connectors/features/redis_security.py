"""Credentials and TLS for every Redis client vatic opens: the direct reader and Feast's SDK (reads and writes).

Settings come from the environment (set from a Kubernetes Secret), never from a URL or a checked-in file:

==========================  ===================================================================================
``VATIC_REDIS_PASSWORD``    the password (``AUTH``); secret: kept as ``SecretStr``, never logged or echoed
``VATIC_REDIS_USERNAME``    the ACL user (optional; Redis' ``default`` user when unset); needs a password
``VATIC_REDIS_CA_FILE``     PEM CA bundle; when set (or the URL is ``rediss://``) the connection is TLS
==========================  ===================================================================================

With TLS on, the server's certificate must verify against ``VATIC_REDIS_CA_FILE`` (or the system CAs for a
``rediss://`` URL without it) and be issued for the host name connected to: redis-py's ``ssl_cert_reqs`` is
``required`` and ``ssl_check_hostname`` is on (redis-py's own default leaves the host name unchecked). A Feast
connection string that asks for less (``ssl_cert_reqs=none``, ``ssl_check_hostname=false``) is refused.

Errors (:meth:`RedisConnection.explain`): a wrong password, a missing password or an ACL user without the
permission to read raise :class:`~vatic.schemas.errors.CredentialsRejected`; a certificate that does not verify
raises :class:`~vatic.schemas.errors.UntrustedCertificate`. Each names ``host:port`` and the variable to fix,
never the password. Every other failure stays an outage (``FeatureStoreUnavailable``, retried), a TLS/plaintext
mismatch included: a plaintext Redis reads the TLS ClientHello as the start of a command line and never answers
(the handshake times out), and a TLS Redis closes a plaintext connection; neither can be told from an outage.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import redis.asyncio
import redis.exceptions
from feast import FeatureStore
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig, RedisType
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from vatic.connectors.http import cause_of
from vatic.schemas.errors import ConfigError, CredentialsRejected, UntrustedCertificate, VaticError

__all__ = [
    "CA_FILE_ENV",
    "PASSWORD_ENV",
    "USERNAME_ENV",
    "RedisConnection",
    "RedisSecurity",
    "redis_connection",
    "secure_feature_store",
]

PASSWORD_ENV = "VATIC_REDIS_PASSWORD"  # noqa: S105 - the variable's name, not a password
USERNAME_ENV = "VATIC_REDIS_USERNAME"
CA_FILE_ENV = "VATIC_REDIS_CA_FILE"

_SERVICE = "redis"


class RedisSecurity(BaseSettings):
    """Redis credentials and CA, read from ``VATIC_REDIS_*`` (empty variables count as unset)."""

    model_config = SettingsConfigDict(env_prefix="VATIC_REDIS_", extra="forbid", env_ignore_empty=True)

    username: str | None = None
    password: SecretStr | None = None
    ca_file: Path | None = None

    @property
    def configured(self) -> bool:
        """Whether any setting is given (a store without them keeps Feast's own connection handling)."""
        return self.password is not None or self.username is not None or self.ca_file is not None


@dataclass(frozen=True, slots=True)
class RedisConnection:
    """How to connect to one Redis server: redis-py keyword arguments with credentials and TLS applied.

    ``kwargs`` hold the password: they are left out of ``repr`` and must only be handed to redis-py.
    """

    endpoint: str
    tls: bool
    ca_file: str | None
    username: str | None
    authenticated: bool
    kwargs: dict[str, Any] = field(repr=False, compare=False)

    def sync_client(self) -> redis.Redis:
        """A new blocking client."""
        return redis.Redis(**self.kwargs)

    def async_client(self) -> redis.asyncio.Redis:
        """A new asyncio client (its connections belong to the event loop that opens them)."""
        return redis.asyncio.Redis(**self.kwargs)

    def explain(self, exc: BaseException) -> VaticError | None:
        """The classified error of a credentials or certificate failure; ``None`` for anything else."""
        where = f"redis at {self.endpoint}"
        user = self.username or "default"
        if isinstance(exc, redis.exceptions.AuthenticationError | redis.exceptions.AuthorizationError):
            text = str(exc)
            if not self.authenticated:
                message = (
                    f"{where} requires authentication and no password was set: set {PASSWORD_ENV} "
                    f"(and {USERNAME_ENV} for an ACL user)"
                )
            elif "no password is set" in text or "without any password configured" in text:
                message = f"{where} has no password configured for user {user!r}, but {PASSWORD_ENV} is set"
            else:
                message = f"{where} refused the credentials of user {user!r}: check {PASSWORD_ENV} and {USERNAME_ENV}"
            return CredentialsRejected(message, service=_SERVICE, endpoint=self.endpoint, stage="enrich")
        if isinstance(exc, redis.exceptions.NoPermissionError):
            message = f"{where}: ACL user {user!r} may not read the feature keys ({exc}): grant it +hmget on them"
            return CredentialsRejected(message, service=_SERVICE, endpoint=self.endpoint, stage="enrich")
        cause = cause_of(exc, ssl.SSLError)
        if isinstance(cause, ssl.SSLCertVerificationError):
            trusted = f"{CA_FILE_ENV}={self.ca_file}" if self.ca_file else f"the system CAs ({CA_FILE_ENV} is unset)"
            reason = cause.verify_message or cause.reason or str(cause)
            message = f"{where} presented a TLS certificate that does not verify against {trusted}: {reason}"
            return UntrustedCertificate(message, service=_SERVICE, endpoint=self.endpoint, stage="enrich")
        return None


def _redacted(connection_string: str) -> str:
    """A Feast connection string without its password (for messages)."""
    return ",".join(
        "password=***" if part.strip().startswith("password=") else part for part in connection_string.split(",")
    )


def _is_false(value: Any) -> bool:
    return value is False or str(value).strip().lower() in ("false", "0", "no", "off")


def redis_connection(config: RedisOnlineStoreConfig, security: RedisSecurity | None = None) -> RedisConnection:
    """redis-py arguments for Feast's ``connection_string`` (``host:port,db=0,ssl=true,...``) plus ``security``.

    Parsed by Feast's own parser so that every client connects the same way. Only a single server
    (``redis_type: redis``) is supported. ``security`` defaults to the ``VATIC_REDIS_*`` environment; its
    password and user replace any in the connection string. Raises ``ConfigError`` for a cluster or sentinel,
    a connection string without a server, a CA file that cannot be read, a user without a password, or a
    connection string that turns certificate checks off.
    """
    security = security if security is not None else RedisSecurity()
    if config.redis_type != RedisType.redis:
        raise ConfigError(
            f"direct Redis connections support redis_type 'redis' only, not {config.redis_type.value!r}",
            stage="enrich",
        )
    nodes, params = RedisOnlineStore._parse_connection_string(config.connection_string)
    if not nodes:
        raise ConfigError(
            f"Redis connection string {_redacted(config.connection_string)!r} names no host:port", stage="enrich"
        )
    kwargs: dict[str, Any] = dict(params)
    kwargs["host"] = nodes[0]["host"]
    kwargs["port"] = int(nodes[0]["port"])
    endpoint = f"{kwargs['host']}:{kwargs['port']}"
    if security.password is not None:
        kwargs["password"] = security.password.get_secret_value()
    if security.username is not None:
        if not kwargs.get("password"):
            raise ConfigError(f"{USERNAME_ENV} is set without {PASSWORD_ENV}: an ACL user needs its password")
        kwargs["username"] = security.username
    ca_file: str | None = None
    if security.ca_file is not None:
        path = security.ca_file.expanduser()
        if not path.is_file():
            raise ConfigError(f"{CA_FILE_ENV}={security.ca_file} is not a readable file", stage="enrich")
        ca_file = str(path.resolve())
    tls = ca_file is not None or (kwargs.get("ssl") not in (None, "") and not _is_false(kwargs.get("ssl")))
    if tls:
        reqs = kwargs.get("ssl_cert_reqs")
        if reqs is not None and str(reqs).lower() != "required":
            raise ConfigError(
                f"Redis at {endpoint}: the connection string sets ssl_cert_reqs={reqs}; vatic always verifies "
                "the server's certificate: remove it (and set VATIC_REDIS_CA_FILE for a private CA)",
                stage="enrich",
            )
        if "ssl_check_hostname" in kwargs and _is_false(kwargs["ssl_check_hostname"]):
            raise ConfigError(
                f"Redis at {endpoint}: the connection string turns ssl_check_hostname off; vatic always checks "
                "that the certificate names the host: remove it and connect by a name the certificate holds",
                stage="enrich",
            )
        kwargs.update(ssl=True, ssl_cert_reqs="required", ssl_check_hostname=True)
        if ca_file is not None:
            kwargs["ssl_ca_certs"] = ca_file
    return RedisConnection(
        endpoint=endpoint,
        tls=tls,
        ca_file=ca_file,
        username=kwargs.get("username"),
        authenticated=bool(kwargs.get("password")),
        kwargs=kwargs,
    )


def secure_feature_store(
    store: FeatureStore, connection: RedisConnection | None = None, *, sync: bool = True, asynchronous: bool = False
) -> FeatureStore:
    """Make ``store``'s Redis online store connect with ``connection`` (default: from its config and the
    ``VATIC_REDIS_*`` environment) instead of building clients from the connection string alone.

    Feast builds its Redis clients from ``connection_string`` only; handing it ours carries the password (which
    never enters the config, so never a printed config) and the verified TLS settings to Feast's reads *and*
    writes (``materialize``). ``sync``/``asynchronous`` choose the clients set: an asyncio client is bound to
    the event loop that first uses it, so set it only on a store used from one loop. Stores of other types
    are returned unchanged. Returns ``store``.
    """
    online_config = store.config.online_store
    if not isinstance(online_config, RedisOnlineStoreConfig):
        return store
    if connection is None:
        security = RedisSecurity()
        if online_config.redis_type != RedisType.redis:
            if security.configured:
                raise ConfigError(
                    f"VATIC_REDIS_* settings support redis_type 'redis' only, not {online_config.redis_type.value!r}",
                    stage="enrich",
                )
            return store
        connection = redis_connection(online_config, security)
    online = store._get_provider().online_store
    if not isinstance(online, RedisOnlineStore):
        return store
    if sync:
        online._client = connection.sync_client()
    if asynchronous:
        online._client_async = connection.async_client()
    return store
