"""vatic's model-server launcher: ``mlserver start`` whose listening address the environment can move.

Runs in the model-server environment: a real MLServer started with ``python -m vatic.serving.runtimes.serve``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.model_server import free_port
from vatic.serving.runtimes.serve import environment_overrides

ROOT = Path(__file__).resolve().parents[3]


def test_only_the_variables_set_are_overrides_and_a_bad_port_is_named() -> None:
    assert environment_overrides({}) == {}
    assert environment_overrides({"MLSERVER_HTTP_PORT": "9100", "MLSERVER_HOST": "127.0.0.1", "OTHER": "1"}) == {
        "http_port": 9100,
        "host": "127.0.0.1",
    }
    with pytest.raises(ValueError, match=r"MLSERVER_GRPC_PORT='eighty' is not a port number"):
        environment_overrides({"MLSERVER_GRPC_PORT": "eighty"})


def test_the_environment_moves_the_ports_a_settings_json_names(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "echo").mkdir(parents=True)
    shutil.copy2(ROOT / "bench" / "models" / "echo_runtime.py", repo / "echo" / "echo_runtime.py")
    (repo / "echo" / "model-settings.json").write_text(
        json.dumps({"name": "echo", "implementation": "echo_runtime.EchoModel"})
    )
    taken = free_port()  # what the file says: nothing may listen there
    (repo / "settings.json").write_text(
        json.dumps({"host": "0.0.0.0", "http_port": taken, "grpc_port": taken, "metrics_port": taken})
    )
    http, grpc, metrics = free_port(), free_port(), free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "MLSERVER_HOST": "127.0.0.1",
        "MLSERVER_HTTP_PORT": str(http),
        "MLSERVER_GRPC_PORT": str(grpc),
        "MLSERVER_METRICS_PORT": str(metrics),
        "MLSERVER_PARALLEL_WORKERS": "0",
    }
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vatic.serving.runtimes.serve", "start", str(repo)], env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            try:
                if httpx.get(f"http://127.0.0.1:{http}/v2/models/echo/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-2000:]
            time.sleep(0.3)
        body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.5]}]}
        answer = httpx.post(f"http://127.0.0.1:{http}/v2/models/echo/infer", json=body, timeout=10).json()
        assert answer["outputs"][0]["data"] == [1.5]
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{taken}/v2/health/live", timeout=1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_port_that_is_no_number_is_one_line_and_exit_1(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vatic.serving.runtimes.serve", "start", str(tmp_path)],
        env={"PATH": "/usr/bin:/bin", "MLSERVER_HTTP_PORT": "eighty"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == "vatic: MLSERVER_HTTP_PORT='eighty' is not a port number"
