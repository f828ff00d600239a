"""The REST gateway as a real process (`vatic gateway`) in front of a real MLServer and a real Feast repo.

Every error code the gateway promises is produced here by a request that provokes it.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.fixtures import feast_repo
from tests.fixtures.echo import echo_model
from tests.fixtures.model_server import REJECT, SLOW, ModelRepo, build_model_repo, free_port, model_server
from tests.fixtures.v2_strategies import binary_bodies, infer_requests
from vatic.cli.stack.mlserver import ModelServer
from vatic.connectors.v2 import grpc as wire

ROOT = Path(__file__).resolve().parents[3]
VATIC = ROOT / ".venv" / "pipeline" / "bin" / "vatic"
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def transaction(i: int = 1, **fields: Any) -> dict[str, Any]:
    return {
        "customer_id": f"c{i}",
        "merchant_id": "m1",
        "amount": 10.0 + i,
        "currency": "EUR",
        "channel": "ONLINE",
        "card_present": False,
        "merchant_category": "5411",
        "country": "DE",
        **fields,
    }


def echo_service(folder: Path, repo: Path, *, name: str, timeout_s: float = 5.0) -> Path:
    """A service over the transaction schema whose 'model' echoes its inputs (fault markers in merchant_category)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "project": "test",
        "service": name,
        "timeout_s": timeout_s,
        "model": echo_model("faulty", extra_columns=["customer_stats:orders_7d#missing"]),
        "features": {
            "repo": str(repo),
            "entities": {"customer_id": "customer_id"},
            "refs": feast_repo.FEATURES,
            "defaults": {"customer_stats:orders_7d": -1},
        },
        "streaming": {
            "input_topic": "t.in",
            "output_topic": "t.out",
            "dead_letter_topic": "t.dlq",
            "input_schema": "transaction",
        },
    }
    (folder / "service.yaml").write_text(yaml.safe_dump(config))
    return folder


def iris_service(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "project": "test",
        "service": "iris",
        "model": {
            "name": "iris",
            "inputs": [{"name": "input-0", "datatype": "FP64", "columns": ["sl", "sw", "pl", "pw"]}],
            "outputs": [{"name": "predict", "rename": "species", "labels": ["setosa", "versicolor", "virginica"]}],
        },
    }
    (folder / "service.yaml").write_text(yaml.safe_dump(config))
    return folder


class Gateway:
    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.grpc_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc = subprocess.Popen(
            [str(VATIC), "gateway", "--port", str(self.port), "--grpc-port", str(self.grpc_port), *args],
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
            env={
                "VATIC_GATEWAY_AUTH_TOKEN": TOKEN,
                "VATIC_GATEWAY_MAX_BODY_BYTES": "65536",
                "PATH": "/usr/bin:/bin",
                # a checkout run with PYTHONPATH (a worktree over a shared environment) serves its own code
                **{k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ},
                **(env or {}),
            },
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/v2/health/live", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("gateway did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> ModelRepo:
    return build_model_repo(tmp_path_factory.mktemp("models") / "repo")


@pytest.fixture(scope="module")
def server(models: ModelRepo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    srv = model_server(tmp_path_factory.mktemp("home"), models.root, name="gateway-mlserver")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def gateway(server: ModelServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("gateway")
    repo = feast_repo.build_repo(root / "feast")
    services = [
        echo_service(root / "echo", repo, name="echo"),
        echo_service(root / "slow", repo, name="slow", timeout_s=0.5),
        echo_service(root / "down", repo, name="down"),
        iris_service(root / "iris"),
    ]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens here once the socket closes
    args = [a for folder in services for a in ("--service", str(folder))]
    args += ["--endpoint", f"echo={server.url}", "--endpoint", f"slow={server.url}", "--endpoint", f"iris={server.url}"]
    args += ["--endpoint", f"down=http://127.0.0.1:{closed}"]
    gw = Gateway(args, root / "gateway.log")
    yield gw
    gw.stop()


def post(gw: Gateway, path: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        f"{gw.url}{path}", content=content, headers={**AUTH, "content-type": "application/json", **(headers or {})}
    )


def get(gw: Gateway, path: str) -> httpx.Response:
    return httpx.get(f"{gw.url}{path}", headers=AUTH)


def test_entity_keys_in_prediction_out_with_the_features_used(gateway):
    response = post(gateway, "/v1/services/echo/predict", transaction(7, event_id=str(uuid.UUID(int=7))))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["event_id"] == str(uuid.UUID(int=7))
    assert body["origin"] == "REST"
    assert body["model_name"] == "faulty"
    # the model saw the event's fields and the features Feast holds for c7 (orders_7d=7, avg_amount=7.5)
    assert body["outputs"]["inputs_seen"] == [17.0, 0.0, 0.0, 7.0, 7.5, 0.0]
    assert body["features"] == {
        "customer_stats:orders_7d": {"value": 7, "missing": False},
        "customer_stats:avg_amount": {"value": 7.5, "missing": False},
    }
    assert body["entity_keys"] == {"customer_id": "c7"}
    assert response.headers["x-request-id"]


def test_event_id_and_time_are_generated_when_absent(gateway):
    body = post(gateway, "/v1/services/echo/predict", transaction(2)).json()
    assert uuid.UUID(body["event_id"])
    assert body["timings"]["event_time"] <= body["timings"]["emit_time"]


def test_unknown_customer_gets_defaults_and_missing_flags(gateway):
    body = post(gateway, "/v1/services/echo/predict", transaction(1, customer_id="nobody")).json()
    assert body["outputs"]["inputs_seen"][3] == -1.0
    assert body["outputs"]["inputs_seen"][5] == 1.0
    assert body["features"]["customer_stats:orders_7d"] == {"value": -1, "missing": True}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (transaction(amount="12.5"), "amount"),
        ({k: v for k, v in transaction().items() if k != "merchant_id"}, "merchant_id"),
        (transaction(channel="CARRIER_PIGEON"), "channel"),
        (transaction(surprise=1), "surprise"),
    ],
)
def test_invalid_events_are_422_naming_the_field(gateway, body, field):
    response = post(gateway, "/v1/services/echo/predict", body)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    assert response.json()["field"] == field


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"'])
def test_bodies_that_are_not_a_json_object_are_422(gateway, raw):
    response = post(gateway, "/v1/services/echo/predict", raw)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"


def test_input_the_model_refuses_is_422_with_the_stage(gateway):
    response = post(gateway, "/v1/services/echo/predict", transaction(merchant_category=REJECT))
    assert response.status_code == 422
    assert response.json()["error"] == "ModelRejected"
    assert response.json()["stage"] == "infer"


def test_auth_is_required_except_for_health(gateway):
    assert httpx.post(f"{gateway.url}/v1/services/echo/predict", json=transaction()).status_code == 401
    wrong = httpx.post(
        f"{gateway.url}/v1/services/echo/predict", json=transaction(), headers={"Authorization": "Bearer x"}
    )
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    assert wrong.json()["error"] == "unauthorized"
    assert httpx.get(f"{gateway.url}/v2/health/live").status_code == 200
    assert httpx.get(f"{gateway.url}/metrics").status_code == 200


def test_bodies_over_the_limit_are_413(gateway):
    big = transaction(device_hash="x" * 70_000)
    assert post(gateway, "/v1/services/echo/predict", big).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        yield json.dumps(big).encode()

    streamed = httpx.post(f"{gateway.url}/v1/services/echo/predict", content=chunks(), headers=AUTH)
    assert streamed.status_code == 413
    assert streamed.json()["error"] == "payload_too_large"


def test_unknown_service_and_model_are_404(gateway):
    assert post(gateway, "/v1/services/nope/predict", transaction()).status_code == 404
    assert post(gateway, "/v2/models/nope/infer", {"inputs": []}).status_code == 404


def test_model_server_down_is_503_with_retry_after(gateway):
    response = post(gateway, "/v1/services/down/predict", transaction())
    assert response.status_code == 503
    assert response.json()["error"] == "ModelServerUnavailable"
    assert int(response.headers["retry-after"]) >= 1


def test_deadline_is_504(gateway):
    response = post(gateway, "/v1/services/slow/predict", transaction(merchant_category=SLOW))
    assert response.status_code == 504
    assert response.json()["error"] == "deadline_exceeded"


def test_v2_requests_pass_through(gateway, server, models):
    rows = models.expected["rows"][:5]
    request = {
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [5, 4], "data": [v for row in rows for v in row]}]
    }
    via_gateway = post(gateway, "/v2/models/iris/infer", request)
    direct = httpx.post(f"{server.url}/v2/models/iris/infer", json=request)
    assert via_gateway.status_code == 200
    assert via_gateway.json()["outputs"] == direct.json()["outputs"]
    labels = ["setosa", "versicolor", "virginica"]
    species = post(gateway, "/v1/services/iris/predict", dict(zip(["sl", "sw", "pl", "pw"], rows[0], strict=True)))
    assert species.json()["outputs"]["species"] == labels[models.expected["iris"]["predict"][0]]


def test_the_v2_surface_the_model_servers_have(gateway, server):
    """Server metadata (with the extensions the gateway speaks) and one version's metadata and readiness."""
    meta = get(gateway, "/v2")
    assert meta.status_code == 200
    assert meta.json()["extensions"] == ["binary_tensor_data"]
    # the model server's own answers come through (before these routes the gateway said FastAPI's "Not Found")
    for suffix in ("", "/ready"):
        via = get(gateway, f"/v2/models/iris/versions/7{suffix}")
        direct = httpx.get(f"{server.url}/v2/models/iris/versions/7{suffix}")
        assert (via.status_code, via.content) == (direct.status_code, direct.content)
    assert "error" in get(gateway, "/v2/models/iris/versions/7").json()


def test_binary_requests_the_gateway_cannot_read_are_400_naming_what_is_wrong(gateway, models):
    rows = models.expected["rows"][:2]
    raw = b"".join(struct.pack("<4d", *row) for row in rows)
    header = json.dumps({"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [2, 4],
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()  # fmt: skip
    ok = post(gateway, "/v2/models/iris/infer", header + raw, {"Inference-Header-Content-Length": str(len(header))})
    assert ok.status_code == 200, ok.text
    too_long = post(gateway, "/v2/models/iris/infer", header + raw, {"Inference-Header-Content-Length": "99999"})
    assert too_long.status_code == 400
    assert "inference-header-content-length is 99999" in too_long.json()["error"]
    short = post(gateway, "/v2/models/iris/infer", header + raw[:-8],
                 {"Inference-Header-Content-Length": str(len(header))})  # fmt: skip
    assert short.status_code == 400
    assert "input 'input-0'" in short.json()["error"]


def test_concurrent_requests_are_answered_each_and_share_model_calls(gateway):
    def one(i: int) -> dict[str, Any]:
        response = post(
            gateway, "/v1/services/echo/predict", transaction(i % 40, event_id=str(uuid.UUID(int=1000 + i)))
        )
        assert response.status_code == 200
        return response.json()

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(one, range(200)))
    assert sorted(a["event_id"] for a in answers) == sorted(str(uuid.UUID(int=1000 + i)) for i in range(200))
    for i, answer in enumerate(answers):
        assert answer["outputs"]["inputs_seen"][0] == 10.0 + (i % 40)  # each got its own row back
    metrics = httpx.get(f"{gateway.url}/metrics").text
    calls = _metric(metrics, 'vatic_gateway_batch_size_count{service="echo"}')
    events = _metric(metrics, 'vatic_gateway_batch_size_sum{service="echo"}')
    assert events >= 200
    assert calls < events  # concurrent requests were coalesced into shared model calls


def test_metrics_and_json_logs_carry_the_request(gateway):
    request_id = uuid.uuid4().hex
    post(gateway, "/v1/services/echo/predict", transaction(3), headers={"X-Request-ID": request_id})
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert 'vatic_gateway_requests_total{route="/v1/services/echo/predict",status="200"}' in metrics
    assert "vatic_gateway_errors_total" in metrics
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in gateway.log.read_text().splitlines() if line.startswith("{")]
        mine = [line for line in lines if line.get("request_id") == request_id]
        if mine:
            break
        time.sleep(0.1)
    assert mine[0]["status"] == 200
    assert mine[0]["path"] == "/v1/services/echo/predict"


def test_no_error_body_carries_a_stack_trace(gateway):
    for path, body in [
        ("/v1/services/echo/predict", b"{"),
        ("/v1/services/echo/predict", transaction(merchant_category=REJECT)),
        ("/v1/services/down/predict", transaction()),
        ("/v1/services/slow/predict", transaction(merchant_category=SLOW)),
    ]:
        response = post(gateway, path, body)
        assert response.status_code >= 400
        assert "Traceback" not in response.text
        assert set(response.json()) >= {"error", "message"}


def test_openapi_documents_each_service_body(gateway):
    spec = httpx.get(f"{gateway.url}/openapi.json").json()
    operation = spec["paths"]["/v1/services/echo/predict"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert "customer_id" in schema["required"]
    assert "event_id" not in schema.get("required", [])
    assert httpx.get(f"{gateway.url}/docs").status_code == 200


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in metrics")


# --- the gRPC door ------------------------------------------------------------------------------------------


def grpc_call(
    gw: Gateway, method: str, request: Any, *, service: str = wire.INFERENCE_SERVICE, token: str | None = TOKEN
) -> Any:
    """One unary call with the V2 messages (the door's own wire module, checked against tritonclient elsewhere)."""
    request_cls, response_cls = wire.methods(service)[method]
    with grpc.insecure_channel(f"127.0.0.1:{gw.grpc_port}") as channel:
        call = channel.unary_unary(
            f"/{service}/{method}",
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )
        metadata = [("authorization", f"Bearer {token}")] if token else None
        return call(request, metadata=metadata, timeout=30)


def _code(gw: Gateway, method: str, request: Any, **options: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        grpc_call(gw, method, request, **options)
    return caught.value.code(), caught.value.details()


def test_grpc_health_is_open_and_everything_else_needs_the_token(gateway):
    assert grpc_call(gateway, "ServerLive", wire.message("inference.ServerLiveRequest")(), token=None).live
    assert _code(gateway, "ServerMetadata", wire.message("inference.ServerMetadataRequest")(), token=None)[0] == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    meta = grpc_call(gateway, "ServerMetadata", wire.message("inference.ServerMetadataRequest")())
    assert list(meta.extensions) == ["binary_tensor_data"]
    code, _ = _code(gateway, "ModelMetadata", wire.message("inference.ModelMetadataRequest")(name="iris"), token=None)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    code, _ = _code(gateway, "ModelMetadata", wire.message("inference.ModelMetadataRequest")(name="iris"), token="bad")
    assert code == grpc.StatusCode.UNAUTHENTICATED
    metadata = grpc_call(gateway, "ModelMetadata", wire.message("inference.ModelMetadataRequest")(name="iris"))
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [("input-0", "FP64", [-1, 4])]
    assert grpc_call(gateway, "ModelReady", wire.message("inference.ModelReadyRequest")(name="iris")).ready


def test_grpc_infer_answers_what_rest_answers(gateway, models):
    rows = models.expected["rows"][:5]
    request = wire.message("inference.ModelInferRequest")(model_name="iris")
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=[5, 4])
    tensor.contents.fp64_contents.extend(v for row in rows for v in row)
    answer = grpc_call(gateway, "ModelInfer", request)
    flat = [v for row in rows for v in row]
    rest = post(gateway, "/v2/models/iris/infer", {"inputs": [
        {"name": "input-0", "datatype": "FP64", "shape": [5, 4], "data": flat}]})  # fmt: skip
    (output,) = rest.json()["outputs"]
    assert [(o.name, o.datatype, list(o.shape)) for o in answer.outputs] == [
        (output["name"], output["datatype"], output["shape"])
    ]
    assert struct.unpack(f"<{len(output['data'])}q", answer.raw_output_contents[0]) == tuple(output["data"])


def test_grpc_errors_carry_the_status_codes_rest_maps_to(gateway):
    narrow = wire.message("inference.ModelInferRequest")(model_name="iris")
    narrow.inputs.add(name="input-0", datatype="FP64", shape=[1, 3]).contents.fp64_contents.extend([0.0] * 3)
    code, details = _code(gateway, "ModelInfer", narrow)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "input-0" in details
    unknown = wire.message("inference.ModelInferRequest")(model_name="nope")
    assert _code(gateway, "ModelInfer", unknown)[0] == grpc.StatusCode.NOT_FOUND
    cut = wire.message("inference.ModelInferRequest")(model_name="iris")
    cut.inputs.add(name="input-0", datatype="FP64", shape=[1, 4])
    cut.raw_input_contents.append(b"\x00" * 24)  # 3 doubles for 4
    code, details = _code(gateway, "ModelInfer", cut)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'input-0'" in details


def test_grpc_predict_is_the_enriched_prediction_with_rest_s_error_classes(gateway):
    predict = wire.message("vatic.PredictRequest")
    event = transaction(7, event_id=str(uuid.UUID(int=77)))
    answer = grpc_call(gateway, "Predict", predict(service="echo", event_json=json.dumps(event).encode()),
                       service=wire.GATEWAY_SERVICE)  # fmt: skip
    prediction = json.loads(answer.prediction_json)
    rest = post(gateway, "/v1/services/echo/predict", transaction(7, event_id=str(uuid.UUID(int=78)))).json()
    assert prediction["event_id"] == event["event_id"]
    assert prediction["outputs"] == rest["outputs"]
    assert set(prediction["features"]) == set(rest["features"])

    def code(service: str, body: dict[str, Any]) -> grpc.StatusCode:
        request = predict(service=service, event_json=json.dumps(body).encode())
        return _code(gateway, "Predict", request, service=wire.GATEWAY_SERVICE)[0]

    assert code("nope", event) == grpc.StatusCode.NOT_FOUND
    assert code("echo", {**event, "amount": "lots"}) == grpc.StatusCode.INVALID_ARGUMENT
    assert code("down", transaction()) == grpc.StatusCode.UNAVAILABLE
    assert code("slow", transaction(merchant_category=SLOW)) == grpc.StatusCode.DEADLINE_EXCEEDED


def test_a_grpc_message_over_the_body_limit_is_resource_exhausted(gateway):
    big = wire.message("inference.ModelInferRequest")(model_name="iris")
    big.inputs.add(name="input-0", datatype="FP64", shape=[2100, 4])
    big.raw_input_contents.append(b"\x00" * (2100 * 4 * 8))  # 67,200 bytes > VATIC_GATEWAY_MAX_BODY_BYTES=65536
    code, _ = _code(gateway, "ModelInfer", big)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    small = wire.message("inference.ModelInferRequest")(model_name="iris")
    small.inputs.add(name="input-0", datatype="FP64", shape=[1, 4]).contents.fp64_contents.extend([5.1, 3.5, 1.4, 0.2])
    assert grpc_call(gateway, "ModelInfer", small).outputs[0].shape[0] == 1  # the door still answers after it


GRPC_REFUSALS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
}


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(request=infer_requests(models=st.sampled_from(["iris", "nope"])))
def test_any_grpc_infer_request_is_answered_or_refused_never_internal(gateway, request):
    """The live gRPC door on untrusted ModelInfer requests: an answer, or a refusal code with details."""
    try:
        answer = grpc_call(gateway, "ModelInfer", request)
    except grpc.RpcError as exc:
        refused = exc
    else:
        assert answer.model_name == "iris"
        return
    assert refused.code() in GRPC_REFUSALS, (refused.code(), refused.details())
    assert refused.details()


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=binary_bodies())
def test_any_binary_request_at_the_v2_door_is_answered_or_a_json_4xx(gateway, body):
    """The live REST V2 door on untrusted bodies in the binary extension: never a 5xx, always a JSON error."""
    content, length = body
    assume(length.isascii() and length.isprintable() and length == length.strip())  # what an HTTP client can send
    response = httpx.post(
        f"{gateway.url}/v2/models/iris/infer",
        content=content,
        headers={**AUTH, "inference-header-content-length": length},
        timeout=30,
    )
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers.get("content-type", "").startswith("application/json"), (response, response.content)
        assert response.json()
