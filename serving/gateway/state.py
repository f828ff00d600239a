"""What every door of the gateway shares: one :class:`GatewayState` per app, kept on ``app.state.gateway``.

The routers (:mod:`vatic.serving.gateway.routes`) and the gRPC door only translate; the work is here and in
the transport-free cores it holds - the services' runtimes (micro-batcher, features, model client), the V2
pass-through (:class:`~vatic.serving.gateway.passthrough.V2Passthrough`) and the enriched prediction
(:func:`~vatic.serving.gateway.predict.predict_event`).

Lifecycle: service configs are loaded (and validated) when the state is built, so a bad config fails at
start-up with its file:line message; :meth:`GatewayState.open` opens clients, feature stores and the gRPC door
(in the app's lifespan), :meth:`GatewayState.close` closes them in reverse.

Model servers: an ``https://`` endpoint is verified with ``VATIC_GATEWAY_MODEL_CA_FILE`` (the system CAs when
unset), by the services' model clients and the pass-through alike. Model servers of every tier serve TLS with
``VATIC_MODEL_TLS_CERT_FILE``/``_KEY_FILE`` (docs/decisions/0009-tls-on-model-servers.md).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx

from vatic.connectors.inference import tls_context
from vatic.schemas.errors import ConfigError, Retryable
from vatic.serving.config import ServiceConfig, load_service
from vatic.serving.gateway.auth import Authenticator
from vatic.serving.gateway.grpc_door import GrpcDoor
from vatic.serving.gateway.metrics import GatewayMetrics
from vatic.serving.gateway.passthrough import V2Passthrough
from vatic.serving.gateway.predict import predict_event
from vatic.serving.gateway.services import ServiceRuntime
from vatic.serving.gateway.settings import GatewaySettings

__all__ = ["NAME", "V2_EXTENSIONS", "GatewayState"]

log = logging.getLogger("vatic.gateway")

#: the gateway's name in V2 server metadata
NAME = "vatic-gateway"
#: V2 protocol extensions the gateway speaks (server metadata)
V2_EXTENSIONS = ("binary_tensor_data",)


class GatewayState:
    """The services a gateway serves and the cores its doors call; see the module docstring."""

    def __init__(self, settings: GatewaySettings, version: str) -> None:
        self.settings = settings
        self.version = version
        self.metrics = GatewayMetrics()
        self.configs: list[tuple[Path, ServiceConfig]] = [
            (folder, load_service(folder, settings.environment)) for folder in settings.services
        ]
        # credentials and TLS files are checked here, so that a bad one stops the start-up with one line
        self.auth = Authenticator.from_settings(settings)
        self.tls = settings.check_tls()
        self.model_tls = tls_context(settings.model_ca_file)
        self.model_services = {config.model.name: config.service for _, config in self.configs}
        self.services: dict[str, ServiceRuntime] = {}
        self.grpc_port: int | None = None
        self._passthrough: V2Passthrough | None = None
        self._client: httpx.AsyncClient | None = None
        self._door: GrpcDoor | None = None

    @property
    def model_names(self) -> list[str]:
        return sorted({config.model.name for _, config in self.configs})

    @property
    def service_names(self) -> list[str]:
        return sorted({config.service for _, config in self.configs})

    @property
    def passthrough(self) -> V2Passthrough:
        if self._passthrough is None:
            raise RuntimeError("the gateway is not open: its V2 pass-through starts in the app's lifespan")
        return self._passthrough

    def server_metadata(self) -> dict[str, Any]:
        """V2 server metadata: this gateway and the protocol extensions it speaks."""
        return {"name": NAME, "version": self.version, "extensions": list(V2_EXTENSIONS)}

    async def model_states(self) -> dict[str, bool]:
        """Whether each service's model answers its readiness probe."""
        states = {}
        for name, runtime in self.services.items():
            try:
                states[name] = await runtime.predictor.ready(deadline_s=1.0)
            except (Retryable, ConfigError):
                states[name] = False
        return states

    async def all_ready(self) -> bool:
        return all((await self.model_states()).values())

    async def predict(self, service: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The enriched prediction of one event's fields (errors raised as :func:`predict_event` raises them)."""
        return await predict_event(self.services, self.metrics, service, payload)

    async def open(self) -> None:
        """Open every service's runtime, the pass-through's HTTP client and, when configured, the gRPC door."""
        for folder, config in self.configs:
            self.services[config.service] = ServiceRuntime.open(
                config, folder, self.settings, self.metrics, verify=self.model_tls
            )
        # identity: MLServer gzips any answer over 500 B otherwise, which the gateway would only decompress again
        # (the model client asks the same; cost: docs/decisions/0003-gateway-doors.md)
        self._client = httpx.AsyncClient(
            timeout=30.0, trust_env=False, headers={"accept-encoding": "identity"}, verify=self.model_tls
        )
        self._passthrough = V2Passthrough(self.services, self._client)
        if self.settings.grpc_port is not None:
            self._door = GrpcDoor(
                self._passthrough,
                self.predict,
                self.all_ready,
                self.server_metadata(),
                loop=asyncio.get_running_loop(),
                auth=self.auth,
                model_services=self.model_services,
                metrics=self.metrics,
                max_message_bytes=self.settings.max_body_bytes,
                tls=self.tls,
                client_ca=self.settings.tls_client_ca_file,
            )
            self.grpc_port = self._door.start(self.settings.host, self.settings.grpc_port)
        log.info("gateway ready", extra={"services": sorted(self.services), "grpc_port": self.grpc_port})

    async def close(self) -> None:
        if self._door is not None:  # in a thread: calls in flight still need this loop to finish
            await asyncio.to_thread(self._door.stop)
            self._door = None
        for runtime in self.services.values():
            await runtime.close()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
