"""The model servers of the local stack: one real MLServer per demo service, served from its service folder.

``vatic stack up`` starts, after Kafka, Redis and the schema registry:

==================  ==================================================  =======================================
component           service folder                                      ports (http / grpc / metrics)
==================  ==================================================  =======================================
``fraud-model``     ``examples/fraud_detection/service/``       8090 / 8091 / 8092
``product-model``   ``examples/product_categorization/service/``  8095 / 8096 / 8097
==================  ==================================================  =======================================

Ports move with ``VATIC_STACK_FRAUD_HTTP_PORT`` ... ``VATIC_STACK_PRODUCT_METRICS_PORT``; the folder holding the
use cases with ``VATIC_STACK_USECASES_DIR``; the local model registry (``<home>/registry``, written by
``vatic usecases prepare``) with ``VATIC_STACK_MODEL_REGISTRY``.

Contract of :meth:`ServiceModelServer.start`:

* The model repository ``<home>/<component>/models`` is (re)written at every start by the serving layer's
  settings writer, run as a command (``python -m vatic.serving.runtimes.repository SERVICE_DIR REPOSITORY
  --registry-root <home>/registry`` with the model-server environment's interpreter): MLServer's
  ``settings.json`` and ``model-settings.json`` from the service config, the artifacts copied from the registry
  after their sha256 pins and the pickle rule are checked. A command, because it runs in the other environment
  (the registry backends' clients are installed there).
* A service whose folder has no ``service.yaml`` yet, or whose model is not in the registry yet, is **skipped**:
  ``start`` returns False without starting anything, and the component's health says why in one line (state
  ``skipped``), ending with "run `vatic usecases prepare`" when the artifacts are what is missing. Nothing else
  is skipped: a service config or artifact that is wrong fails the start with the writer's one-line error.
* Then a :class:`~vatic.cli.stack.mlserver.ModelServer` on loopback, with the service's
  ``parallel_workers``, is started and waited for until every model has loaded (``model_start_timeout_s``).
* A service that follows its registry (``registry.refresh_s`` > 0) gets its rollout controller
  (:mod:`vatic.serving.runtimes.rollout`) as a second process, ``<component>-rollout``, started once the server
  is ready and stopped before it; its log is ``<home>/<component>-rollout/<component>-rollout.log``.
"""

from __future__ import annotations

import importlib
import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from vatic.cli.stack.components import Component, Health
from vatic.cli.stack.process import ManagedProcess, port_is_free
from vatic.cli.stack.settings import StackSettings, checkout_root
from vatic.schemas.errors import ConfigError, PortInUse
from vatic.serving.runtimes import repository, rollout

if TYPE_CHECKING:
    from vatic.cli.stack.mlserver import ModelServer

__all__ = ["MODEL_SERVERS", "FraudModelServer", "ProductModelServer", "ServiceModelServer"]

#: the repository writer's module (serving layer), run as ``python -m`` in the model-server environment
WRITER = repository.__name__
_NOT_PREPARED = repository.EXIT_NOT_PREPARED


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1].removeprefix("vatic: ") if lines else ""


class ServiceModelServer(Component):
    """An MLServer serving one service folder's model (see the module docstring).

    ``service_dir``, ``registry_root`` and the ports default to the stack settings; ``name`` names the component
    (state under ``<home>/<name>/``) so that tests can run one on spare ports.
    """

    #: use case folder under the use cases folder (``fraud_detection``)
    case: ClassVar[str]
    #: the ``StackSettings`` fields of the http, grpc and metrics ports
    port_settings: ClassVar[tuple[str, str, str]]

    def __init__(
        self,
        settings: StackSettings | None = None,
        *,
        name: str | None = None,
        service_dir: Path | None = None,
        registry_root: Path | None = None,
        ports: tuple[int, int, int] | None = None,
    ) -> None:
        if name is not None:
            self.name = name
        super().__init__(settings or StackSettings())
        self.service_dir = service_dir if service_dir is not None else self._default_service_dir()
        self.registry_root = registry_root if registry_root is not None else self.settings.model_registry_root
        chosen = ports or tuple(int(getattr(self.settings, field)) for field in self.port_settings)
        self.http_port, self.grpc_port, self.metrics_port = chosen
        self._server: ModelServer | None = None
        self.follows = False
        self.controller = ManagedProcess(f"{self.name}-rollout", self.settings.home)

    def _default_service_dir(self) -> Path:
        """``<usecases_dir>/<case>/service``; the use cases folder defaults to the checkout's (an installed vatic
        without ``VATIC_STACK_USECASES_DIR``: ``examples`` of the working directory)."""
        root = self.settings.usecases_dir
        if root is None:
            checkout = checkout_root()
            root = (checkout if checkout is not None else Path()) / "examples"
        return root / self.case / "service"

    @property
    def server(self) -> ModelServer:
        """The MLServer process component (built on first use)."""
        if self._server is None:
            # imported here: mlserver.py imports components.py, which registers this module's classes
            module = importlib.import_module("vatic.cli.stack.mlserver")
            timeout = max(self.settings.start_timeout_s, self.settings.model_start_timeout_s)
            self._server = module.ModelServer(
                self.settings.model_copy(update={"start_timeout_s": timeout}),
                name=self.name,
                http_port=self.http_port,
                grpc_port=self.grpc_port,
                metrics_port=self.metrics_port,
                parallel_workers=0,
            )
        return self._server

    @property
    def repository(self) -> Path:
        """The model repository the writer fills and MLServer serves: ``<home>/<name>/models``."""
        return self.process.dir / "models"

    @property
    def skip_file(self) -> Path:
        return self.process.dir / "skipped"

    @property
    def ports(self) -> list[int]:
        return [self.http_port, self.grpc_port, self.metrics_port]

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.http_port}"

    def argv(self) -> list[str]:
        return self.server.argv()

    def ready(self) -> bool:
        return self.server.ready()

    def write_repository(self) -> str | None:
        """Run the settings writer; None when the repository is written, else why the service is skipped.

        Raises ``ConfigError`` (one line) when the service config or its artifacts are wrong.
        """
        service_yaml = self.service_dir / "service.yaml"
        if not service_yaml.is_file():
            return f"skipped: no service definition at {service_yaml} yet"
        module = importlib.import_module("vatic.cli.stack.mlserver")
        python = module.mlserver_executable().parent / "python"
        argv = [str(python), "-m", WRITER, str(self.service_dir), str(self.repository)]
        argv += ["--registry-root", str(self.registry_root)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode == _NOT_PREPARED:
            return f"skipped: {_one_line(done.stderr)}; run `vatic usecases prepare` to train and register it"
        if done.returncode != 0:
            raise ConfigError(
                f"{self.name}: writing its model repository failed: {_one_line(done.stderr) or done.returncode}"
            )
        try:
            summary = json.loads(done.stdout.strip().splitlines()[-1])
            workers = int(summary.get("parallel_workers") or 0)
        except (ValueError, IndexError, AttributeError, TypeError) as exc:
            raise ConfigError(f"{self.name}: the settings writer printed no summary ({exc})") from None
        self.server.parallel_workers = workers
        self.follows = float(summary.get("refresh_s") or 0) > 0
        return None

    def start(self) -> bool:
        """Write the repository and start MLServer; False when already running or skipped (see the module)."""
        server = self.server
        if server.process.pid() is not None:
            return server.start()
        for kind, port, field in zip(("http", "grpc", "metrics"), self.ports, self.port_settings, strict=True):
            if not port_is_free(self.settings.host, port):
                raise PortInUse(
                    f"{self.name}: {kind} port {port} on {self.settings.host} is taken by another process; stop it "
                    f"or move it with VATIC_STACK_{field.upper()}=<free port>"
                )
        reason = self.write_repository()
        self.process.dir.mkdir(parents=True, exist_ok=True)
        if reason is not None:
            self.skip_file.write_text(reason + "\n", encoding="utf-8")
            return False
        self.skip_file.unlink(missing_ok=True)
        started = server.start()
        if self.follows and self.controller.pid() is None:
            python = importlib.import_module("vatic.cli.stack.mlserver").mlserver_executable().parent / "python"
            self.controller.start(
                rollout.controller_argv(
                    python, self.service_dir, self.repository, self.url, registry_root=self.registry_root
                )
            )
        return started

    def stop(self) -> bool:
        self.controller.stop()
        return self.server.stop()

    def skipped(self) -> str | None:
        """Why the last start skipped this service (None when it did not)."""
        try:
            return self.skip_file.read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    def health(self) -> Health:
        health = self.server.health()
        reason = self.skipped()
        if health.state == "down" and reason is not None:
            return Health(self.name, "skipped", health.port, None, reason)
        detail = health.detail
        if health.state == "up" and self.controller.recorded() is not None and self.controller.pid() is None:
            detail = f"{detail}; its rollout controller has exited (log {self.controller.log_file})".lstrip("; ")
        return Health(self.name, health.state, health.port, health.pid, detail)

    def describe(self) -> str:
        return self.server.describe()


class FraudModelServer(ServiceModelServer):
    """The fraud detection service's model server (``fraud-model``)."""

    name = "fraud-model"
    case = "fraud_detection"
    port_settings = ("fraud_http_port", "fraud_grpc_port", "fraud_metrics_port")


class ProductModelServer(ServiceModelServer):
    """The product categorization service's model server (``product-model``)."""

    name = "product-model"
    case = "product_categorization"
    port_settings = ("product_http_port", "product_grpc_port", "product_metrics_port")


#: the stack's model server components, in start order
MODEL_SERVERS: dict[str, type[ServiceModelServer]] = {
    FraudModelServer.name: FraudModelServer,
    ProductModelServer.name: ProductModelServer,
}
