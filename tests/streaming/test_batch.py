"""BatchProcessor's decode stage on real codecs and a real service config: exactly one output per record."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fixtures import feast_repo
from tests.reliability.events import older_transaction_schema
from tests.serving.gateway.test_gateway import echo_service, transaction
from vatic.cli.stack.components import SchemaRegistry
from vatic.cli.stack.settings import StackSettings
from vatic.connectors.schema_registry import ConfluentSchemaRegistry
from vatic.schemas import AvroCodec, LocalSchemaStore, load_schema, topic_subject
from vatic.schemas.errors import SchemaSourceUnavailable
from vatic.serving.config import load_service
from vatic.serving.core import SourceRecord
from vatic.streaming.batch import DEAD_LETTER, BatchProcessor
from vatic.streaming.settings import JobSettings


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return feast_repo.build_repo(tmp_path_factory.mktemp("feast"))


def test_records_that_decode_but_break_the_schema_are_dead_lettered_before_any_model_call(features, tmp_path):
    folder = echo_service(tmp_path / "service", features, name="echo")
    spec = load_service(folder, "local").streaming
    assert spec is not None
    store = tmp_path / "schemas"
    # no model server listens here: a record that reached the model stage would fail the batch, not dead-letter
    settings = JobSettings(service_dir=folder, model_url="http://127.0.0.1:9", schema_store=store)
    codec = AvroCodec(LocalSchemaStore(store), topic_subject(spec.input_topic), load_schema("transaction"))
    bad_id = transaction(1, event_id="g83d-not-a-uuid", event_time=time.time_ns() // 1_000_000)
    records = [
        SourceRecord(spec.input_topic, 0, 7, b"c1", codec.encode(bad_id, validate=False)),
        SourceRecord(spec.input_topic, 0, 8, b"c2", b"not avro"),
        SourceRecord(spec.input_topic, 1, 9, b"c3", None),
    ]
    processor = BatchProcessor(settings)
    processor.open()
    try:
        outputs = asyncio.run(processor.process(records))
    finally:
        asyncio.run(processor.aclose())
    assert [o.kind for o in outputs] == [DEAD_LETTER] * 3
    dead = [processor.dead.decode(o.value) for o in outputs]
    assert [d["stage"] for d in dead] == ["decode"] * 3
    assert dead[0]["error_class"] == "InvalidRecord"
    assert "event_id" in dead[0]["error_message"]
    assert dead[0]["value"] == records[0].value  # the original bytes travel with the dead letter
    assert outputs[0].headers["vatic-source"] == f"{spec.input_topic}/0/7".encode()


def test_an_open_processor_keeps_httpx_request_lines_out_of_the_worker_log(features, tmp_path):
    """httpx logs every request at INFO; in a Flink worker that is one log line per micro-batch."""
    import logging

    folder = echo_service(tmp_path / "service", features, name="echo")
    settings = JobSettings(service_dir=folder, model_url="http://127.0.0.1:9", schema_store=tmp_path / "schemas")
    loggers = [logging.getLogger(name) for name in ("httpx", "httpcore")]
    before = [logger.level for logger in loggers]
    root_level = logging.getLogger().level
    logging.getLogger().setLevel(logging.INFO)  # what PyFlink's worker sets
    try:
        for logger in loggers:
            logger.setLevel(logging.NOTSET)  # a fresh worker process (another test may have opened one)
        assert all(logger.isEnabledFor(logging.INFO) for logger in loggers)
        processor = BatchProcessor(settings)
        processor.open()
        asyncio.run(processor.aclose())
        assert not any(logger.isEnabledFor(logging.INFO) for logger in loggers)
        assert all(logger.isEnabledFor(logging.WARNING) for logger in loggers)
    finally:
        for logger, level in zip(loggers, before, strict=True):
            logger.setLevel(level)
        logging.getLogger().setLevel(root_level)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[SchemaRegistry]:
    """A private Apicurio registry (durable storage) on a spare port, stopped after the test."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    component = SchemaRegistry(StackSettings(home=tmp_path / "home", registry_port=port, registry_heap="256m"))
    component.start()
    try:
        yield component
    finally:
        component.stop()


def test_a_new_writer_schema_met_while_the_registry_is_down_waits_and_is_never_dead_lettered(
    features: Path, tmp_path: Path, registry: SchemaRegistry
) -> None:
    """The registry is an outage like any other: the record is retried inside the budget, then the batch fails
    (Flink restarts from its checkpoint); once the registry is back the same bytes decode. A worker cannot open
    while the registry is down (its own output schemas are looked up at open)."""
    folder = echo_service(tmp_path / "service", features, name="echo")
    config = yaml.safe_load((folder / "service.yaml").read_text())
    config["streaming"]["retry"] = {"budget_s": 1.0, "initial_backoff_ms": 50, "max_backoff_ms": 200}
    (folder / "service.yaml").write_text(yaml.safe_dump(config))
    spec = load_service(folder, "local").streaming
    assert spec is not None
    url = registry.settings.registry_url
    settings = JobSettings(service_dir=folder, model_url="http://127.0.0.1:9", schema_registry_url=url)
    processor = BatchProcessor(settings)
    processor.open()
    # an older producer's version of the schema, registered by the producer: the worker has never seen its id
    older = older_transaction_schema()
    with ConfluentSchemaRegistry(url) as producer_side:
        codec = AvroCodec(producer_side, topic_subject(spec.input_topic), older)
        # the id must decode (so: a schema the job can resolve), and the record must stop at decode without a
        # model call: a non-UUID event id is refused right after decoding
        value = codec.encode(transaction(1, event_id="not-a-uuid", event_time=1), validate=False)
    record = SourceRecord(spec.input_topic, 0, 3, b"c1", value)
    try:
        registry.process.send_signal(signal.SIGKILL)
        registry.stop()
        started = time.monotonic()
        with pytest.raises(SchemaSourceUnavailable):
            asyncio.run(processor.process([record]))
        assert time.monotonic() - started >= 0.5  # retried inside the 1 s budget, not dead-lettered at once
        with pytest.raises(SchemaSourceUnavailable):
            BatchProcessor(settings).open()
        registry.start()
        outputs = asyncio.run(processor.process([record]))
    finally:
        asyncio.run(processor.aclose())
    assert [o.kind for o in outputs] == [DEAD_LETTER]
    dead = processor.dead.decode(outputs[0].value)
    assert (dead["stage"], dead["error_class"]) == ("decode", "InvalidRecord")  # decoded: the id was resolved
