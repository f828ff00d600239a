"""Comparison 14: capacity - the fraud job on the clusters (three Kafka nodes, a Flink session cluster of two
TaskManagers x 2 slots, as ``vatic stack up --cluster`` starts them) at parallelism 1, 2 and 4.

Per run: a fresh 8-partition input topic (3 replicas, ``min.insync.replicas`` 2) pre-loaded with N events, the job
submitted with ``vatic stream submit --cluster --bounded``; measured

* **events/s** from the output records' ``LogAppendTime`` (start-up excluded), and per slot (/ parallelism);
* **CPU per event** over the window from the first to the last output: the TaskManagers' JVMs and Python workers
  (``/proc`` of every process carrying their tokens), the Kafka nodes and the model server with its workers, in
  CPU-milliseconds per event; with the window's length, the cores the run kept busy.

Parallelisms alternate within a repeat (1, 2, 4, then again). The rows compare the per-slot rate at 2 and 4 with the
rate at 1 (the goal: flat within 15% where cores allow). On a 2-core machine the cores, not the slots, bound the
rate: the CPU per event and the busy cores say how much of the flatness the machine allowed; the capacity model
(docs/capacity.md) sizes clusters from the CPU per event, which does not depend on how many cores were there.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

from bench.common import ROOT, BenchError, Options, median, say
from bench.stack import BenchStack
from bench.streaming import Topics, _rate, _service
from vatic.cli.commands.schema import registry_url
from vatic.cli.stack.flink import FLINK, FlinkJobManager
from vatic.cli.stack.process import processes_with_token
from vatic.cli.stack.stack import Stack
from vatic.connectors.kafka import KafkaSettings, ensure_topics
from vatic.connectors.schema_registry import schema_source
from vatic.schemas import AvroCodec, load_schema, topic_subject

VATIC = ROOT / ".venv" / "pipeline" / "bin" / "vatic"
PARTITIONS = 8
PARALLELISMS = (1, 2, 4)
_TICK = os.sysconf("SC_CLK_TCK")


class ClusterTopics(Topics):
    """Fresh topics of one run on the Kafka cluster (outputs stamped with LogAppendTime); pre-loaded and watched
    as the streaming comparison's, written with ``acks=all``."""

    def __init__(self, stack: BenchStack, label: str) -> None:  # the cluster's topics: Topics.__init__ not called
        prefix = f"capacity-{label}-{uuid.uuid4().hex[:6]}"
        self.input, self.output, self.dead = f"{prefix}.in", f"{prefix}.out", f"{prefix}.dlq"
        self.bootstrap = stack.settings.kafka_cluster_bootstrap
        self.conf = {"bootstrap.servers": self.bootstrap}
        self.partitions = PARTITIONS
        kafka = KafkaSettings(bootstrap_servers=self.bootstrap)
        durable = {"min.insync.replicas": "2"}
        ensure_topics([self.input], partitions=PARTITIONS, replication=3, config=durable, settings=kafka)
        ensure_topics([self.output, self.dead], partitions=PARTITIONS, replication=3,
                      config={**durable, "message.timestamp.type": "LogAppendTime"}, settings=kafka)  # fmt: skip
        self.registry = registry_url(None)
        self.store = schema_source(self.registry, stack.settings.home / "schemas")
        self.codec = AvroCodec(self.store, topic_subject(self.input), load_schema("transaction"))
        self._watch = None

    def producer(self) -> Producer:
        return Producer({**self.conf, "linger.ms": 5, "acks": "all", "log_level": 3,
                         "queue.buffering.max.messages": 1_000_000})  # fmt: skip

    def stamps(self, expected: int, timeout_s: float) -> list[int]:
        """Append times (ms) of the committed predictions and dead letters."""
        consumer = Consumer({**self.conf, "group.id": f"capacity-{uuid.uuid4().hex[:6]}",
                             "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                             "enable.auto.commit": False, "log_level": 3})  # fmt: skip
        consumer.subscribe([self.output, self.dead])
        out: list[int] = []
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline and len(out) < expected:
                out += [m.timestamp()[1] for m in consumer.consume(5000, 0.5) if not m.error()]
        finally:
            consumer.close()
        return out


def _cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes have used so far; a process that is gone counts 0."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICK


def _tree(root: int) -> list[int]:
    """``root`` and its descendants (the model server's inference workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _groups(stack: BenchStack, cluster: Stack, tokens: list[str]) -> dict[str, list[int]]:
    model = stack.pid("fraud-model")
    nodes = [pid for name in ("kafka-1", "kafka-2", "kafka-3") if (pid := cluster.components[name].process.pid())]
    return {
        "job": [pid for token in tokens for pid in processes_with_token(token)],
        "kafka": nodes,
        "model": _tree(model) if model else [],
    }


def _run(options: Options, stack: BenchStack, cluster: Stack, tokens: list[str], n: int, p: int) -> dict[str, Any]:
    topics = ClusterTopics(stack, f"p{p}")
    try:
        topics.preload(n)
        folder = _service(options, topics, None)
        settings = cluster.settings
        env = {**os.environ, "VATIC_STACK_HOME": str(settings.home)}
        done = subprocess.run(
            [str(VATIC), "stream", "submit", str(folder), "--cluster", "--bounded", "--detached", "--parallelism",
             str(p), "--model-url", stack.url("fraud-model"), "--no-create-topics", "--checkpoint-dir",
             str(folder.parent / "checkpoints"), *(["--schema-registry-url", topics.registry] if topics.registry
                                                   else [])],
            capture_output=True, text=True, timeout=300, check=False, env=env,
        )  # fmt: skip
        if done.returncode != 0:
            raise BenchError(f"vatic stream submit failed at parallelism {p}: {done.stderr.strip()[-300:]}")
        job = done.stdout.strip()
        jobmanager = cluster.components["flink-jobmanager"]
        assert isinstance(jobmanager, FlinkJobManager)
        deadline = time.monotonic() + 300
        while topics.output_end() == 0:
            if time.monotonic() > deadline or jobmanager.rest.job(job).get("state") in ("FAILED", "CANCELED"):
                raise BenchError(f"the job at parallelism {p} wrote nothing: {jobmanager.rest.exceptions(job)[:1]}")
            time.sleep(0.1)
        # the window: from the first output to the last one, the processes sampled while the job still runs
        groups = _groups(stack, cluster, tokens)
        before, started = {k: _cpu_s(v) for k, v in groups.items()}, time.monotonic()
        first = topics.output_end()
        while topics.output_end() < n and time.monotonic() < deadline + 300:
            groups["job"] = sorted({*groups["job"], *_groups(stack, cluster, tokens)["job"]})  # workers that joined
            time.sleep(0.2)
        after, window = {k: _cpu_s(v) for k, v in groups.items()}, time.monotonic() - started
        outputs = topics.output_end() - first
        jobmanager.rest.wait_job(job, {"FINISHED", "FAILED", "CANCELED"}, timeout_s=120)
        restarts = len(jobmanager.rest.exceptions(job))
        stamps = topics.stamps(n, 60)
    finally:
        topics.close()
    if len(stamps) < n:
        raise BenchError(f"the job at parallelism {p} wrote {len(stamps)} records for {n} events")
    cpu = {k: after[k] - before[k] for k in groups}
    eps = _rate(stamps)
    return {
        "parallelism": p, "events": n, "eps": eps, "eps_per_slot": eps / p, "window_s": window, "restarts": restarts,
        "window_events": outputs, "busy_cores": sum(cpu.values()) / window if window > 0 else float("nan"),
        "cpu_ms_per_event": {k: 1000 * v / outputs if outputs else float("nan") for k, v in cpu.items()},
    }  # fmt: skip


def capacity(options: Options, stack: BenchStack) -> dict[str, Any]:
    """Comparison 14 (module docstring): per-slot rates at parallelism 1, 2 and 4, and the CPU per event."""
    stack.need("redis", "fraud-model")
    cluster = Stack(stack.settings)
    started = cluster.up(["cluster"])
    n = 1_500 if options.quick else 12_000
    runs: dict[int, list[dict[str, Any]]] = {p: [] for p in PARALLELISMS}
    try:
        tokens = [t for name in FLINK if (t := cluster.components[name].token())]  # type: ignore[attr-defined]
        for repeat in range(options.repeats):
            for p in PARALLELISMS:
                run = _run(options, stack, cluster, tokens, n, p)
                cpu = ", ".join(f"{k} {v:.2f}" for k, v in run["cpu_ms_per_event"].items())
                say(f"capacity repeat {repeat + 1}: p={p} {run['eps']:.0f} events/s ({run['eps_per_slot']:.0f} per "
                    f"slot), {run['busy_cores']:.2f} cores busy, CPU ms/event {cpu}, "
                    f"{run['restarts']} restart(s)")  # fmt: skip
                runs[p].append(run)
    finally:
        cluster.down(started)
    per_slot = {p: median(r["eps_per_slot"] for r in runs[p]) for p in PARALLELISMS}
    cpu = {
        p: {k: median(r["cpu_ms_per_event"][k] for r in runs[p]) for k in ("job", "kafka", "model")}
        for p in PARALLELISMS
    }
    busy = {p: median(r["busy_cores"] for r in runs[p]) for p in PARALLELISMS}
    rows = [
        {"id": f"capacity_per_slot_p{p}", "comparison": "capacity",
         "metric": f"events/s per slot at parallelism {p} vs 1 (both clusters)", "unit": "events/s",
         "vatic": per_slot[p], "baseline": per_slot[1], "ratio": per_slot[p] / per_slot[1],
         "target": ">= 0.85x (flat within 15% where cores allow)", "met": per_slot[p] / per_slot[1] >= 0.85}
        for p in PARALLELISMS[1:]
    ]  # fmt: skip
    return {"runs": {str(p): v for p, v in runs.items()}, "eps_per_slot": {str(p): v for p, v in per_slot.items()},
            "cpu_ms_per_event": {str(p): v for p, v in cpu.items()}, "busy_cores": {str(p): v for p, v in busy.items()},
            "cores": os.cpu_count(), "events": n, "rows": rows}  # fmt: skip
