"""The V2 inference clients (REST, and gRPC with raw tensors) against real MLServer 1.7.1 processes (started from
.venv/server, never mocked).

One module-scoped server serves: ``iris`` (sklearn, one [N, 4] input), ``iris-named`` (sklearn fitted on a
DataFrame: four named [N] inputs, pandas codec), ``faulty`` (echo + injected faults) and ``gated`` (a faulty
model whose load waits on a file). Expected predictions are computed by the fitted estimators themselves in the
server environment (tests/fixtures/model_server/train_iris.py).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.fixtures.model_server import (
    CRASH,
    PROBE,
    REJECT,
    REJECT_422,
    SLOW,
    STATS,
    UNAVAILABLE,
    ModelRepo,
    build_model_repo,
    free_port,
    model_server,
)
from vatic.cli.stack.mlserver import ModelServer
from vatic.connectors.inference import (
    Datatype,
    InferenceClient,
    InferenceRequest,
    InferenceResponse,
    Tensor,
    TensorMetadata,
    model_client,
)
from vatic.connectors.inference_grpc import GrpcInferenceClient
from vatic.connectors.v2.types import flatten
from vatic.schemas.errors import (
    ConfigError,
    DataError,
    DeadlineExceeded,
    ModelNotFound,
    ModelNotReady,
    ModelRejected,
    ModelServerUnavailable,
    Retryable,
    UnexpectedModelResponse,
)
from vatic.serving.core.retry import RetryPolicy


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> ModelRepo:
    return build_model_repo(tmp_path_factory.mktemp("inference") / "models")


@pytest.fixture(scope="module")
def server(repo: ModelRepo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    srv = model_server(tmp_path_factory.mktemp("inference-home"), repo.root, name="mlserver-inference")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


class CountingTransport(httpx.AsyncHTTPTransport):
    """The real transport, recording the status of every response (to count attempts)."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[int] = []
        self.not_ready_seen = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        self.statuses.append(response.status_code)
        if response.status_code == 400:
            self.not_ready_seen.set()
        return response


def with_client(url: str, scenario: Callable[[InferenceClient], Awaitable[Any]], **options: Any) -> Any:
    async def main() -> Any:
        async with InferenceClient(url, **options) as client:
            return await scenario(client)

    return asyncio.run(main())


def rows_of(repo: ModelRepo, n: int | None = None) -> list[dict[str, Any]]:
    return [{"input-0": row} for row in repo.expected["rows"][:n]]


def request_of(
    rows: list[dict[str, Any]],
    *,
    datatypes: dict[str, str] | None = None,
    parameters: dict[str, Any] | None = None,
    outputs: list[str] | None = None,
) -> InferenceRequest:
    """ONE request for N rows, one tensor ``[N, ...]`` per key, built with NumPy as a client user builds it."""
    tensors = []
    for name in rows[0]:
        values = [row[name] for row in rows]
        array = np.asarray(values)
        if array.dtype.kind in "USO":
            data = [v.decode() if isinstance(v, bytes) else v for v in flatten(values)]
            tensors.append(Tensor(name, Datatype.BYTES, array.shape, data))
            continue
        datatype = Datatype((datatypes or {}).get(name) or Datatype.of_numpy(array.dtype.name))
        tensors.append(Tensor(name, datatype, array.shape, flatten(array.tolist())))
    return InferenceRequest(inputs=tuple(tensors), outputs=tuple(outputs) if outputs else None, parameters=parameters)


async def infer_rows(
    client: InferenceClient,
    model: str,
    rows: list[dict[str, Any]],
    *,
    version: str | None = None,
    deadline_s: float | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """N rows in one call, N results back (``{output: value}`` per row)."""
    response = await client.infer(model, request_of(rows, **options), version=version, deadline_s=deadline_s)
    return response.split(len(rows))


# --- health and metadata ----------------------------------------------------------------------------------


def test_health_readiness_and_metadata(server: ModelServer) -> None:
    async def scenario(client: InferenceClient) -> None:
        assert await client.server_ready() is True
        assert await client.ready("iris") is True
        assert await client.ready("iris", version="1") is True
        meta = await client.metadata("iris")
        assert meta.name == "iris"
        assert meta.platform == "sklearn"
        assert meta.versions[0].startswith("sklearn/")
        assert meta.inputs == (TensorMetadata("input-0", Datatype.FP64, (-1, 4)),)
        assert meta.outputs == (TensorMetadata("predict", Datatype.INT64, (-1, 1)),)
        with pytest.raises(ModelNotFound):
            await client.ready("no-such-model")
        with pytest.raises(ModelNotFound):
            await client.metadata("no-such-model")

    with_client(server.url, scenario)


def test_a_url_that_is_not_a_v2_server_is_a_config_error(server: ModelServer) -> None:
    # MLServer's metrics port is a real HTTP server that knows nothing of V2
    url = f"http://{server.settings.host}:{server.metrics_port}"

    async def scenario(client: InferenceClient) -> None:
        with pytest.raises(UnexpectedModelResponse) as info:
            await client.server_ready()
        assert info.value.status == 404
        assert isinstance(info.value, ConfigError)

    with_client(url, scenario)


# --- predictions and batching -----------------------------------------------------------------------------


def test_one_request_carries_the_whole_batch_and_predicts_what_the_model_predicts(
    server: ModelServer, repo: ModelRepo
) -> None:
    rows = rows_of(repo)
    request = request_of(rows)
    assert [(t.name, t.datatype, t.shape) for t in request.inputs] == [("input-0", Datatype.FP64, (150, 4))]

    async def scenario(client: InferenceClient) -> tuple[InferenceResponse, list[dict[str, Any]]]:
        return await client.infer("iris", request), await infer_rows(client, "iris", rows)

    response, results = with_client(server.url, scenario)
    assert response.model_name == "iris"
    assert response.model_version == "1"
    assert response.output("predict").shape == (150, 1)
    assert [r["predict"] for r in results] == repo.expected["iris"]["predict"]
    assert len(set(repo.expected["iris"]["predict"])) == 3  # every class occurs: the comparison means something


def test_probabilities_come_back_one_row_each(server: ModelServer, repo: ModelRepo) -> None:
    rows = rows_of(repo)
    results = with_client(server.url, lambda c: infer_rows(c, "iris", rows, outputs=["predict_proba"]))
    assert len(results) == 150
    for got, want in zip(results, repo.expected["iris"]["predict_proba"], strict=True):
        assert list(got) == ["predict_proba"]
        assert got["predict_proba"] == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_named_inputs_become_one_column_tensor_each(server: ModelServer, repo: ModelRepo) -> None:
    features = repo.expected["features"]
    rows = [dict(zip(features, values, strict=True)) for values in repo.expected["rows"]]
    request = request_of(rows, parameters={"content_type": "pd"})
    assert [(t.name, t.datatype, t.shape) for t in request.inputs] == [(f, Datatype.FP64, (150,)) for f in features]

    results = with_client(server.url, lambda c: infer_rows(c, "iris-named", rows, parameters={"content_type": "pd"}))
    assert [r["predict"] for r in results] == repo.expected["iris-named"]["predict"]


def test_every_datatype_and_shape_survives_the_round_trip(server: ModelServer) -> None:
    rows = [
        {
            "f64": 1.5,
            "f32": [0.5, 1.0],
            "i64": 7,
            "flag": True,
            "text": "héllo",
            "raw": b"abc",
            "grid": [[1, 2], [3, 4]],
        },
        {"f64": 2, "f32": [0.25, -2.0], "i64": -1, "flag": False, "text": "", "raw": b"", "grid": [[5, 6], [7, 8]]},
        {
            "f64": -0.125,
            "f32": [8.0, 16.0],
            "i64": 2**40,
            "flag": True,
            "text": "z",
            "raw": b"\x00",
            "grid": [[9, 0], [1, 2]],
        },
    ]
    request = request_of(rows, datatypes={"f32": "FP32"})
    assert {t.name: (t.datatype, t.shape) for t in request.inputs} == {
        "f64": (Datatype.FP64, (3,)),
        "f32": (Datatype.FP32, (3, 2)),
        "i64": (Datatype.INT64, (3,)),
        "flag": (Datatype.BOOL, (3,)),
        "text": (Datatype.BYTES, (3,)),
        "raw": (Datatype.BYTES, (3,)),
        "grid": (Datatype.INT64, (3, 2, 2)),
    }

    response = with_client(server.url, lambda c: c.infer("faulty", request))  # the faulty model echoes
    assert {t.name: t.datatype for t in response.outputs} == {t.name: t.datatype for t in request.inputs}
    expected = [{**row, "raw": row["raw"].decode()} for row in rows]
    assert response.split(3) == expected


def test_nan_travels_as_null_and_comes_back_as_a_missing_value(server: ModelServer) -> None:
    results = with_client(server.url, lambda c: infer_rows(c, "faulty", [{"x": math.nan}, {"x": 1.0}]))
    assert results == [{"x": None}, {"x": 1.0}]  # JSON null; MLServer's NumPy codec reads it as NaN


def test_a_version_can_be_named(server: ModelServer, repo: ModelRepo) -> None:
    rows = rows_of(repo, 3)

    async def scenario(client: InferenceClient) -> None:
        results = await infer_rows(client, "iris", rows, version="1")
        assert [r["predict"] for r in results] == repo.expected["iris"]["predict"][:3]
        with pytest.raises(ModelNotFound) as info:
            await infer_rows(client, "iris", rows, version="7")
        assert (info.value.model, info.value.version) == ("iris", "7")
        assert "Model iris with version 7 not found" in str(info.value)

    with_client(server.url, scenario)


# --- errors from the real server --------------------------------------------------------------------------


def test_unknown_model_is_model_not_found(server: ModelServer) -> None:
    async def scenario(client: InferenceClient) -> None:
        with pytest.raises(ModelNotFound) as info:
            await infer_rows(client, "no-such-model", [{"x": 1.0}])
        assert isinstance(info.value, ConfigError)
        assert info.value.model == "no-such-model"
        assert "Model no-such-model not found" in str(info.value)

    with_client(server.url, scenario)


def test_input_the_runtime_refuses_is_rejected_with_the_servers_answer(server: ModelServer) -> None:
    async def scenario(client: InferenceClient) -> None:
        with pytest.raises(ModelRejected) as info:
            await infer_rows(client, "faulty", [{"t": "fine"}, {"t": REJECT}])
        assert info.value.status == 400
        assert REJECT in info.value.body
        assert '"error"' in info.value.body
        assert isinstance(info.value, DataError)
        assert not isinstance(info.value, Retryable)

        with pytest.raises(ModelRejected) as info422:
            await infer_rows(client, "faulty", [{"t": REJECT_422}])
        assert info422.value.status == 422

    with_client(server.url, scenario)


def test_a_failing_model_is_unavailable(server: ModelServer) -> None:
    async def scenario(client: InferenceClient) -> None:
        with pytest.raises(ModelServerUnavailable, match="500") as crash:
            await infer_rows(client, "faulty", [{"t": CRASH}])
        assert isinstance(crash.value, Retryable)
        with pytest.raises(ModelServerUnavailable, match="503"):
            await infer_rows(client, "faulty", [{"t": UNAVAILABLE}])

    with_client(server.url, scenario)


def test_input_the_model_cannot_use_is_a_500_on_mlserver(server: ModelServer) -> None:
    # MLServer 1.7.1 answers 500 when sklearn refuses the input (3 features instead of 4): it cannot be told
    # from an outage, so it is Retryable. The streaming job bisects a batch whose retries run out on a 500.
    with pytest.raises(ModelServerUnavailable, match="expecting 4 features"):
        with_client(server.url, lambda c: infer_rows(c, "iris", [{"input-0": [5.1, 3.5, 1.4]}]))


def test_a_slow_model_exceeds_the_deadline(server: ModelServer) -> None:
    async def scenario(client: InferenceClient) -> None:
        slow = request_of([{"t": SLOW}], parameters={"sleep_s": 2})
        with pytest.raises(DeadlineExceeded) as per_call:
            await client.infer("faulty", slow, deadline_s=0.3)
        assert per_call.value.deadline_s == 0.3
        assert isinstance(per_call.value, Retryable)
        with pytest.raises(DeadlineExceeded) as default:
            await client.infer("faulty", slow)  # the client's default deadline
        assert default.value.deadline_s == 0.5
        # the pool survives a cancelled request
        assert await infer_rows(client, "faulty", [{"t": "after"}], deadline_s=30) == [{"t": "after"}]

    with_client(server.url, scenario, deadline_s=0.5)


def test_a_loading_model_is_not_ready_and_retries_wait_for_it(server: ModelServer, repo: ModelRepo) -> None:
    repo.hold_file.touch()
    counting = CountingTransport()

    async def scenario(client: InferenceClient) -> None:
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=180) as admin,
            InferenceClient(server.url, transport=counting) as retrying,
        ):
            assert (await admin.post("/v2/repository/models/gated/unload")).status_code == 200
            with pytest.raises(ModelNotFound):  # unloaded: MLServer forgets the model (404), it is not "not ready"
                await infer_rows(client, "gated", [{"t": "x"}])

            load = asyncio.create_task(admin.post("/v2/repository/models/gated/load"))
            not_ready = await _first_not_ready(client)
            assert not_ready.model == "gated"
            assert isinstance(not_ready, Retryable)
            assert await client.ready("gated") is False
            assert await client.server_ready() is False

            policy = RetryPolicy(budget_s=120, max_backoff_s=0.1)  # the caller's retries (the core's policy)
            waiting = asyncio.create_task(policy.run(lambda: infer_rows(retrying, "gated", [{"t": "x"}])))
            await counting.not_ready_seen.wait()  # the retrying call has met the not-ready model
            repo.hold_file.unlink()
            assert (await load).status_code == 200
            answer, attempts = await waiting
            assert answer == [{"t": "x"}]
            assert attempts > 1
            assert counting.statuses[-1] == 200
            assert await client.ready("gated") is True

    try:
        with_client(server.url, scenario)
    finally:
        repo.hold_file.unlink(missing_ok=True)


async def _first_not_ready(client: InferenceClient) -> ModelNotReady:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            await infer_rows(client, "gated", [{"t": "x"}])
        except ModelNotReady as exc:
            return exc
        except ModelNotFound:  # the load request has not registered the model yet
            await asyncio.sleep(0.02)
    raise AssertionError("the gated model never answered 'not ready'")


def test_the_client_never_retries_one_call_is_one_request(server: ModelServer) -> None:
    counting = CountingTransport()

    async def scenario(client: InferenceClient) -> None:
        with pytest.raises(ModelServerUnavailable):
            await infer_rows(client, "faulty", [{"t": CRASH}])
        assert counting.statuses == [500]
        counting.statuses.clear()
        with pytest.raises(ModelRejected):
            await infer_rows(client, "faulty", [{"t": REJECT}])
        assert counting.statuses == [400]

    with_client(server.url, scenario, transport=counting, deadline_s=30)


def test_the_concurrency_cap_bounds_requests_in_flight(server: ModelServer) -> None:
    async def scenario(client: InferenceClient) -> None:
        await infer_rows(client, "faulty", [{"t": STATS}])  # reset the server's gauge
        probes = [infer_rows(client, "faulty", [{"t": PROBE, "i": i}], parameters={"sleep_s": 0.2}) for i in range(8)]
        results = await asyncio.gather(*probes)
        assert [r[0]["i"] for r in results] == list(range(8))
        stats = await infer_rows(client, "faulty", [{"t": STATS}])
        assert 1 <= stats[0]["max_in_flight"] <= 2

    with_client(server.url, scenario, max_concurrency=2, deadline_s=60)


def test_a_stopped_server_is_unavailable(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("stopped")
    small = build_model_repo(root / "models", iris=False)
    srv = model_server(root / "home", small.root, name="mlserver-stopped")
    srv.start()

    async def scenario(client: InferenceClient) -> None:
        try:
            assert await infer_rows(client, "faulty", [{"t": "x"}]) == [{"t": "x"}]
            in_flight = asyncio.create_task(
                infer_rows(client, "faulty", [{"t": PROBE}], parameters={"sleep_s": 60}, deadline_s=120)
            )
            for _ in range(3000):  # until the probe is inside the model
                if (await infer_rows(client, "faulty", [{"t": STATS}]))[0]["max_in_flight"] >= 1:
                    break
                await asyncio.sleep(0.02)
            await asyncio.to_thread(srv.stop)
            with pytest.raises(ModelServerUnavailable):  # stopped mid-request
                await in_flight
        finally:
            srv.stop()
        with pytest.raises(ModelServerUnavailable) as refused:  # nobody listens any more
            await infer_rows(client, "faulty", [{"t": "x"}])
        assert isinstance(refused.value.__cause__, httpx.ConnectError)
        with pytest.raises(ModelServerUnavailable):
            await client.server_ready()

    with_client(srv.url, scenario, deadline_s=30)


# --- wire format ------------------------------------------------------------------------------------------


def test_answers_that_are_not_v2_are_refused_by_the_parser() -> None:
    for body in (b"<html>", b"[]", b'{"model_name": "m"}', b'{"outputs": [{"name": "y", "datatype": "FP99"}]}'):
        with pytest.raises(ValueError):
            InferenceResponse.from_json(body)
    response = InferenceResponse(
        model_name="m",
        outputs=(
            Tensor("a", Datatype.FP64, (2, 1), [1.0, 2.0]),
            Tensor("b", Datatype.FP64, (3,), [1.0, 2.0, 3.0]),  # not 2 rows
        ),
    )
    with pytest.raises(ValueError, match="2 rows"):
        response.split(2)
    with pytest.raises(ValueError, match="needs 6"):
        Tensor("c", Datatype.INT64, (2, 3), [1, 2, 3]).rows()
    nested = Tensor("d", Datatype.INT64, (2, 2), [[1, 2], [3, 4]])
    assert nested.rows() == [[1, 2], [3, 4]]
    assert Tensor("e", Datatype.INT64, (2, 1), [1, 2]).rows(squeeze=False) == [[1], [2]]


def test_bad_client_configuration_fails_at_once() -> None:
    with pytest.raises(ConfigError):
        InferenceClient("localhost:8080")
    with pytest.raises(ValueError, match="deadline_s"):
        InferenceClient("http://127.0.0.1:1", deadline_s=0)


# --- the gRPC transport (grpc://host:port): the same server, raw tensors ------------------------------------


def grpc_url(server: ModelServer) -> str:
    return f"grpc://{server.settings.host}:{server.grpc_port}"


def with_grpc(server: ModelServer, scenario: Callable[[Any], Awaitable[Any]], **options: Any) -> Any:
    async def main() -> Any:
        client = model_client(grpc_url(server), **options)
        assert isinstance(client, GrpcInferenceClient)
        async with client:
            return await scenario(client)

    return asyncio.run(main())


def test_grpc_health_readiness_and_metadata_are_the_rest_ones(server: ModelServer) -> None:
    async def scenario(client: GrpcInferenceClient) -> None:
        assert await client.server_ready() is True
        assert await client.ready("iris") is True
        assert await client.ready("iris", version="1") is True
        async with InferenceClient(server.url) as rest:
            assert await client.metadata("iris") == await rest.metadata("iris")
        with pytest.raises(ModelNotFound):
            await client.ready("no-such-model")
        with pytest.raises(ModelNotFound):
            await client.metadata("no-such-model")

    with_grpc(server, scenario)


def test_grpc_answers_a_whole_batch_as_rest_does(server: ModelServer, repo: ModelRepo) -> None:
    rows = rows_of(repo)

    async def scenario(client: GrpcInferenceClient) -> tuple[InferenceResponse, list[dict[str, Any]]]:
        return await client.infer("iris", request_of(rows)), await infer_rows(
            client, "iris", rows, outputs=["predict_proba"]
        )

    response, probabilities = with_grpc(server, scenario)
    assert (response.model_name, response.model_version) == ("iris", "1")
    assert response.output("predict").shape == (150, 1)
    assert [r["predict"] for r in response.split(150)] == repo.expected["iris"]["predict"]
    for got, want in zip(probabilities, repo.expected["iris"]["predict_proba"], strict=True):
        assert got["predict_proba"] == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_grpc_carries_every_datatype_as_raw_bytes(server: ModelServer) -> None:
    rows = [
        {"f64": 1.5, "f32": [0.5, 1.0], "i64": 7, "flag": True, "text": "héllo", "grid": [[1, 2], [3, 4]]},
        {"f64": math.nan, "f32": [0.25, -2.0], "i64": -1, "flag": False, "text": "", "grid": [[5, 6], [7, 8]]},
        {"f64": -0.125, "f32": [8.0, 16.0], "i64": 2**40, "flag": True, "text": "z", "grid": [[9, 0], [1, 2]]},
    ]
    request = request_of(rows, datatypes={"f32": "FP32"})
    response = with_grpc(server, lambda c: c.infer("faulty", request))  # the faulty model echoes
    assert {t.name: (t.datatype, t.shape) for t in response.outputs} == {
        t.name: (t.datatype, t.shape) for t in request.inputs
    }
    got = response.split(3)
    assert math.isnan(got[1]["f64"])  # raw bytes carry NaN itself (JSON carries null)
    got[1]["f64"] = rows[1]["f64"] = 0.0
    assert got == rows


def test_grpc_errors_are_the_rest_errors(server: ModelServer) -> None:
    async def scenario(client: GrpcInferenceClient) -> None:
        with pytest.raises(ModelNotFound) as unknown:
            await infer_rows(client, "no-such-model", [{"x": 1.0}])
        assert unknown.value.model == "no-such-model"
        with pytest.raises(ModelNotFound):
            await infer_rows(client, "iris", rows_of_iris, version="7")
        with pytest.raises(ModelRejected) as rejected:
            await infer_rows(client, "faulty", [{"t": "fine"}, {"t": REJECT}])
        assert (rejected.value.status, REJECT in rejected.value.body) == (400, True)
        assert isinstance(rejected.value, DataError)
        with pytest.raises(ModelRejected) as rejected_422:
            await infer_rows(client, "faulty", [{"t": REJECT_422}])
        assert rejected_422.value.status == 422
        with pytest.raises(ModelServerUnavailable) as crash:  # an exception in the model: 500, maybe poison
            await infer_rows(client, "faulty", [{"t": CRASH}])
        assert crash.value.status == 500
        with pytest.raises(ModelServerUnavailable) as down:  # the model's own 503: never poison
            await infer_rows(client, "faulty", [{"t": UNAVAILABLE}])
        assert down.value.status == 503
        slow = request_of([{"t": SLOW}], parameters={"sleep_s": 2})
        with pytest.raises(DeadlineExceeded) as late:
            await client.infer("faulty", slow, deadline_s=0.3)
        assert late.value.deadline_s == 0.3
        assert await infer_rows(client, "faulty", [{"t": "after"}], deadline_s=30) == [{"t": "after"}]

    rows_of_iris = [{"input-0": [5.1, 3.5, 1.4, 0.2]}]
    with_grpc(server, scenario)


def test_grpc_concurrency_cap_and_a_server_nobody_runs(server: ModelServer) -> None:
    async def scenario(client: GrpcInferenceClient) -> None:
        await infer_rows(client, "faulty", [{"t": STATS}])
        results = await asyncio.gather(*(infer_rows(client, "faulty", [{"t": PROBE, "i": i}]) for i in range(6)))
        assert [r[0]["i"] for r in results] == list(range(6))
        assert 1 <= (await infer_rows(client, "faulty", [{"t": STATS}]))[0]["max_in_flight"] <= 2

    with_grpc(server, scenario, max_concurrency=2, deadline_s=60)

    async def nobody() -> None:
        async with GrpcInferenceClient(f"grpc://127.0.0.1:{free_port()}", deadline_s=5) as client:
            with pytest.raises(ModelServerUnavailable) as refused:
                await client.server_ready()
            assert refused.value.status is None  # not reached: an outage, never poison

    asyncio.run(nobody())


def test_grpc_addresses_are_checked_at_once() -> None:
    for url in ("grpc://127.0.0.1", "grpc://127.0.0.1:8081/v2", "grpc://:8081"):
        with pytest.raises(ConfigError, match="grpc://host:port"):
            model_client(url)
    with pytest.raises(ConfigError, match="TLS to a gRPC model server is not supported yet"):
        model_client("grpcs://127.0.0.1:8081")
    assert isinstance(model_client("http://127.0.0.1:8080"), InferenceClient)
