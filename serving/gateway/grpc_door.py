"""The gateway's gRPC door: ``inference.GRPCInferenceService`` (ServerLive, ServerReady, ModelReady,
ServerMetadata, ModelMetadata, ModelInfer) and ``vatic.Gateway/Predict``, in front of the same core as REST.

The door runs a gRPC server (a thread pool, on ``grpc_port``) beside the REST app; every call runs the REST
door's own coroutines - the V2 pass-through (:class:`~vatic.serving.gateway.passthrough.V2Passthrough`) and the
enriched prediction (:func:`~vatic.serving.gateway.predict.predict_event`) - on the app's event loop, so both
doors share the model clients, micro-batchers and feature readers. Statuses map as KServe and Triton map them
(:func:`~vatic.serving.gateway.passthrough.grpc_code`): 400/422 INVALID_ARGUMENT, 404 NOT_FOUND, 503
UNAVAILABLE, 504 DEADLINE_EXCEEDED; with a token, a call without ``authorization: Bearer <token>`` metadata is
UNAUTHENTICATED (health stays open, as on REST). A message over ``max_body_bytes`` is
RESOURCE_EXHAUSTED (gRPC's own limit).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import orjson

from vatic.connectors.v2 import grpc as wire
from vatic.schemas.errors import ConfigError, DataError, DeadlineExceeded, InvalidRecord, Retryable, ServiceNotFound
from vatic.serving.gateway.passthrough import Answer, V2Passthrough, grpc_code

log = logging.getLogger("vatic.gateway")

#: methods answered without a token (as /v2/health/* on REST)
OPEN_METHODS = frozenset({"ServerLive", "ServerReady"})


class GrpcDoor:
    """Build with the app's core objects; :meth:`start` binds ``host:port``, :meth:`stop` drains and stops."""

    def __init__(
        self,
        passthrough: V2Passthrough,
        predict: Callable[[str, dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]],
        server_ready: Callable[[], Coroutine[Any, Any, bool]],
        metadata: dict[str, Any],
        *,
        loop: asyncio.AbstractEventLoop,
        token: str | None,
        max_message_bytes: int,
        workers: int = 16,
    ) -> None:
        self.passthrough = passthrough
        self.predict = predict
        self.server_ready = server_ready
        self.metadata = metadata
        self.loop = loop
        self.token = token
        self.max_message_bytes = max_message_bytes
        self.workers = workers
        self.server: grpc.Server | None = None
        self.port: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self, host: str, port: int) -> int:
        """Serve on ``host:port`` (0: a free port); returns the port."""
        options = [
            ("grpc.so_reuseport", 0),  # a port another process holds is an error, not silently shared
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ]
        server = grpc.server(ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="grpc"), options=options)
        server.add_generic_rpc_handlers([self._handlers(wire.INFERENCE_SERVICE), self._handlers(wire.GATEWAY_SERVICE)])
        try:
            self.port = server.add_insecure_port(f"{host}:{port}")
        except RuntimeError as exc:
            raise ConfigError(f"the gRPC door cannot listen on {host}:{port} ({exc}): free the port or pass another "
                              "--grpc-port") from None  # fmt: skip
        server.start()
        self.server = server
        return self.port

    def stop(self, grace_s: float = 5.0) -> None:
        if self.server is not None:
            self.server.stop(grace_s).wait()
            self.server = None

    def _handlers(self, service: str) -> grpc.GenericRpcHandler:
        handlers = {}
        for name, (request_cls, response_cls) in wire.methods(service).items():
            implementation = getattr(self, f"_{name}")
            handlers[name] = grpc.unary_unary_rpc_method_handler(
                self._guarded(name, implementation),
                request_deserializer=request_cls.FromString,
                response_serializer=response_cls.SerializeToString,
            )
        return grpc.method_handlers_generic_handler(service, handlers)

    def _guarded(self, name: str, implementation: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            if self.token is not None and name not in OPEN_METHODS:
                sent = dict(context.invocation_metadata()).get("authorization", "")
                scheme, _, credential = str(sent).partition(" ")
                if scheme.lower() != "bearer" or not hmac.compare_digest(credential.encode(), self.token.encode()):
                    context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
            return implementation(request, context)

        return call

    def _run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Run one of the REST door's coroutines on the app's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    @staticmethod
    def _abort(context: grpc.ServicerContext, answer: Answer) -> None:
        context.abort(getattr(grpc.StatusCode, grpc_code(answer.status)), answer.message)

    # -- inference.GRPCInferenceService ------------------------------------------------------------------------

    def _ServerLive(self, request: Any, context: grpc.ServicerContext) -> Any:
        return wire.message("inference.ServerLiveResponse")(live=True)

    def _ServerReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        return wire.message("inference.ServerReadyResponse")(ready=bool(self._run(self.server_ready())))

    def _ServerMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        return wire.message("inference.ServerMetadataResponse")(**self.metadata)

    def _ModelReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        answer = self._run(self.passthrough.get(request.name, "/ready", version=request.version or None))
        if answer.status not in (200, 400):  # 400: the model is there but not ready
            self._abort(context, answer)
        return wire.message("inference.ModelReadyResponse")(ready=answer.status == 200)

    def _ModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        answer = self._run(self.passthrough.get(request.name, version=request.version or None))
        if answer.status != 200:
            self._abort(context, answer)
        body = answer.json()
        response = wire.message("inference.ModelMetadataResponse")(
            name=str(body.get("name") or request.name),
            versions=[str(v) for v in body.get("versions") or []],
            platform=str(body.get("platform") or ""),
        )
        for key in ("inputs", "outputs"):
            for tensor in body.get(key) or []:
                getattr(response, key).add(
                    name=str(tensor.get("name")), datatype=str(tensor.get("datatype")),
                    shape=[int(d) for d in tensor.get("shape") or []],
                )  # fmt: skip
        return response

    def _ModelInfer(self, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            plain = wire.infer_request_to_json(request)
        except wire.BinaryFormatError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"model {request.model_name}: {exc.message}")
        answer = self._run(
            self.passthrough.infer(
                request.model_name, orjson.dumps(plain), version=request.model_version or None, payload=plain
            )
        )
        if answer.status != 200:
            self._abort(context, answer)
        return wire.infer_response_from_json(answer.json())

    # -- vatic.Gateway ---------------------------------------------------------------------------------------

    def _Predict(self, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            event = orjson.loads(request.event_json)
        except orjson.JSONDecodeError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"event_json is not JSON: {exc}")
        if not isinstance(event, dict):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "event_json must be a JSON object of event fields")
        try:
            prediction = self._run(self.predict(request.service, event))
        except ServiceNotFound as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, exc.message)
        except InvalidRecord as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"field {exc.field!r}: {exc.problem}")
        except DataError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{exc.error_class} at {exc.stage}: {exc.message}")
        except DeadlineExceeded as exc:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, exc.message)
        except (Retryable, ConfigError) as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{exc.error_class}: {exc.message}")
        return wire.message("vatic.PredictResponse")(prediction_json=orjson.dumps(prediction))
