"""The gateway's gRPC door: ``inference.GRPCInferenceService`` (ServerLive, ServerReady, ModelReady,
ServerMetadata, ModelMetadata, ModelInfer) and ``vatic.Gateway/Predict``, in front of the same core as REST.

The door runs a gRPC server (a thread pool, on ``grpc_port``) beside the REST app; every call runs the REST
door's own coroutines - the V2 pass-through (:class:`~vatic.serving.gateway.passthrough.V2Passthrough`) and the
enriched prediction (:func:`~vatic.serving.gateway.predict.predict_event`) - on the app's event loop, so both
doors share the model clients, micro-batchers and feature readers. Statuses map as KServe and Triton map them
(:func:`~vatic.serving.gateway.passthrough.grpc_code`): 400/422 INVALID_ARGUMENT, 404 NOT_FOUND, 503
UNAVAILABLE, 504 DEADLINE_EXCEEDED. A message over ``max_body_bytes`` is RESOURCE_EXHAUSTED (gRPC's own limit).

Authentication (:mod:`vatic.serving.gateway.auth`, the same clients and rules as REST; ServerLive and
ServerReady stay open, as ``/v2/health/*``): the credential is the ``authorization: Bearer <token>`` metadata;
none or an unknown one is UNAUTHENTICATED, a client calling a service it may not (ModelInfer, ModelReady and
ModelMetadata call the service that owns the model, Predict the service it names) PERMISSION_DENIED, a client
over its rate RESOURCE_EXHAUSTED with ``retry-after`` trailing metadata (whole seconds).

TLS: with ``tls`` (certificate, key) the door listens with ``grpc.ssl_server_credentials``; with ``client_ca``
too, a client must present a certificate signed by that CA (mTLS, ``require_client_auth``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import orjson

from vatic.connectors.v2 import grpc as wire
from vatic.schemas.errors import ConfigError, DataError, DeadlineExceeded, InvalidRecord, Retryable, ServiceNotFound
from vatic.serving.gateway.auth import UNOWNED, Authenticator
from vatic.serving.gateway.metrics import GatewayMetrics
from vatic.serving.gateway.passthrough import Answer, V2Passthrough, grpc_code

log = logging.getLogger("vatic.gateway")

#: methods answered without a token (as /v2/health/* on REST)
OPEN_METHODS = frozenset({"ServerLive", "ServerReady"})
#: the request field that names the model (V2 methods) or the service (Predict) a method calls
_MODEL_FIELD = {"ModelInfer": "model_name", "ModelReady": "name", "ModelMetadata": "name"}
_DENIED = {
    401: grpc.StatusCode.UNAUTHENTICATED, 403: grpc.StatusCode.PERMISSION_DENIED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
}  # fmt: skip


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
        auth: Authenticator | None,
        model_services: Mapping[str, str],
        max_message_bytes: int,
        metrics: GatewayMetrics | None = None,
        tls: tuple[Path, Path] | None = None,
        client_ca: Path | None = None,
        workers: int = 16,
    ) -> None:
        self.passthrough = passthrough
        self.predict = predict
        self.server_ready = server_ready
        self.metadata = metadata
        self.loop = loop
        self.auth = auth
        self.model_services = model_services
        self.metrics = metrics
        self.tls = tls
        self.client_ca = client_ca
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
            if self.tls is None:
                self.port = server.add_insecure_port(f"{host}:{port}")
            else:
                self.port = server.add_secure_port(f"{host}:{port}", self._credentials(*self.tls))
        except RuntimeError as exc:
            raise ConfigError(f"the gRPC door cannot listen on {host}:{port} ({exc}): free the port or pass another "
                              "--grpc-port") from None  # fmt: skip
        server.start()
        self.server = server
        return self.port

    def _credentials(self, cert: Path, key: Path) -> grpc.ServerCredentials:
        try:
            chain, private = cert.read_bytes(), key.read_bytes()
            client_ca = self.client_ca.read_bytes() if self.client_ca is not None else None
        except OSError as exc:
            raise ConfigError(f"the gRPC door cannot read its TLS files: {exc.filename}: {exc.strerror}") from None
        return grpc.ssl_server_credentials(
            [(private, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
        )

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
            if self.auth is None or name in OPEN_METHODS:
                return implementation(request, context)
            client = self._authorize(name, request, context)
            code = "OK"
            try:
                return implementation(request, context)
            except Exception:
                code = getattr(context.code(), "name", None) or "UNKNOWN"
                raise
            finally:
                self._count(client, code)

        return call

    def _count(self, client: str, code: str) -> None:
        if self.metrics is not None:
            self.metrics.client_requests.labels(client, "grpc", code).inc()

    def _authorize(self, name: str, request: Any, context: grpc.ServicerContext) -> str:
        """Abort the call unless its credential's client may call what it names, within its rate; the client."""
        assert self.auth is not None
        if name in _MODEL_FIELD:
            service: str | None = self.model_services.get(getattr(request, _MODEL_FIELD[name]), UNOWNED)
        elif name == "Predict":
            service = request.service
        else:
            service = None
        sent = dict(context.invocation_metadata()).get("authorization")
        verdict = self.auth.check(sent if isinstance(sent, str) else None, service)
        if not verdict.allowed:
            self._count(verdict.client_name, _DENIED[verdict.status].name)
            if verdict.status == 429:
                context.set_trailing_metadata((("retry-after", verdict.retry_after_header),))
            context.abort(_DENIED[verdict.status], verdict.message)
        return verdict.client_name

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
