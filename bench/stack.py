"""What the benchmarks run against, brought up with vatic's own stack code and stopped again afterwards.

:class:`BenchStack` starts on demand (and stops, in reverse order, only what it started itself):

* ``kafka``, ``redis``, ``fraud-model`` (vatic's model server: the settings writer's repository, as
  ``vatic stack up`` runs it) and ``gateway`` - the local stack's components with their ``StackSettings`` ports
  (``VATIC_STACK_*``); ones that already run (a user's ``vatic stack up``) are used as they are;
* ``stock``: the baseline, a stock MLServer 1.7.1 with MLServer's DEFAULT settings (``parallel_workers`` and
  ``debug`` read from ``mlserver.settings.Settings()`` of the server environment; only host, ports and folders
  are set) serving the same LightGBM artifact with MLServer's own ``mlserver_lightgbm`` runtime;
* ``batched``: vatic's repository with MLServer adaptive batching switched on (``max_batch_size`` /
  ``max_batch_time``), for the batching comparison.

Extra servers bind ``--base-port`` .. ``--base-port + 5`` (default 8210).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import ROOT, SERVER_PY, BenchError, Options, say
from vatic.cli.stack.components import Component
from vatic.cli.stack.mlserver import ModelServer
from vatic.cli.stack.settings import StackSettings
from vatic.cli.stack.stack import Stack

FRAUD_MODEL = "fraud-detector"
BATCH_SIZE = 32
BATCH_TIME_S = 0.002


def mlserver_defaults() -> dict[str, Any]:
    """MLServer's own default ``parallel_workers`` and ``debug`` (read from the server environment)."""
    code = "import json; from mlserver.settings import Settings as S; s = S(); " + (
        "print(json.dumps({'parallel_workers': s.parallel_workers, 'debug': s.debug}))"
    )
    done = subprocess.run([str(SERVER_PY), "-c", code], capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0:
        raise BenchError(f"cannot import mlserver in {SERVER_PY}: run `make setup`")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def newest_artifact(registry: Path, model: str = FRAUD_MODEL) -> Path:
    """The newest version folder of ``model`` in the local model registry."""
    folder = registry / model
    versions = sorted((p for p in folder.glob("*") if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if not versions:
        raise BenchError(f"no {model} in the model registry {registry}: run `make setup` (vatic usecases prepare)")
    return versions[-1]


class BenchStack:
    """Components of one benchmark run; :meth:`need` starts them, :meth:`close` stops what this run started."""

    def __init__(self, options: Options, settings: StackSettings | None = None) -> None:
        self.options = options
        self.settings = settings or StackSettings()
        self.stack = Stack(self.settings)
        self.started: list[Component] = []
        self.extra: dict[str, ModelServer] = {}
        self.defaults: dict[str, Any] = {}
        self._lock = threading.Lock()

    # --- checks -----------------------------------------------------------------------------------------

    def preflight(self) -> None:
        """Environments and prepared use cases present, else one line."""
        if not SERVER_PY.is_file():
            raise BenchError(f"model-server environment missing ({SERVER_PY}): run `make setup`")
        prepared = self.settings.home / "usecases" / "fraud_detection" / "prepare.json"
        if not prepared.is_file():
            raise BenchError(
                f"fraud use case not prepared under {self.settings.home} (no {prepared.name}): run `make setup` "
                "(or `vatic usecases prepare` with this VATIC_STACK_HOME)"
            )
        newest_artifact(self.settings.model_registry_root)

    # --- components -------------------------------------------------------------------------------------

    def _start(self, component: Component) -> None:
        say(f"starting {component.name}")
        try:
            if component.start():
                with self._lock:
                    self.started.append(component)
        except Exception as exc:
            raise BenchError(f"{component.name} failed to start: {str(exc).strip().splitlines()[0]}") from exc
        health = component.health()
        if health.state not in ("up", "running"):
            raise BenchError(f"{component.name} is {health.state}: {health.detail}")

    #: components that read what another one writes or serves: ``gateway`` calls the model server and Redis,
    #: ``batched`` copies the repository ``fraud-model`` writes. They start in a second wave.
    AFTER = {"gateway": ("fraud-model", "redis"), "batched": ("fraud-model",)}

    def _component(self, name: str) -> Component:
        if name in self.stack.components:
            return self.stack.components[name]
        if name in ("stock", "batched"):
            return self.stock() if name == "stock" else self.batched()
        raise BenchError(f"unknown bench component {name}")

    def _missing(self, name: str) -> bool:
        component = self._component(name)
        return component.process.pid() is None or component.health().state != "up"

    def need(self, *names: str) -> None:
        """Make sure the named components run (stack names, ``stock`` or ``batched``).

        Those not running start concurrently (each is its own process; the start-up waits are what costs),
        in two waves: first the ones nothing else needs, then those in :attr:`AFTER` once theirs are up.
        """
        wanted = list(dict.fromkeys(names))
        first = [n for n in wanted if n not in self.AFTER]
        second = [n for n in wanted if n in self.AFTER]
        for dependency in sorted({d for n in second for d in self.AFTER[n]} - set(first)):
            first.append(dependency)
        for wave in (first, second):
            self._start_all([n for n in wave if self._missing(n)])

    def _start_all(self, names: list[str]) -> None:
        if len(names) <= 1:
            for name in names:
                self._start(self._component(name))
            return
        components = [self._component(name) for name in names]  # built here: stock()/batched() are not locked
        errors: list[BenchError] = []
        with ThreadPoolExecutor(max_workers=len(components)) as pool:
            for future in [pool.submit(self._start, c) for c in components]:
                try:
                    future.result()
                except BenchError as exc:
                    errors.append(exc)
        if errors:
            raise errors[0]

    def url(self, name: str) -> str:
        if name in self.extra:
            return self.extra[name].url
        component: Any = self.stack.components[name]
        if name == "gateway":
            return f"http://{self.settings.host}:{self.settings.gateway_port}"
        return str(component.url)

    def pid(self, name: str) -> int | None:
        if name in self.extra:
            return self.extra[name].process.pid()
        return self.stack.components[name].process.pid()

    @property
    def vatic_repository(self) -> Path:
        component: Any = self.stack.components["fraud-model"]
        return Path(component.repository)

    def stock(self) -> ModelServer:
        """The stock MLServer baseline (default settings, MLServer's own LightGBM runtime, same model file)."""
        if "stock" in self.extra:
            return self.extra["stock"]
        self.defaults = mlserver_defaults()
        artifact = newest_artifact(self.settings.model_registry_root)
        repo = self.options.tmp / "stock-repository"
        shutil.rmtree(repo, ignore_errors=True)
        (repo / FRAUD_MODEL).mkdir(parents=True)
        shutil.copy2(artifact / "model.txt", repo / FRAUD_MODEL / "model.txt")
        settings = {
            "name": FRAUD_MODEL,
            "implementation": "mlserver_lightgbm.LightGBMModel",
            "parameters": {"uri": "./model.txt"},
        }
        (repo / FRAUD_MODEL / "model-settings.json").write_text(json.dumps(settings, indent=2) + "\n")
        port = self.options.base_port
        server = ModelServer(
            self.settings.model_copy(update={"start_timeout_s": 180.0}),
            name="bench-stock-mlserver",
            model_repository=repo,
            http_port=port,
            grpc_port=port + 1,
            metrics_port=port + 2,
            parallel_workers=int(self.defaults["parallel_workers"]),
            server_settings={"debug": bool(self.defaults["debug"])},
            stock=True,  # plain `mlserver start`: the baseline is MLServer as users run it
        )
        self.extra["stock"] = server
        return server

    def batched(self) -> ModelServer:
        """vatic's fraud repository with adaptive batching on (needs ``fraud-model`` started first)."""
        if "batched" in self.extra:
            return self.extra["batched"]
        source = self.vatic_repository
        if not (source / FRAUD_MODEL / "model-settings.json").is_file():
            raise BenchError(f"vatic's fraud repository {source} is not written: start fraud-model first")
        repo = self.options.tmp / "batched-repository"
        shutil.rmtree(repo, ignore_errors=True)
        shutil.copytree(source, repo)
        path = repo / FRAUD_MODEL / "model-settings.json"
        model_settings = json.loads(path.read_text())
        model_settings.update({"max_batch_size": BATCH_SIZE, "max_batch_time": BATCH_TIME_S})
        path.write_text(json.dumps(model_settings, indent=2) + "\n")
        component: Any = self.stack.components["fraud-model"]
        port = self.options.base_port + 3
        server = ModelServer(
            self.settings.model_copy(update={"start_timeout_s": 180.0}),
            name="bench-batched-mlserver",
            model_repository=repo,
            http_port=port,
            grpc_port=port + 1,
            metrics_port=port + 2,
            parallel_workers=int(component.server.parallel_workers),
        )
        self.extra["batched"] = server
        return server

    def stop(self, name: str) -> None:
        """Stop one extra server or stack component if this run started it (frees CPU and memory)."""
        component: Component | None = self.extra.get(name) or self.stack.components.get(name)
        if component is not None and component in self.started:
            say(f"stopping {component.name}")
            component.stop()
            self.started.remove(component)

    def close(self) -> None:
        """Stop, in reverse order, every component this run started."""
        for component in reversed(self.started):
            say(f"stopping {component.name}")
            try:
                component.stop()
            except Exception as exc:  # keep stopping the others
                say(f"stopping {component.name} failed: {exc}")
        self.started.clear()


def repo_root() -> Path:
    return ROOT
