"""The streaming job on the clusters users outgrow one machine with: a three-node KRaft Kafka cluster and a Flink
session cluster of one JobManager and two TaskManagers (2 slots each), both started as ``vatic stack up --cluster``
starts them (on free ports, in a private home), a real MLServer and a real Feast repository.

The job is submitted with ``vatic stream submit --cluster`` at parallelism 2 over an 8-partition input topic
(replication 3, ``min.insync.replicas`` 2), then upgraded under load with ``vatic stream upgrade``: a changed batch
size and parallelism 4, through a stop-with-savepoint. The oracle of the mini-cluster tests holds over both jobs
(every event exactly once in the predictions, read_committed, or in the dead letters), and the new job restored
the savepoint the old one stopped with: state and source offsets kept across the upgrade. Then Flink's own ``flink
run`` submits the same program, the drift monitor counts every prediction (``vatic monitor submit``), and once both
clusters are stopped no process of ours (JVMs, Python workers) remains.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml
from confluent_kafka.admin import AdminClient, ConfigResource

from tests.fixtures.clusters import FLINK_PORTS, KAFKA_CLUSTER_PORTS, private_settings, stack_env
from tests.fixtures.model_server import free_port
from tests.serving.gateway.test_gateway import echo_service
from tests.streaming.test_job import check_oracle, drain, make_run, produce
from vatic.cli.stack.artifacts import Artifacts
from vatic.cli.stack.flink import FlinkJobManager
from vatic.cli.stack.process import port_accepts, processes_with_token
from vatic.cli.stack.settings import StackSettings
from vatic.cli.stack.stack import Stack
from vatic.connectors.kafka import scan
from vatic.schemas import AvroCodec, load_schema, topic_subject

ROOT = Path(__file__).resolve().parents[2]
VATIC = ROOT / ".venv" / "pipeline" / "bin" / "vatic"
HALF = 1_500
FLINK = ("flink-jobmanager", "flink-taskmanager", "flink-taskmanager-2")
PORTS = (*KAFKA_CLUSTER_PORTS, *FLINK_PORTS)


def cluster_settings(home: Path) -> StackSettings:
    """Both clusters on distinct free ports in a private home, the shared download cache."""
    return private_settings(home, PORTS, start_timeout_s=240)


def _vatic(settings: StackSettings | None, *args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    """The CLI as a user of this stack runs it: the stack's settings come from ``VATIC_STACK_*``."""
    env = stack_env(settings, PORTS) if settings is not None else None
    return subprocess.run([str(VATIC), *args], capture_output=True, text=True, timeout=timeout, check=False, env=env)


def _argv0(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return ""


def _python_workers(tokens: list[str]) -> list[int]:
    """The TaskManagers' Python UDF workers: processes with their tokens running this (the pipeline) interpreter."""
    return [pid for token in tokens for pid in processes_with_token(token) if _argv0(pid) == sys.executable]


def _completed_checkpoints(jobmanager: FlinkJobManager, job_id: str) -> int:
    return int(jobmanager.rest.checkpoints(job_id).get("counts", {}).get("completed", 0))


def test_the_job_runs_scales_out_and_upgrades_on_the_clusters_without_loss(registry_url, server, features, tmp_path):
    settings = cluster_settings(tmp_path / "home")
    stack = Stack(settings)
    bootstrap = settings.kafka_cluster_bootstrap
    jm = settings.flink_jobmanager
    tokens: list[str] = []
    try:
        assert stack.up(["cluster"]) == ["kafka-1", "kafka-2", "kafka-3", *FLINK]
        tokens = [t for name in FLINK if (t := stack.components[name].token())]  # type: ignore[attr-defined]
        status = _vatic(settings, "stack", "status", "cluster")
        assert status.returncode == 0, status.stdout + status.stderr
        for node in (1, 2, 3):
            assert re.search(rf"^kafka-{node}\s+up\s.*node {node} of 3: 3 broker\(s\) listed", status.stdout, re.M)
        assert "2 TaskManager(s), 4/4 slots free" in status.stdout
        jobmanager = stack.components["flink-jobmanager"]
        assert isinstance(jobmanager, FlinkJobManager)

        run = make_run(tmp_path, features, bootstrap, registry_url, create_topics=False, batch_size=64)
        submitted = _vatic(
            settings, "stream", "submit", str(run.folder), "--cluster", "--jobmanager", jm, "--parallelism", "2",
            "--partitions", "8", "--model-url", server.url, "--detached", "--checkpoint-dir",
            str(tmp_path / "checkpoints"), "--schema-registry-url", registry_url,
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr[-3000:]
        assert "(replication 3)" in submitted.stderr
        first = submitted.stdout.strip()
        assert re.fullmatch(r"[0-9a-f]{32}", first)
        assert f"as job {first} (parallelism 2)" in submitted.stderr

        # the topics: 8 partitions, 3 replicas on 3 nodes, 2 in sync to acknowledge a write
        admin = AdminClient({"bootstrap.servers": bootstrap})
        topic = admin.list_topics(timeout=10).topics[run.topics["input"]]
        assert len(topic.partitions) == 8
        assert {len(p.replicas) for p in topic.partitions.values()} == {3}
        resource = ConfigResource(ConfigResource.Type.TOPIC, run.topics["input"])
        configs = admin.describe_configs([resource])[resource].result(timeout=10)
        assert configs["min.insync.replicas"].value == "2"

        job = jobmanager.rest.wait_job(first, {"RUNNING", "FAILED"}, timeout_s=180)
        assert job["state"] == "RUNNING"
        # every vertex runs with 2 subtasks (the vectorized topology chains source, inference and both sinks)
        assert {v["name"]: v["parallelism"] for v in job["vertices"]} == {v["name"]: 2 for v in job["vertices"]}
        assert any("PythonCalc" in v["name"] or "infer" in v["name"] for v in job["vertices"])
        produce(run, bootstrap, HALF)

        # a second job that does not fit: one clear line, nothing submitted
        refused = _vatic(
            settings, "stream", "submit", str(run.folder), "--cluster", "--jobmanager", jm, "--parallelism", "4",
            "--model-url", server.url, "--no-create-topics", "--detached",
        )  # fmt: skip
        assert refused.returncode != 0
        assert refused.stderr.count("\n") == 1
        assert "2 free slot(s) of 4" in refused.stderr
        listed = _vatic(settings, "stream", "jobs", "--jobmanager", jm)
        assert re.search(rf"^{first}\s+RUNNING\s", listed.stdout, re.MULTILINE), listed.stdout

        deadline = time.monotonic() + 180
        while _completed_checkpoints(jobmanager, first) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _completed_checkpoints(jobmanager, first) >= 2
        # the Python UDF workers run on the TaskManagers with the pipeline environment's interpreter
        assert _python_workers(tokens), "no Python worker of the TaskManagers runs the pipeline interpreter"

        # the upgrade, under load: a new batch size and parallelism 4, through a stop-with-savepoint
        config = yaml.safe_load((run.folder / "service.yaml").read_text())
        config["streaming"]["batch_size"] = 32
        (run.folder / "service.yaml").write_text(yaml.safe_dump(config))
        upgraded = _vatic(
            settings, "stream", "upgrade", str(run.folder), "--cluster", "--jobmanager", jm, "--parallelism", "4",
            "--model-url", server.url, "--checkpoint-dir", str(tmp_path / "checkpoints"),
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
        assert jobmanager.rest.checkpoints(second)["latest"]["restored"]["is_savepoint"] is True
        assert {v["parallelism"] for v in jobmanager.rest.job(second)["vertices"]} == {4}
        assert jobmanager.rest.overview()["slots-available"] == 0  # the job spreads over both TaskManagers

        produce(run, bootstrap, HALF)
        predictions, dead = drain(run, bootstrap, expected=2 * HALF, timeout_s=300)
        failures = jobmanager.rest.exceptions(second)
        check_oracle(run, predictions, dead)
        assert len(predictions) + len(dead) == 2 * HALF, [f.get("exceptionName") for f in failures]
        assert {p["origin"] for p in predictions} == {"STREAM"}

        # a savepoint of a running job, the job going on; an unknown job is one line
        taken = _vatic(settings, "stream", "savepoint", second, "--jobmanager", jm, "--dir", str(tmp_path / "sp"))
        assert taken.returncode == 0, taken.stderr
        assert taken.stdout.strip().removeprefix("file:").startswith(str(tmp_path / "sp"))
        assert jobmanager.rest.job(second)["state"] == "RUNNING"
        missing = _vatic(settings, "stream", "upgrade", str(run.folder), "--cluster", "--jobmanager", jm, "--job",
                         "0" * 32, "--model-url", server.url)  # fmt: skip
        assert missing.returncode == 2
        assert missing.stderr.count("\n") == 1

        # cancelled through the REST API (PATCH /jobs/<id>?mode=cancel) by `vatic stream cancel`
        workers = _python_workers(tokens)
        cancelled = _vatic(settings, "stream", "cancel", second, "--jobmanager", jm)
        assert cancelled.returncode == 0, cancelled.stderr
        assert jobmanager.rest.job(second)["state"] == "CANCELED"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and set(workers) & set(_python_workers(tokens)):
            time.sleep(0.2)
        assert set(workers) & set(_python_workers(tokens)) == set()  # the job's workers end
        assert jobmanager.rest.overview()["slots-available"] == 4
        unknown = _vatic(settings, "stream", "cancel", "0" * 32, "--jobmanager", jm)
        assert unknown.returncode == 2
        assert unknown.stderr.count("\n") == 1
        assert "HTTP 404 Job could not be found" in unknown.stderr

        # the same job with Flink's own `flink run`, the way Flink users submit a Python program: readable options
        plain = _flink_run(
            settings, "--python", str(ROOT / "streaming" / "main.py"), "--pyExecutable", sys.executable,
            "--pyClientExecutable", sys.executable, "--parallelism", "4", "--detached",
            "--service-dir", str(run.folder), "--model-url", server.url, "--bootstrap-servers", bootstrap,
            "--schema-registry-url", registry_url, "--checkpoint-dir", str(tmp_path / "checkpoints-plain"),
            "--kafka-connector-jar", str(Artifacts(settings.cache).require_flink_kafka_connector()),
        )  # fmt: skip
        assert plain.returncode == 0, plain.stdout[-3000:]
        plain_id = re.search(r"JobID ([0-9a-f]{32})", plain.stdout)
        assert plain_id, plain.stdout[-2000:]
        state = jobmanager.rest.wait_job(plain_id.group(1), {"RUNNING", "FAILED", "FINISHED"}, timeout_s=120)
        assert state["state"] == "RUNNING", jobmanager.rest.exceptions(plain_id.group(1))
        assert _vatic(settings, "stream", "cancel", plain_id.group(1), "--jobmanager", jm).returncode == 0

        # the drift monitor on the same cluster (`vatic monitor submit`, bounded): every prediction counted once
        drift_topic = run.topics["output"].removesuffix(".out") + ".drift"
        config = yaml.safe_load((run.folder / "service.yaml").read_text())
        config["monitoring"] = {"topic": drift_topic}
        (run.folder / "service.yaml").write_text(yaml.safe_dump(config))
        jobmanager.rest.wait_job(plain_id.group(1), {"CANCELED"}, timeout_s=60)
        monitored = _vatic(
            settings, "monitor", "submit", str(run.folder), "--cluster", "--jobmanager", jm, "--bounded",
            "--checkpoint-dir", str(tmp_path / "checkpoints-monitor"), "--schema-registry-url", registry_url,
            "--registry-root", str(tmp_path / "no-profiles"), timeout=300,
        )  # fmt: skip
        assert monitored.returncode == 0, monitored.stderr[-3000:]
        assert "FINISHED" in monitored.stderr
        codec = AvroCodec(run.store, topic_subject(drift_topic), load_schema("drift"))
        windows = [codec.decode(r.value or b"") for r in scan(drift_topic, run.settings(bootstrap))]
        assert sum(w["predictions"] for w in windows) == len(predictions)
        assert {(w["service"], w["profiled"]) for w in windows} == {("echo", False)}  # no profile: counted only
    finally:
        stopped = stack.down(["cluster"])
    assert stopped == [*reversed(FLINK), "kafka-3", "kafka-2", "kafka-1"]
    assert len(tokens) == 3
    assert [pid for token in tokens for pid in processes_with_token(token)] == []  # no JVM, no Python worker
    assert not port_accepts(settings.host, settings.flink_rest_port)
    assert {h.state for h in stack.status(["cluster"])} == {"down"}


def _flink_run(settings: StackSettings, *args: str) -> subprocess.CompletedProcess[str]:
    """The distribution's own ``flink run`` (PyFlink ships it), against the test cluster."""
    import pyflink

    from vatic.cli.stack.flink import java_home

    flink = Path(pyflink.__file__).parent / "bin" / "flink"
    env = {**os.environ, "JAVA_HOME": str(java_home(settings)), "FLINK_LOG_DIR": str(settings.home / "flink-run")}
    env.pop("PYFLINK_GATEWAY_DISABLED", None)
    argv = [str(flink), "run", "--jobmanager", settings.flink_jobmanager, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False, env=env)


def test_submit_without_a_jobmanager_is_one_clear_line(features, tmp_path):
    folder = echo_service(tmp_path / "service", features, name="echo")
    address = f"127.0.0.1:{free_port()}"
    refused = _vatic(
        None, "stream", "submit", str(folder), "--jobmanager", address, "--model-url", "http://127.0.0.1:1"
    )
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1
    assert refused.stderr.startswith(f"vatic: no Flink JobManager answers at http://{address}")
