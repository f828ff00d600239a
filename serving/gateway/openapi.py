"""What the gateway's OpenAPI document promises: every status a route can answer, each with its JSON body.

The routes return ``ORJSONResponse`` objects (no response-model validation on the hot path), so the bodies are
declared here and the tests hold the gateway to them (schemathesis: ``tests/serving/gateway``):

* every error a gateway route answers is a :data:`PROBLEM` (``{"error", "message"[, "field", "stage"]}``) -
  401 (with ``WWW-Authenticate``), 404, 413, 422, 503 (with ``Retry-After``), 504;
* a predict route answers the prediction event (the JSON Schema of the Avro ``prediction`` record);
* the V2 routes answer what the model server answers (V2 bodies, ``{"error": ...}`` for its 400/404, FastAPI's
  ``{"detail": [...]}`` for its 422), or a gateway problem (unknown model, body limit, server down);
* when credentials are configured, the document declares the bearer scheme on every route but health, metrics
  and docs, and the answers of :mod:`vatic.serving.gateway.auth` on each: 401, 403 (a service the client may
  not call) and 429 (over its rate, with ``Retry-After``).
"""

from __future__ import annotations

from typing import Any

from vatic.connectors.v2 import schema as v2
from vatic.connectors.v2.schema import json_schema
from vatic.connectors.v2.types import Datatype
from vatic.schemas import load_schema
from vatic.schemas.jsonschema import to_json_schema

__all__ = [
    "DATATYPES",
    "LIVE",
    "PROBLEM",
    "READY",
    "SERVICE_DESCRIPTION",
    "SERVICE_LIST",
    "V2_ERROR",
    "V2_METADATA",
    "V2_REQUEST",
    "V2_RESPONSE",
    "V2_SERVER",
    "enumerate_path_parameters",
    "error_responses",
    "json_body",
    "prediction_schema",
    "secure",
]

#: the body of every error the gateway itself answers (see :mod:`vatic.serving.gateway.errors`)
PROBLEM: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "what went wrong: a code or the error class"},
        "message": {"type": "string", "description": "what went wrong, for a person"},
        "field": {"type": "string", "description": "the request field at fault (invalid requests)"},
        "stage": {"type": "string", "description": "the pipeline stage that failed (enrich, infer ...)"},
    },
    "additionalProperties": False,
}

_DESCRIPTIONS = {
    400: "the model server refused the request",
    401: "missing or wrong bearer token",
    403: "the client may not call this service",
    404: "unknown service or model",
    413: "request body over the size limit",
    429: "the client is over its rate limit",
    422: "invalid request body or event, missing features, or input the model refuses",
    503: "model server or feature store unavailable, model not ready, or the service is misconfigured",
    504: "deadline exceeded",
}

_HEADERS = {
    401: {"WWW-Authenticate": {"description": "the scheme to use: Bearer", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}},
    503: {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}},
}

#: ``GET /v2/health/live``
LIVE: dict[str, Any] = {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}}

#: ``GET /v2/health/ready``: overall and per service
READY: dict[str, Any] = {
    "type": "object",
    "required": ["ready", "services"],
    "properties": {
        "ready": {"type": "boolean"},
        "services": {"type": "object", "additionalProperties": {"type": "boolean"}},
    },
}

_SUMMARY_PROPERTIES: dict[str, Any] = {
    "service": {"type": "string"},
    "project": {"type": "string"},
    "environment": {"type": ["string", "null"]},
    "model": {
        "type": "object",
        "required": ["name", "version"],
        "properties": {"name": {"type": "string"}, "version": {"type": ["string", "null"]}},
    },
    "endpoint": {"type": "string", "description": "the model server's base URL"},
    "features": {"type": "array", "items": {"type": "string"}},
    "predict": {"type": "string", "description": "the path of the service's predict route"},
}

#: one entry of ``GET /v1/services``
SERVICE_SUMMARY: dict[str, Any] = {
    "title": "ServiceSummary",
    "type": "object",
    "required": list(_SUMMARY_PROPERTIES),
    "properties": _SUMMARY_PROPERTIES,
}

#: ``GET /v1/services``
SERVICE_LIST: dict[str, Any] = {
    "type": "object",
    "required": ["services"],
    "properties": {"services": {"type": "array", "items": SERVICE_SUMMARY}},
}

#: ``GET /v1/services/{service}``: the summary and the JSON Schema of its predict body
SERVICE_DESCRIPTION: dict[str, Any] = {
    "title": "ServiceDescription",
    "type": "object",
    "required": [*_SUMMARY_PROPERTIES, "request_schema"],
    "properties": {**_SUMMARY_PROPERTIES, "request_schema": {"type": "object"}},
}

#: V2 (Open Inference Protocol) datatypes
DATATYPES = [datatype.value for datatype in Datatype]

#: the V2 bodies the gateway passes through, documented from the one set of V2 models
V2_REQUEST: dict[str, Any] = json_schema(v2.InferenceRequest)
V2_RESPONSE: dict[str, Any] = json_schema(v2.InferenceResponse)
V2_METADATA: dict[str, Any] = json_schema(v2.MetadataModelResponse)
V2_SERVER: dict[str, Any] = json_schema(v2.MetadataServerResponse)

#: an error of a V2 route: the model server's ``{"error": ...}`` / ``{"detail": [...]}``, or a gateway problem
V2_ERROR: dict[str, Any] = {
    "title": "V2Error",
    "type": "object",
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}, "detail": {}},
    "anyOf": [{"required": ["error"]}, {"required": ["detail"]}],
}


def json_body(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    """An OpenAPI response object with a JSON body of ``schema``."""
    return {"description": description, "content": {"application/json": {"schema": schema}}, **extra}


def error_responses(*statuses: int, schema: dict[str, Any] | None = None) -> dict[int | str, dict[str, Any]]:
    """Response objects of these error statuses (a :data:`PROBLEM` body unless ``schema`` says otherwise)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        response = json_body(schema or PROBLEM, _DESCRIPTIONS[status])
        if status in _HEADERS:
            response["headers"] = _HEADERS[status]
        out[status] = response
    return out


def prediction_schema() -> dict[str, Any]:
    """JSON Schema of the prediction event a predict route answers (the Avro ``prediction`` record)."""
    schema = to_json_schema(load_schema("prediction"))
    schema.pop("$schema", None)
    return schema


def secure(document: dict[str, Any], open_prefixes: tuple[str, ...]) -> dict[str, Any]:
    """Declare the bearer scheme on ``document``: required everywhere, except paths under ``open_prefixes``; every
    other operation also answers 401, 403 and 429 (:mod:`vatic.serving.gateway.auth`)."""
    components = document.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer <a client's token, the shared VATIC_GATEWAY_AUTH_TOKEN or a JWT>",
    }
    document["security"] = [{"bearer": []}]
    denials = error_responses(401, 403, 429)
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            if path.startswith(open_prefixes):
                operation["security"] = []
            else:
                responses = operation.setdefault("responses", {})
                for status, response in denials.items():
                    responses.setdefault(str(status), response)
    return document


def enumerate_path_parameters(document: dict[str, Any], values: dict[str, list[str]]) -> dict[str, Any]:
    """List the values a path parameter can take (``{"model": [served model names]}``) in ``document``: a client
    (or a test generator) learns which names exist; other names still answer 404."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                known = values.get(parameter.get("name")) if parameter.get("in") == "path" else None
                if known:
                    parameter["schema"] = {**parameter.get("schema", {}), "enum": list(known)}
    return document
