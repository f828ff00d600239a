"""The gateway's V2 door against tritonclient, a V2 client vatic did not write, with its defaults.

tritonclient.http sends inputs in the binary tensor data extension and asks for binary outputs unless told
otherwise; the model server behind the gateway (MLServer) reads JSON only: the gateway translates both ways.
Runs in the model-server environment (where tritonclient is installed); the gateway itself is the pipeline
environment's ``vatic gateway`` process, in front of a real MLServer.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml
from tritonclient.utils import InferenceServerException

from tests.fixtures.model_server import ModelRepo, build_model_repo, free_port, model_server
from vatic.cli.stack.mlserver import ModelServer

ROOT = Path(__file__).resolve().parents[3]
GATEWAY = ROOT / ".venv" / "pipeline" / "bin" / "vatic"


def _service(folder: Path, name: str, model: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "service.yaml").write_text(yaml.safe_dump({"project": "test", "service": name, "model": model}))
    return folder


@pytest.fixture(scope="module")
def gateway(doors: Doors) -> str:
    return doors.http


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> ModelRepo:
    return build_model_repo(tmp_path_factory.mktemp("models") / "repo")


@pytest.fixture(scope="module")
def server(models: ModelRepo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    srv = model_server(tmp_path_factory.mktemp("home"), models.root, name="triton-mlserver", parallel_workers=0)
    srv.start()
    yield srv
    srv.stop()


@dataclass(frozen=True)
class Doors:
    http: str
    grpc: str


@pytest.fixture(scope="module")
def doors(server: ModelServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Doors]:
    root = tmp_path_factory.mktemp("gateway")
    iris = _service(root / "iris", "iris", {
        "name": "iris",
        "inputs": [{"name": "input-0", "datatype": "FP64", "columns": ["sl", "sw", "pl", "pw"]}],
        "outputs": [{"name": "predict", "rename": "species"}],
    })  # fmt: skip
    echo = _service(root / "echo", "echo", {
        "name": "faulty",
        "inputs": [{"name": "tag", "datatype": "BYTES", "columns": ["tag"], "squeeze": True}],
        "outputs": [{"name": "tag"}],
    })  # fmt: skip
    port, grpc_port = free_port(), free_port()
    argv = [str(GATEWAY), "gateway", "--port", str(port), "--grpc-port", str(grpc_port), "--service", str(iris),
            "--service", str(echo), "--endpoint", f"iris={server.url}", "--endpoint", f"echo={server.url}"]  # fmt: skip
    log = root / "gateway.log"
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    url = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"http://{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway not ready: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield Doors(url, f"127.0.0.1:{grpc_port}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_tritonclient_http_with_its_defaults_gets_the_models_answer(gateway: str, models: ModelRepo) -> None:
    client = httpclient.InferenceServerClient(url=gateway)
    assert client.is_server_live()
    assert client.is_model_ready("iris")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    assert client.get_model_metadata("iris")["name"] == "iris"

    rows = np.asarray(models.expected["rows"], dtype=np.float64)
    tensor = httpclient.InferInput("input-0", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows)  # binary_data=True: the binary extension
    result = client.infer("iris", [tensor])  # no outputs named: every output in binary
    np.testing.assert_array_equal(result.as_numpy("predict").ravel(), models.expected["iris"]["predict"])

    # one output asked in JSON, by name
    result = client.infer("iris", [tensor], outputs=[httpclient.InferRequestedOutput("predict", binary_data=False)])
    np.testing.assert_array_equal(result.as_numpy("predict").ravel(), models.expected["iris"]["predict"])


def test_bytes_travel_both_ways_in_binary(gateway: str) -> None:
    client = httpclient.InferenceServerClient(url=gateway)
    tags = np.asarray([b"alpha", "b\u00e9ta".encode(), b""], dtype=np.object_)
    tensor = httpclient.InferInput("tag", [3], "BYTES")
    tensor.set_data_from_numpy(tags)
    result = client.infer("faulty", [tensor])
    assert [bytes(t) for t in result.as_numpy("tag")] == list(tags)


def test_a_model_refusal_reaches_tritonclient_as_its_error(gateway: str) -> None:
    client = httpclient.InferenceServerClient(url=gateway)
    wrong = httpclient.InferInput("input-0", [1, 3], "FP64")  # iris declares 4 columns
    wrong.set_data_from_numpy(np.zeros((1, 3)))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("iris", [wrong])
    assert caught.value.status() == "400"
    assert "input-0" in caught.value.message()


def test_tritonclient_grpc_with_its_defaults_gets_the_models_answer(doors: Doors, models: ModelRepo) -> None:
    client = grpcclient.InferenceServerClient(url=doors.grpc)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris")
    assert "binary_tensor_data" in client.get_server_metadata().extensions
    metadata = client.get_model_metadata("iris")
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [("input-0", "FP64", [-1, 4])]

    rows = np.asarray(models.expected["rows"], dtype=np.float64)
    tensor = grpcclient.InferInput("input-0", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows)  # raw_input_contents, as tritonclient.grpc sends it
    result = client.infer("iris", [tensor])
    np.testing.assert_array_equal(result.as_numpy("predict").ravel(), models.expected["iris"]["predict"])

    tags = np.asarray([b"alpha", b"", "\u00e9".encode()], dtype=np.object_)
    text = grpcclient.InferInput("tag", [3], "BYTES")
    text.set_data_from_numpy(tags)
    assert [bytes(t) for t in client.infer("faulty", [text]).as_numpy("tag")] == list(tags)


def test_a_refusal_over_grpc_is_invalid_argument_naming_the_input(doors: Doors) -> None:
    client = grpcclient.InferenceServerClient(url=doors.grpc)
    wrong = grpcclient.InferInput("input-0", [1, 3], "FP64")
    wrong.set_data_from_numpy(np.zeros((1, 3)))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("iris", [wrong])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "input-0" in caught.value.message()
    with pytest.raises(InferenceServerException) as missing:
        client.get_model_metadata("no-such-model")
    assert missing.value.status() == "StatusCode.NOT_FOUND"
