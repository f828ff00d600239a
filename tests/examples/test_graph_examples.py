"""The two inference-graph examples on real processes (one job, one gateway for both), from the local registry that
`vatic usecases prepare` wrote:

* ``examples/fraud_detection/ensemble``: LightGBM and XGBoost (both from one registry version) averaged;
* ``examples/product_categorization/graph``: the MiniLM embedder -> the category head, each its own MLServer model.

Each runs as a bounded stream job and behind the REST gateway: every event ends exactly once, both doors give the
same record (outputs, features, the steps' models and versions), a bad event is dead-lettered at the step that
could not encode it.
"""

from __future__ import annotations

import subprocess
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fixtures.model_server import model_server
from tests.serving.gateway.test_gateway import AUTH, Gateway
from tests.streaming.test_job import VATIC, Run, drain, wait_bounded
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


def post_all(
    gateway: Gateway, service: str, events: dict[str, dict[str, Any]], *, keep_none: bool = True
) -> dict[str, httpx.Response]:
    """Every event through the REST door; ``keep_none=False`` leaves the fields whose value is null out."""
    with httpx.Client(headers=AUTH, timeout=60) as client:
        return {
            event_id: client.post(f"{gateway.url}/v1/services/{service}/predict",
                                  json={k: v for k, v in event.items() if keep_none or v is not None})
            for event_id, event in events.items()
        }  # fmt: skip


def steps_of(answer: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(s["name"], s["model_name"], s["model_version"]) for s in answer["steps"]]


def check_once(run: Run, predictions: list[dict[str, Any]], dead: list[dict[str, Any]]) -> None:
    counts = Counter([p["event_id"] for p in predictions] + [d["event_id"] for d in dead])
    assert [i for i, n in counts.items() if n > 1] == []
    assert set(counts) == set(run.sent)


def run_job(runs: list[tuple[Run, ModelServer]], tmp_path: Path, timeout_s: float = 300) -> None:
    """Both services as ONE bounded job (one pipeline each), to their end."""
    argv = [str(VATIC), "stream", "run", *(str(run.folder) for run, _ in runs)]
    for run, server in runs:
        argv += ["--model-url", server.call_url(load_service(run.folder).serving.protocol)]
    argv += ["--checkpoint-dir", str(tmp_path / "checkpoints"), "--no-create-topics", "--schema-registry-url",
             runs[0][0].registry, "--bounded", "--metrics-port", "0"]  # fmt: skip
    log = tmp_path / "job.log"
    job = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log.open("ab"), start_new_session=True)
    wait_bounded(job, log, timeout_s)


def test_the_graph_examples_give_the_same_records_on_both_paths(full_stack, kafka_bootstrap, registry_url, tmp_path):
    fraud = graph_run(FRAUD_ENSEMBLE, tmp_path / "fraud", kafka_bootstrap, registry_url)
    product = graph_run(PRODUCT_GRAPH, tmp_path / "product", kafka_bootstrap, registry_url)
    events, bad = [], set()
    for i, (event, _) in enumerate(transactions(make_world(seed=11), 240)):
        if i % 60 == 17:
            event["merchant_category"] = "0000"  # not a category either member was trained with
            bad.add(str(event["event_id"]))
        events.append(event)
    fraud_sent = produce(fraud, kafka_bootstrap, "transaction", events, "customer_id")
    product_sent = produce(product, kafka_bootstrap, "product_created", [e for e, _ in products(96, seed=21)],
                           "seller_id")  # fmt: skip
    with ExitStack() as servers:
        fraud_server, fraud_written = servers.enter_context(served(fraud.folder, tmp_path / "fraud", "fraud-mls"))
        product_server, product_written = servers.enter_context(
            served(product.folder, tmp_path / "product", "product-mls")
        )
        run_job([(fraud, fraud_server), (product, product_server)], tmp_path)
        fraud_out = drain(fraud, kafka_bootstrap, expected=len(fraud.sent))
        product_out = drain(product, kafka_bootstrap, expected=len(product.sent))
        # the product graph's embedding crosses as raw bytes: its service calls its model server over gRPC
        assert load_service(product.folder).serving.protocol == "grpc"
        services = ["--service", str(fraud.folder), "--endpoint", f"fraud-ensemble={fraud_server.url}",
                    "--service", str(product.folder), "--endpoint",
                    f"product-graph={product_server.call_url('grpc')}"]  # fmt: skip
        gateway = Gateway(services, tmp_path / "gateway.log")
        try:
            fraud_rest = post_all(gateway, "fraud-ensemble", fraud_sent)
            # a REST caller may leave optional fields out: the gateway reads them as the stream's Avro events carry them
            product_rest = post_all(gateway, "product-graph", product_sent, keep_none=False)
        finally:
            gateway.stop()
    check_fraud_ensemble(fraud, fraud_written, *fraud_out, fraud_rest, bad)
    check_product_graph(product, product_written, *product_out, product_rest)


def check_fraud_ensemble(
    run: Run, written: WrittenRepository, predictions: list[dict[str, Any]], dead: list[dict[str, Any]],
    rest: dict[str, httpx.Response], bad: set[str],
) -> None:  # fmt: skip
    members = {m.name: m for m in written.models}
    assert set(members) == {"fraud-lgbm", "fraud-xgb"}
    assert {m.registry_model for m in members.values()} == {"fraud-detector"}
    version = members["fraud-lgbm"].registry_version
    assert members["fraud-xgb"].registry_version == version  # one registry version holds both members
    assert (members["fraud-lgbm"].uri, members["fraud-xgb"].uri) == ("./model.txt", "./model.json")
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


def check_product_graph(
    run: Run, written: WrittenRepository, predictions: list[dict[str, Any]], dead: list[dict[str, Any]],
    rest: dict[str, httpx.Response],
) -> None:  # fmt: skip
    """(The halves answer what the combined model answers: tests/serving/runtimes/test_lowcode.py, same runtime.)"""
    assert [(m.name, (m.implementation or "").rsplit(".", 1)[1]) for m in written.models] == [
        ("product-embedder", "ProductEmbedder"), ("product-head", "CategoryHead"),
    ]  # fmt: skip
    version = written.models[0].registry_version
    check_once(run, predictions, dead)
    assert dead == []
    for prediction in predictions:
        assert steps_of(prediction) == [("embed", "product-embedder", version), ("head", "product-head", version)]
        answer = rest[prediction["event_id"]]
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"]["category"] == prediction["outputs"]["category"]
        assert answer.json()["outputs"]["scores"] == pytest.approx(prediction["outputs"]["scores"], abs=1e-6)
        assert steps_of(answer.json()) == steps_of(prediction)
