"""The batched consumer peer: what a Python team would write instead of a Flink job.

One process per core, all in one consumer group: a confluent-kafka loop ``consume(batch_size)`` -> vatic's own
:class:`vatic.streaming.batch.BatchProcessor` (Avro decode, ONE feature read and ONE V2 call for the batch,
encode, dead letters - exactly what each micro-batch of vatic's job runs) -> a **transactional** produce of the
outputs, with the consumed offsets sent into the same transaction (exactly-once: ``init_transactions``,
``send_offsets_to_transaction``, ``commit_transaction``). A transaction is committed every
``--commit-interval-ms`` (0: after every batch), when the input goes idle, when partitions are revoked and on
exit. The input is read ``read_committed``. So the only difference from vatic's job is the framework: Flink
(checkpoints, operators, Python workers over Beam) vs a plain consumer loop.

Run as ``python -m bench.peer --service-dir DIR --model-url URL --group G --member I [--members N]
[--idle-exit-s S]``; topics, batch size and retry budget come from the service config (``streaming``), Kafka
security from ``VATIC_KAFKA_*``. ``--members N``: a member that holds more than its share of the input's
partitions (the others have not joined yet) keeps them paused until the group is balanced, so that a drain is
not measured on one process. Prints ``{"processed": n, "transactions": t, "batches": b}`` on stdout at exit;
SIGINT or SIGTERM ends it after committing the open transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from vatic.serving.core import SourceRecord
from vatic.streaming.batch import PREDICTION, BatchProcessor
from vatic.streaming.settings import JobSettings

_STARTED = time.monotonic()


def _log(message: str) -> None:
    """One progress line on stderr (the harness keeps it in the member's log), with seconds since the start."""
    print(f"[peer {time.monotonic() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


class Peer:
    """The consume -> process -> transactional produce loop of one group member."""

    def __init__(self, args: argparse.Namespace) -> None:
        settings = JobSettings(
            service_dir=args.service_dir,
            model_url=args.model_url,
            bootstrap_servers=args.bootstrap,
            schema_registry_url=args.schema_registry_url,
            schema_store=args.schema_store,
            redis_url=args.redis_url,
        )
        self.processor = BatchProcessor(settings)
        self.processor.open()
        spec = self.processor.config.streaming
        assert spec is not None  # open() refuses a service without one
        self.input, self.output, self.dead = spec.input_topic, spec.output_topic, spec.dead_letter_topic
        self.batch_size = args.batch_size or spec.batch_size
        self.commit_interval_s = args.commit_interval_ms / 1000
        self.idle_exit_s = args.idle_exit_s
        self.members = args.members
        kafka = settings.kafka().librdkafka()
        kafka.pop("logger", None)
        self.consumer = Consumer(
            {
                **kafka,
                "group.id": args.group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "log_level": 3,
            }
        )
        self.producer = Producer(
            {
                **kafka,
                "transactional.id": f"{args.group}-{args.member}",
                "linger.ms": 1,
                "log_level": 3,
            }
        )
        _log("processor open")
        self.producer.init_transactions(60)
        _log("transactions initialized")
        metadata = self.consumer.list_topics(self.input, timeout=30).topics[self.input]
        self.share = math.ceil(max(1, len(metadata.partitions)) / max(1, self.members))
        self.loop = asyncio.new_event_loop()
        self.open_since: float | None = None  # monotonic start of the open transaction
        self.processed = self.transactions = self.batches = 0
        self.stopping = False

    # --- the group ------------------------------------------------------------------------------------

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.assign(partitions)
        if self.members > 1 and len(partitions) > self.share:
            consumer.pause(partitions)  # the others have not joined yet: wait for the balanced assignment
        else:
            consumer.resume(partitions)
        _log(f"assigned {len(partitions)} partition(s)")

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.commit()  # what was processed from them is committed before another member takes them

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.abort()

    # --- transactions ---------------------------------------------------------------------------------

    def commit(self) -> None:
        """Commit the open transaction with the consumed positions (no-op when none is open)."""
        if self.open_since is None:
            return
        positions = [tp for tp in self.consumer.position(self.consumer.assignment()) if tp.offset >= 0]
        try:
            self.producer.send_offsets_to_transaction(positions, self.consumer.consumer_group_metadata(), 30)
            self.producer.commit_transaction(60)
        except KafkaException as exc:
            if not exc.args[0].txn_requires_abort():
                raise
            self.abort()
            return
        self.open_since = None
        self.transactions += 1

    def abort(self) -> None:
        """Abort the open transaction and rewind to the committed offsets (its inputs are processed again)."""
        if self.open_since is None:
            return
        self.producer.abort_transaction(60)
        self.open_since = None
        assignment = self.consumer.assignment()
        if assignment:
            for tp in self.consumer.committed(assignment, timeout=30):
                self.consumer.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else
                                                  OFFSET_BEGINNING))  # fmt: skip

    # --- the loop -------------------------------------------------------------------------------------

    def run(self) -> None:
        self.consumer.subscribe([self.input], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost)
        idle_since = time.monotonic()
        while not self.stopping:
            messages = [m for m in self.consumer.consume(self.batch_size, 0.1) if not m.error()]
            now = time.monotonic()
            if not messages:
                self.commit()  # idle: nothing to wait for
                # idle: after its share of the input, or long after the start (the group never balanced)
                limit = self.idle_exit_s if self.processed else max(60.0, self.idle_exit_s)
                if self.idle_exit_s > 0 and now - idle_since > limit:
                    _log(f"idle for {limit:.0f} s: exiting")
                    break
                continue
            idle_since = now
            self.process(messages)
            if self.open_since is not None and time.monotonic() - self.open_since >= self.commit_interval_s:
                self.commit()
        self.commit()

    def process(self, messages: list[Any]) -> None:
        records = [self._record(m) for m in messages]
        outputs = self.loop.run_until_complete(self.processor.process(records))
        if self.open_since is None:
            self.producer.begin_transaction()
            self.open_since = time.monotonic()
        for out in outputs:
            topic = self.output if out.kind == PREDICTION else self.dead
            self.producer.produce(topic, out.value, out.key, headers=list(out.headers.items()))
        self.producer.poll(0)
        self.processed += len(records)
        self.batches += 1

    @staticmethod
    def _record(m: Any) -> SourceRecord:
        return SourceRecord(
            topic=m.topic(), partition=m.partition(), offset=m.offset(), key=m.key(), value=m.value(),
            timestamp_ms=m.timestamp()[1], headers=tuple(m.headers() or ()),
        )  # fmt: skip

    def close(self) -> None:
        self.consumer.close()
        self.loop.run_until_complete(self.processor.aclose())
        self.loop.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--service-dir", type=Path, required=True)
    parser.add_argument("--model-url", required=True)
    parser.add_argument("--bootstrap", default=None, help="default: VATIC_KAFKA_BOOTSTRAP_SERVERS")
    parser.add_argument("--schema-registry-url", default=None)
    parser.add_argument("--schema-store", type=Path, default=None)
    parser.add_argument("--redis-url", default=None, help="default: the feature repo's online store")
    parser.add_argument("--group", required=True, help="consumer group (and transactional id prefix)")
    parser.add_argument("--member", type=int, default=0, help="this process's index in the group")
    parser.add_argument("--members", type=int, default=1, help="processes in the group")
    parser.add_argument("--batch-size", type=int, default=0, help="default: streaming.batch_size")
    parser.add_argument("--commit-interval-ms", type=float, default=100.0, help="0: a transaction per batch")
    parser.add_argument(
        "--idle-exit-s",
        type=float,
        default=0.0,
        help="exit this long after the last input (0: never; 60 s at least before the first)",
    )
    args = parser.parse_args(argv)
    peer = Peer(args)

    def stop(signum: int, frame: FrameType | None) -> None:
        peer.stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        peer.run()
    finally:
        peer.close()
    print(json.dumps({"processed": peer.processed, "transactions": peer.transactions, "batches": peer.batches}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
