"""The gateway's FastAPI app: routers around one shared state; the cores do the work; errors map in one place.

Routes
------
* ``POST /v1/services/{service}/predict`` - body: the fields of the service's input event (entity keys and
  raw fields; ``event_id`` and ``event_time`` are filled in when absent). Answer: the prediction event, the
  same record the stream writes to the predictions topic (outputs, model name and version, features used).
  One OpenAPI operation per service documents its request body (generated from the Avro input schema).
* ``GET /v1/services`` and ``GET /v1/services/{service}`` - what is served.
* ``POST /v2/models/{model}[/versions/{version}]/infer``, ``GET /v2/models/{model}[...]``,
  ``GET .../ready`` - V2 (Open Inference Protocol) pass-through to the model server of the service that owns
  the model, for clients that send full tensors. Inference bodies are checked against the model's declared
  inputs before they are forwarded (:mod:`vatic.serving.gateway.v2`): 422 malformed, 400 refused.
* ``GET /v2`` - server metadata (the extensions it speaks); ``GET /v2/models/{model}/versions/{version}[/ready]``
  - one version's metadata and readiness. Inference requests and responses may use the binary tensor data
  extension (``Inference-Header-Content-Length``, :mod:`vatic.connectors.v2.binary`): the gateway turns them
  into the JSON the model server reads, and the answer into the binary form asked for.
* ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /healthz``, ``GET /metrics`` - always open.

With credentials configured (shared token, clients file, JWTs: :mod:`vatic.serving.gateway.auth`) every other
route answers 401, 403 (a service the client may not call) or 429 (over its rate) before it runs. TLS is the
server's (``vatic gateway`` passes :meth:`GatewaySettings.uvicorn_tls` to uvicorn; the gRPC door serves the same
certificate).

The routers are :mod:`vatic.serving.gateway.routes`; what they share (services, pass-through, metrics, the gRPC
door) is :class:`~vatic.serving.gateway.state.GatewayState`. Errors: see :mod:`vatic.serving.gateway.errors`;
what each route answers: :mod:`vatic.serving.gateway.openapi`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse, Response

from vatic.serving.gateway.errors import problem
from vatic.serving.gateway.middleware import OPEN_PREFIXES, BodyTooLarge, GatewayMiddleware, JsonFormatter
from vatic.serving.gateway.openapi import enumerate_path_parameters, secure
from vatic.serving.gateway.routes import health, services, state_of, v2
from vatic.serving.gateway.settings import GatewaySettings
from vatic.serving.gateway.state import V2_EXTENSIONS, GatewayState

__all__ = ["V2_EXTENSIONS", "configure_logging", "create_app"]

log = logging.getLogger("vatic.gateway")

VERSION = "0.1.0"


def configure_logging() -> None:
    """JSON lines on stderr for the ``vatic`` loggers (idempotent)."""
    root = logging.getLogger("vatic")
    if not any(getattr(h, "_vatic_json", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler._vatic_json = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """Build the gateway for ``settings.services``. Service configs are loaded (and validated) here, so a bad
    config fails at start-up with its file:line message; clients and feature stores open in the lifespan."""
    configure_logging()
    state = GatewayState(settings or GatewaySettings(), VERSION)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.open()
        app.state.grpc_port = state.grpc_port
        try:
            yield
        finally:
            await state.close()

    app = FastAPI(
        title="vatic gateway",
        version=VERSION,
        description="Predictions on demand with the same enrichment and model as the streaming job.",
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
    )
    app.state.gateway = state
    app.add_exception_handler(BodyTooLarge, _too_large)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(Exception, _unexpected)
    app.include_router(health.router)
    app.include_router(services.router)
    app.include_router(services.predict_router(state.configs))
    app.include_router(v2.router)

    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            values = {"model": state.model_names, "service": state.service_names}
            document = enumerate_path_parameters(plain_openapi(), values)
            app.openapi_schema = secure(document, OPEN_PREFIXES) if state.auth is not None else document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(
        GatewayMiddleware,
        metrics=state.metrics,
        max_body_bytes=state.settings.max_body_bytes,
        auth=state.auth,
        model_services=state.model_services,
        log_requests=state.settings.log_requests,
    )
    return app


async def _too_large(request: Request, exc: Exception) -> Response:
    return problem(413, "payload_too_large", f"request body over {state_of(request).settings.max_body_bytes} bytes")


async def _invalid(request: Request, exc: Exception) -> Response:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    first = errors[0] if errors else {}
    field = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
    return problem(422, "invalid_request", str(first.get("msg", "invalid request")), field=field)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", extra={"path": request.url.path})
    return problem(500, "internal_error", "the gateway failed to handle the request; see its log")
