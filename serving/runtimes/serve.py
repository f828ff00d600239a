"""``python -m vatic.serving.runtimes.serve start <folder>``: MLServer's own ``mlserver start``, with a limit on
request bodies.

MLServer 1.7.1 reads any REST body whole, whatever its size (a 50 MB request is parsed before anything can refuse
it), and has no setting for a limit. vatic's model servers start through this module, which adds one to the
REST app MLServer builds - a pure ASGI middleware in front of it - and nothing else: the command line, settings
and behaviour are ``mlserver start``'s. A body over the limit (``Content-Length``, or counted as it streams in)
is answered 413 ``{"error": "..."}`` (MLServer's error form) before the model sees it. The limit is
``VATIC_MODEL_MAX_BODY_BYTES`` (default :data:`DEFAULT_MAX_BODY_BYTES`); gRPC has its own
(``grpc_max_message_length`` in ``settings.json``).

TLS: with ``VATIC_MODEL_TLS_CERT_FILE`` and ``VATIC_MODEL_TLS_KEY_FILE`` (PEM files mounted from a Secret) the
REST and gRPC ports serve TLS only (MLServer 1.7.1 has no TLS setting: its REST server takes the files through its
``_custom_rest_server_settings``, its gRPC server gets a secure port where it asks for an insecure one); the
metrics port stays plain HTTP (scraped in-cluster, behind the model server's NetworkPolicy). One file without the
other, or a pair that does not load, is one line and exit status 1.

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
from pathlib import Path
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


TLS_CERT_ENV = "VATIC_MODEL_TLS_CERT_FILE"
TLS_KEY_ENV = "VATIC_MODEL_TLS_KEY_FILE"


def tls_files(environ: MutableMapping[str, str] | None = None) -> tuple[str, str] | None:
    """``(certificate, key)`` when both variables are set and the pair loads; None when neither is set;
    ``ValueError`` naming the problem otherwise."""
    import ssl

    environ = os.environ if environ is None else environ
    cert, key = environ.get(TLS_CERT_ENV), environ.get(TLS_KEY_ENV)
    if not cert and not key:
        return None
    if not cert or not key:
        raise ValueError(f"TLS needs both {TLS_CERT_ENV} and {TLS_KEY_ENV} (one is set)")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"{TLS_CERT_ENV}={cert} / {TLS_KEY_ENV}={key} do not load as a PEM pair: {exc}") from None
    return cert, key


def _patch_grpc_tls(cert: str, key: str) -> None:
    """MLServer's gRPC server asks ``grpc.aio`` for an insecure port: give it a secure one with ``cert``/``key``."""
    import grpc
    import mlserver.grpc.server as grpc_server

    credentials = grpc.ssl_server_credentials([(Path(key).read_bytes(), Path(cert).read_bytes())])
    real = grpc_server.aio

    class _SecurePorts:
        def __init__(self, server: Any) -> None:
            self._server = server

        def add_insecure_port(self, address: str) -> int:
            return int(self._server.add_secure_port(address, credentials))

        def __getattr__(self, name: str) -> Any:
            return getattr(self._server, name)

    class _Aio:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        @staticmethod
        def server(*args: Any, **kwargs: Any) -> Any:
            return _SecurePorts(real.server(*args, **kwargs))

    grpc_server.aio = _Aio()  # type: ignore[assignment,unused-ignore]


def main() -> None:
    _patch_mlserver(max_body_bytes())
    try:
        overrides: dict[str, Any] = environment_overrides()
        tls = tls_files()
    except ValueError as exc:
        raise SystemExit(f"vatic: {exc}") from None
    if tls is not None:
        cert, key = tls
        overrides["_custom_rest_server_settings"] = {"ssl_certfile": cert, "ssl_keyfile": key}
        _patch_grpc_tls(cert, key)
    if overrides:
        _patch_settings(overrides)
    from mlserver.cli.main import main as mlserver_main

    mlserver_main()


if __name__ == "__main__":
    main()
