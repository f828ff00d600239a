"""What the suite reports about a stalled case, checked against a real broker and Kafka's own CLI: an open
transaction blocks read_committed readers (last stable offset below the high watermark) until it ends."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from confluent_kafka import Producer

from tests.reliability import forensics
from vatic.cli.stack.artifacts import Artifacts
from vatic.cli.stack.settings import StackSettings


def test_an_open_transaction_shows_as_blocked_offsets_and_in_kafkas_own_listing(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic("forensics", partitions=2)
    prefix = f"forensics-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"{prefix}-0"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"pending", partition=1)
    producer.flush(30)

    offsets = forensics.stable_offsets(kafka_bootstrap, [topic])
    assert offsets[0] == f"{topic}[0] high watermark 0, last stable 0"
    assert offsets[1].endswith("(BLOCKED)")
    libs = Artifacts(StackSettings().cache).require_kafka()
    listed = forensics.open_transactions(libs, kafka_bootstrap, prefix)
    assert len(listed) == 1
    assert listed[0].startswith(f"open transaction {prefix}-0")

    producer.commit_transaction(30)
    assert not any("BLOCKED" in line for line in forensics.stable_offsets(kafka_bootstrap, [topic]))
    assert forensics.open_transactions(libs, kafka_bootstrap, prefix)[0].startswith("no open transaction")
