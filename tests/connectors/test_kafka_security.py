"""One Kafka security configuration for both kinds of client: librdkafka (the CLI, the demo, the dead-letter
tools, the bench) and the JVM client inside Flink's Kafka connector. Against the real secured broker: what each
refusal looks like to a caller (one classified error naming the fix, never the secret)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from pydantic import SecretStr, ValidationError

from vatic.cli.stack.secure import ADMIN, APP, JOB, SecureKafkaBroker, apply_acls, job_acls, replayer_acls
from vatic.cli.stack.settings import StackSettings
from vatic.connectors.kafka import (
    FLINK_KAFKA_SHADED,
    PASSWORD_ENV,
    Consumer,
    KafkaSettings,
    Producer,
    check_access,
    ensure_topics,
)
from vatic.schemas.errors import AccessDenied, ConfigError, TopicNotFound

SECRET = "s3cret-" + uuid.uuid4().hex


def sasl(**extra: object) -> KafkaSettings:
    values: dict[str, object] = {
        "bootstrap_servers": "kafka-1:9094",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "fraud-job",
        "sasl_password": SECRET,
        "ssl_ca_location": "/etc/kafka/ca.pem",
    }
    values.update(extra)
    return KafkaSettings(**values)  # type: ignore[arg-type]


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VATIC_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("VATIC_KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("VATIC_KAFKA_SASL_USERNAME", "job")
    monkeypatch.setenv(PASSWORD_ENV, SECRET)
    settings = KafkaSettings()
    assert settings.librdkafka()["sasl.password"] == SECRET
    assert settings.librdkafka()["sasl.mechanism"] == "PLAIN"
    assert SECRET not in repr(settings)
    assert SECRET not in settings.describe()


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"security_protocol": "SASL_SSL"}, "VATIC_KAFKA_SASL_MECHANISM"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u"}, PASSWORD_ENV),
        ({"sasl_mechanism": "PLAIN"}, "use SASL_SSL"),
        ({"security_protocol": "SSL", "ssl_certificate_location": "/c.pem"}, "VATIC_KAFKA_SSL_KEY_LOCATION"),
        ({"ssl_ca_location": "/ca.pem"}, "use SSL or SASL_SSL"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI"}, "SCRAM-SHA-512"),
    ],
)
def test_inconsistent_settings_are_refused_naming_the_variable(values: dict[str, str], says: str) -> None:
    with pytest.raises(ValidationError) as refused:
        KafkaSettings(**values)  # type: ignore[arg-type]
    assert says in str(refused.value)


def test_librdkafka_gets_the_secret_and_checks_the_broker_name() -> None:
    conf = sasl().librdkafka()
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.username"] == "fraud-job"
    assert conf["sasl.password"] == SECRET
    assert conf["ssl.ca.location"] == "/etc/kafka/ca.pem"
    assert conf["ssl.endpoint.identification.algorithm"] == "https"


def test_the_jvm_client_gets_a_reference_to_the_secret_never_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, SECRET)
    props = sasl().java_properties()
    assert SECRET not in str(props)
    assert props["sasl.jaas.config"] == (
        f"{FLINK_KAFKA_SHADED}org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="fraud-job" password="${{env:{PASSWORD_ENV}}}";'
    )
    assert props["config.providers"] == "env"
    assert props["config.providers.env.class"] == (
        f"{FLINK_KAFKA_SHADED}org.apache.kafka.common.config.provider.EnvVarConfigProvider"
    )
    assert props["ssl.truststore.type"] == "PEM"
    assert props["ssl.truststore.location"] == "/etc/kafka/ca.pem"
    plain = sasl(sasl_mechanism="PLAIN").java_properties(shaded="")
    assert plain["sasl.jaas.config"].startswith("org.apache.kafka.common.security.plain.PlainLoginModule required")


def test_the_jvm_client_refuses_a_password_that_is_not_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    with pytest.raises(ConfigError, match=PASSWORD_ENV) as refused:
        sasl().java_properties()
    assert SECRET not in str(refused.value)


def test_mutual_tls_keys_are_read_by_kafka_from_their_files() -> None:
    settings = KafkaSettings(
        security_protocol="SSL",
        ssl_ca_location="/tls/ca.pem",
        ssl_certificate_location="/tls/client/tls.crt",
        ssl_key_location="/tls/client/tls.key",
    )
    props = settings.java_properties()
    assert props["ssl.keystore.type"] == "PEM"
    assert props["ssl.keystore.certificate.chain"] == "${directory:/tls/client:tls.crt}"
    assert props["ssl.keystore.key"] == "${directory:/tls/client:tls.key}"
    assert props["config.providers"] == "directory"
    assert settings.librdkafka()["ssl.key.location"] == "/tls/client/tls.key"


def test_a_jaas_breaking_user_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, SECRET)
    with pytest.raises(ConfigError, match="user name"):
        sasl(sasl_username='x" password="y').java_properties()


# --- against the real secured broker ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker() -> Iterator[SecureKafkaBroker]:
    the_broker = SecureKafkaBroker(StackSettings())
    started = the_broker.start()
    yield the_broker
    if started:
        the_broker.stop()


@pytest.fixture(scope="module")
def granted(broker: SecureKafkaBroker) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    topics = {"input": f"sec-{tag}.in", "output": f"sec-{tag}.out", "dead": f"sec-{tag}.dlq", "group": f"g-{tag}"}
    admin = broker.client_settings(ADMIN)
    ensure_topics([topics["input"], topics["output"], topics["dead"]], settings=admin)
    grants = job_acls(
        JOB, input_topic=topics["input"], output_topics=[topics["output"], topics["dead"]], group=topics["group"],
        transactional_prefix=f"tx-{tag}-",
    )  # fmt: skip
    apply_acls(admin, grants)
    topics["tx"] = f"tx-{tag}-"
    return topics


def test_the_job_principal_has_exactly_its_grants_over_scram_plain_and_mutual_tls(broker, granted) -> None:
    wanted = {
        "read": [granted["input"]], "write": [granted["output"], granted["dead"]], "group": granted["group"],
        "transactional_prefix": granted["tx"],
    }  # fmt: skip
    check_access(broker.client_settings(JOB), **wanted)
    check_access(broker.client_settings(JOB, mechanism="PLAIN"), **wanted)
    check_access(broker.mtls_settings(JOB), **wanted)
    with pytest.raises(AccessDenied, match=f"WRITE topic '{granted['input']}'") as refused:
        check_access(broker.client_settings(JOB), write=[granted["input"]])
    assert refused.value.reason == "authorization"
    with pytest.raises(AccessDenied, match="READ consumer group 'someone-else'"):
        check_access(broker.client_settings(JOB), read=[granted["input"]], group="someone-else")
    with pytest.raises(AccessDenied, match="transactional ids other-"):
        check_access(broker.client_settings(JOB), transactional_prefix="other-")
    # a topic the principal may not see is refused as an ACL problem: Kafka does not say whether it exists
    with pytest.raises(AccessDenied, match="do not let User:vatic-job READ topic"):
        check_access(broker.client_settings(JOB), read=["no-such-topic-" + uuid.uuid4().hex])
    with pytest.raises(TopicNotFound):
        check_access(broker.client_settings(ADMIN), read=["no-such-topic-" + uuid.uuid4().hex])


def test_a_client_certificate_that_expired_is_refused_with_the_setting_to_fix(broker, granted, tmp_path) -> None:
    cert, key = broker.ca.client("expired-" + uuid.uuid4().hex[:6], expired=True)
    settings = broker.mtls_settings(JOB).model_copy(
        update={"ssl_certificate_location": str(cert), "ssl_key_location": str(key)}
    )
    with pytest.raises(AccessDenied, match="VATIC_KAFKA_SSL_CERTIFICATE_LOCATION") as refused:
        check_access(settings, read=[granted["input"]], timeout=5)
    assert refused.value.reason == "tls"
    os.remove(cert)
    os.remove(key)


def test_the_python_clients_raise_a_refused_login_instead_of_waiting_for_a_broker(broker, granted) -> None:
    """The CLI's producer and consumer (demo, dead-letter tools) on a wrong password: an AccessDenied naming the
    variable, not a delivery timeout or an endless empty poll; the password is nowhere in it."""
    wrong = broker.client_settings(APP).model_copy(update={"sasl_password": SecretStr(SECRET)})
    producer = Producer(wrong, config={"message.timeout.ms": 5000})
    producer.produce(granted["input"], b"x")
    with pytest.raises(AccessDenied, match=PASSWORD_ENV) as refused:
        producer.flush(10)
    assert SECRET not in str(refused.value)
    consumer = Consumer([granted["input"]], "g-wrong", wrong)

    def poll_until_refused() -> None:
        for _ in range(20):
            consumer.poll_batch(10, timeout=0.5)

    try:
        with pytest.raises(AccessDenied, match="Authentication failed"):
            poll_until_refused()
    finally:
        consumer._consumer.close()


def test_a_dead_letter_replay_runs_with_exactly_the_replayer_grants(broker, tmp_path) -> None:
    """``vatic dlq replay`` as an application principal: with :func:`replayer_acls` on its topics it reads,
    creates the ledger and replays in a transaction; on a dead-letter topic it holds no grant for, it is refused
    with an AccessDenied naming the principal, not left waiting."""
    from vatic.connectors.dlq import REPLAY_OF, Replayer
    from vatic.connectors.kafka import scan
    from vatic.schemas import AvroCodec, LocalSchemaStore, load_schema, topic_subject
    from vatic.serving.core import SourceRecord, dead_letter

    tag = uuid.uuid4().hex[:8]
    source, dlq, other = f"replay-{tag}.in", f"replay-{tag}.dlq", f"replay-{tag}.other-dlq"
    admin = broker.client_settings(ADMIN)
    ensure_topics([source, dlq, other], settings=admin)
    codec = AvroCodec(LocalSchemaStore(tmp_path / "schemas"), topic_subject(dlq), load_schema("dead_letter"))
    writer = Producer(admin)
    for offset in range(3):
        record = SourceRecord(source, 0, offset, b"k", f"bytes {offset}".encode())
        value = dead_letter(service="s", stage="decode", error_class="DecodeError", message="m", attempts=1,
                            source=record)  # fmt: skip
        writer.produce(dlq, codec.encode(value), b"k")
        writer.produce(other, codec.encode(value), b"k")
    writer.flush()
    apply_acls(admin, replayer_acls(APP, dead_letter_topic=dlq, input_topic=source))

    app = broker.client_settings(APP)
    carried = Replayer(dlq, source, codec, app).replay()
    assert len(carried.replay) == 3
    assert sorted(r.value for r in scan(source, admin) if dict(r.headers).get(REPLAY_OF)) == [
        b"bytes 0",
        b"bytes 1",
        b"bytes 2",
    ]
    with pytest.raises(AccessDenied, match=APP):
        Replayer(other, source, codec, app).replay()
