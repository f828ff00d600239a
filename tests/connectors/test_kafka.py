"""The Kafka clients against the real local broker (KRaft): nothing lost, nothing committed too early."""

from __future__ import annotations

import uuid

import pytest

from vatic.connectors.kafka import Consumer, KafkaSettings, Producer, Record, check_topics, ensure_topics, scan
from vatic.schemas.errors import DeliveryFailed, RecordTooLarge, TopicNotFound


def _drain(consumer: Consumer, expected: int, rounds: int = 60) -> list[Record]:
    records: list[Record] = []
    for _ in range(rounds):
        records += consumer.poll_batch(1000, timeout=0.5)
        if len(records) >= expected:
            # one more short poll to catch anything beyond what we expect (duplicates)
            records += consumer.poll_batch(1000, timeout=0.5)
            break
    return records


def test_produced_records_are_consumed_once_with_their_bytes(kafka_bootstrap, new_topic):
    topic = new_topic("bytes", partitions=3)
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    producer = Producer(settings)
    sent = {f"k{i}".encode(): uuid.uuid4().bytes * 3 for i in range(2000)}
    for key, value in sent.items():
        producer.produce(topic, value, key, headers=[("h", b"1")])
    delivered = producer.flush()
    assert len(delivered) == len(sent)
    assert {d.partition for d in delivered} == {0, 1, 2}

    consumer = Consumer([topic], f"g-{uuid.uuid4().hex}", settings)
    try:
        records = _drain(consumer, len(sent))
    finally:
        consumer.close()
    assert len(records) == len(sent)
    assert {r.key: r.value for r in records} == sent
    assert all(r.headers == [("h", b"1")] for r in records)


def test_offsets_advance_only_over_confirmed_prefix(kafka_bootstrap, new_topic):
    topic = new_topic("confirm")
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    producer = Producer(settings)
    for i in range(10):
        producer.produce(topic, str(i).encode())
    producer.flush()

    group = f"g-{uuid.uuid4().hex}"
    first = Consumer([topic], group, settings)
    records = _drain(first, 10)
    assert [r.offset for r in records] == list(range(10))
    # outputs confirmed out of order: 0,1,2 and 5,6 - record 3 is still in flight
    first.confirm([records[i] for i in (5, 6, 0, 1, 2)])
    assert first.pending() == 5
    first.close()

    second = Consumer([topic], group, settings)
    try:
        assert second.committed(topic, [0]) == {0: 3}
        replayed = _drain(second, 7)
    finally:
        second.close()
    # everything from the first unconfirmed record is delivered again; nothing before it
    assert [r.value for r in replayed] == [str(i).encode() for i in range(3, 10)]


def test_unconfirmed_records_are_never_committed(kafka_bootstrap, new_topic):
    topic = new_topic("noconfirm")
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    producer = Producer(settings)
    for i in range(5):
        producer.produce(topic, str(i).encode())
    producer.flush()
    group = f"g-{uuid.uuid4().hex}"
    consumer = Consumer([topic], group, settings)
    assert len(_drain(consumer, 5)) == 5
    consumer.close()  # crash-like: nothing confirmed

    again = Consumer([topic], group, settings)
    try:
        assert len(_drain(again, 5)) == 5
    finally:
        again.close()


def test_read_committed_skips_aborted_transactions(kafka_bootstrap, new_topic):
    topic = new_topic("tx")
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    tx = Producer(settings, transactional_id=f"tx-{uuid.uuid4().hex}")
    tx.begin()
    tx.produce(topic, b"aborted")
    tx.abort()
    tx.begin()
    tx.produce(topic, b"committed")
    tx.commit()

    consumer = Consumer([topic], f"g-{uuid.uuid4().hex}", settings)
    try:
        records = _drain(consumer, 1)
    finally:
        consumer.close()
    assert [r.value for r in records] == [b"committed"]


def test_oversized_record_is_a_data_error(kafka_bootstrap, new_topic):
    topic = new_topic("big")
    producer = Producer(KafkaSettings(bootstrap_servers=kafka_bootstrap))
    with pytest.raises(RecordTooLarge) as info:
        producer.produce(topic, b"x" * 2_000_000)
    assert info.value.size == 2_000_000
    assert info.value.topic == topic


def test_broker_rejected_size_is_raised_from_flush(kafka_bootstrap, new_topic):
    # the topic accepts at most 1 kB: the client lets 4 kB through, the broker refuses it
    topic = new_topic("small", **{"max.message.bytes": "1024"})
    producer = Producer(KafkaSettings(bootstrap_servers=kafka_bootstrap), config={"compression.type": "none"})
    producer.produce(topic, b"y" * 4096)
    with pytest.raises(RecordTooLarge):
        producer.flush()


def test_unreachable_broker_delivery_fails_loudly():
    producer = Producer(
        KafkaSettings(bootstrap_servers="127.0.0.1:1"), config={"message.timeout.ms": 1500, "log_level": 0}
    )
    producer.produce("any", b"x")
    with pytest.raises(DeliveryFailed) as info:
        producer.flush(timeout=10)
    assert info.value.code == "_MSG_TIMED_OUT"


def test_missing_topic_is_a_config_error(kafka_bootstrap, new_topic):
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    present = new_topic("present")
    check_topics([present], settings=settings)
    with pytest.raises(TopicNotFound, match="does not exist"):
        check_topics([present, f"absent-{uuid.uuid4().hex}"], settings=settings)


def test_ensure_topics_creates_only_missing(kafka_bootstrap, new_topic):
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    existing = new_topic("exists")
    fresh = f"fresh-{uuid.uuid4().hex}"
    try:
        assert ensure_topics([existing, fresh], partitions=2, settings=settings) == [fresh]
        assert ensure_topics([existing, fresh], settings=settings) == []
        check_topics([fresh], settings=settings)
    finally:
        from vatic.connectors.kafka import admin_client

        admin = admin_client(settings)  # keep the handle alive until the futures resolve
        for future in admin.delete_topics([fresh]).values():
            future.result(timeout=15)


def test_consumer_requires_a_group():
    from vatic.schemas.errors import ConfigError

    with pytest.raises(ConfigError, match="group id"):
        Consumer(["t"], "")


# -- Avro over the real broker ---------------------------------------------------------------------------------


def _transaction(i: int) -> dict:
    return {
        "event_id": str(uuid.UUID(int=i + 1)),
        "event_time": 1_780_000_000_000 + i,
        "customer_id": f"c{i % 97}",
        "merchant_id": f"m{i % 13}",
        "amount": round(1 + i * 0.37, 2),
        "currency": "EUR",
        "channel": ["ONLINE", "POS", "ATM", "MOBILE_APP"][i % 4],
        "card_present": i % 3 == 0,
        "merchant_category": "5411",
        "country": "DE",
        "device_hash": None if i % 2 else f"d{i}",
        "ip_hash": None,
    }


def test_ten_thousand_avro_events_round_trip_none_lost_none_duplicated(kafka_bootstrap, new_topic, tmp_path):
    from vatic.connectors.kafka import AvroSerde
    from vatic.schemas import AvroCodec, LocalSchemaStore, load_schema, topic_subject

    topic = new_topic("avro", partitions=4)
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    store = LocalSchemaStore(tmp_path / "schemas")
    serde = AvroSerde(AvroCodec(store, topic_subject(topic), load_schema("transaction")))
    sent = {}
    producer = Producer(settings)
    for i in range(10_000):
        event = _transaction(i)
        sent[event["event_id"]] = event
        producer.produce(topic, serde.serialize(event), event["customer_id"].encode())
    assert len(producer.flush()) == 10_000

    consumer = Consumer([topic], f"g-{uuid.uuid4().hex}", settings)
    try:
        records = _drain(consumer, 10_000, rounds=120)
        consumer.confirm(records)
    finally:
        consumer.close()
    received = [serde.deserialize(r.value) for r in records]
    ids = [e["event_id"] for e in received]
    assert len(ids) == len(set(ids)) == 10_000  # nothing duplicated
    assert set(ids) == set(sent)  # nothing lost
    assert all(e == sent[e["event_id"]] for e in received)  # every field intact


def test_malformed_bytes_raise_a_typed_error_carrying_the_raw_bytes(kafka_bootstrap, new_topic, tmp_path):
    from vatic.connectors.kafka import AvroSerde
    from vatic.schemas import AvroCodec, InMemorySchemaStore, load_schema, topic_subject
    from vatic.schemas.errors import DataError, DecodeError

    topic = new_topic("bad")
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    serde = AvroSerde(AvroCodec(InMemorySchemaStore(), topic_subject(topic), load_schema("transaction")))
    good = serde.serialize(_transaction(1))
    payloads = [
        b"{not avro at all}",  # bad magic byte
        good[:3],  # shorter than the wire-format header
        good[:-4],  # truncated body
        b"\x00\x00\x00\x7f\xff" + good[5:],  # unknown schema id
    ]
    producer = Producer(settings)
    for payload in payloads:
        producer.produce(topic, payload)
    producer.flush()
    consumer = Consumer([topic], f"g-{uuid.uuid4().hex}", settings)
    try:
        records = _drain(consumer, len(payloads))
    finally:
        consumer.close()
    assert [r.value for r in records] == payloads
    for record in records:
        with pytest.raises(DecodeError) as info:
            serde.deserialize(record.value)
        assert info.value.raw == record.value
        assert isinstance(info.value, DataError)  # dead-letter material, not an outage
        assert info.value.stage == "decode"


def test_a_scan_reads_every_committed_record_up_to_the_end_it_began_with_and_stops(kafka_bootstrap, new_topic):
    """Bounded: what arrives after the scan began is not read; aborted records never; an open transaction ends a
    partition at its last stable offset instead of blocking the scan."""
    topic = new_topic("scan", partitions=2)
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    plain = Producer(settings)
    for i in range(10):
        plain.produce(topic, f"v{i}".encode(), b"k", headers=[("h", str(i).encode())])  # one key: one partition
    plain.produce(topic, b"other", b"another-key-entirely")
    plain.flush()
    aborted = Producer(settings, transactional_id=f"scan-aborted-{uuid.uuid4().hex}")
    aborted.begin()
    aborted.produce(topic, b"aborted", b"k")
    aborted.flush()
    aborted.abort()
    plain.produce(topic, b"after-abort", b"k")
    plain.flush()
    hanging = Producer(settings, transactional_id=f"scan-open-{uuid.uuid4().hex}")
    hanging.begin()
    hanging.produce(topic, b"uncommitted", b"k")
    hanging.flush()  # sent, never committed: the partition's last stable offset stays before it

    records = list(scan(topic, settings, stall_timeout=20))
    values = [r.value for r in records]
    assert values.count(b"aborted") == 0
    assert values.count(b"uncommitted") == 0
    assert sorted(v for v in values if v and v.startswith(b"v")) == sorted(f"v{i}".encode() for i in range(10))
    assert b"other" in values
    assert b"after-abort" in values
    keyed = [r for r in records if r.key == b"k" and r.value and r.value.startswith(b"v")]
    assert [r.headers for r in keyed] == [[("h", str(i).encode())] for i in range(10)]  # in order, with headers
    hanging.abort()

    plain.produce(topic, b"late", b"k")
    plain.flush()
    first_k = next(r for r in records if r.key == b"k")
    later = list(scan(topic, settings, start=first_k.offset + 9, partitions=[first_k.partition]))
    assert [r.value for r in later if r.key == b"k"] == [
        b"v9",
        b"after-abort",
        b"late",
    ]  # from an offset, one partition


def test_a_scan_of_a_missing_topic_says_so(kafka_bootstrap):
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    with pytest.raises(TopicNotFound, match="does not exist"):
        list(scan(f"absent-{uuid.uuid4().hex}", settings))
