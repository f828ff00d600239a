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
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import Consumer as _RdConsumer
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka import Producer as _RdProducer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from vatic.schemas.errors import (
    ConfigError,
    DeliveryFailed,
    RecordTooLarge,
    ServiceUnavailable,
    TopicNotFound,
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


class KafkaSettings(BaseSettings):
    """Connection settings, read from ``VATIC_KAFKA_*`` environment variables.

    Credentials are ``SecretStr`` and never appear in ``repr`` or logs.
    """

    model_config = SettingsConfigDict(env_prefix="VATIC_KAFKA_", extra="forbid")

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "vatic"
    security_protocol: str = Field("PLAINTEXT", pattern="^(PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL)$")
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    #: extra librdkafka properties, applied last (e.g. ``{"linger.ms": "10"}``)
    extra: dict[str, str] = Field(default_factory=dict)

    def librdkafka(self) -> dict[str, Any]:
        """The common librdkafka configuration (connection and security only). librdkafka's own log lines go
        to the Python logger ``vatic.kafka.librdkafka`` (a program sends them where it wants, e.g. a file)."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
            "logger": LIBRDKAFKA_LOG,
        }
        if self.security_protocol.endswith("SSL"):
            conf["ssl.endpoint.identification.algorithm"] = "https"
            if self.ssl_ca_location:
                conf["ssl.ca.location"] = self.ssl_ca_location
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username or ""
            conf["sasl.password"] = self.sasl_password.get_secret_value() if self.sasl_password else ""
        return conf


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
    ) -> None:
        self.settings = settings or KafkaSettings()
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
        self._producer = _RdProducer(conf)
        self._lock = threading.Lock()
        self._failures: list[Exception] = []
        self._delivered: list[Delivered] = []
        self._outstanding = 0
        self._transactional = bool(transactional_id)
        if self._transactional:
            self._producer.init_transactions(30)

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
                    self._failures.append(failure)
                else:
                    delivered = Delivered(msg.topic() or topic, msg.partition() or 0, msg.offset() or 0)
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
            raise failures[0]
        if remaining:
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
        self._consumer = _RdConsumer(conf)
        self._trackers: dict[tuple[str, int], _PartitionTracker] = {}
        self._lock = threading.Lock()
        self._consumer.subscribe(list(topics), on_revoke=self._on_revoke, on_lost=self._on_lost)

    def poll_batch(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        """Up to ``max_records`` records, waiting at most ``timeout`` seconds for the first one.

        Raises :class:`ServiceUnavailable` for a fatal consumer error; transient broker errors are retried by
        librdkafka and not surfaced.
        """
        messages = self._consumer.consume(max_records, timeout)
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
                ts_type, ts = msg.timestamp()
                records.append(
                    Record(
                        topic=topic,
                        partition=partition,
                        offset=offset,
                        key=msg.key(),
                        value=msg.value(),
                        headers=list(msg.headers() or []),  # type: ignore[arg-type] # a list at runtime
                        timestamp_ms=ts if ts_type else None,
                    )
                )
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
    return AdminClient((settings or KafkaSettings()).librdkafka())


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
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
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


def _list_topics(admin: AdminClient, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return list(admin.list_topics(timeout=max(0.5, deadline - time.monotonic())).topics)
        except KafkaException as exc:
            if time.monotonic() >= deadline:
                raise ServiceUnavailable(f"Kafka is not reachable: {exc.args[0].str()}", service="kafka") from exc
