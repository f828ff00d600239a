"""Pure ASGI middleware (no per-request task switching): request ids, JSON access logs, metrics, body limit,
per-client authentication, authorization and rate limits (:mod:`vatic.serving.gateway.auth`)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import orjson

from vatic.serving.gateway.auth import Authenticator, rest_target
from vatic.serving.gateway.metrics import GatewayMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("vatic.gateway.access")

#: routes that never need a token: probes, metrics and the API documentation
OPEN_PREFIXES = ("/v2/health/", "/healthz", "/metrics", "/docs", "/openapi.json", "/redoc")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        body.update({k: v for k, v in record.__dict__.items() if k not in self.RESERVED})
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(body, default=str).decode()


async def _send_json(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    payload = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class GatewayMiddleware:
    """Request id (``X-Request-ID`` in and out), access log, metrics, auth and the body-size limit.

    ``auth`` None: every route is open. Otherwise every route but :data:`OPEN_PREFIXES` needs a credential, and
    the client it belongs to must be allowed the service the path names (``model_services``: model -> the
    service that owns it) and be within its rate: else 401, 403 or 429 with a JSON body, before the body is
    read. The client's name (never its token) goes into the access log (``client``) and the
    ``vatic_gateway_client_requests`` metric.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: GatewayMetrics,
        max_body_bytes: int,
        auth: Authenticator | None,
        model_services: Mapping[str, str],
        log_requests: bool,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.auth = auth
        self.model_services = model_services
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        request_id = (headers.get(b"x-request-id") or uuid.uuid4().hex.encode())[:64]
        scope.setdefault("state", {})["request_id"] = request_id.decode("latin-1")
        path: str = scope["path"]
        status_holder = [500]
        client: str | None = None

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id)]
            await send(message)

        try:
            if self.auth is not None and not path.startswith(OPEN_PREFIXES):
                verdict = self.auth.check(headers.get(b"authorization"), rest_target(path, self.model_services))
                client = verdict.client_name
                scope["state"]["client"] = client
                if not verdict.allowed:
                    extra: list[tuple[bytes, bytes]] = []
                    if verdict.status == 401:
                        extra.append((b"www-authenticate", b'Bearer realm="vatic"'))
                    elif verdict.status == 429:
                        extra.append((b"retry-after", verdict.retry_after_header.encode()))
                    body = {"error": verdict.error, "message": verdict.message}
                    await _send_json(send_wrapper, verdict.status, body, extra)
                    return
            declared = headers.get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                await self._too_large(send_wrapper)
                return
            await self.app(scope, self._limited(receive, send_wrapper), send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_label(scope, path)
            self.metrics.requests.labels(route, str(status_holder[0])).inc()
            self.metrics.latency.labels(route).observe(elapsed)
            if client is not None:
                self.metrics.client_requests.labels(client, "rest", str(status_holder[0])).inc()
            if self.log_requests:
                log.info(
                    "request",
                    extra={
                        "request_id": request_id.decode("latin-1"),
                        "client": client,
                        "method": scope.get("method"),
                        "path": path,
                        "status": status_holder[0],
                        "duration_ms": round(elapsed * 1000, 3),
                    },
                )

    def _limited(self, receive: Receive, send: Send) -> Receive:
        seen = 0
        limit = self.max_body_bytes

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge
            return message

        return limited_receive

    async def _too_large(self, send: Send) -> None:
        await _send_json(
            send,
            413,
            {"error": "payload_too_large", "message": f"request body over {self.max_body_bytes} bytes"},
            [],
        )


class _BodyTooLarge(Exception):
    """Raised from receive() when a streamed body passes the limit (handled by the app's exception handler)."""


BodyTooLarge = _BodyTooLarge


def _route_label(scope: Scope, path: str) -> str:
    route = scope.get("route")
    template = getattr(route, "path", None)
    return str(template) if template else ("unmatched" if path else "")
