"""Pure ASGI middleware (no per-request task switching): request ids, JSON access logs, metrics, body limit,
bearer-token authentication."""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

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
    """Request id (``X-Request-ID`` in and out), access log, metrics, auth and the body-size limit."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: GatewayMetrics,
        max_body_bytes: int,
        token: str | None,
        log_requests: bool,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.token = token.encode() if token else None
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

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id)]
            await send(message)

        try:
            if self.token is not None and not path.startswith(OPEN_PREFIXES):
                scheme, _, credentials = headers.get(b"authorization", b"").partition(b" ")
                # the scheme is case-insensitive (RFC 7235); the token is compared exactly, in constant time
                if not (hmac.compare_digest(credentials, self.token) and scheme.lower() == b"bearer"):
                    await _send_json(
                        send_wrapper,
                        401,
                        {"error": "unauthorized", "message": "missing or wrong bearer token"},
                        [(b"www-authenticate", b'Bearer realm="vatic"')],
                    )
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
            if self.log_requests:
                log.info(
                    "request",
                    extra={
                        "request_id": request_id.decode("latin-1"),
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
