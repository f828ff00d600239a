"""Dead-letter replay on a real broker and a real schema registry: the original bytes go back once, a crashed
replay's open transaction never counts, an input that keeps failing stops at its replay limit.

The dead letters are built by the job's own builder (:func:`vatic.serving.core.dead_letter`) from the input records
as a consumer reads them, headers included, exactly as the job writes them."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from vatic.connectors.dlq import (
    REPLAY_OF,
    REPLAYS,
    DeadLetter,
    Replayer,
    Selection,
    ledger_topic,
    transactional_id,
)
from vatic.connectors.kafka import KafkaSettings, Producer, Record, admin_client, ensure_topics, scan
from vatic.connectors.schema_registry import ConfluentSchemaRegistry
from vatic.schemas import AvroCodec, load_schema, topic_subject
from vatic.schemas.errors import ConfigError
from vatic.serving.core import SourceRecord, dead_letter


def _fail(records: list[Record], dlq: str, codec: AvroCodec, settings: KafkaSettings, stage: str = "decode") -> None:
    """What the job does with records it cannot use: one dead letter each, input headers kept."""
    producer = Producer(settings)
    for r in records:
        headers = [(k, v if isinstance(v, bytes) or v is None else v.encode()) for k, v in r.headers]
        source = SourceRecord(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp_ms, headers)
        error = "DecodeError" if stage == "decode" else "MissingFeatures"
        value = dead_letter(service="echo", stage=stage, error_class=error, message="no good", attempts=1,
                            source=source)  # fmt: skip
        producer.produce(
            dlq, codec.encode(value), r.key, [("vatic-source", f"{r.topic}/{r.partition}/{r.offset}".encode())]
        )
    producer.flush()


@pytest.fixture
def topics(kafka_bootstrap: str, registry_url: str, new_topic: Callable[..., str]):
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    source, dlq = new_topic("dlq-in", partitions=2), new_topic("dlq", partitions=2)
    with ConfluentSchemaRegistry(registry_url) as registry:
        yield settings, source, dlq, AvroCodec(registry, topic_subject(dlq), load_schema("dead_letter"))
    admin = admin_client(settings)
    if ledger_topic(dlq) in admin.list_topics(timeout=10).topics:
        admin.delete_topics([ledger_topic(dlq)], operation_timeout=10)[ledger_topic(dlq)].result(timeout=15)


def _produce_inputs(settings: KafkaSettings, topic: str, n: int) -> list[Record]:
    producer = Producer(settings)
    for i in range(n):
        producer.produce(topic, f"garbage {i} {uuid.uuid4()}".encode(), f"c{i}".encode(), [("trace", f"t{i}".encode())])
    producer.flush()
    return list(scan(topic, settings))


def test_a_replay_writes_the_original_records_back_once_with_replay_headers(topics):
    settings, source, dlq, codec = topics
    inputs = _produce_inputs(settings, source, 6)
    _fail(inputs, dlq, codec, settings)
    replayer = Replayer(dlq, source, codec, settings, chunk=4)  # two transactions

    dry = replayer.plan()
    assert (dry.selected, len(dry.replay), dry.already_replayed) == (6, 6, 0)
    assert len(list(scan(source, settings))) == 6  # a dry run writes nothing
    assert dry.by_error == {("decode", "DecodeError"): 6}

    progress: list[int] = []
    carried = replayer.replay(on_progress=progress.append)
    assert len(carried.replay) == 6
    assert progress == [4, 6]
    replays = [r for r in scan(source, settings) if dict(r.headers).get(REPLAY_OF)]
    assert len(replays) == 6
    originals = {(r.key, r.value): r for r in inputs}
    letters = {letter.position: letter for letter in carried.replay}
    for r in replays:
        first = originals[(r.key, r.value)]  # key and value byte for byte
        headers = dict(r.headers)
        assert headers["trace"] == dict(first.headers)["trace"]  # the original headers kept
        assert headers[REPLAYS] == b"1"
        position = headers[REPLAY_OF].decode()
        assert position.startswith(f"{dlq}/")
        assert letters[position].value["offset"] == first.offset  # names the dead letter of exactly this input
    ledger = {bytes(r.key).decode() for r in scan(ledger_topic(dlq), settings) if r.key}
    assert ledger == set(letters)

    again = replayer.replay()
    assert (len(again.replay), again.already_replayed) == (0, 6)  # replaying twice produces them once
    assert len([r for r in scan(source, settings) if dict(r.headers).get(REPLAY_OF)]) == 6


def test_a_crashed_replay_leaves_nothing_and_the_next_replay_writes_each_record_once(topics):
    settings, source, dlq, codec = topics
    inputs = _produce_inputs(settings, source, 5)
    _fail(inputs, dlq, codec, settings)
    # a replayer that sent a replay and its ledger entry, then died before committing
    ensure_topics([ledger_topic(dlq)], config={"cleanup.policy": "compact"}, settings=settings)
    crashed = Producer(settings, transactional_id=transactional_id(dlq))
    crashed.begin()
    letter = next(iter(Replayer(dlq, source, codec, settings).plan().replay))
    key, value, headers = letter.replay_record()
    crashed.produce(source, value, key, headers)
    crashed.produce(ledger_topic(dlq), b"{}", letter.position.encode())
    crashed.flush()

    carried = Replayer(dlq, source, codec, settings).replay()  # fences the dead replayer, aborting its transaction
    assert len(carried.replay) == 5
    replays = [r for r in scan(source, settings) if dict(r.headers).get(REPLAY_OF)]
    assert sorted(dict(r.headers)[REPLAY_OF] for r in replays) == sorted(p.position.encode() for p in carried.replay)


def test_an_input_that_keeps_failing_is_replayed_max_replays_times_and_then_reported_exhausted(topics):
    settings, source, dlq, codec = topics
    _fail(_produce_inputs(settings, source, 3), dlq, codec, settings)
    replayer = Replayer(dlq, source, codec, settings)
    for round_ in (1, 2):
        carried = replayer.replay(max_replays=2)
        assert len(carried.replay) == 3
        new = [r for r in scan(source, settings) if dict(r.headers).get(REPLAYS) == str(round_).encode()]
        assert len(new) == 3
        _fail(new, dlq, codec, settings)  # the job fails them again: new dead letters carry the count
    final = replayer.replay(max_replays=2)
    assert (len(final.replay), final.exhausted, final.already_replayed) == (0, 3, 6)
    assert len([r for r in scan(source, settings) if dict(r.headers).get(REPLAY_OF)]) == 6
    more = replayer.replay(max_replays=3)  # an operator may allow one more
    assert len(more.replay) == 3


def test_a_dead_letter_without_its_complete_value_is_never_replayed(topics):
    settings, source, dlq, codec = topics
    producer = Producer(settings)
    tombstone = SourceRecord(source, 0, 1, b"k", None)
    big = SourceRecord(source, 0, 2, b"k", b"x" * 5000)
    for record, limit in ((tombstone, 900_000), (big, 1024)):
        value = dead_letter(service="echo", stage="decode", error_class="DecodeError", message="no good",
                            attempts=1, source=record, max_value_bytes=limit)  # fmt: skip
        producer.produce(dlq, codec.encode(value), b"k")
    producer.flush()
    carried = Replayer(dlq, source, codec, settings).replay()
    assert (len(carried.replay), carried.not_replayable) == (0, 2)
    assert list(scan(source, settings)) == []
    truncated = DeadLetter(dlq, 0, 1, codec.decode(next(r for r in scan(dlq, settings) if r.offset == 1).value or b""))
    with pytest.raises(ConfigError, match="no complete original value"):
        truncated.replay_record()


def _letter(**changes: object) -> DeadLetter:
    value = dead_letter(service="s", stage="enrich", error_class="MissingFeatures", message="m", attempts=1,
                        source=SourceRecord("in", 0, 3, b"k", b"v"))  # fmt: skip
    value["failure_time"] = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    value.update(changes)
    return DeadLetter("dlq", 1, 40, value)


def test_a_selection_holds_when_every_criterion_it_names_holds() -> None:
    noon = int(datetime(2026, 12, 6, 12, 0, tzinfo=UTC).timestamp() * 1000)
    letter = _letter()
    assert Selection().matches(letter)
    assert Selection(stages=frozenset({"enrich", "infer"}), error_classes=frozenset({"MissingFeatures"})).matches(
        letter
    )
    assert not Selection(stages=frozenset({"decode"})).matches(letter)
    assert not Selection(error_classes=frozenset({"DecodeError"})).matches(letter)
    assert Selection(since_ms=noon, until_ms=noon).matches(letter)
    assert not Selection(since_ms=noon + 1).matches(letter)
    assert not Selection(until_ms=noon - 1).matches(letter)
    assert Selection(partitions=frozenset({1}), from_offset=40, to_offset=40).matches(letter)
    assert not Selection(partitions=frozenset({0})).matches(letter)
    assert not Selection(from_offset=41).matches(letter)
    assert not Selection(to_offset=39).matches(letter)
    with pytest.raises(ConfigError, match="after"):
        Selection(from_offset=5, to_offset=4)
    with pytest.raises(ConfigError, match="after"):
        Selection(since_ms=noon, until_ms=noon - 1)


def test_a_replay_replaces_an_earlier_replays_headers_and_counts_on() -> None:
    letter = _letter(headers=[{"key": "trace", "value": b"t"}, {"key": REPLAY_OF, "value": b"dlq/0/1"},
                              {"key": REPLAYS, "value": b"2"}])  # fmt: skip
    assert letter.replays == 2
    key, value, headers = letter.replay_record()
    assert (key, value) == (b"k", b"v")
    assert headers == [("trace", b"t"), (REPLAY_OF, b"dlq/1/40"), (REPLAYS, b"3")]
