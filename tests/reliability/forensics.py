"""What a stalled or failed case leaves behind: the job's own view (Flink REST), Kafka's view (open
transactions, last stable offsets) and the stacks of every process of the job, written next to its log.

:func:`collect` never raises: it is called when something already went wrong, and each probe that fails
says so in the report instead.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import IsolationLevel, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

_REST = re.compile(r"Rest endpoint listening at [\w.-]+:(\d+)")


def flink_rest_port(log_dir: Path) -> int | None:
    """The REST port of the newest mini-cluster that logged into ``log_dir``."""
    port = None
    for log in sorted(log_dir.glob("*.log"), key=lambda p: p.stat().st_mtime):
        for match in _REST.finditer(log.read_text(encoding="utf-8", errors="replace")):
            port = int(match.group(1))
    return port


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


def flink_view(port: int) -> list[str]:
    """State, task managers, checkpoint counts and the newest failures of every job of the mini-cluster."""
    managers = _get(port, "/taskmanagers").get("taskmanagers", [])
    lines = [f"flink task managers: {len(managers)}"]
    for job in _get(port, "/jobs/overview").get("jobs", []):
        jid = job["jid"]
        counts = _get(port, f"/jobs/{jid}/checkpoints").get("counts", {})
        history = _get(port, f"/jobs/{jid}/exceptions?maxExceptions=20").get("exceptionHistory", {})
        entries = history.get("entries") or []
        lines.append(f"flink job {job['name']} {job['state']}: {len(entries)} failures, checkpoints {counts}")
        for entry in entries[:3]:
            trace = str(entry.get("stacktrace") or "").splitlines()
            lines.append(f"  failure: {entry.get('exceptionName')}: {trace[0][:300] if trace else ''}")
    return lines


def checkpoint_history(port: int) -> list[dict[str, Any]]:
    """The recent checkpoints of every job of the mini-cluster (Flink keeps the last few), each with its job id."""
    entries = []
    for job in _get(port, "/jobs/overview").get("jobs", []):
        for entry in _get(port, f"/jobs/{job['jid']}/checkpoints").get("history", []):
            entries.append({**entry, "job": job["jid"]})
    return entries


def stable_offsets(kafka: str | dict[str, Any], topics: Iterable[str]) -> list[str]:
    """Per partition: the high watermark and the last stable offset. LSO < HW for long means a transaction
    is open on that partition, and ``read_committed`` readers cannot read past it. ``kafka``: the bootstrap
    servers of a plain broker, or the admin client's whole confluent-kafka configuration (a secured one)."""
    admin = AdminClient({"bootstrap.servers": kafka} if isinstance(kafka, str) else kafka)
    metadata = admin.list_topics(timeout=10)
    parts = [TopicPartition(t, p) for t in topics for p in sorted(metadata.topics[t].partitions)]
    out = []
    views = {}
    for level in (IsolationLevel.READ_UNCOMMITTED, IsolationLevel.READ_COMMITTED):
        futures = admin.list_offsets({tp: OffsetSpec.latest() for tp in parts}, isolation_level=level)
        views[level] = {(tp.topic, tp.partition): f.result(timeout=10).offset for tp, f in futures.items()}
    for tp in parts:
        key = (tp.topic, tp.partition)
        hw, lso = views[IsolationLevel.READ_UNCOMMITTED][key], views[IsolationLevel.READ_COMMITTED][key]
        out.append(
            f"{tp.topic}[{tp.partition}] high watermark {hw}, last stable {lso}" + (" (BLOCKED)" if lso < hw else "")
        )
    return out


def open_transactions(kafka_libs: Path, bootstrap: str, prefix: str, command_config: Path | None = None) -> list[str]:
    """Transactions of ``prefix`` the broker holds open, from Kafka's own ``kafka-transactions.sh``;
    ``command_config``: its client properties file (security and credentials of a secured broker)."""
    java = shutil.which("java") or "java"
    command = [java, "-cp", f"{kafka_libs}/*", "org.apache.kafka.tools.TransactionsCommand",
               "--bootstrap-server", bootstrap]  # fmt: skip
    if command_config is not None:
        command += ["--command-config", str(command_config)]
    listed = subprocess.run([*command, "list"], capture_output=True, text=True, timeout=60, check=False)
    out = []
    for line in listed.stdout.splitlines()[1:]:
        fields = line.split()
        if not fields or not fields[0].startswith(prefix):
            continue
        state = fields[-1]
        if state in ("Ongoing", "PrepareCommit", "PrepareAbort"):
            described = subprocess.run(
                [*command, "describe", "--transactional-id", fields[0]],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            out.append(f"open transaction {fields[0]}: {' '.join(described.stdout.split()[-12:])}")
    return out or [f"no open transaction of {prefix}* ({len(listed.stdout.splitlines()) - 1} listed in all)"]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and every descendant."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(_children(current))
    return tree


def dump_stacks(pid: int, out: Path, py_spy: Path) -> list[str]:
    """Thread dumps of the job's JVMs (jcmd) and stacks of its Python processes (py-spy) into ``out``."""
    lines = []
    with out.open("w", encoding="utf-8") as handle:
        for p in process_tree(pid):
            try:
                cmdline = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "java" in cmdline.split(" ", 1)[0]:
                tool = [shutil.which("jcmd") or "jcmd", str(p), "Thread.print"]
            elif "python" in cmdline.split(" ", 1)[0] and py_spy.is_file():
                tool = [str(py_spy), "dump", "--pid", str(p)]
            else:
                continue
            done = subprocess.run(tool, capture_output=True, text=True, timeout=60, check=False)
            handle.write(f"===== {p}: {cmdline[:300]}\n{done.stdout}{done.stderr}\n")
            lines.append(f"stacks of {p} ({cmdline.split(' ', 1)[0].rsplit('/', 1)[-1]})")
    return [f"stack dumps in {out}: {len(lines)} processes"]


def collect(probes: list[tuple[str, Callable[[], list[str]]]], report: Path) -> list[str]:
    """Run each probe; write every line to ``report`` and return the lines (a failed probe is one line)."""
    lines = []
    for name, probe in probes:
        try:
            lines.extend(probe())
        except Exception as exc:
            lines.append(f"{name}: probe failed: {type(exc).__name__}: {exc}")
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines
