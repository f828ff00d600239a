"""Canary and shadow on real processes: Kafka, PyFlink, MLServer serving three versions side by side, the
gateway.

The same input topic runs through the job twice: once with a canary only (async topology), once with the same
canary and a shadow that fails a third of its calls (vectorized topology). The oracle of tests/streaming/test_job.py
holds for both runs; the serving answers of the two runs are identical, event by event (a failing shadow changes
nothing); the shadow's answers reach the shadow topic only, exactly once each; every entity gets the same version
in both runs and through the REST door.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import httpx
import yaml

from tests.fixtures.model_server import model_server
from tests.fixtures.rollout import MODEL, register, stage
from tests.serving.gateway.test_gateway import AUTH, Gateway, transaction
from tests.streaming.test_job import check_oracle, drain, make_run, produce, run_bounded
from vatic.connectors.kafka import KafkaSettings, ensure_topics, scan
from vatic.schemas import AvroCodec, load_schema, topic_subject
from vatic.serving.config import load_service
from vatic.serving.core.experiments import canary_share
from vatic.serving.runtimes.repository import write_repository

WEIGHT = 0.3


def _answers(predictions: list[dict]) -> dict[str, tuple[str, dict]]:
    return {p["event_id"]: (p["model_version"], p["outputs"]) for p in predictions}


def test_a_canary_splits_by_entity_and_a_failing_shadow_changes_no_answer(
    kafka_bootstrap, registry_url, features, tmp_path
):
    run = make_run(tmp_path, features, kafka_bootstrap, registry_url, batch_size=32, mode="async")
    root = tmp_path / "registry"
    register(root, "1")
    register(root, "2")
    register(root, "3", add="0.5", fail_every="3")
    stage(root, "1")
    body = yaml.safe_load((run.folder / "service.yaml").read_text())
    body["serving"] = {"tier": "low-code", "implementation": "faulty_runtime.FaultyModel"}
    body["registry"] = {"backend": "local", "uri": str(root), "stages": ["production"]}
    body["canary"] = {"version": "2", "weight": WEIGHT}
    with_shadow = body | {"shadow": {"version": "3"}}
    repository = tmp_path / "models"
    (run.folder / "service.yaml").write_text(yaml.safe_dump(with_shadow))
    write_repository(load_service(run.folder), repository, service_dir=run.folder)
    server = model_server(tmp_path / "home", repository, name="experiments-job-mlserver", parallel_workers=0)
    server.start()
    try:
        produce(run, kafka_bootstrap, 1_000)

        # run 1: the canary only, async topology
        (run.folder / "service.yaml").write_text(yaml.safe_dump(body))
        run_bounded(run, server, tmp_path / "checkpoints-1", tmp_path / "job-1.log", timeout_s=300)
        first_predictions, first_dead = drain(run, kafka_bootstrap, expected=len(run.sent))
        check_oracle(run, first_predictions, first_dead)

        # run 2: the same input, new outputs, a shadow failing every third call, vectorized topology
        prefix = run.topics["output"].removesuffix(".out") + "-shadowed"
        second = replace(run, topics={"input": run.topics["input"], "output": f"{prefix}.out", "dead": f"{prefix}.dlq"})
        shadow_topic = f"{prefix}.shadow"
        ensure_topics(
            [second.topics["output"], second.topics["dead"], shadow_topic], partitions=2,
            settings=KafkaSettings(bootstrap_servers=kafka_bootstrap),
        )  # fmt: skip
        streaming = with_shadow["streaming"] | {
            "output_topic": second.topics["output"], "dead_letter_topic": second.topics["dead"],
            "shadow_topic": shadow_topic, "consumer_group": f"{prefix}-group", "mode": "vectorized",
        }  # fmt: skip
        (run.folder / "service.yaml").write_text(yaml.safe_dump(with_shadow | {"streaming": streaming}))
        run_bounded(second, server, tmp_path / "checkpoints-2", tmp_path / "job-2.log", timeout_s=300)
        predictions, dead = drain(second, kafka_bootstrap, expected=len(run.sent))
        check_oracle(second, predictions, dead)

        # the gateway writes its shadow answers to the same topic (origin REST)
        writes = {
            "VATIC_GATEWAY_SHADOW_TOPICS": "true", "VATIC_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "VATIC_SCHEMA_REGISTRY_URL": registry_url,
        }  # fmt: skip
        gateway = Gateway(
            ["--service", str(run.folder), "--endpoint", f"echo={server.url}"], tmp_path / "gw.log", env=writes
        )
        try:
            with httpx.Client(headers=AUTH, timeout=30) as client:
                rest = {
                    f"c{i}": client.post(f"{gateway.url}/v1/services/echo/predict", json=transaction(i)).json()
                    for i in range(40)
                }
                metrics = client.get(f"{gateway.url}/metrics").text
        finally:
            gateway.stop()  # flushes what it still has on its way
    finally:
        server.stop()

    # a failing shadow changed no serving answer and no dead letter
    assert _answers(predictions) == _answers(first_predictions)
    assert sorted((d["event_id"], d["stage"]) for d in dead if d["event_id"]) == sorted(
        (d["event_id"], d["stage"]) for d in first_dead if d["event_id"]
    )

    # the canary: exactly the entities whose share is under the weight, the same in both runs and on REST
    codec = AvroCodec(run.store, topic_subject(run.topics["input"]), load_schema("transaction"))
    customer = {event_id: codec.decode(payload)["customer_id"] for event_id, payload in run.sent.items()}
    expected = {c: "2" if canary_share("echo", [c]) < WEIGHT else "1" for c in set(customer.values())}
    assert {customer[p["event_id"]]: p["model_version"] for p in predictions} == {
        customer[p["event_id"]]: expected[customer[p["event_id"]]] for p in predictions
    }
    assert set(expected.values()) == {"1", "2"}
    assert {c: answer["model_version"] for c, answer in rest.items()} == {c: expected[c] for c in rest}
    assert 'vatic_gateway_predictions_total{service="echo",version="2"}' in metrics

    # the shadow: its answers on the shadow topic only, once each, for the batches it answered
    shadow_codec = AvroCodec(run.store, topic_subject(shadow_topic), load_schema("prediction"))
    written = [shadow_codec.decode(r.value or b"") for r in scan(shadow_topic, run.settings(kafka_bootstrap))]
    shadows = [s for s in written if s["origin"] == "STREAM"]
    counts = Counter(s["event_id"] for s in shadows)
    assert [i for i, n in counts.items() if n > 1] == []
    main = _answers(predictions)
    assert set(counts) <= set(main)
    assert 0 < len(shadows) < len(main)  # a third of its calls failed
    for shadow in shadows:
        assert (shadow["model_name"], shadow["model_version"]) == (MODEL, "3")
        seen = main[shadow["event_id"]][1]["inputs_seen"]
        assert [round(x - 0.5, 6) for x in shadow["outputs"]["inputs_seen"] if x == x] == [
            round(x, 6) for x in seen if x == x
        ]
    assert {p["model_name"] for p in predictions} == {MODEL}

    # the REST door's shadow answers: on the same topic, for the calls the shadow answered, never twice
    from_rest = {s["event_id"]: s for s in written if s["origin"] == "REST"}
    assert len(from_rest) == len([s for s in written if s["origin"] == "REST"])
    answered = {answer["event_id"]: answer for answer in rest.values()}
    assert 0 < len(from_rest) < len(answered)  # a third of the shadow's calls failed
    for event_id, shadow in from_rest.items():
        assert shadow["model_version"] == "3"
        seen = answered[event_id]["outputs"]["inputs_seen"]
        assert [round(x - 0.5, 6) for x in shadow["outputs"]["inputs_seen"] if x == x] == [
            round(x, 6) for x in seen if x == x
        ]
    assert 'vatic_gateway_shadow_write_failures_total{service="echo"} 0.0' in metrics  # every answer written
