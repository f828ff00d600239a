"""Serve a full-custom app (``module:app``) with uvicorn, over TLS when the model server's certificate is given.

    python -m vatic.serving.runtimes.custom my_module:app --host 0.0.0.0 --port 8080

is ``uvicorn my_module:app --host 0.0.0.0 --port 8080``, plus TLS from the environment (files mounted from a
Kubernetes Secret, never arguments): with ``VATIC_MODEL_TLS_CERT_FILE`` (PEM certificate chain) and
``VATIC_MODEL_TLS_KEY_FILE`` (its key) the app is served over HTTPS, and the gateway reaches it at an
``https://`` endpoint, verified with ``VATIC_GATEWAY_MODEL_CA_FILE``. One without the other, or a pair that
does not load, is one line on stderr and exit status 2. (MLServer tiers: docs/decisions/0009-tls-on-model-
servers.md.)
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from vatic.schemas.errors import ConfigError

__all__ = ["CERT_ENV", "KEY_ENV", "main", "tls_options"]

CERT_ENV = "VATIC_MODEL_TLS_CERT_FILE"
KEY_ENV = "VATIC_MODEL_TLS_KEY_FILE"


def tls_options(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """uvicorn's ``ssl_certfile``/``ssl_keyfile`` from :data:`CERT_ENV`/:data:`KEY_ENV` (none: plain HTTP).

    Raises :class:`ConfigError` (one line) for one without the other or a pair that is not a PEM certificate
    and its key."""
    env = os.environ if environ is None else environ
    cert, key = env.get(CERT_ENV) or None, env.get(KEY_ENV) or None
    if cert is None and key is None:
        return {}
    if cert is None or key is None:
        given, missing = (CERT_ENV, KEY_ENV) if key is None else (KEY_ENV, CERT_ENV)
        raise ConfigError(f"{given} is set without {missing}: set both or neither")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise ConfigError(f"{CERT_ENV}={cert} and {KEY_ENV}={key} cannot be loaded ({reason})") from None
    return {"ssl_certfile": cert, "ssl_keyfile": key}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``APP [--host H] [--port P]``, serve until stopped; 2 after a configuration error."""
    parser = argparse.ArgumentParser(prog="python -m vatic.serving.runtimes.custom", description=__doc__.split("\n")[0])
    parser.add_argument("app", help="the ASGI app, module:attribute")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    try:
        tls = tls_options()
    except ConfigError as exc:
        print(f"vatic model server: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    uvicorn.run(args.app, host=args.host, port=args.port, log_level=args.log_level, **tls)
    return 0
