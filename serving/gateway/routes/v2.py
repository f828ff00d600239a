"""The Open Inference (V2) surface, passed through to the model server of the service that owns the model.

Inference bodies are checked against the model's declared inputs before they are forwarded (the pass-through,
:class:`~vatic.serving.gateway.passthrough.V2Passthrough`): 422 malformed, 400 refused. Requests and answers may
use the binary tensor data extension (``Inference-Header-Content-Length``, :mod:`vatic.connectors.v2.binary`):
the model server reads JSON only, so the router turns a binary request into JSON and the answer into the binary
form the request asked for.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import ORJSONResponse, Response

from vatic.connectors.v2 import binary
from vatic.serving.gateway.errors import from_exception, problem
from vatic.serving.gateway.openapi import (
    V2_ERROR,
    V2_METADATA,
    V2_REQUEST,
    V2_RESPONSE,
    V2_SERVER,
    error_responses,
    json_body,
)
from vatic.serving.gateway.passthrough import Answer
from vatic.serving.gateway.routes import state_of

router = APIRouter(tags=["v2"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    **error_responses(400, 404, 422, schema=V2_ERROR),
    **error_responses(401),
    **error_responses(413, 503),
}
_INFER: dict[str, Any] = {
    "responses": {200: json_body(V2_RESPONSE, "the model's answer"), **_ERRORS},
    "openapi_extra": {"requestBody": {"required": True, "content": {"application/json": {"schema": V2_REQUEST}}}},
}
_METADATA = {200: json_body(V2_METADATA, "model metadata"), **_ERRORS}


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


async def _infer(model: str, request: Request, version: str | None = None) -> Response:
    body = await request.body()
    plain: dict[str, Any] | None = None
    header = request.headers.get(binary.HEADER)
    if header is not None:  # the binary tensor data extension: the model server reads JSON only
        try:
            plain = binary.json_request(body, header)
        except binary.BinaryFormatError as exc:
            return ORJSONResponse({"error": f"model {model}: {exc.message}"}, status_code=400)
        body = orjson.dumps(plain)
    answer = await state_of(request).passthrough.infer(model, body, version=version, payload=plain)
    asked = None
    if answer.status == 200 and (plain is not None or b"binary_data" in body):  # JSON may ask binary outputs
        asked = binary.wants_binary(plain if plain is not None else orjson.loads(body))
    return rest_answer(answer, asked)


@router.post("/v2/models/{model}/infer", **_INFER)
async def v2_infer(model: str, request: Request) -> Response:
    """V2 inference request passed through to the model's server."""
    return await _infer(model, request)


@router.post("/v2/models/{model}/versions/{version}/infer", **_INFER)
async def v2_infer_version(model: str, version: str, request: Request) -> Response:
    """V2 inference request for one version of the model, passed through to the model's server."""
    return await _infer(model, request, version)


@router.get("/v2", responses={200: json_body(V2_SERVER, "server metadata"), **error_responses(401)})
async def v2_server(request: Request) -> dict[str, Any]:
    """V2 server metadata: this gateway and the protocol extensions it speaks."""
    return state_of(request).server_metadata()


@router.get("/v2/models/{model}", responses=_METADATA)
async def v2_metadata(model: str, request: Request) -> Response:
    """V2 model metadata from the model's server."""
    return rest_answer(await state_of(request).passthrough.get(model))


@router.get("/v2/models/{model}/versions/{version}", responses=_METADATA)
async def v2_metadata_version(model: str, version: str, request: Request) -> Response:
    """V2 metadata of one version of the model, from the model's server."""
    return rest_answer(await state_of(request).passthrough.get(model, version=version))


@router.get(
    "/v2/models/{model}/versions/{version}/ready",
    response_class=Response,
    responses={**_ERRORS, 200: {"description": "the version is ready"}, 400: {"description": "not ready"}},
)
async def v2_ready_version(model: str, version: str, request: Request) -> Response:
    """V2 readiness of one version of the model, from the model's server (an empty body)."""
    return rest_answer(await state_of(request).passthrough.get(model, "/ready", version=version))


@router.get(
    "/v2/models/{model}/ready",
    response_class=Response,
    responses={**_ERRORS, 200: {"description": "the model is ready"}, 400: {"description": "not ready"}},
)
async def v2_ready(model: str, request: Request) -> Response:
    """V2 model readiness from the model's server (an empty body)."""
    return rest_answer(await state_of(request).passthrough.get(model, "/ready"))
