"""Kafka clients that cannot lose data: an idempotent producer that raises every delivery failure, and a
consumer that stores an offset only after the output for that record (and every record before it) is confirmed.

Defaults overridden on purpose, because librdkafka's defaults can lose or duplicate data (retries without
idempotence duplicate or reorder records, ``auto.offset.reset=latest`` skips records, offsets stored at poll time
commit records whose output was never confirmed):

* producer: ``enable.idempotence=true`` (implies ``acks=all``, in-flight <= 5, no reordering on retry);
  a delivery report with an error is raised from :meth:`Producer.flush`, never logged and dropped.
* consumer: ``auto.offset.reset=earliest``, ``enable.auto.offset.store=false`` (we store offsets ourselves
  after the output is confirmed; librdkafka's auto-commit then commits only what we stored),
  ``isolation.level=read_committed`` (aborted transactions of an EXACTLY_ONCE writer are never read).

Values are bytes at this level; :class:`AvroSerde` adds the Avro codec (Confluent wire format) on top.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from confluent_kafka import Consumer as _RdConsumer
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka import Producer as _RdProducer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vatic.schemas.errors import (
    AccessDenied,
    ConfigError,
    CredentialsRejected,
    DeliveryFailed,
    RecordTooLarge,
    ServiceUnavailable,
    TopicNotFound,
    UntrustedCertificate,
)

Headers = list[tuple[str, str | bytes | None]]

_TOO_LARGE = {KafkaError.MSG_SIZE_TOO_LARGE}
_NO_TOPIC = {
    KafkaError._UNKNOWN_TOPIC,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
}


#: where librdkafka's own log lines go (``%4|...|rdkafka#producer-1|...`` on stderr otherwise)
LIBRDKAFKA_LOG = logging.getLogger("vatic.kafka.librdkafka")


#: the Flink Kafka SQL connector relocates the Kafka client under this package: JAAS login modules and config
#: providers named in its properties must carry the prefix (the unshaded names fail with ClassNotFoundException)
FLINK_KAFKA_SHADED = "org.apache.flink.kafka.shaded."
#: environment variables the JVM Kafka clients (Flink's source and sinks) read the secrets from at run time
PASSWORD_ENV = "VATIC_KAFKA_SASL_PASSWORD"  # noqa: S105 - a variable name
KEY_PASSWORD_ENV = "VATIC_KAFKA_SSL_KEY_PASSWORD"  # noqa: S105 - a variable name

_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


class KafkaSettings(BaseSettings):
    """Connection and security settings of every Kafka client vatic has (the job's source and sinks, the CLI,
    the demo, the dead-letter tools, the bench), read from ``VATIC_KAFKA_*`` environment variables.

    Secrets (``sasl_password``, ``ssl_key_password``) are ``SecretStr``: never in ``repr``, logs or error
    messages. The Python clients (librdkafka) get them from these settings; the JVM clients inside Flink get only a
    reference (``${env:VATIC_KAFKA_SASL_PASSWORD}``, resolved by Kafka's own config provider in each TaskManager),
    so Flink's configuration, job graph and logs never hold the value. Certificates and keys are PEM files
    (a Kubernetes ``kubernetes.io/tls`` Secret mounts ``tls.crt`` / ``tls.key`` as such).
    """

    model_config = SettingsConfigDict(env_prefix="VATIC_KAFKA_", extra="forbid")

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "vatic"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    #: PEM file of the CA that signed the brokers' certificates (None: the system's trust store)
    ssl_ca_location: str | None = None
    #: PEM client certificate and key (mutual TLS); the key may be encrypted with ``ssl_key_password``
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    #: check that the broker's certificate names the host connected to (turn off only for IP-only test brokers)
    ssl_check_hostname: bool = True
    #: extra librdkafka properties, applied last (e.g. ``{"linger.ms": "10"}``)
    extra: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSettings:
        sasl = self.security_protocol.startswith("SASL")
        if sasl and (self.sasl_mechanism is None or not self.sasl_username or self.sasl_password is None):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs VATIC_KAFKA_SASL_MECHANISM, "
                f"VATIC_KAFKA_SASL_USERNAME and {PASSWORD_ENV}"
            )
        if not sasl and self.sasl_mechanism is not None:
            raise ValueError(
                f"VATIC_KAFKA_SASL_MECHANISM is set but security_protocol is {self.security_protocol}: "
                "use SASL_SSL (or SASL_PLAINTEXT)"
            )
        if (self.ssl_certificate_location is None) != (self.ssl_key_location is None):
            raise ValueError(
                "mutual TLS needs both VATIC_KAFKA_SSL_CERTIFICATE_LOCATION and VATIC_KAFKA_SSL_KEY_LOCATION"
            )
        tls_files = (self.ssl_ca_location, self.ssl_certificate_location)
        if not self.tls and any(tls_files):
            raise ValueError(
                f"TLS files are set but security_protocol is {self.security_protocol}: use SSL or SASL_SSL"
            )
        return self

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def describe(self) -> str:
        """One line for logs and errors: where and as whom, never a secret."""
        who = f" as {self.sasl_username} ({self.sasl_mechanism})" if self.sasl_mechanism else ""
        cert = " with a client certificate" if self.ssl_certificate_location else ""
        return f"{self.bootstrap_servers} over {self.security_protocol}{who}{cert}"

    def librdkafka(self) -> dict[str, Any]:
        """The common librdkafka configuration (connection and security only). librdkafka's own log lines go
        to the Python logger ``vatic.kafka.librdkafka`` (a program sends them where it wants, e.g. a file)."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
            "logger": LIBRDKAFKA_LOG,
        }
        if self.tls:
            conf["ssl.endpoint.identification.algorithm"] = "https" if self.ssl_check_hostname else "none"
            if self.ssl_ca_location:
                conf["ssl.ca.location"] = self.ssl_ca_location
            if self.ssl_certificate_location and self.ssl_key_location:
                conf["ssl.certificate.location"] = self.ssl_certificate_location
                conf["ssl.key.location"] = self.ssl_key_location
                if self.ssl_key_password is not None:
                    conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username or ""
            conf["sasl.password"] = self.sasl_password.get_secret_value() if self.sasl_password else ""
        return conf

    def java_properties(self, *, shaded: str = FLINK_KAFKA_SHADED) -> dict[str, str]:
        """The same connection and security for a JVM Kafka client (Flink's Kafka connector: each key goes
        into a table option as ``properties.<key>``).

        Secrets appear only as references to the environment (``${env:VATIC_KAFKA_SASL_PASSWORD}``) and PEM files
        as references to their folder (``${directory:...}``), resolved by Kafka's own config providers in the
        process that opens the connection; so every Flink process (the TaskManagers on a cluster) must have the
        variables set. ``shaded`` is the relocation prefix of the connector's Kafka classes ("" for a plain
        kafka-clients jar).
        """
        props: dict[str, str] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        providers: dict[str, str] = {}
        if self.sasl_mechanism:
            if os.environ.get(PASSWORD_ENV) is None:
                raise ConfigError(
                    f"Flink's Kafka clients read the SASL password from {PASSWORD_ENV}: set it in the environment of "
                    "every Flink process (on Kubernetes, from a Secret), not only in these settings"
                )
            providers["env"] = "org.apache.kafka.common.config.provider.EnvVarConfigProvider"
            module = shaded + _LOGIN_MODULES[self.sasl_mechanism]
            user = _jaas_quote(self.sasl_username or "")
            props["sasl.mechanism"] = self.sasl_mechanism
            props["sasl.jaas.config"] = f'{module} required username="{user}" password="${{env:{PASSWORD_ENV}}}";'
        if self.tls:
            props["ssl.endpoint.identification.algorithm"] = "https" if self.ssl_check_hostname else ""
            if self.ssl_ca_location:
                props["ssl.truststore.type"] = "PEM"
                props["ssl.truststore.location"] = self.ssl_ca_location
            if self.ssl_certificate_location and self.ssl_key_location:
                providers["directory"] = "org.apache.kafka.common.config.provider.DirectoryConfigProvider"
                props["ssl.keystore.type"] = "PEM"
                props["ssl.keystore.certificate.chain"] = _directory_ref(self.ssl_certificate_location)
                props["ssl.keystore.key"] = _directory_ref(self.ssl_key_location)
                if self.ssl_key_password is not None:
                    if os.environ.get(KEY_PASSWORD_ENV) is None:
                        raise ConfigError(f"set {KEY_PASSWORD_ENV} in the environment of every Flink process")
                    providers["env"] = "org.apache.kafka.common.config.provider.EnvVarConfigProvider"
                    props["ssl.key.password"] = f"${{env:{KEY_PASSWORD_ENV}}}"
        if providers:
            props["config.providers"] = ",".join(providers)
            for alias, cls in providers.items():
                props[f"config.providers.{alias}.class"] = shaded + cls
        return props


def _jaas_quote(value: str) -> str:
    if '"' in value or "\\" in value or ";" in value:
        raise ConfigError("a Kafka SASL user name may not contain quotes, backslashes or semicolons")
    return value


def _directory_ref(path: str) -> str:
    """``${directory:<folder>:<file>}``: Kafka's DirectoryConfigProvider reads the file's content at connect time
    (the key never enters Flink's configuration)."""
    file = Path(path).expanduser().absolute()
    return f"${{directory:{file.parent}:{file.name}}}"


_DENIED = {KafkaError._AUTHENTICATION: "authentication", KafkaError._SSL: "tls"}


class AccessWatch:
    """librdkafka reports a refused login or TLS handshake only through its error callback (the call that
    needed the connection then fails with a generic transport error or a timeout). Installed as ``error_cb`` in
    every client vatic makes, this keeps the last such refusal so that the caller raises it as
    :class:`AccessDenied` instead of reporting Kafka as unreachable."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self.denied: tuple[str, str] | None = None

    def __call__(self, error: KafkaError) -> None:
        reason = _DENIED.get(error.code())
        if reason is None and error.code() == KafkaError._TRANSPORT and "tls alert" in error.str().lower():
            reason = "tls"  # the broker ended the handshake: it refused our client certificate
        if reason is not None:
            self.denied = (reason, error.str())

    def install(self, conf: dict[str, Any]) -> dict[str, Any]:
        conf["error_cb"] = self
        return conf

    def check(self) -> None:
        """Raise :class:`AccessDenied` when the broker refused this client's identity."""
        if self.denied is None:
            return
        reason, detail = self.denied
        s = self.settings
        if reason == "authentication":
            fix = (
                f"check VATIC_KAFKA_SASL_USERNAME ({s.sasl_username}) and {PASSWORD_ENV}, and that the user exists "
                f"for {s.sasl_mechanism}"
            )
        elif "alert" in detail.lower():
            fix = (
                "the broker refused the client certificate: check VATIC_KAFKA_SSL_CERTIFICATE_LOCATION (signed by a "
                "CA the broker trusts, not expired)"
            )
        else:
            fix = (
                "check VATIC_KAFKA_SSL_CA_LOCATION (the CA that signed the brokers' certificates) and that the "
                "brokers' certificates are in their validity period"
            )
        message = f"Kafka at {s.describe()} refused the connection ({_last_clause(detail)}): {fix}"
        if reason == "authentication":
            raise CredentialsRejected(message, service="kafka", endpoint=s.bootstrap_servers)
        if "alert" in detail.lower():  # the broker refused our certificate
            raise AccessDenied(message, service="kafka", endpoint=s.bootstrap_servers, reason="tls")
        raise UntrustedCertificate(message, service="kafka", endpoint=s.bootstrap_servers)


def _last_clause(detail: str) -> str:
    """librdkafka's error text without the broker prefix and timing suffix."""
    text = detail.split(": ", 1)[1] if detail.startswith(("sasl_", "ssl://", "plaintext://")) else detail
    return re.sub(r"\s*\(after \d+ms in state \w+\)\s*$", "", text)


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed record: raw bytes plus where it came from (kept for dead-letter records)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int | None


@dataclass(frozen=True, slots=True)
class Delivered:
    """Where a produced record landed."""

    topic: str
    partition: int
    offset: int


def _classify_delivery(error: KafkaError, topic: str, size: int) -> Exception:
    code = error.code()
    if code in _TOO_LARGE:
        return RecordTooLarge(f"record of {size} bytes is too large for {topic}: {error.str()}", topic=topic, size=size)
    if code in _NO_TOPIC:
        return TopicNotFound(
            f"cannot produce to {topic}: {error.str()} (create the topic or grant access)", topic=topic
        )
    return DeliveryFailed(f"delivery to {topic} failed: {error.name()}: {error.str()}", topic=topic, code=error.name())


class Producer:
    """Idempotent producer. Every record is either confirmed by :meth:`flush` or raised from it.

    Contract: ``produce`` enqueues and never blocks for long (a full local queue is drained by polling);
    ``flush`` waits for every outstanding delivery report and raises the first failure as a classified error
    (:class:`RecordTooLarge` = dead-letter, :class:`TopicNotFound` = config, :class:`DeliveryFailed` = retry
    or fail). The caller must not commit input offsets for records whose outputs were not confirmed.
    Not thread-safe for concurrent ``flush`` calls; ``produce`` may be called from several threads.
    """

    def __init__(
        self,
        settings: KafkaSettings | None = None,
        *,
        config: dict[str, Any] | None = None,
        transactional_id: str | None = None,
        keep_reports: bool = True,
    ) -> None:
        """``keep_reports`` False: a long-lived producer whose deliveries are reported only to each record's
        ``on_delivery`` (nothing is kept for :meth:`flush` to return or raise)."""
        self.settings = settings or KafkaSettings()
        self._keep = keep_reports
        conf = self.settings.librdkafka()
        conf.update(
            {
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
                "message.timeout.ms": 120_000,
            }
        )
        if transactional_id:
            conf["transactional.id"] = transactional_id
            # librdkafka requires message.timeout.ms <= transaction.timeout.ms (broker max: 1 h locally)
            conf["transaction.timeout.ms"] = 300_000
        conf.update(self.settings.extra)
        conf.update(config or {})
        self.access = AccessWatch(self.settings)
        self._producer = _RdProducer(self.access.install(conf))
        self._lock = threading.Lock()
        self._failures: list[Exception] = []
        self._delivered: list[Delivered] = []
        self._outstanding = 0
        self._transactional = bool(transactional_id)
        if self._transactional:
            try:
                self._producer.init_transactions(30)
            except KafkaException as exc:
                self.access.check()
                if exc.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
                    principal = _principal(self.settings)
                    raise AccessDenied(
                        f"Kafka ACLs do not let {principal} WRITE transactional id {transactional_id!r}: grant it "
                        f"(`kafka-acls --add --allow-principal {principal} --operation Write --transactional-id "
                        f"{transactional_id}`)",
                        service="kafka",
                        reason="authorization",
                    ) from exc
                raise

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Headers | None = None,
        *,
        on_delivery: Callable[[Delivered | None, Exception | None], None] | None = None,
    ) -> None:
        """Enqueue one record. A record too large for the client is raised here as :class:`RecordTooLarge`."""
        size = len(value or b"") + len(key or b"")

        def report(err: KafkaError | None, msg: Message) -> None:
            failure: Exception | None = None
            delivered: Delivered | None = None
            with self._lock:
                self._outstanding -= 1
                if err is not None:
                    failure = _classify_delivery(err, topic, size)
                    if self._keep:
                        self._failures.append(failure)
                else:
                    delivered = Delivered(msg.topic() or topic, msg.partition() or 0, msg.offset() or 0)
                    if self._keep:
                        self._delivered.append(delivered)
            if on_delivery is not None:
                on_delivery(delivered, failure)

        while True:
            try:
                with self._lock:
                    self._outstanding += 1
                self._producer.produce(topic, value, key, headers=headers, on_delivery=report)
                return
            except BufferError:
                with self._lock:
                    self._outstanding -= 1
                self._producer.poll(0.05)  # local queue full: serve delivery reports, then try again
            except KafkaException as exc:
                with self._lock:
                    self._outstanding -= 1
                raise _classify_delivery(exc.args[0], topic, size) from exc

    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery reports; returns how many were served."""
        return int(self._producer.poll(timeout))

    def flush(self, timeout: float = 30.0) -> list[Delivered]:
        """Wait until every enqueued record is acknowledged; return them, or raise the first failure.

        Raises :class:`DeliveryFailed` if records are still outstanding after ``timeout`` seconds.
        """
        remaining = self._producer.flush(timeout)
        with self._lock:
            failures, self._failures = self._failures, []
            delivered, self._delivered = self._delivered, []
        if failures:
            self.access.check()
            raise failures[0]
        if remaining:
            self.access.check()
            raise DeliveryFailed(
                f"{remaining} record(s) not acknowledged within {timeout}s", topic="*", code="_FLUSH_TIMEOUT"
            )
        return delivered

    @property
    def outstanding(self) -> int:
        """Records enqueued whose delivery report has not arrived yet."""
        with self._lock:
            return self._outstanding

    # -- transactions (used by oracles and tests that emulate an EXACTLY_ONCE writer) --------------------------

    def begin(self) -> None:
        self._producer.begin_transaction()

    def commit(self, timeout: float = 30.0) -> None:
        self._producer.commit_transaction(timeout)
        self.flush(timeout)

    def abort(self, timeout: float = 30.0) -> None:
        self._producer.abort_transaction(timeout)
        with self._lock:
            self._failures.clear()
            self._delivered.clear()

    def close(self, timeout: float = 30.0) -> None:
        """Flush what is outstanding (raising failures) and release the client."""
        self.flush(timeout)


@dataclass
class _PartitionTracker:
    """Offsets handed out and confirmed for one partition.

    The offset we may store is the lowest handed-out offset not yet confirmed (everything below it is done),
    or one past the highest handed-out offset when all are confirmed.
    """

    pending: set[int] = field(default_factory=set)
    high: int = -1

    def hand_out(self, offset: int) -> None:
        self.pending.add(offset)
        self.high = max(self.high, offset)

    def confirm(self, offset: int) -> None:
        self.pending.discard(offset)

    def safe_position(self) -> int | None:
        if self.high < 0:
            return None
        return min(self.pending) if self.pending else self.high + 1


class Consumer:
    """Consumer whose committed position never passes an unconfirmed record.

    Usage::

        records = consumer.poll_batch(500, timeout=1.0)
        ... produce outputs / dead-letter records, producer.flush() ...
        consumer.confirm(records)   # only now may their offsets be committed

    ``confirm`` may be called in any order; the stored offset of a partition advances only over a contiguous
    prefix of confirmed records. librdkafka auto-commits stored offsets (every ``auto.commit.interval.ms``);
    :meth:`commit` commits them synchronously. On a rebalance, revoked partitions are forgotten after a final
    synchronous commit of their safe positions.
    """

    def __init__(
        self,
        topics: Sequence[str],
        group_id: str,
        settings: KafkaSettings | None = None,
        *,
        config: dict[str, Any] | None = None,
    ) -> None:
        if not group_id:
            raise ConfigError("a consumer needs a group id (without one, offsets are never committed)")
        self.settings = settings or KafkaSettings()
        conf = self.settings.librdkafka()
        conf.update(
            {
                "group.id": group_id,
                "auto.offset.reset": "earliest",
                "enable.auto.offset.store": False,
                "enable.auto.commit": True,
                "auto.commit.interval.ms": 1000,
                "isolation.level": "read_committed",
                "enable.partition.eof": False,
            }
        )
        conf.update(self.settings.extra)
        conf.update(config or {})
        self.access = AccessWatch(self.settings)
        self._consumer = _RdConsumer(self.access.install(conf))
        self._trackers: dict[tuple[str, int], _PartitionTracker] = {}
        self._lock = threading.Lock()
        self._consumer.subscribe(list(topics), on_revoke=self._on_revoke, on_lost=self._on_lost)

    def poll_batch(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        """Up to ``max_records`` records, waiting at most ``timeout`` seconds for the first one.

        Raises :class:`ServiceUnavailable` for a fatal consumer error; transient broker errors are retried by
        librdkafka and not surfaced.
        """
        messages = self._consumer.consume(max_records, timeout)
        if not messages:
            self.access.check()
        records: list[Record] = []
        with self._lock:
            for msg in messages:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    if err.fatal() or not err.retriable():
                        if err.code() in _NO_TOPIC:
                            raise TopicNotFound(f"cannot consume {msg.topic()}: {err.str()}", topic=msg.topic() or "")
                        raise ServiceUnavailable(f"consumer error: {err.name()}: {err.str()}", service="kafka")
                    continue
                topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                assert topic is not None
                assert partition is not None
                assert offset is not None
                self._trackers.setdefault((topic, partition), _PartitionTracker()).hand_out(offset)
                records.append(_record(msg, topic, partition, offset))
        return records

    def confirm(self, records: Iterable[Record]) -> None:
        """Mark records as done (their output or dead-letter record is acknowledged); store safe offsets."""
        touched: set[tuple[str, int]] = set()
        with self._lock:
            for record in records:
                tracker = self._trackers.get((record.topic, record.partition))
                if tracker is None:
                    continue  # partition revoked since: its new owner re-reads the record
                tracker.confirm(record.offset)
                touched.add((record.topic, record.partition))
            positions = self._positions(touched)
        if positions:
            self._consumer.store_offsets(offsets=positions)

    def commit(self) -> None:
        """Synchronously commit the stored (safe) offsets."""
        with self._lock:
            positions = self._positions(self._trackers.keys())
        if positions:
            self._consumer.commit(offsets=positions, asynchronous=False)

    def committed(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        """Committed offsets of this group for ``topic`` (``-1001`` = none)."""
        tps = self._consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: tp.offset for tp in tps}

    def assignment(self) -> list[tuple[str, int]]:
        """The partitions currently assigned to this consumer."""
        return [(tp.topic, tp.partition) for tp in self._consumer.assignment()]

    def pending(self) -> int:
        """Records handed out and not confirmed yet."""
        with self._lock:
            return sum(len(t.pending) for t in self._trackers.values())

    def close(self) -> None:
        """Commit safe positions and leave the group."""
        try:
            self.commit()
        finally:
            self._consumer.close()

    def _positions(self, keys: Iterable[tuple[str, int]]) -> list[TopicPartition]:
        out = []
        for topic, partition in keys:
            position = self._trackers[(topic, partition)].safe_position()
            if position is not None:
                out.append(TopicPartition(topic, partition, position))
        return out

    def _on_revoke(self, consumer: _RdConsumer, partitions: list[TopicPartition]) -> None:
        with self._lock:
            keys = [(tp.topic, tp.partition) for tp in partitions if (tp.topic, tp.partition) in self._trackers]
            positions = self._positions(keys)
            for key in keys:
                del self._trackers[key]
        if positions:
            # Only confirmed prefixes are committed; unconfirmed records will be re-read by the new owner.
            consumer.commit(offsets=positions, asynchronous=False)

    def _on_lost(self, consumer: _RdConsumer, partitions: list[TopicPartition]) -> None:
        with self._lock:
            for tp in partitions:
                self._trackers.pop((tp.topic, tp.partition), None)


def scan(
    topic: str,
    settings: KafkaSettings | None = None,
    *,
    start: dict[int, int] | int | None = None,
    partitions: Iterable[int] | None = None,
    stall_timeout: float = 30.0,
    batch: int = 500,
) -> Iterator[Record]:
    """Every committed record of ``topic`` (``read_committed``) in ``partitions`` (all by default), from
    ``start`` (an offset for every partition, or one per partition; the earliest by default) up to the end
    offsets the topic had when the scan began, then stop: a bounded read for tools (dead-letter listing and
    replay), not a subscription. No consumer group offset is read or committed.

    A partition ends when the consumer's position reaches its end offset or librdkafka reports its end (for a
    ``read_committed`` reader: the last stable offset, before a transaction that is still open). Raises
    :class:`TopicNotFound` for a missing topic and :class:`ServiceUnavailable` when a partition makes no progress
    for ``stall_timeout`` seconds.
    """
    settings = settings or KafkaSettings()
    conf = settings.librdkafka()
    conf.update(
        {
            "group.id": f"vatic-scan-{uuid.uuid4().hex}",  # never committed: assign(), not subscribe()
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    conf.update(settings.extra)
    access = AccessWatch(settings)
    consumer = _RdConsumer(access.install(conf))
    try:
        ends = _scan_assign(consumer, access, topic, settings, start, partitions)
        progress = time.monotonic()
        while ends:
            messages = consumer.consume(batch, 0.5)
            if messages:
                progress = time.monotonic()
            for msg in messages:
                record = _scan_record(msg, ends, access, topic)
                if record is not None:
                    yield record
            if ends and not messages:
                for tp in consumer.position([TopicPartition(topic, p) for p in ends]):
                    if tp.offset >= ends[tp.partition]:  # past transaction markers or aborted records
                        ends.pop(tp.partition, None)
                if ends and time.monotonic() - progress > stall_timeout:
                    access.check()
                    raise ServiceUnavailable(
                        f"reading {topic}: partition(s) {sorted(ends)} made no progress for {stall_timeout:.0f} s "
                        f"before their end offsets (is the broker up?)",
                        service="kafka",
                    )
    finally:
        consumer.close()


def _scan_assign(
    consumer: _RdConsumer,
    access: AccessWatch,
    topic: str,
    settings: KafkaSettings,
    start: dict[int, int] | int | None,
    partitions: Iterable[int] | None,
) -> dict[int, int]:
    """Assign the partitions that hold records to read; return their end offsets (the scan's bounds)."""
    try:
        metadata = consumer.list_topics(topic, timeout=10)
    except KafkaException:
        access.check()
        raise ServiceUnavailable(f"no Kafka broker answers at {settings.bootstrap_servers}", service="kafka") from None
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        access.check()
        raise TopicNotFound(f"topic {topic} does not exist on {settings.bootstrap_servers}", topic=topic)
    wanted = sorted(found.partitions) if partitions is None else sorted(set(partitions) & set(found.partitions))
    starts = start if isinstance(start, dict) else dict.fromkeys(wanted, start) if start is not None else {}
    ends: dict[int, int] = {}
    assign = []
    for partition in wanted:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
        first = max(low, starts.get(partition, low))
        if first < high:
            ends[partition] = high
            assign.append(TopicPartition(topic, partition, first))
    if assign:
        consumer.assign(assign)
    return ends


def _scan_record(msg: Message, ends: dict[int, int], access: AccessWatch, topic: str) -> Record | None:
    """The record of one consumed message inside the scan's bounds (a partition leaves ``ends`` at its end)."""
    err = msg.error()
    if err is not None and err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
        return None  # librdkafka looks up the coordinator of the scan's throwaway group, which is never used
    partition = msg.partition()
    assert partition is not None
    if err is not None:
        if err.code() == KafkaError._PARTITION_EOF:
            ends.pop(partition, None)
        elif err.code() in _NO_TOPIC:
            access.check()
            raise TopicNotFound(f"cannot read {topic}: {err.str()}", topic=topic)
        elif err.fatal() or not err.retriable():
            raise ServiceUnavailable(f"consumer error: {err.name()}: {err.str()}", service="kafka")
        return None
    offset = msg.offset()
    assert offset is not None
    if partition not in ends or offset >= ends[partition]:
        ends.pop(partition, None)
        return None
    if offset + 1 >= ends[partition]:
        ends.pop(partition, None)
    return _record(msg, topic, partition, offset)


def _record(msg: Message, topic: str, partition: int, offset: int) -> Record:
    ts_type, ts = msg.timestamp()
    return Record(
        topic=topic,
        partition=partition,
        offset=offset,
        key=msg.key(),
        value=msg.value(),
        headers=list(msg.headers() or []),  # type: ignore[arg-type] # a list at runtime
        timestamp_ms=ts if ts_type else None,
    )


class Codec(Protocol):
    """What :class:`AvroSerde` needs of a codec (``vatic.schemas.codec.AvroCodec`` is one)."""

    def encode(self, record: dict[str, Any]) -> bytes: ...

    def decode(self, data: bytes) -> dict[str, Any]: ...


@dataclass(frozen=True)
class AvroSerde:
    """Avro values in the Confluent wire format on top of the byte-level clients.

    ``deserialize`` raises :class:`vatic.schemas.errors.DecodeError` carrying the raw bytes for anything
    that is not a valid record (bad magic byte, truncated, unknown schema id): dead-letter material.
    """

    codec: Codec

    def serialize(self, record: dict[str, Any]) -> bytes:
        return self.codec.encode(record)

    def deserialize(self, data: bytes | None) -> dict[str, Any]:
        from vatic.schemas.errors import DecodeError

        if data is None:
            raise DecodeError("record has no value (tombstone)", b"")
        return self.codec.decode(data)


# -- admin ----------------------------------------------------------------------------------------------------


def admin_client(settings: KafkaSettings | None = None) -> AdminClient:
    """An admin client; its :class:`AccessWatch` is ``client.access`` (``_list_topics`` checks it)."""
    settings = settings or KafkaSettings()
    watch = AccessWatch(settings)
    admin = AdminClient(watch.install(settings.librdkafka()))
    admin.access = watch  # type: ignore[attr-defined]
    return admin


def ensure_topics(
    names: Iterable[str],
    *,
    partitions: int = 1,
    replication: int = 1,
    config: dict[str, str] | None = None,
    settings: KafkaSettings | None = None,
    timeout: float = 30.0,
) -> list[str]:
    """Create the topics that do not exist yet; return the names created. Existing topics are left alone."""
    admin = admin_client(settings)
    existing = set(_list_topics(admin, timeout))
    missing = [n for n in dict.fromkeys(names) if n not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(n, partitions, replication, config=config or {}) for n in missing],
        operation_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            created.append(name)
        except KafkaException as exc:
            code = exc.args[0].code()
            if code in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED):
                principal = _principal(settings or KafkaSettings())
                raise AccessDenied(
                    f"Kafka ACLs do not let {principal} CREATE topic {name!r}: grant it (`kafka-acls --add "
                    f"--allow-principal {principal} --operation Create --topic {name}`) or create it first",
                    service="kafka",
                    reason="authorization",
                ) from exc
            if code != KafkaError.TOPIC_ALREADY_EXISTS:
                raise ConfigError(f"cannot create topic {name}: {exc.args[0].str()}") from exc
    return created


def check_topics(names: Iterable[str], *, settings: KafkaSettings | None = None, timeout: float = 10.0) -> None:
    """Raise :class:`TopicNotFound` for the first topic that does not exist (call it at job start-up)."""
    existing = set(_list_topics(admin_client(settings), timeout))
    for name in names:
        if name not in existing:
            raise TopicNotFound(
                f"topic {name!r} does not exist: create it (vatic creates the service's topics on `stack up`/"
                "`stream run`; with auto-creation off nothing else will)",
                topic=name,
            )


def broker_count(settings: KafkaSettings | None = None, *, timeout: float = 30.0) -> int:
    """How many brokers the cluster's metadata lists (a topic's replication cannot exceed it)."""
    return len(_metadata(admin_client(settings), timeout).brokers)


def _list_topics(admin: AdminClient, timeout: float) -> list[str]:
    return list(_metadata(admin, timeout).topics)


def _metadata(admin: AdminClient, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            # short tries: a refused login shows in the error callback after the first one
            return admin.list_topics(timeout=min(2.0, max(0.5, deadline - time.monotonic())))
        except KafkaException as exc:
            watch = getattr(admin, "access", None)
            if watch is not None:
                admin.poll(0.2)  # serve the error callbacks that say why
                watch.check()
            if time.monotonic() >= deadline:
                raise ServiceUnavailable(f"Kafka is not reachable: {exc.args[0].str()}", service="kafka") from exc


def check_access(
    settings: KafkaSettings,
    *,
    read: Iterable[str] = (),
    write: Iterable[str] = (),
    group: str | None = None,
    transactional_prefix: str | None = None,
    timeout: float = 15.0,
) -> None:
    """Check, before a job starts, that Kafka accepts these settings and grants what the job needs: raises
    :class:`AccessDenied` (credentials refused, certificate untrusted or expired, an ACL missing: the message names
    the principal, the operation and the resource), :class:`TopicNotFound`, or :class:`ServiceUnavailable`.

    Without it, each of these shows inside a running Flink job as a task failure, restarted again and again
    until the restart budget is spent; the broker's own answer (the operations it authorizes this principal for,
    per topic and group) is the one source of truth. ``transactional_prefix``: also check that transactional ids
    under it may be used, by initialising one (``<prefix>access-check``), as an exactly-once sink does.
    """
    from confluent_kafka.admin import AclOperation  # type: ignore[attr-defined]

    admin = admin_client(settings)
    _list_topics(admin, timeout)  # a refused login or handshake is raised here, before any question
    principal = _principal(settings)
    needs = {topic: {AclOperation.READ} for topic in read}
    for topic in write:
        needs.setdefault(topic, set()).add(AclOperation.WRITE)
    for topic, allowed in _authorized_operations(admin, list(needs), timeout).items():
        for op in sorted(needs[topic] - allowed if allowed is not None else (), key=lambda o: o.name):
            raise AccessDenied(
                f"Kafka ACLs do not let {principal} {op.name} topic {topic!r}: grant it (`kafka-acls --add "
                f"--allow-principal {principal} --operation {op.name.title()} --topic {topic}`)",
                service="kafka",
                reason="authorization",
            )
    if group is not None:
        _check_group(admin, group, principal, timeout)
    if transactional_prefix is not None:
        _check_transactional(settings, transactional_prefix, principal, timeout)


def _operations(reported: list[Any] | None) -> set[Any] | None:
    """The operations a broker reported, or None when it reports none (an old broker): nothing is refused then,
    the job itself meets a missing grant."""
    return None if reported is None else set(reported)


def _authorized_operations(admin: AdminClient, topics: list[str], timeout: float) -> dict[str, set[Any] | None]:
    """topic -> the operations the broker authorizes this client for (empty: may not even DESCRIBE it). A topic
    the broker does not know yet is asked again for up to 5 s (a topic created a moment ago may not be in the
    metadata the broker answers from), then :class:`TopicNotFound`."""
    from confluent_kafka import TopicCollection

    deadline = time.monotonic() + min(timeout, 5.0)
    answers: dict[str, set[Any] | None] = {}
    pending = list(topics)
    while pending:
        futures = admin.describe_topics(TopicCollection(pending), request_timeout=timeout,
                                        include_authorized_operations=True)  # fmt: skip
        unknown = []
        for topic, future in futures.items():
            try:
                answers[topic] = _operations(future.result(timeout=timeout).authorized_operations)
            except KafkaException as exc:
                code = exc.args[0].code()
                if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                    answers[topic] = set()
                elif code in _NO_TOPIC:
                    if time.monotonic() >= deadline:
                        raise TopicNotFound(
                            f"topic {topic!r} does not exist: create it (topic auto-creation is off on vatic's "
                            "brokers)",
                            topic=topic,
                        ) from exc
                    unknown.append(topic)
                else:
                    raise ServiceUnavailable(
                        f"Kafka did not describe topic {topic!r}: {exc.args[0].str()}", service="kafka"
                    ) from exc
        pending = unknown
        if pending:
            time.sleep(0.2)
    return answers


_COORDINATOR_MOVING = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
}


def _check_group(admin: AdminClient, group: str, principal: str, timeout: float) -> None:
    """READ on the consumer group, from the operations the broker authorizes on it (``DescribeGroups``). Not
    ``list_consumer_group_offsets``: librdkafka 2.16's admin client crashes the process (SIGSEGV) in it when the
    group coordinator is still loading, as it does for a while after a broker starts."""
    from confluent_kafka.admin import AclOperation  # type: ignore[attr-defined]

    deadline = time.monotonic() + timeout
    while True:
        future = admin.describe_consumer_groups([group], request_timeout=timeout, include_authorized_operations=True)
        try:
            allowed = _operations(future[group].result(timeout=timeout).authorized_operations)
            break
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
                allowed = set()
                break
            # a coordinator that moves or still loads after a broker start: ask again within the timeout
            if error.code() not in _COORDINATOR_MOVING or time.monotonic() >= deadline:
                admin.access.check()  # type: ignore[attr-defined]
                raise ServiceUnavailable(
                    f"Kafka did not describe group {group!r}: {error.str()}", service="kafka"
                ) from exc
            time.sleep(0.2)
    if allowed is not None and AclOperation.READ not in allowed:
        raise AccessDenied(
            f"Kafka ACLs do not let {principal} READ consumer group {group!r}: grant it (`kafka-acls --add "
            f"--allow-principal {principal} --operation Read --group {group}`)",
            service="kafka",
            reason="authorization",
        )


def _check_transactional(settings: KafkaSettings, prefix: str, principal: str, timeout: float) -> None:
    watch = AccessWatch(settings)
    conf = watch.install(settings.librdkafka())
    conf.update({"transactional.id": f"{prefix}access-check", "transaction.timeout.ms": 60_000})
    producer = _RdProducer(conf)
    try:
        producer.init_transactions(timeout)
    except KafkaException as exc:
        if exc.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
            raise AccessDenied(
                f"Kafka ACLs do not let {principal} WRITE transactional ids {prefix}* (exactly-once sinks): grant it "
                f"(`kafka-acls --add --allow-principal {principal} --operation Write --transactional-id {prefix} "
                "--resource-pattern-type prefixed`)",
                service="kafka",
                reason="authorization",
            ) from exc
        watch.check()
        raise ServiceUnavailable(f"Kafka did not start a transaction: {exc.args[0].str()}", service="kafka") from exc


def _principal(settings: KafkaSettings) -> str:
    if settings.sasl_username:
        return f"User:{settings.sasl_username}"
    if settings.ssl_certificate_location:
        return f"the principal of certificate {Path(settings.ssl_certificate_location).name}"
    return "User:ANONYMOUS"
