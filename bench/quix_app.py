"""The Quix Streams peer: a Quix Streams application doing what vatic's job does, exactly-once.

A ``StreamingDataFrame`` over the input topic (raw bytes) applies vatic's own
:class:`vatic.streaming.batch.BatchProcessor` to each message (Quix Streams processes one message at a time: one
feature read and one V2 call per event, as a Quix user writes it) and writes the output to the prediction or the
dead-letter topic (dynamic ``to_topic``). ``processing_guarantee="exactly-once"``: the app's producer is
transactional and the offsets commit with the outputs every ``--commit-interval-s`` (Quix's default 5 s).

Runs in its own environment (quixstreams needs ``confluent-kafka<2.13``; ``bench/quixenv.py`` builds it):
``python -m bench.quix_app --service-dir DIR --model-url URL --group G [--idle-exit-s S]``. One process per core,
all in one consumer group. Prints ``{"processed": n}`` at exit; SIGINT or SIGTERM ends it (Quix commits first).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

from quixstreams import Application, message_context
from quixstreams.models.serializers import SerializationContext, Serializer

from vatic.serving.core import SourceRecord
from vatic.streaming.batch import PREDICTION, BatchProcessor, Output
from vatic.streaming.settings import JobSettings


class OutputValue(Serializer):
    """Serializes a :class:`vatic.streaming.batch.Output` to its encoded Avro bytes."""

    def __call__(self, value: Output, ctx: SerializationContext) -> bytes:
        return value.value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quix_app", description=__doc__.split("\n\n")[0])
    parser.add_argument("--service-dir", type=Path, required=True)
    parser.add_argument("--model-url", required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--schema-registry-url", default=None)
    parser.add_argument("--schema-store", type=Path, default=None)
    parser.add_argument("--group", required=True)
    parser.add_argument("--commit-interval-s", type=float, default=5.0, help="Quix's default: 5 s")
    parser.add_argument("--idle-exit-s", type=float, default=0.0, help="stop after this long without input")
    args = parser.parse_args(argv)
    settings = JobSettings(
        service_dir=args.service_dir, model_url=args.model_url, bootstrap_servers=args.bootstrap,
        schema_registry_url=args.schema_registry_url, schema_store=args.schema_store,
    )  # fmt: skip
    processor = BatchProcessor(settings)
    processor.open()
    spec = processor.config.streaming
    assert spec is not None
    loop = asyncio.new_event_loop()
    # security (SASL, TLS) from VATIC_KAFKA_*, as every vatic client; the bootstrap servers are Quix's own argument
    kafka = settings.kafka().librdkafka()
    extra = {k: v for k, v in kafka.items() if k not in ("bootstrap.servers", "logger", "client.id")}
    app = Application(
        broker_address=args.bootstrap,
        consumer_extra_config=extra,
        producer_extra_config=extra,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        commit_interval=args.commit_interval_s,
        auto_create_topics=False,
        loglevel="WARNING",
    )
    source = app.topic(spec.input_topic, value_deserializer="bytes", key_deserializer="bytes")
    output = app.topic(spec.output_topic, value_serializer=OutputValue(), key_serializer="bytes")
    dead = app.topic(spec.dead_letter_topic, value_serializer=OutputValue(), key_serializer="bytes")
    state = {"processed": 0, "last": time.monotonic()}

    def handle(value: bytes, key: bytes | None, timestamp: int, headers: Any) -> Output:
        ctx = message_context()
        record = SourceRecord(
            topic=ctx.topic, partition=ctx.partition, offset=ctx.offset, key=key, value=value,
            timestamp_ms=timestamp, headers=tuple(headers or ()),
        )  # fmt: skip
        (out,) = loop.run_until_complete(processor.process([record]))
        state["processed"] += 1
        state["last"] = time.monotonic()
        return out

    sdf = app.dataframe(source)
    sdf = sdf.apply(handle, metadata=True)
    sdf.to_topic(lambda value, key, ts, headers: output if value.kind == PREDICTION else dead)

    if args.idle_exit_s > 0:

        def idle_watch() -> None:
            while time.monotonic() - state["last"] < args.idle_exit_s:
                time.sleep(0.5)
            app.stop()

        threading.Thread(target=idle_watch, daemon=True).start()
    try:
        app.run()
    finally:
        loop.run_until_complete(processor.aclose())
        loop.close()
    print(json.dumps({"processed": state["processed"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
