"""The two inference-graph examples on real processes, from the local registry that `vatic usecases prepare` wrote:

* ``examples/fraud_detection/ensemble``: LightGBM and XGBoost (both from one registry version) averaged;
* ``examples/product_categorization/graph``: the MiniLM embedder -> the category head, each its own MLServer model.

Each runs as a bounded stream job and behind the REST gateway: every event ends exactly once, both doors give the
same record (outputs, features, the steps' models and versions), a bad event is dead-lettered at the step that
could not encode it. The product graph answers what the combined single model answers for the same events.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fixtures.model_server import model_server
from tests.serving.gateway.test_gateway import AUTH, Gateway
from tests.streaming.test_job import Run, drain, run_bounded
from vatic.cli.stack.mlserver import ModelServer
from vatic.cli.stack.settings import StackSettings
from vatic.connectors.kafka import KafkaSettings, Producer, ensure_topics
from vatic.connectors.schema_registry import ConfluentSchemaRegistry
from vatic.examples.fraud_detection.events import make_world, transactions
from vatic.examples.layout import service_dir
from vatic.examples.product_categorization.events import products
from vatic.schemas import AvroCodec, load_schema, topic_subject
from vatic.serving.config import load_service
from vatic.serving.runtimes.repository import WrittenRepository, write_repository

FRAUD_ENSEMBLE = service_dir("fraud_detection").parent / "ensemble"
PRODUCT_GRAPH = service_dir("product_categorization").parent / "graph"


def local_copy(example: Path, folder: Path, topics: dict[str, str] | None = None) -> Path:
    """The example's service in ``folder``: its features repository by absolute path, the registry's latest version
    (this machine's production stage may name a version older than the graph), fresh topics when given."""
    body = yaml.safe_load((example / "service.yaml").read_text(encoding="utf-8"))
    body["features"]["repo"] = str((example / body["features"]["repo"]).resolve())
    body["registry"]["stages"] = []
    body["registry"].pop("refresh_s", None)
    if topics is not None:
        body["streaming"] |= {
            "input_topic": topics["input"], "output_topic": topics["output"], "dead_letter_topic": topics["dead"],
            "consumer_group": topics["input"], "checkpoint_interval_s": 2,
        }  # fmt: skip
    folder.mkdir(parents=True)
    (folder / "service.yaml").write_text(yaml.safe_dump(body), encoding="utf-8")
    return folder


def graph_run(example: Path, tmp_path: Path, kafka_bootstrap: str, registry_url: str) -> Run:
    prefix = f"graph-{uuid.uuid4().hex[:8]}"
    topics = {"input": f"{prefix}.in", "output": f"{prefix}.out", "dead": f"{prefix}.dlq"}
    folder = local_copy(example, tmp_path / "service", topics)
    ensure_topics(list(topics.values()), partitions=2, settings=KafkaSettings(bootstrap_servers=kafka_bootstrap))
    return Run(folder, topics, ConfluentSchemaRegistry(registry_url), registry_url)


@contextmanager
def served(folder: Path, root: Path, name: str) -> Iterator[tuple[ModelServer, WrittenRepository]]:
    """The service's model server, its repository written from the local registry."""
    written = write_repository(load_service(folder), root / "models", service_dir=folder,
                               registry_root=StackSettings().model_registry_root)  # fmt: skip
    server = model_server(root / "home", root / "models", name=name, parallel_workers=0)
    server.start()
    try:
        yield server, written
    finally:
        server.stop()


def produce(
    run: Run, bootstrap: str, schema: str, events: Iterable[dict[str, Any]], key: str
) -> dict[str, dict[str, Any]]:
    """Send ``events`` to the run's input topic; returns them as a reader decodes them, by event id."""
    codec = AvroCodec(run.store, topic_subject(run.topics["input"]), load_schema(schema))
    producer = Producer(run.settings(bootstrap))
    sent = {}
    for event in events:
        payload = codec.encode(event)
        run.sent[str(event["event_id"])] = payload
        sent[str(event["event_id"])] = codec.decode(payload)
        producer.produce(run.topics["input"], payload, str(event[key]).encode())
    producer.flush()
    return sent


def post_all(gateway: Gateway, service: str, events: dict[str, dict[str, Any]]) -> dict[str, httpx.Response]:
    with httpx.Client(headers=AUTH, timeout=60) as client:
        return {
            event_id: client.post(f"{gateway.url}/v1/services/{service}/predict",
                                  json={k: v for k, v in event.items() if v is not None})
            for event_id, event in events.items()
        }  # fmt: skip


def steps_of(answer: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(s["name"], s["model_name"], s["model_version"]) for s in answer["steps"]]


def check_once(run: Run, predictions: list[dict[str, Any]], dead: list[dict[str, Any]]) -> None:
    counts = Counter([p["event_id"] for p in predictions] + [d["event_id"] for d in dead])
    assert [i for i, n in counts.items() if n > 1] == []
    assert set(counts) == set(run.sent)


def test_the_fraud_ensemble_gives_the_same_records_on_both_paths(full_stack, kafka_bootstrap, registry_url, tmp_path):
    run = graph_run(FRAUD_ENSEMBLE, tmp_path, kafka_bootstrap, registry_url)
    events, bad = [], set()
    for i, (event, _) in enumerate(transactions(make_world(seed=11), 240)):
        if i % 60 == 17:
            event["merchant_category"] = "0000"  # not a category either member was trained with
            bad.add(str(event["event_id"]))
        events.append(event)
    sent = produce(run, kafka_bootstrap, "transaction", events, "customer_id")
    with served(run.folder, tmp_path, "fraud-ensemble-mlserver") as (server, written):
        members = {m.name: m for m in written.models}
        assert set(members) == {"fraud-lgbm", "fraud-xgb"}
        assert {m.registry_model for m in members.values()} == {"fraud-detector"}
        version = members["fraud-lgbm"].registry_version
        assert members["fraud-xgb"].registry_version == version  # one registry version holds both members
        assert (members["fraud-lgbm"].uri, members["fraud-xgb"].uri) == ("./model.txt", "./model.json")
        run_bounded(run, server, tmp_path / "checkpoints", tmp_path / "job.log", timeout_s=300)
        predictions, dead = drain(run, kafka_bootstrap, expected=len(run.sent))
        gateway = Gateway(["--service", str(run.folder), "--endpoint", f"fraud-ensemble={server.url}"],
                          tmp_path / "gateway.log")  # fmt: skip
        try:
            rest = post_all(gateway, "fraud-ensemble", sent)
        finally:
            gateway.stop()

    check_once(run, predictions, dead)
    assert {d["event_id"]: (d["stage"], d["step"], d["model_name"]) for d in dead} == {
        event_id: ("infer", "lgbm", "fraud-lgbm") for event_id in bad
    }
    for prediction in predictions:
        assert steps_of(prediction) == [("lgbm", "fraud-lgbm", version), ("xgb", "fraud-xgb", version)]
        assert (prediction["model_name"], prediction["model_version"]) == ("fraud-ensemble", f"{version}+{version}")
        assert 0.0 < prediction["outputs"]["fraud_probability"] < 1.0
        answer = rest[prediction["event_id"]]
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"] == prediction["outputs"]
        assert answer.json()["features"] == prediction["features"]
        assert steps_of(answer.json()) == steps_of(prediction)
    for event_id in bad:
        assert rest[event_id].status_code == 422
        assert (rest[event_id].json()["step"], rest[event_id].json()["error"]) == ("lgbm", "InputProblem")


def test_the_product_graph_answers_as_the_combined_model_on_both_paths(
    full_stack, kafka_bootstrap, registry_url, tmp_path
):
    run = graph_run(PRODUCT_GRAPH, tmp_path, kafka_bootstrap, registry_url)
    sent = produce(run, kafka_bootstrap, "product_created", [e for e, _ in products(96, seed=21)], "seller_id")
    single = local_copy(service_dir("product_categorization"), tmp_path / "single")
    with served(run.folder, tmp_path / "graph", "product-graph-mlserver") as (server, written), \
            served(single, tmp_path / "combined", "product-single-mlserver") as (single_server, _):  # fmt: skip
        assert [(m.name, m.implementation.rsplit(".", 1)[1]) for m in written.models] == [
            ("product-embedder", "ProductEmbedder"), ("product-head", "CategoryHead"),
        ]  # fmt: skip
        version = written.models[0].registry_version
        run_bounded(run, server, tmp_path / "checkpoints", tmp_path / "job.log", timeout_s=300)
        predictions, dead = drain(run, kafka_bootstrap, expected=len(run.sent))
        endpoints = ["--endpoint", f"product-graph={server.url}",
                     "--endpoint", f"product-categorization={single_server.url}"]  # fmt: skip
        gateway = Gateway(["--service", str(run.folder), "--service", str(single), *endpoints], tmp_path / "gw.log")
        try:
            rest = post_all(gateway, "product-graph", sent)
            combined = post_all(gateway, "product-categorization", sent)
        finally:
            gateway.stop()

    check_once(run, predictions, dead)
    assert dead == []
    for prediction in predictions:
        assert steps_of(prediction) == [("embed", "product-embedder", version), ("head", "product-head", version)]
        answer = rest[prediction["event_id"]].json()
        assert answer["outputs"]["category"] == prediction["outputs"]["category"]
        assert answer["outputs"]["scores"] == pytest.approx(prediction["outputs"]["scores"], abs=1e-6)
        assert steps_of(answer) == steps_of(prediction)
        one = combined[prediction["event_id"]].json()
        assert one["model_version"] == version
        assert one["outputs"]["category"] == prediction["outputs"]["category"]
        assert one["outputs"]["scores"] == pytest.approx(prediction["outputs"]["scores"], abs=1e-5)
