"""The local stack's components as real processes on spare ports, and its one-line errors."""

from __future__ import annotations

import signal
import socket
import string
import subprocess
from pathlib import Path

import pytest

from vatic.cli.stack.components import KafkaBroker, Redis, SchemaRegistry, new_cluster_id
from vatic.cli.stack.settings import StackSettings
from vatic.cli.stack.stack import Stack
from vatic.schemas.errors import MissingArtifact, MissingDependency, PortInUse

VATIC = Path(__file__).resolve().parents[3] / ".venv" / "pipeline" / "bin" / "vatic"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def spare(tmp_path) -> StackSettings:
    """Settings for a second, private stack: own home, spare ports, the shared download cache."""
    return StackSettings(
        home=tmp_path / "home",
        kafka_port=_free_port(),
        kafka_controller_port=_free_port(),
        redis_port=_free_port(),
        registry_port=_free_port(),
    )


def test_redis_starts_answers_and_stops(spare):
    redis = Redis(spare)
    assert redis.health().state == "down"
    assert redis.start() is True
    try:
        health = redis.health()
        assert (health.state, health.port) == ("up", spare.redis_port)
        assert redis.start() is False  # already running: left alone
    finally:
        assert redis.stop() is True
    assert redis.health().state == "down"


def test_cluster_ids_are_kafkas_form_and_never_read_as_an_option():
    ids = [new_cluster_id() for _ in range(2000)]  # about 31 of them would start with "-" without the check
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(i) == 22 and set(i) <= set(string.ascii_letters + string.digits + "-_") for i in ids)
    assert len(set(ids)) == len(ids)


def test_kafka_formats_storage_once_and_serves(spare):
    from confluent_kafka.admin import AdminClient

    broker = KafkaBroker(spare)
    assert broker.start() is True
    try:
        assert (broker.data_dir / "meta.properties").is_file()
        meta = AdminClient({"bootstrap.servers": spare.kafka_bootstrap}).list_topics(timeout=10)
        assert list(meta.brokers) == [1]
    finally:
        broker.stop()
    cluster_id = (broker.data_dir / "meta.properties").read_text()
    # a second start reuses the formatted storage (same cluster id), it does not re-format
    assert broker.start() is True
    try:
        assert (broker.data_dir / "meta.properties").read_text() == cluster_id
    finally:
        broker.stop()


def _record(name: str, *fields: str) -> dict:
    return {"type": "record", "name": name, "fields": [{"name": f, "type": "string"} for f in fields]}


def test_the_registry_keeps_every_schema_and_id_when_it_is_killed_and_started_again(spare):
    """Kafka keeps records that name schema ids: the registry must still know each id after a crash."""
    from vatic.connectors.schema_registry import ConfluentSchemaRegistry

    registry = SchemaRegistry(spare)
    registry.start()
    try:
        with ConfluentSchemaRegistry(spare.registry_url) as client:
            first = client.register("durable-value", _record("A", "x"))
            second = client.register(
                "durable-value",
                _record("A", "x", "y")
                | {"fields": [{"name": "x", "type": "string"}, {"name": "y", "type": "string", "default": ""}]},
            )
        registry.process.send_signal(signal.SIGKILL)  # no clean shutdown: what was answered must be on disk
        registry.stop()
        assert (registry.data_dir / "registry.mv.db").is_file()
        registry.start()
        with ConfluentSchemaRegistry(spare.registry_url) as fresh:  # no cache: everything comes from the server
            assert fresh.get_schema(first)["fields"] == [{"name": "x", "type": "string"}]
            assert [f["name"] for f in fresh.get_schema(second)["fields"]] == ["x", "y"]
            assert fresh.versions("durable-value") == [1, 2]
            third = fresh.register("other-value", _record("B", "z"))
        assert third not in (first, second)  # ids are never handed out twice
    finally:
        registry.stop()


def test_taken_port_is_one_clear_line(spare):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", spare.redis_port))
        squatter.listen()
        redis = Redis(spare)
        with pytest.raises(PortInUse) as info:
            redis.start()
        assert redis.health().state == "foreign"
    message = str(info.value)
    assert "\n" not in message
    assert str(spare.redis_port) in message
    assert "VATIC_STACK_REDIS_PORT" in message


def test_missing_java_is_one_clear_line(spare):
    settings = spare.model_copy(update={"java": "/nonexistent/java"})
    with pytest.raises(MissingDependency, match=r"java not found.*openjdk-17"):
        KafkaBroker(settings).start()


def test_missing_jars_say_how_to_fetch(spare, tmp_path):
    settings = spare.model_copy(update={"cache": tmp_path / "empty-cache"})
    with pytest.raises(MissingArtifact, match="make setup"):
        KafkaBroker(settings).start()


def test_stack_down_stops_only_what_is_named(spare):
    stack = Stack(spare)
    assert stack.up(["redis"]) == ["redis"]
    assert stack.down([]) == []  # an empty selection stops nothing
    assert stack.status(["redis"])[0].state == "up"
    assert stack.down(["redis"]) == ["redis"]


def test_unknown_component_is_rejected(spare):
    from vatic.schemas.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown component"):
        Stack(spare).up(["zookeeper"])


def test_cli_reports_errors_in_one_line_and_status_per_component(spare):
    env = {
        "VATIC_STACK_HOME": str(spare.home),
        "VATIC_STACK_REDIS_PORT": str(spare.redis_port),
        "VATIC_STACK_KAFKA_PORT": str(spare.kafka_port),
        "VATIC_STACK_KAFKA_CONTROLLER_PORT": str(spare.kafka_controller_port),
        "VATIC_STACK_REGISTRY_PORT": str(spare.registry_port),
        "VATIC_STACK_JAVA": "/nonexistent/java",
        "PATH": "/usr/bin:/bin",
    }
    failed = subprocess.run([VATIC, "stack", "up", "kafka"], env=env, capture_output=True, text=True, check=False)
    assert failed.returncode == 2
    assert failed.stderr.count("\n") == 1
    assert failed.stderr.startswith("vatic: java not found")

    status = subprocess.run([VATIC, "stack", "status"], env=env, capture_output=True, text=True, check=False)
    assert status.returncode == 1  # nothing of this private stack is up
    lines = status.stdout.strip().splitlines()
    states = {line.split()[0]: line.split()[1] for line in lines}
    assert {name: states[name] for name in ("kafka", "redis", "registry")} == dict.fromkeys(
        ("kafka", "redis", "registry"), "down"
    )
    assert f"port {spare.redis_port}" in lines[1]
