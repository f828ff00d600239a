"""Inference graphs in the core, against a real MLServer: sequence (tensor mapping), ensembles, switches, per-step
dead letters, outages, step and graph deadlines.

Models (real MLServer runtimes): ``iris`` (sklearn LogisticRegression), ``faulty`` (echoes its inputs; fault
markers in BYTES inputs), ``shifted`` (the echo, adding 0.5 to every FP number it returns).
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.model_server import (
    PROBE,
    REJECT,
    SLOW,
    STATS,
    ModelRepo,
    add_faulty_model,
    build_model_repo,
    model_server,
)
from vatic.cli.stack.mlserver import ModelServer
from vatic.connectors.inference import InferenceClient
from vatic.connectors.v2.types import Datatype, InferenceRequest, Tensor
from vatic.schemas import AvroCodec, InMemorySchemaStore, load_schema
from vatic.schemas.errors import DeadlineExceeded, InputProblem, ModelRejected, ModelServerUnavailable
from vatic.serving.config import ServiceConfig
from vatic.serving.core import Predictor, RetryPolicy

COLUMNS = ["sl", "sw", "pl", "pw"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> ModelRepo:
    built = build_model_repo(tmp_path_factory.mktemp("models") / "repo")
    add_faulty_model(built.root, "shifted", {"add": 0.5})
    return built


@pytest.fixture(scope="module")
def server(repo: ModelRepo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    srv = model_server(tmp_path_factory.mktemp("home"), repo.root, name="graph-mlserver")
    srv.start()
    yield srv
    srv.stop()


def service(graph: dict[str, Any], outputs: list[dict[str, Any]], **extra: Any) -> ServiceConfig:
    return ServiceConfig.model_validate(
        {"project": "test", "service": "graph", "model": {"name": "iris-graph", "outputs": outputs}, "graph": graph,
         **extra}
    )  # fmt: skip


def tags(name: str) -> dict[str, Any]:
    return {"name": name, "datatype": "BYTES", "columns": [name], "squeeze": True}


PREP = {
    "name": "prep",
    "model": "faulty",
    "inputs": [tags("tag"), {"name": "x", "datatype": "FP64", "columns": COLUMNS}],
    "outputs": [{"name": "tag", "datatype": "BYTES"}, {"name": "x", "datatype": "FP64", "shape": [4]}],
}
LR = {
    "name": "lr",
    "model": "iris",
    "inputs": [{"name": "input-0", "from": "prep.x", "shape": [4]}],
    "outputs": [{"name": "predict_proba", "datatype": "FP64", "shape": [3]}],
}
SHIFTED = {
    "name": "shifted",
    "model": "shifted",
    "inputs": [{"name": "predict_proba", "from": "lr.predict_proba"}, tags("tag2")],
    "outputs": [{"name": "predict_proba", "datatype": "FP64", "shape": [3]}],
}
BLEND = {
    "name": "blend",
    "kind": "ensemble",
    "members": ["lr", "shifted"],
    "combine": "weighted_mean",
    "weights": [3, 1],
}


def chain(**graph: Any) -> ServiceConfig:
    """prep (echo) -> lr (iris) -> shifted (echo + 0.5); blend = (3 lr + 1 shifted) / 4 = lr + 0.125."""
    steps = [dict(PREP), dict(LR), dict(SHIFTED), BLEND]
    for step in steps:
        step.update(graph.pop(step["name"], {}))
    return service({"steps": steps, **graph}, [{"name": "predict_proba", "rename": "proba"}])


def iris_events(repo: ModelRepo, n: int | None = None, **fields: Any) -> list[dict[str, Any]]:
    rows = repo.expected["rows"][:n]
    return [
        {"event_id": str(uuid.uuid4()), **dict(zip(COLUMNS, row, strict=True)), "tag": "ok", "tag2": "ok", **fields}
        for row in rows
    ]


def predict(config: ServiceConfig, server: ModelServer, events: list[dict[str, Any]], **kw: Any) -> Any:
    async def main() -> Any:
        async with InferenceClient(server.url) as client:
            predictor = Predictor(config, inference=client, **kw)
            try:
                return await predictor.predict(events)
            finally:
                await predictor.aclose()

    return asyncio.run(main())


def test_a_sequence_and_an_ensemble_answer_every_event_in_one_call_per_step(server, repo):
    events = iris_events(repo)
    result = predict(chain(), server, events)
    assert result.failures == []
    assert [i for i, _ in result.predictions] == list(range(len(events)))
    assert result.model_calls == 3  # prep, lr, shifted: each step one V2 request for the whole batch
    for (_, prediction), expected in zip(result.predictions, repo.expected["iris"]["predict_proba"], strict=True):
        proba = prediction["outputs"]["proba"]
        assert proba == pytest.approx([p + 0.125 for p in expected], abs=1e-9)
        steps = prediction["steps"]
        assert [(s["name"], s["model_name"], s["model_version"]) for s in steps] == [
            ("prep", "faulty", ""), ("lr", "iris", "1"), ("shifted", "shifted", ""),
        ]  # fmt: skip
        assert all(s["infer_ms"] > 0 for s in steps)
        assert prediction["model_name"] == "iris-graph"
        assert prediction["model_version"] == "+1+"
    codec = AvroCodec(InMemorySchemaStore(), "predictions-value", load_schema("prediction"))
    first = result.predictions[0][1]
    assert codec.decode(codec.encode(first))["steps"] == first["steps"]


def test_a_step_that_refuses_an_event_fails_only_that_event_and_names_itself(server, repo):
    events = iris_events(repo, 20)
    events[3]["tag2"] = REJECT  # refused by `shifted`, the third step, after prep and lr answered it
    events[11]["tag2"] = REJECT
    events[7]["tag"] = REJECT  # refused by `prep`, the first step
    events[15]["sl"] = "long"  # cannot be encoded into prep's FP64 input
    result = predict(chain(), server, events)
    failed = {f.index: f for f in result.failures}
    assert sorted(failed) == [3, 7, 11, 15]
    assert {i: (f.step, f.model_name, f.stage) for i, f in failed.items()} == {
        3: ("shifted", "shifted", "infer"), 11: ("shifted", "shifted", "infer"),
        7: ("prep", "faulty", "infer"), 15: ("prep", "faulty", "infer"),
    }  # fmt: skip
    assert isinstance(failed[3].error, ModelRejected)
    assert isinstance(failed[15].error, InputProblem)
    assert failed[3].error.step == "shifted"
    answered = [i for i, _ in result.predictions]
    assert sorted(answered + list(failed)) == list(range(20))  # every event exactly once


SWITCH_OUTPUTS = [{"name": "predict", "datatype": "INT64"}]


def switch_config(**route: Any) -> ServiceConfig:
    """sl > 6 -> big (iris: the class 0..2); otherwise small (the echo of the event's `fallback`: 7)."""
    big = {"name": "big", "model": "iris", "inputs": [{"name": "input-0", "datatype": "FP64", "columns": COLUMNS}],
           "outputs": SWITCH_OUTPUTS}  # fmt: skip
    fallback = {"name": "predict", "datatype": "INT64", "columns": ["fallback"], "squeeze": True}
    small = {"name": "small", "model": "faulty", "outputs": SWITCH_OUTPUTS, "inputs": [fallback]}
    switch = {"name": "route", "kind": "switch", "value": "sl", "cases": [{"when": {"gt": 6.0}, "to": "big"}],
              "default": "small", **route}  # fmt: skip
    return service({"steps": [big, small, switch]}, [{"name": "predict", "rename": "label"}])


def test_a_switch_routes_each_event_to_one_branch_and_merges_them_in_order(server, repo):
    events = iris_events(repo, fallback=7)
    events[5]["sl"] = "unknown"  # not a number: the switch cannot test it
    result = predict(switch_config(), server, events)
    assert [(f.index, f.step) for f in result.failures] == [(5, "route")]
    assert isinstance(result.failures[0].error, InputProblem)
    assert result.model_calls == 2  # one sub-batch per branch
    expected = repo.expected["iris"]["predict"]
    for i, prediction in result.predictions:
        big = events[i]["sl"] > 6.0
        assert prediction["outputs"]["label"] == (expected[i] if big else 7)
        assert [s["name"] for s in prediction["steps"]] == (["big"] if big else ["small"])
    assert len(result.predictions) == len(events) - 1


def test_a_switch_without_default_fails_the_events_no_case_takes(server, repo):
    config = switch_config(
        default=None, cases=[{"when": {"gt": 6.0}, "to": "big"}, {"when": {"le": 5.0}, "to": "small"}]
    )
    events = iris_events(repo, fallback=7)
    result = predict(config, server, events)
    unrouted = {i for i, e in enumerate(events) if 5.0 < e["sl"] <= 6.0}
    assert unrouted
    assert {f.index for f in result.failures} == unrouted
    assert all("no case of switch 'route' holds" in f.error.message for f in result.failures)
    assert len(result.predictions) + len(result.failures) == len(events)


def test_independent_steps_run_at_the_same_time(server, repo):
    probe = {"model": "faulty", "inputs": [tags("tag")], "outputs": [{"name": "tag", "datatype": "BYTES"}]}
    config = service(
        {"steps": [{"name": "a", **probe}, {"name": "b", **probe},
                   {"name": "both", "kind": "ensemble", "members": ["a", "b"], "combine": "vote"}]},
        [{"name": "tag"}],
    )  # fmt: skip
    result = predict(config, server, iris_events(repo, 4, tag=PROBE))
    assert [p["outputs"]["tag"] for _, p in result.predictions] == [PROBE] * 4

    async def stats() -> int:
        async with InferenceClient(server.url) as client:
            request = InferenceRequest(inputs=(Tensor("tag", Datatype.BYTES, (1,), [STATS]),))
            response = await client.infer("faulty", request)
            return int(response.output("max_in_flight").data[0])

    assert asyncio.run(stats()) == 2  # a and b were in the model at the same time


def test_an_outage_of_any_step_is_raised_for_the_batch_with_the_step_named(server, repo):
    config = chain(servers={"remote": {"url": "http://127.0.0.1:9"}}, shifted={"server": "remote"})
    with pytest.raises(ModelServerUnavailable) as caught:
        predict(config, server, iris_events(repo, 10), retry=RetryPolicy(budget_s=0.3, initial_backoff_s=0.05))
    assert caught.value.step == "shifted"
    assert "step 'shifted'" in caught.value.message


def test_a_step_deadline_is_an_outage_of_the_batch_naming_the_step(server, repo):
    config = chain(prep={"timeout_s": 0.3})
    with pytest.raises(DeadlineExceeded) as caught:
        predict(config, server, iris_events(repo, 3, tag=SLOW), retry=RetryPolicy(budget_s=0.2))
    assert caught.value.step == "prep"
    assert caught.value.deadline_s == pytest.approx(0.3)


def test_the_graph_deadline_bounds_the_whole_batch(server, repo):
    config = chain(timeout_s=0.5)
    with pytest.raises(DeadlineExceeded) as caught:
        predict(config, server, iris_events(repo, 3, tag=SLOW))
    assert caught.value.step is None
    assert "within its timeout_s of 0.5 s" in caught.value.message


def test_mean_and_vote_combine_per_event():
    from vatic.serving.core.graph import _mean, _vote

    assert _mean([[1.0, 2.0], [3.0, 6.0]], [1, 1]) == [2.0, 4.0]
    assert _mean([1.0, 4.0], [3, 1]) == pytest.approx(1.75)
    assert math.isnan(_mean([None, 1.0], [1, 1]))
    assert _vote(["a", "b", "b"], [1, 1, 1]) == "b"
    assert _vote(["a", "b"], [1, 1]) == "a"  # a tie goes to the earlier member
    with pytest.raises(ValueError, match="could not convert"):
        _mean(["x", 1.0], [1, 1])
