"""Memory at the max rate: resident memory (RSS) of vatic's streaming job and of its model server.

:class:`RssSampler` reads the Linux process table (``/proc``) every ``interval_s`` in a background thread and
sums, per sample, the RSS of every process in the tree under each named root PID, by process kind
(:func:`kind_of`):

* ``jvm`` - a ``java`` process: the Flink mini-cluster that ``vatic stream run`` starts (JobManager and
  TaskManager in one JVM);
* ``python-worker`` - a PyFlink Python worker (the Beam harness running the job's UDFs: ``pyflink.fn_execution``
  or its ``pyflink-udf-runner.sh`` launcher);
* ``model-server`` - an MLServer process (``mlserver`` or vatic's launcher ``vatic.serving.runtimes.serve`` in its
  command line; its worker processes included);
* ``driver`` - any other Python process in the tree (``vatic stream run``'s supervisor and the job's client);
* ``other`` - anything else (shells).

RSS counts shared pages once per process, so a tree's total is an upper bound of what it holds; that is the
conservative reading for a memory target.

:func:`memory` (``bench.run --only memory``): vatic's job (``vatic stream run --bounded``) drains a pre-loaded
topic at its max rate while the sampler watches the job's tree and the ``fraud-model`` server's tree; peak and
mean per kind over the drain (first output to exit). Targets: the job's tree <= 1.5 GB, the light model server
<= 300 MB (peaks).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import BenchError, Options, say

MB = 1024 * 1024
#: targets (peak RSS of the tree, bytes)
JOB_TARGET = 1536 * MB
LIGHT_SERVER_TARGET = 300 * MB

_PROC = Path("/proc")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
KINDS = ("jvm", "python-worker", "model-server", "driver", "other")


@dataclass(frozen=True)
class Proc:
    """One process of the table: parent, resident bytes, command line."""

    pid: int
    parent: int
    rss: int
    argv: tuple[str, ...]


def kind_of(argv: Iterable[str]) -> str:
    """The kind of a process from its command line (see the module docstring)."""
    args = list(argv)
    if not args:
        return "other"
    program = os.path.basename(args[0])
    text = " ".join(args)
    if program == "java" or program.startswith("java"):
        return "jvm"
    if "pyflink.fn_execution" in text or "pyflink-udf-runner" in text:
        return "python-worker"
    if "mlserver" in text or "vatic.serving.runtimes.serve" in text:
        return "model-server"
    if program.startswith("python") or "/python" in args[0] or program == "vatic":
        return "driver"
    return "other"


def _read(pid: int) -> Proc | None:
    """``pid``'s parent, RSS and command line; None when it is gone (or a kernel thread)."""
    base = _PROC / str(pid)
    try:
        fields = (base / "stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
        statm = (base / "statm").read_text(encoding="utf-8").split()
        raw = (base / "cmdline").read_bytes()
    except (OSError, IndexError, ValueError):
        return None
    argv = tuple(part.decode("utf-8", "replace") for part in raw.split(b"\0") if part)
    if not argv:
        return None
    return Proc(pid, int(fields[1]), int(statm[1]) * _PAGE, argv)


def snapshot() -> dict[int, Proc]:
    """Every (user-space) process of the table now. BenchError where there is no ``/proc`` (not Linux)."""
    if not _PROC.is_dir():
        raise BenchError("memory sampling reads /proc: run the memory and soak benchmarks on Linux")
    table: dict[int, Proc] = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            proc = _read(int(entry.name))
            if proc is not None:
                table[proc.pid] = proc
    return table


def tree(root: int, table: Mapping[int, Proc]) -> list[tuple[Proc, str]]:
    """``root`` and every descendant of it in ``table``, each with its kind (empty when ``root`` is gone).

    A process whose own command line says only ``driver`` or ``other`` takes the kind of a ``model-server`` or
    ``python-worker`` parent: MLServer's worker processes and the Beam harness's helpers are started with
    generic command lines (``python -c "from multiprocessing.spawn ..."``).
    """
    if root not in table:
        return []
    children: dict[int, list[int]] = {}
    for proc in table.values():
        children.setdefault(proc.parent, []).append(proc.pid)
    found: list[tuple[Proc, str]] = []
    todo: list[tuple[int, str | None]] = [(root, None)]
    while todo:
        pid, parent_kind = todo.pop()
        proc = table[pid]
        kind = kind_of(proc.argv)
        if kind in ("driver", "other") and parent_kind in ("model-server", "python-worker"):
            kind = parent_kind
        found.append((proc, kind))
        todo.extend((child, kind) for child in children.get(pid, ()))
    return found


def measure_tree(root: int, table: Mapping[int, Proc]) -> dict[str, Any]:
    """RSS of ``root``'s tree: ``{"total": bytes, "processes": n, "kinds": {kind: bytes}}``."""
    kinds: dict[str, int] = {}
    procs = tree(root, table)
    for proc, kind in procs:
        kinds[kind] = kinds.get(kind, 0) + proc.rss
    return {"total": sum(kinds.values()), "processes": len(procs), "kinds": kinds}


@dataclass
class RssSampler:
    """Samples the trees under ``roots`` ({group name: root PID}) every ``interval_s`` in a thread.

    Use as a context manager; :attr:`samples` holds ``{"t": seconds since start, group: measure_tree(...)}``.
    A root that is gone gives a group with no processes (total 0); :meth:`summary` skips such samples.
    """

    roots: dict[str, int]
    interval_s: float = 0.5
    samples: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    started: float = 0.0

    def sample(self) -> dict[str, Any]:
        """Take one sample now (also what the thread does), append it and return it."""
        table = snapshot()
        record: dict[str, Any] = {"t": time.monotonic() - self.started}
        for group, pid in self.roots.items():
            record[group] = measure_tree(pid, table)
        self.samples.append(record)
        return record

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def summary(self, since_s: float = 0.0) -> dict[str, Any]:
        """Per group: peak and mean MB of the tree's total and of each kind, over the samples at or after
        ``since_s`` in which the group had processes (see :func:`summarize`)."""
        return summarize([s for s in self.samples if s["t"] >= since_s], list(self.roots))


def summarize(samples: list[dict[str, Any]], groups: Iterable[str]) -> dict[str, Any]:
    """``{group: {"samples": n, "peak_mb", "mean_mb", "processes": max count, "kinds": {kind: {"peak_mb",
    "mean_mb"}}}}``; a kind's mean counts the samples where the group ran as 0 for that kind when absent."""
    out: dict[str, Any] = {}
    for group in groups:
        present = [s[group] for s in samples if s.get(group, {}).get("processes")]
        if not present:
            out[group] = {"samples": 0, "peak_mb": float("nan"), "mean_mb": float("nan"), "processes": 0, "kinds": {}}
            continue
        totals = [p["total"] / MB for p in present]
        kinds = sorted({k for p in present for k in p["kinds"]}, key=lambda k: KINDS.index(k) if k in KINDS else 99)
        out[group] = {
            "samples": len(present),
            "peak_mb": max(totals),
            "mean_mb": sum(totals) / len(totals),
            "processes": max(p["processes"] for p in present),
            "kinds": {
                kind: {
                    "peak_mb": max(p["kinds"].get(kind, 0) for p in present) / MB,
                    "mean_mb": sum(p["kinds"].get(kind, 0) for p in present) / MB / len(present),
                }
                for kind in kinds
            },
        }
    return out


def describe(summary: Mapping[str, Any]) -> str:
    """One line: ``group peak X MB (kind peak Y, ...)`` per group."""
    parts = []
    for group, s in summary.items():
        kinds = ", ".join(f"{k} {v['peak_mb']:.0f}" for k, v in s["kinds"].items())
        parts.append(f"{group} peak {s['peak_mb']:.0f} MB ({kinds})")
    return "; ".join(parts)


# --- the comparison -------------------------------------------------------------------------------------


def _rows(summary: Mapping[str, Any], parallelism: int, eps: float) -> list[dict[str, Any]]:
    job, server = summary["job"], summary["fraud-model"]
    job_kinds = ", ".join(f"{k} {v['peak_mb']:.0f}" for k, v in job["kinds"].items())
    return [
        {
            "id": "memory_job_rss",
            "comparison": "memory",
            "metric": f"peak RSS of vatic's job (JVM + Python workers + driver: {job_kinds} MB) draining at max rate "
            f"({eps:,.0f} events/s, parallelism {parallelism})",
            "unit": "MB",
            "vatic": job["peak_mb"],
            "baseline": JOB_TARGET / MB,
            "ratio": job["peak_mb"] / (JOB_TARGET / MB),
            "target": "<= 1,536 MB",
            "met": job["peak_mb"] <= JOB_TARGET / MB,
        },
        {
            "id": "memory_model_server_rss",
            "comparison": "memory",
            "metric": "peak RSS of the light model server (fraud-model, LightGBM; all its processes) under the job",
            "unit": "MB",
            "vatic": server["peak_mb"],
            "baseline": LIGHT_SERVER_TARGET / MB,
            "ratio": server["peak_mb"] / (LIGHT_SERVER_TARGET / MB),
            "target": "<= 300 MB",
            "met": server["peak_mb"] <= LIGHT_SERVER_TARGET / MB,
        },
    ]


def memory(options: Options, stack: Any, parallelism: int = 1) -> dict[str, Any]:
    """Drain a pre-loaded topic with vatic's bounded job while sampling RSS; returns details and target rows."""
    from bench import streaming as s

    stack.need("kafka", "redis", "fraud-model")
    server_pid = stack.pid("fraud-model")
    if server_pid is None:
        raise BenchError("fraud-model is not running: its process id is unknown (start it with `vatic stack up`)")
    n = 6_000 if options.quick else 30_000
    topics = s.Topics(stack, "memory")
    topics.preload(n)
    proc, log = s._start_job(options, stack, topics, parallelism=parallelism, batch_size=None, bounded=True)
    with RssSampler({"job": proc.pid, "fraud-model": server_pid}, interval_s=0.5) as sampler:
        try:
            s._await_output(topics, proc, log, "vatic's streaming job", s.STALL_S)
            draining_from = time.monotonic() - sampler.started
            proc.wait(timeout=600)
        except subprocess.TimeoutExpired:
            s._stop(proc)
            raise BenchError(f"vatic's streaming job did not finish {n} events in 10 minutes (log {log})") from None
    if proc.returncode != 0:
        raise BenchError(f"vatic's streaming job failed ({proc.returncode}): {s._tail(log)} (log {log})")
    stamps, _, dead = topics.read_outputs(n, 60)
    eps = s._rate(stamps)
    summary = sampler.summary(since_s=draining_from)
    if not summary["job"]["samples"]:
        # a drain shorter than one interval: fall back to the whole life of the job
        summary = sampler.summary()
    whole = sampler.summary()
    say(f"memory while draining {n} events at {eps:,.0f} events/s: {describe(summary)}")
    return {
        "events": n,
        "outputs": len(stamps),
        "dead": dead,
        "eps": eps,
        "parallelism": parallelism,
        "interval_s": sampler.interval_s,
        "draining": summary,
        "whole_run_peak_mb": {group: whole[group]["peak_mb"] for group in whole},
        "rows": _rows(summary, parallelism, eps),
    }
