"""Local workspaces: one service's serving layer as real processes, for development and load tests.

``vatic workspace up SERVICE_DIR`` starts, on loopback and free (or given) ports:

1. the **model server**: the settings writer (``python -m vatic.serving.runtimes.repository``, run with the
   model-server environment's interpreter) materialises the registry version named by the config (or the one
   under ``--registry-root``) into ``<state>/model/models``; then MLServer serves it
   (:class:`~vatic.cli.stack.mlserver.ModelServer`), or - full-custom tier - ``uvicorn <entrypoint>``
   with ``VATIC_MODEL_DIR`` set to the model folder. The service's project folder (the service folder's parent,
   as ``vatic init`` lays it out) is put on ``PYTHONPATH`` so that low-code runtimes and apps import. A service
   that follows its registry (``registry.refresh_s``) gets its rollout controller beside it (process ``rollout``);
2. the **gateway** (``vatic gateway``) in front of it, with Swagger at ``/docs``;
3. optionally the **stream job** (``vatic stream run``, local mini-cluster) against the local stack's Kafka.

State lives in ``<home>/<service>/`` (``home`` defaults to ``.vatic/workspaces``): ``workspace.json`` (ports,
URLs, the components) and one folder per process (log, PID file with its ownership token). ``down`` stops
exactly those processes - each is verified by its token before any signal (``ManagedProcess``) - and nothing
else: the local stack's own servers on their default ports are never touched. A failed ``up`` stops what it
started.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vatic.cli.stack.components import Component
from vatic.cli.stack.gateway import vatic_executable
from vatic.cli.stack.mlserver import ModelServer, mlserver_executable
from vatic.cli.stack.process import ManagedProcess, port_is_free
from vatic.cli.stack.settings import StackSettings
from vatic.schemas.errors import ConfigError, PortInUse
from vatic.serving.config.loader import load_service
from vatic.serving.config.model import ServiceConfig
from vatic.serving.runtimes.rollout import controller_argv

__all__ = ["STATE_FILE", "Workspace", "WorkspaceState", "default_home", "free_port", "load_state"]

STATE_FILE = "workspace.json"
WRITER = "vatic.serving.runtimes.repository"
_NOT_PREPARED = 3


def default_home() -> Path:
    """``<stack home>/workspaces`` (``.vatic/workspaces`` of the checkout), or ``$VATIC_WORKSPACE_HOME``."""
    configured = os.environ.get("VATIC_WORKSPACE_HOME")
    return Path(configured) if configured else StackSettings().home / "workspaces"


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _get_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback URLs we built
        return bool(response.status == 200)


@dataclass
class WorkspaceState:
    """What ``workspace.json`` holds: enough to print the URLs and to stop every process."""

    service: str
    service_dir: str
    environment: str
    host: str
    layer: str
    model_port: int
    grpc_port: int
    metrics_port: int
    gateway_port: int
    stream: bool = False
    started: float = field(default_factory=time.time)
    protocol: str = "rest"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.host}:{self.gateway_port}"

    @property
    def model_url(self) -> str:
        return f"http://{self.host}:{self.model_port}"

    @property
    def call_url(self) -> str:
        """The address the gateway and the stream job call: the gRPC port when ``serving.protocol`` is grpc."""
        return f"grpc://{self.host}:{self.grpc_port}" if self.protocol == "grpc" else self.model_url

    def urls(self) -> dict[str, str]:
        """Name -> URL of everything a developer opens."""
        out = {
            "predict": f"{self.gateway_url}/v1/services/{self.service}/predict",
            "gateway docs": f"{self.gateway_url}/docs",
            "gateway metrics": f"{self.gateway_url}/metrics",
            "model server": self.model_url,
        }
        if self.layer == "mlserver":
            out["model docs"] = f"{self.model_url}/v2/docs"
            out["model metrics"] = f"http://{self.host}:{self.metrics_port}/metrics"
            out["model grpc"] = f"{self.host}:{self.grpc_port}"
        else:
            out["model docs"] = f"{self.model_url}/docs"
        return out


def load_state(home: Path, service: str) -> WorkspaceState | None:
    """The state of the workspace of ``service`` under ``home`` (None when there is none)."""
    path = home / service / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return WorkspaceState(**data)


class _WorkspaceModelServer(ModelServer):
    """MLServer with the project folder on ``PYTHONPATH`` (low-code runtimes of the project import)."""

    def __init__(self, *args: Any, pythonpath: list[Path], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pythonpath = pythonpath

    def env(self) -> dict[str, str]:
        return {"PYTHONPATH": _pythonpath(self.pythonpath)}


def _pythonpath(extra: list[Path]) -> str:
    parts = [str(p) for p in extra]
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return os.pathsep.join(parts)


class _CustomServer(Component):
    """The full-custom tier: ``uvicorn <entrypoint>`` in the model-server environment."""

    name = "model"

    def __init__(
        self, settings: StackSettings, *, entrypoint: str, port: int, model_dir: Path, pythonpath: list[Path]
    ) -> None:
        super().__init__(settings)
        self.entrypoint, self.port, self.model_dir, self.pythonpath = entrypoint, port, model_dir, pythonpath

    @property
    def ports(self) -> list[int]:
        return [self.port]

    def argv(self) -> list[str]:
        python = mlserver_executable().parent / "python"
        return [str(python), "-m", "uvicorn", self.entrypoint, "--host", self.settings.host, "--port", str(self.port),
                "--log-level", "warning"]  # fmt: skip

    def env(self) -> dict[str, str]:
        return {"VATIC_MODEL_DIR": str(self.model_dir), "PYTHONPATH": _pythonpath(self.pythonpath)}

    def ready(self) -> bool:
        return _get_ok(f"http://{self.settings.host}:{self.port}/v2/health/ready")


class _Gateway(Component):
    """``vatic gateway`` serving the one service of the workspace."""

    name = "gateway"

    def __init__(self, settings: StackSettings, *, state: WorkspaceState, redis_url: str | None) -> None:
        super().__init__(settings)
        self.state, self.redis_url = state, redis_url

    @property
    def ports(self) -> list[int]:
        return [self.state.gateway_port]

    def argv(self) -> list[str]:
        s = self.state
        argv = [
            vatic_executable(),
            "gateway",
            "--service",
            s.service_dir,
            "--host",
            s.host,
            "--port",
            str(s.gateway_port),
        ]
        if s.environment != "local":
            argv += ["--env", s.environment]
        argv += ["--endpoint", f"{s.service}={s.call_url}"]
        if self.redis_url:
            argv += ["--redis-url", self.redis_url]
        return argv

    def env(self) -> dict[str, str]:
        return {"VATIC_STACK_HOME": str(StackSettings().home)}

    def ready(self) -> bool:
        return _get_ok(f"{self.state.gateway_url}/v2/health/ready")


class _StreamJob(Component):
    """``vatic stream run`` (local mini-cluster) calling the workspace's model server."""

    name = "stream"

    def __init__(self, settings: StackSettings, *, state: WorkspaceState) -> None:
        super().__init__(settings)
        self.state = state

    @property
    def ports(self) -> list[int]:
        return []

    def argv(self) -> list[str]:
        s = self.state
        return [vatic_executable(), "stream", "run", s.service_dir, "--env", s.environment, "--model-url", s.call_url,
                "--checkpoint-dir", str(self.process.dir / "checkpoints")]  # fmt: skip

    def env(self) -> dict[str, str]:
        return {"VATIC_STACK_HOME": str(StackSettings().home)}

    def ready(self) -> bool:
        try:
            log = self.process.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
        return "running " in log.rsplit("--- vatic: starting", 1)[-1]


class Workspace:
    """The workspace of one service under ``home`` (see the module docstring)."""

    def __init__(self, home: Path, service: str) -> None:
        self.home = home.resolve()
        self.service = service
        self.dir = self.home / service
        self.settings = StackSettings(home=self.dir)

    @classmethod
    def for_service_dir(
        cls, home: Path, service_dir: Path, environment: str = "local"
    ) -> tuple[Workspace, ServiceConfig]:
        config = load_service(service_dir, environment)
        return cls(home, config.service), config

    @property
    def state_file(self) -> Path:
        return self.dir / STATE_FILE

    def state(self) -> WorkspaceState | None:
        return load_state(self.home, self.service)

    # -- up --------------------------------------------------------------------------------------------------

    def write_repository(self, service_dir: Path, environment: str, registry_root: Path | None) -> dict[str, Any]:
        """Run the settings writer into ``<state>/model/models``; returns its summary (``parallel_workers``,
        ``refresh_s``)."""
        repository = self.dir / "model" / "models"
        python = mlserver_executable().parent / "python"
        argv = [str(python), "-m", WRITER, str(service_dir), str(repository)]
        if environment != "local":
            argv += ["--environment", environment]
        if registry_root is not None:
            argv += ["--registry-root", str(registry_root)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            why = lines[-1].removeprefix("vatic: ") if lines else f"exit code {done.returncode}"
            hint = "; train and register the model first (e.g. `python -m <package>.train`)" if (
                done.returncode == _NOT_PREPARED) else ""  # fmt: skip
            raise ConfigError(f"workspace {self.service}: the model repository could not be written: {why}{hint}")
        try:
            summary = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {}
        return summary if isinstance(summary, dict) else {}

    @property
    def controller(self) -> ManagedProcess:
        """The rollout controller beside the model server of a service that follows its registry."""
        return ManagedProcess("rollout", self.dir)

    def _start_controller(
        self, service_dir: Path, environment: str, registry_root: Path | None, state: WorkspaceState
    ) -> None:
        python = mlserver_executable().parent / "python"
        models = self.dir / "model" / "models"
        server = f"http://{state.host}:{state.model_port}"
        self.controller.start(
            controller_argv(python, service_dir, models, server, environment=environment, registry_root=registry_root)
        )

    def up(
        self,
        service_dir: Path,
        *,
        environment: str = "local",
        host: str = "127.0.0.1",
        model_port: int | None = None,
        gateway_port: int | None = None,
        registry_root: Path | None = None,
        redis_url: str | None = None,
        stream: bool = False,
        pythonpath: list[Path] | None = None,
    ) -> WorkspaceState:
        """Start the serving layer (see the module docstring); raises ``ConfigError`` (one line) on failure.

        A workspace of the same service that is already up is an error: ``down`` it first.
        """
        service_dir = service_dir.resolve()
        config = load_service(service_dir, environment)
        if config.service != self.service:
            raise ConfigError(f"{service_dir} defines service {config.service}, not {self.service}")
        if self.running():
            raise ConfigError(f"workspace {self.service} is already up: `vatic workspace down {self.service}` first")
        if stream and config.streaming is None:
            raise ConfigError(f"service {config.service} has no streaming section: drop --stream")
        ports = [p or free_port(host) for p in (model_port, None, None, gateway_port)]
        state = WorkspaceState(
            service=config.service, service_dir=str(service_dir), environment=environment, host=host,
            layer=config.serving.layer, model_port=ports[0], grpc_port=ports[1], metrics_port=ports[2],
            gateway_port=ports[3], stream=stream, protocol=config.serving.protocol,
        )  # fmt: skip
        self.dir.mkdir(parents=True, exist_ok=True)
        self.settings = StackSettings(home=self.dir, host=host, start_timeout_s=180.0)
        paths = [service_dir.parent, *(pythonpath or [])]
        summary = self.write_repository(service_dir, environment, registry_root)
        workers = int(summary.get("parallel_workers") or 0)
        self.state_file.write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")
        model = self._model(state, config, paths, workers)
        gateway = _Gateway(self.settings, state=state, redis_url=redis_url)
        try:
            # the gateway takes seconds to import (FastAPI, Feast): launch it first, let it come up while the model
            # loads; it is ready once the model is (its readiness is the model's)
            if not port_is_free(host, state.gateway_port):
                raise PortInUse(f"gateway port {state.gateway_port} on {host} is taken; pass another --gateway-port")
            gateway.process.start(gateway.argv(), env=gateway.env())
            model.start()
            if float(summary.get("refresh_s") or 0) > 0:
                self._start_controller(service_dir, environment, registry_root, state)
            gateway.process.wait_ready(gateway.ready, self.settings.start_timeout_s)
            if stream:
                _StreamJob(self.settings, state=state).start()
        except BaseException:
            self.down()
            raise
        return state

    def _model(self, state: WorkspaceState, config: ServiceConfig, paths: list[Path], workers: int) -> Component:
        if state.layer == "fastapi":
            assert config.serving.entrypoint is not None
            return _CustomServer(
                self.settings, entrypoint=config.serving.entrypoint, port=state.model_port,
                model_dir=self.dir / "model" / "models" / config.model.name, pythonpath=paths,
            )  # fmt: skip
        return _WorkspaceModelServer(
            self.settings, name="model", http_port=state.model_port, grpc_port=state.grpc_port,
            metrics_port=state.metrics_port, parallel_workers=workers, pythonpath=paths,
        )  # fmt: skip

    # -- down, status ------------------------------------------------------------------------------------------

    def _components(self) -> list[Component]:
        """The components of the recorded workspace, in stop order (stream, gateway, model)."""
        state = self.state()
        settings = StackSettings(home=self.dir, host=state.host if state else "127.0.0.1")
        out: list[Component] = []
        if state is not None:
            out.append(_StreamJob(settings, state=state))
            out.append(_Gateway(settings, state=state, redis_url=None))
            if state.layer == "fastapi":
                out.append(_CustomServer(settings, entrypoint="-", port=state.model_port, model_dir=self.dir,
                                         pythonpath=[]))  # fmt: skip
            else:
                out.append(_WorkspaceModelServer(settings, name="model", http_port=state.model_port,
                    grpc_port=state.grpc_port, metrics_port=state.metrics_port, pythonpath=[]))  # fmt: skip
        return out

    def running(self) -> list[str]:
        """Names of this workspace's processes that run now (verified by their ownership token)."""
        names = [c.name for c in self._components() if c.process.pid() is not None]
        return names + (["rollout"] if self.controller.pid() is not None else [])

    def down(self) -> list[str]:
        """Stop this workspace's processes (only them) and forget its state; returns what was stopped."""
        stopped = ["rollout"] if self.controller.stop() else []
        stopped += [c.name for c in self._components() if c.stop()]
        self.state_file.unlink(missing_ok=True)
        return stopped
