"""``python -m vatic.serving.runtimes.serve start <folder>``: MLServer's own ``mlserver start``, with a limit on
request bodies.

MLServer 1.7.1 reads any REST body whole, whatever its size (a 50 MB request is parsed before anything can refuse
it), and has no setting for a limit. vatic's model servers start through this module, which adds one to the
REST app MLServer builds - a pure ASGI middleware in front of it - and nothing else: the command line, settings
and behaviour are ``mlserver start``'s. A body over the limit (``Content-Length``, or counted as it streams in)
is answered 413 ``{"error": "..."}`` (MLServer's error form) before the model sees it. The limit is
``VATIC_MODEL_MAX_BODY_BYTES`` (default :data:`DEFAULT_MAX_BODY_BYTES`); gRPC has its own
(``grpc_max_message_length`` in ``settings.json``).

One more difference, for the same image run anywhere: MLServer reads its ``MLSERVER_*`` environment only when the
folder has no ``settings.json``, and vatic's settings writer always writes one. Here the listening address
(:data:`ENV_OVERRIDES`: ``MLSERVER_HOST``, ``MLSERVER_HTTP_PORT``, ``MLSERVER_GRPC_PORT``,
``MLSERVER_METRICS_PORT``) set in the environment wins over the file, as a container platform or a process
supervisor assigning ports expects.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

MAX_BODY_ENV = "VATIC_MODEL_MAX_BODY_BYTES"
#: 16 MiB: a [64, 384] FP32 batch is ~0.5 MB of JSON, a 128-row micro-batch of the stream a few KB
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Refuse HTTP request bodies over ``max_bytes`` with 413 and a JSON error body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(send, int(length))
            return
        seen = 0
        started = exceeded = False

        async def counting_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise _TooLarge
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            if exceeded:  # the app turned the interrupted read into an answer of its own (FastAPI: a 400)
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._refuse(send, seen)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except _TooLarge:
            if not started:
                await self._refuse(send, seen)

    async def _refuse(self, send: Send, size: int) -> None:
        message = (
            f"request body of {size} bytes or more is over the model server's limit of {self.max_bytes} bytes "
            f"({MAX_BODY_ENV})"
        )
        body = json.dumps({"error": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


#: settings the environment overrides over ``settings.json``: MLServer's variable -> its setting, type
ENV_OVERRIDES: dict[str, tuple[str, type]] = {
    "MLSERVER_HOST": ("host", str),
    "MLSERVER_HTTP_PORT": ("http_port", int),
    "MLSERVER_GRPC_PORT": ("grpc_port", int),
    "MLSERVER_METRICS_PORT": ("metrics_port", int),
}


def environment_overrides(environ: MutableMapping[str, str] | None = None) -> dict[str, Any]:
    """The settings :data:`ENV_OVERRIDES` names that are set (``ValueError`` naming a port that is no number)."""
    environ = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for variable, (setting, kind) in ENV_OVERRIDES.items():
        value = environ.get(variable)
        if value:
            try:
                out[setting] = kind(value)
            except ValueError:
                raise ValueError(f"{variable}={value!r} is not a port number") from None
    return out


def max_body_bytes() -> int:
    value = os.environ.get(MAX_BODY_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_MAX_BODY_BYTES


def _patch_mlserver(limit: int) -> None:
    """Wrap the REST app MLServer's server builds (the name ``mlserver.rest.server`` imported it under)."""
    import mlserver.rest.server as rest_server

    build = rest_server.create_app

    def create_app(*args: Any, **kwargs: Any) -> Any:
        app = build(*args, **kwargs)
        app.add_middleware(BodyLimit, max_bytes=limit)
        return app

    rest_server.create_app = create_app  # type: ignore[assignment,unused-ignore]


def _patch_settings(overrides: dict[str, Any]) -> None:
    """Apply ``overrides`` to the server settings ``mlserver start`` loads (the name ``mlserver.cli.main``
    imported ``load_settings`` under)."""
    import importlib

    cli: Any = importlib.import_module("mlserver.cli.main")  # `mlserver.cli.main` the attribute is the click command
    load = cli.load_settings

    async def load_settings(*args: Any, **kwargs: Any) -> Any:
        settings, models = await load(*args, **kwargs)
        for name, value in overrides.items():
            setattr(settings, name, value)
        return settings, models

    cli.load_settings = load_settings


def main() -> None:
    _patch_mlserver(max_body_bytes())
    try:
        overrides = environment_overrides()
    except ValueError as exc:
        raise SystemExit(f"vatic: {exc}") from None
    if overrides:
        _patch_settings(overrides)
    from mlserver.cli.main import main as mlserver_main

    mlserver_main()


if __name__ == "__main__":
    main()
