"""A real MLServer process of the local stack, started from the model-server environment (``.venv/server``).

Contract:

* The executable is ``$VATIC_STACK_MLSERVER`` when set, else ``<checkout>/.venv/server/bin/mlserver``, else
  ``mlserver`` on ``PATH`` (an installed vatic). Missing: one :class:`MissingDependency` line ("run make setup").
* MLServer reads its server settings from ``<folder>/settings.json`` of the folder it serves. So that the model
  repository is never written to, and so that several servers can serve one repository side by side, each
  server serves its own folder ``<home>/<name>/serve/``: our ``settings.json`` (loopback host, the http / grpc /
  metrics ports, ``parallel_workers``, metrics and environment folders under ``<home>/<name>/``) and one
  symlink ``models -> <model repository>``. A ``settings.json`` at the repository's root is the base our keys
  override. Models are found below the symlink as MLServer finds them anywhere (``**/model-settings.json``),
  so models added to the repository later can be loaded through MLServer's repository API.
* Ready means ``GET /v2/health/ready`` answers 200 (every registered model is loaded). MLServer drops a model
  that fails to load from its registry and then shuts itself down, so after that :meth:`start` also checks the
  repository index: a model left UNAVAILABLE fails the start with the exception line from the log.
* MLServer's inference workers (``parallel_workers`` > 0) are ``multiprocessing`` children that ignore SIGTERM
  and are shut down by the main process. :meth:`stop` signals the process group as every component does; when
  the main process is gone (stopped, or killed earlier) any process still in its session - verified by session
  id, process group and interpreter, and signalled through a pidfd so that a reused PID can never be hit - is
  killed, so that no worker outlives its server.
* MLServer 1.7.1 may not finish a SIGTERM while a request whose client has gone away is still in a worker
  (uvicorn waits for the request's task, which the closed inference pool never answers): :meth:`stop` then
  SIGKILLs it after ``stop_timeout_s`` and sweeps the workers as above.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from vatic.cli.stack.components import Component
from vatic.cli.stack.process import kill_session, port_is_free
from vatic.cli.stack.settings import StackSettings, checkout_root
from vatic.connectors import procfs
from vatic.schemas.errors import ConfigError, MissingDependency, PortInUse, StartFailed

__all__ = ["ModelServer", "mlserver_executable"]

#: Keys of MLServer's settings.json that the component owns (``server_settings`` may not override them).
_OWNED = frozenset(
    {"host", "http_port", "grpc_port", "metrics_port", "parallel_workers", "metrics_dir", "environments_dir"}
)


#: the last line of a Python traceback: ``package.module.SomeError: message`` or ``ValueError: message``
_EXCEPTION_LINE = re.compile(r"^(?:[a-z_]\w*\.)+[A-Z]\w*: .+$|^[A-Z]\w*(?:Error|Exception): .+$", re.MULTILINE)


def mlserver_executable() -> Path:
    """The ``mlserver`` executable of the model-server environment; :class:`MissingDependency` when absent."""
    configured = os.environ.get("VATIC_STACK_MLSERVER")
    if configured:
        path = Path(configured).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise MissingDependency(
            f"VATIC_STACK_MLSERVER={configured} is not an executable file: point it at the mlserver of the "
            "model-server environment, or unset it and run `make setup`"
        )
    root = checkout_root()
    if root is not None:
        path = root / ".venv" / "server" / "bin" / "mlserver"
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise MissingDependency(
            f"mlserver not found at {path}: run `make setup` (it creates the model-server environment "
            ".venv/server) or point VATIC_STACK_MLSERVER at an mlserver executable"
        )
    found = shutil.which("mlserver")
    if found is None:
        raise MissingDependency(
            "mlserver not found: install vatic's model-server environment (`pip install 'vatic[server]'`) "
            "or point VATIC_STACK_MLSERVER at an mlserver executable"
        )
    return Path(found)


class ModelServer(Component):
    """One MLServer process serving one model repository on loopback ports.

    ``name`` names the component (state under ``<home>/<name>/``, PID file, log) so that tests can run several
    side by side. ``model_repository`` defaults to ``<home>/<name>/models`` (created empty). ``server_settings``
    adds MLServer settings (e.g. ``{"debug": True}``); the keys this component owns (host, ports, workers and
    its folders) cannot be overridden there. ``ModelServer(settings)`` alone works, as for every component of
    :data:`~vatic.cli.stack.components.COMPONENTS` (it is not registered there yet). It starts through
    ``vatic.serving.runtimes.serve`` (``mlserver start`` with a request body limit) unless ``stock``.
    """

    name = "mlserver"

    def __init__(
        self,
        settings: StackSettings | None = None,
        *,
        name: str = "mlserver",
        model_repository: Path | None = None,
        http_port: int = 8080,
        grpc_port: int = 8083,
        metrics_port: int = 8082,
        parallel_workers: int = 1,
        server_settings: Mapping[str, Any] | None = None,
        stop_timeout_s: float = 20.0,
        stock: bool = False,
    ) -> None:
        if parallel_workers < 0:
            raise ValueError(f"parallel_workers must be >= 0, got {parallel_workers}")
        if len({http_port, grpc_port, metrics_port}) != 3:
            raise ValueError(f"{name}: http, grpc and metrics ports must differ")
        owned = _OWNED.intersection(server_settings or {})
        if owned:
            raise ValueError(f"{name}: server_settings may not set {sorted(owned)}; use the constructor arguments")
        self.name = name
        super().__init__(settings or StackSettings())
        self.model_repository = (model_repository or self.process.dir / "models").resolve()
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.metrics_port = metrics_port
        self.parallel_workers = parallel_workers
        self.server_settings = dict(server_settings or {})
        self.stop_timeout_s = stop_timeout_s
        self.stock = stock

    @property
    def ports(self) -> list[int]:
        return [self.http_port, self.grpc_port, self.metrics_port]

    @property
    def url(self) -> str:
        """Base URL of the V2 REST API."""
        return f"http://{self.settings.host}:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"{self.settings.host}:{self.grpc_port}"

    def call_url(self, protocol: str) -> str:
        """The address a caller of ``serving.protocol`` uses: ``grpc://host:grpc_port`` or the REST URL."""
        return f"grpc://{self.grpc_target}" if protocol == "grpc" else self.url

    @property
    def serve_dir(self) -> Path:
        """The folder MLServer serves: our settings.json and the ``models`` symlink."""
        return self.process.dir / "serve"

    def argv(self) -> list[str]:
        """``mlserver start`` through vatic's launcher (which adds a request body limit), or plain ``mlserver
        start`` for a ``stock`` server (the benchmarks' baseline)."""
        if self.stock:
            return [str(mlserver_executable()), "start", str(self.serve_dir)]
        python = mlserver_executable().parent / "python"
        return [str(python), "-m", "vatic.serving.runtimes.serve", "start", str(self.serve_dir)]

    def server_settings_json(self) -> dict[str, Any]:
        """The content of the settings.json we write (the repository's own settings.json is the base)."""
        base: dict[str, Any] = {}
        own = self.model_repository / "settings.json"
        if own.is_file():
            try:
                loaded = json.loads(own.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise ConfigError(f"{self.name}: {own} is not valid JSON: {exc}") from exc
            if isinstance(loaded, dict):
                base = {k: v for k, v in loaded.items() if k not in _OWNED and k != "model_repository_root"}
        return {
            "debug": False,
            **base,
            **self.server_settings,
            "host": self.settings.host,
            "http_port": self.http_port,
            "grpc_port": self.grpc_port,
            "metrics_port": self.metrics_port,
            "parallel_workers": self.parallel_workers,
            "metrics_dir": str(self.process.dir / "metrics"),
            "environments_dir": str(self.process.dir / "envs"),
        }

    def prepare(self) -> None:
        if not self.model_repository.is_dir():
            if self.model_repository == (self.process.dir / "models").resolve():
                self.model_repository.mkdir(parents=True, exist_ok=True)
            else:
                raise ConfigError(f"{self.name}: model repository {self.model_repository} is not a folder")
        self.serve_dir.mkdir(parents=True, exist_ok=True)
        (self.serve_dir / "settings.json").write_text(
            json.dumps(self.server_settings_json(), indent=2) + "\n", encoding="utf-8"
        )
        link = self.serve_dir / "models"
        if link.is_symlink() or link.exists():
            if not link.is_symlink():
                raise ConfigError(f"{self.name}: {link} exists and is not our symlink; remove it")
            link.unlink()
        link.symlink_to(self.model_repository, target_is_directory=True)
        # MLServer's multiprocess metrics files of an earlier run would be merged into this run's metrics
        shutil.rmtree(self.process.dir / "metrics", ignore_errors=True)

    def start(self) -> bool:
        """Start unless running; wait until every model has loaded. True if this call started it.

        Raises :class:`PortInUse` (one line) when a port is taken, :class:`MissingDependency` when the
        model-server environment is missing, :class:`StartFailed` with the log's last lines otherwise.
        """
        if self.process.pid() is not None:
            self.process.wait_ready(self.ready, self.settings.start_timeout_s)
            return False
        argv = self.argv()
        for kind, port in zip(("http", "grpc", "metrics"), self.ports, strict=True):
            if not port_is_free(self.settings.host, port):
                raise PortInUse(
                    f"{self.name}: {kind} port {port} on {self.settings.host} is taken by another process; "
                    f"stop it or give this model server another {kind} port"
                )
        self.prepare()
        self.process.start(argv, env=self.env())
        try:
            try:
                self.process.wait_ready(self.ready, self.settings.start_timeout_s)
            except StartFailed as exc:
                raise StartFailed(f"{exc}; first error: {self._first_error()}") from None
            self._check_models_loaded()
        except BaseException:
            self.stop()  # the whole session: workers of a half-started server must not outlive it
            raise
        return True

    def _check_models_loaded(self) -> None:
        """Raise :class:`StartFailed` when a model of the repository failed to load.

        MLServer drops a model that fails to load from its registry, so ``/v2/health/ready`` (every *registered*
        model ready) can answer 200 for a moment before the server shuts itself down; the repository index
        still lists the model, as UNAVAILABLE.
        """
        try:
            response = httpx.post(f"{self.url}/v2/repository/index", json={}, timeout=10.0, trust_env=False)
            response.raise_for_status()
            items = response.json()
            failed = sorted(str(item.get("name")) for item in items if item.get("state") == "UNAVAILABLE")
        except (httpx.HTTPError, ValueError, TypeError, AttributeError) as exc:
            raise StartFailed(
                f"{self.name}: its model repository index could not be read ({type(exc).__name__}: {exc}); "
                f"first error: {self._first_error()} (log: {self.process.log_file})"
            ) from None
        if failed:
            raise StartFailed(
                f"{self.name}: model(s) {', '.join(failed)} failed to load: {self._first_error()} "
                f"(log: {self.process.log_file})"
            )

    def _first_error(self) -> str:
        """The first exception line (``package.ErrorName: message``) this run wrote to the log."""
        try:
            text = self.process.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        run = text.rsplit("--- vatic: starting", 1)[-1]
        found = _EXCEPTION_LINE.search(run)
        return found.group(0).strip() if found else "see the log"

    def ready(self) -> bool:
        response = httpx.get(f"{self.url}/v2/health/ready", timeout=2.0, trust_env=False)
        return response.status_code == 200

    def stop(self) -> bool:
        """Stop the server and every process of its session (inference workers included)."""
        recorded = self.process.recorded() or {}
        leader, token = recorded.get("pid"), recorded.get("token")
        stopped = self.process.stop(timeout_s=self.stop_timeout_s)
        if isinstance(leader, int) and isinstance(token, str) and token:
            kill_session(leader, token)
        return stopped

    def session_pids(self) -> list[int]:
        """PIDs of the running server's session (main process, inference workers, multiprocessing helpers)."""
        pid = self.process.pid()
        return [pid, *(p for p in _session_members(pid) if p != pid)] if pid is not None else []

    def describe(self) -> str:
        workers = f"{self.parallel_workers} inference worker{'s' if self.parallel_workers != 1 else ''}"
        return f"MLServer {self.url} (grpc {self.grpc_port}, {workers}) models from {self.model_repository}"


# --- the session sweep ------------------------------------------------------------------------------------


def _session_members(leader: int) -> list[int]:
    """Live processes whose process group and session are both ``leader`` (the session we created)."""
    return [
        pid
        for pid in procfs.pids()
        if (stat := procfs.stat(pid)) is not None and stat.alive and stat.group == leader and stat.session == leader
    ]
