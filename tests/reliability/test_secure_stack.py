"""The private stack's secured mode (``PrivateStack(secure=True)``, ``python -m tests.reliability --secure``),
checked against a real secured broker (:class:`~vatic.cli.stack.secure.SecureKafkaBroker`, SASL_SSL with SCRAM,
ACLs denying by default) on free ports of its own: a case's grants give the job's identity exactly what vatic's
own pre-start check asks for and nothing more, and the forensics (admin API, Kafka's CLI with a client properties
file) see an open transaction through the broker's security. The plain mode keeps its plain clients.
"""

from __future__ import annotations

import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from tests.reliability import forensics
from tests.reliability.stack import PrivateStack
from vatic.cli.stack.secure import ADMIN, JOB
from vatic.connectors.kafka import KafkaSettings, check_access
from vatic.schemas.errors import AccessDenied

DEFAULT_KAFKA_PORTS = {9092, 9093, 9094, 9095, 9096}


@pytest.fixture(scope="module")
def secure_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateStack]:
    """A secured private stack of which only the broker runs (the cases need the rest, these tests do not)."""
    stack = PrivateStack(tmp_path_factory.mktemp("secure-stack"), keep=True, secure=True)
    stack.kafka.start()
    try:
        _wait_for_group_coordinator(stack)
        yield stack
    finally:
        stack.kafka.stop()


def _wait_for_group_coordinator(stack: PrivateStack, timeout_s: float = 90.0) -> None:
    """A broker that has just formatted its storage answers group requests with COORDINATOR_LOAD_IN_PROGRESS until
    its offsets topic is loaded (the suite's cases start much later): wait until a consumer reads a committed offset.

    Not with the admin client's ``list_consumer_group_offsets``: on that error answer librdkafka 2.16.0 hands it to
    the consumer-group handle an admin client does not have, and the process dies (SIGSEGV in
    ``rd_kafka_cgrp_op`` from ``rd_kafka_ListConsumerGroupOffsetsResponse_parse``); a consumer retries it."""
    topic = f"coordinator-probe-{uuid.uuid4().hex[:8]}"
    _topics(stack, topic)
    consumer = Consumer(stack.kafka_config(ADMIN, **{"group.id": topic, "enable.auto.commit": False}))
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                consumer.committed([TopicPartition(topic, 0)], timeout=10)
                return
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        consumer.close()


def _topics(stack: PrivateStack, *names: str) -> None:
    admin = AdminClient(stack.kafka_config(ADMIN))
    for future in admin.create_topics([NewTopic(n, 2, 1) for n in names], operation_timeout=30).values():
        future.result(timeout=60)


def _job_settings(env: dict[str, str]) -> KafkaSettings:
    """The job's Kafka identity exactly as ``vatic stream run`` reads it from the environment the harness gives it."""
    return KafkaSettings(
        bootstrap_servers=env["VATIC_STREAM_BOOTSTRAP_SERVERS"],
        security_protocol=env["VATIC_KAFKA_SECURITY_PROTOCOL"],
        sasl_mechanism=env["VATIC_KAFKA_SASL_MECHANISM"],
        sasl_username=env["VATIC_KAFKA_SASL_USERNAME"],
        sasl_password=env["VATIC_KAFKA_SASL_PASSWORD"],
        ssl_ca_location=env["VATIC_KAFKA_SSL_CA_LOCATION"],
    )


def test_a_cases_grants_give_the_job_what_vatics_check_asks_and_nothing_more(secure_stack: PrivateStack) -> None:
    stack = secure_stack
    ports = [
        stack.settings.kafka_secure_port,
        stack.settings.kafka_secure_controller_port,
        stack.settings.kafka_mtls_port,
    ]
    assert not DEFAULT_KAFKA_PORTS & set(ports)  # never the developer's secured broker
    tag = uuid.uuid4().hex[:8]
    inp, out, dead, other = (f"sec-{tag}.{t}" for t in ("in", "out", "dlq", "other"))
    _topics(stack, inp, out, dead, other)
    group, prefix = f"vatic-sec-{tag}", f"vatic-sec-{tag}-local-"
    env = stack.job_env()
    assert env["VATIC_KAFKA_SASL_USERNAME"] == JOB
    assert env["VATIC_STREAM_BOOTSTRAP_SERVERS"] == stack.bootstrap
    job = _job_settings(env)
    needs = {"read": [inp], "write": [out, dead], "group": group, "transactional_prefix": prefix}

    with pytest.raises(AccessDenied, match="vatic-job"):
        check_access(job, **needs)  # type: ignore[arg-type]
    assert stack.grant_case(input_topic=inp, output_topics=[out, dead], group=group, transactional_prefix=prefix) > 0
    check_access(job, **needs)  # type: ignore[arg-type]
    with pytest.raises(AccessDenied, match="vatic-job"):
        check_access(job, read=[other])  # another case's topic: denied by default


def test_forensics_see_an_open_transaction_through_the_brokers_security(secure_stack: PrivateStack) -> None:
    stack = secure_stack
    topic = f"sec-forensics-{uuid.uuid4().hex[:8]}"
    _topics(stack, topic)
    prefix = f"forensics-{uuid.uuid4().hex[:8]}"
    producer = Producer(stack.kafka_config(ADMIN, **{"transactional.id": f"{prefix}-0"}))
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"pending", partition=1)
    producer.flush(30)

    config = stack.command_config()
    assert config is not None
    assert stat.S_IMODE(config.stat().st_mode) == 0o600  # it holds the admin password
    libs = stack.kafka.artifacts.require_kafka()
    offsets = forensics.stable_offsets(stack.kafka_config(ADMIN), [topic])
    assert offsets[0] == f"{topic}[0] high watermark 0, last stable 0"
    assert offsets[1].endswith("(BLOCKED)")
    listed = forensics.open_transactions(libs, stack.bootstrap, prefix, config)
    assert len(listed) == 1
    assert listed[0].startswith(f"open transaction {prefix}-0")

    producer.commit_transaction(30)
    # the commit markers reach the partitions just after the commit returns: wait for the last stable offset
    deadline = time.monotonic() + 30
    while any("BLOCKED" in line for line in forensics.stable_offsets(stack.kafka_config(ADMIN), [topic])):
        assert time.monotonic() < deadline, "the last stable offset stayed behind a committed transaction"
        time.sleep(0.2)
    assert forensics.open_transactions(libs, stack.bootstrap, prefix, config)[0].startswith("no open transaction")


def test_the_plain_mode_keeps_plain_clients_and_grants_nothing(tmp_path: Path) -> None:
    stack = PrivateStack(tmp_path, keep=True)  # nothing started: only what its clients would be given
    assert stack.kafka_config(ADMIN, linger_ms=5) == {"bootstrap.servers": stack.bootstrap, "linger_ms": 5}
    assert stack.bootstrap == stack.settings.kafka_bootstrap
    assert stack.command_config() is None
    assert stack.grant_case(input_topic="a", output_topics=["b"], group="g", transactional_prefix="p-") == 0
    assert not any(k.startswith("VATIC_KAFKA_") for k in stack.job_env())
