"""The components of the local stack: a Kafka broker (KRaft), Redis and a Confluent-compatible schema registry.

Each component knows how to check its prerequisites (one clear line when something is missing), start its
real process through :class:`~vatic.cli.stack.process.ManagedProcess`, tell when it is ready and report
its health. The model servers and the gateway are components of their own (:mod:`vatic.cli.stack.services`,
:mod:`vatic.cli.stack.gateway`), assembled with these in :data:`vatic.cli.stack.stack.STACK`.
"""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from vatic.cli.stack.artifacts import APICURIO_VERSION, KAFKA_VERSION, Artifacts
from vatic.cli.stack.process import ManagedProcess, port_accepts, port_is_free
from vatic.cli.stack.settings import StackSettings
from vatic.schemas.errors import ConfigError, MissingDependency, PortInUse


@dataclass(frozen=True)
class Health:
    """What ``vatic stack status`` prints for one component."""

    name: str
    state: str  # "up", "down", "starting", "foreign" (port held by a process that is not ours)
    port: int
    pid: int | None
    detail: str = ""


class Component(ABC):
    """One real server process of the stack."""

    name: str

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.process = ManagedProcess(self.name, settings.home)
        self.artifacts = Artifacts(settings.cache)

    @property
    @abstractmethod
    def ports(self) -> list[int]:
        """Every port the component binds; the first is the one clients use."""

    @abstractmethod
    def argv(self) -> list[str]:
        """The command line; raises :class:`ConfigError` when a prerequisite is missing."""

    @abstractmethod
    def ready(self) -> bool:
        """True when the component answers its own protocol (not just an open port)."""

    def prepare(self) -> None:  # noqa: B027 - optional hook, most components need none
        """One-time preparation before the first start (formatting storage, writing configs)."""

    def env(self) -> dict[str, str]:
        return {}

    def port_variable(self, port: int) -> str:
        """The ``VATIC_STACK_*`` variable that moves ``port`` (one of :attr:`ports`), for the one-line error."""
        return f"VATIC_STACK_{self.name.upper()}_PORT"

    def start(self) -> bool:
        """Start unless already running; wait until ready. Returns True if this call started it."""
        if self.process.pid() is not None:
            self.process.wait_ready(self.ready, self.settings.start_timeout_s)
            return False
        argv = self.argv()
        for port in self.ports:
            if not _port_frees(self.settings.host, port):
                raise PortInUse(
                    f"{self.name}: port {port} on {self.settings.host} is taken by another process; stop it or "
                    f"move vatic's {self.name} with {self.port_variable(port)}=<free port>"
                )
        self.prepare()
        self.process.start(argv, env=self.env())
        try:
            self.process.wait_ready(self.ready, self.settings.start_timeout_s)
        except ConfigError:
            self.process.stop(timeout_s=5)
            raise
        return True

    def stop(self) -> bool:
        """Stop our process if it runs; True when one was stopped."""
        return self.process.stop()

    def health(self) -> Health:
        pid = self.process.pid()
        port = self.ports[0]
        if pid is None:
            if port_accepts(self.settings.host, port):
                return Health(self.name, "foreign", port, None, "port held by a process vatic did not start")
            return Health(self.name, "down", port, None)
        try:
            ok = self.ready()
        except Exception as exc:  # health reports, it does not raise
            return Health(self.name, "starting", port, pid, f"{type(exc).__name__}: {exc}")
        return Health(self.name, "up" if ok else "starting", port, pid, self.describe())

    def describe(self) -> str:
        return ""


def _java(settings: StackSettings) -> str:
    java = shutil.which(settings.java)
    if java is None:
        raise MissingDependency(
            f"java not found ({settings.java!r}): install Java 17+ (`apt-get install -y openjdk-17-jre-headless`) "
            "or point VATIC_STACK_JAVA at it"
        )
    return java


class KafkaBroker(Component):
    """A single-node Apache Kafka broker in KRaft mode (combined broker + controller).

    Settings chosen for a local stack that must not lose data and must allow Flink's EXACTLY_ONCE sink:
    transaction logs with replication 1 / min ISR 1 (one node), ``transaction.max.timeout.ms`` raised to 1 h so
    that Flink's transaction timeout (checkpoint + restart time, well above the broker default of 15 min's
    needs) is accepted, and topic auto-creation off so that a missing topic is an error, not a silent new topic.
    """

    name = "kafka"

    @property
    def ports(self) -> list[int]:
        return [self.settings.kafka_port, self.settings.kafka_controller_port]

    @property
    def config_file(self) -> Path:
        return self.process.dir / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.process.dir / "data"

    def argv(self) -> list[str]:
        java = _java(self.settings)
        libs = self.artifacts.require_kafka()
        log4j = resources.files("vatic.cli.stack") / "conf" / "log4j2.properties"
        return [
            java,
            f"-Xmx{self.settings.kafka_heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dvatic.component={self.name}",
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            str(self.config_file),
        ]

    def server_properties(self) -> str:
        s = self.settings
        return "\n".join(
            [
                "# written by vatic (cli/stack/components.py); regenerated at each start",
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@{s.host}:{s.kafka_controller_port}",
                f"listeners=PLAINTEXT://{s.host}:{s.kafka_port},CONTROLLER://{s.host}:{s.kafka_controller_port}",
                f"advertised.listeners=PLAINTEXT://{s.host}:{s.kafka_port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                *broker_durability(self.data_dir),
                "",
            ]
        )

    def prepare(self) -> None:
        self.process.dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.server_properties(), encoding="utf-8")
        if (self.data_dir / "meta.properties").is_file():
            return
        cluster_id = self.storage_cluster_id()
        java = _java(self.settings)
        libs = self.artifacts.require_kafka()
        done = subprocess.run(
            [java, "-cp", f"{libs}/*", "kafka.tools.StorageTool", "format",
             "-t", cluster_id, "-c", str(self.config_file)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise ConfigError(f"kafka: formatting KRaft storage in {self.data_dir} failed: {done.stderr.strip()}")

    def storage_cluster_id(self) -> str:
        """The cluster id the storage is formatted with (a new one: this node is a cluster of its own)."""
        return new_cluster_id()

    def ready(self) -> bool:
        # Ready means the broker answers a metadata request and lists itself, not just an open port.
        if not port_accepts(self.settings.host, self.settings.kafka_port):
            return False
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.settings.kafka_bootstrap, "socket.timeout.ms": 1000})
        meta = admin.list_topics(timeout=2)
        return bool(meta.brokers)

    def describe(self) -> str:
        return f"Kafka {KAFKA_VERSION} (KRaft) bootstrap {self.settings.kafka_bootstrap}"


@dataclass(frozen=True)
class RedisTls:
    """Password and TLS for the stack's Redis (``vatic stack up --secure``).

    ``cert_file``/``key_file`` are the server's PEM certificate and key; the certificate must name the stack's
    host (``VATIC_STACK_HOST``, an IP SAN for ``127.0.0.1``) and verify against ``ca_file``. ``password`` is
    the ``default`` user's password: written to a config file only the owner can read (never on the command
    line) and left out of ``repr``.
    """

    password: str
    cert_file: Path
    key_file: Path
    ca_file: Path

    def __repr__(self) -> str:
        files = f"cert_file={self.cert_file!r}, key_file={self.key_file!r}, ca_file={self.ca_file!r}"
        return f"RedisTls(password='***', {files})"


def broker_durability(data_dir: Path, *, replicas: int = 1, min_isr: int = 1) -> list[str]:
    """``server.properties`` lines every local broker shares (plain, secured and the cluster's nodes): its data
    folder, no topic auto-creation, the internal topics' replication (``replicas`` copies, ``min_isr`` of them in
    sync to accept a write: 1/1 for one node), transaction timeouts Flink's exactly-once sinks need, and fsync left
    to the OS (see :class:`KafkaBroker`)."""
    return [
        f"log.dirs={data_dir}",
        "num.partitions=1",
        "auto.create.topics.enable=false",
        f"default.replication.factor={replicas}",
        f"min.insync.replicas={min_isr}",
        f"offsets.topic.replication.factor={replicas}",
        "offsets.topic.num.partitions=5",
        f"transaction.state.log.replication.factor={replicas}",
        f"transaction.state.log.min.isr={min_isr}",
        "transaction.state.log.num.partitions=5",
        "transaction.max.timeout.ms=3600000",
        "group.initial.rebalance.delay.ms=0",
        f"share.coordinator.state.topic.replication.factor={replicas}",
        f"share.coordinator.state.topic.min.isr={min_isr}",
        "unclean.leader.election.enable=false",
        "log.flush.interval.messages=9223372036854775807",
    ]


class Redis(Component):
    """Debian's redis-server: Feast's online store for async reads. Persistence off: it is a cache of the
    offline store, rebuilt by ``feast materialize``.

    With ``secure`` (:class:`RedisTls`) it serves TLS only (no plaintext port: ``port 0``, ``tls-port`` the
    stack's Redis port), does not ask clients for certificates, and requires the password. Clients connect
    with :attr:`url` and the variables of :meth:`client_env`.
    """

    name = "redis"

    def __init__(self, settings: StackSettings, *, secure: RedisTls | None = None) -> None:
        super().__init__(settings)
        self.secure = secure

    @property
    def ports(self) -> list[int]:
        return [self.settings.redis_port]

    @property
    def url(self) -> str:
        """The URL clients use: ``rediss://`` when secure (the password is never in it)."""
        scheme = "rediss" if self.secure else "redis"
        return f"{scheme}://{self.settings.host}:{self.settings.redis_port}/0"

    def client_env(self) -> dict[str, str]:
        """The ``VATIC_REDIS_*`` variables a client process (gateway, job) needs; empty when not secure."""
        if self.secure is None:
            return {}
        return {"VATIC_REDIS_PASSWORD": self.secure.password, "VATIC_REDIS_CA_FILE": str(self.secure.ca_file)}

    @property
    def secure_config(self) -> Path:
        """The config file holding the secure settings (owner-readable only)."""
        return self.process.dir / "secure.conf"

    def prepare(self) -> None:
        if self.secure is None:
            return
        tls = self.secure
        for label, path in (("certificate", tls.cert_file), ("key", tls.key_file), ("CA", tls.ca_file)):
            if not Path(path).is_file():
                raise ConfigError(f"redis: the TLS {label} file {path} does not exist")
        if any(c in tls.password for c in " \"'\n\r"):
            raise ConfigError("redis: the password must not contain spaces, quotes, backslashes or line breaks")
        self.process.dir.mkdir(parents=True, exist_ok=True)
        lines = [
            "port 0",
            f"tls-port {self.settings.redis_port}",
            f'tls-cert-file "{tls.cert_file}"',
            f'tls-key-file "{tls.key_file}"',
            f'tls-ca-cert-file "{tls.ca_file}"',
            "tls-auth-clients no",
            f"requirepass {tls.password}",
        ]
        self.secure_config.touch(mode=0o600)
        self.secure_config.chmod(0o600)
        self.secure_config.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def argv(self) -> list[str]:
        server = shutil.which("redis-server")
        if server is None:
            raise MissingDependency(
                "redis-server not found: run `make setup` (installs Debian's redis-server) "
                "or `apt-get install -y redis-server`"
            )
        listen = ["--port", str(self.settings.redis_port)] if self.secure is None else []
        config = [str(self.secure_config)] if self.secure is not None else []
        return [
            server,
            *config,
            "--bind", self.settings.host,
            *listen,
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "yes",
            "--dir", str(self.process.dir),
            "--daemonize", "no",
        ]  # fmt: skip

    def ready(self) -> bool:
        host, port = self.settings.host, self.settings.redis_port
        with socket.create_connection((host, port), timeout=1) as raw:
            if self.secure is None:
                raw.sendall(b"*1\r\n$4\r\nPING\r\n")
                return raw.recv(16).startswith(b"+PONG")
            import ssl

            context = ssl.create_default_context(cafile=str(self.secure.ca_file))
            with context.wrap_socket(raw, server_hostname=host) as sock:
                password = self.secure.password.encode()
                sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n*1\r\n$4\r\nPING\r\n" % (len(password), password))
                answer = b""
                while b"\r\n" not in answer.partition(b"\r\n")[2]:
                    chunk = sock.recv(64)
                    if not chunk:
                        break
                    answer += chunk
                return answer.startswith(b"+OK\r\n+PONG")

    def describe(self) -> str:
        return f"redis {self.url}" + (" (TLS, password)" if self.secure else "")


class SchemaRegistry(Component):
    """Apicurio Registry serving the Confluent Schema Registry REST API (ccompat v7), its schemas kept in an
    H2 database file under the component's folder (``data/registry.mv.db``).

    Durable: a restart, clean or killed, keeps every subject, version and global id, as the records already
    in Kafka name those ids. (Apicurio's default storage is an in-memory H2 database, which forgets them.)
    H2 is told to write each commit at once (``WRITE_DELAY=0``), so a registration that was answered
    survives a SIGKILL.
    """

    name = "registry"

    @property
    def ports(self) -> list[int]:
        return [self.settings.registry_port]

    def argv(self) -> list[str]:
        java = _java(self.settings)
        jar = self.artifacts.require_apicurio()
        return [
            java,
            f"-Xmx{self.settings.registry_heap}",
            f"-Dquarkus.http.port={self.settings.registry_port}",
            f"-Dquarkus.http.host={self.settings.host}",
            f"-Dapicurio.datasource.url=jdbc:h2:file:{self.data_dir / 'registry'};WRITE_DELAY=0",
            "-Dquarkus.log.console.json=false",
            f"-Dvatic.component={self.name}",
            "-jar",
            str(jar),
        ]

    @property
    def data_dir(self) -> Path:
        return self.process.dir / "data"

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def ready(self) -> bool:
        url = f"http://{self.settings.host}:{self.settings.registry_port}/apis/ccompat/v7/subjects"
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)

    def describe(self) -> str:
        return f"Apicurio Registry {APICURIO_VERSION} {self.settings.registry_url}"


#: The infrastructure components, in start order. The whole stack (with the model servers and the gateway)
#: is assembled in :data:`vatic.cli.stack.stack.STACK`.
COMPONENTS: dict[str, type[Component]] = {
    "kafka": KafkaBroker,
    "redis": Redis,
    "registry": SchemaRegistry,
}


def new_cluster_id() -> str:
    """A KRaft cluster id as Kafka's ``Uuid.randomUuid`` makes one: 16 random bytes, URL-safe base64 without padding,
    never starting with ``-`` (a command line would read it as an option: 1 id in 64 otherwise)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _port_frees(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """True when ``port`` is free now or within ``timeout_s`` (a process killed a moment ago releases its ports
    while it exits)."""
    deadline = time.monotonic() + timeout_s
    while not port_is_free(host, port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True
