"""The streaming job on a real standalone Flink cluster with parallelism 2.

A JobManager and a TaskManager (2 slots) from the Flink distribution PyFlink ships, on free loopback ports; a real
MLServer and a real Feast repository; the job submitted with ``vatic stream submit``. The oracle is the one of the
mini-cluster tests (:mod:`tests.streaming.test_job`): every event exactly once in the predictions (read_committed)
or in the dead letters. The job runs unbounded, as in production, and is cancelled through the REST API once
everything is out; the drift monitor is then submitted to the same cluster (``vatic monitor submit``) and counts every
prediction; then the cluster is stopped and no process of ours (JVMs, Python workers) may remain.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.fixtures.model_server import free_port, free_ports
from tests.serving.gateway.test_gateway import echo_service
from tests.streaming.test_job import check_oracle, drain, make_run, produce
from vatic.cli.stack.artifacts import Artifacts
from vatic.cli.stack.flink import FlinkJobManager, FlinkTaskManager
from vatic.cli.stack.process import port_accepts, processes_with_token
from vatic.cli.stack.settings import StackSettings
from vatic.connectors.kafka import scan
from vatic.schemas import AvroCodec, load_schema, topic_subject

ROOT = Path(__file__).resolve().parents[2]
VATIC = ROOT / ".venv" / "pipeline" / "bin" / "vatic"
EVENTS = 2_000


def cluster_settings(home: Path) -> StackSettings:
    """A private cluster: own home, five distinct free ports (REST, RPC, metrics), the shared download cache."""
    ports = free_ports(5)
    return StackSettings(
        home=home,
        flink_rest_port=ports[0],
        flink_jobmanager_rpc_port=ports[1],
        flink_taskmanager_rpc_port=ports[2],
        flink_jobmanager_metrics_port=ports[3],
        flink_taskmanager_metrics_port=ports[4],
        start_timeout_s=240,
    )


def _argv0(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return ""


def _python_workers(token: str) -> list[int]:
    """Our TaskManager's Python UDF workers: processes with its token running this (the pipeline) interpreter."""
    return [pid for pid in processes_with_token(token) if _argv0(pid) == sys.executable]


def _vatic(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VATIC), *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_the_job_runs_on_a_standalone_cluster_with_parallelism_2(
    kafka_bootstrap, registry_url, server, features, tmp_path
):
    run = make_run(tmp_path, features, kafka_bootstrap, registry_url)
    produce(run, kafka_bootstrap, EVENTS)
    settings = cluster_settings(tmp_path / "home")
    jobmanager, taskmanager = FlinkJobManager(settings), FlinkTaskManager(settings)
    tokens: list[str] = []
    try:
        assert jobmanager.start() is True
        assert taskmanager.start() is True
        tokens = [t for t in (jobmanager.token(), taskmanager.token()) if t]
        overview = jobmanager.rest.overview()
        assert (overview["taskmanagers"], overview["slots-total"], overview["slots-available"]) == (1, 2, 2)

        submitted = _vatic(
            "stream", "submit", str(run.folder), "--jobmanager", settings.flink_jobmanager, "--parallelism", "2",
            "--model-url", server.url, "--checkpoint-dir", str(tmp_path / "checkpoints"), "--no-create-topics",
            "--schema-registry-url", registry_url, "--detached",
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr[-3000:]
        job_id = submitted.stdout.strip()
        assert re.fullmatch(r"[0-9a-f]{32}", job_id), submitted.stdout
        assert f"as job {job_id} (parallelism 2)" in submitted.stderr

        job = jobmanager.rest.wait_job(job_id, {"RUNNING", "FAILED", "FINISHED", "CANCELED"}, timeout_s=120)
        assert job["state"] == "RUNNING"
        # every vertex runs with 2 subtasks (the default vectorized topology chains source, inference and both
        # sinks into one vertex), the inference runs in them, and the job takes both slots
        assert job["vertices"]
        assert {v["name"]: v["parallelism"] for v in job["vertices"]} == {v["name"]: 2 for v in job["vertices"]}
        assert any("PythonCalc" in v["name"] or "infer" in v["name"] for v in job["vertices"])

        # a second job does not fit: one clear line, nothing submitted
        refused = _vatic(
            "stream", "submit", str(run.folder), "--jobmanager", settings.flink_jobmanager, "--parallelism", "2",
            "--model-url", server.url, "--no-create-topics", "--detached",
        )  # fmt: skip
        assert refused.returncode != 0
        assert refused.stderr.count("\n") == 1
        assert "0 free slot(s) of 2" in refused.stderr

        predictions, dead = drain(run, kafka_bootstrap, expected=EVENTS, timeout_s=300)
        failures = jobmanager.rest.exceptions(job_id)
        check_oracle(run, predictions, dead)
        assert len(predictions) + len(dead) == EVENTS, [f.get("exceptionName") for f in failures]
        assert {p["origin"] for p in predictions} == {"STREAM"}

        # the Python UDF workers run on the TaskManager with the pipeline environment's interpreter
        workers = _python_workers(taskmanager.token() or "")
        assert workers, "no Python worker of the TaskManager runs the pipeline interpreter"

        listed = _vatic("stream", "jobs", "--jobmanager", settings.flink_jobmanager)
        assert listed.returncode == 0, listed.stderr
        assert re.search(rf"^{job_id}\s+RUNNING\s", listed.stdout, re.MULTILINE), listed.stdout

        # cancelled through the REST API (PATCH /jobs/<id>?mode=cancel) by `vatic stream cancel`
        cancelled = _vatic("stream", "cancel", job_id, "--jobmanager", settings.flink_jobmanager)
        assert cancelled.returncode == 0, cancelled.stderr
        assert jobmanager.rest.job(job_id)["state"] == "CANCELED"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and set(workers) & set(_python_workers(taskmanager.token() or "")):
            time.sleep(0.2)
        assert set(workers) & set(_python_workers(taskmanager.token() or "")) == set()  # the job's workers end
        assert jobmanager.rest.overview()["slots-available"] == 2
        unknown = _vatic("stream", "cancel", "0" * 32, "--jobmanager", settings.flink_jobmanager)
        assert unknown.returncode == 2
        assert unknown.stderr.count("\n") == 1
        assert "HTTP 404 Job could not be found" in unknown.stderr

        # the same job with Flink's own `flink run`, the way Flink users submit a Python program: readable options
        plain = _flink_run(
            settings, "--python", str(ROOT / "streaming" / "main.py"), "--pyExecutable", sys.executable,
            "--pyClientExecutable", sys.executable, "--parallelism", "2", "--detached",
            "--service-dir", str(run.folder), "--model-url", server.url, "--bootstrap-servers", kafka_bootstrap,
            "--schema-registry-url", registry_url, "--checkpoint-dir", str(tmp_path / "checkpoints-plain"),
            "--kafka-connector-jar", str(Artifacts(settings.cache).require_flink_kafka_connector()),
        )  # fmt: skip
        assert plain.returncode == 0, plain.stdout[-3000:]
        plain_id = re.search(r"JobID ([0-9a-f]{32})", plain.stdout)
        assert plain_id, plain.stdout[-2000:]
        state = jobmanager.rest.wait_job(plain_id.group(1), {"RUNNING", "FAILED", "FINISHED"}, timeout_s=120)
        assert state["state"] == "RUNNING", jobmanager.rest.exceptions(plain_id.group(1))
        assert _vatic("stream", "cancel", plain_id.group(1), "--jobmanager", settings.flink_jobmanager).returncode == 0

        # the drift monitor on the same cluster (`vatic monitor submit`, bounded): every prediction counted once
        drift_topic = run.topics["output"].removesuffix(".out") + ".drift"
        config = yaml.safe_load((run.folder / "service.yaml").read_text())
        config["monitoring"] = {"topic": drift_topic}
        (run.folder / "service.yaml").write_text(yaml.safe_dump(config))
        jobmanager.rest.wait_job(plain_id.group(1), {"CANCELED"}, timeout_s=60)
        monitored = _vatic(
            "monitor", "submit", str(run.folder), "--jobmanager", settings.flink_jobmanager, "--bounded",
            "--checkpoint-dir", str(tmp_path / "checkpoints-monitor"), "--schema-registry-url", registry_url,
            "--registry-root", str(tmp_path / "no-profiles"), timeout=300,
        )  # fmt: skip
        assert monitored.returncode == 0, monitored.stderr[-3000:]
        assert "FINISHED" in monitored.stderr
        codec = AvroCodec(run.store, topic_subject(drift_topic), load_schema("drift"))
        windows = [codec.decode(r.value or b"") for r in scan(drift_topic, run.settings(kafka_bootstrap))]
        assert sum(w["predictions"] for w in windows) == len(predictions)
        assert {(w["service"], w["profiled"]) for w in windows} == {("echo", False)}  # no profile: counted only
    finally:
        stopped = [taskmanager.stop(), jobmanager.stop()]
    assert stopped == [True, True]
    assert len(tokens) == 2
    assert [pid for token in tokens for pid in processes_with_token(token)] == []  # no JVM, no Python worker
    assert not port_accepts(settings.host, settings.flink_rest_port)
    assert (jobmanager.health().state, taskmanager.health().state) == ("down", "down")


def _flink_run(settings: StackSettings, *args: str) -> subprocess.CompletedProcess[str]:
    """The distribution's own ``flink run`` (PyFlink ships it), against the test cluster."""
    import os

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
    refused = _vatic("stream", "submit", str(folder), "--jobmanager", address, "--model-url", "http://127.0.0.1:1")
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1
    assert refused.stderr.startswith(f"vatic: no Flink JobManager answers at http://{address}")
