"""The enriched prediction behind every door of the gateway: an event's fields in, the prediction event out.

:func:`predict_event` is transport-free: it finds the service, fills in and validates the event like a Kafka
event, submits it to the service's micro-batcher (the core: features, one V2 call per batch) and counts what
happened in the gateway's metrics. Errors are raised, sorted as vatic's taxonomy sorts them, and each door maps
them (REST: :mod:`vatic.serving.gateway.errors`; gRPC: :mod:`vatic.serving.gateway.grpc_door`):
:class:`ServiceNotFound`, ``InvalidRecord`` (a bad field), a ``DataError`` of this event (features, model
refusal), ``Retryable`` (an outage, a deadline), ``ConfigError``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from vatic.schemas.errors import ConfigError, Retryable, ServiceNotFound
from vatic.serving.core.batcher import Rejected
from vatic.serving.gateway.metrics import GatewayMetrics
from vatic.serving.gateway.services import ServiceRuntime

log = logging.getLogger("vatic.gateway")


async def predict_event(
    services: Mapping[str, ServiceRuntime], metrics: GatewayMetrics, service: str, payload: Mapping[str, Any]
) -> dict[str, Any]:
    """The prediction event of ``payload`` (the fields of the service's input event); see the module docstring."""
    runtime = services.get(service)
    if runtime is None:
        raise ServiceNotFound(f"no service {service!r}; served: {sorted(services)}")
    event = runtime.event_from(payload)
    try:
        prediction = await runtime.batcher.submit(event)
    except Rejected as rejected:
        failure = rejected.failure
        metrics.errors.labels(service, failure.error.error_class, failure.stage).inc()
        raise failure.error from None
    except Exception as exc:
        metrics.errors.labels(service, type(exc).__name__, getattr(exc, "stage", None) or "unknown").inc()
        if not isinstance(exc, Retryable | ConfigError):
            log.exception("prediction failed", extra={"service": service})
        raise
    metrics.predictions.labels(service, prediction["model_version"]).inc()
    for ref, value in prediction["features"].items():
        if value["missing"]:
            metrics.feature_misses.labels(service, ref).inc()
    return prediction
