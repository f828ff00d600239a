"""The secured local broker (``vatic stack up --secure``): the same KRaft broker as the plain stack, reachable only
with TLS and credentials, with ACLs enforced.

Listeners (loopback, own ports, so it runs beside the plain broker):

* ``SASL_SSL`` (``kafka_secure_port``): SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN; the clients' listener.
* ``MTLS`` (``kafka_mtls_port``, SSL with ``ssl.client.auth=required``): the principal is the client
  certificate's common name (``CN=vatic-job`` is ``User:vatic-job``).
* ``CONTROLLER`` (``kafka_secure_controller_port``): SASL_SSL with PLAIN, used by the broker to reach its own
  controller as ``admin``.

Certificates come from a private CA made at first start (:mod:`vatic.cli.stack.certs`); SCRAM users are written
into the KRaft storage when it is formatted (Kafka's ``--add-scram``) and PLAIN users into the listener's JAAS
configuration. ``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false``: only ``admin`` is a super
user; every other principal may do exactly what its ACLs grant (:func:`job_acls` for a streaming job).

The credentials of the local users live in ``<home>/kafka-secure/credentials.json`` (mode 0600) and
:meth:`SecureKafkaBroker.client_settings` turns them into :class:`~vatic.connectors.kafka.KafkaSettings`;
``<home>/kafka-secure/<user>.env`` holds the same as ``VATIC_KAFKA_*`` lines for a shell (``set -a; .
<file>``). They are a developer stack's passwords, made at random per stack.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vatic.cli.stack.certs import LocalCA
from vatic.cli.stack.components import KafkaBroker, _java, broker_durability, new_cluster_id
from vatic.cli.stack.process import port_accepts
from vatic.schemas.errors import ConfigError

if TYPE_CHECKING:  # confluent-kafka is in the pipeline environment only (the stack module is imported by both)
    from vatic.connectors.kafka import KafkaSettings

#: the super user (inter-broker and controller traffic, topic and ACL administration)
ADMIN = "admin"
#: the streaming job's principal: what its ACLs grant and nothing more
JOB = "vatic-job"
#: an application principal (producers of input events, consumers of predictions in tests and the demo)
APP = "vatic-app"
USERS = (ADMIN, JOB, APP)
_SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule"
_PLAIN = "org.apache.kafka.common.security.plain.PlainLoginModule"


class SecureKafkaBroker(KafkaBroker):
    """A single-node KRaft broker with SASL_SSL, mutual TLS and ACLs (see the module docstring)."""

    name = "kafka-secure"

    @property
    def ports(self) -> list[int]:
        s = self.settings
        return [s.kafka_secure_port, s.kafka_secure_controller_port, s.kafka_mtls_port]

    def port_variable(self, port: int) -> str:
        s = self.settings
        return {
            s.kafka_secure_port: "VATIC_STACK_KAFKA_SECURE_PORT",
            s.kafka_secure_controller_port: "VATIC_STACK_KAFKA_SECURE_CONTROLLER_PORT",
            s.kafka_mtls_port: "VATIC_STACK_KAFKA_MTLS_PORT",
        }[port]

    @property
    def bootstrap(self) -> str:
        return f"{self.settings.host}:{self.settings.kafka_secure_port}"

    @property
    def mtls_bootstrap(self) -> str:
        return f"{self.settings.host}:{self.settings.kafka_mtls_port}"

    @property
    def ca(self) -> LocalCA:
        return LocalCA(self.process.dir / "tls")

    @property
    def credentials_file(self) -> Path:
        return self.process.dir / "credentials.json"

    def credentials(self) -> dict[str, str]:
        """user -> password of the local users (made at random at first start)."""
        if self.credentials_file.is_file():
            stored: dict[str, str] = json.loads(self.credentials_file.read_text(encoding="utf-8"))
            return stored
        self.process.dir.mkdir(parents=True, exist_ok=True)
        made = {user: secrets.token_urlsafe(18) for user in USERS}
        self.credentials_file.write_text(json.dumps(made), encoding="utf-8")
        os.chmod(self.credentials_file, 0o600)
        return made

    def client_settings(self, user: str = APP, *, mechanism: str = "SCRAM-SHA-512", **extra: Any) -> KafkaSettings:
        """Settings for a client of the SASL_SSL listener as ``user``."""
        from vatic.connectors.kafka import KafkaSettings

        return KafkaSettings(
            bootstrap_servers=self.bootstrap,
            security_protocol="SASL_SSL",
            sasl_mechanism=mechanism,
            sasl_username=user,
            sasl_password=self.credentials()[user],
            ssl_ca_location=str(self.ca.cert),
            **extra,
        )

    def mtls_settings(self, user: str = JOB, **extra: Any) -> KafkaSettings:
        """Settings for a client of the mutual-TLS listener authenticated by a certificate for ``user``."""
        from vatic.connectors.kafka import KafkaSettings

        cert, key = self.ca.client(user)
        return KafkaSettings(
            bootstrap_servers=self.mtls_bootstrap,
            security_protocol="SSL",
            ssl_ca_location=str(self.ca.cert),
            ssl_certificate_location=str(cert),
            ssl_key_location=str(key),
            **extra,
        )

    def keystore_password(self) -> str:
        file = self.process.dir / "tls" / "keystore.password"
        if not file.is_file():
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(secrets.token_urlsafe(18), encoding="utf-8")
            os.chmod(file, 0o600)
        return file.read_text(encoding="utf-8").strip()

    def server_properties(self) -> str:
        s = self.settings
        creds = self.credentials()
        admin = creds[ADMIN]
        plain_users = " ".join(f'user_{user}="{password}"' for user, password in creds.items())
        keystore = self.process.dir / "tls" / "broker.p12"
        return "\n".join(
            [
                "# written by vatic (cli/stack/secure.py); regenerated at each start. Holds local passwords: mode 0600",
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@{s.host}:{s.kafka_secure_controller_port}",
                f"listeners=SASL_SSL://{s.host}:{s.kafka_secure_port},CONTROLLER://{s.host}:"
                f"{s.kafka_secure_controller_port},MTLS://{s.host}:{s.kafka_mtls_port}",
                f"advertised.listeners=SASL_SSL://{s.host}:{s.kafka_secure_port},MTLS://{s.host}:{s.kafka_mtls_port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=SASL_SSL",
                "listener.security.protocol.map=CONTROLLER:SASL_SSL,SASL_SSL:SASL_SSL,MTLS:SSL",
                "sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN",
                "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
                "sasl.mechanism.controller.protocol=PLAIN",
                f'listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={_SCRAM} required username="{ADMIN}" '
                f'password="{admin}";',
                f"listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={_SCRAM} required;",
                f'listener.name.sasl_ssl.plain.sasl.jaas.config={_PLAIN} required username="{ADMIN}" '
                f'password="{admin}" {plain_users};',
                "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
                f'listener.name.controller.plain.sasl.jaas.config={_PLAIN} required username="{ADMIN}" '
                f'password="{admin}" user_{ADMIN}="{admin}";',
                "listener.name.mtls.ssl.client.auth=required",
                "ssl.principal.mapping.rules=RULE:^CN=([^,]+)$/$1/,DEFAULT",
                "ssl.keystore.type=PKCS12",
                f"ssl.keystore.location={keystore}",
                f"ssl.keystore.password={self.keystore_password()}",
                "ssl.truststore.type=PEM",
                f"ssl.truststore.location={self.ca.cert}",
                "ssl.endpoint.identification.algorithm=https",
                "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                f"super.users=User:{ADMIN}",
                "allow.everyone.if.no.acl.found=false",
                *broker_durability(self.data_dir),
                "",
            ]
        )

    def prepare(self) -> None:
        self.process.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.process.dir, 0o700)
        ca = self.ca.ensure()
        cert, key = ca.server("broker", ["localhost", self.settings.host])
        ca.pkcs12(cert, key, self.keystore_password())
        for user in (JOB, APP):
            ca.client(user)
        self.config_file.write_text(self.server_properties(), encoding="utf-8")
        os.chmod(self.config_file, 0o600)
        self._write_env_files()
        if (self.data_dir / "meta.properties").is_file():
            return
        java = _java(self.settings)
        libs = self.artifacts.require_kafka()
        scram = []
        for user, password in self.credentials().items():
            for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
                scram += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
        # the SCRAM users go into the metadata log's bootstrap records (KRaft has no ZooKeeper to hold them)
        done = subprocess.run(
            [java, "-cp", f"{libs}/*", "kafka.tools.StorageTool", "format", "-t", new_cluster_id(),
             "-c", str(self.config_file), *scram],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise ConfigError(
                f"kafka-secure: formatting KRaft storage in {self.data_dir} failed: {done.stderr.strip()}"
            )

    def _write_env_files(self) -> None:
        for user in (APP, JOB, ADMIN):
            file = self.process.dir / f"{user}.env"
            lines = {
                "VATIC_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "VATIC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "VATIC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                "VATIC_KAFKA_SASL_USERNAME": user,
                "VATIC_KAFKA_SASL_PASSWORD": self.credentials()[user],
                "VATIC_KAFKA_SSL_CA_LOCATION": str(self.ca.cert),
            }
            file.write_text("".join(f"{k}={v}\n" for k, v in lines.items()), encoding="utf-8")
            os.chmod(file, 0o600)

    def ready(self) -> bool:
        if not port_accepts(self.settings.host, self.settings.kafka_secure_port):
            return False
        from confluent_kafka.admin import AdminClient

        conf = self.client_settings(ADMIN).librdkafka()
        conf.update({"socket.timeout.ms": 1000})
        meta = AdminClient(conf).list_topics(timeout=2)
        return bool(meta.brokers)

    def describe(self) -> str:
        return (
            f"SASL_SSL {self.bootstrap}, mutual TLS {self.mtls_bootstrap}, CA {self.ca.cert}; "
            f"client settings: set -a; . {self.process.dir / (APP + '.env')}"
        )


@dataclass(frozen=True)
class Grant:
    """One ACL: ``principal`` may do ``operation`` on a resource (``topic``, ``group``, ``transactional_id``) named
    ``name`` (``prefixed``: every name starting with it)."""

    principal: str
    operation: str
    resource: str
    name: str
    prefixed: bool = False


def job_acls(
    principal: str, *, input_topic: str, output_topics: Iterable[str], group: str, transactional_prefix: str
) -> list[Grant]:
    """What a streaming job needs and nothing more: read its input topic in its consumer group, write its output
    and dead-letter topics, and use transactional ids under its prefix (exactly-once sinks)."""
    user = f"User:{principal}"
    grants = [
        Grant(user, "READ", "topic", input_topic),
        Grant(user, "DESCRIBE", "topic", input_topic),
        Grant(user, "READ", "group", group),
        Grant(user, "DESCRIBE", "group", group),
        Grant(user, "WRITE", "transactional_id", transactional_prefix, prefixed=True),
        Grant(user, "DESCRIBE", "transactional_id", transactional_prefix, prefixed=True),
    ]
    for topic in output_topics:
        grants += [Grant(user, "WRITE", "topic", topic), Grant(user, "DESCRIBE", "topic", topic)]
    return grants


def app_acls(principal: str, *, produce: Iterable[str] = (), consume: Iterable[str] = ()) -> list[Grant]:
    """An application's grants: write the ``produce`` topics, read the ``consume`` topics in any consumer group
    of its own (a reader of predictions, the dead-letter tools)."""
    user = f"User:{principal}"
    grants = []
    for topic in produce:
        grants += [Grant(user, "WRITE", "topic", topic), Grant(user, "DESCRIBE", "topic", topic)]
    for topic in consume:
        grants += [Grant(user, "READ", "topic", topic), Grant(user, "DESCRIBE", "topic", topic)]
    if consume:
        grants.append(Grant(user, "READ", "group", "*"))
    return grants


def replayer_acls(principal: str, *, dead_letter_topic: str, input_topic: str) -> list[Grant]:
    """What ``vatic dlq list|replay`` needs and nothing more: read the dead letters and the replay ledger, write
    the replays to the input topic and their entries to the ledger, create the ledger on the first replay, and
    use the dead-letter topic's one replay transactional id (:mod:`vatic.connectors.dlq`). The bounded reads
    assign partitions and commit nothing: no consumer group grant."""
    from vatic.connectors.dlq import ledger_topic, transactional_id

    user = f"User:{principal}"
    ledger = ledger_topic(dead_letter_topic)
    return [
        Grant(user, "READ", "topic", dead_letter_topic),
        Grant(user, "DESCRIBE", "topic", dead_letter_topic),
        Grant(user, "READ", "topic", ledger),
        Grant(user, "WRITE", "topic", ledger),
        Grant(user, "CREATE", "topic", ledger),
        Grant(user, "DESCRIBE", "topic", ledger),
        Grant(user, "WRITE", "topic", input_topic),
        Grant(user, "DESCRIBE", "topic", input_topic),
        Grant(user, "WRITE", "transactional_id", transactional_id(dead_letter_topic)),
        Grant(user, "DESCRIBE", "transactional_id", transactional_id(dead_letter_topic)),
    ]


def apply_acls(settings: KafkaSettings, grants: Iterable[Grant], *, timeout: float = 30.0) -> int:
    """Create ``grants`` on the broker (as a super user); returns how many were created. Idempotent."""
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AclBinding,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
    )

    bindings = [
        AclBinding(
            ResourceType[g.resource.upper()],
            g.name,
            ResourcePatternType.PREFIXED if g.prefixed else ResourcePatternType.LITERAL,
            g.principal,
            "*",
            AclOperation[g.operation],
            AclPermissionType.ALLOW,
        )
        for g in dict.fromkeys(grants)
    ]
    if not bindings:
        return 0
    admin = AdminClient(settings.librdkafka())
    for future in admin.create_acls(bindings, request_timeout=timeout).values():
        future.result(timeout=timeout)
    return len(bindings)
