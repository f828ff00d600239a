"""An inference graph on both paths, real processes: Kafka, the schema registry, PyFlink (`vatic stream run`),
MLServer, Feast, and the REST gateway (`vatic gateway`).

The graph: ``prep`` (the echo model) -> ``shift`` (the echo adding 0.5, reading ``prep.x``); ``avg`` = the mean of
both (x + 0.25). Events refused by ``prep`` (a marker in ``merchant_category``) and by ``shift`` (a marker in
``currency``, which only ``shift`` reads) are dead-lettered at their step; a customer without features at
enrichment. Every event ends exactly once, and the REST door answers each event the same way, step by step (its
gateway calls the model server over gRPC, the job over REST); so does the gRPC door's Predict, and a step's model is
reachable by its own name through the V2 pass-through.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
import yaml

from tests.fixtures.echo import CHANNELS, COLUMNS
from tests.fixtures.model_server import REJECT, ModelRepo, add_faulty_model, build_model_repo
from tests.serving.gateway.test_gateway import AUTH, Gateway, grpc_call, transaction
from tests.streaming.test_job import Run, drain, make_run, run_bounded
from vatic.connectors.kafka import Producer
from vatic.connectors.v2 import grpc as wire
from vatic.schemas import AvroCodec, load_schema, topic_subject

WIDTH = len(COLUMNS)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> ModelRepo:
    """The job tests' models (the conftest's server serves these) and ``shifted``."""
    built = build_model_repo(tmp_path_factory.mktemp("models") / "repo", iris=False)
    add_faulty_model(built.root, "shifted", {"add": 0.5})
    return built


def graph_body(body: dict[str, Any]) -> dict[str, Any]:
    x = {"name": "x", "datatype": "FP64", "columns": list(COLUMNS), "encodings": {"channel": dict(CHANNELS)}}
    tag = {"name": "tag", "datatype": "BYTES", "columns": ["merchant_category"], "squeeze": True}
    vector = {"name": "x", "datatype": "FP64", "shape": [WIDTH]}
    steps = [
        {"name": "prep", "model": "faulty", "inputs": [tag, x],
         "outputs": [{"name": "tag", "datatype": "BYTES"}, vector]},
        {"name": "shift", "model": "shifted", "outputs": [vector],
         "inputs": [{"name": "x", "from": "prep.x"},
                    {"name": "cur", "datatype": "BYTES", "columns": ["currency"], "squeeze": True}]},
        {"name": "avg", "kind": "ensemble", "members": ["prep", "shift"], "combine": "mean", "outputs": [vector]},
    ]  # fmt: skip
    return body | {
        "model": {"name": "echo-graph", "outputs": [{"name": "x", "rename": "blended"}]},
        "graph": {"steps": steps},
    }


def produce(run: Run, kafka_bootstrap: str, n: int) -> dict[str, tuple[str, str | None]]:
    """``n`` events; returns the expected dead letters: event id -> (stage, step)."""
    codec = AvroCodec(run.store, topic_subject(run.topics["input"]), load_schema("transaction"))
    producer = Producer(run.settings(kafka_bootstrap))
    expected: dict[str, tuple[str, str | None]] = {}
    for i in range(n):
        event_id = str(uuid.uuid4())
        event = transaction(i % 40, event_id=event_id, event_time=time.time_ns() // 1_000_000)
        if i % 50 == 7:
            event["currency"] = REJECT
            expected[event_id] = ("infer", "shift")
        elif i % 50 == 13:
            event["merchant_category"] = REJECT
            expected[event_id] = ("infer", "prep")
        elif i % 50 == 29:
            event["customer_id"] = f"ghost-{i}"
            expected[event_id] = ("enrich", None)
        payload = codec.encode(event)
        run.sent[event_id] = payload
        producer.produce(run.topics["input"], payload, event["customer_id"].encode())
    producer.flush()
    return expected


def plain(value: Any) -> Any:
    if isinstance(value, list):
        return [plain(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def answer(prediction: dict[str, Any]) -> tuple[Any, ...]:
    steps = [(s["name"], s["model_name"], s["model_version"]) for s in prediction["steps"]]
    return plain(prediction["outputs"]["blended"]), prediction["model_name"], prediction["model_version"], steps


def test_a_graph_gives_the_same_records_on_the_stream_and_on_rest(kafka_bootstrap, registry_url, server, features,
                                                                    tmp_path):  # fmt: skip
    run = make_run(tmp_path, features, kafka_bootstrap, registry_url, batch_size=32)
    body = yaml.safe_load((run.folder / "service.yaml").read_text())
    (run.folder / "service.yaml").write_text(yaml.safe_dump(graph_body(body)))
    expected_dead = produce(run, kafka_bootstrap, 300)
    run_bounded(run, server, tmp_path / "checkpoints", tmp_path / "job.log", timeout_s=300)
    predictions, dead = drain(run, kafka_bootstrap, expected=len(run.sent))

    # the stream: every event once, dead letters at the step that refused them
    counts = Counter([p["event_id"] for p in predictions] + [d["event_id"] for d in dead])
    assert [i for i, c in counts.items() if c > 1] == []
    assert set(counts) == set(run.sent)
    assert {d["event_id"]: (d["stage"], d["step"]) for d in dead} == expected_dead
    by_step = {d["step"]: d["model_name"] for d in dead if d["step"]}
    assert by_step == {"prep": "faulty", "shift": "shifted"}
    assert all(REJECT.encode() in (d["model_response"] or b"") for d in dead if d["step"])
    codec = AvroCodec(run.store, topic_subject(run.topics["input"]), load_schema("transaction"))
    events = {event_id: codec.decode(payload) for event_id, payload in run.sent.items()}
    for prediction in predictions:
        blended = prediction["outputs"]["blended"]
        assert blended[0] == pytest.approx(events[prediction["event_id"]]["amount"] + 0.25)  # mean(x, x + 0.5)
        assert [s["name"] for s in prediction["steps"]] == ["prep", "shift"]

    # the REST door: the same answer for every event, the same refusals, naming the same steps; this gateway calls
    # the model server over gRPC (raw tensors), the job called it over REST
    gateway = Gateway(["--service", str(run.folder), "--endpoint", f"echo={server.call_url('grpc')}"],
                      tmp_path / "gw.log")  # fmt: skip
    step_input = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [2, WIDTH], "data": [0.25] * (2 * WIDTH)}]}
    try:
        with httpx.Client(headers=AUTH, timeout=30) as client:
            assert client.get(f"{gateway.url}/v2/health/ready").status_code == 200
            rest = {}
            for event_id, event in events.items():
                fields = {k: v for k, v in event.items() if v is not None}
                rest[event_id] = client.post(f"{gateway.url}/v1/services/echo/predict", json=fields)
            # the gRPC door's Predict runs the same graph
            by_grpc = {}
            for prediction in predictions[:5]:
                request = wire.message("vatic.PredictRequest")(
                    service="echo",
                    event_json=json.dumps(
                        {k: v for k, v in events[prediction["event_id"]].items() if v is not None}
                    ).encode(),
                )
                answered = grpc_call(gateway, "Predict", request, service=wire.GATEWAY_SERVICE)
                by_grpc[prediction["event_id"]] = json.loads(answered.prediction_json)
            # a step's model by its own name through the V2 pass-through: the model server's own answer
            passed = client.post(f"{gateway.url}/v2/models/shifted/infer", json=step_input)
            direct = httpx.post(f"{server.url}/v2/models/shifted/infer", json=step_input, timeout=30)
    finally:
        gateway.stop()
    assert passed.status_code == 200, passed.text
    assert passed.json()["outputs"][0]["data"] == direct.json()["outputs"][0]["data"] == [0.75] * (2 * WIDTH)
    for prediction in predictions[:5]:
        assert answer(by_grpc[prediction["event_id"]]) == answer(prediction)
    for prediction in predictions:
        response = rest[prediction["event_id"]]
        assert response.status_code == 200, response.text
        assert answer(response.json()) == answer(prediction)
        assert response.json()["origin"] == "REST"
    for letter in dead:
        response = rest[letter["event_id"]]
        assert response.status_code == 422, response.text
        assert (response.json().get("step"), response.json()["stage"]) == (letter["step"], letter["stage"])
