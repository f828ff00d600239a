"""The no-code tier on a real MLServer: repositories written from service configs, LightGBM and sklearn (skops)
models, served over REST and gRPC, called by vatic's expectations and by tritonclient (a V2 client vatic did not
write). The server runs one inference worker (``parallel_workers: 1``), so errors also cross MLServer's worker
boundary. Expected predictions are the fitted models' own (tests/serving/runtimes/builders.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.serving.runtimes import builders, triton_grpc
from tests.serving.runtimes.conftest import Registry, write_service
from vatic.cli.stack.mlserver import ModelServer
from vatic.schemas.errors import StartFailed

FRAUD = builders.tabular_service("fraud-lgb", "lightgbm", ["predict"], parallel_workers=1)
IRIS = builders.tabular_service("iris-sk", "sklearn", ["predict", "predict_proba"])


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, registry: Registry) -> Path:
    """Two service repositories side by side under one folder (MLServer finds every model-settings.json)."""
    tmp = tmp_path_factory.mktemp("nocode")
    write_service(tmp, registry, FRAUD, tmp / "models" / "fraud")
    write_service(tmp, registry, IRIS, tmp / "models" / "iris")
    return tmp / "models"


@pytest.fixture(scope="module")
def server(repository: Path, start_server) -> ModelServer:
    return start_server(repository, name="mlserver-nocode", parallel_workers=1)


def _infer(server: ModelServer, model: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=60, trust_env=False)


def _rows_body(rows: list[list[float]], datatype: str = "FP32", width: int | None = None) -> dict:
    flat = [v for row in rows for v in row]
    return {
        "inputs": [{"name": "input-0", "datatype": datatype, "shape": [len(rows), width or len(rows[0])], "data": flat}]
    }


# --- what was written ---------------------------------------------------------------------------------------


def test_the_repository_names_vatic_runtimes_the_model_file_and_the_declared_inputs(repository: Path) -> None:
    settings = json.loads((repository / "fraud" / "fraud-lgb" / "model-settings.json").read_text())
    assert settings["implementation"] == "vatic.serving.runtimes.nocode.LightGBMModel"
    assert settings["parameters"]["uri"] == "./model.txt"
    assert settings["parameters"]["version"] == "1"
    assert settings["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 5]}]
    assert settings["parameters"]["extra"]["outputs"] == ["predict"]
    server = json.loads((repository / "fraud" / "settings.json").read_text())
    assert server["parallel_workers"] == 1
    iris = json.loads((repository / "iris" / "iris-sk" / "model-settings.json").read_text())
    assert iris["implementation"] == "vatic.serving.runtimes.nocode.SKLearnModel"
    assert iris["parameters"]["uri"] == "./model.skops"


# --- predictions --------------------------------------------------------------------------------------------


def test_rest_predictions_are_the_models_own(server: ModelServer, registry: Registry) -> None:
    fraud = registry.expected["fraud-lgb"]
    response = _infer(server, "fraud-lgb", _rows_body(fraud["rows"]))
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("predict", "FP64", [16, 1])
    np.testing.assert_allclose(output["data"], fraud["predict"], rtol=1e-6)

    iris = registry.expected["iris-sk"]
    response = _infer(server, "iris-sk", _rows_body(iris["rows"]))
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    # no outputs named in the request: every output the service config reads, not only `predict`
    assert sorted(outputs) == ["predict", "predict_proba"]
    assert outputs["predict"]["data"] == iris["predict"]
    np.testing.assert_allclose(np.reshape(outputs["predict_proba"]["data"], (16, 3)), iris["predict_proba"], rtol=1e-6)


def test_an_empty_batch_is_answered_with_empty_outputs_as_stock_mlserver_does(server: ModelServer) -> None:
    """Shape [0, 5], no data: 200 and outputs of zero rows (the libraries themselves fail on an empty matrix,
    which reached the client as a text/plain 500)."""
    empty = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [0, 5], "data": []}]}
    fraud = _infer(server, "fraud-lgb", empty)
    assert fraud.status_code == 200, fraud.text
    assert [(o["name"], o["datatype"], o["shape"], o["data"]) for o in fraud.json()["outputs"]] == [
        ("predict", "FP64", [0, 1], [])
    ]
    iris = _infer(server, "iris-sk", empty)
    assert iris.status_code == 200, iris.text
    assert [(o["name"], o["shape"]) for o in iris.json()["outputs"]] == [("predict", [0, 1]), ("predict_proba", [0, 3])]
    # an empty batch is checked as any other: the wrong width is still a 400
    narrow = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [0, 4], "data": []}]}
    assert _infer(server, "fraud-lgb", narrow).status_code == 400


def test_a_body_over_the_limit_is_a_413_with_a_json_body_before_the_model_reads_it(server: ModelServer) -> None:
    """MLServer reads any body whole; vatic's model servers refuse one over 16 MiB (declared or streamed)."""
    url = f"{server.url}/v2/models/fraud-lgb/infer"
    big = b'{"inputs": [' + b" " * (17 * 1024 * 1024) + b"]}"
    declared = httpx.post(url, content=big, headers={"content-type": "application/json"}, timeout=60, trust_env=False)
    assert declared.status_code == 413
    assert "VATIC_MODEL_MAX_BODY_BYTES" in declared.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams in
        yield b'{"inputs": ['
        for _ in range(17):
            yield b" " * 1024 * 1024
        yield b"]}"

    streamed = httpx.post(url, content=chunks(), headers={"content-type": "application/json"}, timeout=60,
                          trust_env=False)  # fmt: skip
    assert streamed.status_code == 413
    assert "error" in streamed.json()


def test_a_squeezed_column_of_several_inputs_is_joined_in_declared_order(
    tmp_path: Path, registry: Registry, start_server
) -> None:
    """Several [N] / [N, k] inputs are one feature matrix, in the order the service config lists them."""
    config = builders.tabular_service("iris-split", "sklearn", ["predict_proba"], registry_model="iris-sk")
    config["model"]["inputs"] = [
        {"name": "amount", "datatype": "FP32", "columns": ["amount"], "squeeze": True},
        {"name": "rest", "datatype": "FP64", "columns": builders.FEATURES[1:]},
    ]
    write_service(tmp_path, registry, config, tmp_path / "models")
    server = start_server(tmp_path / "models", name="mlserver-split")
    rows = registry.expected["iris-sk"]["rows"]
    body = {
        "inputs": [
            {"name": "rest", "datatype": "FP64", "shape": [16, 4], "data": [v for r in rows for v in r[1:]]},
            {"name": "amount", "datatype": "FP32", "shape": [16], "data": [r[0] for r in rows]},
        ]
    }
    response = _infer(server, "iris-split", body)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    np.testing.assert_allclose(
        np.reshape(output["data"], (16, 3)), registry.expected["iris-sk"]["predict_proba"], rtol=1e-6
    )


def test_grpc_with_tritonclient(server: ModelServer, registry: Registry) -> None:
    fraud = registry.expected["fraud-lgb"]
    answer = triton_grpc.call(
        {
            "target": server.grpc_target,
            "action": "infer",
            "model": "fraud-lgb",
            "inputs": [{"name": "input-0", "datatype": "FP32", "data": fraud["rows"]}],
        }
    )
    predict = answer["outputs"]["predict"]
    assert (predict["datatype"], predict["shape"]) == ("FP64", [16, 1])
    np.testing.assert_allclose(predict["data"], fraud["predict"], rtol=1e-6)

    iris = registry.expected["iris-sk"]
    answer = triton_grpc.call(
        {
            "target": server.grpc_target,
            "action": "infer",
            "model": "iris-sk",
            "inputs": [{"name": "input-0", "datatype": "FP32", "data": iris["rows"]}],
            "outputs": ["predict_proba"],
        }
    )
    assert list(answer["outputs"]) == ["predict_proba"]
    np.testing.assert_allclose(
        np.reshape(answer["outputs"]["predict_proba"]["data"], (16, 3)), iris["predict_proba"], rtol=1e-6
    )


def test_rest_with_tritonclient(server: ModelServer, registry: Registry) -> None:
    client = httpclient.InferenceServerClient(url=f"{server.settings.host}:{server.http_port}")
    assert client.is_model_ready("iris-sk")
    iris = registry.expected["iris-sk"]
    tensor = httpclient.InferInput("input-0", [16, 5], "FP32")
    tensor.set_data_from_numpy(np.asarray(iris["rows"], dtype=np.float32), binary_data=False)
    result = client.infer("iris-sk", [tensor], outputs=[httpclient.InferRequestedOutput("predict", binary_data=False)])
    assert result.as_numpy("predict").ravel().tolist() == iris["predict"]


# --- metadata -----------------------------------------------------------------------------------------------


def test_metadata_lists_the_declared_inputs_and_the_outputs_the_model_answers(server: ModelServer) -> None:
    meta = httpx.get(f"{server.url}/v2/models/iris-sk", timeout=30, trust_env=False).json()
    assert meta["platform"] == "sklearn"
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [("input-0", "FP32", [-1, 5])]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["outputs"]] == [
        ("predict", "INT64", [-1, 1]),
        ("predict_proba", "FP64", [-1, 3]),
    ]
    grpc_meta = triton_grpc.call({"target": server.grpc_target, "action": "metadata", "model": "fraud-lgb"})["metadata"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in grpc_meta["inputs"]] == [("input-0", "FP32", ["-1", "5"])]
    assert [(t["name"], t["datatype"], t["shape"]) for t in grpc_meta["outputs"]] == [("predict", "FP64", ["-1", "1"])]


# --- bad input ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_rows_body([[0.1] * 4] * 2), "has shape [2, 4]; the model expects input-0 FP32 [N, 5]"),
        (_rows_body([[0.1] * 5] * 2, "FP64"), "has datatype FP64"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 5], "data": [0.0] * 5}]}, "unknown input 'x'"),
        ({"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [2, 5], "data": [0.0] * 9}]}, "has 9 values"),
        (
            {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 5], "data": ["a", 1, 2, 3, 4]}]},
            "holds text",
        ),
    ],
    ids=["width", "datatype", "name", "size", "text"],
)
def test_bad_input_is_a_400_with_a_json_body_through_the_worker(server: ModelServer, body: dict, message: str) -> None:
    for model in ("fraud-lgb", "iris-sk"):
        response = _infer(server, model, body)
        assert response.status_code == 400, response.text
        assert message in response.json()["error"]


def test_a_body_that_is_not_v2_is_a_422_with_a_json_body(server: ModelServer) -> None:
    response = _infer(server, "fraud-lgb", {"inputs": [{"name": "input-0", "datatype": "FP33", "shape": [1]}]})
    assert response.status_code == 422
    assert response.json()["detail"]


def test_an_unknown_output_is_a_400(server: ModelServer, registry: Registry) -> None:
    body = {**_rows_body(registry.expected["iris-sk"]["rows"]), "outputs": [{"name": "decision"}]}
    response = _infer(server, "iris-sk", body)
    assert response.status_code == 400
    assert "decision" in response.json()["error"]


def test_bad_input_over_grpc_is_invalid_argument(server: ModelServer) -> None:
    answer = triton_grpc.call(
        {
            "target": server.grpc_target,
            "action": "infer",
            "model": "fraud-lgb",
            "inputs": [{"name": "input-0", "datatype": "FP32", "data": [[0.0] * 4] * 2}],
        }
    )
    assert answer["error"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "the model expects input-0 FP32 [N, 5]" in answer["error"]["message"]


def test_a_config_whose_columns_do_not_fit_the_model_fails_the_load_with_both_numbers(
    tmp_path: Path, registry: Registry, start_server
) -> None:
    config = builders.tabular_service("fraud-narrow", "lightgbm", ["predict"], registry_model="fraud-lgb")
    config["model"]["inputs"][0]["columns"] = builders.FEATURES[:4]
    write_service(tmp_path, registry, config, tmp_path / "models")
    with pytest.raises(StartFailed) as info:
        start_server(tmp_path / "models", name="mlserver-narrow")
    message = str(info.value)
    assert "\n" not in message
    assert "give 4 feature column(s)" in message
    assert "trained on 5" in message
