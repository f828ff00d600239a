"""The REST and gRPC doors' shadow answers, written to the service's shadow topic (``VATIC_GATEWAY_SHADOW_TOPICS``).

The streaming job writes its shadow answers through its own sinks; the gateway, when told to, writes those of
the events it answers to the same topic in the same form: Avro prediction events (the topic's subject in the
schema registry at ``VATIC_SCHEMA_REGISTRY_URL``), keyed by event id, with a ``vatic-event-id`` header, from an
idempotent producer configured by ``VATIC_KAFKA_*``. Delivery is at least once and never the caller's concern:
no answer waits for it, and an encoding or delivery failure is counted (``vatic_gateway_shadow_write_failures``)
and logged, never raised. Deduplicate by key, as for the job's at-least-once outputs.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from vatic.connectors.kafka import Delivered, KafkaSettings, Producer
from vatic.connectors.schema_registry import REGISTRY_URL_ENV, schema_source
from vatic.schemas import AvroCodec, load_schema, topic_subject
from vatic.serving.core.experiments import ShadowBatch

if TYPE_CHECKING:
    from prometheus_client import Counter

log = logging.getLogger("vatic.gateway")

__all__ = ["ShadowWriter"]


class ShadowWriter:
    """Writes the shadow's prediction events of one service to its shadow topic (module docstring)."""

    def __init__(self, service: str, topic: str, failures: Counter) -> None:
        """Look the topic's schema up (registering it) now: a registry that cannot be reached stops the start-up
        with one line, not the first answer."""
        self.service = service
        self.topic = topic
        self.failures = failures.labels(service)
        self.codec = AvroCodec(
            schema_source(os.environ.get(REGISTRY_URL_ENV), None), topic_subject(topic), load_schema("prediction")
        )
        _ = self.codec.schema_id
        self.producer = Producer(KafkaSettings(), keep_reports=False)

    def write(self, batch: ShadowBatch) -> None:
        """Enqueue the batch's shadow prediction events (never blocks for long, never raises)."""
        for _, event in batch.predictions:
            event_id = str(event["event_id"]).encode()
            try:
                value = self.codec.encode(event, validate=False)
                self.producer.produce(
                    self.topic, value, event_id, [("vatic-event-id", event_id)], on_delivery=self._delivered
                )
            except Exception as exc:  # the shadow's output is never the caller's error
                self.failures.inc()
                log.warning("shadow answer of %s not written to %s: %s", self.service, self.topic, exc)
        self.producer.poll(0)

    def _delivered(self, delivered: Delivered | None, failure: Exception | None) -> None:
        if failure is not None:
            self.failures.inc()
            log.warning("shadow answer of %s not delivered to %s: %s", self.service, self.topic, failure)

    def close(self) -> None:
        """Wait (at most 10 s) for what is still on its way; failures are counted, not raised."""
        try:
            self.producer.close(timeout=10)
        except Exception as exc:  # what is still queued after 10 s: said once, never raised at shutdown
            log.warning("shadow answers of %s still undelivered at shutdown: %s", self.service, exc)
