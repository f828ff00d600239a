"""Liveness, readiness and metrics: always open (no token)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import ORJSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from vatic.serving.gateway.openapi import LIVE, READY, json_body
from vatic.serving.gateway.routes import state_of

router = APIRouter(tags=["health"])


@router.get("/v2/health/live", responses={200: json_body(LIVE, "the process is up")})
async def live() -> dict[str, bool]:
    """The process is up."""
    return {"live": True}


@router.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, bool]:
    return {"live": True}


@router.get(
    "/v2/health/ready",
    responses={
        200: json_body(READY, "every model server is ready"),
        503: json_body(READY, "a model server is not ready"),
    },
)
async def ready(request: Request) -> Response:
    """Ready when every service's model answers its readiness probe."""
    states = await state_of(request).model_states()
    ok = all(states.values())
    return ORJSONResponse({"ready": ok, "services": states}, status_code=200 if ok else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics_endpoint(request: Request) -> Response:
    return Response(generate_latest(state_of(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)
