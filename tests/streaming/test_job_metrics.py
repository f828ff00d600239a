"""The job's own metrics, scraped from the Prometheus endpoint of a live job (real Kafka, MLServer, Feast, PyFlink).

The oracle is the input: N events of which the test knows which ones are undecodable, lack a required feature
or are refused by the model. While the job runs, its ``/metrics`` must count exactly those: N events in,
predictions + dead letters == N, dead letters by stage as sent, and the batch-size histogram counting every batch.
Plus the Kafka source's own lag metrics, which the dashboard reads.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.streaming.test_job import drain, make_run, produce, start_job

PREFIX = "flink_taskmanager_job_task_operator_vatic_"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of the endpoint: (name, labels, value)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]


def total(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """The sum over subtasks (and operators) of one series."""
    return sum(value for n, have, value in samples if n == name and all(have.get(k) == v for k, v in labels.items()))


@pytest.mark.parametrize("mode", ["vectorized", "async"])
def test_a_live_job_counts_every_event_dead_letter_and_batch(
    kafka_bootstrap, registry_url, server, features, tmp_path: Path, mode: str
) -> None:
    n = 600
    run = make_run(tmp_path, features, kafka_bootstrap, registry_url, batch_size=32, mode=mode)
    produce(run, kafka_bootstrap, n)
    port = _free_port()
    log = tmp_path / "job.log"
    job = start_job(run, server, tmp_path / "checkpoints", bounded=False, log=log, metrics_port=port)
    samples: list[tuple[str, dict[str, str], float]] = []
    try:
        predictions, dead = drain(run, kafka_bootstrap, expected=n, timeout_s=300)
        assert len(predictions) + len(dead) == n, log.read_text()[-3000:]
        # the gauges reach the JVM when a bundle ends: wait (bounded) until the last bundle has been reported
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert job.poll() is None, log.read_text()[-3000:]
            try:
                samples = scrape(port)
            except OSError:
                samples = []
            if total(samples, PREFIX + "eventsIn") >= n:
                break
            time.sleep(1)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    (tmp_path / "scrape.txt").write_text("\n".join(f"{n} {labels} {v}" for n, labels, v in samples))

    assert total(samples, PREFIX + "eventsIn") == n
    predicted = total(samples, PREFIX + "predictions")
    by_stage = {stage: total(samples, PREFIX + "stage_deadLetters", stage=stage) for stage in Counter(
        [*run.expected_dead.values(), "decode", "encode"])}  # fmt: skip
    assert predicted == len(predictions)
    assert predicted + sum(by_stage.values()) == n
    expected = Counter(run.expected_dead.values())
    assert by_stage == {"decode": len(run.garbage), "encode": 0, **expected}

    batches = total(samples, PREFIX + "batches")
    assert batches >= n / 32  # no batch holds more than batch_size records
    assert total(samples, PREFIX + "batchSize_le_bucket", le="+Inf") == batches
    assert total(samples, PREFIX + "batchSize_count") == batches
    assert total(samples, PREFIX + "batchSize_sum") == n
    assert total(samples, PREFIX + "batchSize_le_bucket", le="32") == batches
    assert total(samples, PREFIX + "batchSize_le_bucket", le="16") <= batches
    calls = total(samples, PREFIX + "modelCallMs_count")
    assert 1 <= calls <= batches
    assert total(samples, PREFIX + "modelCallMs_le_bucket", le="+Inf") == calls
    assert total(samples, PREFIX + "modelCalls") >= calls
    assert total(samples, PREFIX + "modelRetries") == 0  # a healthy model server: nothing repeated
    assert 1 <= total(samples, PREFIX + "featureReadMs_count") <= batches

    # the Kafka source's own lag metrics (FLIP-33 and the consumer's), which the dashboard shows
    names = {name for name, _, _ in samples}
    assert "flink_taskmanager_job_task_operator_pendingRecords" in names, sorted(names)
    assert "flink_taskmanager_job_task_operator_KafkaSourceReader_KafkaConsumer_records_lag_max" in names, sorted(names)
