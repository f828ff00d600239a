"""The supervised local runner: a job process whose mini-cluster lost its TaskManager is started again from
the newest checkpoint; any other exit ends the supervisor with the job's code; restarts in a row are bounded.

The job process here is a small real program (it records how it was started and exits with the code it is
told to): the supervisor's contract is about processes and exit codes, not about Flink. That a real
mini-cluster's lost TaskManager ends in exit 75 is shown by the reliability suite's dlq-unavailable case,
where the Kafka sink's cleanup failure kills the TaskManager in most runs under load.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vatic.streaming.minicluster import EXIT_CLUSTER_LOST, descendants, job_command, run_supervised
from vatic.streaming.settings import JobSettings, parse_job_arguments

#: exits with the next code of its list (one per start) and records the resume_from it was given
CHILD = """
import json, sys
from pathlib import Path
state, codes, resume_from = Path(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
starts = json.loads(state.read_text()) if state.exists() else []
starts.append({"resume_from": resume_from or None})
state.write_text(json.dumps(starts))
sys.exit(codes[len(starts) - 1])
"""


def _supervise(tmp_path: Path, codes: list[int], **options: Any) -> tuple[int, list[dict[str, Any]], list[str]]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    state = tmp_path / "starts.json"
    checkpoints = iter([tmp_path / f"chk-{i}" for i in range(1, 100)])
    said: list[str] = []
    services = [JobSettings(service_dir=tmp_path)]

    def command(given: list[JobSettings], resume_from: Path | None) -> list[str]:
        assert given == services
        return [sys.executable, str(script), str(state), json.dumps(codes), str(resume_from or "")]

    code = run_supervised(
        services, lambda: next(checkpoints), command=command, announce=said.append, backoff_s=(0.01, 0.02), **options
    )
    return code, json.loads(state.read_text()), said


def test_a_lost_cluster_is_restarted_from_the_newest_checkpoint_until_the_job_ends(tmp_path: Path) -> None:
    code, starts, said = _supervise(tmp_path, [EXIT_CLUSTER_LOST, EXIT_CLUSTER_LOST, 0], resume=False)
    assert code == 0
    assert len(starts) == 3
    # the first start honours resume=False; every restart resumes from the checkpoint newest at that moment
    assert starts[0]["resume_from"] is None
    assert [Path(s["resume_from"]).name for s in starts[1:]] == ["chk-1", "chk-2"]
    assert sum("restarting the job" in line for line in said) == 2


def test_any_other_exit_ends_the_supervisor_with_the_jobs_code(tmp_path: Path) -> None:
    code, starts, _ = _supervise(tmp_path, [3], resume=True)
    assert (code, len(starts)) == (3, 1)
    assert Path(starts[0]["resume_from"]).name == "chk-1"  # resume=True: the first start resumes too


def test_restarts_in_a_row_are_bounded_and_giving_up_is_said(tmp_path: Path) -> None:
    code, starts, said = _supervise(tmp_path, [EXIT_CLUSTER_LOST] * 10, resume=False, max_restarts=2)
    assert code == EXIT_CLUSTER_LOST
    assert len(starts) == 3  # the first run and two restarts
    assert "giving up" in said[-1]


def test_descendants_lists_a_process_tree() -> None:
    grandchild = "import time; time.sleep(30)"
    code = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {grandchild!r}]); time.sleep(30)"
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not descendants(parent.pid):
            time.sleep(0.05)
        assert len(descendants(parent.pid)) == 1
        assert parent.pid in descendants(os.getpid())
    finally:
        for pid in [*descendants(parent.pid), parent.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        parent.wait()


def test_the_job_process_is_the_entry_point_with_readable_options(tmp_path: Path) -> None:
    services = [JobSettings(service_dir=tmp_path, model_url="http://m:8080")]
    argv = job_command(services, tmp_path / "chk-3")
    assert argv[:3] == [sys.executable, "-m", "vatic.streaming.main"]
    parsed = parse_job_arguments(argv[3:])
    assert (parsed.services, parsed.resume_from, parsed.local) == (services, tmp_path / "chk-3", True)
