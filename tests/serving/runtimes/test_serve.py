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


def _echo_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "echo").mkdir(parents=True)
    shutil.copy2(ROOT / "bench" / "models" / "echo_runtime.py", repo / "echo" / "echo_runtime.py")
    (repo / "echo" / "model-settings.json").write_text(
        json.dumps({"name": "echo", "implementation": "echo_runtime.EchoModel"})
    )
    return repo


def _serve(repo: Path, tmp_path: Path, **extra: str) -> tuple[subprocess.Popen[bytes], int, int]:
    """``python -m vatic.serving.runtimes.serve start repo`` on free loopback ports with ``extra`` environment;
    returns the process and its REST and gRPC ports."""
    http, grpc, metrics = free_port(), free_port(), free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "MLSERVER_HOST": "127.0.0.1",
        "MLSERVER_HTTP_PORT": str(http),
        "MLSERVER_GRPC_PORT": str(grpc),
        "MLSERVER_METRICS_PORT": str(metrics),
        "MLSERVER_PARALLEL_WORKERS": "0",
        **extra,
    }
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vatic.serving.runtimes.serve", "start", str(repo)], env=env, stdout=log, stderr=log
    )
    return proc, http, grpc


def _wait_ready(proc: subprocess.Popen[bytes], url: str, tmp_path: Path, verify: str | bool = True) -> None:
    """Wait (90 s at most) until ``url`` answers 200; the server log is the message if it exits or never does."""
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
        try:
            if httpx.get(url, timeout=1, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-2000:]
        time.sleep(0.3)


def test_the_environment_moves_the_ports_a_settings_json_names(tmp_path: Path) -> None:
    repo = _echo_repo(tmp_path)
    taken = free_port()  # what the file says: nothing may listen there
    (repo / "settings.json").write_text(
        json.dumps({"host": "0.0.0.0", "http_port": taken, "grpc_port": taken, "metrics_port": taken})
    )
    proc, http, _ = _serve(repo, tmp_path)
    try:
        _wait_ready(proc, f"http://127.0.0.1:{http}/v2/models/echo/ready", tmp_path)
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


def test_with_a_certificate_rest_and_grpc_serve_tls_only(tmp_path: Path) -> None:
    """MLServer itself has no TLS setting; the launcher gives both of its ports TLS. The outside parties: httpx
    trusting the CA, and a grpc channel with the CA as root certificates calling MLServer's own V2 stubs
    (tritonclient's gRPC client cannot share a process with MLServer: both register the ``inference`` protos)."""
    import grpc as grpclib
    from mlserver.grpc import dataplane_pb2, dataplane_pb2_grpc

    from tests.fixtures.pki import CA

    ca = CA(tmp_path / "pki")
    pair = ca.issue("model-server", server=True)
    repo = _echo_repo(tmp_path)
    proc, http, grpc = _serve(
        repo, tmp_path, VATIC_MODEL_TLS_CERT_FILE=str(pair.cert), VATIC_MODEL_TLS_KEY_FILE=str(pair.key)
    )
    base = f"https://localhost:{http}"
    try:
        _wait_ready(proc, f"{base}/v2/models/echo/ready", tmp_path, verify=str(ca.cert_file))
        body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [2.5]}]}
        answer = httpx.post(f"{base}/v2/models/echo/infer", json=body, timeout=10, verify=str(ca.cert_file))
        assert answer.json()["outputs"][0]["data"] == [2.5]
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port
            httpx.get(f"http://127.0.0.1:{http}/v2/health/live", timeout=2)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):  # a client without the CA
            httpx.get(f"{base}/v2/health/live", timeout=2)
        credentials = grpclib.ssl_channel_credentials(root_certificates=ca.cert_file.read_bytes())
        with grpclib.secure_channel(f"localhost:{grpc}", credentials) as channel:
            stub = dataplane_pb2_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerLive(dataplane_pb2.ServerLiveRequest(), timeout=10).live
            assert stub.ModelReady(dataplane_pb2.ModelReadyRequest(name="echo"), timeout=10).ready
        with grpclib.insecure_channel(f"localhost:{grpc}") as channel, pytest.raises(grpclib.RpcError):
            dataplane_pb2_grpc.GRPCInferenceServiceStub(channel).ServerLive(
                dataplane_pb2.ServerLiveRequest(), timeout=5
            )
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_certificate_without_its_key_is_one_line_and_exit_1(tmp_path: Path) -> None:
    from tests.fixtures.pki import CA

    pair = CA(tmp_path / "pki").issue("model-server", server=True)
    done = subprocess.run(
        [sys.executable, "-m", "vatic.serving.runtimes.serve", "start", str(tmp_path)],
        env={"PATH": "/usr/bin:/bin", "VATIC_MODEL_TLS_CERT_FILE": str(pair.cert)},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "vatic: TLS needs both VATIC_MODEL_TLS_CERT_FILE and VATIC_MODEL_TLS_KEY_FILE (one is set)"
    )
