"""docker-compose.yml describes the same stack as `vatic stack up`, with the same pinned versions."""

from __future__ import annotations

import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from vatic.connectors.local.artifacts import APICURIO_VERSION, FLINK_KAFKA_CONNECTOR_VERSION, KAFKA_VERSION

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _compose_plugin() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    return subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0


def test_docker_compose_config_accepts_it_where_the_plugin_exists():
    if not _compose_plugin():
        pytest.skip("no `docker compose` plugin on this machine; the structure checks below stand in for it")
    done = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, check=False)
    assert done.returncode == 0, done.stderr


def test_every_component_of_the_stack_is_a_service(compose):
    services = compose["services"]
    assert {
        "kafka",
        "redis",
        "schema-registry",
        "model-server",
        "gateway",
        "jobmanager",
        "taskmanager",
    } <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for dependency in service.get("depends_on", []):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name


def test_named_volumes_are_declared(compose):
    declared = set(compose.get("volumes", {}))
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_host_ports_match_the_local_stack_defaults(compose):
    from vatic.connectors.local.settings import StackSettings

    defaults = StackSettings()
    host_ports = {
        name: {int(p.split(":")[0]) for p in service.get("ports", [])} for name, service in compose["services"].items()
    }
    assert defaults.kafka_port in host_ports["kafka"]
    assert defaults.redis_port in host_ports["redis"]
    assert defaults.registry_port in host_ports["schema-registry"]


def test_versions_are_the_pinned_ones(compose):
    services = compose["services"]
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    assert services["schema-registry"]["image"] == f"apicurio/apicurio-registry:{APICURIO_VERSION}"
    pipeline = (ROOT / "k8s/images/pipeline.Dockerfile").read_text()
    assert f"FROM flink:{version('apache-flink')}-java17" in pipeline
    assert f"flink-sql-connector-kafka-{FLINK_KAFKA_CONNECTOR_VERSION}.jar" in pipeline
    kafka_env = services["kafka"]["environment"]
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert kafka_env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
