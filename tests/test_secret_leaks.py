"""Secrets stay secret: with a known value in every secret vatic reads (Kafka SASL password and key password,
Redis password, schema registry password, the gateway's shared token), grep every output that is built from the
configuration - the job's command line, its table definitions and plan, Flink's configuration, the rendered
Kubernetes manifests, the log configurations, the errors of a wrong setting - for the value.

The running pieces are grepped where they run: the job's own logs on the secured broker
(``tests/streaming/test_secure_job.py``), the gateway's logs and error bodies
(``tests/serving/gateway/test_clients_and_tls.py``), the Redis and registry clients' errors
(``tests/connectors/test_features_security.py``, ``test_schema_registry_security.py``).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.streaming.test_topology import FRAUD, _explain
from vatic.cli.deploy.manifests import build_manifests, job_settings
from vatic.connectors.kafka import KafkaSettings
from vatic.serving.config import load_service
from vatic.streaming import job
from vatic.streaming.logconfig import console_log4j, file_log4j
from vatic.streaming.settings import JobSettings, job_arguments

SECRET = "leak-canary-" + uuid.uuid4().hex

SECRET_ENV = {
    "VATIC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "VATIC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "VATIC_KAFKA_SASL_USERNAME": "fraud-job",
    "VATIC_KAFKA_SASL_PASSWORD": SECRET,
    "VATIC_KAFKA_SSL_CA_LOCATION": "/var/run/secrets/vatic/kafka-ca/ca.crt",
    "VATIC_KAFKA_SSL_KEY_PASSWORD": SECRET,
    "VATIC_REDIS_PASSWORD": SECRET,
    "VATIC_SCHEMA_REGISTRY_USERNAME": "fraud",
    "VATIC_SCHEMA_REGISTRY_PASSWORD": SECRET,
    "VATIC_GATEWAY_AUTH_TOKEN": SECRET,
}


@pytest.fixture
def secrets_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRET_ENV.items():
        monkeypatch.setenv(name, value)


def test_the_job_passes_kafka_secrets_by_reference_only(secrets_in_env, tmp_path, monkeypatch) -> None:
    settings = JobSettings(service_dir=FRAUD, bootstrap_servers="kafka-1:9094")
    config = load_service(FRAUD, "local")
    assert config.streaming is not None
    ddl = [
        job.source_ddl(config, settings),
        job.sink_ddl("p", config.streaming.output_topic, config, settings),
        job.sink_ddl("d", config.streaming.dead_letter_topic, config, settings),
    ]
    assert all("${env:VATIC_KAFKA_SASL_PASSWORD}" in one for one in ddl)  # the reference is there ...
    for one in ddl:
        assert SECRET not in one  # ... never the value
    assert SECRET not in " ".join(job_arguments([settings]))
    plan, flink_conf = _explain(settings, monkeypatch)
    assert SECRET not in plan
    assert SECRET not in str(flink_conf.to_dict())


def test_rendered_manifests_and_log_configurations_carry_no_secret(secrets_in_env) -> None:
    for environment in ("staging", "production"):
        config = load_service(FRAUD, environment)
        for manifest in build_manifests(config, FRAUD):
            assert SECRET not in str(manifest.obj), manifest.ref
        assert SECRET not in " ".join(job_arguments([job_settings(config)], local=False))
    assert SECRET not in console_log4j() + file_log4j()


def test_a_wrong_kafka_setting_names_the_variable_and_never_echoes_the_secret(secrets_in_env, monkeypatch) -> None:
    monkeypatch.setenv("VATIC_KAFKA_SASL_MECHANISM", "GSSAPI")
    with pytest.raises(ValidationError) as refused:
        KafkaSettings()
    assert "sasl_mechanism" in str(refused.value)
    assert SECRET not in str(refused.value)
    monkeypatch.delenv("VATIC_KAFKA_SASL_MECHANISM")
    with pytest.raises(ValidationError) as refused:
        KafkaSettings()
    assert "VATIC_KAFKA_SASL_MECHANISM" in str(refused.value)
    assert SECRET not in str(refused.value)
    assert SECRET not in repr(KafkaSettings(sasl_mechanism="PLAIN"))


def test_the_secured_stack_keeps_its_passwords_in_owner_only_files(tmp_path: Path) -> None:
    from vatic.cli.stack.secure import SecureKafkaBroker
    from vatic.cli.stack.settings import StackSettings

    broker = SecureKafkaBroker(StackSettings(home=tmp_path / "home"))
    broker.process.dir.mkdir(parents=True)
    passwords = broker.credentials()
    broker._write_env_files()
    for file in [broker.credentials_file, *broker.process.dir.glob("*.env")]:
        assert file.stat().st_mode & 0o077 == 0, file
    assert all(p not in broker.describe() for p in passwords.values())
