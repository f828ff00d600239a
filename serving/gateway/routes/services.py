"""What is served, and the enriched predict: an event's fields in, the prediction event out.

``POST /v1/services/{service}/predict`` is one documented operation per service (its request body generated
from the service's Avro input schema, :func:`predict_router`), then a generic route for the same path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import ORJSONResponse, Response

from vatic.schemas.errors import InvalidRecord
from vatic.serving.config import ServiceConfig
from vatic.serving.gateway.errors import from_exception, problem
from vatic.serving.gateway.openapi import (
    SERVICE_DESCRIPTION,
    SERVICE_LIST,
    error_responses,
    json_body,
    prediction_schema,
)
from vatic.serving.gateway.routes import state_of
from vatic.serving.gateway.services import ServiceRuntime, request_schema

router = APIRouter(tags=["services"])

_PROTECTED = error_responses(401)
#: what a predict operation answers
PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: json_body(prediction_schema(), "the prediction event (the record the stream writes)"),
    **error_responses(401, 404, 413, 422, 503, 504),
}


@router.get("/v1/services", responses={200: json_body(SERVICE_LIST, "the services"), **_PROTECTED})
async def list_services(request: Request) -> dict[str, Any]:
    """The services this gateway serves."""
    return {"services": [summary(r) for r in state_of(request).services.values()]}


@router.get(
    "/v1/services/{service}",
    responses={200: json_body(SERVICE_DESCRIPTION, "the service"), **_PROTECTED, **error_responses(404, 422)},
)
async def describe(service: str, request: Request) -> Response:
    services = state_of(request).services
    runtime = services.get(service)
    if runtime is None:
        return problem(404, "not_found", f"no service {service!r}; served: {sorted(services)}")
    return ORJSONResponse({**summary(runtime), "request_schema": runtime.request_schema})


async def predict(service: str, request: Request) -> Response:
    """The REST form of the enriched predict: a JSON object of event fields in, the prediction event out."""
    state = state_of(request)
    if service not in state.services:
        return problem(404, "not_found", f"no service {service!r}; served: {sorted(state.services)}")
    try:
        payload = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        return problem(422, "invalid_request", f"body is not JSON: {exc}")
    if not isinstance(payload, dict):
        return problem(422, "invalid_request", "body must be a JSON object of event fields")
    try:
        prediction = await state.predict(service, payload)
    except InvalidRecord as exc:
        return problem(422, "invalid_request", exc.problem, field=exc.field)
    except Exception as exc:
        return from_exception(exc)
    return ORJSONResponse(prediction)


def predict_router(configs: Sequence[tuple[Path, ServiceConfig]]) -> APIRouter:
    """One documented predict operation per service, then the generic route (undocumented) for any name."""
    documented = APIRouter(tags=["predict"])
    for _, config in configs:
        documented.add_api_route(
            f"/v1/services/{config.service}/predict",
            _bound(config.service),
            methods=["POST"],
            summary=f"Predict with {config.service}",
            description=config.description or f"Enrich the event and call model {config.model.name}.",
            operation_id=f"predict_{config.service.replace('-', '_')}",
            openapi_extra={
                "requestBody": {"required": True, "content": {"application/json": {"schema": request_schema(config)}}}
            },
            responses=PREDICT_RESPONSES,
        )
    documented.add_api_route(
        "/v1/services/{service}/predict",
        predict,
        methods=["POST"],
        responses=PREDICT_RESPONSES,
        include_in_schema=False,
        name="predict_any",
    )
    return documented


def _bound(service: str) -> Callable[[Request], Awaitable[Response]]:
    async def handler(request: Request) -> Response:
        return await predict(service, request)

    return handler


def summary(runtime: ServiceRuntime) -> dict[str, Any]:
    """A service as ``GET /v1/services`` lists it."""
    config = runtime.config
    return {
        "service": config.service,
        "project": config.project,
        "environment": config.environment,
        "model": {"name": config.model.name, "version": config.model.version},
        "endpoint": runtime.endpoint,
        "features": list(config.features.refs) if config.features else [],
        "predict": f"/v1/services/{config.service}/predict",
    }
