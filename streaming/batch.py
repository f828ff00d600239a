"""One micro-batch of raw Kafka records in, exactly one output per record out: the job's unit of work.

:class:`BatchProcessor` decodes the records (Avro, Confluent wire format), runs the shared core
(:class:`vatic.serving.core.Predictor`: one feature lookup and one V2 request for the whole batch) and encodes
the results: a prediction record for each event that was predicted, a dead-letter record (original bytes,
stage, error, attempts) for every other record. It is used by both topologies of the job (the vectorized
Table-API function and the DataStream async function), so they behave identically.

Error policy: data errors (undecodable bytes, a decoded record that breaks its schema's logical formats such
as a non-UUID ``event_id``, a feature or model refusal) become dead-letter outputs; transient errors are retried
inside the service's retry budget and then raised (the Flink task fails and restarts from its checkpoint: an
outage is never dead-lettered). That holds for the schema registry too: a writer schema id first met while the
registry is unreachable is retried, never dead-lettered, and the worker looks its own output schemas up when
it opens, so that a registry outage fails it there rather than in the middle of a batch. Configuration errors
are raised at once.

Output keys and headers (the contract a consumer relies on; README "Delivery guarantees"):

* a prediction is keyed by its input record's key under ``exactly_once`` (outputs stay co-partitioned with the
  input), and by its event id (the UUID string's UTF-8 bytes) under ``at_least_once``, so that a replayed answer
  lands in the same partition as the first one and a compacted topic or a consumer dedupes it by key; a dead
  letter keeps its input record's key in both modes (its event id may be unknown: its identity is the
  ``vatic-source`` header, ``topic/partition/offset`` of the input record);
* a shadow prediction (a service with a ``shadow``) rides on its input record's prediction (``Output.shadow``)
  to the shadow topic, with the prediction's key and headers; it never changes the prediction itself (the shadow
  answer of an event that is dead-lettered is counted in the metrics only);
* every output carries ``vatic-attempt`` (:data:`ATTEMPT_HEADER`): the incarnation of the worker that wrote it,
  an ASCII decimal integer (see :func:`incarnation`). Within one incarnation an input record is answered once;
  a replay (at-least-once, after a restart from a checkpoint) is written by a later incarnation, so of two answers
  of one record the replay has the larger attempt. Deduping by key (event id) also drops the second answer of an
  event id that the producer upstream sent twice: under at-least-once an event id is the identity of an event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vatic.connectors.dedupe import ATTEMPT_HEADER  # the header naming the worker incarnation (see incarnation)
from vatic.connectors.inference import tls_context
from vatic.schemas import AvroCodec, load_schema, topic_subject
from vatic.schemas.errors import ConfigError, DecodeError, InvalidRecord, Retryable, SchemaSourceUnavailable
from vatic.schemas.validate import record_validator
from vatic.serving.config import ServiceConfig, load_service
from vatic.serving.core import Predictor, RetryPolicy, SourceRecord, dead_letter
from vatic.serving.core.experiments import ShadowBatch
from vatic.streaming.settings import JobSettings

if TYPE_CHECKING:
    from vatic.streaming.metrics import JobMetrics

log = logging.getLogger(__name__)

PREDICTION = "P"
DEAD_LETTER = "D"


def incarnation() -> bytes:
    """The ``vatic-attempt`` value of a worker opened now: the wall-clock time in epoch milliseconds, as ASCII.

    Contract: compared as integers, a worker opened after a restart has a larger value than every worker of the
    run that failed (a restart waits at least the job's restart delay, 1 s, far above the clock skew between
    hosts kept by NTP), so a replayed answer carries a larger attempt than its first answer. Flink's own attempt
    number cannot serve: the vectorized function's context does not expose it, and it starts again at 0 when a
    job is resubmitted from a retained checkpoint (a killed ``vatic stream run``, a redeploy).
    """
    return str(time.time_ns() // 1_000_000).encode()


@dataclass(frozen=True, slots=True)
class Output:
    """One record for a sink: ``kind`` says which (prediction or dead letter)."""

    kind: str
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    #: the shadow's prediction of the same record, for the shadow topic (None: no shadow answer in time)
    shadow: bytes | None = None


def schema_source(settings: JobSettings) -> Any:
    """The schema source the job's codecs use: the Confluent-compatible registry, or the embedded store."""
    from vatic.connectors.schema_registry import schema_source as open_source

    if settings.schema_store is None and not settings.schema_registry_url:
        raise ConfigError("the job needs --schema-registry-url or --schema-store (`vatic stream run` passes one)")
    return open_source(settings.schema_registry_url, settings.schema_store)


class BatchProcessor:
    """Decode -> enrich -> infer -> encode for a micro-batch. Build it with :meth:`open` in the worker."""

    def __init__(self, settings: JobSettings, metrics: JobMetrics | None = None) -> None:
        """``metrics``: where each batch is recorded (:meth:`JobMetrics.batch`); None records nothing."""
        self.settings = settings
        self.metrics = metrics

    def open(self) -> None:
        """Load the service config and open the codecs, the model client and the feature reader.

        Also lowers httpx's and httpcore's loggers to WARNING in this (worker) process: PyFlink's Python worker
        logs at INFO through Beam's log channel to the JVM's log file, and httpx logs every request at INFO,
        one line per micro-batch (thousands a minute). Failures still reach the log (the client's own warnings
        and the errors it raises).
        """
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.config: ServiceConfig = load_service(self.settings.service_dir, self.settings.environment)
        spec = self.config.streaming
        if spec is None:
            raise ConfigError(f"service {self.config.service} has no streaming section")
        source = schema_source(self.settings)
        input_schema = load_schema(spec.input_schema)
        self.input = AvroCodec(source, topic_subject(spec.input_topic), input_schema)
        # Avro decoding checks types, not logical formats (a uuid is any string): check the decoded record as
        # the gateway checks a request, so the stream refuses exactly what REST refuses (cost:
        # docs/decisions/0008-avro-type-check.md)
        self.validate = record_validator(input_schema)
        self.prediction = AvroCodec(source, topic_subject(spec.output_topic), load_schema("prediction"))
        self.dead = AvroCodec(source, topic_subject(spec.dead_letter_topic), load_schema("dead_letter"))
        # registered (or looked up) now: a registry outage fails the worker's start, not an encode mid-batch
        _ = self.prediction.schema_id, self.dead.schema_id
        self.shadow = None
        if self.config.shadow_topic is not None:
            self.shadow = AvroCodec(source, topic_subject(self.config.shadow_topic), load_schema("prediction"))
            _ = self.shadow.schema_id
        self.retry = RetryPolicy.from_spec(spec.retry)
        self.predictor = Predictor.from_config(
            self.config,
            service_dir=Path(self.settings.service_dir),
            model_url=self.settings.model_url,
            redis_url=self.settings.redis_url,
            retry=self.retry,
            verify=tls_context(self.settings.model_ca_file) if self.settings.model_ca_file else None,
        )
        self.predictor.on_shadow = self._shadow_seen
        self.max_bytes = spec.max_record_bytes
        self._open_outputs(spec.guarantee)

    def _open_outputs(self, guarantee: str) -> None:
        """How this worker keys and labels its outputs (see the module docstring): its incarnation, and whether
        predictions are keyed by event id (``at_least_once``)."""
        self.attempt = incarnation()
        self.key_by_event_id = guarantee == "at_least_once"

    async def process(self, records: Sequence[SourceRecord]) -> list[Output]:
        """Exactly one output per record, in input order."""
        received = time.time_ns() // 1_000_000
        outputs: list[Output | None] = [None] * len(records)
        events: list[dict[str, Any]] = []
        positions: list[int] = []
        result = None
        for index, record in enumerate(records):
            raw = record.value
            if raw is not None and len(raw) > self.max_bytes:
                outputs[index] = self._dead(
                    record, "decode", "RecordTooLarge", f"input of {len(raw)} bytes is over max_record_bytes "
                    f"{self.max_bytes}",
                )  # fmt: skip
                continue
            try:
                if raw is None:
                    raise DecodeError("record has no value (tombstone)", b"")
                try:
                    event = self.input.decode(raw)
                except SchemaSourceUnavailable:  # a new writer schema id while the registry is down: wait
                    event = await self._decode_retrying(raw)
                self.validate(event)
                events.append(event)
                positions.append(index)
            except DecodeError as exc:
                outputs[index] = self._dead(record, "decode", exc.error_class, exc.message)
            except InvalidRecord as exc:
                outputs[index] = self._dead(record, "decode", "InvalidRecord", str(exc))
        if events:
            result = await self.predictor.predict(events, origin="STREAM", received_ms=received)
            for j, prediction in result.predictions:
                index = positions[j]
                outputs[index] = self._prediction(records[index], prediction, events[j])
            for failure in result.failures:
                index = positions[failure.index]
                outputs[index] = self._dead(
                    records[index], failure.stage, failure.error.error_class, failure.error.message,
                    attempts=failure.attempts, event=events[failure.index], model_response=failure.model_response,
                    model_name=failure.model_name, step=failure.step,
                )  # fmt: skip
            for j, prediction in result.shadows:
                index = positions[j]
                output = outputs[index]
                if output is not None and output.kind == PREDICTION:  # a dead letter's shadow: metrics only
                    outputs[index] = self._with_shadow(records[index], output, prediction)
        done = [output for output in outputs if output is not None]
        if self.metrics is not None:
            if result is None:  # nothing decoded: no feature read, no model call
                self.metrics.batch(len(records), done)
            else:
                self.metrics.batch(len(records), done, model_ms=result.infer_ms, feature_ms=result.enrich_ms,
                                   model_calls=result.model_calls, model_retries=result.model_retries)  # fmt: skip
                for version, n in Counter(p["model_version"] for _, p in result.predictions).items():
                    self.metrics.version_predictions(version, n)
        return done

    def _shadow_seen(self, batch: ShadowBatch) -> None:
        if batch.state == "failed":
            log.warning("service %s: the shadow failed a micro-batch: %s", self.config.service, batch.error)
        if self.metrics is not None:
            self.metrics.shadow(batch.state, batch.answered, batch.compared, batch.agreed)

    def _with_shadow(self, record: SourceRecord, output: Output, prediction: dict[str, Any]) -> Output:
        """``output`` carrying the shadow's prediction of its record; one that cannot be encoded is dropped
        (the shadow's trouble, counted nowhere else than its log line)."""
        assert self.shadow is not None
        try:
            payload = self.shadow.encode(prediction, validate=False)
        except (Retryable, ConfigError):
            raise
        except Exception as exc:
            log.warning("service %s: a shadow prediction cannot be encoded: %s", self.config.service, exc)
            return output
        if len(payload) > self.max_bytes:
            return output
        return replace(output, shadow=payload)

    async def _decode_retrying(self, raw: bytes) -> dict[str, Any]:
        """Decode ``raw`` while the schema source is unavailable: retried inside the retry budget (the lookup
        runs in a thread, so other batches in flight keep going), then the outage is raised."""
        event, _ = await self.retry.run(lambda: asyncio.to_thread(self.input.decode, raw))
        return event

    def _prediction(self, record: SourceRecord, prediction: dict[str, Any], event: dict[str, Any]) -> Output:
        try:
            payload = self.prediction.encode(prediction, validate=False)  # built by the core with schema types
        except (Retryable, ConfigError):  # the schema source, not this event: never a dead letter
            raise
        except Exception as exc:  # an output that cannot be encoded is this event's data error
            return self._dead(record, "encode", type(exc).__name__, str(exc), event=event)
        if len(payload) > self.max_bytes:
            return self._dead(record, "encode", "RecordTooLarge", f"prediction of {len(payload)} bytes", event=event)
        event_id = str(prediction["event_id"]).encode()
        key = event_id if self.key_by_event_id else record.key
        return Output(PREDICTION, key, payload, {"vatic-event-id": event_id, ATTEMPT_HEADER: self.attempt})

    def _dead(
        self, record: SourceRecord, stage: str, error_class: str, message: str, *, attempts: int = 1,
        event: dict[str, Any] | None = None, model_response: bytes | None = None, model_name: str | None = None,
        step: str | None = None,
    ) -> Output:  # fmt: skip
        config = self.config
        value = dead_letter(
            service=config.service,
            stage=stage,
            error_class=error_class,
            message=message,
            attempts=attempts,
            source=record,
            event_id=str(event.get("event_id")) if event else None,
            model_name=(model_name or config.model.name) if stage == "infer" else None,
            model_response=model_response,
            step=step,
            max_value_bytes=max(1024, self.max_bytes - 64 * 1024),
        )
        headers = {
            "vatic-stage": stage.encode(),
            "vatic-error-class": error_class.encode(),
            "vatic-source": f"{record.topic}/{record.partition}/{record.offset}".encode(),
            **({"vatic-step": step.encode()} if step else {}),
            ATTEMPT_HEADER: self.attempt,
        }
        return Output(DEAD_LETTER, record.key, self.dead.encode(value), headers)

    async def aclose(self) -> None:
        await self.predictor.aclose()


def epoch_ms(ts: Any) -> int | None:
    """Kafka record timestamps arrive as PyFlink ``Instant`` (TIMESTAMP_LTZ), ``datetime`` or pandas
    ``Timestamp``."""
    if ts is None:
        return None
    if hasattr(ts, "to_epoch_milli"):
        return int(ts.to_epoch_milli())
    if hasattr(ts, "value") and isinstance(ts.value, int):  # pandas.Timestamp: nanoseconds
        return int(ts.value // 1_000_000)
    return int(ts.timestamp() * 1000)


def source_record(key: Any, value: Any, topic: str, partition: int, offset: int, ts: Any, headers: Any) -> SourceRecord:
    """A :class:`SourceRecord` from the source table's columns (bytes may arrive as ``bytearray``)."""
    return SourceRecord(
        topic=topic,
        partition=int(partition),
        offset=int(offset),
        key=bytes(key) if key is not None else None,
        value=bytes(value) if value is not None else None,
        timestamp_ms=epoch_ms(ts),
        headers=tuple((k, bytes(v) if v is not None else None) for k, v in (headers or {}).items()),
    )
