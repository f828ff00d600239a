"""The streaming job end to end on real processes: Kafka broker, PyFlink (mini-cluster), MLServer, Feast.

The oracle (as in Kafka's transactions tests): seed events with unique ids, run the job, drain the predictions
(read_committed) and the dead-letter topic, compare id sets. Every input event must appear exactly once in
exactly one of the two topics; dead-letter records must carry the original bytes, the stage and the error.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures import feast_repo
from tests.fixtures.model_server import REJECT
from tests.serving.gateway.test_gateway import echo_service, transaction
from vatic.cli.stack.mlserver import ModelServer
from vatic.connectors.kafka import Consumer, KafkaSettings, Producer, ensure_topics
from vatic.connectors.schema_registry import ConfluentSchemaRegistry
from vatic.schemas import AvroCodec, SchemaSource, load_schema, topic_subject

ROOT = Path(__file__).resolve().parents[2]
VATIC = ROOT / ".venv" / "pipeline" / "bin" / "vatic"


@dataclass
class Run:
    """One service with fresh topics, the events sent to it and what came out."""

    folder: Path
    topics: dict[str, str]
    store: SchemaSource  # the one source of schema ids of the run: the stack's registry
    registry: str
    sent: dict[str, bytes] = field(default_factory=dict)  # event_id -> produced bytes
    garbage: set[bytes] = field(default_factory=set)  # undecodable payloads (no event id)
    expected_dead: dict[str, str] = field(default_factory=dict)  # event_id -> stage

    def settings(self, kafka_bootstrap: str) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=kafka_bootstrap)


def make_run(
    tmp_path: Path, features: Path, kafka_bootstrap: str, registry_url: str, *, create_topics: bool = True,
    **streaming: Any,
) -> Run:  # fmt: skip
    prefix = f"job-{uuid.uuid4().hex[:8]}"
    topics = {"input": f"{prefix}.in", "output": f"{prefix}.out", "dead": f"{prefix}.dlq"}
    folder = echo_service(tmp_path / "service", features, name="echo")
    config = yaml.safe_load((folder / "service.yaml").read_text())
    config["features"]["policies"] = {"customer_stats:avg_amount": {"on_missing": "reject"}}
    config["streaming"].update(
        {
            "input_topic": topics["input"],
            "output_topic": topics["output"],
            "dead_letter_topic": topics["dead"],
            "checkpoint_interval_s": 2,
            "batch_size": 64,
            "batch_wait_ms": 10,
            **streaming,
        }
    )
    (folder / "service.yaml").write_text(yaml.safe_dump(config))
    if not create_topics:
        return Run(folder, topics, ConfluentSchemaRegistry(registry_url), registry_url)
    ensure_topics([topics["input"]], partitions=3, settings=KafkaSettings(bootstrap_servers=kafka_bootstrap))
    ensure_topics(
        [topics["output"], topics["dead"]], partitions=2, settings=KafkaSettings(bootstrap_servers=kafka_bootstrap)
    )
    return Run(folder, topics, ConfluentSchemaRegistry(registry_url), registry_url)


TRACE = "test-trace"


def _trace(payload: bytes) -> list[tuple[str, bytes]]:
    """A header derived from the record's value: a dead letter must carry its input's headers (a replayed input
    that fails again keeps its replay count that way)."""
    return [(TRACE, hashlib.sha256(payload).hexdigest()[:16].encode())]


def produce(run: Run, kafka_bootstrap: str, n: int) -> None:
    """``n`` events: ~96% good, plus malformed bytes, unknown customers (a required feature is missing) and
    inputs the model rejects."""
    codec = AvroCodec(run.store, topic_subject(run.topics["input"]), load_schema("transaction"))
    producer = Producer(run.settings(kafka_bootstrap))
    for i in range(n):
        event_id = str(uuid.UUID(int=uuid.uuid4().int))
        event = transaction(i % 40, event_id=event_id, event_time=time.time_ns() // 1_000_000)
        if i % 100 == 11:
            payload = f"not avro #{i}".encode()
            run.garbage.add(payload)
            producer.produce(run.topics["input"], payload, b"garbage", _trace(payload))
            continue
        if i % 100 == 23:
            payload = codec.encode(event)[:-3]  # truncated: decodes to an error
            run.garbage.add(payload)
            producer.produce(run.topics["input"], payload, b"truncated", _trace(payload))
            continue
        if i % 100 == 37:
            event["customer_id"] = f"ghost-{i}"
            run.expected_dead[event_id] = "enrich"
        elif i % 100 == 59:
            event["merchant_category"] = REJECT
            run.expected_dead[event_id] = "infer"
        payload = codec.encode(event)
        run.sent[event_id] = payload
        producer.produce(run.topics["input"], payload, event["customer_id"].encode(), _trace(payload))
    producer.flush()


def start_job(
    run: Run, server: ModelServer, checkpoints: Path, *, bounded: bool, log: Path, metrics_port: int = 0
) -> subprocess.Popen[bytes]:
    """``vatic stream run`` of ``run``'s service; its Prometheus endpoint on ``metrics_port`` (0: none)."""
    argv = [
        str(VATIC), "stream", "run", str(run.folder), "--model-url", server.url,
        "--checkpoint-dir", str(checkpoints), "--no-create-topics", "--schema-registry-url", run.registry,
        "--bounded" if bounded else "--no-bounded", "--metrics-port", str(metrics_port),
    ]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log.open("ab"), start_new_session=True)


def run_bounded(run: Run, server: ModelServer, checkpoints: Path, log: Path, timeout_s: float) -> None:
    """Run ``run``'s service as a bounded job to its end: it must exit 0 within ``timeout_s`` (the log's tail
    says why not); a job that hangs is killed, its whole process group."""
    wait_bounded(start_job(run, server, checkpoints, bounded=True, log=log), log, timeout_s)


def wait_bounded(job: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    """A bounded job must exit 0 within ``timeout_s`` (its log's tail says why not); one that hangs is killed, its
    whole process group."""
    try:
        assert job.wait(timeout=timeout_s) == 0, log.read_text()[-3000:]
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()


def drain(run: Run, kafka_bootstrap: str, expected: int, timeout_s: float = 120) -> tuple[list[dict], list[dict]]:
    """Everything committed to the output and dead-letter topics (read_committed), decoded."""
    predictions_codec = AvroCodec(run.store, topic_subject(run.topics["output"]), load_schema("prediction"))
    dead_codec = AvroCodec(run.store, topic_subject(run.topics["dead"]), load_schema("dead_letter"))
    consumer = Consumer(
        [run.topics["output"], run.topics["dead"]], f"drain-{uuid.uuid4().hex}", run.settings(kafka_bootstrap)
    )
    predictions: list[dict] = []
    dead: list[dict] = []
    deadline = time.monotonic() + timeout_s
    quiet_until = None
    try:
        while time.monotonic() < deadline:
            records = consumer.poll_batch(2000, timeout=0.5)
            for record in records:
                if record.topic == run.topics["output"]:
                    predictions.append(predictions_codec.decode(record.value or b""))
                else:
                    dead.append(dead_codec.decode(record.value or b""))
            if len(predictions) + len(dead) >= expected:
                quiet_until = quiet_until or time.monotonic() + 3  # keep reading a little: duplicates would show
                if time.monotonic() > quiet_until:
                    break
    finally:
        consumer.close()
    return predictions, dead


def check_oracle(run: Run, predictions: list[dict], dead: list[dict]) -> None:
    predicted = Counter(p["event_id"] for p in predictions)
    dead_ids = Counter(d["event_id"] for d in dead if d["event_id"] is not None)
    assert [i for i, c in predicted.items() if c > 1] == []  # no duplicate predictions
    assert [i for i, c in dead_ids.items() if c > 1] == []  # no duplicate dead letters
    assert set(predicted) & set(dead_ids) == set()  # never both
    assert set(predicted) | set(dead_ids) == set(run.sent)  # nothing lost
    assert {i: d["stage"] for d in dead if (i := d["event_id"]) is not None} == run.expected_dead
    undecodable = [d for d in dead if d["event_id"] is None]
    assert {d["value"] for d in undecodable} == run.garbage  # original bytes, byte for byte
    assert {d["stage"] for d in undecodable} == {"decode"}
    for record in dead:
        assert record["topic"] == run.topics["input"]
        assert [(h["key"], h["value"]) for h in record["headers"]] == _trace(record["value"])  # input headers kept
        assert record["error_class"]
        assert record["error_message"]
        if record["event_id"] is not None:
            assert record["value"] == run.sent[record["event_id"]]
    rejected = [d for d in dead if d["stage"] == "infer"]
    assert {d["error_class"] for d in rejected} == {"ModelRejected"}
    assert all(d["model_response"] and REJECT.encode() in d["model_response"] for d in rejected)
    assert {d["error_class"] for d in dead if d["stage"] == "enrich"} == {"MissingFeatures"}


MODES = pytest.mark.parametrize("mode", ["vectorized", "async"])


def test_ten_thousand_events_each_end_up_exactly_once(kafka_bootstrap, registry_url, server, features, tmp_path):
    """The default (vectorized) topology; the async one answers 10,000 events through a crash below."""
    run = make_run(tmp_path, features, kafka_bootstrap, registry_url, mode="vectorized")
    produce(run, kafka_bootstrap, 10_000)
    log = tmp_path / "job.log"
    run_bounded(run, server, tmp_path / "checkpoints", log, timeout_s=420)
    predictions, dead = drain(run, kafka_bootstrap, expected=10_000)
    check_oracle(run, predictions, dead)
    assert len(predictions) + len(dead) == 10_000
    sample = predictions[0]
    assert sample["service"] == "echo"
    assert sample["origin"] == "STREAM"
    assert set(sample["features"]) == set(feast_repo.FEATURES)


def _completed_checkpoints(root: Path) -> list[Path]:
    return sorted(root.glob("*/chk-*/_metadata"))


@MODES
def test_a_job_killed_after_a_checkpoint_resumes_with_every_event_once(
    kafka_bootstrap, registry_url, server, features, tmp_path, mode
):
    import threading

    run = make_run(tmp_path, features, kafka_bootstrap, registry_url, batch_size=16, mode=mode)
    checkpoints = tmp_path / "checkpoints"
    log = tmp_path / "job.log"
    first = start_job(run, server, checkpoints, bounded=False, log=log)
    # events keep arriving while the job runs, so the crash lands in the middle of the stream
    producer = threading.Thread(
        target=lambda: [produce(run, kafka_bootstrap, 1_000) or time.sleep(1) for _ in range(10)]
    )
    producer.start()
    watcher = Consumer([run.topics["output"]], f"watch-{uuid.uuid4().hex}", run.settings(kafka_bootstrap))
    committed = 0
    try:
        # wait until a checkpoint has completed AND its transaction made predictions visible (read_committed)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (committed and _completed_checkpoints(checkpoints)):
            assert first.poll() is None, log.read_text()[-3000:]
            committed += len(watcher.poll_batch(1000, timeout=0.2))
        assert committed, "nothing was committed before the crash"
    finally:
        watcher.close()
        os.killpg(first.pid, signal.SIGKILL)  # the whole mini-cluster (JobManager + TaskManager) dies
        first.wait()
        producer.join()
    # what was committed before the crash is a strict part of the whole
    before, _ = drain(run, kafka_bootstrap, expected=10_000, timeout_s=8)
    assert 0 < len(before) < 9_000

    # restarted as a streaming job runs: unbounded, from the newest retained checkpoint; stopped once drained
    second = start_job(run, server, checkpoints, bounded=False, log=log)
    try:
        predictions, dead = drain(run, kafka_bootstrap, expected=10_000, timeout_s=300)
    finally:
        os.killpg(second.pid, signal.SIGKILL)
        second.wait()
    assert "resuming from" in log.read_text()
    check_oracle(run, predictions, dead)
    assert len(predictions) + len(dead) == 10_000
    sample = predictions[0]
    assert (sample["service"], sample["origin"]) == ("echo", "STREAM")
    assert set(sample["features"]) == set(feast_repo.FEATURES)


@MODES
def test_a_bounded_run_flushes_its_last_partial_batch(kafka_bootstrap, registry_url, server, features, tmp_path, mode):
    # a batch that never fills and a wait that never elapses: only the end of the input can flush it
    run = make_run(tmp_path, features, kafka_bootstrap, registry_url, batch_size=1000, batch_wait_ms=60_000, mode=mode)
    produce(run, kafka_bootstrap, 100)
    log = tmp_path / "job.log"
    job = start_job(run, server, tmp_path / "checkpoints", bounded=True, log=log)
    try:
        assert job.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    predictions, dead = drain(run, kafka_bootstrap, expected=100, timeout_s=60)
    check_oracle(run, predictions, dead)
    assert len(predictions) + len(dead) == 100


def test_a_job_that_never_reaches_its_model_server_gives_up_after_its_restart_attempts_and_says_why(
    tmp_path: Path, features: Path, kafka_bootstrap: str, registry_url: str
) -> None:
    """An outage that does not end is an error someone must see: the job fails once its restart attempts are
    spent, and `vatic stream run` exits non-zero with the cause in one line (not a hang, not a traceback)."""
    run = make_run(tmp_path, features, kafka_bootstrap, registry_url, restart_attempts=1, retry={"budget_s": 1.0})
    produce(run, kafka_bootstrap, 5)
    argv = [
        str(VATIC), "stream", "run", str(run.folder), "--model-url", "http://127.0.0.1:9",
        "--checkpoint-dir", str(tmp_path / "checkpoints"), "--no-create-topics", "--no-bounded",
        "--schema-registry-url", registry_url,
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=400, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("vatic: the job failed and Flink gave up restarting it: "), last
    assert "ModelServerUnavailable" in last, last
