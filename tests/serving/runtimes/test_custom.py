"""The full-custom tier: the FastAPI V2 app served by a real uvicorn on a free port, called over HTTP by httpx and
by tritonclient.http. It serves ``ProductCategorizer`` unchanged (no MLServer process), from a folder the
settings writer prepared for a ``layer: fastapi`` service, next to small predictors of the test's own."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
import uvicorn
from fastapi import APIRouter

from tests.fixtures.model_server import free_port
from tests.serving.runtimes import builders
from tests.serving.runtimes.conftest import SEPARATED, Registry, write_service
from vatic.examples.product_categorization.runtime import ProductCategorizer
from vatic.serving.core.contract import BadInput, Signature, TensorDecl
from vatic.serving.runtimes.custom import ModelFailed, ServedModel, create_app


class Scaler:
    """A light predictor: y = 2x per row; refuses negative totals (BadInput), crashes on 13 (a model bug)."""

    offload = False

    def load_artifacts(self, path: Path) -> None:
        self.factor = 2.0

    def signature(self) -> Signature:
        return Signature((TensorDecl("x", "FP32", (-1, 2)),), (TensorDecl("y", "FP32", (-1, 2)),))

    def predict_batch(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        if (x == 13).any():
            raise RuntimeError("unlucky number")
        if (x.sum(axis=1) < 0).any():
            raise BadInput("x must not sum to a negative number")
        return {"y": x * self.factor}


class Broken:
    def load_artifacts(self, path: Path) -> None:
        raise FileNotFoundError(f"{path}/weights.bin")

    def predict_batch(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {}


class UvicornThread:
    """A real uvicorn server in a thread of this process (its lifespan loads the models before serving)."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> UvicornThread:
        self.thread.start()
        deadline = time.monotonic() + 180
        while not self.server.started:
            assert self.thread.is_alive(), "uvicorn stopped during start-up"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def categorizer_folder(tmp_path_factory: pytest.TempPathFactory, registry: Registry) -> Path:
    """The folder the settings writer prepares for a full-custom service (artifacts + vatic-model.json)."""
    tmp = tmp_path_factory.mktemp("custom")
    config = builders.categorizer_service("categorizer", registry_model="categorizer-sep", device="cpu")
    config["serving"] = {
        "layer": "fastapi",
        "tier": "full-custom",
        "library": "torch",
        "entrypoint": "app:app",
        "device": "cpu",
    }
    written = write_service(tmp, registry, config, tmp / "models")
    assert written.server == {}  # no MLServer settings for a FastAPI server
    return written.models[0].folder


@pytest.fixture(scope="module")
def served(categorizer_folder: Path) -> Iterator[UvicornThread]:
    extra = APIRouter()

    @extra.get("/labels")
    async def labels() -> list[str]:
        return list(SEPARATED)

    app = create_app(
        [
            ServedModel.from_folder(categorizer_folder, ProductCategorizer()),
            ServedModel("scaler", Scaler(), Path("."), version="7", platform="numpy"),
        ],
        title="vatic test server",
        routers=[extra],
    )
    with UvicornThread(app) as server:
        yield server


def _get(server: UvicornThread, path: str) -> httpx.Response:
    return httpx.get(server.url + path, timeout=30, trust_env=False)


def _post(server: UvicornThread, path: str, body: Any) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=60, trust_env=False)


def test_the_writer_describes_the_model_for_the_app(categorizer_folder: Path) -> None:
    assert (categorizer_folder / "vatic-model.json").is_file()
    assert not (categorizer_folder / "model-settings.json").exists()
    model = ServedModel.from_folder(categorizer_folder, Scaler())
    assert (model.name, model.device, model.path) == ("categorizer", "cpu", categorizer_folder.resolve())
    assert list(model.wanted_outputs) == ["category", "scores"]


def test_health_and_server_metadata(served: UvicornThread) -> None:
    assert _get(served, "/v2/health/live").status_code == 200
    assert _get(served, "/v2/health/ready").status_code == 200
    assert _get(served, "/v2").json() == {"name": "vatic test server", "version": "0.1.0", "extensions": []}
    assert _get(served, "/v2/models/scaler/ready").status_code == 200
    assert _get(served, "/v2/models/scaler/versions/7/ready").status_code == 200


def test_model_metadata_is_the_loaded_signature(served: UvicornThread) -> None:
    meta = _get(served, "/v2/models/categorizer").json()
    assert meta["name"] == "categorizer"
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("text", "BYTES", [-1, 2]),
        ("seller_mix", "FP32", [-1, 3]),
    ]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["outputs"]] == [
        ("category", "BYTES", [-1]),
        ("scores", "FP32", [-1, 3]),
    ]
    scaler = _get(served, "/v2/models/scaler/versions/7").json()
    assert (scaler["platform"], scaler["inputs"][0]["shape"]) == ("numpy", [-1, 2])


def test_unknown_models_and_versions_are_404_with_a_json_body(served: UvicornThread) -> None:
    response = _get(served, "/v2/models/nope")
    assert (response.status_code, response.json()) == (404, {"error": "Model nope not found"})
    response = _post(served, "/v2/models/scaler/versions/8/infer", {"inputs": []})
    assert response.status_code in (404, 422)
    response = _post(
        served,
        "/v2/models/scaler/versions/8/infer",
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]},
    )
    assert (response.status_code, response.json()) == (404, {"error": "Model scaler with version 8 not found"})
    assert _get(served, "/v2/models/nope/ready").status_code == 404


def test_the_categorizer_separates_texts_over_http(served: UvicornThread) -> None:
    labels = list(SEPARATED)
    body = {
        "id": "req-1",
        "inputs": [
            {
                "name": "text",
                "datatype": "BYTES",
                "shape": [3, 2],
                "data": [v for label in labels for v in SEPARATED[label]],
            },
            {"name": "seller_mix", "datatype": "FP32", "shape": [3, 3], "data": [0.0, None, 0.0] * 3},
        ],
    }
    response = _post(served, "/v2/models/categorizer/infer", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["model_name"], answer["id"]) == ("categorizer", "req-1")
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["category"]["data"] == labels
    assert (outputs["scores"]["datatype"], outputs["scores"]["shape"]) == ("FP32", [3, 3])


def test_tritonclient_http_against_the_app(served: UvicornThread) -> None:
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{served.port}")
    assert client.is_server_live()
    assert client.is_model_ready("scaler")
    x = httpclient.InferInput("x", [2, 2], "FP32")
    x.set_data_from_numpy(np.asarray([[1.0, 2.0], [3.0, 4.5]], dtype=np.float32), binary_data=False)
    result = client.infer("scaler", [x], outputs=[httpclient.InferRequestedOutput("y", binary_data=False)])
    np.testing.assert_allclose(result.as_numpy("y"), [[2.0, 4.0], [6.0, 9.0]])
    metadata = client.get_model_metadata("categorizer")
    assert [t["name"] for t in metadata["inputs"]] == ["text", "seller_mix"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 2], "data": [1, 2]}]}, 400, "has datatype FP64"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}, 400, "has shape [1, 3]"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [-5, 1]}]}, 400, "negative"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [13, 1]}]}, 500, "unlucky number"),
    ],
    ids=["datatype", "shape", "refused-by-the-model", "model-bug"],
)
def test_errors_have_a_json_body(served: UvicornThread, body: dict[str, Any], status: int, message: str) -> None:
    response = _post(served, "/v2/models/scaler/infer", body)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_a_body_that_is_not_v2_is_a_422_with_details(served: UvicornThread) -> None:
    response = _post(served, "/v2/models/scaler/infer", {"inputs": [{"name": "x", "datatype": "FP33", "shape": [1]}]})
    assert response.status_code == 422
    assert response.json()["detail"]
    response = httpx.post(
        served.url + "/v2/models/scaler/infer", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


def test_swagger_openapi_and_extra_routes(served: UvicornThread) -> None:
    docs = _get(served, "/docs")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text
    spec = _get(served, "/openapi.json").json()
    assert {"/v2/models/{name}/infer", "/v2/models/{name}/versions/{model_version}/infer", "/v2/health/ready"} <= set(
        spec["paths"]
    )
    assert {"InferenceRequest", "InferenceResponse", "ErrorResponse"} <= set(spec["components"]["schemas"])
    assert _get(served, "/labels").json() == list(SEPARATED)


def test_a_model_that_cannot_load_fails_the_start_up() -> None:
    app = create_app([ServedModel("broken", Broken(), Path("/nowhere"))])

    async def start() -> None:
        async with app.router.lifespan_context(app):
            pass

    with pytest.raises(ModelFailed, match=r"model broken failed to load: FileNotFoundError: /nowhere/weights.bin"):
        asyncio.run(start())
