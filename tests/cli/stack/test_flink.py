"""The standalone Flink cluster components: generated configuration, one-line errors, and a real JobManager +
TaskManager brought up and down through the stack (optional components, the ``flink`` group)."""

from __future__ import annotations

import socket
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.fixtures.clusters import FLINK_PORTS, private_settings
from vatic.cli.stack.flink import FlinkJobManager, FlinkTaskManager, FlinkTaskManager2, flink_home
from vatic.cli.stack.process import port_accepts, processes_with_token
from vatic.cli.stack.settings import StackSettings
from vatic.cli.stack.stack import Stack
from vatic.schemas.errors import MissingDependency, PortInUse, StartFailed
from vatic.streaming.metrics import PROMETHEUS_FACTORY


@pytest.fixture
def spare(tmp_path) -> StackSettings:
    """A private cluster: own home, distinct free ports, the shared download cache."""
    return private_settings(tmp_path / "home", FLINK_PORTS, start_timeout_s=240)


def test_configuration_is_loopback_with_two_slots_and_the_pipeline_interpreter(spare):
    jobmanager = FlinkJobManager(spare)
    jobmanager.prepare()
    config = yaml.safe_load((jobmanager.conf_dir / "config.yaml").read_text())
    assert {k: config[k] for k in ("jobmanager.bind-host", "jobmanager.rpc.address", "taskmanager.bind-host",
                                   "taskmanager.host", "rest.address", "rest.bind-address")} == dict.fromkeys(
        ("jobmanager.bind-host", "jobmanager.rpc.address", "taskmanager.bind-host", "taskmanager.host",
         "rest.address", "rest.bind-address"), "127.0.0.1")  # fmt: skip
    assert config["rest.port"] == spare.flink_rest_port
    assert config["jobmanager.rpc.port"] == spare.flink_jobmanager_rpc_port
    assert config["taskmanager.rpc.port"] == spare.flink_taskmanager_rpc_port
    assert config["taskmanager.numberOfTaskSlots"] == 2
    # each process its own Prometheus endpoint; label values intact (the job's histograms' le="+Inf")
    assert config["metrics.reporter.prom.factory.class"] == PROMETHEUS_FACTORY
    assert config["metrics.reporter.prom.port"] == str(spare.flink_jobmanager_metrics_port)
    assert config["metrics.reporter.prom.filterLabelValueCharacters"] == "false"
    taskmanager = FlinkTaskManager(spare)
    taskmanager.prepare()
    tm_config = yaml.safe_load((taskmanager.conf_dir / "config.yaml").read_text())
    assert tm_config["metrics.reporter.prom.port"] == str(spare.flink_taskmanager_metrics_port)
    off = FlinkJobManager(spare.model_copy(update={"flink_jobmanager_metrics_port": 0}))
    assert not any(key.startswith("metrics.reporter") for key in off.flink_config())
    assert config["python.executable"] == sys.executable
    assert config["execution.checkpointing.dir"] == (spare.home / "flink" / "checkpoints").resolve().as_uri()
    assert config["execution.checkpointing.savepoint-dir"] == (spare.home / "flink" / "savepoints").resolve().as_uri()
    assert "--add-opens=java.base/java.lang=ALL-UNNAMED" in config["env.java.opts.all"]
    assert Path(config["env.java.home"], "bin", "java").is_file()
    # the distribution's lib/ plus PyFlink's operators; the Kafka connector travels with each job instead
    jars = sorted(p.name for p in jobmanager.lib_dir.iterdir())
    assert sorted(p.name for p in (flink_home() / "lib").glob("*.jar")) == [j for j in jars if "python" not in j]
    assert [j for j in jars if j.startswith("flink-python-")] != []
    assert not any("kafka" in j for j in jars)
    assert all((jobmanager.lib_dir / j).resolve().is_file() for j in jars)
    # nothing is written into the distribution
    assert "RollingFile" not in (jobmanager.conf_dir / "log4j-console.properties").read_text()
    jobmanager.prepare()  # idempotent: the links are replaced, not duplicated
    assert sorted(p.name for p in jobmanager.lib_dir.iterdir()) == jars


def test_taken_port_is_one_clear_line(spare):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", spare.flink_rest_port))
        squatter.listen()
        jobmanager = FlinkJobManager(spare)
        with pytest.raises(PortInUse) as info:
            jobmanager.start()
        assert jobmanager.health().state == "foreign"
        assert jobmanager.process.pid() is None  # nothing was started
    message = str(info.value)
    assert "\n" not in message
    assert str(spare.flink_rest_port) in message
    assert "VATIC_STACK_FLINK_REST_PORT" in message


def test_a_taken_metrics_port_is_one_clear_line(spare):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", spare.flink_jobmanager_metrics_port))
        squatter.listen()
        with pytest.raises(PortInUse, match="VATIC_STACK_FLINK_JOBMANAGER_METRICS_PORT"):
            FlinkJobManager(spare).start()


def test_missing_java_is_one_clear_line(spare):
    settings = spare.model_copy(update={"java": "/nonexistent/java"})
    with pytest.raises(MissingDependency, match=r"^java not found.*openjdk-17") as info:
        FlinkJobManager(settings).start()
    assert "\n" not in str(info.value)


def test_taskmanager_without_a_jobmanager_is_one_clear_line(spare):
    taskmanager = FlinkTaskManager(spare)
    with pytest.raises(StartFailed, match="no Flink JobManager answers") as info:
        taskmanager.start()
    assert "\n" not in str(info.value)
    assert taskmanager.process.pid() is None
    assert taskmanager.health().state == "down"


def test_flink_group_is_optional_and_comes_up_and_down_with_the_stack(spare):
    stack = Stack(spare)
    names = [c.name for c in stack.select(None)]
    assert "flink-jobmanager" not in names  # not part of a plain `vatic stack up`
    assert [c.name for c in stack.select(["flink"])] == ["flink-jobmanager", "flink-taskmanager", "flink-taskmanager-2"]
    assert [h.name for h in stack.status(None)] == names  # not running: not listed

    tokens: list[str] = []
    try:
        assert stack.up(["flink"]) == ["flink-jobmanager", "flink-taskmanager", "flink-taskmanager-2"]
        jobmanager = stack.components["flink-jobmanager"]
        taskmanager = stack.components["flink-taskmanager"]
        second = stack.components["flink-taskmanager-2"]
        assert isinstance(jobmanager, FlinkJobManager)
        assert isinstance(taskmanager, FlinkTaskManager)
        assert isinstance(second, FlinkTaskManager2)
        tokens = [t for t in (jobmanager.token(), taskmanager.token(), second.token()) if t]
        overview = jobmanager.rest.overview()
        assert (overview["taskmanagers"], overview["slots-total"]) == (2, 4)  # two TaskManagers of 2 slots
        assert {tm["id"] for tm in jobmanager.rest.taskmanagers()} == {
            "vatic-flink-taskmanager",
            "vatic-flink-taskmanager-2",
        }
        health = {h.name: h for h in stack.status(None)}  # running optional components are listed
        assert {health[n].state for n in ("flink-jobmanager", "flink-taskmanager", "flink-taskmanager-2")} == {"up"}
        assert "2 TaskManager(s), 4/4 slots free" in health["flink-jobmanager"].detail
        assert health["flink-taskmanager"].port == spare.flink_taskmanager_rpc_port
        assert health["flink-taskmanager-2"].port == spare.flink_taskmanager2_rpc_port
        assert stack.up(["flink"]) == []  # already running: left alone
        # the logs are the component's own files, nothing under the distribution
        assert "StandaloneSessionClusterEntrypoint" in jobmanager.process.log_file.read_text()
        assert "TaskManagerRunner" in taskmanager.process.log_file.read_text()
        # Flink's Prometheus reporter (the distribution's plugin) serves each process's metrics
        for port, name in (
            (spare.flink_jobmanager_metrics_port, "flink_jobmanager_numRegisteredTaskManagers"),
            (spare.flink_taskmanager_metrics_port, "flink_taskmanager_Status_JVM_CPU_Load"),
            (spare.flink_taskmanager2_metrics_port, "flink_taskmanager_Status_JVM_CPU_Load"),
        ):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                assert name in response.read().decode()
    finally:
        stopped = stack.down(None)  # a plain `vatic stack down` stops running optional components too
    assert stopped == ["flink-taskmanager-2", "flink-taskmanager", "flink-jobmanager"]
    assert len(tokens) == 3
    assert [pid for token in tokens for pid in processes_with_token(token)] == []
    assert not port_accepts(spare.host, spare.flink_rest_port)
    assert {h.state for h in stack.status(["flink"])} == {"down"}
    assert stack.down(["flink"]) == []
