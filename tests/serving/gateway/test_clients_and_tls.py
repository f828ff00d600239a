"""Per-client credentials and TLS on both doors, on the real gateway process (``vatic gateway`` under uvicorn,
with its gRPC door) in front of a real model server over TLS (the full-custom tier), with certificates made
in the test. mTLS runs on the app under an in-process uvicorn, with the options the command passes.

The gateway here knows three clients from its clients file (token digests only) and the shared token:
``alice`` may call ``iris``; ``carol`` may call everything; ``limited`` may call everything once (rate 0.001/s,
burst 1, one bucket for both doors). ``iris``'s model server is ``https://`` and verified with the test CA;
``other``'s model server is down.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import uvicorn
import yaml

from tests.fixtures.model_server import free_port
from tests.fixtures.pki import CA, Pair
from tests.serving.gateway.test_gateway import iris_service
from tests.serving.gateway.tls_model import TlsModelServer
from vatic.connectors.inference import untrusted_certificate
from vatic.connectors.v2 import grpc as wire
from vatic.serving.gateway import GatewaySettings, create_app

SHARED = "shared-secret-token-value"
TOKENS = {"alice": "alice-token-5f1c0e", "carol": "carol-token-9a77d2", "limited": "limited-token-1b2c3d"}
ROW = {"sl": 5.1, "sw": 3.5, "pl": 1.4, "pw": 0.2}
V2_ROW = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}


def bearer(client: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[client]}"}


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def clients_file(path: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "clients": [
                    {"name": "alice", "token_sha256": digest(TOKENS["alice"]), "services": ["iris"]},
                    {"name": "carol", "token_sha256": digest(TOKENS["carol"]), "services": ["*"]},
                    {
                        "name": "limited",
                        "token_sha256": digest(TOKENS["limited"]),
                        "services": ["*"],
                        "rate_limit": {"requests_per_s": 0.001, "burst": 1},
                    },
                ]
            }
        )
    )
    return path


def other_service(folder: Path) -> Path:
    """A second service (model ``other``) whose model server is never up."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "project": "test",
        "service": "other",
        "model": {
            "name": "other",
            "inputs": [{"name": "input-0", "datatype": "FP64", "columns": ["sl", "sw", "pl", "pw"]}],
            "outputs": [{"name": "predict"}],
        },
    }
    (folder / "service.yaml").write_text(yaml.safe_dump(config))
    return folder


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """``vatic gateway`` in a subprocess (this checkout's code: PYTHONPATH is passed on), serving TLS."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, ca: Path) -> None:
        self.port, self.grpc_port = free_port(), free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.log = log
        self.ca = ca
        command = [sys.executable, "-m", "vatic.cli.main", "gateway", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*command, "--grpc-port", str(self.grpc_port), *args],
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "PYTHONPATH": ":".join(filter(None, sys.path)),
                **env,
            },
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {log.read_text()[-2000:]}")
            try:
                if self.client().get("/v2/health/live", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("gateway did not start")

    def client(self, ca: Path | None = None) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(ca or self.ca))
        return httpx.Client(base_url=self.url, verify=context, trust_env=False, timeout=30)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[CA, CA]:
    root = tmp_path_factory.mktemp("pki")
    return CA(root / "trusted"), CA(root / "rogue", "rogue CA")


@pytest.fixture(scope="module")
def model(pki: tuple[CA, CA], tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsModelServer]:
    ca = pki[0]
    server = TlsModelServer(tmp_path_factory.mktemp("model"), ca.issue("model", server=True), ca.cert_file)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("services")
    return [iris_service(root / "iris"), other_service(root / "other")]


@pytest.fixture(scope="module")
def gateway(
    pki: tuple[CA, CA], model: TlsModelServer, services: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Process]:
    ca = pki[0]
    root = tmp_path_factory.mktemp("gateway")
    pair = ca.issue("gateway", server=True)
    args = [a for folder in services for a in ("--service", str(folder))]
    args += ["--endpoint", f"iris={model.url}", "--endpoint", f"other=http://127.0.0.1:{closed_port()}"]
    env = {
        "VATIC_GATEWAY_AUTH_TOKEN": SHARED,
        "VATIC_GATEWAY_CLIENTS_FILE": str(clients_file(root / "clients.yaml")),
        "VATIC_GATEWAY_TLS_CERT_FILE": str(pair.cert),
        "VATIC_GATEWAY_TLS_KEY_FILE": str(pair.key),
        "VATIC_GATEWAY_MODEL_CA_FILE": str(ca.cert_file),
    }
    process = Process(args, env, root / "gateway.log", ca.cert_file)
    yield process
    process.stop()


# --- REST over TLS ------------------------------------------------------------------------------------------------


def test_rest_over_tls_answers_a_client_that_trusts_the_ca(gateway: Process) -> None:
    with gateway.client() as client:
        response = client.post("/v1/services/iris/predict", json=ROW, headers=bearer("alice"))
    assert response.status_code == 200, response.text
    assert response.json()["outputs"]["species"] == "setosa"  # the model server answered, over verified TLS


def test_rest_refuses_a_client_that_does_not_trust_the_ca(gateway: Process, pki: tuple[CA, CA]) -> None:
    with gateway.client(pki[1].cert_file) as client, pytest.raises(httpx.ConnectError) as caught:
        client.get("/v2/health/live")
    assert untrusted_certificate(caught.value) is not None


def test_plain_http_gets_no_answer_from_the_tls_door(gateway: Process) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{gateway.port}/v2/health/live", timeout=5)


def test_the_v2_pass_through_reaches_the_https_model_server(gateway: Process) -> None:
    with gateway.client() as client:
        response = client.post("/v2/models/iris/infer", json=V2_ROW, headers=bearer("carol"))
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [0]


# --- per-client credentials on REST -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer nobody", f"Bearer {TOKENS['alice']}x", f"Basic {TOKENS['alice']}",
     digest(TOKENS["alice"]), f"Bearer {digest(TOKENS['alice'])}"],
)  # fmt: skip
def test_no_or_an_unknown_credential_is_401(gateway: Process, authorization: str | None) -> None:
    """A digest from the clients file is not a credential: only the token it is the digest of is."""
    headers = {"Authorization": authorization} if authorization else {}
    with gateway.client() as client:
        response = client.post("/v1/services/iris/predict", json=ROW, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="vatic"'
    assert response.json() == {"error": "unauthorized", "message": "missing or wrong bearer token"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/services/other"),
        ("POST", "/v1/services/other/predict"),
        ("GET", "/v2/models/other"),
        ("POST", "/v2/models/other/infer"),
        ("GET", "/v2/models/other/versions/1/ready"),
        ("GET", "/v2/models/nobody-owns-this"),
        ("GET", "/v1/services/no-such-service"),
    ],
)
def test_a_client_calling_a_service_it_may_not_is_403(gateway: Process, method: str, path: str) -> None:
    with gateway.client() as client:
        response = client.request(method, path, headers=bearer("alice"), json=ROW if method == "POST" else None)
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["error"] == "forbidden"
    assert "alice" in body["message"]


def test_a_client_may_call_its_services_and_the_routes_of_no_service(gateway: Process) -> None:
    with gateway.client() as client:
        assert client.get("/v1/services/iris", headers=bearer("alice")).status_code == 200
        assert client.get("/v2/models/iris", headers=bearer("alice")).status_code == 200
        assert client.get("/v1/services", headers=bearer("alice")).status_code == 200
        assert client.get("/v2", headers=bearer("alice")).status_code == 200
        # a * client reaches the service the other cannot, and an unknown model is then its 404
        assert client.get("/v1/services/other", headers=bearer("carol")).status_code == 200
        assert client.get("/v2/models/nobody-owns-this", headers=bearer("carol")).status_code == 404


def test_the_shared_token_still_calls_every_service(gateway: Process) -> None:
    with gateway.client() as client:
        response = client.get("/v1/services/other", headers={"Authorization": f"bearer {SHARED}"})
    assert response.status_code == 200, response.text


def test_health_metrics_and_docs_stay_open(gateway: Process) -> None:
    with gateway.client() as client:
        for path in ("/v2/health/live", "/healthz", "/metrics", "/openapi.json", "/docs"):
            assert client.get(path).status_code == 200, path


def test_over_its_rate_a_client_gets_429_with_retry_after_and_grpc_shares_the_bucket(gateway: Process) -> None:
    with gateway.client() as client:
        first = client.get("/v1/services/iris", headers=bearer("limited"))
        second = client.get("/v1/services/iris", headers=bearer("limited"))
    assert first.status_code == 200, first.text
    assert second.status_code == 429
    assert second.json()["error"] == "rate_limited"
    assert "limited" in second.json()["message"]
    assert int(second.headers["retry-after"]) >= 1
    with pytest.raises(grpc.RpcError) as caught:
        grpc_call(gateway, "ServerMetadata", wire.message("inference.ServerMetadataRequest")(), "limited")
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert int(dict(caught.value.trailing_metadata())["retry-after"]) >= 1


def test_the_openapi_document_declares_bearer_security_and_the_denials(gateway: Process) -> None:
    with gateway.client() as client:
        document = client.get("/openapi.json").json()
    assert document["security"] == [{"bearer": []}]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    predict = document["paths"]["/v1/services/iris/predict"]["post"]
    assert {"401", "403", "429"} <= set(predict["responses"])
    assert document["paths"]["/v2/health/live"]["get"]["security"] == []


# --- the gRPC door over TLS ---------------------------------------------------------------------------------------


def grpc_channel(gw: Process, *, ca: Path | None = None, pair: Pair | None = None, port: int | None = None) -> Any:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(ca or gw.ca).read_bytes(),
        private_key=pair.key.read_bytes() if pair else None,
        certificate_chain=pair.cert.read_bytes() if pair else None,
    )
    return grpc.secure_channel(f"127.0.0.1:{port or gw.grpc_port}", credentials)


def grpc_call(gw: Any, method: str, request: Any, client: str | None, **channel: Any) -> Any:
    service = wire.GATEWAY_SERVICE if method == "Predict" else wire.INFERENCE_SERVICE
    request_cls, response_cls = wire.methods(service)[method]
    with grpc_channel(gw, **channel) as opened:
        call = opened.unary_unary(
            f"/{service}/{method}",
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )
        metadata = [("authorization", f"Bearer {TOKENS[client]}")] if client else None
        return call(request, metadata=metadata, timeout=30)


def grpc_code(gw: Any, method: str, request: Any, client: str | None, **channel: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        grpc_call(gw, method, request, client, **channel)
    return caught.value.code()


def test_grpc_over_tls_with_per_client_rules(gateway: Process) -> None:
    message = wire.message
    assert grpc_call(gateway, "ServerLive", message("inference.ServerLiveRequest")(), None).live
    assert grpc_call(gateway, "ModelReady", message("inference.ModelReadyRequest")(name="iris"), "alice").ready
    predicted = grpc_call(
        gateway, "Predict", message("vatic.PredictRequest")(service="iris", event_json=json.dumps(ROW).encode()),
        "alice",
    )  # fmt: skip
    assert json.loads(predicted.prediction_json)["outputs"]["species"] == "setosa"
    metadata = message("inference.ModelMetadataRequest")
    assert grpc_code(gateway, "ModelMetadata", metadata(name="iris"), None) == grpc.StatusCode.UNAUTHENTICATED
    assert grpc_code(gateway, "ModelMetadata", metadata(name="other"), "alice") == grpc.StatusCode.PERMISSION_DENIED
    predict_other = message("vatic.PredictRequest")(service="other", event_json=json.dumps(ROW).encode())
    assert grpc_code(gateway, "Predict", predict_other, "alice") == grpc.StatusCode.PERMISSION_DENIED
    assert grpc_code(gateway, "Predict", predict_other, "carol") == grpc.StatusCode.UNAVAILABLE  # past auth: down


def test_grpc_refuses_a_client_that_does_not_trust_the_ca(gateway: Process, pki: tuple[CA, CA]) -> None:
    live = wire.message("inference.ServerLiveRequest")()
    assert grpc_code(gateway, "ServerLive", live, None, ca=pki[1].cert_file) == grpc.StatusCode.UNAVAILABLE


# --- what the gateway writes: client names, never tokens ----------------------------------------------------------


def test_logs_metrics_and_bodies_name_the_client_never_its_token(gateway: Process) -> None:
    with gateway.client() as client:
        answers = [
            client.post("/v1/services/iris/predict", json=ROW, headers=bearer("alice")),
            client.post("/v1/services/other/predict", json=ROW, headers=bearer("alice")),
            client.get("/v1/services", headers={"Authorization": f"Bearer {TOKENS['alice']}-wrong"}),
            client.get("/v1/services/other", headers=bearer("limited")),
            client.post("/v1/services/other/predict", json=ROW, headers=bearer("carol")),  # 503: model down
        ]
        metrics = client.get("/metrics").text
    assert [a.status_code for a in answers][:3] == [200, 403, 401]
    secrets = [SHARED, *TOKENS.values()]
    for answer in answers:
        assert not any(secret in answer.text for secret in secrets), answer.text
        assert not any(secret in str(answer.headers) for secret in secrets)
    assert 'vatic_gateway_client_requests_total{client="alice",door="rest",status="200"}' in metrics
    assert 'vatic_gateway_client_requests_total{client="alice",door="rest",status="403"}' in metrics
    assert 'vatic_gateway_client_requests_total{client="anonymous",door="rest",status="401"}' in metrics
    assert not any(secret in metrics for secret in secrets)
    log = gateway.log.read_text()
    assert not any(secret in log for secret in secrets)
    access = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    logged = {(entry.get("client"), entry.get("status")) for entry in access if entry.get("msg") == "request"}
    assert {("alice", 200), ("alice", 403), ("anonymous", 401)} <= logged


# --- mTLS (the app under uvicorn with the options `vatic gateway` passes) ------------------------------------------


class InProcess:
    """The gateway app under a uvicorn of this process, with ``settings.uvicorn_tls()``."""

    def __init__(self, settings: GatewaySettings, ca: Path) -> None:
        self.ca = ca
        self.port = settings.port
        self.server = uvicorn.Server(
            uvicorn.Config(
                create_app(settings), host="127.0.0.1", port=settings.port, log_level="warning",
                **settings.uvicorn_tls(),
            )
        )  # fmt: skip
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive(), "uvicorn stopped during start-up"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        self.grpc_port = _app_grpc_port(self.server)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def _app_grpc_port(server: uvicorn.Server) -> int:
    app = server.config.loaded_app
    while not hasattr(app, "state"):
        app = app.app
    return int(app.state.grpc_port)


@pytest.fixture(scope="module")
def mutual(pki: tuple[CA, CA], services: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    ca = pki[0]
    pair = ca.issue("gateway-mtls", server=True)
    settings = GatewaySettings(
        services=services[:1],
        port=free_port(),
        grpc_port=0,
        tls_cert_file=pair.cert,
        tls_key_file=pair.key,
        tls_client_ca_file=ca.cert_file,
        clients_file=clients_file(tmp_path_factory.mktemp("mtls") / "clients.yaml"),
        log_requests=False,
    )
    gw = InProcess(settings, ca.cert_file)
    yield gw
    gw.stop()


def _mtls_client(gw: InProcess, pair: Pair | None) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(gw.ca))
    if pair is not None:
        context.load_cert_chain(pair.cert, pair.key)
    return httpx.Client(base_url=f"https://127.0.0.1:{gw.port}", verify=context, trust_env=False, timeout=30)


def test_mtls_answers_a_client_with_a_certificate_from_the_client_ca(mutual: InProcess, pki: tuple[CA, CA]) -> None:
    with _mtls_client(mutual, pki[0].issue("checkout", server=False)) as client:
        assert client.get("/v1/services/iris", headers=bearer("alice")).status_code == 200
        # the certificate lets the connection in; the token still says who calls
        assert client.get("/v1/services/iris").status_code == 401


@pytest.mark.parametrize("signer", ["none", "rogue"])
def test_mtls_refuses_a_client_without_a_certificate_the_ca_signed(
    mutual: InProcess, pki: tuple[CA, CA], signer: str
) -> None:
    pair = pki[1].issue("intruder", server=False) if signer == "rogue" else None
    with _mtls_client(mutual, pair) as client, pytest.raises(httpx.HTTPError):
        client.get("/v2/health/live")


def test_grpc_mtls_requires_a_client_certificate(mutual: InProcess, pki: tuple[CA, CA]) -> None:
    live = wire.message("inference.ServerLiveRequest")()
    assert grpc_code(mutual, "ServerLive", live, None, port=mutual.grpc_port) == grpc.StatusCode.UNAVAILABLE
    rogue = pki[1].issue("grpc-intruder", server=False)
    code = grpc_code(mutual, "ServerLive", live, None, port=mutual.grpc_port, pair=rogue)
    assert code == grpc.StatusCode.UNAVAILABLE
    good = pki[0].issue("grpc-client", server=False)
    assert grpc_call(mutual, "ServerLive", live, None, port=mutual.grpc_port, pair=good).live


# --- an https model server the gateway does not trust -------------------------------------------------------------


def test_an_untrusted_model_server_is_503_misconfigured_on_both_routes(
    model: TlsModelServer, pki: tuple[CA, CA], services: list[Path]
) -> None:
    from starlette.testclient import TestClient

    settings = GatewaySettings(
        services=services[:1], endpoints={"iris": model.url}, model_ca_file=pki[1].cert_file, retry_budget_s=0
    )
    with TestClient(create_app(settings)) as client:
        predicted = client.post("/v1/services/iris/predict", json=ROW)
        passed = client.post("/v2/models/iris/infer", json=V2_ROW)
    assert predicted.status_code == 503, predicted.text
    assert predicted.json()["error"] == "misconfigured"
    assert "certificate does not verify" in predicted.json()["message"]
    assert passed.status_code == 503, passed.text
    assert "certificate does not verify" in passed.json()["error"]
