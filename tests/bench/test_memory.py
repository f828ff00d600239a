"""The RSS sampler of bench/memory.py on a real process tree: every process found, each of the right kind.

The tree is made of real processes whose command lines look like those of vatic's job and model server: a
``java`` (``sleep`` under that name), a PyFlink worker (its module name in the command line) with a helper
child, an ``mlserver`` with a worker child, a plain ``sleep``, under a Python parent (the driver).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.memory import RssSampler, kind_of, measure_tree, snapshot, summarize, tree

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="the sampler reads /proc (Linux)")

SLEEP = "import time; time.sleep(120)"
SPAWN_ONE = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)"  # noqa: E501


@pytest.fixture
def process_tree(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    sleep = Path("/bin/sleep") if Path("/bin/sleep").exists() else Path("/usr/bin/sleep")
    (tmp_path / "java").symlink_to(sleep)
    (tmp_path / "mlserver").symlink_to(Path(sys.executable).resolve())
    # the parent's own command line must not name a kind: the names are put together at run time
    parent = textwrap.dedent(f"""
        import os, subprocess, sys
        children = [
            subprocess.Popen([{str(tmp_path / "java")!r}, "120"]),
            subprocess.Popen([sys.executable, "-c", {SPAWN_ONE!r}, "pyflink." + "fn_execution.beam.beam_boot"]),
            subprocess.Popen([os.path.join({str(tmp_path)!r}, "ml" + "server"), "-c", {SPAWN_ONE!r}]),
            subprocess.Popen([{str(sleep)!r}, "120"]),
        ]
        print("ready", flush=True)
        sys.stdin.read()
        for child in children:
            child.kill()
    """)
    proc = subprocess.Popen([sys.executable, "-c", parent], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    try:
        yield proc
    finally:
        for found, _ in tree(proc.pid, snapshot()):  # the descendants first, then the parent
            if found.pid != proc.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(found.pid, signal.SIGKILL)
        proc.kill()
        proc.wait()


def _settled(root: int) -> dict[str, int]:
    """Kinds -> process count once the grandchildren have started (they start after "ready")."""
    import time

    deadline = time.monotonic() + 30
    while True:
        counts: dict[str, int] = {}
        for _, kind in tree(root, snapshot()):
            counts[kind] = counts.get(kind, 0) + 1
        if sum(counts.values()) >= 7 or time.monotonic() > deadline:
            return counts


def test_the_sampler_finds_every_process_of_the_tree_by_kind(process_tree: subprocess.Popen[str]) -> None:
    counts = _settled(process_tree.pid)
    # the driver; java; the PyFlink worker and its helper; mlserver and its worker; the plain sleep
    assert counts == {"driver": 1, "jvm": 1, "python-worker": 2, "model-server": 2, "other": 1}
    measured = measure_tree(process_tree.pid, snapshot())
    assert measured["processes"] == 7
    assert set(measured["kinds"]) == {"driver", "jvm", "python-worker", "model-server", "other"}
    assert all(rss > 0 for rss in measured["kinds"].values())
    assert measured["total"] == sum(measured["kinds"].values())


def test_the_sampler_thread_summarizes_peak_and_mean_per_kind(process_tree: subprocess.Popen[str]) -> None:
    _settled(process_tree.pid)
    with RssSampler({"tree": process_tree.pid, "gone": 2**22 + 1}, interval_s=0.05) as sampler:
        while len(sampler.samples) < 3:
            sampler._stop.wait(0.05)
    summary = sampler.summary()
    tree_summary = summary["tree"]
    assert tree_summary["samples"] >= 3
    assert tree_summary["processes"] == 7
    assert 0 < tree_summary["mean_mb"] <= tree_summary["peak_mb"]
    for cell in tree_summary["kinds"].values():
        assert 0 < cell["mean_mb"] <= cell["peak_mb"] <= tree_summary["peak_mb"]
    # a root that does not exist is a group without samples, not an error
    assert summary["gone"]["samples"] == 0


def test_kinds_from_command_lines() -> None:
    assert kind_of(["/usr/lib/jvm/java-17/bin/java", "-Xmx1g", "org.apache.flink.X"]) == "jvm"
    assert kind_of(["/v/bin/python", "-m", "pyflink.fn_execution.beam.beam_boot"]) == "python-worker"
    assert kind_of(["/bin/bash", "/v/lib/pyflink/bin/pyflink-udf-runner.sh"]) == "python-worker"
    assert kind_of(["/v/bin/python", "/v/bin/mlserver", "start", "/repo"]) == "model-server"
    assert kind_of(["/v/bin/python", "-m", "vatic.serving.runtimes.serve", "start", "/repo"]) == "model-server"
    assert kind_of(["/v/bin/python", "/v/bin/vatic", "stream", "run"]) == "driver"
    assert kind_of(["/bin/sh", "-c", "x"]) == "other"
    assert kind_of([]) == "other"


def test_summary_of_hand_built_samples() -> None:
    mb = 1024 * 1024
    samples = [
        {"t": 0.0, "job": {"total": 300 * mb, "processes": 2, "kinds": {"jvm": 200 * mb, "driver": 100 * mb}}},
        {"t": 0.5, "job": {"total": 500 * mb, "processes": 3, "kinds": {"jvm": 300 * mb, "driver": 100 * mb,
                                                                         "python-worker": 100 * mb}}},
        {"t": 1.0, "job": {"total": 0, "processes": 0, "kinds": {}}},  # the job had exited: not counted
    ]  # fmt: skip
    job = summarize(samples, ["job"])["job"]
    assert job["samples"] == 2
    assert job["peak_mb"] == 500
    assert job["mean_mb"] == 400
    assert job["processes"] == 3
    assert job["kinds"]["jvm"] == {"peak_mb": 300, "mean_mb": 250}
    assert job["kinds"]["python-worker"] == {"peak_mb": 100, "mean_mb": 50}
    assert list(job["kinds"]) == ["jvm", "python-worker", "driver"]


def test_the_report_renders_the_memory_section_with_its_rows(tmp_path: Path) -> None:
    """``report.write`` with a memory comparison: the per-kind table and the two target rows (the section once
    rendered as nothing at all, which failed the whole run after the measurements)."""
    from datetime import UTC, datetime

    from bench import report
    from bench.common import Options
    from bench.memory import _rows

    mb = 1024 * 1024
    samples = [
        {"job": {"total": 900 * mb, "processes": 4, "kinds": {"jvm": 600 * mb, "python-worker": 300 * mb}},
         "fraud-model": {"total": 250 * mb, "processes": 1, "kinds": {"model-server": 250 * mb}}},
    ]  # fmt: skip
    draining = summarize(samples, ("job", "fraud-model"))
    data = {"events": 6000, "outputs": 6000, "dead": 0, "eps": 2500.0, "parallelism": 2, "interval_s": 0.5,
            "draining": draining, "rows": _rows(draining, 2, 2500.0)}  # fmt: skip
    summary = report.write({"memory": data}, Options(quick=True, repeats=1, results=tmp_path), datetime.now(UTC),
                           tmp_path)  # fmt: skip
    assert {row["id"] for row in summary["targets"]} == {"memory_job_rss", "memory_model_server_rss"}
    assert all(row["met"] for row in summary["targets"])
    text = (tmp_path / "report.md").read_text()
    assert "| job | jvm | 600 | 600 |" in text
    assert "| fraud-model | model-server | 250 | 250 |" in text
