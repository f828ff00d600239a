"""The REST gateway of the local stack, in front of the demo services' model servers.

Started by ``vatic stack up`` after the model servers, as the real ``vatic gateway`` command of the pipeline
environment (connectors know nothing of the serving layer, so it is a process, not an import). It serves every
demo service whose folder has a ``service.yaml`` and points each at its model server's local port; a service
whose model server was skipped (not prepared yet) answers 503 until it is.
"""

from __future__ import annotations

import shutil
import sys
import urllib.request
from pathlib import Path

from vatic.cli.stack.components import Component
from vatic.cli.stack.services import MODEL_SERVERS
from vatic.schemas.errors import ConfigError


def vatic_executable() -> str:
    """The ``vatic`` command of this environment."""
    candidate = Path(sys.executable).parent / "vatic"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("vatic")
    if found is None:
        raise ConfigError("the vatic command is not installed in this environment: run `make setup`")
    return found


class GatewayProcess(Component):
    """``vatic gateway`` on ``VATIC_STACK_GATEWAY_PORT`` (8000) serving the demo services."""

    name = "gateway"

    @property
    def ports(self) -> list[int]:
        return [self.settings.gateway_port, self.settings.gateway_grpc_port]

    def services(self) -> list[tuple[str, Path, str]]:
        """(service name, folder, model server URL) of every demo service that has a service definition."""
        import yaml

        found = []
        for component in MODEL_SERVERS.values():
            server = component(self.settings)
            service_yaml = server.service_dir / "service.yaml"
            if service_yaml.is_file():
                name = str((yaml.safe_load(service_yaml.read_text(encoding="utf-8")) or {}).get("service", ""))
                found.append((name, server.service_dir, server.url))
        return found

    def argv(self) -> list[str]:
        services = self.services()
        if not services:
            raise ConfigError("gateway: no service definitions found under examples")
        argv = [vatic_executable(), "gateway", "--host", self.settings.host, "--port", str(self.settings.gateway_port),
                "--grpc-port", str(self.settings.gateway_grpc_port)]  # fmt: skip
        for name, folder, url in services:
            argv += ["--service", str(folder), "--endpoint", f"{name}={url}"]
        if self.settings.gateway_redis:
            argv += ["--redis-url", self.settings.redis_url]
        return argv

    def env(self) -> dict[str, str]:
        # a service with a shadow: its REST answers go to its shadow topic on the stack's Kafka (a service without
        # one writes nothing; the infrastructure starts before the gateway)
        return {
            "VATIC_STACK_HOME": str(self.settings.home),
            "VATIC_GATEWAY_SHADOW_TOPICS": "true",
            "VATIC_KAFKA_BOOTSTRAP_SERVERS": self.settings.kafka_bootstrap,
            "VATIC_SCHEMA_REGISTRY_URL": self.settings.registry_url,
        }

    def ready(self) -> bool:
        url = f"http://{self.settings.host}:{self.settings.gateway_port}/v2/health/live"
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)

    def describe(self) -> str:
        return f"gateway http://{self.settings.host}:{self.settings.gateway_port}/docs"
