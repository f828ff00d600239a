"""The gateway against its own OpenAPI document, with schemathesis: no 5xx, and every answer is documented (status,
content type, headers) and matches its documented JSON schema.

The gateway is the real app (:func:`vatic.serving.gateway.create_app`) for the demo services, served in-process
(ASGI) and pointed at the local stack's real model servers (fraud: LightGBM; product: MiniLM + head) and the
services' real Feast repositories. schemathesis generates valid and invalid requests for every operation
(predict bodies from the Avro input schemas, V2 bodies from the V2 schema, the served model names). Bounded:
``EXAMPLES`` per operation and mode, about half a minute in all.

``positive_data_acceptance`` is off: a body valid by the Avro schema may still be refused, by design, with a
documented 422 (a ``merchant_category`` the fraud model has no encoding for; a V2 tensor of the wrong width).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.conftest import _ensure
from vatic.cli.stack.gateway import GatewayProcess
from vatic.cli.stack.stack import Stack
from vatic.serving.gateway import GatewaySettings, create_app

TOKEN = "schemathesis-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = 25
#: live, ready, services, describe, two predict routes, seven V2 routes (server, metadata and ready of a model and
#: of a version, two infer routes)
OPERATIONS = 13
PROTECTED_STATUSES = {"401"}
ERROR_STATUSES = {"401", "404", "413", "422", "503", "504"}


@pytest.fixture(scope="module")
def gateway_settings(stack: Stack) -> GatewaySettings:
    """Settings of a gateway for the demo services, on the stack's model servers (started here when not running)."""
    subprocess_prepare()
    for name in ("fraud-model", "product-model"):
        _ensure(stack, name)
    services = GatewayProcess(stack.settings).services()
    return GatewaySettings(
        services=[folder for _, folder, _ in services],
        endpoints={name: url for name, _, url in services},
        auth_token=TOKEN,
        log_requests=False,
    )


@pytest.fixture(scope="module")
def gateway_app(gateway_settings: GatewaySettings) -> Iterator[Any]:
    """The app schemathesis drives; schemathesis keeps its lifespan running until it is shut down here."""
    from schemathesis.python.asgi import shutdown_lifespans

    yield create_app(gateway_settings)
    shutdown_lifespans()


def subprocess_prepare() -> None:
    """The demo models and feature stores exist (``vatic usecases prepare`` is idempotent and fast when done)."""
    import subprocess
    import sys
    from pathlib import Path

    vatic = Path(sys.executable).parent / "vatic"
    subprocess.run([str(vatic), "usecases", "prepare"], check=True, capture_output=True, timeout=1200)


def test_every_operation_answers_as_documented(gateway_app: Any) -> None:
    """Every operation, valid and invalid requests (``EXAMPLES`` each): all checks but positive_data_acceptance.

    The operations are run in a loop rather than with ``schemathesis.pytest.from_fixture``, whose lazy
    parametrization reads ``Function._nodeid``, which pytest 9 no longer has."""
    api = schemathesis.openapi.from_asgi("/openapi.json", gateway_app)
    failures: dict[str, str] = {}
    labels = []
    for result in api.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Any) -> None:
                case.call_and_validate(headers=AUTH, excluded_checks=[positive_data_acceptance])

            try:
                check()
            except Unsatisfiable:  # no parameters and no body: nothing to make invalid
                assert mode is GenerationMode.NEGATIVE, operation.label
            except Exception as exc:  # collected: one report for every operation
                failures[f"{operation.label} ({mode.value})"] = str(exc)[:3000]
    assert len(labels) == OPERATIONS, labels
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())


# --- the document itself ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(gateway_settings: GatewaySettings) -> Iterator[Any]:
    """A test client of a second app (its own lifespan: services opened and closed with the client)."""
    from starlette.testclient import TestClient

    with TestClient(create_app(gateway_settings)) as test_client:
        yield test_client


def test_every_error_status_is_documented_with_a_json_body(client: Any) -> None:
    document = client.get("/openapi.json").json()
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer <a client's token, the shared VATIC_GATEWAY_AUTH_TOKEN or a JWT>",
    }
    assert document["security"] == [{"bearer": []}]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            responses = operation["responses"]
            if path.startswith("/v2/health/"):
                assert operation["security"] == [], where
                continue
            assert "security" not in operation, where
            assert set(responses) >= PROTECTED_STATUSES, where
            assert "WWW-Authenticate" in responses["401"]["headers"], where
            assert {"403", "429"} <= set(responses), where  # a service the client may not call; over its rate
            assert "Retry-After" in responses["429"]["headers"], where
            if method == "post":
                assert {"413", "422", "503"} <= set(responses), where
            for status, response in responses.items():
                if status in ERROR_STATUSES:
                    body = response["content"]["application/json"]["schema"]
                    assert "error" in json.dumps(body), (where, status)
    predict = document["paths"]["/v1/services/fraud-detection/predict"]["post"]["responses"]
    assert set(predict) >= ERROR_STATUSES | {"200"}
    assert "Retry-After" in predict["503"]["headers"]
    assert predict["200"]["content"]["application/json"]["schema"]["title"] == "Prediction"
    infer = document["paths"]["/v2/models/{model}/infer"]["post"]
    assert infer["parameters"][0]["schema"]["enum"] == ["fraud-detector", "product-categorizer"]
    assert infer["requestBody"]["content"]["application/json"]["schema"]["title"] == "InferenceRequest"


# --- what schemathesis found ------------------------------------------------------------------------------------


def test_a_v2_input_without_a_batch_dimension_is_a_400_not_the_servers_500(client: Any) -> None:
    """MLServer's adaptive batcher (on for the product model) fails with a 500 on an input of shape []; the
    gateway checks V2 bodies against the model's declared inputs and refuses it with the runtime's 400."""
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [], "data": ["a"]}]}
    response = client.post("/v2/models/product-categorizer/infer", json=body, headers=AUTH)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith("model product-categorizer: input 'text' has shape []")


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}, 400, "[N, 21]"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 21], "data": [0] * 21}]}, 400, "unknown input"),
        ({"inputs": [{"name": "input-0", "datatype": "FP3", "shape": [1], "data": [1]}]}, 422, "datatype"),
        ({"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1.5], "data": [1]}]}, 422, "shape"),
        ({"inputs": "all"}, 422, "'inputs' must be a list"),
        ([1, 2], 422, "JSON object"),
    ],
)
def test_v2_bodies_are_checked_before_they_are_forwarded(client: Any, body: Any, status: int, needle: str) -> None:
    response = client.post("/v2/models/fraud-detector/infer", json=body, headers=AUTH)
    assert response.status_code == status, response.text
    answer = response.json()
    assert needle in (answer["error"] if status == 400 else answer["message"])


def test_a_valid_v2_request_is_forwarded_and_answered_by_the_model(client: Any, stack: Stack) -> None:
    body = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [2, 21], "data": [0.0] * 42}]}
    via_gateway = client.post("/v2/models/fraud-detector/infer", json=body, headers=AUTH)
    direct = httpx.post(f"{_fraud_url(stack)}/v2/models/fraud-detector/infer", json=body, trust_env=False)
    assert via_gateway.status_code == 200, via_gateway.text
    assert via_gateway.json()["outputs"] == direct.json()["outputs"]


def test_readiness_passes_through_with_an_empty_body_and_no_content_type(client: Any) -> None:
    response = client.get("/v2/models/fraud-detector/ready", headers=AUTH)
    assert response.status_code == 200
    assert response.content == b""
    assert "content-type" not in response.headers


def test_a_version_path_parameter_is_quoted_into_the_upstream_url(client: Any) -> None:
    """A version with characters that are not allowed in a URL once decoded (a NUL, a '#') reaches the model server
    quoted - answered 404 there - instead of breaking the gateway's upstream URL (a 500)."""
    body = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 21], "data": [0.0] * 21}]}
    for version in ("%00", "%23x", "a%20b"):
        response = client.post(f"/v2/models/fraud-detector/versions/{version}/infer", json=body, headers=AUTH)
        assert response.status_code == 404, (version, response.text)
        assert "error" in response.json()


def _fraud_url(stack: Stack) -> str:
    return next(url for name, _, url in GatewayProcess(stack.settings).services() if name == "fraud-detection")
