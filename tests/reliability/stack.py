"""The private stack of the reliability suite: its own Kafka, Redis, schema registry, Feast repo and model server.

The suite kills and pauses processes, so it never touches the default stack (``vatic stack up``) that
developers and the other tests use: everything lives under a temporary ``VATIC_STACK_HOME`` and binds free
loopback ports picked at start. Every process it signals is one this module started (PIDs from our own
:class:`~vatic.cli.stack.process.ManagedProcess` records).

``secure=True`` runs the secured broker (:class:`~vatic.cli.stack.secure.SecureKafkaBroker`: SASL_SSL with
SCRAM, a private CA, ACLs denying by default) instead of the plain one, on free ports of its own too. Then every
Kafka client of the suite connects through :meth:`PrivateStack.kafka_config` as ``admin`` or the application
user, each case grants the job's principal (``vatic-job``) its own topics, group and transactional ids
(:meth:`PrivateStack.grant_case`), the job gets its identity from ``VATIC_KAFKA_*`` (:meth:`PrivateStack.job_env`)
and Kafka's command-line tools a client properties file (:meth:`PrivateStack.command_config`, mode 0600).
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
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.fixtures.model_server import free_ports
from vatic.cli.stack.components import KafkaBroker, Redis, SchemaRegistry
from vatic.cli.stack.mlserver import ModelServer
from vatic.cli.stack.secure import ADMIN, APP, JOB, SecureKafkaBroker, app_acls, apply_acls, job_acls
from vatic.cli.stack.settings import StackSettings, checkout_root

HERE = Path(__file__).resolve().parent
RUNTIME = HERE / "fault_runtime.py"
MODEL = "faulty"
#: the StackSettings fields of the secured broker's listeners (SASL_SSL clients, controller, mutual TLS)
_SECURE_PORTS = ("kafka_secure_port", "kafka_secure_controller_port", "kafka_mtls_port")


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
    and removes the temporary home unless ``keep``. ``secure``: the secured broker instead of the plain one (see
    the module docstring).
    """

    def __init__(self, root: Path | None = None, *, keep: bool = False, secure: bool = False) -> None:
        self.root = Path(root or tempfile.mkdtemp(prefix="vatic-reliability-"))
        self.keep = keep
        self.secure = secure
        self.home = self.root / "home"
        # one call: no two ports the same. The secured broker's listeners get free ports too (never 9094-9096)
        ports = free_ports(7 + (len(_SECURE_PORTS) if secure else 0))
        kafka, controller, redis, registry, http, grpc, metrics = ports[:7]
        secure_ports = dict(zip(_SECURE_PORTS, ports[7:], strict=True)) if secure else {}
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
        ).model_copy(update=secure_ports)
        self.kafka: KafkaBroker = SecureKafkaBroker(self.settings) if secure else KafkaBroker(self.settings)
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
        if isinstance(self.kafka, SecureKafkaBroker):
            return self.kafka.bootstrap
        return self.settings.kafka_bootstrap

    def kafka_config(self, user: str = ADMIN, **extra: Any) -> dict[str, Any]:
        """A confluent-kafka configuration for this stack's broker; on the secured one as ``user`` (``admin``: the
        super user; ``vatic-app``: what :meth:`grant_case` granted it), SCRAM-SHA-512 over TLS, librdkafka's log
        lines to vatic's ``vatic.kafka.librdkafka`` logger unless ``extra`` (applied last) names another ``logger``
        (the harness's clients send theirs to the case's ``clients.log``)."""
        if isinstance(self.kafka, SecureKafkaBroker):
            conf = self.kafka.client_settings(user).librdkafka()
        else:
            conf = {"bootstrap.servers": self.bootstrap}
        conf.update(extra)
        return conf

    def command_config(self) -> Path | None:
        """A client properties file (``--command-config``) for Kafka's command-line tools as ``admin`` on the
        secured broker (mode 0600, in this stack's folder: it holds the password); None on the plain broker."""
        if not isinstance(self.kafka, SecureKafkaBroker):
            return None
        file = self.root / "kafka-admin.properties"
        password = self.kafka.credentials()[ADMIN]
        lines = [
            "security.protocol=SASL_SSL",
            "sasl.mechanism=SCRAM-SHA-512",
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{ADMIN}" password="{password}";',
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={self.kafka.ca.cert}",
        ]
        file.touch(mode=0o600, exist_ok=True)
        os.chmod(file, 0o600)
        file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return file

    def grant_case(
        self, *, input_topic: str, output_topics: Iterable[str], group: str, transactional_prefix: str
    ) -> int:
        """On the secured broker: grant the job's principal exactly what one case's job needs (its topics, its
        consumer group, its transactional ids) and the application user the input (write) and outputs (read);
        returns how many ACLs were created (0 on the plain broker, which has no authorizer)."""
        if not isinstance(self.kafka, SecureKafkaBroker):
            return 0
        outputs = list(output_topics)
        grants = [
            *job_acls(
                JOB,
                input_topic=input_topic,
                output_topics=outputs,
                group=group,
                transactional_prefix=transactional_prefix,
            ),
            *app_acls(APP, produce=[input_topic], consume=outputs),
        ]
        return apply_acls(self.kafka.client_settings(ADMIN), grants)

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
        """Environment of a ``vatic stream run`` child that points it at this stack and nothing else; on the
        secured broker the job is ``vatic-job`` (``VATIC_KAFKA_*``: SCRAM-SHA-512 over TLS, this stack's CA)."""
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("VATIC_STACK_", "VATIC_STREAM_", "VATIC_KAFKA_"))
        }
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
        if isinstance(self.kafka, SecureKafkaBroker):
            job = self.kafka.client_settings(JOB)
            assert job.sasl_mechanism is not None
            assert job.sasl_password is not None
            env.update(
                {
                    **{f"VATIC_STACK_{field.upper()}": str(getattr(self.settings, field)) for field in _SECURE_PORTS},
                    "VATIC_KAFKA_BOOTSTRAP_SERVERS": job.bootstrap_servers,
                    "VATIC_KAFKA_SECURITY_PROTOCOL": job.security_protocol,
                    "VATIC_KAFKA_SASL_MECHANISM": job.sasl_mechanism,
                    "VATIC_KAFKA_SASL_USERNAME": JOB,
                    "VATIC_KAFKA_SASL_PASSWORD": job.sasl_password.get_secret_value(),
                    "VATIC_KAFKA_SSL_CA_LOCATION": str(self.kafka.ca.cert),
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
