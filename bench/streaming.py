"""Comparison 1: vatic's streaming job (PyFlink, vectorized mode) vs the naive per-event pipeline (bench/naive.py).

* **max events/s**: a fresh input topic is pre-loaded with N events, then the pipeline drains it; the rate is
  (outputs - 1) / (last output - first output), from the output records' Kafka ``LogAppendTime`` (the output
  topics are created with ``message.timestamp.type=LogAppendTime``), so start-up is excluded. vatic runs
  ``vatic stream run --bounded`` at parallelism 1 and 2 (the best is reported); the naive pipeline stops after N.
* **latency at 50% of max**: the pipeline runs unbounded; an open-loop producer sends events at a constant
  rate (half the pipeline's own max); latency = the prediction's append time minus the input's scheduled
  send time (a late producer does not hide queueing).
* **events/s vs batch size**: vatic's job at ``streaming.batch_size`` 1, 16, 64, 128.

The vatic job calls vatic's model server (``fraud-model``); the naive pipeline calls the stock MLServer.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

from bench.common import (
    PIPELINE_PY,
    ROOT,
    BenchError,
    Options,
    median,
    percentile,
    say,
    start_profile,
    summarize_profile,
)
from bench.stack import BenchStack
from bench.workload import FEATURE_REPO, SERVICE_DIR, events
from vatic.cli.commands.schema import registry_url
from vatic.connectors.kafka import ensure_topics
from vatic.connectors.schema_registry import schema_source
from vatic.schemas import AvroCodec, load_schema, topic_subject

VATIC = PIPELINE_PY.parent / "vatic"
PARTITIONS = 2
#: a job that has written nothing this long after its start has failed (Flink restarts a failing task forever)
STALL_S = 150.0


class Topics:
    """Fresh input/output/dead-letter topics of one run (outputs stamped with LogAppendTime)."""

    def __init__(self, stack: BenchStack, label: str) -> None:
        prefix = f"bench-{label}-{uuid.uuid4().hex[:6]}"
        self.input, self.output, self.dead = f"{prefix}.in", f"{prefix}.out", f"{prefix}.dlq"
        settings = stack.settings.kafka(extra={"log_level": "3"})
        self.bootstrap = settings.bootstrap_servers
        #: connection and security of every client the bench makes (VATIC_KAFKA_* for a secured broker)
        self.conf = {k: v for k, v in settings.librdkafka().items() if k != "logger"}
        self.partitions = PARTITIONS
        ensure_topics([self.input], partitions=PARTITIONS, settings=settings)
        ensure_topics(
            [self.output, self.dead],
            partitions=PARTITIONS,
            config={"message.timestamp.type": "LogAppendTime"},
            settings=settings,
        )
        # one source of schema ids for the producers, the job and the readers (the stack's registry if it runs)
        self.registry = registry_url(None)
        self.store = schema_source(self.registry, stack.settings.home / "schemas")
        self.codec = AvroCodec(self.store, topic_subject(self.input), load_schema("transaction"))
        self._watch: Consumer | None = None

    def producer(self) -> Producer:
        return Producer(
            {
                **self.conf,
                "linger.ms": 2,
                "queue.buffering.max.messages": 1000000,
                "log_level": 3,
            }
        )

    def preload(self, n: int) -> None:
        producer = self.producer()
        for i, event in enumerate(events(n)):
            producer.produce(self.input, self.codec.encode(event), event["customer_id"].encode())
            if i % 1000 == 999:
                producer.poll(0)
        producer.flush(60)

    def output_end(self) -> int:
        """Records appended to the output and dead-letter topics so far (committed or not)."""
        if self._watch is None:
            self._watch = Consumer({**self.conf, "group.id": "bench-watch", "log_level": 3})
        total = 0
        for topic in (self.output, self.dead):
            for p in range(self.partitions):
                low, high = self._watch.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
                total += high - low
        return total

    def close(self) -> None:
        """Close the watermark reader of :meth:`output_end` (else it logs connection failures once the broker
        stops); the topics stay usable (a new reader opens on demand)."""
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def read_outputs(
        self, expected: int, timeout_s: float, decode: Callable[[bytes], str] | None = None
    ) -> tuple[list[int], dict[str, int], int]:
        """(append times ms of the output records, {event_id: append ms} when ``decode`` is given, dead letters)."""
        consumer = Consumer(
            {
                **self.conf,
                "group.id": f"bench-read-{uuid.uuid4().hex[:6]}",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "log_level": 3,
            }
        )
        consumer.subscribe([self.output, self.dead])
        stamps: list[int] = []
        by_id: dict[str, int] = {}
        dead = 0
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline and len(stamps) + dead < expected:
                for msg in consumer.consume(5000, 0.5):
                    if msg.error():
                        continue
                    if msg.topic() == self.dead:
                        dead += 1
                        continue
                    stamp = msg.timestamp()[1]
                    stamps.append(stamp)
                    if decode is not None:
                        by_id[decode(msg.value() or b"")] = stamp
        finally:
            consumer.close()
        return stamps, by_id, dead


def _rate(stamps: list[int]) -> float:
    if len(stamps) < 2:
        return 0.0
    span = (max(stamps) - min(stamps)) / 1000
    return (len(stamps) - 1) / span if span > 0 else float("inf")


# --- vatic's job ----------------------------------------------------------------------------------------


def _service(
    options: Options, topics: Topics, batch_size: int | None, overrides: dict[str, Any] | None = None,
    sections: dict[str, Any] | None = None,
) -> Path:  # fmt: skip
    """A copy of the fraud service folder reading/writing ``topics`` (features from the use case's repo);
    ``overrides``: ``streaming`` keys to set (``checkpoint_interval_s``, ``guarantee``, ...); ``sections``:
    top-level sections to set (``shadow``, ``canary``)."""
    config = yaml.safe_load((SERVICE_DIR / "service.yaml").read_text(encoding="utf-8"))
    config.update(sections or {})
    config["features"]["repo"] = str(FEATURE_REPO)
    config["streaming"].update(
        {"input_topic": topics.input, "output_topic": topics.output, "dead_letter_topic": topics.dead}
    )
    if options.stream_mode:
        config["streaming"]["mode"] = options.stream_mode
    if batch_size is not None:
        config["streaming"]["batch_size"] = batch_size
        config["streaming"]["bundle_size"] = max(1000, batch_size)
    config["streaming"].update(overrides or {})
    folder = options.tmp / "streaming" / topics.input.removesuffix(".in") / "service"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "service.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return folder


def _start_job(
    options: Options,
    stack: BenchStack,
    topics: Topics,
    *,
    parallelism: int,
    batch_size: int | None,
    bounded: bool,
    overrides: dict[str, Any] | None = None,
    sections: dict[str, Any] | None = None,
    beside: Callable[[Path, Topics], None] | None = None,
) -> tuple[subprocess.Popen[bytes], Path]:
    if sections and "shadow" in sections:  # the shadow's answers go to a topic of the run's own
        shadow_topic = topics.input.removesuffix(".in") + ".shadow"
        ensure_topics([shadow_topic], partitions=PARTITIONS, settings=stack.settings.kafka())
        overrides = {**(overrides or {}), "shadow_topic": shadow_topic}
    folder = _service(options, topics, batch_size, overrides, sections)
    if beside is not None:
        beside(folder, topics)
    log = folder.parent / "job.log"
    argv = [
        str(VATIC), "stream", "run", str(folder), "--model-url", stack.url("fraud-model"),
        "--parallelism", str(parallelism), "--checkpoint-dir", str(folder.parent / "checkpoints"),
        "--no-resume", "--no-create-topics", "--bounded" if bounded else "--no-bounded",
    ]  # fmt: skip
    if topics.registry:
        argv += ["--schema-registry-url", topics.registry]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log.open("wb"), start_new_session=True)
    return proc, log


def _stop(proc: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=grace_s)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _tail(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "(empty log)"


def _flink_cause() -> str:
    """The newest exception line of PyFlink's mini-cluster log (shared by every local job on this machine)."""
    import pyflink

    logs = sorted((Path(pyflink.__file__).parent / "log").glob("*.log"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return ""
    text = logs[-1].read_bytes()[-2_000_000:].decode("utf-8", errors="replace")
    causes = [line.strip() for line in text.splitlines() if line.startswith(("java.", "org.apache.")) and ": " in line]
    return f"; newest exception in {logs[-1]}: {causes[-1][:200]}" if causes else ""


def _await_output(topics: Topics, proc: subprocess.Popen[bytes], log: Path, what: str, stall_s: float) -> None:
    """Wait until the first output record; one-line BenchError when the process exits or stalls first."""
    deadline = time.monotonic() + stall_s
    while topics.output_end() == 0:
        if proc.poll() is not None:
            if proc.returncode == 0:
                return
            raise BenchError(f"{what} exited ({proc.returncode}) before any output: {_tail(log)} (log {log})")
        if time.monotonic() > deadline:
            _stop(proc)
            raise BenchError(
                f"{what} wrote no prediction within {stall_s:.0f} s (it keeps restarting?){_flink_cause()} (log {log})"
            )
        time.sleep(0.2)


def vatic_max(
    options: Options, stack: BenchStack, n: int, *, parallelism: int, batch_size: int | None = None,
    profile: Path | None = None, overrides: dict[str, Any] | None = None, sections: dict[str, Any] | None = None,
    beside: Callable[[Path, Topics], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Drain ``n`` pre-loaded events with a bounded job; events/s from the outputs' append times.
    ``overrides``: ``streaming`` keys of the service config (e.g. ``{"checkpoint_interval_s": 1}``); ``sections``:
    top-level sections (e.g. ``{"shadow": {...}}``); ``beside(folder, topics)`` runs once the run's service folder is
    written, before the job starts (another job reading the run's topics)."""
    topics = Topics(stack, "vatic")
    topics.preload(n)
    proc, log = _start_job(
        options, stack, topics, parallelism=parallelism, batch_size=batch_size, bounded=True, overrides=overrides,
        sections=sections, beside=beside,
    )  # fmt: skip
    profiler = None
    try:
        _await_output(topics, proc, log, "vatic's streaming job", STALL_S)
        if profile is not None:
            profiler = start_profile(proc.pid, 3.0, profile)
        proc.wait(timeout=600)
    except subprocess.TimeoutExpired:
        _stop(proc)
        raise BenchError(f"vatic's streaming job did not finish {n} events in 10 minutes (log {log})") from None
    finally:
        if profiler is not None:
            profiler.wait(timeout=60)
    if proc.returncode != 0:
        raise BenchError(f"vatic's streaming job failed ({proc.returncode}): {_tail(log)} (log {log})")
    topics.close()
    stamps, _, dead = topics.read_outputs(n, 60)
    if len(stamps) + dead < n:
        raise BenchError(f"vatic's streaming job wrote {len(stamps)} predictions + {dead} dead letters for {n} events")
    return {"events": n, "outputs": len(stamps), "dead": dead, "eps": _rate(stamps), "parallelism": parallelism,
            "batch_size": batch_size}  # fmt: skip


# --- the naive pipeline ---------------------------------------------------------------------------------


def _start_naive(stack: BenchStack, topics: Topics, max_events: int, log: Path) -> subprocess.Popen[bytes]:
    argv = [
        str(PIPELINE_PY), "-m", "bench.naive", "--bootstrap", topics.bootstrap, "--input", topics.input,
        "--output", topics.output, "--model-url", stack.url("stock"), "--max-events", str(max_events),
        "--idle-exit-s", "20",
    ]  # fmt: skip
    if topics.registry:
        argv += ["--schema-registry-url", topics.registry]
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("wb"), start_new_session=True)


def naive_max(options: Options, stack: BenchStack, n: int, profile: Path | None = None) -> dict[str, Any]:
    topics = Topics(stack, "naive")
    topics.preload(n)
    log = options.tmp / "streaming" / f"{topics.input}.naive.log"
    proc = _start_naive(stack, topics, n, log)
    profiler = None
    try:
        _await_output(topics, proc, log, "the naive pipeline", 120)
        if profile is not None:
            profiler = start_profile(proc.pid, 3.0, profile)
        proc.wait(timeout=600)
    except subprocess.TimeoutExpired:
        _stop(proc)
        raise BenchError(f"the naive pipeline did not finish {n} events in 10 minutes (log {log})") from None
    finally:
        if profiler is not None:
            profiler.wait(timeout=60)
    if proc.returncode != 0:
        raise BenchError(f"the naive pipeline failed ({proc.returncode}): {_tail(log)} (log {log})")
    stamps, _, _ = topics.read_outputs(n, 60)
    if len(stamps) < n:
        raise BenchError(f"the naive pipeline wrote {len(stamps)} predictions for {n} events (log {log})")
    return {"events": n, "outputs": len(stamps), "eps": _rate(stamps)}


# --- latency at a constant rate -------------------------------------------------------------------------


def _open_loop(topics: Topics, rate: float, seconds: float) -> dict[str, int]:
    """Produce at ``rate`` events/s for ``seconds``; returns {event_id: scheduled send time in ms}."""
    producer = Producer({**topics.conf, "linger.ms": 0, "log_level": 3})
    total = max(1, int(rate * seconds))
    sample = events(min(total, 20000), seed=31)
    sent: dict[str, int] = {}
    start = time.time()
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.time()
        if delay > 0.0005:
            time.sleep(delay)
        event = dict(sample[i % len(sample)])
        event["event_id"] = str(uuid.uuid4())
        event["event_time"] = int(scheduled * 1000)
        producer.produce(topics.input, topics.codec.encode(event), event["customer_id"].encode())
        sent[event["event_id"]] = int(scheduled * 1000)
        if i % 20 == 0:
            producer.poll(0)
    producer.flush(30)
    return sent


def _latencies(sent: dict[str, int], by_id: dict[str, int]) -> dict[str, Any]:
    values = [by_id[k] - t for k, t in sent.items() if k in by_id]
    if not values:
        raise BenchError("no prediction of the latency run came back")
    return {
        "sent": len(sent),
        "received": len(values),
        "p50_ms": percentile(values, 0.5),
        "p99_ms": percentile(values, 0.99),
        "max_ms": max(values),
        "cdf": [[percentile(values, q), q] for q in (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)],
    }


def _warm(topics: Topics, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    """Send a trickle until the pipeline answers (it has started), so start-up is not measured."""
    producer = Producer({**topics.conf, "log_level": 3})
    deadline = time.monotonic() + STALL_S
    for event in events(10, seed=41):
        producer.produce(topics.input, topics.codec.encode(event), event["customer_id"].encode())
    producer.flush(10)
    while topics.output_end() < 10:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited ({proc.returncode}) before answering: {_tail(log)} (log {log})")
        if time.monotonic() > deadline:
            _stop(proc)
            raise BenchError(f"{what} wrote nothing within {STALL_S:.0f} s{_flink_cause()} (log {log})")
        time.sleep(0.3)
    time.sleep(1.0)


class Watcher:
    """The consumer a downstream user runs: ``read_committed``, subscribed to the output topic WHILE the producer
    produces (its own thread), stamping each prediction with its own receive wall-clock (ms).

    Visible latency = receive time - the input's scheduled send time: what a ``read_committed`` reader waits,
    transaction commits (exactly-once: the next checkpoint) included; processed latency = the record's broker
    append time - scheduled send time. Use as a context manager; :meth:`wait_for` collects the events of a run.
    """

    def __init__(self, topics: Topics, decode: Callable[[bytes], str]) -> None:
        self.topics, self.decode = topics, decode
        self.consumer = Consumer(
            {
                **topics.conf,
                "group.id": f"bench-visible-{uuid.uuid4().hex[:6]}",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "log_level": 3,
            }
        )
        self._raw: list[tuple[bytes, int, int]] = []  # (value, append ms, receive ms), filled by the thread
        self._lock = threading.Lock()
        self._assigned = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-visible", daemon=True)
        self.appended: dict[str, int] = {}
        self.received: dict[str, int] = {}
        #: the events of the latest :meth:`wait_for` ({event_id: scheduled send ms})
        self.last_sent: dict[str, int] = {}

    def __enter__(self) -> Watcher:
        self.consumer.subscribe([self.topics.output], on_assign=lambda c, p: self._assigned.set())
        self._thread.start()
        if not self._assigned.wait(60):
            self.close()
            raise BenchError(f"the read_committed watcher of {self.topics.output} got no partitions in 60 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            messages = self.consumer.consume(1000, 0.05)
            now = time.time_ns() // 1_000_000
            batch = [(m.value() or b"", m.timestamp()[1], now) for m in messages if not m.error()]
            if batch:
                with self._lock:
                    self._raw.extend(batch)

    def _drain(self) -> None:
        with self._lock:
            raw, self._raw = self._raw, []
        for value, appended, received in raw:
            event_id = self.decode(value)
            self.appended[event_id], self.received[event_id] = appended, received

    def wait_for(self, sent: dict[str, int], timeout_s: float) -> None:
        """Until every event of ``sent`` has been received (or ``timeout_s``): fills :attr:`appended` and
        :attr:`received` ({event_id: ms})."""
        self.last_sent = sent
        deadline = time.monotonic() + timeout_s
        while True:
            self._drain()
            if all(k in self.received for k in sent) or time.monotonic() > deadline:
                return
            time.sleep(0.1)

    def point(self, sent: dict[str, int]) -> dict[str, Any]:
        """Processed latencies of ``sent`` (:func:`_latencies`) with the visible ones under ``"visible"``."""
        return {**_latencies(sent, self.appended), "visible": _latencies(sent, self.received)}

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self.consumer.close()


def prediction_decoder(topics: Topics, timings: dict[str, dict[str, Any]] | None = None) -> Callable[[bytes], str]:
    """``event_id`` of an Avro prediction record of ``topics.output`` (its ``timings`` kept in ``timings``)."""
    codec = AvroCodec(topics.store, topic_subject(topics.output), load_schema("prediction"))

    def decode(payload: bytes) -> str:
        record = codec.decode(payload)
        if timings is not None:
            timings[str(record["event_id"])] = record["timings"]
        return str(record["event_id"])

    return decode


def _curve_point(rate: float, point: dict[str, Any]) -> dict[str, Any]:
    out = {"rate": rate, **{k: point[k] for k in ("sent", "received", "p50_ms", "p99_ms", "max_ms")}}
    if "visible" in point:
        out.update({f"visible_{k}": point["visible"][k] for k in ("received", "p50_ms", "p99_ms", "max_ms")})
    return out


def latency_steps(
    topics: Topics, watcher: Watcher, rates: Sequence[float], seconds: float, who: str
) -> list[dict[str, Any]]:
    """An open-loop run at each of ``rates`` in turn (>= 200 events each) against a running pipeline, the
    ``watcher`` reading while it produces; processed and visible latency of each (:meth:`Watcher.point`)."""
    points: list[dict[str, Any]] = []
    for rate in rates:
        sent = _open_loop(topics, rate, max(seconds, 200.0 / rate))
        watcher.wait_for(sent, 60)
        point = {"rate": rate, **watcher.point(sent)}
        points.append(point)
        say(
            f"streaming latency {who} at {rate:,.0f} events/s: processed p50 {point['p50_ms']:.0f} / p99 "
            f"{point['p99_ms']:.0f} ms, visible (read_committed) p50 {point['visible']['p50_ms']:.0f} / p99 "
            f"{point['visible']['p99_ms']:.0f} ms"
        )
    return points


def vatic_latency(
    options: Options,
    stack: BenchStack,
    rate: float,
    seconds: float,
    parallelism: int,
    curve_rates: tuple[float, ...] = (),
    *,
    overrides: dict[str, Any] | None = None,
    who: str = "vatic",
) -> dict[str, Any]:
    """Latency at ``rate``; first, in the same job, at each of ``curve_rates`` (lowest first, so that each step
    starts with an empty queue): how latency grows with load, without a job start per point.

    Processed latency (append time) and visible latency (a ``read_committed`` consumer running meanwhile:
    ``"visible"``, and ``visible_*`` in the curve points); ``overrides``: ``streaming`` keys of the service
    config (checkpoint interval, guarantee)."""
    topics = Topics(stack, "vatic-lat")
    proc, log = _start_job(
        options, stack, topics, parallelism=parallelism, batch_size=None, bounded=False, overrides=overrides
    )
    timings: dict[str, dict[str, Any]] = {}
    try:
        _warm(topics, proc, log, "vatic's streaming job")
        with Watcher(topics, prediction_decoder(topics, timings)) as watcher:
            points = latency_steps(topics, watcher, [*sorted(curve_rates), rate], seconds, who)
    finally:
        _stop(proc)
        topics.close()
    *curve, last = points
    return {
        **last,
        "breakdown": _breakdown(watcher.last_sent, watcher.appended, timings),
        "curve": [_curve_point(p["rate"], p) for p in curve],
        "overrides": overrides or {},
    }


def _breakdown(sent: dict[str, int], appended: dict[str, int], timings: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Where the latency goes, from the prediction's own ``timings`` (ms, p50/p99): sent -> taken by the job
    (``received_time``), taken -> handed to the producer (``emit_time``), handed -> appended to the topic."""

    def ms(value: Any) -> float:
        return value.timestamp() * 1000 if hasattr(value, "timestamp") else float(value)

    parts: dict[str, list[float]] = {"queued_before_job": [], "in_job": [], "emit_to_append": []}
    for event_id, t in timings.items():
        if event_id not in sent or event_id not in appended:
            continue
        received, emitted = ms(t["received_time"]), ms(t["emit_time"])
        parts["queued_before_job"].append(received - sent[event_id])
        parts["in_job"].append(emitted - received)
        parts["emit_to_append"].append(appended[event_id] - emitted)
    return {
        name: {"p50_ms": percentile(values, 0.5), "p99_ms": percentile(values, 0.99)}
        for name, values in parts.items()
        if values
    }


def naive_latency(options: Options, stack: BenchStack, rate: float, seconds: float) -> dict[str, Any]:
    topics = Topics(stack, "naive-lat")
    log = options.tmp / "streaming" / f"{topics.input}.naive.log"
    proc = _start_naive(stack, topics, 0, log)
    try:
        _warm(topics, proc, log, "the naive pipeline")
        sent = _open_loop(topics, rate, seconds)
        _, by_id, _ = topics.read_outputs(len(sent) + 10, 60, lambda b: str(json.loads(b)["event_id"]))
    finally:
        _stop(proc)
    return {"rate": rate, **_latencies(sent, by_id)}


# --- the comparison -------------------------------------------------------------------------------------


def _batch_sweep(options: Options, stack: BenchStack, parallelism: int) -> dict[str, float]:
    """Max events/s of vatic's job by ``streaming.batch_size``."""
    sweep: dict[str, float] = {}
    for size in (1, 16, 64, 128):
        n = 3_000 if size == 1 else 12_000
        result = vatic_max(options, stack, n, parallelism=parallelism, batch_size=size)
        sweep[str(size)] = result["eps"]
        say(f"streaming batch size {size:>3} (p={parallelism}): {result['eps']:8.0f} events/s")
    return sweep


def _rows(
    mode: str, best_p: int, vatic_eps: float, naive_eps: float, vatic_lat: dict[str, Any], naive_lat: dict[str, Any]
) -> list[dict[str, Any]]:
    """The three target rows of comparison 1."""
    return [
        {
            "id": "streaming_vs_naive",
            "comparison": "streaming",
            "metric": f"max events/s, vatic job ({mode} mode, best parallelism {best_p}) vs naive per-event pipeline",
            "unit": "events/s",
            "vatic": vatic_eps,
            "baseline": naive_eps,
            "ratio": vatic_eps / naive_eps,
            "target": ">= 10x",
            "met": vatic_eps / naive_eps >= 10,
        },
        {
            "id": "streaming_absolute",
            "comparison": "streaming",
            "metric": f"max events/s of vatic's job on {os.cpu_count()} cores (stretch 10,000)",
            "unit": "events/s",
            "vatic": vatic_eps,
            "baseline": 5000.0,
            "ratio": vatic_eps / 5000.0,
            "target": ">= 5,000 events/s",
            "met": vatic_eps >= 5000,
        },
        {
            "id": "streaming_p99",
            "comparison": "streaming",
            "metric": "event-to-prediction p99 at 50% of max: vatic vs naive (each at half its own max)",
            "unit": "ms",
            "vatic": vatic_lat["p99_ms"],
            "baseline": naive_lat["p99_ms"],
            "ratio": vatic_lat["p99_ms"] / max(naive_lat["p99_ms"], 1e-9),
            "target": "<= 50 ms",
            "met": vatic_lat["p99_ms"] <= 50,
        },
    ]


def streaming(options: Options, stack: BenchStack) -> dict[str, Any]:
    """Comparison 1 (see the module docstring). Returns measurements and the target rows."""
    stack.need("kafka", "redis", "fraud-model", "stock")
    n_vatic = 6_000 if options.quick else 30_000
    n_naive = 300 if options.quick else 1_500
    parallelisms = (1,) if options.quick else (1, 2)
    repeats = 1 if options.quick else options.repeats
    vatic_runs: dict[int, list[dict[str, Any]]] = {p: [] for p in parallelisms}
    naive_runs: list[dict[str, Any]] = []
    notes: list[str] = []
    try:
        # a first (unrecorded) short run: start-up check, and the fallback when the configured mode fails
        # (--quick skips it: its one measured run fails with the job's cause instead)
        if not options.quick:
            vatic_max(options, stack, 2_000, parallelism=1)
    except BenchError as exc:
        if options.stream_mode not in (None, "vectorized"):
            raise
        note = f"vectorized mode failed, measured in async mode instead: {exc}"
        say(f"streaming: {note}")
        notes.append(note)
        options.stream_mode = "async"
    mode = options.stream_mode or str(
        yaml.safe_load((SERVICE_DIR / "service.yaml").read_text())["streaming"].get("mode", "vectorized")
    )
    for repeat in range(repeats):
        result = naive_max(options, stack, n_naive)
        naive_runs.append(result)
        say(f"streaming {repeat + 1}/{repeats} naive: {result['eps']:8.0f} events/s ({n_naive} events)")
        for p in parallelisms:
            if p == 1 and repeat > 0 and len(parallelisms) > 1:
                continue  # parallelism 1 is measured once (docs/decisions/0004-vectorized-default.md): saves ~80 s
            result = vatic_max(options, stack, n_vatic, parallelism=p)
            vatic_runs[p].append(result)
            say(f"streaming {repeat + 1}/{repeats} vatic p={p}: {result['eps']:8.0f} events/s ({n_vatic} events)")
    by_parallelism = {p: median(r["eps"] for r in runs) for p, runs in vatic_runs.items()}
    best_p = max(by_parallelism, key=lambda p: by_parallelism[p])
    vatic_eps, naive_eps = by_parallelism[best_p], median(r["eps"] for r in naive_runs)

    sweep = {} if options.quick else _batch_sweep(options, stack, best_p)

    seconds = 3.0 if options.quick else 10.0
    say(f"streaming latency: naive at {naive_eps * 0.5:.0f} events/s, vatic at {vatic_eps * 0.5:.0f} events/s")
    naive_lat = naive_latency(options, stack, max(1.0, naive_eps * 0.5), seconds)
    say(f"streaming latency naive: p50 {naive_lat['p50_ms']:.0f} ms, p99 {naive_lat['p99_ms']:.0f} ms")
    # full runs: latency vs load in the same job, at 20 events/s and 10% / 25% of max, then at 50%
    curve = () if options.quick else (20.0, round(vatic_eps * 0.1), round(vatic_eps * 0.25))
    vatic_lat = vatic_latency(options, stack, max(1.0, vatic_eps * 0.5), seconds, best_p, curve)
    say(f"streaming latency vatic: p50 {vatic_lat['p50_ms']:.0f} ms, p99 {vatic_lat['p99_ms']:.0f} ms")

    rows = _rows(mode, best_p, vatic_eps, naive_eps, vatic_lat, naive_lat)
    profiles: dict[str, Any] = {}
    if options.profile and not all(r["met"] for r in rows):
        say("profiling vatic's streaming job (Python workers) while it drains a topic, with py-spy")
        out = options.tmp / "profile-streaming.txt"
        vatic_max(options, stack, n_vatic, parallelism=best_p, profile=out)
        profiles["vatic-job"] = summarize_profile(out)
    return {
        "vatic_runs": {str(p): runs for p, runs in vatic_runs.items()},
        "naive_runs": naive_runs,
        "by_parallelism": {str(p): v for p, v in by_parallelism.items()},
        "best_parallelism": best_p,
        "batch_sweep": sweep,
        "latency": {"vatic": vatic_lat, "naive": naive_lat},
        "mode": mode,
        "notes": notes,
        "rows": rows,
        "profiles": profiles,
    }


if __name__ == "__main__":  # pragma: no cover - manual runs
    sys.exit("run the benchmarks with bench/run.py")
