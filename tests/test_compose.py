"""docker-compose.yml describes the same stack as `vatic stack up`, with the same pinned versions, and runs: every
service started as a local process the way the file says (tests/fixtures/compose.py), then both paths end to end."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fixtures.compose import LocalCompose, running
from vatic.cli.stack.artifacts import APICURIO_VERSION, FLINK_KAFKA_CONNECTOR_VERSION, KAFKA_VERSION
from vatic.cli.stack.settings import StackSettings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _compose_command() -> list[str] | None:
    """``docker compose`` (the plugin) or ``docker-compose`` (Debian's package, which `make setup` installs)."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_accepts_it():
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed (`make setup` installs the latter)")
    done = subprocess.run([*command, "-f", str(COMPOSE), "config", "-q"], capture_output=True, check=False)
    assert done.returncode == 0, done.stderr


def test_every_component_of_the_stack_is_a_service(compose):
    services = compose["services"]
    assert {
        "kafka",
        "redis",
        "schema-registry",
        "prepare",
        "fraud-model",
        "product-model",
        "gateway",
        "jobmanager",
        "taskmanager",
        "jobs",
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
    from vatic.cli.stack.settings import StackSettings

    defaults = StackSettings()
    host_ports = {
        name: {int(p.split(":")[0]) for p in service.get("ports", [])} for name, service in compose["services"].items()
    }
    assert defaults.kafka_port in host_ports["kafka"]
    assert defaults.redis_port in host_ports["redis"]
    assert defaults.registry_port in host_ports["schema-registry"]
    assert defaults.fraud_http_port in host_ports["fraud-model"]
    assert defaults.product_http_port in host_ports["product-model"]
    assert {defaults.gateway_port, defaults.gateway_grpc_port} <= host_ports["gateway"]
    assert defaults.flink_rest_port in host_ports["jobmanager"]
    assert defaults.flink_jobmanager_metrics_port in host_ports["jobmanager"]
    assert defaults.flink_taskmanager_metrics_port in host_ports["taskmanager"]


def test_the_flink_services_export_prometheus_metrics_on_their_published_port(compose):
    """The same reporter configuration as the local stack's session cluster, loaded from the image's plugins/."""
    from vatic.streaming.metrics import prometheus_reporter

    for name in ("jobmanager", "taskmanager"):
        service = compose["services"][name]
        properties = yaml.safe_load(service["environment"]["FLINK_PROPERTIES"])
        reporter = {key: str(value).lower() if isinstance(value, bool) else str(value)
                    for key, value in properties.items() if key.startswith("metrics.reporter.")}  # fmt: skip
        container_port = reporter["metrics.reporter.prom.port"]
        assert reporter == prometheus_reporter(container_port)
        assert any(p.split(":")[1] == container_port for p in service["ports"]), service["ports"]


def test_the_registry_keeps_its_schemas_on_a_volume(compose):
    registry = compose["services"]["schema-registry"]
    url = registry["environment"]["APICURIO_DATASOURCE_URL"]
    assert url.startswith("jdbc:h2:file:/data/")  # not the image's in-memory default
    assert "WRITE_DELAY=0" in url
    assert any(volume.split(":")[1] == "/data" for volume in registry["volumes"])


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


# -- the whole file, run ------------------------------------------------------------------------------------------


def _trained_versions(stack: LocalCompose) -> None:
    """The model versions the default stack's ``prepare`` trained (`make test` runs it first) are copied into the
    compose's home volume: its ``prepare`` service, run as the file says, then finds versions trained from the same
    inputs and reuses them, as on a second ``docker compose up``, instead of training both models again (about 90 s
    of the 2 cores). Data, features, materialization to the compose's Redis and the stages are still its own work;
    training from nothing is tests/examples/test_prepare.py's."""
    source = StackSettings().model_registry_root
    target = stack.volumes["vatic-home"] / "model-registry"
    for model in sorted(source.iterdir()) if source.is_dir() else []:
        for folder in sorted(model.iterdir()):
            if folder.name.isdigit() and (folder / "metrics.json").is_file():
                shutil.copytree(folder, target / model.name / folder.name)


@pytest.fixture(scope="module")
def local_compose(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCompose]:
    yield from running(tmp_path_factory.mktemp("compose"), seed=_trained_versions)


def _event(schema: str) -> dict[str, Any]:
    from vatic.examples.fraud_detection.events import make_world, transactions
    from vatic.examples.product_categorization.events import products

    event = next(transactions(make_world(), 1))[0] if schema == "transaction" else next(products(1))[0]
    event["event_id"] = str(uuid.uuid4())
    event["event_time"] = time.time_ns() // 1_000_000
    return event


def test_the_stack_answers_end_to_end_on_both_paths(local_compose: LocalCompose) -> None:
    """Every service of the file started as it says; an event per service through Kafka -> the submitted Flink
    job -> Kafka, and the same through the gateway's REST door; the registry holds the ids both paths used."""
    from vatic.connectors.kafka import Consumer, KafkaSettings, Producer
    from vatic.connectors.schema_registry import schema_source
    from vatic.schemas import AvroCodec, load_schema, topic_subject
    from vatic.serving.config import load_service

    stack = local_compose
    gateway = stack.url("gateway", 8000)
    deadline = time.monotonic() + 120
    while httpx.get(f"{gateway}/v2/health/ready", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, stack.tail("gateway")
        time.sleep(1)
    kafka = KafkaSettings(bootstrap_servers=stack.settings.kafka_bootstrap)
    source = schema_source(stack.settings.registry_url, stack.root / "schemas")
    producer = Producer(kafka)
    wanted: dict[str, str] = {}  # event id -> output topic
    outputs = []
    for folder in ("fraud_detection", "product_categorization"):
        config = load_service(ROOT / "examples" / folder / "service")
        assert config.streaming is not None
        event = _event(config.streaming.input_schema)
        answer = httpx.post(
            f"{gateway}/v1/services/{config.service}/predict",
            json={k: v for k, v in event.items() if k not in ("event_id", "event_time")},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"], answer.text
        codec = AvroCodec(
            source, topic_subject(config.streaming.input_topic), load_schema(config.streaming.input_schema)
        )
        producer.produce(config.streaming.input_topic, codec.encode(event), str(event["event_id"]).encode())
        wanted[str(event["event_id"])] = config.streaming.output_topic
        outputs.append(config.streaming.output_topic)
    producer.flush()
    predictions = AvroCodec(source, topic_subject(outputs[0]), load_schema("prediction"))
    consumer = Consumer(outputs, f"compose-{uuid.uuid4().hex[:8]}", kafka)
    seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 240
    try:
        while set(wanted) - set(seen) and time.monotonic() < deadline:
            for record in consumer.poll_batch(100, timeout=1.0):
                value = predictions.decode(record.value or b"")
                if value["event_id"] in wanted:
                    assert record.topic == wanted[value["event_id"]]
                    seen[value["event_id"]] = value
    finally:
        consumer.close()
    assert set(seen) == set(wanted), stack.tail("jobs") + stack.tail("taskmanager")
    assert {p["origin"] for p in seen.values()} == {"STREAM"}
    assert all(p["outputs"] for p in seen.values())
