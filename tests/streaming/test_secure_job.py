"""The streaming job on a secured broker: SASL_SSL (SCRAM-SHA-512), a private CA, ACLs that grant the job's
principal its own topics, group and transactional ids and nothing else (:mod:`vatic.cli.stack.secure`).

The job is the real `vatic stream run` (PyFlink mini-cluster, Flink's Kafka connector with its shaded Kafka
client) taking its Kafka identity from ``VATIC_KAFKA_*`` as a deployment does. The oracle is the one of
``test_job``: every input event exactly once in the predictions or the dead letters. A refused login, an
untrusted certificate and a missing ACL must each end the run at once with one line naming the fix (not a
restart loop that hides it), and the password must never be printed.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.streaming.test_job import VATIC, Run, check_oracle, drain, make_run, produce
from vatic.cli.stack.certs import LocalCA
from vatic.cli.stack.mlserver import ModelServer
from vatic.cli.stack.secure import ADMIN, APP, JOB, SecureKafkaBroker, app_acls, apply_acls, job_acls
from vatic.cli.stack.settings import StackSettings
from vatic.connectors.kafka import KafkaSettings, ensure_topics
from vatic.serving.config import load_service
from vatic.streaming.job import transactional_prefix


@pytest.fixture(scope="module")
def broker() -> Iterator[SecureKafkaBroker]:
    """The secured broker, started unless it runs; stopped at the end only if this module started it."""
    the_broker = SecureKafkaBroker(StackSettings())
    started = the_broker.start()
    yield the_broker
    if started:
        the_broker.stop()


@dataclass
class SecureRun(Run):
    """A run whose test-side clients (producer of the input, reader of the outputs) are the application user."""

    broker: SecureKafkaBroker | None = None

    def settings(self, kafka_bootstrap: str) -> KafkaSettings:
        assert self.broker is not None
        return self.broker.client_settings(APP)


def secure_run(broker: SecureKafkaBroker, tmp_path: Path, features: Path, registry_url: str, **streaming) -> SecureRun:
    admin = broker.client_settings(ADMIN)
    plain = make_run(tmp_path, features, "unused", registry_url, create_topics=False, **streaming)
    run = SecureRun(plain.folder, plain.topics, plain.store, plain.registry, broker=broker)
    ensure_topics([run.topics["input"]], partitions=3, settings=admin)
    ensure_topics([run.topics["output"], run.topics["dead"]], partitions=2, settings=admin)
    config = load_service(run.folder, "local")
    apply_acls(
        admin,
        job_acls(
            JOB,
            input_topic=run.topics["input"],
            output_topics=[run.topics["output"], run.topics["dead"]],
            group=config.consumer_group,
            transactional_prefix=transactional_prefix(config),
        ),
    )
    # the application user writes the input and reads the outputs (the test's side of the oracle)
    apply_acls(admin, app_acls(APP, produce=[run.topics["input"]], consume=[run.topics["output"], run.topics["dead"]]))
    return run


def job_environment(broker: SecureKafkaBroker, user: str = JOB, **override: str) -> dict[str, str]:
    settings = broker.client_settings(user)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VATIC_KAFKA_", "VATIC_STREAM_BOOTSTRAP"))}
    env.update(
        {
            "VATIC_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "VATIC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "VATIC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "VATIC_KAFKA_SASL_USERNAME": user,
            "VATIC_KAFKA_SASL_PASSWORD": broker.credentials()[user],
            "VATIC_KAFKA_SSL_CA_LOCATION": str(broker.ca.cert),
        }
    )
    env.update(override)
    return env


def run_job(
    run: SecureRun, server: ModelServer, tmp_path: Path, env: dict[str, str], timeout: float
) -> tuple[int, str]:
    argv = [
        str(VATIC), "stream", "run", str(run.folder), "--model-url", server.url,
        "--checkpoint-dir", str(tmp_path / "checkpoints"), "--no-create-topics", "--schema-registry-url", run.registry,
        "--bounded",
    ]  # fmt: skip
    log = tmp_path / "job.log"
    with log.open("ab") as out:
        job = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=out, env=env, start_new_session=True)
        try:
            code = job.wait(timeout=timeout)
        finally:
            if job.poll() is None:
                os.killpg(job.pid, signal.SIGKILL)
                job.wait()
    return code, log.read_text(errors="replace")


def test_ten_thousand_events_each_end_up_exactly_once_on_a_secured_broker(
    broker, registry_url, server, features, tmp_path
):
    run = secure_run(broker, tmp_path, features, registry_url)
    produce(run, "unused", 10_000)
    env = job_environment(broker)
    code, log = run_job(run, server, tmp_path, env, timeout=420)
    assert code == 0, log[-3000:]
    predictions, dead = drain(run, "unused", expected=10_000)
    check_oracle(run, predictions, dead)
    assert len(predictions) + len(dead) == 10_000
    # the password went to the job through its environment only: nothing the job printed or logged carries it
    secret = env["VATIC_KAFKA_SASL_PASSWORD"]
    assert secret not in log
    flink_logs = tmp_path / "checkpoints.logs"
    for file in flink_logs.rglob("*"):
        if file.is_file():
            assert secret not in file.read_text(errors="replace"), file


def mtls_environment(broker: SecureKafkaBroker, cert: Path, key: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VATIC_KAFKA_", "VATIC_STREAM_BOOTSTRAP"))}
    env.update(
        {
            "VATIC_KAFKA_BOOTSTRAP_SERVERS": broker.mtls_bootstrap,
            "VATIC_KAFKA_SECURITY_PROTOCOL": "SSL",
            "VATIC_KAFKA_SSL_CA_LOCATION": str(broker.ca.cert),
            "VATIC_KAFKA_SSL_CERTIFICATE_LOCATION": str(cert),
            "VATIC_KAFKA_SSL_KEY_LOCATION": str(key),
        }
    )
    return env


@pytest.mark.parametrize("identity", ["client-certificate", "sasl-plain"])
def test_the_job_authenticates_with_a_client_certificate_or_sasl_plain(
    broker, registry_url, server, features, tmp_path, identity
):
    """The other two identities Flink's (shaded) Kafka client takes from the same settings: mutual TLS (the key
    read by Kafka's directory config provider from its PEM file) and SASL PLAIN."""
    run = secure_run(broker, tmp_path, features, registry_url)
    produce(run, "unused", 300)
    if identity == "client-certificate":
        env = mtls_environment(broker, *broker.ca.client(JOB))
    else:
        env = job_environment(broker, VATIC_KAFKA_SASL_MECHANISM="PLAIN")
    code, log = run_job(run, server, tmp_path, env, timeout=300)
    assert code == 0, log[-3000:]
    predictions, dead = drain(run, "unused", expected=300, timeout_s=60)
    check_oracle(run, predictions, dead)
    assert len(predictions) + len(dead) == 300


def test_an_expired_client_certificate_ends_the_run_with_one_line(broker, registry_url, server, features, tmp_path):
    run = secure_run(broker, tmp_path, features, registry_url)
    cert, key = broker.ca.client("expired-" + os.urandom(3).hex(), expired=True)
    code, log = run_job(run, server, tmp_path, mtls_environment(broker, cert, key), 180)
    last = _one_line_failure(code, log)
    assert "refused the client certificate" in last, last
    assert "VATIC_KAFKA_SSL_CERTIFICATE_LOCATION" in last, last


def _one_line_failure(code: int, log: str) -> str:
    assert code == 2, log[-3000:]
    last = log.strip().splitlines()[-1]
    assert last.startswith("vatic: "), last
    assert "restart" not in log.lower(), log[-3000:]  # refused before the job started: nothing to restart
    return last


def test_a_wrong_password_ends_the_run_with_one_line(broker, registry_url, server, features, tmp_path):
    run = secure_run(broker, tmp_path, features, registry_url)
    wrong = "not-the-password-" + os.urandom(4).hex()
    code, log = run_job(run, server, tmp_path, job_environment(broker, VATIC_KAFKA_SASL_PASSWORD=wrong), 180)
    last = _one_line_failure(code, log)
    assert "refused the connection" in last, last
    assert "Authentication failed" in last, last
    assert "VATIC_KAFKA_SASL_PASSWORD" in last, last
    assert wrong not in log
    assert broker.credentials()[JOB] not in log


def test_an_untrusted_broker_certificate_ends_the_run_with_one_line(broker, registry_url, server, features, tmp_path):
    run = secure_run(broker, tmp_path, features, registry_url)
    stranger = LocalCA(tmp_path / "other-ca", "some other CA").ensure()
    env = job_environment(broker, VATIC_KAFKA_SSL_CA_LOCATION=str(stranger.cert))
    code, log = run_job(run, server, tmp_path, env, 180)
    last = _one_line_failure(code, log)
    assert "certificate verify failed" in last, last
    assert "VATIC_KAFKA_SSL_CA_LOCATION" in last, last


def test_a_missing_acl_ends_the_run_with_one_line_naming_the_grant(broker, registry_url, server, features, tmp_path):
    run = secure_run(broker, tmp_path, features, registry_url)
    # the application user may read the input but has no grant on the outputs nor the job's consumer group
    code, log = run_job(run, server, tmp_path, job_environment(broker, APP), 180)
    last = _one_line_failure(code, log)
    assert "Kafka ACLs do not let User:vatic-app" in last, last
    assert "kafka-acls --add" in last, last
