"""The job meets a producer and a consumer vatic did not write: confluent-kafka's own ``AvroSerializer`` and
``AvroDeserializer`` against the stack's Confluent-compatible registry (Apicurio, ccompat v7).

One source of schema ids: the producers register through the registry, the job (``vatic stream run``) reads
the ids from the same registry. The current, an older and a newer compatible writer of ``transaction`` decode;
an incompatible writer is refused at registration (BACKWARD_TRANSITIVE, set by ``vatic schema register``); a
frame naming an id the registry never issued is dead-lettered naming the id, never decoded against another
schema; predictions and dead letters read back with ``AvroDeserializer``.
"""

from __future__ import annotations

import json
import struct
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from tests.serving.gateway.test_gateway import transaction
from tests.streaming.test_job import VATIC, make_run, run_bounded
from vatic.cli.stack.mlserver import ModelServer
from vatic.schemas import load_schema, topic_subject


def _writer(change: str) -> dict[str, Any]:
    schema = load_schema("transaction")
    fields = [f for f in schema["fields"]]
    if change == "older":  # an older producer: without the two newest optional fields
        fields = [f for f in fields if f["name"] not in ("device_hash", "ip_hash")]
    elif change == "newer":  # a newer producer: one more optional field the job's reader does not know
        fields = [*fields, {"name": "loyalty_tier", "type": ["null", "string"], "default": None}]
    elif change == "incompatible":  # amount as a string: no reader of the history could read it
        fields = [{**f, "type": "string"} if f["name"] == "amount" else f for f in fields]
    return {**schema, "fields": fields}


def _event(i: int, change: str) -> dict[str, Any]:
    event = transaction(i % 40, event_id=str(uuid.uuid4()), event_time=time.time_ns() // 1_000_000)
    if change == "newer":
        event["loyalty_tier"] = "gold"
    return event


def test_confluent_serializers_are_the_outside_party_of_the_stream(
    kafka_bootstrap: str, registry_url: str, server: ModelServer, features: Path, tmp_path: Path
) -> None:
    run = make_run(tmp_path, features, kafka_bootstrap, registry_url)
    topic = run.topics["input"]
    registered = subprocess.run(
        [str(VATIC), "schema", "register", str(run.folder), "--schema-registry-url", registry_url],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert registered.returncode == 0, registered.stderr
    assert f"{topic_subject(topic)}: version 1" in registered.stdout
    assert "BACKWARD_TRANSITIVE" in registered.stdout

    client = SchemaRegistryClient({"url": registry_url})
    context = SerializationContext(topic, MessageField.VALUE)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    sent: dict[str, str] = {}
    for change in ("current", "older", "newer"):
        serializer = AvroSerializer(client, json.dumps(_writer(change)), conf={"auto.register.schemas": True})
        for i in range(30):
            event = _event(i, change)
            producer.produce(topic, serializer(event, context), event["customer_id"].encode())
            sent[event["event_id"]] = change

    # an incompatible writer never gets an id: the registry refuses it under the subject's level
    refusing = AvroSerializer(client, json.dumps(_writer("incompatible")), conf={"auto.register.schemas": True})
    with pytest.raises(Exception, match=r"(?i)incompatib|409"):
        refusing({**_event(0, "current"), "amount": "12.50"}, context)

    # a frame with an id the registry never issued (taken far above any id it handed out)
    body = serializer(_event(1, "current"), context)[5:]
    stray_id = 987_654
    producer.produce(topic, b"\x00" + struct.pack(">I", stray_id) + body, b"stray")
    producer.flush(30)

    log = tmp_path / "job.log"
    run_bounded(run, server, tmp_path / "checkpoints", log, timeout_s=300)
    assert f"schemas: schema registry {registry_url}" in log.read_text()

    # read both topics back with confluent-kafka's own deserializer (writer schemas from the registry)
    deserializer = AvroDeserializer(client)
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"confluent-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([run.topics["output"], run.topics["dead"]])
    predictions: list[dict[str, Any]] = []
    dead: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and len(predictions) + len(dead) < len(sent) + 1:
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error():
                    continue
                value = deserializer(msg.value(), SerializationContext(msg.topic(), MessageField.VALUE))
                (predictions if msg.topic() == run.topics["output"] else dead).append(value)
    finally:
        consumer.close()

    # AvroDeserializer gives logical types as Python objects: the event id is a UUID
    assert {str(p["event_id"]) for p in predictions} == set(sent)  # current, older and newer writers all decoded
    assert len(predictions) == len(sent)
    assert len(dead) == 1
    stray = dead[0]
    assert (stray["stage"], stray["error_class"]) == ("decode", "UnknownSchemaError")
    assert str(stray_id) in stray["error_message"]
    assert stray["value"][1:5] == struct.pack(">I", stray_id)  # the original bytes, for a replay
