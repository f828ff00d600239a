"""Comparison 12: what the drift monitor costs the serving job.

The fraud job drains a pre-loaded topic (max events/s at parallelism 1, bounded run) alone, and with the service's
drift monitor (``vatic monitor run``, the service's default monitoring settings) reading the run's predictions
topic as they are written, on the same machine. The two alternate within each repeat. The monitor is started
before the job and given :data:`MONITOR_WARMUP_S` to be up, so that its start-up (a second JVM and Python
workers) is not in the measured window; what is measured is the job's rate while the monitor decodes, bins and
counts every prediction beside it. After each run the monitor's own metrics endpoint says how many predictions it
read, so that a monitor that read nothing cannot pass for a cheap one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import BenchError, Options, median, say
from bench.stack import BenchStack
from bench.streaming import Topics, vatic_max

#: seconds the monitor gets to start before the job does
MONITOR_WARMUP_S = 45.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Monitor:
    """A ``vatic monitor run`` of one run's service folder, beside its job."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: Path | None = None
        self.port = 0

    def start(self, folder: Path, topics: Topics) -> None:
        vatic = Path(sys.executable).parent / "vatic"
        self.port = _free_port()
        self.log = folder.parent / "monitor.log"
        argv = [str(vatic), "monitor", "run", str(folder), "--no-resume", "--checkpoint-dir",
                str(folder.parent / "monitor-checkpoints"), "--metrics-port", str(self.port)]  # fmt: skip
        if topics.registry:
            argv += ["--schema-registry-url", topics.registry]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=self.log.open("wb"), start_new_session=True
        )
        deadline = time.monotonic() + MONITOR_WARMUP_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"the drift monitor exited ({self.proc.returncode}) while starting (log {self.log})")
            time.sleep(1)

    def read(self) -> int:
        """Predictions the monitor has read (its ``monitoredPredictions`` gauge, summed over subtasks)."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return sum(
            int(float(line.rsplit(" ", 1)[1]))
            for line in text.splitlines()
            if line.startswith("flink_taskmanager_job_task_operator_vatic_monitoredPredictions")
        )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def _with_monitor(options: Options, stack: BenchStack, n: int) -> tuple[float, int]:
    monitor = _Monitor()
    try:
        eps = vatic_max(options, stack, n, parallelism=1, beside=monitor.start)["eps"]
        deadline = time.monotonic() + 60
        read = monitor.read()
        while read < n * 0.9 and time.monotonic() < deadline:  # it may still be reading the last batches
            time.sleep(2)
            read = monitor.read()
        return eps, read
    finally:
        monitor.stop()


def monitor(options: Options, stack: BenchStack) -> dict[str, Any]:
    """Comparison 12 (module docstring). Returns the runs and the target row."""
    stack.need("kafka", "redis", "fraud-model")
    n = 6_000 if options.quick else 20_000
    runs: dict[str, list[float]] = {"without": [], "with": []}
    read: list[int] = []
    for repeat in range(options.repeats):
        eps = vatic_max(options, stack, n, parallelism=1)["eps"]
        runs["without"].append(eps)
        say(f"monitor {repeat + 1}/{options.repeats} job alone:            {eps:8.0f} events/s")
        eps, seen = _with_monitor(options, stack, n)
        runs["with"].append(eps)
        read.append(seen)
        say(f"monitor {repeat + 1}/{options.repeats} job + drift monitor: {eps:8.0f} events/s (monitor read {seen:,})")
    if min(read) < n * 0.9:
        raise BenchError(f"the drift monitor read {min(read):,} of {n:,} predictions in a run: see its log")
    eps_with, eps_without = median(runs["with"]), median(runs["without"])
    rows = [
        {
            "id": "monitor_stream_eps",
            "comparison": "monitor",
            "metric": "max events/s of the job (p=1) with its drift monitor running beside it vs alone",
            "unit": "events/s",
            "vatic": eps_with,
            "baseline": eps_without,
            "ratio": eps_with / eps_without,
            "target": ">= 0.8x (a second job reading every prediction, on the same 2 cores)",
            "met": eps_with / eps_without >= 0.8,
        }
    ]
    return {"stream_eps": runs, "monitor_read": read, "events": n, "rows": rows}
