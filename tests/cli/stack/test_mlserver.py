"""The MLServer launcher: real ``mlserver start`` processes from .venv/server, side by side on free ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.model_server import add_faulty_model, free_port, model_server
from vatic.cli.stack.mlserver import ModelServer
from vatic.cli.stack.process import port_is_free
from vatic.schemas.errors import ConfigError, PortInUse, StartFailed


def _alive(pids: list[int], leader: int) -> list[int]:
    """Those of ``pids`` that still run in the session ``leader`` created (zombies count as gone)."""
    left = []
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == leader:
            left.append(pid)
    return left


def _echo(srv: ModelServer) -> object:
    body = {"inputs": [{"name": "t", "datatype": "BYTES", "shape": [1], "data": ["hello"]}]}
    response = httpx.post(f"{srv.url}/v2/models/faulty/infer", json=body, timeout=30, trust_env=False)
    response.raise_for_status()
    return response.json()["outputs"][0]["data"]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    add_faulty_model(root, "faulty")
    return root


def test_two_servers_side_by_side_start_serve_and_stop_without_leaving_a_process(tmp_path: Path, repo: Path) -> None:
    a = model_server(tmp_path / "home", repo, name="mlserver-a", parallel_workers=2)
    b = model_server(tmp_path / "home", repo, name="mlserver-b", parallel_workers=0)
    try:
        assert a.start() is True
        assert b.start() is True
        assert a.start() is False  # already running: nothing new is started
        assert a.ready()
        health = a.health()
        assert (health.state, health.port, health.pid) == ("up", a.http_port, a.process.pid())
        assert _echo(a) == ["hello"]
        assert _echo(b) == ["hello"]

        a_pids, b_pids = a.session_pids(), b.session_pids()
        assert len(a_pids) >= 3  # the server and its two inference workers (and multiprocessing's helper)
        assert a_pids[0] == a.process.pid()

        settings = json.loads((a.serve_dir / "settings.json").read_text())
        assert (settings["host"], settings["http_port"], settings["grpc_port"], settings["metrics_port"]) == (
            "127.0.0.1",
            a.http_port,
            a.grpc_port,
            a.metrics_port,
        )
        assert settings["parallel_workers"] == 2
        assert (a.serve_dir / "models").resolve() == repo.resolve()
        assert not (repo / "settings.json").exists()  # the model repository is never written to
    finally:
        stopped = [a.stop(), b.stop()]
    assert stopped == [True, True]
    assert _alive(a_pids, a_pids[0]) == []
    assert _alive(b_pids, b_pids[0]) == []
    assert a.health().state == "down"
    assert all(port_is_free("127.0.0.1", port) for port in a.ports + b.ports)
    assert a.stop() is False


def test_workers_of_a_killed_server_do_not_outlive_it(tmp_path: Path, repo: Path) -> None:
    srv = model_server(tmp_path / "home", repo, name="mlserver-killed", parallel_workers=2)
    srv.start()
    pids = srv.session_pids()
    leader = pids[0]
    try:
        srv.process.send_signal(signal.SIGKILL)  # the main process dies without shutting its workers down
        deadline = time.monotonic() + 30
        while srv.process.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.process.pid() is None
    finally:
        srv.stop()
    assert _alive(pids, leader) == []


def test_a_taken_port_is_one_line(tmp_path: Path, repo: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", free_port()))
        holder.listen()
        port = holder.getsockname()[1]
        srv = model_server(tmp_path / "home", repo, name="mlserver-port")
        srv.http_port = port
        with pytest.raises(PortInUse) as info:
            srv.start()
    message = str(info.value)
    assert "\n" not in message
    assert f"http port {port}" in message
    assert srv.process.pid() is None
    assert not srv.process.pid_file.exists()


def test_a_missing_server_environment_is_one_line(tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VATIC_STACK_MLSERVER", str(tmp_path / "nowhere" / "mlserver"))
    srv = model_server(tmp_path / "home", repo, name="mlserver-missing")
    with pytest.raises(ConfigError) as info:
        srv.start()
    message = str(info.value)
    assert "\n" not in message
    assert "make setup" in message
    assert "VATIC_STACK_MLSERVER" in message
    assert srv.process.pid() is None


def test_a_model_that_cannot_load_fails_the_start_and_leaves_nothing(tmp_path: Path, repo: Path) -> None:
    broken = repo / "broken"
    broken.mkdir()
    (broken / "model-settings.json").write_text(
        json.dumps({"name": "broken", "implementation": "mlserver_sklearn.SKLearnModel",
                    "parameters": {"uri": "./missing.joblib"}})
    )  # fmt: skip
    srv = model_server(tmp_path / "home", repo, name="mlserver-broken", parallel_workers=1)
    try:
        with pytest.raises(StartFailed) as info:
            srv.start()
    finally:
        srv.stop()
    message = str(info.value)
    assert "\n" not in message
    assert "InvalidModelURI: Invalid URI specified for model broken" in message
    assert srv.process.pid() is None
    assert all(port_is_free("127.0.0.1", port) for port in srv.ports)
    assert not [
        pid for pid in os.listdir("/proc") if pid.isdigit() and str(srv.serve_dir).encode() in _cmdline(int(pid))
    ]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
