"""Async client of a V2 (Open Inference Protocol) model server over gRPC, written for MLServer 1.7.1.

The same calls and the same error contract as the REST client (:class:`~vatic.connectors.inference.InferenceClient`,
whose module docstring holds the table), for a model server named by a ``grpc://host:port`` URL (its gRPC port:
MLServer's ``grpc_port``, 8081 by default). Every input travels in ``raw_input_contents`` (row-major
little-endian bytes; a BYTES element is its 4-byte length and its bytes), and MLServer then answers every output in
``raw_output_contents``: no tensor is written or parsed as JSON numbers on either side. That is what this
transport is for: MLServer's REST door has no binary tensor extension, and a tensor of thousands of floats costs
milliseconds to encode, validate and parse as JSON (an embedding passed between two steps of a graph).

How gRPC status codes map (what MLServer 1.7.1 answers: its errors carry their HTTP status, mapped 400 ->
``INVALID_ARGUMENT``, 404 -> ``NOT_FOUND``, 422 -> ``FAILED_PRECONDITION``, anything else -> ``INTERNAL``):

=========================================================  ===========================  ========================
status                                                     raised                       root
=========================================================  ===========================  ========================
``UNAVAILABLE`` (refused, reset), ``INTERNAL``, ``UNKNOWN``,  ``ModelServerUnavailable``  ``Retryable``
``RESOURCE_EXHAUSTED``, ``ABORTED``, ``CANCELLED``
``INVALID_ARGUMENT`` "Model m is not ready yet."           ``ModelNotReady``            ``Retryable``
``DEADLINE_EXCEEDED``, or the call's deadline passed       ``DeadlineExceeded``         ``Retryable``
``NOT_FOUND`` on a model call                              ``ModelNotFound``            ``ConfigError``
``UNAUTHENTICATED``, ``PERMISSION_DENIED``,                ``UnexpectedModelResponse``  ``ConfigError``
``UNIMPLEMENTED``, a response that is not V2
``INVALID_ARGUMENT``, ``FAILED_PRECONDITION``,             ``ModelRejected``            ``DataError``
``OUT_OF_RANGE``
=========================================================  ===========================  ========================

``INTERNAL`` is MLServer's answer to any exception in a model, including input the model cannot use, exactly as
its REST door answers 500: an outage to the caller, whose bisection finds a poisoned row once its retries are
spent. Deadlines are overall (waiting for a concurrency slot included) and are also sent with the call, so that
the server gives up on it too. The client never retries. TLS (``grpcs://``) is not supported yet: it is refused
at construction with one line (use the REST URL, ``https://``, for a TLS model server).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import grpc
import grpc.aio

from vatic.connectors.inference import BaseClient, check_model
from vatic.connectors.v2 import grpc as wire
from vatic.connectors.v2.types import InferenceRequest, InferenceResponse, ModelMetadata
from vatic.schemas.errors import (
    BinaryFormatError,
    ConfigError,
    ModelNotFound,
    ModelNotReady,
    ModelRejected,
    ModelServerUnavailable,
    UnexpectedModelResponse,
)

__all__ = ["SCHEMES", "GrpcInferenceClient"]

#: the URL schemes of a gRPC model server
SCHEMES = ("grpc", "grpcs")
#: the largest message either side may send (MLServer's default limit is 100 MiB)
MAX_MESSAGE_BYTES = 100 * 1024 * 1024

_SERVICE = "model-server"
_NOT_READY = "is not ready yet"
_UNMAPPED_NOT_FOUND = "mlserver.errors.ModelNotFound'>"
_OUTAGE = {
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED, grpc.StatusCode.CANCELLED,
}  # fmt: skip
_REJECTED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE}
_METHODS = wire.methods(wire.INFERENCE_SERVICE)
#: the HTTP status each code stands for, kept on the error as the REST client keeps the status: the core's poison
#: verdict reads it (a 500 from a healthy server may be a poisoned input). MLServer answers INTERNAL for its 500s and
#: UNKNOWN for an error whose status it cannot map (its 503s among them): UNKNOWN counts as 503, never as poison.
_HTTP_OF = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.FAILED_PRECONDITION: 422, grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNIMPLEMENTED: 501, grpc.StatusCode.INTERNAL: 500, grpc.StatusCode.UNKNOWN: 503,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.ABORTED: 409, grpc.StatusCode.CANCELLED: 499,
}  # fmt: skip


class GrpcInferenceClient(BaseClient):
    """Async V2 gRPC client of one model server (``grpc://host:port``); see the module docstring.

    ``deadline_s``: the default deadline of every call; ``max_concurrency``: calls in flight at most (None: no
    cap). The channel is opened on the first call, in the event loop that makes it; use the client as ``async
    with`` or call :meth:`close`.
    """

    def __init__(self, url: str, *, deadline_s: float = 5.0, max_concurrency: int | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES or not parts.hostname or parts.port is None or parts.path not in ("", "/"):
            raise ConfigError(
                f"model server URL {url!r} is not a gRPC address: grpc://host:port (the server's gRPC port)",
                stage="infer",
            )
        if parts.scheme == "grpcs":
            raise ConfigError(
                f"model server URL {url!r}: TLS to a gRPC model server is not supported yet; call it over REST "
                "(https://host:port) instead",
                stage="infer",
            )
        super().__init__(deadline_s, max_concurrency)
        self.base_url = url.rstrip("/")
        self.target = f"{parts.hostname}:{parts.port}"
        self._channel: grpc.aio.Channel | None = None
        self._calls: dict[str, Any] = {}

    async def close(self) -> None:
        """Close the channel. Idempotent."""
        channel, self._channel = self._channel, None
        self._calls.clear()
        if channel is not None:
            await channel.close()

    # -- data plane -------------------------------------------------------------------------------------

    async def infer(
        self, model: str, request: InferenceRequest, *, version: str | None = None, deadline_s: float | None = None
    ) -> InferenceResponse:
        """``ModelInfer`` with raw tensors; raises the errors of the module table."""
        body = await self.infer_json(model, request.as_dict(), version=version, deadline_s=deadline_s)
        try:
            return InferenceResponse.from_dict(body)
        except ValueError as exc:
            raise self._unexpected("ModelInfer", exc) from exc

    async def infer_json(
        self, model: str, body: Mapping[str, Any], *, version: str | None = None, deadline_s: float | None = None
    ) -> dict[str, Any]:
        """``ModelInfer`` of a V2 JSON request (``inputs``' ``data`` flat or nested); the V2 JSON response."""
        check_model(model)
        try:
            message = wire.infer_request_from_json(model, version, body)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelRejected(
                f"model {model!r}: the request cannot be sent as raw tensors: {exc}", status=400, body=str(exc)
            ) from exc
        response = await self._call("ModelInfer", message, model=model, version=version, deadline_s=deadline_s)
        try:
            return wire.infer_response_to_json(response)
        except BinaryFormatError as exc:
            raise self._unexpected("ModelInfer", exc) from exc

    # -- health and metadata ----------------------------------------------------------------------------

    async def server_ready(self, *, deadline_s: float | None = None) -> bool:
        """``ServerReady``: True when every model is ready."""
        response = await self._call("ServerReady", _METHODS["ServerReady"][0](), deadline_s=deadline_s)
        return bool(response.ready)

    async def ready(self, model: str, *, version: str | None = None, deadline_s: float | None = None) -> bool:
        """``ModelReady``: True when it can infer, False while loading; an unknown model raises
        :class:`ModelNotFound`."""
        check_model(model)
        request = _METHODS["ModelReady"][0](name=model, version=version or "")
        try:
            response = await self._call("ModelReady", request, model=model, version=version, deadline_s=deadline_s)
        except ModelNotReady:
            return False
        return bool(response.ready)

    async def metadata(
        self, model: str, *, version: str | None = None, deadline_s: float | None = None
    ) -> ModelMetadata:
        """``ModelMetadata``: name, platform, versions, inputs, outputs and parameters."""
        body = await self.metadata_json(model, version=version, deadline_s=deadline_s)
        try:
            return ModelMetadata.from_dict(body)
        except ValueError as exc:
            raise self._unexpected("ModelMetadata", exc) from exc

    async def metadata_json(
        self, model: str, *, version: str | None = None, deadline_s: float | None = None
    ) -> dict[str, Any]:
        """``ModelMetadata`` as the V2 JSON metadata."""
        check_model(model)
        request = _METHODS["ModelMetadata"][0](name=model, version=version or "")
        response = await self._call("ModelMetadata", request, model=model, version=version, deadline_s=deadline_s)
        return wire.metadata_to_json(response)

    # -- machinery --------------------------------------------------------------------------------------

    def _method(self, name: str) -> Any:
        if self._channel is None:
            options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                       ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]  # fmt: skip
            self._channel = grpc.aio.insecure_channel(self.target, options=options)
        call = self._calls.get(name)
        if call is None:
            request, response = _METHODS[name]
            call = self._channel.unary_unary(
                f"/{wire.INFERENCE_SERVICE}/{name}",
                request_serializer=request.SerializeToString,
                response_deserializer=response.FromString,
            )
            self._calls[name] = call
        return call

    async def _call(
        self,
        name: str,
        request: Any,
        *,
        model: str | None = None,
        version: str | None = None,
        deadline_s: float | None = None,
    ) -> Any:
        """One attempt under one overall deadline."""
        budget = self._budget(deadline_s)
        loop = asyncio.get_running_loop()
        end = loop.time() + budget
        timeout = asyncio.timeout_at(end)
        try:
            async with timeout, self._slot():
                return await self._method(name)(request, timeout=max(end - loop.time(), 0.001))
        except TimeoutError as exc:
            if not timeout.expired():
                raise
            raise self._deadline_error(f"{name} on {self.base_url}", budget) from exc
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise self._deadline_error(f"{name} on {self.base_url}", budget) from exc
            raise self._error(name, exc, model, version) from None

    def _error(self, name: str, exc: grpc.aio.AioRpcError, model: str | None, version: str | None) -> Exception:
        code, reason = exc.code(), exc.details() or ""
        where = f"{name} on {self.base_url}"
        status = _HTTP_OF.get(code, 500)
        if code in _OUTAGE and not (model is not None and _UNMAPPED_NOT_FOUND in reason):
            return ModelServerUnavailable(
                f"model server {self.base_url} failed ({code.name}) on {name}: {reason}",
                service=_SERVICE,
                status=None if code == grpc.StatusCode.UNAVAILABLE else status,
                body=reason,
            )
        if code == grpc.StatusCode.INVALID_ARGUMENT and model is not None and _NOT_READY in reason:
            return ModelNotReady(f"model {model!r} is not ready: {reason}", model=model)
        # MLServer 1.7.1's ModelReady answers an unknown model UNKNOWN "Unexpected <class
        # 'mlserver.errors.ModelNotFound'>: ..." (that call's errors are not mapped): the same answer as NOT_FOUND
        if model is not None and (code == grpc.StatusCode.NOT_FOUND or _UNMAPPED_NOT_FOUND in reason):
            named = f"model {model!r}" + (f" version {version!r}" if version else "")
            return ModelNotFound(
                f"{named} is not on the model server {self.base_url}: {reason}", model=model, version=version
            )
        if code in _REJECTED and model is not None:
            return ModelRejected(
                f"model {model!r} rejected the request ({code.name}): {reason}", status=status, body=reason
            )
        return UnexpectedModelResponse(
            f"{where} answered {code.name}: {reason} - check the model server's gRPC address and credentials",
            status=status,
            body=reason,
        )

    def _unexpected(self, name: str, exc: Exception) -> UnexpectedModelResponse:
        return UnexpectedModelResponse(
            f"{name} on {self.base_url} answered what a V2 server does not send: {exc}", status=200, body=str(exc)
        )
