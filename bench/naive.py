"""The baseline of comparison 1: the per-event pipeline a user would write without vatic.

One event at a time: confluent-kafka ``poll`` -> Avro decode -> Feast SDK ``get_online_features`` -> one V2 REST
call to the stock MLServer -> ``produce`` the prediction (JSON) -> commit the input offset (asynchronously,
after the produce). Same events, model and features as vatic's job.

Run as ``python -m bench.naive --bootstrap HOST:PORT --input T --output T --model-url URL [--max-events N]``;
it stops after ``--max-events`` events or ``--idle-exit-s`` seconds without input.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid

import httpx
from confluent_kafka import Consumer, Producer

from bench.workload import MODEL, feast_store, feature_refs, model_row, v2_body
from vatic.cli.stack.settings import StackSettings
from vatic.connectors.kafka import KafkaSettings
from vatic.connectors.schema_registry import schema_source
from vatic.schemas import AvroCodec, load_schema, topic_subject


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--model-url", required=True)
    parser.add_argument("--max-events", type=int, default=0, help="stop after this many events (0: no limit)")
    parser.add_argument("--idle-exit-s", type=float, default=30.0)
    parser.add_argument("--schema-registry-url", default=None, help="the registry the events were written with")
    args = parser.parse_args(argv)

    # security (SASL, TLS) from VATIC_KAFKA_*, as every vatic client
    kafka = KafkaSettings(bootstrap_servers=args.bootstrap).librdkafka()
    kafka.pop("logger")
    consumer = Consumer(
        {
            **kafka,
            "group.id": f"bench-naive-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([args.input])
    producer = Producer({**kafka, "linger.ms": 0})
    source = schema_source(args.schema_registry_url, StackSettings().home / "schemas")
    codec = AvroCodec(source, topic_subject(args.input), load_schema("transaction"))
    store = feast_store()
    refs = feature_refs()
    http = httpx.Client(base_url=args.model_url, timeout=10.0)
    url = f"/v2/models/{MODEL}/infer"
    processed = 0
    idle_since = time.monotonic()
    try:
        while args.max_events <= 0 or processed < args.max_events:
            msg = consumer.poll(0.5)
            if msg is None:
                if time.monotonic() - idle_since > args.idle_exit_s:
                    break
                continue
            if msg.error():
                continue
            idle_since = time.monotonic()
            event = codec.decode(msg.value() or b"")
            online = store.get_online_features(
                features=refs,
                entity_rows=[{"customer_id": event["customer_id"], "merchant_id": event["merchant_id"]}],
                full_feature_names=True,
            ).to_dict()
            features = {ref: online[ref.replace(":", "__")][0] for ref in refs}
            response = http.post(url, json=v2_body([model_row(event, features)]))
            response.raise_for_status()
            probability = response.json()["outputs"][0]["data"][0]
            record = {"event_id": event["event_id"], "fraud_probability": probability, "model": MODEL}
            producer.produce(args.output, json.dumps(record).encode(), key=msg.key())
            producer.poll(0)
            consumer.commit(message=msg, asynchronous=True)
            processed += 1
    finally:
        producer.flush(30)
        consumer.close()
        http.close()
    print(json.dumps({"processed": processed}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
