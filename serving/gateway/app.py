"""The gateway's FastAPI app: routes are thin; the core does the work; errors are mapped in one place.

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

Errors: see :mod:`vatic.serving.gateway.errors`; what each route answers: :mod:`vatic.serving.gateway.openapi`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from vatic.connectors.errors import ConfigError, Retryable
from vatic.connectors.v2 import binary
from vatic.schemas.validate import InvalidRecord
from vatic.serving.config import load_service
from vatic.serving.gateway.errors import from_exception, problem
from vatic.serving.gateway.grpc_door import GrpcDoor
from vatic.serving.gateway.metrics import GatewayMetrics
from vatic.serving.gateway.middleware import OPEN_PREFIXES, BodyTooLarge, GatewayMiddleware, JsonFormatter
from vatic.serving.gateway.openapi import (
    LIVE,
    READY,
    SERVICE_DESCRIPTION,
    SERVICE_LIST,
    V2_ERROR,
    V2_METADATA,
    V2_REQUEST,
    V2_RESPONSE,
    V2_SERVER,
    enumerate_path_parameters,
    error_responses,
    json_body,
    prediction_schema,
    secure,
)
from vatic.serving.gateway.passthrough import Answer, V2Passthrough
from vatic.serving.gateway.predict import predict_event
from vatic.serving.gateway.services import ServiceRuntime, request_schema
from vatic.serving.gateway.settings import GatewaySettings

log = logging.getLogger("vatic.gateway")

#: V2 protocol extensions the gateway speaks (server metadata)
V2_EXTENSIONS = ("binary_tensor_data",)


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


def create_app(settings: GatewaySettings | None = None) -> FastAPI:  # noqa: PLR0915 - routes close over app state
    """Build the gateway for ``settings.services``. Service configs are loaded (and validated) here, so a bad
    config fails at start-up with its file:line message; clients and feature stores open in the lifespan."""
    settings = settings or GatewaySettings()
    configure_logging()
    metrics = GatewayMetrics()
    services: dict[str, ServiceRuntime] = {}
    configs = [(folder, load_service(folder, settings.environment)) for folder in settings.services]

    token = settings.auth_token.get_secret_value() if settings.auth_token else None

    async def model_states() -> dict[str, bool]:
        """Whether each service's model answers its readiness probe."""
        states = {}
        for name, runtime in services.items():
            try:
                states[name] = await runtime.client.ready(
                    runtime.config.model.name, version=runtime.config.model.version, deadline_s=1.0
                )
            except (Retryable, ConfigError):
                states[name] = False
        return states

    async def all_ready() -> bool:
        return all((await model_states()).values())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for folder, config in configs:
            runtime = ServiceRuntime.open(config, folder, settings, metrics)
            services[config.service] = runtime
        client = httpx.AsyncClient(timeout=30.0, trust_env=False)
        app.state.passthrough = V2Passthrough(services, client)
        door = None
        if settings.grpc_port is not None:
            door = GrpcDoor(
                app.state.passthrough,
                lambda service, payload: predict_event(services, metrics, service, payload),
                all_ready,
                {"name": "vatic-gateway", "version": app.version, "extensions": list(V2_EXTENSIONS)},
                loop=asyncio.get_running_loop(),
                token=token,
                max_message_bytes=settings.max_body_bytes,
            )
            app.state.grpc_port = door.start(settings.host, settings.grpc_port)
        log.info(
            "gateway ready", extra={"services": sorted(services), "grpc_port": getattr(app.state, "grpc_port", None)}
        )
        try:
            yield
        finally:
            if door is not None:  # in a thread: calls in flight still need this loop to finish
                await asyncio.to_thread(door.stop)
            for runtime in services.values():
                await runtime.close()
            await client.aclose()

    app = FastAPI(
        title="vatic gateway",
        version="0.1.0",
        description="Predictions on demand with the same enrichment and model as the streaming job.",
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
    )
    app.state.services = services
    app.state.metrics = metrics

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge) -> Response:
        return problem(413, "payload_too_large", f"request body over {settings.max_body_bytes} bytes")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        return problem(422, "invalid_request", str(first.get("msg", "invalid request")), field=field)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", extra={"path": request.url.path})
        return problem(500, "internal_error", "the gateway failed to handle the request; see its log")

    # -- health and metrics ------------------------------------------------------------------------------

    model_names = sorted({config.model.name for _, config in configs})
    service_names = sorted({config.service for _, config in configs})
    protected = error_responses(401)

    @app.get("/v2/health/live", tags=["health"], responses={200: json_body(LIVE, "the process is up")})
    async def live() -> dict[str, bool]:
        """The process is up."""
        return {"live": True}

    @app.get("/healthz", tags=["health"], include_in_schema=False)
    async def healthz() -> dict[str, bool]:
        return {"live": True}

    @app.get(
        "/v2/health/ready",
        tags=["health"],
        responses={
            200: json_body(READY, "every model server is ready"),
            503: json_body(READY, "a model server is not ready"),
        },
    )
    async def ready() -> Response:
        """Ready when every service's model answers its readiness probe."""
        states = await model_states()
        ok = all(states.values())
        return ORJSONResponse({"ready": ok, "services": states}, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- services ----------------------------------------------------------------------------------------

    @app.get("/v1/services", tags=["services"], responses={200: json_body(SERVICE_LIST, "the services"), **protected})
    async def list_services() -> dict[str, Any]:
        """The services this gateway serves."""
        return {"services": [_summary(r) for r in services.values()]}

    @app.get(
        "/v1/services/{service}",
        tags=["services"],
        responses={200: json_body(SERVICE_DESCRIPTION, "the service"), **protected, **error_responses(404, 422)},
    )
    async def describe(service: str) -> Response:
        runtime = services.get(service)
        if runtime is None:
            return problem(404, "not_found", f"no service {service!r}; served: {sorted(services)}")
        return ORJSONResponse({**_summary(runtime), "request_schema": runtime.request_schema})

    async def predict(service: str, request: Request) -> Response:
        if service not in services:
            return problem(404, "not_found", f"no service {service!r}; served: {sorted(services)}")
        try:
            payload = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            return problem(422, "invalid_request", f"body is not JSON: {exc}")
        if not isinstance(payload, dict):
            return problem(422, "invalid_request", "body must be a JSON object of event fields")
        try:
            prediction = await predict_event(services, metrics, service, payload)
        except InvalidRecord as exc:
            return problem(422, "invalid_request", exc.problem, field=exc.field)
        except Exception as exc:
            return from_exception(exc)
        return ORJSONResponse(prediction)

    responses: dict[int | str, dict[str, Any]] = {
        200: json_body(prediction_schema(), "the prediction event (the record the stream writes)"),
        **error_responses(401, 404, 413, 422, 503, 504),
    }
    # one documented operation per service (request body from its Avro input schema), then the generic route
    for _, config in configs:
        schema = request_schema(config)

        def bind(name: str) -> Any:
            async def handler(request: Request) -> Response:
                return await predict(name, request)

            return handler

        app.add_api_route(
            f"/v1/services/{config.service}/predict",
            bind(config.service),
            methods=["POST"],
            tags=["predict"],
            summary=f"Predict with {config.service}",
            description=config.description or f"Enrich the event and call model {config.model.name}.",
            operation_id=f"predict_{config.service.replace('-', '_')}",
            openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}},
            responses=responses,
        )

    @app.post("/v1/services/{service}/predict", tags=["predict"], responses=responses, include_in_schema=False)
    async def predict_any(service: str, request: Request) -> Response:
        return await predict(service, request)

    # -- V2 pass-through (the core is transport-free: vatic.serving.gateway.passthrough) ----------------------

    def rest_answer(answer: Answer, asked_binary: dict[str, bool] | None = None) -> Response:
        """The REST form of a pass-through answer (the binary extension when the request asked for it)."""
        if answer.kind == "upstream":
            if answer.status == 200 and asked_binary and any(asked_binary.values()):
                encoded = binary.binary_response(orjson.loads(answer.content), asked_binary)
                if encoded is not None:
                    content, header_length = encoded
                    return Response(
                        content, media_type="application/octet-stream", headers={binary.HEADER: str(header_length)}
                    )
            # an empty body (readiness answers) carries no content type
            return Response(answer.content, status_code=answer.status,
                            media_type="application/json" if answer.content else None)  # fmt: skip
        if answer.error is not None:
            return from_exception(answer.error)
        if answer.kind == "malformed":
            return problem(422, "invalid_request", answer.message, field=answer.field)
        if answer.kind == "not_found":
            return problem(404, "not_found", answer.message)
        return ORJSONResponse(answer.json(), status_code=answer.status)

    async def rest_infer(model: str, request: Request, version: str | None = None) -> Response:
        body = await request.body()
        plain: dict[str, Any] | None = None
        header = request.headers.get(binary.HEADER)
        if header is not None:  # the binary tensor data extension: the model server reads JSON only
            try:
                plain = binary.json_request(body, header)
            except binary.BinaryFormatError as exc:
                return ORJSONResponse({"error": f"model {model}: {exc.message}"}, status_code=400)
            body = orjson.dumps(plain)
        answer = await app.state.passthrough.infer(model, body, version=version)
        asked = None
        if answer.status == 200 and (plain is not None or b"binary_data" in body):  # JSON may ask binary outputs
            asked = binary.wants_binary(plain if plain is not None else orjson.loads(body))
        return rest_answer(answer, asked)

    v2_errors: dict[int | str, dict[str, Any]] = {
        **error_responses(400, 404, 422, schema=V2_ERROR),
        **protected,
        **error_responses(413, 503),
    }
    infer: dict[str, Any] = {
        "responses": {200: json_body(V2_RESPONSE, "the model's answer"), **v2_errors},
        "openapi_extra": {"requestBody": {"required": True, "content": {"application/json": {"schema": V2_REQUEST}}}},
    }

    @app.post("/v2/models/{model}/infer", tags=["v2"], **infer)
    async def v2_infer(model: str, request: Request) -> Response:
        """V2 inference request passed through to the model's server."""
        return await rest_infer(model, request)

    @app.post("/v2/models/{model}/versions/{version}/infer", tags=["v2"], **infer)
    async def v2_infer_version(model: str, version: str, request: Request) -> Response:
        """V2 inference request for one version of the model, passed through to the model's server."""
        return await rest_infer(model, request, version)

    @app.get("/v2", tags=["v2"], responses={200: json_body(V2_SERVER, "server metadata"), **protected})
    async def v2_server() -> dict[str, Any]:
        """V2 server metadata: this gateway and the protocol extensions it speaks."""
        return {"name": "vatic-gateway", "version": app.version, "extensions": list(V2_EXTENSIONS)}

    @app.get("/v2/models/{model}", tags=["v2"], responses={200: json_body(V2_METADATA, "model metadata"), **v2_errors})
    async def v2_metadata(model: str, request: Request) -> Response:
        """V2 model metadata from the model's server."""
        return rest_answer(await app.state.passthrough.get(model))

    @app.get(
        "/v2/models/{model}/versions/{version}",
        tags=["v2"],
        responses={200: json_body(V2_METADATA, "model metadata"), **v2_errors},
    )
    async def v2_metadata_version(model: str, version: str, request: Request) -> Response:
        """V2 metadata of one version of the model, from the model's server."""
        return rest_answer(await app.state.passthrough.get(model, version=version))

    @app.get(
        "/v2/models/{model}/versions/{version}/ready",
        tags=["v2"],
        response_class=Response,
        responses={**v2_errors, 200: {"description": "the version is ready"}, 400: {"description": "not ready"}},
    )
    async def v2_ready_version(model: str, version: str, request: Request) -> Response:
        """V2 readiness of one version of the model, from the model's server (an empty body)."""
        return rest_answer(await app.state.passthrough.get(model, "/ready", version=version))

    @app.get(
        "/v2/models/{model}/ready",
        tags=["v2"],
        response_class=Response,
        responses={**v2_errors, 200: {"description": "the model is ready"}, 400: {"description": "not ready"}},
    )
    async def v2_ready(model: str, request: Request) -> Response:
        """V2 model readiness from the model's server (an empty body)."""
        return rest_answer(await app.state.passthrough.get(model, "/ready"))

    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = enumerate_path_parameters(plain_openapi(), {"model": model_names, "service": service_names})
            app.openapi_schema = secure(document, OPEN_PREFIXES) if token else document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(
        GatewayMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        token=token,
        log_requests=settings.log_requests,
    )
    return app


def _summary(runtime: ServiceRuntime) -> dict[str, Any]:
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
