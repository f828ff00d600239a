"""The prediction core against a real MLServer (iris + a fault-injecting echo model) and a real Feast repo.

Every event of a batch must come back exactly once: as a prediction or as a per-event failure. Outages are
raised for the whole batch, never turned into failures.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import feast_repo
from tests.fixtures.model_server import CRASH, REJECT, UNAVAILABLE, ModelRepo, build_model_repo, model_server
from vatic.cli.stack.mlserver import ModelServer
from vatic.connectors.features import FeatureClient
from vatic.connectors.inference import InferenceClient
from vatic.schemas.errors import (
    InputProblem,
    MissingEntityKey,
    MissingFeatures,
    ModelFailedOnInput,
    ModelNotFound,
    ModelRejected,
    ModelServerUnavailable,
)
from vatic.serving.config import ServiceConfig
from vatic.serving.core import Predictor, RetryPolicy
from vatic.serving.core.enrich import Enricher

LABELS = ["setosa", "versicolor", "virginica"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> ModelRepo:
    return build_model_repo(tmp_path_factory.mktemp("models") / "repo")


@pytest.fixture(scope="module")
def server(repo: ModelRepo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    srv = model_server(tmp_path_factory.mktemp("home"), repo.root, name="core-mlserver")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def features_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return feast_repo.build_repo(tmp_path_factory.mktemp("feast"))


def iris_config() -> ServiceConfig:
    return ServiceConfig.model_validate(
        {
            "project": "test",
            "service": "iris",
            "model": {
                "name": "iris",
                "inputs": [
                    {"name": "input-0", "datatype": "FP64", "columns": ["sl", "sw", "pl", "pw"]},
                ],
                "outputs": [{"name": "predict", "rename": "species", "labels": LABELS}],
            },
        }
    )


def echo_config(**features: Any) -> ServiceConfig:
    return ServiceConfig.model_validate(
        {
            "project": "test",
            "service": "echo",
            "model": {
                "name": "faulty",
                "inputs": [
                    {"name": "note", "datatype": "BYTES", "columns": ["note"], "squeeze": True},
                    {
                        "name": "x",
                        "datatype": "FP64",
                        "columns": [
                            "amount",
                            "customer_stats:orders_7d",
                            "customer_stats:avg_amount",
                            "customer_stats:orders_7d#missing",
                            "channel",
                        ],
                        "encodings": {"channel": {"web": 0, "pos": 1}},
                    },
                ],
                "outputs": [{"name": "note"}, {"name": "x"}],
            },
            "features": {
                "entities": {"customer_id": "customer_id"},
                "refs": feast_repo.FEATURES,
                "defaults": {"customer_stats:orders_7d": -1},
                **features,
            },
        }
    )


def event(i: int, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_time": 1_780_000_000_000 + i,
        "customer_id": f"c{i}",
        "amount": float(i),
        "note": f"event {i}",
        "channel": "web",
        **fields,
    }


def run(
    config: ServiceConfig,
    server: ModelServer,
    events: list[dict[str, Any]],
    features_repo: Path | None = None,
    **kw: Any,
):
    async def main() -> Any:
        async with InferenceClient(server.url) as client:
            enricher = None
            if features_repo is not None and config.features is not None:
                enricher = Enricher(config.features, FeatureClient.from_repo(features_repo))
            predictor = Predictor(config, inference=client, features=enricher, **kw)
            try:
                return await predictor.predict(events)
            finally:
                if enricher is not None:
                    await enricher.aclose()

    return asyncio.run(main())


def test_iris_predictions_equal_the_models_own(server, repo):
    rows = repo.expected["rows"]
    events = [dict(zip(["sl", "sw", "pl", "pw"], row, strict=True), event_id=str(i)) for i, row in enumerate(rows)]
    result = run(iris_config(), server, events)
    assert result.failures == []
    assert [i for i, _ in result.predictions] == list(range(len(rows)))
    assert result.model_calls == 1  # the whole batch in one V2 request
    assert result.model_retries == 0
    expected = [LABELS[c] for c in repo.expected["iris"]["predict"]]
    assert [p["outputs"]["species"] for _, p in result.predictions] == expected
    first = result.predictions[0][1]
    assert first["service"] == "iris"
    assert first["model_name"] == "iris"
    assert first["model_version"] == "1"
    assert first["origin"] == "STREAM"
    assert first["timings"]["emit_time"] >= first["timings"]["received_time"]


def test_features_are_fetched_and_passed_to_the_model(server, features_repo):
    events = [event(i) for i in range(10)] + [event(0, customer_id="c_stale"), event(0, customer_id="nobody")]
    result = run(echo_config(), server, events, features_repo)
    assert result.failures == []
    by_index = dict(result.predictions)
    for i in range(10):
        assert by_index[i]["outputs"]["x"] == [float(i), float(i), i + 0.5, 0.0, 0.0]
        assert by_index[i]["outputs"]["note"] == f"event {i}"
        assert by_index[i]["features"]["customer_stats:orders_7d"] == {"value": i, "missing": False}
        assert by_index[i]["entity_keys"] == {"customer_id": f"c{i}"}
    # stale and unknown customers: the default (-1) for orders_7d, None (NaN) for avg_amount, missing flag set
    for index in (10, 11):
        x = by_index[index]["outputs"]["x"]
        assert x[1] == -1.0
        assert math.isnan(x[2])  # no default: NaN, the model's native "missing"
        assert x[3] == 1.0
        assert by_index[index]["features"]["customer_stats:avg_amount"] == {"value": None, "missing": True}


def test_bad_events_fail_alone_and_the_rest_are_predicted(server, features_repo):
    events = [event(i) for i in range(16)]
    events[3]["note"] = REJECT  # the model refuses it (400)
    events[7]["channel"] = "carrier-pigeon"  # no encoding for it
    del events[9]["customer_id"]  # no entity key
    events[12]["note"] = REJECT
    config = echo_config(policies={"customer_stats:avg_amount": {"on_missing": "reject"}})
    events[14]["customer_id"] = "nobody"  # avg_amount is required now
    result = run(config, server, events, features_repo)

    failed = {f.index: f for f in result.failures}
    assert sorted(failed) == [3, 7, 9, 12, 14]
    assert isinstance(failed[3].error, ModelRejected)
    assert failed[3].stage == "infer"
    assert failed[3].model_response
    assert REJECT.encode() in failed[3].model_response
    assert isinstance(failed[7].error, InputProblem)
    assert "carrier-pigeon" in failed[7].error.message
    assert isinstance(failed[9].error, MissingEntityKey)
    assert failed[9].stage == "enrich"
    assert isinstance(failed[12].error, ModelRejected)
    assert isinstance(failed[14].error, MissingFeatures)
    predicted = sorted(i for i, _ in result.predictions)
    assert predicted == sorted(set(range(16)) - set(failed))
    assert all(p["outputs"]["note"] == f"event {i}" for i, p in result.predictions)


def test_a_poison_input_is_dead_lettered_after_bounded_attempts(server, features_repo):
    events = [event(i) for i in range(8)]
    events[5]["note"] = CRASH  # the model raises: MLServer answers 500 while healthy
    result = run(echo_config(), server, events, features_repo, retry=RetryPolicy(budget_s=30, initial_backoff_s=0.01))
    assert [f.index for f in result.failures] == [5]
    failure = result.failures[0]
    assert isinstance(failure.error, ModelFailedOnInput)
    assert failure.attempts == 3
    assert result.model_retries == 2  # the poison input alone, tried 3 times; the halves that held it, once each
    assert sorted(i for i, _ in result.predictions) == [0, 1, 2, 3, 4, 6, 7]


def test_a_503_while_ready_is_an_outage_never_poison(server, features_repo):
    # a server that answers 503 "for a while" still reports ready: its answers must not dead-letter good events
    events = [event(i) for i in range(4)]
    events[2]["note"] = UNAVAILABLE  # the model answers 503 for any request holding this event
    with pytest.raises(ModelServerUnavailable, match="503"):
        run(echo_config(), server, events, features_repo, retry=RetryPolicy(budget_s=1.0, initial_backoff_s=0.01))


def test_an_outage_is_raised_for_the_batch_never_dead_lettered(tmp_path):
    config = iris_config()

    async def main() -> None:
        async with InferenceClient("http://127.0.0.1:9") as client:  # nothing listens there
            predictor = Predictor(config, inference=client, retry=RetryPolicy(budget_s=0.3, initial_backoff_s=0.05))
            await predictor.predict([{"sl": 1.0, "sw": 1.0, "pl": 1.0, "pw": 1.0, "event_id": "x"}])

    with pytest.raises(ModelServerUnavailable):
        asyncio.run(main())


def test_an_unknown_model_is_a_config_error(server):
    config = iris_config().model_copy(deep=True)
    config.model.name = "no-such-model"
    with pytest.raises(ModelNotFound):
        run(config, server, [{"sl": 1.0, "sw": 1.0, "pl": 1.0, "pw": 1.0, "event_id": "x"}])


def test_prediction_events_encode_with_the_prediction_schema(server, features_repo):
    from vatic.schemas import AvroCodec, InMemorySchemaStore, load_schema

    codec = AvroCodec(InMemorySchemaStore(), "predictions-value", load_schema("prediction"))
    events = [event(i) for i in range(5)] + [event(0, customer_id="nobody")]
    result = run(echo_config(), server, events, features_repo)
    assert len(result.predictions) == 6
    for _, prediction in result.predictions:
        decoded = codec.decode(codec.encode(prediction))
        assert decoded["event_id"] == prediction["event_id"]
        assert decoded["features"] == {
            ref: {"value": v["value"], "missing": v["missing"]} for ref, v in prediction["features"].items()
        }
