"""One reliability case end to end: fresh topics and service, seeded events, the job, one fault, the oracle.

Timeline of :func:`run_case`: create the case's topics and service folder (its own consumer group and
transactional ids) -> start a tail consumer (read_committed) on the outputs and a monitor of the job's
committed group offsets -> pre-produce ``pre`` records -> start ``vatic stream run`` (unbounded, on the
private stack) -> once the job answers, produce the rest at ``rate`` records/s -> when ``trigger`` answers
were read, run the case's fault (it returns when the fault is healed) -> wait until every record is answered
(or nothing moved for ``stall_s``) -> stop the job -> oracle.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer as RdConsumer
from confluent_kafka import Producer as RdProducer
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.fixtures import feast_repo
from tests.fixtures.echo import echo_model
from tests.reliability import oracle
from tests.reliability.events import EventSet, InputRecord, generate
from tests.reliability.stack import MODEL, PrivateStack
from vatic.schemas import AvroCodec, LocalSchemaStore, load_schema, topic_subject

ROOT = Path(__file__).resolve().parents[2]
VATIC = ROOT / ".venv" / "pipeline" / "bin" / "vatic"
INPUT_PARTITIONS = 3
#: the job's topology (``vectorized`` or ``async``); empty: the service config's default
MODE = os.environ.get("VATIC_RELIABILITY_MODE", "")


@dataclass
class Case:
    """One fault (or bad-input emphasis) and how to drive it."""

    name: str
    title: str
    fault: Callable[[CaseRun], None] | None = None
    extra: dict[str, int] = field(default_factory=dict)
    guarantee: str = "exactly_once"
    parallelism: int = 1
    n: int = 10_000
    trigger: int = 3_000  # answers read before the fault starts
    streaming: dict[str, Any] = field(default_factory=dict)
    recovers: bool = True  # False: the "fault" is a check, not an outage (no recovery time)


@dataclass
class CaseResult:
    case: str
    verdict: oracle.Verdict
    recovery_s: float | None
    wall_s: float
    log: Path
    notes: list[str] = field(default_factory=list)

    @property
    def held(self) -> bool:
        return self.verdict.held


class CaseRun:
    """The state of one running case; fault functions use its methods (:meth:`kill_job`, :meth:`start_job`)
    and set :attr:`healed_at` (monotonic) when the fault is over."""

    def __init__(self, stack: PrivateStack, case: Case, workdir: Path, *, pre: int, rate: float) -> None:
        self.stack = stack
        self.case = case
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pre = pre
        self.rate = rate
        tag = f"{case.name}-{uuid.uuid4().hex[:6]}"
        self.service = f"rel-{tag}"
        self.topics = {"input": f"{tag}.in", "output": f"{tag}.out", "dead": f"{tag}.dlq"}
        self.group = f"vatic-{self.service}"
        self.checkpoints = self.dir / "checkpoints"
        self.log = self.dir / "job.log"
        self.job: subprocess.Popen[bytes] | None = None
        self.store = LocalSchemaStore(stack.schema_store)
        self.events = EventSet()
        self.fault_at: float | None = None
        self.healed_at: float | None = None
        self.notes: list[str] = []
        self.problems: list[str] = []  # a fault's own checks that failed (they fail the case)
        self.predictions: list[dict[str, Any]] = []
        self.dead: list[dict[str, Any]] = []
        self.seen_times: list[tuple[float, str, Any]] = []  # (time, "P", event_id) | (time, "D", (p, o))
        self.samples: list[tuple[float, dict[int, int]]] = []
        self.produced_all = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # -- setup ------------------------------------------------------------------------------------------------

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.stack.bootstrap})

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

    # -- the job ------------------------------------------------------------------------------------------------

    def start_job(self, parallelism: int | None = None, *, resume: bool = True) -> None:
        """Start ``vatic stream run`` (restoring the newest retained checkpoint unless ``resume`` is False:
        then the source starts from the group's committed offsets)."""
        argv = [
            str(VATIC), "stream", "run", str(self.dir / "service"), "--model-url", self.stack.model_url,
            "--checkpoint-dir", str(self.checkpoints), "--no-create-topics", "--no-bounded",
            "--parallelism", str(parallelism or self.case.parallelism), "--resume" if resume else "--no-resume",
        ]  # fmt: skip
        with self.log.open("ab") as log:
            log.write(f"\n=== reliability: start job {argv[4:]} at {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            self.job = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.stack.job_env(),
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
        with self._lock:
            return len(self.predictions) + len(self.dead)

    def wait_answered(self, n: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.answered() >= n:
                return True
            time.sleep(0.2)
        return False

    def wait_new_checkpoint(self, timeout_s: float = 60) -> bool:
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
            {
                "bootstrap.servers": self.stack.bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.max.bytes": 3_500_000,
                "message.timeout.ms": 600_000,
            }
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
        prediction = AvroCodec(self.store, topic_subject(self.topics["output"]), load_schema("prediction"))
        dead = AvroCodec(self.store, topic_subject(self.topics["dead"]), load_schema("dead_letter"))
        consumer = RdConsumer(
            {
                "bootstrap.servers": self.stack.bootstrap,
                "group.id": f"tail-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "fetch.max.bytes": 10_000_000,
                "max.partition.fetch.bytes": 4_000_000,
            }
        )
        consumer.subscribe([self.topics["output"], self.topics["dead"]])
        try:
            while not self._stop.is_set():
                for msg in consumer.consume(1000, timeout=0.3):
                    if msg.error():
                        continue
                    now = time.monotonic()
                    if msg.topic() == self.topics["output"]:
                        p = prediction.decode(msg.value())
                        with self._lock:
                            self.predictions.append(p)
                            self.seen_times.append((now, "P", str(p["event_id"])))
                    else:
                        d = dead.decode(msg.value())
                        with self._lock:
                            self.dead.append(d)
                            self.seen_times.append((now, "D", (int(d["partition"]), int(d["offset"]))))
        finally:
            consumer.close()

    def _monitor(self) -> None:
        consumer = RdConsumer(
            {"bootstrap.servers": self.stack.bootstrap, "group.id": self.group, "enable.auto.commit": False}
        )
        parts = [TopicPartition(self.topics["input"], p) for p in range(INPUT_PARTITIONS)]
        try:
            while not self._stop.is_set():
                try:
                    committed = consumer.committed(parts, timeout=5)
                    offsets = {tp.partition: tp.offset for tp in committed if tp.offset >= 0}
                    if offsets:
                        self.samples.append((time.monotonic(), offsets))
                except Exception:  # broker down during a fault: no sample this round
                    pass
                self._stop.wait(1.0)
        finally:
            consumer.close()

    # -- the run ----------------------------------------------------------------------------------------------

    def run(self, *, stall_s: float = 150.0, grace_s: float = 15.0) -> CaseResult:
        t_start = time.monotonic()
        self.create_topics()
        self.write_service()
        self.events = generate(self.store, self.topics["input"], self.case.n, extra=self.case.extra)
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
                self.wait_answered(min(self.case.trigger, len(self.events) - 1), stall_s)
                self.fault_at = time.monotonic()
                self.case.fault(self)
                if self.healed_at is None:
                    self.healed_at = time.monotonic()
            self._wait_done(stall_s)
        finally:
            self.kill_job()
            self._stop.set()
            self.produced_all.wait(30)
            for t in threads:
                t.join(timeout=30)
        with self._lock:
            verdict = oracle.check(self.events.records, self.topics["input"], self.predictions, self.dead)
            first_seen = self._first_seen()
        count, example = oracle.offset_violations(self.events.records, self.samples, first_seen, grace_s)
        verdict.offset_violations = count
        if count:
            verdict.problems.append(f"{count} records covered by a committed offset before answered: {example}")
        if not self.samples:
            self.notes.append("no committed group offset was ever observed")
        verdict.problems.extend(n for n in self.notes if n.startswith(("the job", "produce failed", "stalled")))
        verdict.problems.extend(self.problems)
        return CaseResult(
            self.case.name, verdict, self._recovery(), time.monotonic() - t_start, self.log, list(self.notes)
        )

    def _wait_done(self, stall_s: float) -> None:
        expected = len(self.events)
        last, last_change = -1, time.monotonic()
        while True:
            n = self.answered()
            if n != last:
                last, last_change = n, time.monotonic()
            if self.produced_all.is_set() and n >= expected:
                time.sleep(4)  # a little more: late duplicates would show
                return
            if time.monotonic() - last_change > stall_s:
                self.notes.append(f"stalled: {n} of {expected} answers and nothing new for {stall_s:.0f}s")
                return
            if self.job is not None and self.job.poll() is not None:
                self.notes.append(f"the job exited with {self.job.returncode} (log {self.log})")
                return
            time.sleep(0.5)

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

    def _recovery(self) -> float | None:
        """Seconds from the end of the fault to the first answer read after it (None: no fault)."""
        if self.fault_at is None or self.healed_at is None or not self.case.recovers:
            return None
        after = [t for t, _, _ in self.seen_times if t > self.healed_at]
        return (min(after) - self.healed_at) if after else float("inf")


def run_case(stack: PrivateStack, case: Case, workdir: Path, *, pre: int = 2_000, rate: float = 400.0) -> CaseResult:
    """Run one case on ``stack`` (which must be up) and return its result."""
    return CaseRun(stack, case, workdir / case.name, pre=pre, rate=rate).run()
