"""The V2 pass-through behind every door of the gateway (REST, gRPC): transport-free.

:class:`V2Passthrough` finds the service that owns a model, checks an inference request against the inputs the
model declares (its V2 metadata, cached :data:`SIGNATURE_TTL_S`; see :mod:`vatic.serving.gateway.v2`) and
forwards it as JSON to the model's server (over gRPC with raw tensors when the service reaches its model server
at a ``grpc://`` address, answered as the server's REST door would). It answers an :class:`Answer` - the status
and JSON body a V2 server would answer - whatever went wrong, so each door only translates: REST sends it as it
is, gRPC maps the status to a gRPC code (:func:`grpc_code`). A model server that cannot be reached is answered
503; a model server's own answer that is not JSON (a plain-text 500) is answered as a JSON error. An
``https://`` model server whose certificate does not verify (``VATIC_GATEWAY_MODEL_CA_FILE``) is a
misconfiguration, answered 503 with a message that says so (``kind`` ``misconfigured``), as the REST door answers
every ``ConfigError`` met at request time.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from vatic.connectors.inference import untrusted_certificate
from vatic.connectors.inference_grpc import GrpcInferenceClient
from vatic.schemas.errors import (
    ConfigError,
    ModelNotFound,
    ModelNotReady,
    ModelRejected,
    ModelServerUnavailable,
    Retryable,
)
from vatic.serving.core.contract import BadInput, TensorDecl
from vatic.serving.gateway.services import ServiceRuntime
from vatic.serving.gateway.v2 import MalformedRequest, check_request, parse_request

log = logging.getLogger("vatic.gateway")

#: how long the pass-through trusts a model's declared inputs before asking its server again
SIGNATURE_TTL_S = 30.0


@dataclass(frozen=True)
class Answer:
    """What a V2 server answers: ``status`` and the body (JSON bytes, or empty for readiness).

    ``kind`` says who answered: ``upstream`` (the model server, passed through), or the gateway itself -
    ``not_found`` (no such model here), ``malformed`` (not a V2 request; ``field`` names the part),
    ``refused`` (inputs the model's declaration refuses), ``unavailable`` (``error`` is the outage),
    ``misconfigured`` (the model server cannot be trusted: its TLS certificate does not verify).
    """

    status: int
    content: bytes = b""
    kind: str = "upstream"
    field: str | None = None
    error: Retryable | None = None

    @classmethod
    def refusal(cls, status: int, kind: str, message: str, **extra: Any) -> Answer:
        return cls(status, orjson.dumps({"error": message}), kind, **extra)

    def json(self) -> Any:
        return orjson.loads(self.content) if self.content else None

    @property
    def message(self) -> str:
        body = self.json()
        if isinstance(body, dict):
            if isinstance(body.get("error"), str):
                return str(body["error"])
            if body.get("detail") is not None:
                return orjson.dumps(body["detail"]).decode()
        return self.content.decode("utf-8", "replace")[:300]


class V2Passthrough:
    """The V2 routes' core; ``services`` by name, ``client`` the pooled HTTP client to the model servers."""

    def __init__(self, services: Mapping[str, ServiceRuntime], client: httpx.AsyncClient) -> None:
        self.services = services
        self.client = client
        self._signatures: dict[tuple[str, str | None], tuple[float, list[TensorDecl]]] = {}

    def owner(self, model: str) -> ServiceRuntime | None:
        return next((r for r in self.services.values() if r.owns(model)), None)

    async def declared_inputs(self, owner: ServiceRuntime, model: str, version: str | None) -> list[TensorDecl]:
        """The inputs the model declares; empty when it declares none (yet) or the server does not know it (the
        forwarded request then gets the server's own answer, e.g. 404 for an unknown version)."""
        cached = self._signatures.get((model, version))
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        try:
            metadata = await owner.predictor.inference.metadata(model, version=version)
            declared = [TensorDecl.from_dict(tensor) for tensor in metadata.inputs]  # type: ignore[arg-type]
        except (ModelNotFound, ValueError):
            return []
        except ConfigError as exc:
            log.warning("model metadata unusable: %s", exc.message, extra={"model": model})
            return []
        if declared:
            self._signatures[(model, version)] = (time.monotonic() + SIGNATURE_TTL_S, declared)
        return declared

    async def infer(
        self, model: str, body: bytes, *, version: str | None = None, payload: dict[str, Any] | None = None
    ) -> Answer:
        """Check a V2 JSON inference request and forward it; the model server's answer (or the refusal).
        ``payload``: ``body`` already parsed, when the door built it (binary extension, gRPC)."""
        owner = self.owner(model)
        if owner is None:
            return Answer.refusal(404, "not_found", f"no model {model!r} behind this gateway")
        try:
            tensors = parse_request(body, payload)
        except MalformedRequest as exc:
            return Answer.refusal(422, "malformed", exc.message, field=exc.field)
        try:
            check_request(tensors, await self.declared_inputs(owner, model, version))
        except BadInput as exc:
            return Answer.refusal(400, "refused", f"model {model}: {exc}")
        except Retryable as exc:
            return Answer.refusal(503, "unavailable", exc.message, error=exc)
        if isinstance(owner.predictor.inference, GrpcInferenceClient):
            return await self._over_grpc(
                owner.predictor.inference, model, version, "/infer", payload or orjson.loads(body)
            )
        return await self._forward(owner, "POST", model, _suffix(version, "/infer"), body)

    async def get(self, model: str, suffix: str = "", *, version: str | None = None) -> Answer:
        """A V2 GET of the model (``""``: metadata, ``"/ready"``: readiness), of one ``version`` if given."""
        owner = self.owner(model)
        if owner is None:
            return Answer.refusal(404, "not_found", f"no model {model!r} behind this gateway")
        if isinstance(owner.predictor.inference, GrpcInferenceClient):
            return await self._over_grpc(owner.predictor.inference, model, version, suffix, None)
        return await self._forward(owner, "GET", model, _suffix(version, suffix), None)

    async def _over_grpc(
        self, client: GrpcInferenceClient, model: str, version: str | None, what: str, payload: dict[str, Any] | None
    ) -> Answer:
        """The same call to a model server the service reaches over gRPC, answered as its REST door would."""
        try:
            if what == "/infer":
                assert payload is not None
                return Answer(200, orjson.dumps(await client.infer_json(model, payload, version=version)))
            if what == "/ready":
                return Answer(200 if await client.ready(model, version=version) else 400)
            return Answer(200, orjson.dumps(await client.metadata_json(model, version=version)))
        except ModelNotFound as exc:
            return Answer.refusal(404, "upstream", exc.message)
        except ModelNotReady as exc:
            return Answer.refusal(400, "upstream", exc.message)
        except ModelRejected as exc:
            return Answer.refusal(exc.status, "upstream", exc.message)
        except Retryable as exc:
            return Answer.refusal(503, "unavailable", exc.message, error=exc)
        except ConfigError as exc:
            return Answer.refusal(502, "upstream", exc.message)

    async def _forward(self, owner: ServiceRuntime, method: str, model: str, suffix: str, body: bytes | None) -> Answer:
        url = f"{owner.endpoint}/v2/models/{urllib.parse.quote(model, safe='')}{suffix}"
        try:
            upstream = await self.client.request(
                method, url, content=body, headers={"content-type": "application/json"} if body is not None else None
            )
        except httpx.HTTPError as exc:
            untrusted = untrusted_certificate(exc)
            if untrusted is not None:
                return Answer.refusal(
                    503,
                    "misconfigured",
                    f"model server {owner.endpoint}: its TLS certificate does not verify "
                    f"({untrusted.verify_message or untrusted}): the gateway's VATIC_GATEWAY_MODEL_CA_FILE must "
                    "trust the CA that signed it",
                )
            down = ModelServerUnavailable(f"model server {owner.endpoint} unreachable: {exc}", service="model-server")
            return Answer.refusal(503, "unavailable", down.message, error=down)
        if upstream.content and "json" not in upstream.headers.get("content-type", ""):
            # a model server's own non-JSON error (a plain-text 500): a JSON error, whatever the door
            status = 502 if upstream.status_code >= 500 else upstream.status_code
            return Answer.refusal(
                status,
                "upstream",
                f"model {model}: the model server answered {upstream.status_code} without a JSON body: "
                f"{upstream.text[:300]}",
            )
        return Answer(upstream.status_code, upstream.content)


def _suffix(version: str | None, rest: str) -> str:
    return f"/versions/{urllib.parse.quote(version, safe='')}{rest}" if version else rest


#: HTTP status -> gRPC status code name, as KServe and Triton map them
_GRPC_CODES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED", 413: "RESOURCE_EXHAUSTED", 422: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED",
    501: "UNIMPLEMENTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}  # fmt: skip


def grpc_code(status: int) -> str:
    """The gRPC status code name of an HTTP status."""
    return _GRPC_CODES.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
