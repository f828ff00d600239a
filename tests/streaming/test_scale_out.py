"""The streaming job on the clusters users outgrow one machine with: a three-node KRaft Kafka cluster and a Flink
session cluster of one JobManager and two TaskManagers (2 slots each), both started as ``vatic stack up --cluster``
starts them (on free ports, in a private home).

The job is submitted with ``vatic stream submit --cluster`` at parallelism 2 over an 8-partition input topic
(replication 3, ``min.insync.replicas`` 2), then upgraded under load with ``vatic stream upgrade``: a changed batch
size and parallelism 4, through a stop-with-savepoint. The oracle of the mini-cluster tests holds over both jobs
(every event exactly once in the predictions, read_committed, or in the dead letters), and the new job restored
the savepoint the old one stopped with: state and source offsets kept across the upgrade.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import yaml
from confluent_kafka.admin import AdminClient, ConfigResource

from tests.fixtures.model_server import free_ports
from tests.streaming.test_job import check_oracle, drain, make_run, produce
from vatic.cli.stack.flink import FlinkJobManager
from vatic.cli.stack.process import processes_with_token
from vatic.cli.stack.settings import StackSettings
from vatic.cli.stack.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
VATIC = ROOT / ".venv" / "pipeline" / "bin" / "vatic"
HALF = 1_500

PORTS = (
    "kafka1_port", "kafka1_controller_port", "kafka2_port", "kafka2_controller_port", "kafka3_port",
    "kafka3_controller_port", "flink_rest_port", "flink_jobmanager_rpc_port", "flink_taskmanager_rpc_port",
    "flink_taskmanager2_rpc_port", "flink_jobmanager_metrics_port", "flink_taskmanager_metrics_port",
    "flink_taskmanager2_metrics_port",
)  # fmt: skip


def cluster_settings(home: Path) -> StackSettings:
    """Both clusters on distinct free ports in a private home, the shared download cache."""
    return StackSettings(home=home, start_timeout_s=240, **dict(zip(PORTS, free_ports(len(PORTS)), strict=True)))


def _vatic(settings: StackSettings, *args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    """The CLI as a user of this stack runs it: the stack's settings come from ``VATIC_STACK_*``."""
    env = {**os.environ, "VATIC_STACK_HOME": str(settings.home)}
    env.update({f"VATIC_STACK_{name.upper()}": str(getattr(settings, name)) for name in PORTS})
    return subprocess.run([str(VATIC), *args], capture_output=True, text=True, timeout=timeout, check=False, env=env)


def _completed_checkpoints(jobmanager: FlinkJobManager, job_id: str) -> int:
    return int(jobmanager.rest.checkpoints(job_id).get("counts", {}).get("completed", 0))


def test_the_job_scales_out_and_upgrades_through_a_savepoint_without_loss(registry_url, server, features, tmp_path):
    settings = cluster_settings(tmp_path / "home")
    stack = Stack(settings)
    bootstrap = settings.kafka_cluster_bootstrap
    tokens: list[str] = []
    try:
        started = stack.up(["cluster"])
        assert started == ["kafka-1", "kafka-2", "kafka-3", "flink-jobmanager", "flink-taskmanager",
                           "flink-taskmanager-2"]  # fmt: skip
        tokens = [t for name in ("flink-jobmanager", "flink-taskmanager", "flink-taskmanager-2")
                  if (t := stack.components[name].token())]  # type: ignore[attr-defined]  # fmt: skip
        status = _vatic(settings, "stack", "status", "cluster")
        assert status.returncode == 0, status.stdout + status.stderr
        for node in (1, 2, 3):
            assert re.search(rf"^kafka-{node}\s+up\s.*node {node} of 3: 3 broker\(s\) listed", status.stdout, re.M)
        assert "2 TaskManager(s), 4/4 slots free" in status.stdout
        jobmanager = stack.components["flink-jobmanager"]
        assert isinstance(jobmanager, FlinkJobManager)

        run = make_run(tmp_path, features, bootstrap, registry_url, create_topics=False, batch_size=64)
        submitted = _vatic(
            settings, "stream", "submit", str(run.folder), "--cluster", "--jobmanager", settings.flink_jobmanager,
            "--parallelism", "2", "--partitions", "8", "--model-url", server.url, "--detached",
            "--checkpoint-dir", str(tmp_path / "checkpoints"), "--schema-registry-url", registry_url,
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr[-3000:]
        assert "(replication 3)" in submitted.stderr
        first = submitted.stdout.strip()
        assert re.fullmatch(r"[0-9a-f]{32}", first)

        # the topics: 8 partitions, 3 replicas on 3 nodes, 2 in sync to acknowledge a write
        admin = AdminClient({"bootstrap.servers": bootstrap})
        topic = admin.list_topics(timeout=10).topics[run.topics["input"]]
        assert len(topic.partitions) == 8
        assert {len(p.replicas) for p in topic.partitions.values()} == {3}
        resource = ConfigResource(ConfigResource.Type.TOPIC, run.topics["input"])
        configs = admin.describe_configs([resource])[resource].result(timeout=10)
        assert configs["min.insync.replicas"].value == "2"

        assert jobmanager.rest.wait_job(first, {"RUNNING", "FAILED"}, timeout_s=180)["state"] == "RUNNING"
        produce(run, bootstrap, HALF)
        deadline = time.monotonic() + 180
        while _completed_checkpoints(jobmanager, first) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _completed_checkpoints(jobmanager, first) >= 2

        # the upgrade, under load: a new batch size and parallelism 4, through a stop-with-savepoint
        config = yaml.safe_load((run.folder / "service.yaml").read_text())
        config["streaming"]["batch_size"] = 32
        (run.folder / "service.yaml").write_text(yaml.safe_dump(config))
        upgraded = _vatic(
            settings, "stream", "upgrade", str(run.folder), "--cluster", "--jobmanager", settings.flink_jobmanager,
            "--parallelism", "4", "--model-url", server.url, "--checkpoint-dir", str(tmp_path / "checkpoints"),
            "--schema-registry-url", registry_url,
        )  # fmt: skip
        assert upgraded.returncode == 0, upgraded.stderr[-3000:]
        second = upgraded.stdout.strip()
        assert re.fullmatch(r"[0-9a-f]{32}", second)
        assert second != first
        savepoint = re.search(rf"stopped job {first} with savepoint (\S+)", upgraded.stderr)
        assert savepoint, upgraded.stderr
        assert f"job {second} restored from {savepoint.group(1)} at parallelism 4 (was job {first})" in upgraded.stderr
        assert jobmanager.rest.job(first)["state"] == "FINISHED"  # stopped with its savepoint, not cancelled
        restored = jobmanager.rest.checkpoints(second)["latest"]["restored"]
        assert restored["is_savepoint"] is True
        vertices = jobmanager.rest.job(second)["vertices"]
        assert {v["parallelism"] for v in vertices} == {4}
        assert jobmanager.rest.overview()["slots-available"] == 0  # the job spreads over both TaskManagers

        produce(run, bootstrap, HALF)
        predictions, dead = drain(run, bootstrap, expected=2 * HALF, timeout_s=300)
        check_oracle(run, predictions, dead)
        assert len(predictions) + len(dead) == 2 * HALF  # one record out per record in, over both jobs

        # a savepoint of a running job, the job going on; an unknown job is one line
        taken = _vatic(settings, "stream", "savepoint", second, "--jobmanager", settings.flink_jobmanager,
                       "--dir", str(tmp_path / "savepoints"))  # fmt: skip
        assert taken.returncode == 0, taken.stderr
        assert taken.stdout.strip().startswith((tmp_path / "savepoints").as_uri().replace("file:///", "file:/"))
        assert jobmanager.rest.job(second)["state"] == "RUNNING"
        missing = _vatic(settings, "stream", "upgrade", str(run.folder), "--cluster", "--jobmanager",
                         settings.flink_jobmanager, "--job", "0" * 32, "--model-url", server.url)  # fmt: skip
        assert missing.returncode == 2
        assert missing.stderr.count("\n") == 1
        assert _vatic(settings, "stream", "cancel", second, "--jobmanager", settings.flink_jobmanager).returncode == 0
    finally:
        stopped = stack.down(["cluster"])
    assert stopped == ["flink-taskmanager-2", "flink-taskmanager", "flink-jobmanager", "kafka-3", "kafka-2", "kafka-1"]
    assert [pid for token in tokens for pid in processes_with_token(token)] == []
