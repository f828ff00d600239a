"""Gateway settings, read from ``VATIC_GATEWAY_*`` environment variables (pydantic-settings).

Secrets never come from command-line arguments: the shared token is ``VATIC_GATEWAY_AUTH_TOKEN`` (a
``secretKeyRef``), the per-client credentials and the TLS keys are files mounted from Kubernetes Secrets.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from vatic.schemas.errors import ConfigError


class GatewaySettings(BaseSettings):
    """Which services the gateway serves, how it reaches their model servers and feature stores, who may call it.

    ``services`` are service folders (``service.yaml`` + environment overlays). ``endpoints`` maps a service
    name to its model server's base URL (``http://`` or ``https://``); without an entry,
    ``http://127.0.0.1:<serving.port>`` is used.

    Authentication (every route but health, metrics and docs; on gRPC ServerLive and ServerReady stay open):

    * ``auth_token``: one shared bearer token (``Authorization: Bearer <token>``), a client named
      ``shared-token`` that may call every service, without a rate limit;
    * ``clients_file``: per-client credentials (:mod:`vatic.serving.gateway.auth`): a name, the SHA-256 of the
      client's token, the services it may call and an optional rate limit;
    * ``jwt_key_file`` (+ ``jwt_audience``, ``jwt_issuer``, ``jwt_algorithms``): bearer JWTs signed by that key.

    Any of them turns authentication on; they can be combined (a token is tried against each).

    TLS: ``tls_cert_file`` + ``tls_key_file`` serve both doors (REST, gRPC) over TLS; ``tls_client_ca_file``
    also requires a client certificate signed by that CA (mTLS). ``model_ca_file`` is the CA that model
    servers' certificates are verified with (the system CAs when unset) for ``https://`` endpoints.
    """

    model_config = SettingsConfigDict(env_prefix="VATIC_GATEWAY_", extra="forbid")

    services: list[Path] = Field(default_factory=list)
    environment: str = "local"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    grpc_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="port of the gRPC door (V2 GRPCInferenceService + vatic.Gateway); 0: any free port; unset: no "
        "gRPC door",
    )
    endpoints: dict[str, str] = Field(default_factory=dict)
    redis_url: str | None = Field(None, description="serve features from this Redis instead of each repo's store")
    auth_token: SecretStr | None = None
    clients_file: Path | None = Field(None, description="per-client credentials (YAML, mounted from a Secret)")
    jwt_key_file: Path | None = Field(None, description="PEM public key (or HMAC secret) that signs bearer JWTs")
    jwt_audience: str | None = Field(None, description="the audience a JWT must name (aud)")
    jwt_issuer: str | None = Field(None, description="the issuer a JWT must name (iss), when set")
    jwt_algorithms: list[str] = Field(default_factory=lambda: ["RS256"], description="that the key signs with")
    tls_cert_file: Path | None = Field(None, description="PEM certificate (chain) both doors serve")
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file")
    tls_client_ca_file: Path | None = Field(None, description="require client certificates signed by this CA")
    model_ca_file: Path | None = Field(None, description="CA that verifies https:// model servers")
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_batch: int = Field(64, ge=1, description="largest micro-batch of concurrent requests per service")
    max_in_flight: int = Field(2, ge=1, description="micro-batches in flight per service")
    retry_budget_s: float = Field(0.25, ge=0, description="how long a request retries transient errors")
    shadow_topics: bool = Field(
        False,
        description="write the shadow answers of services with a shadow to their shadow topic (Kafka from "
        "VATIC_KAFKA_*, schemas from VATIC_SCHEMA_REGISTRY_URL)",
    )
    log_requests: bool = True

    def check_tls(self) -> tuple[Path, Path] | None:
        """The (certificate, key) pair the doors serve, None for plain text; a certificate without its key (or
        the other way round), a client CA without a certificate, or a file that is not there is a
        :class:`ConfigError` of one line."""
        cert, key, client_ca = self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file
        if (cert is None) != (key is None):
            given, missing = ("TLS_CERT_FILE", "TLS_KEY_FILE") if key is None else ("TLS_KEY_FILE", "TLS_CERT_FILE")
            raise ConfigError(f"VATIC_GATEWAY_{given} is set without VATIC_GATEWAY_{missing}: set both or neither")
        if client_ca is not None and cert is None:
            raise ConfigError(
                "VATIC_GATEWAY_TLS_CLIENT_CA_FILE needs TLS: set VATIC_GATEWAY_TLS_CERT_FILE and _KEY_FILE too"
            )
        for name, path in (("TLS_CERT_FILE", cert), ("TLS_KEY_FILE", key), ("TLS_CLIENT_CA_FILE", client_ca)):
            if path is not None and not path.is_file():
                raise ConfigError(f"VATIC_GATEWAY_{name}={path}: no such file (mount the Secret there)")
        if cert is None or key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:  # what the servers will load: a bad pair fails here, in one line, not in a server's traceback
            context.load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"VATIC_GATEWAY_TLS_CERT_FILE={cert} and _KEY_FILE={key} are not a PEM certificate and its key "
                f"({exc.reason or exc})"
            ) from None
        if client_ca is not None:
            try:
                context.load_verify_locations(cafile=client_ca)
            except ssl.SSLError as exc:
                raise ConfigError(
                    f"VATIC_GATEWAY_TLS_CLIENT_CA_FILE={client_ca} holds no PEM CA certificate ({exc.reason or exc})"
                ) from None
        return cert, key

    def uvicorn_tls(self) -> dict[str, Any]:
        """uvicorn's keyword arguments for the REST door: none for plain HTTP, the certificate and key for TLS,
        and ``ssl_cert_reqs=CERT_REQUIRED`` with the client CA for mTLS (see :meth:`check_tls` for errors)."""
        pair = self.check_tls()
        if pair is None:
            return {}
        options: dict[str, Any] = {"ssl_certfile": str(pair[0]), "ssl_keyfile": str(pair[1])}
        if self.tls_client_ca_file is not None:
            options |= {"ssl_ca_certs": str(self.tls_client_ca_file), "ssl_cert_reqs": ssl.CERT_REQUIRED}
        return options
