"""The private stack of the reliability suite: its own Kafka, Redis, schema registry, Feast repo and model server.

The suite kills and pauses processes, so it never touches the default stack (``vatic stack up``) that
developers and the other tests use: everything lives under a temporary ``VATIC_STACK_HOME`` and binds free
loopback ports picked at start. Every process it signals is one this module started (PIDs from our own
:class:`~vatic.cli.stack.process.ManagedProcess` records).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.fixtures.model_server import free_ports
from vatic.cli.stack.components import KafkaBroker, Redis, SchemaRegistry
from vatic.cli.stack.mlserver import ModelServer
from vatic.cli.stack.settings import StackSettings, checkout_root

HERE = Path(__file__).resolve().parent
RUNTIME = HERE / "fault_runtime.py"
MODEL = "faulty"


class LatencyProxy:
    """A :mod:`tests.reliability.proxy` process in front of one server; :meth:`set` changes its delays."""

    def __init__(self, name: str, upstream: tuple[str, int], root: Path) -> None:
        self.name = name
        self.upstream = upstream
        self.port = free_ports(1)[0]
        self.control = root / f"{name}-latency.json"
        self.log = root / f"{name}-proxy.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.control.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "tests.reliability.proxy", "--listen", f"127.0.0.1:{self.port}",
                "--upstream", f"{self.upstream[0]}:{self.upstream[1]}", "--control", str(self.control)]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=HERE.parents[1])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the {self.name} latency proxy did not listen on {self.port} (log {self.log})")

    def set(self, **setting: object) -> None:
        """Delays from now on (see the proxy's module docstring); no argument: none."""
        tmp = self.control.with_suffix(".tmp")
        tmp.write_text(json.dumps(setting), encoding="utf-8")
        tmp.replace(self.control)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


class PrivateStack:
    """Kafka (KRaft), Redis, a schema registry (Apicurio, durable), a Feast repo materialized into that Redis,
    one MLServer with the fault model, and latency proxies in front of Redis and the model server.

    ``start()`` brings everything up (about a minute); ``stop()`` stops every process this object started
    and removes the temporary home unless ``keep``.
    """

    def __init__(self, root: Path | None = None, *, keep: bool = False) -> None:
        self.root = Path(root or tempfile.mkdtemp(prefix="vatic-reliability-"))
        self.keep = keep
        self.home = self.root / "home"
        kafka, controller, redis, registry, http, grpc, metrics = free_ports(7)
        cache = (checkout_root() or Path.cwd()) / ".cache"
        self.settings = StackSettings(
            home=self.home,
            cache=cache,
            kafka_port=kafka,
            kafka_controller_port=controller,
            redis_port=redis,
            registry_port=registry,
            start_timeout_s=120,
            kafka_heap="384m",
            registry_heap="256m",
        )
        self.kafka = KafkaBroker(self.settings)
        self.redis = Redis(self.settings)
        self.registry = SchemaRegistry(self.settings)
        self.fault_file = self.root / "model-fault"
        self.models = self.root / "models"
        self.model_server = ModelServer(
            self.settings,
            name="reliability-mlserver",
            model_repository=self.models,
            http_port=http,
            grpc_port=grpc,
            metrics_port=metrics,
            parallel_workers=0,
            stop_timeout_s=10.0,
        )
        self.feast_repo = self.root / "feast"
        self.redis_proxy = LatencyProxy("redis", (self.settings.host, redis), self.root)
        self.model_proxy = LatencyProxy("model", (self.settings.host, http), self.root)

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self._write_model()
        try:
            self.kafka.start()
            self.redis.start()
            self.registry.start()
            self.model_server.start()
            self.redis_proxy.start()
            self.model_proxy.start()
            from tests.fixtures import feast_repo

            feast_repo.build_repo(self.feast_repo, customers=50, redis_url=self.settings.redis_url)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.redis_proxy.stop()
        self.model_proxy.stop()
        for component in (self.model_server, self.registry, self.redis, self.kafka):
            pid = component.process.pid()
            if pid is not None:
                # a paused process ignores SIGTERM until continued
                os.kill(pid, signal.SIGCONT)
            component.stop()
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def _write_model(self) -> None:
        folder = self.models / MODEL
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(RUNTIME, folder / RUNTIME.name)
        settings = {
            "name": MODEL,
            "implementation": "fault_runtime.FaultModel",
            "parameters": {"extra": {"fault_file": str(self.fault_file), "big_bytes": 2_000_000}},
        }
        (folder / "model-settings.json").write_text(json.dumps(settings), encoding="utf-8")

    # -- what a job needs --------------------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka_bootstrap

    @property
    def model_url(self) -> str:
        return str(self.model_server.url)

    @property
    def registry_url(self) -> str:
        return self.settings.registry_url

    def proxied_model_url(self) -> str:
        return f"http://127.0.0.1:{self.model_proxy.port}"

    def proxied_redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_proxy.port}/0"

    def job_env(self) -> dict[str, str]:
        """Environment of a ``vatic stream run`` child that points it at this stack and nothing else."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VATIC_STACK_", "VATIC_STREAM_"))}
        env.update(
            {
                "VATIC_STACK_HOME": str(self.home),
                "VATIC_STACK_CACHE": str(self.settings.cache),
                "VATIC_STACK_KAFKA_PORT": str(self.settings.kafka_port),
                "VATIC_STACK_KAFKA_CONTROLLER_PORT": str(self.settings.kafka_controller_port),
                "VATIC_STACK_REDIS_PORT": str(self.settings.redis_port),
                "VATIC_STACK_MODEL_REGISTRY": os.environ.get(
                    "VATIC_STACK_MODEL_REGISTRY", str((checkout_root() or Path.cwd()) / ".vatic" / "model-registry")
                ),
                "VATIC_STREAM_BOOTSTRAP_SERVERS": self.bootstrap,
                "VATIC_STREAM_REDIS_URL": self.settings.redis_url,
            }
        )
        return env

    @property
    def schema_store(self) -> Path:
        return self.home / "schemas"

    # -- faults on our own processes -----------------------------------------------------------------------------

    def model_pids(self) -> list[int]:
        return self.model_server.session_pids()

    def signal_model(self, sig: signal.Signals) -> None:
        for pid in self.model_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def kill_model(self) -> None:
        """SIGKILL the model server and its workers (a crashed pod)."""
        self.signal_model(signal.SIGKILL)
        self.model_server.stop()  # reaps, clears the PID file, sweeps the session

    def restart_model(self) -> None:
        self.model_server.start()

    def redis_down(self) -> None:
        """Snapshot the online store (as a Redis with persistence would) and kill the server."""
        with socket.create_connection((self.settings.host, self.settings.redis_port), timeout=5) as sock:
            sock.sendall(b"*1\r\n$4\r\nSAVE\r\n")
            sock.recv(16)
        self.redis.process.send_signal(signal.SIGKILL)
        self.redis.stop()

    def redis_up(self) -> None:
        self.redis.start()

    def registry_down(self) -> None:
        """Kill the schema registry (SIGKILL: what it has answered must survive in its database file)."""
        self.registry.process.send_signal(signal.SIGKILL)
        self.registry.stop()

    def registry_up(self) -> None:
        self.registry.start()

    def kafka_bounce(self, *, hard: bool, down_s: float = 5.0) -> None:
        """Stop the broker (SIGTERM and wait for a clean shutdown, or SIGKILL) and start it again."""
        if hard:
            self.kafka.process.send_signal(signal.SIGKILL)
        self.kafka.stop()
        time.sleep(down_s)
        self.kafka.start()
