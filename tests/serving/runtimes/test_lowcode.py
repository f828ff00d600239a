"""The low-code tier on a real MLServer: ``ProductCategorizer`` (a ``VaticModel``) with small heads written here,
served over REST and gRPC with adaptive batching on, called directly and by tritonclient. Expected answers are
computed in this process with the same encoder and the head's own arithmetic; bad input must be a 400 (gRPC
``INVALID_ARGUMENT``) with a message, never a 500. CPU only here: the CUDA path is the same code with
``device: cuda``, and asking for it without a GPU must fail the load with one clear line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from mlserver.settings import ModelParameters, ModelSettings

from tests.serving.runtimes import builders, triton_grpc
from tests.serving.runtimes.conftest import SEPARATED, Registry, write_service
from vatic.cli.stack.mlserver import ModelServer
from vatic.examples.product_categorization.embedding import embed, text_of
from vatic.examples.product_categorization.runtime import ProductCategorizer, softmax
from vatic.schemas.errors import StartFailed
from vatic.serving.core.contract import SignatureMismatch

PRODUCTS = [
    ["USB-C charging cable", "braided, 2 m"],
    ["Cast iron skillet", ""],
    ["Paperback poetry collection", "first edition"],
    ["Kids building blocks", "500 pieces"],
]
MIX = [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [None, 0.2, 0.1], [0.0, 0.0, 0.0]]


def _body(products: list[list[str]], mix: list[list[float | None]], **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "text",
                "datatype": "BYTES",
                "shape": [len(products), 2],
                "data": [v for p in products for v in p],
            },
            {"name": "seller_mix", "datatype": "FP32", "shape": [len(mix), 3], "data": [v for m in mix for v in m]},
        ],
        **extra,
    }


def expected_scores(encoder: Any, folder: Path, products: list[list[str]], mix: list[list[float | None]]) -> np.ndarray:
    """The head's arithmetic on this process's embeddings: softmax([emb | mix] @ W.T + b)."""
    from safetensors.numpy import load_file

    head = load_file(str(folder / "head.safetensors"))
    emb = np.asarray(embed(encoder, [text_of(*p) for p in products]), dtype=np.float32)
    seller = np.nan_to_num(np.asarray(mix, dtype=np.float32), nan=0.0)
    return softmax(np.concatenate([emb, seller], axis=1) @ head["weight"].T + head["bias"])


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, registry: Registry) -> Path:
    tmp = tmp_path_factory.mktemp("lowcode")
    # the demo service's serving settings: adaptive batching, device auto, predict in the server process
    batched = builders.categorizer_service("categorizer", max_batch_size=32, max_batch_time_ms=5)
    write_service(tmp, registry, batched, tmp / "models" / "categorizer")
    separating = builders.categorizer_service("categorizer-sep", registry_model="categorizer-sep")
    write_service(tmp, registry, separating, tmp / "models" / "categorizer-sep")
    return tmp / "models"


@pytest.fixture(scope="module")
def server(repository: Path, start_server) -> ModelServer:
    return start_server(repository, name="mlserver-lowcode", parallel_workers=0)


def _infer(server: ModelServer, model: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=120, trust_env=False)


def test_the_settings_name_the_runtime_the_device_and_adaptive_batching(repository: Path) -> None:
    settings = json.loads((repository / "categorizer" / "categorizer" / "model-settings.json").read_text())
    assert settings["implementation"] == "vatic.examples.product_categorization.runtime.ProductCategorizer"
    assert settings["parameters"]["uri"] == "."
    assert settings["parameters"]["extra"]["device"] == "auto"
    assert (settings["max_batch_size"], settings["max_batch_time"]) == (32, 0.005)
    assert settings["inputs"] == [
        {"name": "text", "datatype": "BYTES", "shape": [-1, 2]},
        {"name": "seller_mix", "datatype": "FP32", "shape": [-1, 3]},
    ]


def test_metadata_reflects_the_loaded_model(server: ModelServer) -> None:
    meta = httpx.get(f"{server.url}/v2/models/categorizer", timeout=30, trust_env=False).json()
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("text", "BYTES", [-1, 2]),
        ("seller_mix", "FP32", [-1, 3]),
    ]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["outputs"]] == [
        ("category", "BYTES", [-1]),
        ("scores", "FP32", [-1, 3]),
    ]


def test_rest_answers_what_the_head_computes(server: ModelServer, registry: Registry, encoder: Any) -> None:
    response = _infer(server, "categorizer", _body(PRODUCTS, MIX))
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert (outputs["category"]["datatype"], outputs["category"]["shape"]) == ("BYTES", [4])
    assert (outputs["scores"]["datatype"], outputs["scores"]["shape"]) == ("FP32", [4, 3])
    scores = np.reshape(outputs["scores"]["data"], (4, 3))
    want = expected_scores(encoder, registry.root / "categorizer" / "1", PRODUCTS, MIX)
    np.testing.assert_allclose(scores, want, atol=1e-4)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    assert outputs["category"]["data"] == [builders.CATEGORIES[i] for i in want.argmax(axis=1)]


def test_a_head_set_to_separate_texts_separates_them(server: ModelServer) -> None:
    labels = list(SEPARATED)
    products = [list(SEPARATED[label]) for label in reversed(labels)]
    response = _infer(server, "categorizer-sep", _body(products, [[0.0, 0.0, 0.0]] * len(products)))
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
    assert outputs["category"] == list(reversed(labels))
    scores = np.reshape(outputs["scores"], (3, 3))
    assert (scores.max(axis=1) > 0.9).all()


def test_requested_outputs_only(server: ModelServer) -> None:
    response = _infer(server, "categorizer", _body(PRODUCTS[:1], MIX[:1], outputs=[{"name": "category"}]))
    assert [o["name"] for o in response.json()["outputs"]] == ["category"]


def test_concurrent_requests_batched_together_each_get_their_own_rows(
    server: ModelServer, registry: Registry, encoder: Any
) -> None:
    """Adaptive batching merges concurrent requests into one predict_batch; each answer stays its own."""
    want = expected_scores(encoder, registry.root / "categorizer" / "1", PRODUCTS, MIX)

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120, trust_env=False) as client:
            calls = [
                client.post("/v2/models/categorizer/infer", json=_body([PRODUCTS[i % 4]], [MIX[i % 4]]))
                for i in range(16)
            ]
            return await asyncio.gather(*calls)

    for i, response in enumerate(asyncio.run(main())):
        assert response.status_code == 200, response.text
        scores = {o["name"]: o["data"] for o in response.json()["outputs"]}["scores"]
        np.testing.assert_allclose(scores, want[i % 4], atol=1e-4)


def test_grpc_with_tritonclient(server: ModelServer, registry: Registry, encoder: Any) -> None:
    inputs = [
        {"name": "text", "datatype": "BYTES", "data": PRODUCTS},
        {
            "name": "seller_mix",
            "datatype": "FP32",
            "data": [[float("nan") if v is None else v for v in m] for m in MIX],
        },
    ]
    answer = triton_grpc.call(
        {"target": server.grpc_target, "action": "infer", "model": "categorizer", "inputs": inputs}
    )
    want = expected_scores(encoder, registry.root / "categorizer" / "1", PRODUCTS, MIX)
    outputs = answer["outputs"]
    assert (outputs["scores"]["datatype"], outputs["scores"]["shape"]) == ("FP32", [4, 3])
    np.testing.assert_allclose(np.reshape(outputs["scores"]["data"], (4, 3)), want, atol=1e-4)
    assert outputs["category"]["data"] == [builders.CATEGORIES[i] for i in want.argmax(axis=1)]
    metadata = triton_grpc.call({"target": server.grpc_target, "action": "metadata", "model": "categorizer"})[
        "metadata"
    ]
    assert [(t["name"], t["datatype"]) for t in metadata["outputs"]] == [("category", "BYTES"), ("scores", "FP32")]


def test_rest_with_tritonclient(server: ModelServer) -> None:
    client = httpclient.InferenceServerClient(url=f"{server.settings.host}:{server.http_port}")
    labels = list(SEPARATED)
    text = httpclient.InferInput("text", [3, 2], "BYTES")
    text.set_data_from_numpy(np.asarray([SEPARATED[label] for label in labels], dtype=object), binary_data=False)
    mix = httpclient.InferInput("seller_mix", [3, 3], "FP32")
    mix.set_data_from_numpy(np.zeros((3, 3), dtype=np.float32), binary_data=False)
    wanted = [httpclient.InferRequestedOutput(name, binary_data=False) for name in ("category", "scores")]
    result = client.infer("categorizer-sep", [text, mix], outputs=wanted)
    assert [str(c) for c in result.as_numpy("category").tolist()] == labels
    assert result.as_numpy("scores").shape == (3, 3)


# --- bad input ----------------------------------------------------------------------------------------------


def _replace(body: dict[str, Any], index: int, **changes: Any) -> dict[str, Any]:
    inputs = [dict(tensor) for tensor in body["inputs"]]
    inputs[index].update(changes)
    return {**body, "inputs": inputs}


GOOD = _body(PRODUCTS[:2], MIX[:2])
BAD = {
    "mix-width": (_replace(GOOD, 1, shape=[2, 4], data=[0.0] * 8), "has shape [2, 4]; the model expects seller_mix"),
    "mix-datatype": (_replace(GOOD, 1, datatype="FP64"), "has datatype FP64"),
    "text-width": (_replace(GOOD, 0, shape=[4, 1]), "has shape [4, 1]; the model expects text BYTES [N, 2]"),
    "text-number": (_replace(GOOD, 0, data=["a", "b", 3, "d"]), "element 2 is int 3, not a string"),
    "mix-text": (_replace(GOOD, 1, data=["x", 0, 0, 0, 0, 0]), "holds text"),
    "missing": ({"inputs": GOOD["inputs"][:1]}, "missing input(s) 'seller_mix'"),
    "unknown": (_replace(GOOD, 1, name="seller_mix_v2"), "unknown input 'seller_mix_v2'"),
    "twice": ({"inputs": [GOOD["inputs"][0], *GOOD["inputs"]]}, "is given twice"),
    "batch": (_replace(GOOD, 1, shape=[1, 3], data=[0.0] * 3), "disagree on the batch size"),
    "size": (_replace(GOOD, 0, data=["a", "b", "c"]), "has 3 values but shape [2, 2] holds 4"),
    "output": ({**GOOD, "outputs": [{"name": "embedding"}]}, "unknown output(s) 'embedding'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_400_naming_the_problem(server: ModelServer, case: str) -> None:
    body, message = BAD[case]
    response = _infer(server, "categorizer-sep", body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error.startswith("model categorizer-sep: ")
    assert message in error


def test_a_body_that_is_not_v2_is_a_422_with_a_json_body(server: ModelServer) -> None:
    response = _infer(server, "categorizer-sep", _replace(GOOD, 0, shape="2x2"))
    assert response.status_code == 422
    assert response.json()["detail"]


def test_bad_input_over_grpc_is_invalid_argument(server: ModelServer) -> None:
    inputs = [
        {"name": "text", "datatype": "BYTES", "data": [["a", "b"]]},
        {"name": "seller_mix", "datatype": "FP64", "data": [[0.0, 0.0, 0.0]]},
    ]
    answer = triton_grpc.call(
        {"target": server.grpc_target, "action": "infer", "model": "categorizer-sep", "inputs": inputs}
    )
    assert answer["error"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "has datatype FP64" in answer["error"]["message"]


def test_the_server_still_answers_after_bad_input(server: ModelServer) -> None:
    assert _infer(server, "categorizer-sep", GOOD).status_code == 200


# --- load errors --------------------------------------------------------------------------------------------


def test_device_cuda_without_a_gpu_fails_the_load_in_one_line(tmp_path: Path, registry: Registry, start_server) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here: device cuda is valid")
    config = builders.categorizer_service("categorizer-gpu", registry_model="categorizer-sep", device="cuda")
    write_service(tmp_path, registry, config, tmp_path / "models")
    with pytest.raises(StartFailed) as info:
        start_server(tmp_path / "models", name="mlserver-gpu")
    message = str(info.value)
    assert "\n" not in message
    assert "DeviceUnavailable: device 'cuda' was asked for but no GPU is visible" in message


def test_a_config_that_contradicts_the_artifact_fails_the_load(registry: Registry) -> None:
    """seller_mix declared with 2 columns, model.json lists 3: the load names both (no server needed)."""
    settings = ModelSettings(
        name="categorizer",
        implementation=ProductCategorizer,
        inputs=[
            {"name": "text", "datatype": "BYTES", "shape": [-1, 2]},
            {"name": "seller_mix", "datatype": "FP32", "shape": [-1, 2]},
        ],
        parameters=ModelParameters(uri=str(registry.root / "categorizer-sep" / "1"), extra={"device": "cpu"}),
    )
    model = ProductCategorizer(settings)
    with pytest.raises(
        SignatureMismatch, match=r"declares input seller_mix FP32 \[N, 2\].*takes seller_mix FP32 \[N, 3\]"
    ):
        asyncio.run(model.load())


def test_the_cpu_path_standalone(registry: Registry, encoder: Any) -> None:
    """The runtime without MLServer: device auto resolves to cpu here; same arithmetic as on the server."""
    model = ProductCategorizer()
    model.load_artifacts(registry.root / "categorizer" / "1")
    assert model.device == "cpu"
    inputs = {"text": np.asarray(PRODUCTS, dtype=object), "seller_mix": np.asarray(MIX, dtype=np.float32)}
    scores = model.predict_batch(inputs)["scores"]
    np.testing.assert_allclose(
        scores, expected_scores(encoder, registry.root / "categorizer" / "1", PRODUCTS, MIX), atol=1e-4
    )


def test_the_embedder_then_the_head_answer_what_the_combined_model_answers(registry: Registry) -> None:
    """The inference graph's two halves (same artifact): embedding [N, 384] from the text, then the head over
    [embedding | seller mix]; the same scores and categories as ProductCategorizer, and each half declares only
    its own tensors."""
    from vatic.examples.product_categorization.runtime import EMBEDDING, CategoryHead, ProductEmbedder

    folder = registry.root / "categorizer" / "1"
    combined, embedder, head = ProductCategorizer(), ProductEmbedder(), CategoryHead()
    for model in (combined, embedder, head):
        model.load_artifacts(folder)
    assert not hasattr(head, "encoder")  # the head loads no encoder
    text = np.asarray(PRODUCTS, dtype=object)
    mix = np.asarray(MIX, dtype=np.float32)
    embedded = embedder.predict_batch({"text": text})[EMBEDDING]
    assert embedded.shape == (len(PRODUCTS), 384)
    assert embedded.dtype == np.float32
    halves = head.predict_batch({EMBEDDING: embedded, "seller_mix": mix})
    whole = combined.predict_batch({"text": text, "seller_mix": mix})
    np.testing.assert_allclose(halves["scores"], whole["scores"], atol=1e-6)
    assert list(halves["category"]) == list(whole["category"])
    assert [t.name for t in embedder.signature().inputs] == ["text"]
    assert [t.name for t in head.signature().inputs] == [EMBEDDING, "seller_mix"]
    assert [t.name for t in embedder.signature().outputs] == [EMBEDDING]
