"""What the gateway holds per service: its config, input validator, model client, feature reader, batcher."""

from __future__ import annotations

import asyncio
import copy
import ssl
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vatic.schemas import load_schema
from vatic.schemas.errors import InvalidRecord
from vatic.schemas.jsonschema import to_json_schema
from vatic.schemas.validate import record_validator
from vatic.serving.config import ServiceConfig
from vatic.serving.core import Predictor, RetryPolicy
from vatic.serving.core.batcher import MicroBatcher
from vatic.serving.core.experiments import ShadowBatch
from vatic.serving.gateway.metrics import GatewayMetrics
from vatic.serving.gateway.settings import GatewaySettings
from vatic.serving.gateway.shadows import ShadowWriter

#: fields the gateway fills in when a REST caller leaves them out
GENERATED = ("event_id", "event_time")


@dataclass
class ServiceRuntime:
    """One service behind the gateway. Build with :meth:`open`, release with :meth:`close`."""

    config: ServiceConfig
    folder: Path
    endpoint: str
    predictor: Predictor
    batcher: MicroBatcher
    request_schema: dict[str, Any]
    _validate: Any = field(repr=False, default=None)
    shadows: ShadowWriter | None = None
    #: the input schema's field defaults: what an Avro writer puts in for a field the event leaves out
    defaults: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(
        cls,
        config: ServiceConfig,
        folder: Path,
        settings: GatewaySettings,
        metrics: GatewayMetrics,
        *,
        verify: ssl.SSLContext | None = None,
    ) -> ServiceRuntime:
        """The runtime of one service; ``verify`` verifies its model server when the endpoint is ``https://``
        (the gateway's ``VATIC_GATEWAY_MODEL_CA_FILE``)."""
        endpoint = settings.endpoints.get(config.service, f"http://127.0.0.1:{config.serving.port}")
        predictor = Predictor.from_config(
            config, service_dir=folder, model_url=endpoint, redis_url=settings.redis_url,
            retry=RetryPolicy(budget_s=settings.retry_budget_s), verify=verify,
        )  # fmt: skip
        shadows = None
        if config.shadow is not None:
            # REST waits at most rest_wait_ms for the shadow (0: never); its answers reach the metrics either way,
            # and the shadow topic when the gateway is told to write it
            if settings.shadow_topics and config.shadow_topic is not None:
                shadows = ShadowWriter(config.service, config.shadow_topic, metrics.shadow_write_failures)
            predictor.shadow_wait_s = config.shadow.rest_wait_ms / 1000
            predictor.on_shadow = _shadow_observer(config.service, metrics, shadows)
            predictor.shadow_events = shadows is not None  # counts only, unless they are written
        batcher = MicroBatcher(
            predictor,
            max_batch=settings.max_batch,
            max_in_flight=settings.max_in_flight,
            origin="REST",
            on_batch=metrics.batch_size.labels(config.service).observe,
        )
        validate, defaults = None, {}
        if config.streaming is not None:
            schema = load_schema(config.streaming.input_schema)
            validate = record_validator(schema)
            defaults = {f["name"]: f["default"] for f in schema["fields"] if "default" in f}
        return cls(config, folder, endpoint, predictor, batcher, request_schema(config), validate, shadows, defaults)

    def event_from(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The input event for a request body: generated fields and the input schema's defaults filled in (a
        field left out reads as the stream reads it), then validated like a Kafka event.

        Raises :class:`InvalidRecord` naming the first bad field.
        """
        event = dict(body)
        for name, default in self.defaults.items():  # as the stream's events arrive: Avro wrote the default
            if name not in event:
                event[name] = copy.deepcopy(default)
        event.setdefault("event_id", str(uuid.uuid4()))
        event.setdefault("event_time", time.time_ns() // 1_000_000)
        if self._validate is not None:
            self._validate(event)
        else:
            for name in self.config.event_fields():
                if name not in event:
                    raise InvalidRecord(f"field {name!r} is missing", field=name, problem="required field is missing")
        return event

    def owns(self, model: str) -> bool:
        """Whether V2 calls of ``model`` go to this service's model server: its model, and with a graph every
        step's model that server serves (a step on another of ``graph.servers`` is that server's)."""
        if model == self.config.model.name:
            return True
        graph = self.config.graph
        return graph is not None and any(step.model == model and step.server is None for step in graph.steps)

    async def close(self) -> None:
        await self.batcher.close()
        await self.predictor.aclose()
        if self.shadows is not None:
            await asyncio.to_thread(self.shadows.close)


def _shadow_observer(
    service: str, metrics: GatewayMetrics, shadows: ShadowWriter | None
) -> Callable[[ShadowBatch], None]:
    def record(batch: ShadowBatch) -> None:
        if shadows is not None:
            shadows.write(batch)
        metrics.shadow_batches.labels(service, batch.state).inc()
        metrics.shadow_predictions.labels(service).inc(batch.answered)
        metrics.shadow_compared.labels(service).inc(batch.compared)
        metrics.shadow_agreed.labels(service).inc(batch.agreed)

    return record


def request_schema(config: ServiceConfig) -> dict[str, Any]:
    """JSON Schema of the predict body: the service's Avro input event, with the generated fields optional."""
    if config.streaming is None:
        return {"type": "object", "description": f"event fields: {', '.join(config.event_fields())}"}
    schema = to_json_schema(load_schema(config.streaming.input_schema), optional=GENERATED)
    schema.pop("$schema", None)
    return schema
