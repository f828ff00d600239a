"""Gateway settings, read from ``VATIC_GATEWAY_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    """Which services the gateway serves and how it reaches their model servers and feature stores.

    ``services`` are service folders (``service.yaml`` + environment overlays). ``endpoints`` maps a service
    name to its model server's base URL; without an entry, ``http://127.0.0.1:<serving.port>`` is used.
    ``auth_token``: when set, every route but health, metrics and docs needs ``Authorization: Bearer <token>``
    (on gRPC: ``authorization`` metadata; ServerLive and ServerReady stay open).
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
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_batch: int = Field(64, ge=1, description="largest micro-batch of concurrent requests per service")
    max_in_flight: int = Field(2, ge=1, description="micro-batches in flight per service")
    retry_budget_s: float = Field(0.25, ge=0, description="how long a request retries transient errors")
    log_requests: bool = True
