"""Who may call the gateway, which services, how often: one :class:`Authenticator` behind both doors.

Credentials (any combination; none at all leaves the gateway open, as before):

* the shared token ``VATIC_GATEWAY_AUTH_TOKEN``: a client named ``shared-token`` that may call every service,
  without a rate limit (kept for compatibility);
* per-client tokens, ``VATIC_GATEWAY_CLIENTS_FILE``: a YAML file mounted from a Kubernetes Secret::

      clients:
        - name: checkout                   # what access logs and metrics show (never the token)
          token_sha256: 9f86d081884c7d65...  # sha256 hex of the token: printf %s "$TOKEN" | sha256sum
          services: [fraud-detector]       # or ["*"]: every service
          rate_limit: {requests_per_s: 50, burst: 100}   # optional

  The file holds digests, never tokens: reading it does not reveal a credential. A malformed file stops the
  gateway at start-up with one line naming the file and the entry at fault. The file is read once: restart
  (roll) the gateway after changing the Secret.
* bearer JWTs (``VATIC_GATEWAY_JWT_KEY_FILE``, with PyJWT): signed by that key with one of
  ``VATIC_GATEWAY_JWT_ALGORITHMS``, unexpired, for ``VATIC_GATEWAY_JWT_AUDIENCE`` (and from
  ``VATIC_GATEWAY_JWT_ISSUER`` when set). ``sub`` is the client's name and the ``services`` claim (a list, or
  ``"*"``) what it may call. A JWT client has no rate limit of its own unless the clients file names a client
  of the same name with one (its bucket is then shared).

Checks, in this order (REST status / gRPC code; the error bodies never echo the credential):

1. no credential, or one that no client owns -> 401 ``unauthorized`` (``WWW-Authenticate: Bearer``) /
   UNAUTHENTICATED;
2. a client calling a service it may not -> 403 ``forbidden`` / PERMISSION_DENIED;
3. a client over its rate -> 429 ``rate_limited`` (``Retry-After``) / RESOURCE_EXHAUSTED.

Comparison is constant-time: the presented token is hashed once (SHA-256) and its digest compared with
:func:`hmac.compare_digest` against every client's digest, with no early exit, so neither the time nor the
order of the clients says how close a guess was. The rate limit is an in-process token bucket: it is **per
gateway replica**, so N replicas let a client through at up to N times its rate (size ``requests_per_s``
accordingly, or rate-limit at the ingress for a global bound).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vatic.schemas.errors import ConfigError
from vatic.serving.gateway.settings import GatewaySettings

__all__ = ["ANY", "SHARED", "Authenticator", "Client", "TokenBucket", "Verdict", "load_clients", "rest_target"]

#: the name of the client that holds the shared token
SHARED = "shared-token"
#: in a client's ``services``: every service
ANY = "*"
#: the target of a request for a model no service behind the gateway owns: only ``*`` clients may ask (-> 404)
UNOWNED = ""

_ERRORS = {401: "unauthorized", 403: "forbidden", 429: "rate_limited"}


# --- the clients file ---------------------------------------------------------------------------------------------


class _RateLimit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests_per_s: float = Field(gt=0, allow_inf_nan=False)
    burst: int | None = Field(None, ge=1, description="bucket size; default: requests_per_s rounded up")


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    token_sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="SHA-256 hex digest of the token")
    services: list[str] = Field(min_length=1)
    rate_limit: _RateLimit | None = None


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clients: list[_Entry] = Field(min_length=1)


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; thread-safe (the gRPC door calls from threads)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Take one token: 0.0 when there was one, else the seconds until there will be (nothing is taken)."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate


@dataclass(frozen=True)
class Client:
    """A caller the gateway knows: its name, the services it may call and its rate limit (None: none)."""

    name: str
    services: frozenset[str]
    bucket: TokenBucket | None = field(default=None, compare=False)

    def may_call(self, service: str | None) -> bool:
        """``service`` None: a route of no particular service (listings, server metadata): any client may."""
        return service is None or ANY in self.services or (service != UNOWNED and service in self.services)


def load_clients(path: Path) -> list[tuple[bytes, Client]]:
    """The clients of a clients file as (token digest, client); one-line :class:`ConfigError` when it is bad."""
    where = f"VATIC_GATEWAY_CLIENTS_FILE={path}"
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{where}: cannot be read ({exc.strerror or exc}): mount the clients Secret there") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{where}: not YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    try:
        parsed = _File.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".") or "the file"
        # the value is left out: it may be a token pasted where its digest belongs
        raise ConfigError(f"{where}: {loc}: {first['msg']} (expected clients: [{{name, token_sha256, services}}])") \
            from None  # fmt: skip
    out: list[tuple[bytes, Client]] = []
    names: set[str] = set()
    digests: set[bytes] = set()
    for i, entry in enumerate(parsed.clients):
        digest = bytes.fromhex(entry.token_sha256)
        if entry.name in names or entry.name == SHARED:
            raise ConfigError(f"{where}: clients[{i}].name: {entry.name!r} is used twice (or reserved)")
        if digest in digests:
            raise ConfigError(f"{where}: clients[{i}].token_sha256: the same token is given to two clients")
        names.add(entry.name)
        digests.add(digest)
        bucket = None
        if entry.rate_limit is not None:
            rate = entry.rate_limit.requests_per_s
            bucket = TokenBucket(rate, entry.rate_limit.burst or math.ceil(rate))
        out.append((digest, Client(entry.name, frozenset(entry.services), bucket)))
    return out


# --- verdicts -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What a request gets: ``status`` 200 (go on), 401, 403 or 429; ``client`` the caller when known."""

    status: int
    client: Client | None = None
    message: str = ""
    retry_after: float | None = None

    @property
    def allowed(self) -> bool:
        return self.status == 200

    @property
    def error(self) -> str:
        """The ``error`` of the JSON body: ``unauthorized``, ``forbidden`` or ``rate_limited``."""
        return _ERRORS[self.status]

    @property
    def client_name(self) -> str:
        """The name that logs and metrics carry: the client's, or ``anonymous``."""
        return self.client.name if self.client is not None else "anonymous"

    @property
    def retry_after_header(self) -> str:
        """Whole seconds, at least 1 (``Retry-After``)."""
        return str(max(1, math.ceil(self.retry_after or 1.0)))


class _Jwt:
    """Bearer JWTs verified with PyJWT (imported only when configured)."""

    def __init__(self, settings: GatewaySettings, named: Mapping[str, Client]) -> None:
        try:
            import jwt
        except ImportError:
            raise ConfigError(
                "VATIC_GATEWAY_JWT_KEY_FILE is set but PyJWT is not installed: pip install 'pyjwt[crypto]'"
            ) from None
        assert settings.jwt_key_file is not None
        if not settings.jwt_audience:
            raise ConfigError("VATIC_GATEWAY_JWT_KEY_FILE is set without VATIC_GATEWAY_JWT_AUDIENCE: set the audience")
        try:
            self.key = settings.jwt_key_file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"VATIC_GATEWAY_JWT_KEY_FILE={settings.jwt_key_file}: cannot be read ({exc.strerror})") \
                from None  # fmt: skip
        self.jwt = jwt
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer
        self.algorithms = list(settings.jwt_algorithms)
        self.named = named
        try:  # a key that does not fit the algorithms is a start-up error, not 401s for every caller
            for algorithm in self.algorithms:
                jwt.get_algorithm_by_name(algorithm).prepare_key(self.key)
        except (jwt.PyJWTError, NotImplementedError, ValueError) as exc:
            raise ConfigError(
                f"VATIC_GATEWAY_JWT_KEY_FILE={settings.jwt_key_file} does not fit VATIC_GATEWAY_JWT_ALGORITHMS="
                f"{','.join(self.algorithms)}: {exc}"
            ) from None

    def client(self, token: str) -> Client | None:
        required = ["exp", "sub", "aud", *(["iss"] if self.issuer else [])]
        try:
            claims: dict[str, Any] = self.jwt.decode(
                token, self.key, algorithms=self.algorithms, audience=self.audience, issuer=self.issuer,
                options={"require": required},
            )  # fmt: skip
        except self.jwt.PyJWTError:
            return None
        name = str(claims["sub"])
        granted = claims.get("services")
        services = frozenset([granted] if isinstance(granted, str) else [str(s) for s in granted or []])
        known = self.named.get(name)
        return Client(name, services, known.bucket if known is not None else None)


class Authenticator:
    """The credentials of :mod:`this module <vatic.serving.gateway.auth>`; :meth:`check` judges one request."""

    def __init__(self, clients: list[tuple[bytes, Client]], jwt_verifier: _Jwt | None = None) -> None:
        self.clients = clients
        self.jwt = jwt_verifier

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> Authenticator | None:
        """None when no credential is configured (the gateway is open); :class:`ConfigError` for a bad one."""
        clients: list[tuple[bytes, Client]] = []
        if settings.auth_token is not None:
            shared = settings.auth_token.get_secret_value().encode()
            clients.append((hashlib.sha256(shared).digest(), Client(SHARED, frozenset({ANY}))))
        if settings.clients_file is not None:
            loaded = load_clients(settings.clients_file)
            if clients and any(hmac.compare_digest(d, clients[0][0]) for d, _ in loaded):
                raise ConfigError(
                    f"VATIC_GATEWAY_CLIENTS_FILE={settings.clients_file}: a client's token is the shared token"
                )
            clients += loaded
        verifier = None
        if settings.jwt_key_file is not None:
            verifier = _Jwt(settings, {c.name: c for _, c in clients})
        if not clients and verifier is None:
            return None
        return cls(clients, verifier)

    def identify(self, token: bytes) -> Client | None:
        """The client whose token ``token`` is; every digest is compared, whatever matched first."""
        presented = hashlib.sha256(token).digest()
        found: Client | None = None
        for digest, client in self.clients:
            if hmac.compare_digest(presented, digest) and found is None:
                found = client
        if found is None and self.jwt is not None and token.count(b".") == 2:
            found = self.jwt.client(token.decode("ascii", "replace"))
        return found

    def check(self, authorization: bytes | str | None, service: str | None) -> Verdict:
        """Judge a request with this ``Authorization`` value for ``service`` (None: no particular service;
        :data:`UNOWNED`: a model no service owns)."""
        raw = authorization.encode("latin-1") if isinstance(authorization, str) else (authorization or b"")
        scheme, _, token = raw.partition(b" ")
        # the scheme is case-insensitive (RFC 7235); the token is compared exactly
        client = self.identify(token) if token and scheme.lower() == b"bearer" else None
        if client is None:
            return Verdict(401, None, "missing or wrong bearer token")
        if not client.may_call(service):
            what = f"service {service!r}" if service else "a model no service behind this gateway owns"
            return Verdict(403, client, f"client {client.name!r} may not call {what}")
        if client.bucket is not None:
            wait = client.bucket.take()
            if wait > 0:
                return Verdict(
                    429,
                    client,
                    f"client {client.name!r} is over its rate limit of {client.bucket.rate:g} requests/s",
                    retry_after=wait,
                )
        return Verdict(200, client)


_SERVICE_PATH = re.compile(r"^/v1/services/([^/]+)")
_MODEL_PATH = re.compile(r"^/v2/models/([^/]+)")


def rest_target(path: str, model_services: Mapping[str, str]) -> str | None:
    """The service a REST path calls: ``/v1/services/{s}...`` -> s, ``/v2/models/{m}...`` -> the service that
    owns m (:data:`UNOWNED` for none); other paths (listings, ``/v2``) call no particular service: None."""
    if match := _SERVICE_PATH.match(path):
        return match.group(1)
    if match := _MODEL_PATH.match(path):
        return model_services.get(match.group(1), UNOWNED)
    return None
