"""``vatic gateway``: serve the REST gateway (uvicorn, one process, uvloop + httptools).

TLS comes from the environment, never from arguments: ``VATIC_GATEWAY_TLS_CERT_FILE`` + ``_KEY_FILE`` serve
REST (and the gRPC door) over TLS, ``VATIC_GATEWAY_TLS_CLIENT_CA_FILE`` also requires client certificates
(mTLS). Per-client credentials: ``VATIC_GATEWAY_CLIENTS_FILE`` (see :mod:`vatic.serving.gateway.auth`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vatic.schemas.errors import ConfigError


def gateway(
    service: Annotated[
        list[Path] | None,
        typer.Option("--service", "-s", help="service folder (repeatable); default: VATIC_GATEWAY_SERVICES"),
    ] = None,
    env: Annotated[str | None, typer.Option(help="environment overlay (staging, production); default: local")] = None,
    host: Annotated[str | None, typer.Option(help="bind address; default 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="port; default 8000")] = None,
    grpc_port: Annotated[
        int | None, typer.Option(help="also serve the gRPC door on this port (0: a free one); default: no gRPC door")
    ] = None,
    endpoint: Annotated[list[str] | None, typer.Option(help="SERVICE=URL of a model server (repeatable)")] = None,
    redis_url: Annotated[str | None, typer.Option(help="read features from this Redis")] = None,
) -> None:
    """Serve POST /v1/services/{service}/predict, the V2 pass-through, health, metrics and Swagger (/docs).

    TLS and credentials come from VATIC_GATEWAY_* variables (TLS_CERT_FILE, TLS_KEY_FILE, TLS_CLIENT_CA_FILE,
    CLIENTS_FILE, AUTH_TOKEN, MODEL_CA_FILE).
    """
    import uvicorn

    from vatic.serving.gateway import GatewaySettings, create_app

    overrides: dict[str, object] = {}
    if service:
        overrides["services"] = [p.resolve() for p in service]
    if env:
        overrides["environment"] = env
    if host:
        overrides["host"] = host
    if port:
        overrides["port"] = port
    if grpc_port is not None:
        overrides["grpc_port"] = grpc_port
    if redis_url:
        overrides["redis_url"] = redis_url
    if endpoint:
        pairs = {}
        for item in endpoint:
            name, sep, url = item.partition("=")
            if not sep or not url:
                raise ConfigError(
                    f"--endpoint {item!r}: expected SERVICE=URL, e.g. fraud-detector=http://127.0.0.1:8090"
                )
            pairs[name] = url
        overrides["endpoints"] = pairs
    settings = GatewaySettings(**overrides)  # type: ignore[arg-type]
    if not settings.services:
        raise ConfigError("no services to serve: pass --service <folder> or set VATIC_GATEWAY_SERVICES")
    tls = settings.uvicorn_tls()  # a half-configured or unreadable pair: one line, before anything starts
    app = create_app(settings)
    scheme = "https" if tls else "http"
    mutual = " (client certificates required)" if "ssl_ca_certs" in tls else ""
    typer.echo(f"vatic gateway on {scheme}://{settings.host}:{settings.port}{mutual} (docs: /docs)", err=True)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="on",
        **tls,
    )
