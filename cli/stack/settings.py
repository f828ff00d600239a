"""Settings of the embedded local stack, read from ``VATIC_STACK_*`` environment variables.

Every port can be moved (``VATIC_STACK_KAFKA_PORT=19092``) so that two checkouts, or a developer's own Kafka,
can live side by side. Runtime state (data, logs, PID files) goes under ``home``; downloads under ``cache``.
Both default to ignored folders of the checkout (``.vatic/`` and ``.cache/``) when vatic runs from one, and
to ``~/.vatic`` otherwise.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:  # confluent-kafka is in the pipeline environment only; the model-server one reads these settings
    from vatic.connectors.kafka import KafkaSettings
    from vatic.connectors.registry.spec import RegistrySpecLike


@cache
def checkout_root() -> Path | None:
    """The vatic checkout this code runs from (editable install), or None for an installed wheel."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        pyproject = parent / "pyproject.toml"
        if pyproject.is_file() and 'name = "vatic"' in pyproject.read_text(encoding="utf-8"):
            return parent
    return None


def _default_home() -> Path:
    root = checkout_root()
    return root / ".vatic" if root else Path.home() / ".vatic"


def _default_cache() -> Path:
    root = checkout_root()
    return root / ".cache" if root else Path.home() / ".vatic" / "cache"


class StackSettings(BaseSettings):
    """Where the local stack lives and which loopback ports it binds."""

    model_config = SettingsConfigDict(env_prefix="VATIC_STACK_", extra="forbid")

    home: Path = Field(default_factory=_default_home, description="runtime state: data, logs, PID files")
    cache: Path = Field(default_factory=_default_cache, description="downloaded jars and distributions")
    host: str = Field("127.0.0.1", description="address every component binds (loopback only)")
    kafka_port: int = Field(9092, ge=1, le=65535)
    kafka_controller_port: int = Field(9093, ge=1, le=65535)
    # the secured broker (`vatic stack up --secure`): SASL_SSL clients, a SASL_SSL controller, mutual-TLS clients
    kafka_secure_port: int = Field(9094, ge=1, le=65535, description="secured broker: SASL_SSL client listener")
    kafka_secure_controller_port: int = Field(9095, ge=1, le=65535, description="secured broker: controller")
    kafka_mtls_port: int = Field(9096, ge=1, le=65535, description="secured broker: mutual-TLS client listener")
    # the three-node cluster (`vatic stack up --cluster`, cli/stack/cluster.py): clients and quorum of each node
    kafka1_port: int = Field(19092, ge=1, le=65535, description="Kafka cluster node 1: client listener")
    kafka1_controller_port: int = Field(19093, ge=1, le=65535, description="Kafka cluster node 1: controller")
    kafka2_port: int = Field(19094, ge=1, le=65535, description="Kafka cluster node 2: client listener")
    kafka2_controller_port: int = Field(19095, ge=1, le=65535, description="Kafka cluster node 2: controller")
    kafka3_port: int = Field(19096, ge=1, le=65535, description="Kafka cluster node 3: client listener")
    kafka3_controller_port: int = Field(19097, ge=1, le=65535, description="Kafka cluster node 3: controller")
    kafka_cluster_heap: str = Field("384m", description="-Xmx of each Kafka cluster node")
    redis_port: int = Field(6379, ge=1, le=65535)
    registry_port: int = Field(8081, ge=1, le=65535)
    java: str = Field("java", description="the java executable (Java 17+)")
    kafka_heap: str = Field("512m", description="broker -Xmx")
    registry_heap: str = Field("384m", description="schema registry -Xmx")
    start_timeout_s: float = Field(60.0, gt=0, description="how long to wait for a component to be ready")
    # model servers of the demo services (cli/stack/services.py): one MLServer each
    fraud_http_port: int = Field(8090, ge=1, le=65535, description="fraud detection model server: V2 REST")
    fraud_grpc_port: int = Field(8091, ge=1, le=65535, description="fraud detection model server: V2 gRPC")
    fraud_metrics_port: int = Field(8092, ge=1, le=65535, description="fraud detection model server: metrics")
    product_http_port: int = Field(8095, ge=1, le=65535, description="product categorization model server: V2 REST")
    product_grpc_port: int = Field(8096, ge=1, le=65535, description="product categorization model server: V2 gRPC")
    product_metrics_port: int = Field(8097, ge=1, le=65535, description="product categorization server: metrics")
    model_registry: Path | None = Field(
        None, description="local model registry written by `vatic usecases prepare` (default: <home>/model-registry)"
    )
    usecases_dir: Path | None = Field(
        None, description="folder of the use cases' service folders (default: examples of the checkout)"
    )
    gateway_port: int = Field(8000, ge=1, le=65535, description="the REST gateway in front of the model servers")
    gateway_grpc_port: int = Field(8001, ge=1, le=65535, description="the gateway's gRPC door (V2 + vatic.Gateway)")
    gateway_redis: bool = Field(False, description="gateway reads features from the stack's Redis (else SQLite)")
    model_start_timeout_s: float = Field(180.0, gt=0, description="how long to wait for a model server to load")
    # the optional standalone Flink cluster (cli/stack/flink.py): `vatic stack up flink`
    flink_rest_port: int = Field(8088, ge=1, le=65535, description="Flink JobManager: REST API and web UI")
    flink_jobmanager_rpc_port: int = Field(6123, ge=1, le=65535, description="Flink JobManager: RPC")
    flink_taskmanager_rpc_port: int = Field(6122, ge=1, le=65535, description="Flink TaskManager: RPC")
    flink_jobmanager_metrics_port: int = Field(
        9250, ge=0, le=65535, description="Flink JobManager: Prometheus metrics (/metrics); 0: no endpoint"
    )
    flink_taskmanager_metrics_port: int = Field(
        9251, ge=0, le=65535, description="Flink TaskManager: Prometheus metrics (the job's own too); 0: none"
    )
    flink_taskmanager2_rpc_port: int = Field(6125, ge=1, le=65535, description="second Flink TaskManager: RPC")
    flink_taskmanager2_metrics_port: int = Field(
        9252, ge=0, le=65535, description="second Flink TaskManager: Prometheus metrics; 0: none"
    )
    flink_task_slots: int = Field(2, ge=1, le=64, description="slots of each Flink TaskManager")
    flink_jobmanager_memory: str = Field("1024m", description="Flink jobmanager.memory.process.size")
    flink_taskmanager_memory: str = Field("1536m", description="Flink taskmanager.memory.process.size")

    def kafka(self, **extra: Any) -> KafkaSettings:
        """The settings of vatic's own Kafka clients (CLI, demo, bench): the ``VATIC_KAFKA_*`` environment when it
        names a broker (another one, or the secured one: ``set -a; . .vatic/kafka-secure/vatic-app.env``), else
        the stack's plain broker."""
        from vatic.connectors.kafka import KafkaSettings

        if os.environ.get("VATIC_KAFKA_BOOTSTRAP_SERVERS"):
            return KafkaSettings(**extra)
        return KafkaSettings(bootstrap_servers=self.kafka_bootstrap, **extra)

    @property
    def kafka_bootstrap(self) -> str:
        """``host:port`` of the broker's client listener."""
        return f"{self.host}:{self.kafka_port}"

    @property
    def kafka_cluster_bootstrap(self) -> str:
        """``host:port,...`` of the three cluster nodes' client listeners (``vatic stack up --cluster``)."""
        return ",".join(f"{self.host}:{port}" for port in (self.kafka1_port, self.kafka2_port, self.kafka3_port))

    @property
    def flink_jobmanager(self) -> str:
        """``host:port`` of the Flink JobManager's REST API (``vatic stream submit --jobmanager``)."""
        return f"{self.host}:{self.flink_rest_port}"

    @property
    def model_registry_root(self) -> Path:
        """The local model registry folder the stack's model servers are materialised from."""
        return self.model_registry or self.home / "model-registry"

    @property
    def redis_url(self) -> str:
        return f"redis://{self.host}:{self.redis_port}/0"

    @property
    def registry_url(self) -> str:
        """Base URL of the Confluent-compatible REST API (Apicurio's ``ccompat`` v7)."""
        return f"http://{self.host}:{self.registry_port}/apis/ccompat/v7"


def registry_root_for(
    spec: RegistrySpecLike, explicit: Path | None = None, settings: StackSettings | None = None
) -> Path | None:
    """The local registry folder a service's model is read from outside a cluster: ``explicit`` when given; for a
    ``local`` registry without a ``uri``, the stack's model registry (where ``vatic usecases prepare`` trains
    into), as the stack's model servers read it; else None (the registry section says where)."""
    if explicit is not None:
        return explicit
    if spec.backend == "local" and not spec.uri:
        return (settings or StackSettings()).model_registry_root
    return None


def export_home() -> None:
    """Put the stack's home in ``VATIC_STACK_HOME`` unless it is set already. The examples' Feast repositories
    keep their state under it (Feast expands ``${VATIC_STACK_HOME}`` in their ``feature_store.yaml``), and every
    process started afterwards (job, gateway, model servers) inherits it."""
    os.environ.setdefault("VATIC_STACK_HOME", str(StackSettings().home))
