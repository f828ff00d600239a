"""The job under ``streaming.guarantee: at_least_once``, end to end on real processes (Kafka, PyFlink mini-cluster,
MLServer, Feast): the output keys and ``vatic-attempt`` headers a consumer dedupes with, and the replays a killed
job writes when it restarts from its checkpoint.

Contract checked (see :mod:`vatic.streaming.batch`): a prediction's Kafka key is its event id's bytes, a dead
letter's is its input record's key; every output carries ``vatic-attempt`` (an integer, the worker incarnation);
without a fault every input is answered once; after a restart nothing is lost, a replayed answer has the same key
as its first answer and a larger attempt, and :class:`~vatic.connectors.dedupe.SeenKeys` keeps exactly one answer
per input.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.serving.gateway.test_gateway import echo_service
from tests.streaming.test_job import Run, make_run, produce, run_bounded, start_job
from vatic.cli.stack.mlserver import ModelServer
from vatic.connectors.dedupe import SeenKeys, attempt, identity
from vatic.connectors.kafka import Consumer
from vatic.schemas import AvroCodec, load_schema, topic_subject
from vatic.serving.core import SourceRecord
from vatic.streaming.batch import DEAD_LETTER, BatchProcessor
from vatic.streaming.settings import JobSettings


@dataclass(frozen=True)
class Answer:
    """One output record as a consumer sees it: which topic, its Kafka key and headers, its decoded value."""

    dead: bool
    key: bytes | None
    headers: dict[str, bytes]
    value: dict

    @property
    def attempt(self) -> int | None:
        return attempt(self.headers)

    @property
    def identity(self) -> bytes:
        found = identity(self.headers, self.key)
        assert found is not None
        return found


def read_answers(
    run: Run, kafka_bootstrap: str, expected: int, timeout_s: float, *, incarnations: int = 1
) -> list[Answer]:
    """Every output record (read_committed, from the beginning) until ``expected`` distinct inputs are answered
    by at least ``incarnations`` workers (distinct ``vatic-attempt`` values) and 3 s more passed (replays would
    show), or ``timeout_s``."""
    codecs = {
        run.topics["output"]: AvroCodec(run.store, topic_subject(run.topics["output"]), load_schema("prediction")),
        run.topics["dead"]: AvroCodec(run.store, topic_subject(run.topics["dead"]), load_schema("dead_letter")),
    }
    consumer = Consumer(list(codecs), f"alo-{uuid.uuid4().hex}", run.settings(kafka_bootstrap))
    answers: list[Answer] = []
    distinct: set[bytes] = set()
    attempts: set[int | None] = set()
    deadline, quiet_until = time.monotonic() + timeout_s, None
    try:
        while time.monotonic() < deadline:
            for record in consumer.poll_batch(2000, timeout=0.5):
                headers = {k: v.encode() if isinstance(v, str) else v or b"" for k, v in record.headers}
                answer = Answer(record.topic == run.topics["dead"], record.key, headers,
                                codecs[record.topic].decode(record.value or b""))  # fmt: skip
                answers.append(answer)
                distinct.add(answer.identity)
                attempts.add(answer.attempt)
            if len(distinct) >= expected and len(attempts) >= incarnations:
                quiet_until = quiet_until or time.monotonic() + 3
                if time.monotonic() > quiet_until:
                    break
    finally:
        consumer.close()
    return answers


def check_keys_and_headers(run: Run, answers: list[Answer]) -> None:
    """Predictions keyed by event id, dead letters by their input record's key, an attempt on every answer."""
    events = AvroCodec(run.store, topic_subject(run.topics["input"]), load_schema("transaction"))
    for a in answers:
        assert a.attempt is not None, a.headers
        if a.dead:
            source = f"{a.value['topic']}/{a.value['partition']}/{a.value['offset']}".encode()
            assert a.headers["vatic-source"] == source
            if a.value["event_id"] is None:
                assert a.key in (b"garbage", b"truncated")  # the input keys of undecodable records (produce)
            else:  # the input record's key: its customer id (produce), not the event id
                assert a.key == events.decode(a.value["value"])["customer_id"].encode()
        else:
            assert a.key == a.value["event_id"].encode()  # keyed by event id
            assert a.headers["vatic-event-id"] == a.key


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_a_worker_stamps_its_incarnation_on_every_output_and_a_later_worker_a_larger_one(
    guarantee: str, features: Path, tmp_path: Path
) -> None:
    """Dead letters need no model server: undecodable records stop at decode. Their key is the input key in both
    modes; ``vatic-attempt`` is the epoch ms at which the worker opened, larger for a worker opened later."""
    folder = echo_service(tmp_path / "service", features, name="echo")
    config = yaml.safe_load((folder / "service.yaml").read_text())
    config["streaming"]["guarantee"] = guarantee
    (folder / "service.yaml").write_text(yaml.safe_dump(config))
    settings = JobSettings(service_dir=folder, model_url="http://127.0.0.1:9", schema_store=tmp_path / "schemas")
    records = [SourceRecord("t.in", 0, 7, b"c1", b"not avro"), SourceRecord("t.in", 1, 3, None, b"nor this")]
    attempts = []
    for _ in range(2):
        before = time.time_ns() // 1_000_000
        processor = BatchProcessor(settings)
        processor.open()
        try:
            outputs = asyncio.run(processor.process(records))
        finally:
            asyncio.run(processor.aclose())
        assert [(o.kind, o.key) for o in outputs] == [(DEAD_LETTER, b"c1"), (DEAD_LETTER, None)]
        stamped = {attempt(o.headers) for o in outputs}
        assert len(stamped) == 1
        (incarnation,) = stamped
        assert incarnation is not None
        assert before <= incarnation <= time.time_ns() // 1_000_000
        attempts.append(incarnation)
        time.sleep(0.01)
    assert attempts[1] > attempts[0]


def test_without_a_fault_every_input_is_answered_once_keyed_by_event_id_with_an_attempt(
    kafka_bootstrap: str, registry_url: str, server: ModelServer, features: Path, tmp_path: Path
) -> None:
    run = make_run(tmp_path, features, kafka_bootstrap, registry_url, guarantee="at_least_once")
    produce(run, kafka_bootstrap, 500)
    log = tmp_path / "job.log"
    before = time.time_ns() // 1_000_000
    run_bounded(run, server, tmp_path / "checkpoints", log, timeout_s=300)
    answers = read_answers(run, kafka_bootstrap, 500, timeout_s=60)
    check_keys_and_headers(run, answers)
    assert len(answers) == 500  # no fault: no replay, one answer each
    predicted = {a.value["event_id"] for a in answers if not a.dead}
    dead_ids = {a.value["event_id"] for a in answers if a.dead and a.value["event_id"] is not None}
    assert predicted | dead_ids == set(run.sent)
    assert {a.value["value"] for a in answers if a.dead and a.value["event_id"] is None} == run.garbage
    attempts = {a.attempt for a in answers}
    assert len(attempts) == 1  # one worker (parallelism 1), opened once
    (incarnation,) = attempts
    assert incarnation is not None
    assert before <= incarnation <= time.time_ns() // 1_000_000  # the worker's open time, epoch ms


def _completed_checkpoints(root: Path) -> list[Path]:
    return sorted(root.glob("*/chk-*/_metadata"))


@pytest.mark.timeout(900)
def test_a_killed_job_replays_under_a_later_attempt_and_a_consumer_dedupes_to_one_answer_each(
    kafka_bootstrap: str, registry_url: str, server: ModelServer, features: Path, tmp_path: Path
) -> None:
    # a long checkpoint interval: the job is killed well after its first checkpoint and before its second, so
    # what it answered in between is replayed
    run = make_run(
        tmp_path, features, kafka_bootstrap, registry_url, guarantee="at_least_once", checkpoint_interval_s=20,
        batch_size=16,
    )  # fmt: skip
    checkpoints = tmp_path / "checkpoints"
    log = tmp_path / "job.log"
    first = start_job(run, server, checkpoints, bounded=False, log=log)
    # events keep arriving (about 200/s) until the kill, so that the job answers some after its first checkpoint
    stop, rounds = threading.Event(), []  # rounds: the event ids each round produced, in order

    def feed() -> None:
        while not stop.is_set() and len(rounds) < 600:
            before = len(run.sent)
            produce(run, kafka_bootstrap, 100)
            rounds.append(list(run.sent)[before:])
            time.sleep(0.5)

    producer = threading.Thread(target=feed)
    producer.start()
    watcher = Consumer([run.topics["output"]], f"watch-{uuid.uuid4().hex}", run.settings(kafka_bootstrap))
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not _completed_checkpoints(checkpoints):
            assert first.poll() is None, log.read_text()[-3000:]
            watcher.poll_batch(1000, timeout=0.2)
        assert _completed_checkpoints(checkpoints), "no checkpoint completed"
        # An event produced after chk-1 completed was read after its barrier, so its answer is replayed from chk-1.
        # Answers merely seen after the completion are not enough: a lagging reader sees pre-barrier answers late.
        # At-least-once: an answer is visible at once, there is no transaction to wait for.
        started = len(rounds) + 1  # the round under way may have begun before the completion
        while time.monotonic() < deadline and len(rounds) <= started:
            time.sleep(0.1)
        later = {event_id.encode() for ids in rounds[started:] for event_id in ids}
        seen_later = 0
        while time.monotonic() < deadline and seen_later < 20:
            assert first.poll() is None, log.read_text()[-3000:]
            seen_later += sum(r.key in later for r in watcher.poll_batch(1000, timeout=0.2))
        assert seen_later >= 20, "no answer to an event produced after chk-1 became visible"
        assert [p.parent.name for p in _completed_checkpoints(checkpoints)] == ["chk-1"]  # the kill comes before chk-2
    finally:
        watcher.close()
        os.killpg(first.pid, signal.SIGKILL)  # the whole mini-cluster (JobManager + TaskManager) dies
        first.wait()
        stop.set()
        producer.join()
    # the killed JVM left its temporary files beside the checkpoints, where the next run sweeps them, not in /tmp
    assert list(checkpoints.with_name("checkpoints.tmp").glob("flink-table-planner_*.jar"))
    inputs = 100 * len(rounds)  # every record of every round, undecodable ones included
    second = start_job(run, server, checkpoints, bounded=False, log=log)
    try:
        # the first job may have answered every input before the kill: wait for the restarted one's replays too
        answers = read_answers(run, kafka_bootstrap, inputs, timeout_s=300, incarnations=2)
    finally:
        os.killpg(second.pid, signal.SIGKILL)
        second.wait()
    assert "resuming from" in log.read_text()
    check_keys_and_headers(run, answers)

    by_identity: dict[bytes, list[Answer]] = defaultdict(list)
    for a in answers:
        by_identity[a.identity].append(a)
    assert len(by_identity) == inputs  # nothing lost: one identity per input record
    replayed = {i: found for i, found in by_identity.items() if len(found) > 1}
    assert replayed, "the kill replayed nothing: the test did not exercise at-least-once"
    for found in replayed.values():
        assert len({a.key for a in found}) == 1  # a replay has its first answer's key (so: its partition)
        attempts = [a.attempt for a in found]
        assert len(set(attempts)) == len(attempts)  # never twice by one incarnation
        first_answer, *replays = found  # in read order (one key: one partition)
        assert all((r.attempt or 0) > (first_answer.attempt or 0) for r in replays)
    seen = SeenKeys()
    kept = [a for a in answers if seen.first(a.identity)]
    assert len(kept) == inputs
    assert seen.duplicates == len(answers) - inputs > 0
