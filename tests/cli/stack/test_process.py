"""ManagedProcess: PID files that never let vatic signal somebody else's process."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from vatic.cli.stack.process import ManagedProcess, port_accepts, port_is_free
from vatic.schemas.errors import StartFailed

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]
# a parent that starts a child in the same process group, then waits: stop() must take both down
PARENT = [
    sys.executable,
    "-c",
    "import subprocess, sys, time; "
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
    "open(sys.argv[1], 'w').write(str(child.pid)); time.sleep(120)",
]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_start_records_pid_and_stop_ends_it(tmp_path):
    proc = ManagedProcess("sleeper", tmp_path)
    pid = proc.start(SLEEPER)
    assert proc.pid() == pid
    recorded = json.loads(proc.pid_file.read_text())
    assert recorded["pid"] == pid
    assert recorded["argv"][-1] == "import time; time.sleep(120)"
    assert proc.stop() is True
    assert not _alive(pid)
    assert not proc.pid_file.exists()
    assert proc.stop() is False


def test_stop_takes_the_whole_process_group(tmp_path):
    child_file = tmp_path / "child.pid"
    proc = ManagedProcess("parent", tmp_path)
    proc.start([*PARENT, str(child_file)])
    for _ in range(100):
        if child_file.exists() and child_file.read_text():
            break
        time.sleep(0.05)
    child = int(child_file.read_text())
    assert _alive(child)
    proc.stop()
    for _ in range(50):
        if not _alive(child):
            break
        time.sleep(0.05)
    assert not _alive(child)


def test_a_reused_pid_is_not_ours_and_is_never_signalled(tmp_path):
    # somebody else's process, with a PID file claiming it for a different command line
    stranger = subprocess.Popen(SLEEPER)
    try:
        proc = ManagedProcess("ghost", tmp_path)
        proc.dir.mkdir(parents=True)
        proc.pid_file.write_text(json.dumps({"pid": stranger.pid, "argv": ["kafka.Kafka", "x"], "started": 0}))
        assert proc.pid() is None
        assert proc.stop() is False
        assert stranger.poll() is None  # still running: not signalled
        assert not proc.pid_file.exists()  # the stale PID file is cleaned up
    finally:
        stranger.kill()
        stranger.wait()


def test_wait_ready_reports_an_early_exit_with_the_log(tmp_path):
    proc = ManagedProcess("crasher", tmp_path)
    proc.start([sys.executable, "-c", "import sys; print('boom: bad config', flush=True); sys.exit(3)"])
    with pytest.raises(StartFailed, match="boom: bad config"):
        proc.wait_ready(lambda: False, timeout_s=10)


def test_wait_ready_times_out_with_a_clear_message(tmp_path):
    proc = ManagedProcess("slow", tmp_path)
    proc.start(SLEEPER)
    try:
        with pytest.raises(StartFailed, match="not ready after"):
            proc.wait_ready(lambda: False, timeout_s=0.5)
    finally:
        proc.stop()


def test_port_probes(tmp_path):
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert not port_is_free("127.0.0.1", port)
        assert port_accepts("127.0.0.1", port)
    assert port_is_free("127.0.0.1", port)
    assert not port_accepts("127.0.0.1", port)
