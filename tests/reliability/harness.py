"""One reliability case end to end: fresh topics and service, seeded events, the job, one fault, the oracle.

Timeline of :func:`run_case`: create the case's topics and service folder (its own consumer group and
transactional ids) -> start a tail consumer (read_committed) on the outputs and a monitor of the job's
committed group offsets -> pre-produce ``pre`` records -> start ``vatic stream run`` (unbounded, on the
private stack, schemas from its registry) -> once the job answers, produce the rest at ``rate`` records/s ->
when ``trigger`` answers were read (jittered by the seed), run the case's fault (it returns when the fault is
healed) -> wait until every record is answered and one more checkpoint completed (or nothing moved for
``stall_s``) -> stop the job -> oracle, and the recovery time against the case's bound. On the secured broker
(``PrivateStack(secure=True)``) the case's topics are granted to the job's principal right after they are made,
the input producer and the output reader are the application user and every other client is ``admin``.

Everything random in a case (the events, their order, the trigger point, injected latencies) comes from one
seed derived from the run's seed and the case name (:func:`case_seed`): ``python -m tests.reliability
--seed S CASE`` replays a case of a run with seed ``S``. When a case fails, :mod:`.forensics` writes what the
job and Kafka looked like (``forensics.txt``, ``stacks.txt``) next to its log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from confluent_kafka import Consumer as RdConsumer
from confluent_kafka import Producer as RdProducer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.fixtures import feast_repo
from tests.fixtures.echo import echo_model
from tests.reliability import forensics, oracle
from tests.reliability.events import EventSet, InputRecord, generate
from tests.reliability.stack import MODEL, PrivateStack
from vatic.cli.stack.secure import ADMIN, APP
from vatic.connectors.dedupe import attempt
from vatic.connectors.schema_registry import ConfluentSchemaRegistry
from vatic.schemas import AvroCodec, load_schema, topic_subject

ROOT = Path(__file__).resolve().parents[2]
VATIC = ROOT / ".venv" / "pipeline" / "bin" / "vatic"
INPUT_PARTITIONS = 3
#: the job's topology (``vectorized`` or ``async``); empty: the service config's default
MODE = os.environ.get("VATIC_RELIABILITY_MODE", "")


def case_seed(run_seed: int, case: str) -> int:
    """The seed of one case in a run: stable across runs, whatever the order or selection of cases."""
    return zlib.crc32(f"{run_seed}:{case}".encode())


@dataclass
class Case:
    """One fault (or bad-input emphasis) and how to drive it.

    ``bound_s``: the longest the case may take, from the moment its fault is healed to the first answer read
    after it (read_committed), and still hold; None for cases whose fault is a check, not an outage.
    ``late``: bad or special kinds placed only in the second half of the stream (after the fault starts).
    ``proxy``: route the job's model (``"model"``) or feature (``"redis"``) traffic through a latency proxy.
    """

    name: str
    title: str
    fault: Callable[[CaseRun], None] | None = None
    extra: dict[str, int] = field(default_factory=dict)
    bound_s: float | None = None
    late: dict[str, int] = field(default_factory=dict)
    proxy: str | None = None
    guarantee: str = "exactly_once"
    parallelism: int = 1
    n: int = 10_000
    trigger: int = 3_000  # answers read before the fault starts (jittered by +-20% by the case's seed)
    streaming: dict[str, Any] = field(default_factory=dict)


@dataclass
class CaseResult:
    case: str
    verdict: oracle.Verdict
    recovery_s: float | None
    bound_s: float | None
    wall_s: float
    log: Path
    seed: int
    notes: list[str] = field(default_factory=list)

    @property
    def held(self) -> bool:
        return self.verdict.held


class CaseRun:
    """The state of one running case; fault functions use its methods (:meth:`kill_job`, :meth:`start_job`)
    and set :attr:`healed_at` (monotonic) when the fault is over."""

    def __init__(self, stack: PrivateStack, case: Case, workdir: Path, *, seed: int, pre: int, rate: float) -> None:
        self.stack = stack
        self.case = case
        self.seed = seed
        self.rng = random.Random(seed)
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pre = pre
        self.rate = rate
        self.trigger = int(case.trigger * self.rng.uniform(0.8, 1.2))
        tag = f"{case.name}-{uuid.uuid4().hex[:6]}"
        self.service = f"rel-{tag}"
        self.topics = {"input": f"{tag}.in", "output": f"{tag}.out", "dead": f"{tag}.dlq"}
        self.group = f"vatic-{self.service}"
        self.checkpoints = self.dir / "checkpoints"
        self.log = self.dir / "job.log"
        self.job: subprocess.Popen[bytes] | None = None
        self.registry = ConfluentSchemaRegistry(stack.registry_url)
        self.client_log = _client_logger(self.dir / "clients.log")
        self.events = EventSet()
        self.fault_at: float | None = None
        self.healed_at: float | None = None
        #: set by a fault that adds input partitions: recovery is then measured to the first answer of a
        #: record written to one of them (partition number >= this)
        self.new_partitions_from: int | None = None
        self.notes: list[str] = []
        self.problems: list[str] = []  # a fault's own checks that failed (they fail the case)
        self.predictions: list[dict[str, Any]] = []
        self.dead: list[dict[str, Any]] = []
        self.seen_times: list[tuple[float, str, Any]] = []  # (time, "P", event_id) | (time, "D", (p, o))
        self.emitted: list[tuple[float, int]] = []  # (when read, the prediction's emit_time in epoch ms)
        self.samples: list[tuple[float, dict[int, int]]] = []
        #: the job's checkpoints as Flink's REST API reported them, by id (the newest report of each)
        self.checkpoint_history: dict[int, dict[str, Any]] = {}
        self._answered = 0  # input records answered so far (see answered)
        self._dead_positions: set[tuple[int, int]] = set()
        self._predicted: Counter[str] = Counter()
        self._sent: Counter[str] = Counter()  # how many times each event id is sent (set with the events)
        self.produced_all = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # -- setup ------------------------------------------------------------------------------------------------

    def admin(self) -> AdminClient:
        return AdminClient(self.stack.kafka_config(ADMIN, logger=self.client_log))

    def input_partitions(self) -> int:
        metadata = self.admin().list_topics(self.topics["input"], timeout=10)
        return len(metadata.topics[self.topics["input"]].partitions)

    def create_topics(self) -> None:
        admin = self.admin()
        big = {"max.message.bytes": str(3_000_000)}
        topics = [
            NewTopic(self.topics["input"], INPUT_PARTITIONS, 1, config=big),
            NewTopic(self.topics["output"], 2, 1),
            NewTopic(self.topics["dead"], 2, 1),
        ]
        for future in admin.create_topics(topics, operation_timeout=30).values():
            future.result(timeout=60)

    def write_service(self) -> Path:
        folder = self.dir / "service"
        folder.mkdir(parents=True, exist_ok=True)
        streaming = {
            "input_topic": self.topics["input"],
            "output_topic": self.topics["output"],
            "dead_letter_topic": self.topics["dead"],
            "input_schema": "transaction",
            "guarantee": self.case.guarantee,
            "parallelism": 1,
            "checkpoint_interval_s": 2,
            "batch_size": 64,
            "batch_wait_ms": 20,
            "partition_discovery_s": 5,
            "retry": {"budget_s": 60},
            **self.case.streaming,
        }
        if MODE:
            streaming["mode"] = MODE
        config = {
            "project": "reliability",
            "service": self.service,
            "timeout_s": 3.0,
            "model": echo_model(MODEL),
            "features": {
                "repo": str(self.stack.feast_repo),
                "entities": {"customer_id": "customer_id"},
                "refs": feast_repo.FEATURES,
                "policies": {"customer_stats:avg_amount": {"on_missing": "reject"}},
                "defaults": {"customer_stats:orders_7d": -1},
            },
            "streaming": streaming,
        }
        (folder / "service.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        return folder

    def grant(self) -> None:
        """On the secured broker: the ACLs of this case's job (input, outputs, group, transactional ids) and of the
        application user (writes the input, reads the outputs); nothing on the plain broker."""
        if not self.stack.secure:
            return
        from vatic.serving.config import load_service

        with warnings.catch_warnings():  # the job module imports PyFlink, whose deprecations are no news here
            warnings.simplefilter("ignore", DeprecationWarning)
            from vatic.streaming.job import transactional_prefix

        config = load_service(self.dir / "service", "local")  # `vatic stream run`'s default environment
        created = self.stack.grant_case(
            input_topic=self.topics["input"],
            output_topics=[self.topics["output"], self.topics["dead"]],
            group=config.consumer_group,
            transactional_prefix=transactional_prefix(config),
        )
        self.notes.append(f"secured broker: {created} ACLs granted to the job and the application user")

    # -- the job ------------------------------------------------------------------------------------------------

    def start_job(self, parallelism: int | None = None, *, resume: bool = True) -> None:
        """Start ``vatic stream run`` (restoring the newest retained checkpoint unless ``resume`` is False:
        then the source starts from the group's committed offsets)."""
        model_url = self.stack.proxied_model_url() if self.case.proxy == "model" else self.stack.model_url
        argv = [
            str(VATIC), "stream", "run", str(self.dir / "service"), "--model-url", model_url,
            "--schema-registry-url", self.stack.registry_url,
            "--checkpoint-dir", str(self.checkpoints), "--no-create-topics", "--no-bounded",
            "--parallelism", str(parallelism or self.case.parallelism), "--resume" if resume else "--no-resume",
        ]  # fmt: skip
        env = self.stack.job_env()
        if self.case.proxy == "redis":
            env["VATIC_STREAM_REDIS_URL"] = self.stack.proxied_redis_url()
        with self.log.open("ab") as log:
            log.write(f"\n=== reliability: start job {argv[4:]} at {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            self.job = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )

    def kill_job(self) -> None:
        """SIGKILL the job's whole process group (the mini-cluster JVM and its Python workers)."""
        job = self.job
        if job is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=60)
        self.job = None

    def job_alive(self) -> bool:
        return self.job is not None and self.job.poll() is None

    def completed_checkpoints(self) -> int:
        """The number of the newest completed checkpoint of any run of this case's job (0: none yet)."""
        done = [int(p.parent.name.split("-")[1]) for p in self.checkpoints.glob("*/chk-*/_metadata")]
        return max(done, default=0)

    # -- counters ---------------------------------------------------------------------------------------------

    def answered(self) -> int:
        """How many input records have an answer (a replayed answer, at-least-once, is not counted again)."""
        with self._lock:
            return self._answered

    def _count_answer(self, kind: str, what: Any) -> None:
        """Count one answer read (under the lock): a dead letter of a position not yet answered, or a prediction
        of an id answered fewer times than it was sent."""
        if kind == "D":
            if what not in self._dead_positions:
                self._dead_positions.add(what)
                self._answered += 1
            return
        self._predicted[what] += 1
        if self._predicted[what] <= self._sent.get(what, 0):
            self._answered += 1

    def wait_answered(self, n: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.answered() >= n:
                return True
            time.sleep(0.2)
        return False

    def wait_new_checkpoint(self, timeout_s: float = 60) -> bool:
        """Wait until a checkpoint newer than the newest one now completes; False after ``timeout_s``."""
        before = self.completed_checkpoints()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.completed_checkpoints() > before:
                return True
            time.sleep(0.2)
        return False

    # -- threads ----------------------------------------------------------------------------------------------

    def _produce(self, started: threading.Event) -> None:
        producer = RdProducer(
            self.stack.kafka_config(
                APP,
                **{
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                    "message.max.bytes": 3_500_000,
                    "message.timeout.ms": 600_000,
                    "topic.metadata.refresh.interval.ms": 1000,  # partitions added while the case runs
                    "logger": self.client_log,
                },
            )
        )

        def placed(record: InputRecord) -> Callable[[Any, Any], None]:
            def report(err: Any, msg: Any) -> None:
                if err is None:
                    record.partition, record.offset = msg.partition(), msg.offset()
                else:
                    self.notes.append(f"produce failed: {err}")

            return report

        records = self.events.records
        for i, record in enumerate(records):
            if self._stop.is_set():
                break
            if i == self.pre:
                producer.flush(600)
                while not started.wait(0.5):
                    if self._stop.is_set():
                        return
                t0, sent0 = time.monotonic(), i
            if i > self.pre:
                ahead = (i - sent0) / self.rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
            while True:
                try:
                    producer.produce(self.topics["input"], record.value, record.key, on_delivery=placed(record))
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
        producer.flush(30 if self._stop.is_set() else 600)
        self.produced_all.set()

    def _tail(self) -> None:
        # its own registry client: the fault functions may stop the registry, the reader's cache keeps working
        source = ConfluentSchemaRegistry(self.stack.registry_url)
        prediction = AvroCodec(source, topic_subject(self.topics["output"]), load_schema("prediction"))
        dead = AvroCodec(source, topic_subject(self.topics["dead"]), load_schema("dead_letter"))
        consumer = RdConsumer(
            self.stack.kafka_config(
                APP,
                **{
                    "group.id": f"tail-{uuid.uuid4().hex}",
                    "auto.offset.reset": "earliest",
                    "isolation.level": "read_committed",
                    "enable.auto.commit": False,
                    "fetch.max.bytes": 10_000_000,
                    "max.partition.fetch.bytes": 4_000_000,
                    "logger": self.client_log,
                },
            )
        )
        # partitions assigned, not subscribed: the reader is in no consumer group, so a broker restart (its group
        # coordinator) has nothing to rejoin or rebalance; new partitions are picked up every few seconds
        assigned: set[tuple[str, int]] = set()
        looked_at = -float("inf")
        try:
            while not self._stop.is_set():
                if time.monotonic() - looked_at > 5:
                    looked_at = time.monotonic()
                    self._assign_new(consumer, assigned)
                for msg in consumer.consume(1000, timeout=0.3):
                    if msg.error():
                        continue
                    now = time.monotonic()
                    meta = {oracle.KAFKA_KEY: msg.key(), oracle.ATTEMPT: attempt(msg.headers())}
                    if msg.topic() == self.topics["output"]:
                        p = {**prediction.decode(msg.value()), **meta}
                        with self._lock:
                            self.predictions.append(p)
                            self.seen_times.append((now, "P", str(p["event_id"])))
                            self.emitted.append((now, int(p["timings"]["emit_time"])))
                            self._count_answer("P", str(p["event_id"]))
                    else:
                        d = {**dead.decode(msg.value()), **meta}
                        with self._lock:
                            self.dead.append(d)
                            position = (int(d["partition"]), int(d["offset"]))
                            self.seen_times.append((now, "D", position))
                            self._count_answer("D", position)
        finally:
            consumer.close()

    def _assign_new(self, consumer: RdConsumer, assigned: set[tuple[str, int]]) -> None:
        """Assign the output and dead-letter partitions not assigned yet, from their beginning."""
        try:
            found = []
            for topic in (self.topics["output"], self.topics["dead"]):
                metadata = consumer.list_topics(topic, timeout=5)
                found += [(topic, p) for p in metadata.topics[topic].partitions if (topic, p) not in assigned]
        except Exception:  # broker down during a fault: look again at the next round
            return
        if found:
            consumer.incremental_assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in found])
            assigned.update(found)

    def _monitor(self) -> None:
        consumer = RdConsumer(
            self.stack.kafka_config(
                ADMIN, **{"group.id": self.group, "enable.auto.commit": False, "logger": self.client_log}
            )
        )
        try:
            while not self._stop.is_set():
                try:
                    metadata = consumer.list_topics(self.topics["input"], timeout=5)
                    partitions = metadata.topics[self.topics["input"]].partitions
                    parts = [TopicPartition(self.topics["input"], p) for p in sorted(partitions)]
                    committed = consumer.committed(parts, timeout=5)
                    offsets = {tp.partition: tp.offset for tp in committed if tp.offset >= 0}
                    if offsets:
                        self.samples.append((time.monotonic(), offsets))
                except Exception:  # broker down during a fault: no sample this round
                    pass
                self._record_checkpoints()
                self._stop.wait(1.0)
        finally:
            consumer.close()

    def _record_checkpoints(self) -> None:
        log_dir = self.checkpoints.with_name(self.checkpoints.name + ".logs")
        port = forensics.flink_rest_port(log_dir) if log_dir.is_dir() else None
        if port is None:
            return
        try:
            for entry in forensics.checkpoint_history(port):
                self.checkpoint_history[(entry["job"], int(entry["id"]))] = entry
        except Exception:  # the job is starting, restarting or gone: no report this round
            pass

    def checkpoints_since(self, wall_ms: int) -> list[dict[str, Any]]:
        """The checkpoints triggered at or after ``wall_ms`` (epoch ms), as last reported."""
        return sorted(
            (e for e in self.checkpoint_history.values() if int(e.get("trigger_timestamp", 0)) >= wall_ms),
            key=lambda e: int(e["trigger_timestamp"]),
        )

    # -- the run ----------------------------------------------------------------------------------------------

    def run(self, *, stall_s: float = 150.0, grace_s: float = 15.0) -> CaseResult:
        t_start = time.monotonic()
        self.create_topics()
        self.write_service()
        self.grant()
        self.events = generate(
            self.registry, self.topics["input"], self.case.n, seed=self.seed, extra=self.case.extra,
            late=self.case.late,
        )  # fmt: skip
        self._sent = Counter(r.event_id for r in self.events.records if r.event_id is not None)
        started = threading.Event()
        threads = [
            threading.Thread(target=self._produce, args=(started,), daemon=True),
            threading.Thread(target=self._tail, daemon=True),
            threading.Thread(target=self._monitor, daemon=True),
        ]
        for t in threads:
            t.start()
        try:
            self.start_job()
            if not self.wait_answered(1, 240):
                self.notes.append("the job answered nothing within 240 s of its start")
            started.set()
            if self.case.fault is not None:
                self.wait_answered(min(self.trigger, len(self.events) - 1), stall_s)
                self.fault_at = time.monotonic()
                try:
                    self.case.fault(self)
                except Exception as exc:  # the harness failed to apply or heal the fault: the case fails
                    self.problems.append(f"the fault function failed: {type(exc).__name__}: {exc}")
                if self.healed_at is None:
                    self.healed_at = time.monotonic()
            self._wait_done(stall_s)
        finally:
            if any(n.startswith(("stalled", "the job")) for n in self.notes) or self.problems:
                self.notes.extend(self.forensics())
            self.kill_job()
            self._stop.set()
            self.produced_all.wait(30)
            for t in threads:
                t.join(timeout=30)
        with self._lock:
            verdict = oracle.check(
                self.events.records, self.topics["input"], self.predictions, self.dead,
                guarantee=self.case.guarantee, faulted=self.case.fault is not None,
            )  # fmt: skip
            first_seen = self._first_seen()
            self.notes.extend(verdict.notes)
            self.notes.append(self._visibility())
        count, example = oracle.offset_violations(self.events.records, self.samples, first_seen, grace_s)
        verdict.offset_violations = count
        if count:
            verdict.problems.append(f"{count} records covered by a committed offset before answered: {example}")
        if not self.samples:
            self.notes.append("no committed group offset was ever observed")
        recovery = self._recovery(first_seen)
        verdict.problems.extend(n for n in self.notes if n.startswith(("the job", "produce failed", "stalled")))
        verdict.problems.extend(self.problems)
        bound = self.case.bound_s
        if recovery is not None and bound is not None and recovery > bound:
            verdict.problems.append(f"recovery took {recovery:.1f}s, over the case's bound of {bound:.0f}s")
        self.registry.close()
        for handler in self.client_log.handlers:
            handler.close()
        return CaseResult(
            self.case.name, verdict, recovery, bound, time.monotonic() - t_start, self.log, self.seed,
            list(self.notes),
        )  # fmt: skip

    def forensics(self) -> list[str]:
        """What the job and Kafka look like now (see :mod:`.forensics`); the lines also go to a file."""
        topics = [self.topics["output"], self.topics["dead"]]
        log_dir = self.checkpoints.with_name(self.checkpoints.name + ".logs")
        port = forensics.flink_rest_port(log_dir) if log_dir.is_dir() else None
        job = self.job
        probes: list[tuple[str, Callable[[], list[str]]]] = [
            ("job process", lambda: [f"job process {'alive' if self.job_alive() else 'gone'}"]),
            ("flink", lambda: forensics.flink_view(port) if port else ["no Flink REST port in the job's log"]),
            ("offsets", lambda: forensics.stable_offsets(self.stack.kafka_config(ADMIN), topics)),
            ("transactions", lambda: forensics.open_transactions(
                self.stack.kafka.artifacts.require_kafka(), self.stack.bootstrap, f"vatic-{self.service}-",
                self.stack.command_config())),
        ]  # fmt: skip
        if job is not None and job.poll() is None:
            probes.append(("stacks", lambda: forensics.dump_stacks(job.pid, self.dir / "stacks.txt", _PY_SPY)))
        lines = forensics.collect(probes, self.dir / "forensics.txt")
        return [f"forensics: {line}" for line in lines]

    def _wait_done(self, stall_s: float) -> None:
        expected = len(self.events)
        last, last_change = -1, time.monotonic()
        while True:
            n = self.answered()
            if n != last:
                last, last_change = n, time.monotonic()
            if self.produced_all.is_set() and n >= expected:
                # one more checkpoint: whatever a replay wrote twice would be committed, and read, by then
                self.wait_new_checkpoint(timeout_s=15)
                time.sleep(0.5)
                return
            if time.monotonic() - last_change > stall_s:
                self.notes.append(f"stalled: {n} of {expected} answers and nothing new for {stall_s:.0f}s")
                return
            if self.job is not None and self.job.poll() is not None:
                self.notes.append(f"the job exited with {self.job.returncode} (log {self.log})")
                return
            time.sleep(0.5)

    def _visibility(self) -> str:
        """The visible delay of the predictions: from the worker's ``emit_time`` (just before the sink) to the
        moment the tail consumer read it (read_committed); median and 99th percentile, one line."""
        offset_ms = time.time() * 1000 - time.monotonic() * 1000  # monotonic -> epoch ms (one host)
        delays = sorted(seen * 1000 + offset_ms - emitted for seen, emitted in self.emitted)
        if not delays:
            return "visible delay: no prediction read"
        p50, p99 = delays[len(delays) // 2], delays[min(len(delays) - 1, int(len(delays) * 0.99))]
        return f"visible delay ({self.case.guarantee}): p50 {p50:.0f} ms, p99 {p99:.0f} ms after emit"

    def _first_seen(self) -> dict[tuple[int, int], float]:
        positions: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for r in sorted(self.events.records, key=lambda r: (r.partition, r.offset)):
            if r.event_id is not None:
                positions[r.event_id].append((r.partition, r.offset))
        first: dict[tuple[int, int], float] = {}
        used: dict[str, int] = defaultdict(int)
        for when, kind, what in self.seen_times:
            if kind == "D":
                first.setdefault(what, when)
                continue
            slots = positions.get(what, [])
            k = used[what]
            while k < len(slots) and slots[k] in first:
                k += 1
            if k < len(slots):
                first[slots[k]] = when
            used[what] = k
        return first

    def _recovery(self, first_seen: dict[tuple[int, int], float]) -> float | None:
        """Seconds from the end of the fault to the first prediction the job emitted after it, as read (None: no
        bound applies); for added partitions, to the first answer of a record written to one of them.

        Emitted after the heal (its ``timings.emit_time``), not merely read after it: a prediction committed just
        before a job was killed and read a moment after the new one started says nothing about the new one."""
        if self.fault_at is None or self.healed_at is None or self.case.bound_s is None:
            return None
        if self.new_partitions_from is not None:
            written = [r for r in self.events.records if r.partition >= self.new_partitions_from]
            if not written:
                self.problems.append("no record was written to the added partitions: the case tested nothing")
                return None
            times = [first_seen[(r.partition, r.offset)] for r in written if (r.partition, r.offset) in first_seen]
            return (min(times) - self.healed_at) if times else float("inf")
        healed_ms = (time.time() - (time.monotonic() - self.healed_at)) * 1000
        after = [seen for seen, emitted in self.emitted if emitted >= healed_ms]
        if not after:  # 0: every record was answered while the fault lasted, nothing was left to recover
            return 0.0 if len(self.seen_times) >= len(self.events) else float("inf")
        return max(0.0, min(after) - self.healed_at)


_PY_SPY = Path(sys.executable).parent / "py-spy"


def _client_logger(path: Path) -> logging.Logger:
    """A logger writing the harness's Kafka clients' own log lines (librdkafka) to ``path``, not the console."""
    logger = logging.getLogger(f"vatic.reliability.clients.{path.parent.name}.{uuid.uuid4().hex[:6]}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    return logger


def run_case(
    stack: PrivateStack, case: Case, workdir: Path, *, seed: int, pre: int = 2_000, rate: float = 400.0
) -> CaseResult:
    """Run one case on ``stack`` (which must be up) in a folder of its own under ``workdir``; ``seed`` is the
    run's seed (the case's own is derived from it and its name)."""
    folder = workdir / f"{case.name}-{uuid.uuid4().hex[:6]}"
    return CaseRun(stack, case, folder, seed=case_seed(seed, case.name), pre=pre, rate=rate).run()
