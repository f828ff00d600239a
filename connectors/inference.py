"""Async client of a V2 (Open Inference Protocol) model server over REST, written for MLServer 1.7.1.

One :class:`InferenceClient` per model server (base URL): one pooled ``httpx.AsyncClient`` with keep-alive,
bodies encoded and decoded with orjson. This module never imports ``mlserver``: it runs in the pipeline
environment, where MLServer cannot be installed. The wire types it speaks (:class:`Tensor`,
:class:`InferenceRequest`, :class:`InferenceResponse`, :class:`ModelMetadata`) live in
:mod:`vatic.connectors.v2.types`, apart from the transport as MLServer keeps its ``types`` apart from its
servers, and are re-exported here.

One call per micro-batch of events: the caller builds ONE request whose tensors have the batch dimension N first
(the core does, from the service config: :mod:`vatic.serving.core.tensors`) and cuts every output back into N
per-row values with :meth:`InferenceResponse.split`::

    async with InferenceClient("http://127.0.0.1:8080", deadline_s=2.0, max_concurrency=8) as client:
        amount = Tensor("amount", Datatype.FP64, (2,), [12.5, 80.0])
        response = await client.infer("fraud", InferenceRequest(inputs=(amount,)))
        rows = response.split(2)  # [{"predict": ...}, {"predict": ...}]

TLS: an ``https://`` base URL is verified - against ``verify`` when given (an ``ssl.SSLContext``, e.g.
:func:`tls_context` of the CA file ``VATIC_GATEWAY_MODEL_CA_FILE`` names, which is what the gateway passes),
else against the system's CAs. A certificate that does not verify is ``ModelServerUntrusted``, a configuration
error: retrying cannot make the server trusted.

Errors, sorted by what the caller does (all from :mod:`vatic.schemas.errors`):

=====================================================  ===========================  ============================
what happened                                          raised                       root
=====================================================  ===========================  ============================
connect refused/reset, protocol error, 5xx, 408, 429   ``ModelServerUnavailable``   ``Retryable`` (Retry-After)
400 ``{"error": "Model m is not ready yet."}``          ``ModelNotReady``            ``Retryable``
the call's deadline passed                            ``DeadlineExceeded``         ``Retryable``
404 on a model endpoint (unknown model or version)     ``ModelNotFound``            ``ConfigError``
https: the server's certificate does not verify        ``ModelServerUntrusted``     ``ConfigError``
401/403, 404/405 on a server endpoint, 1xx/3xx,        ``UnexpectedModelResponse``  ``ConfigError``
a 2xx body that is not V2, outputs without N rows
any other 4xx (400 bad input, 413, 422 ...)            ``ModelRejected``            ``DataError`` (dead-letter)
=====================================================  ===========================  ============================

What MLServer 1.7.1 answers (checked against a real server): unknown model -> 404 ``{"error": "Model m not
found"}``; unknown version -> 404 ``{"error": "Model m with version v not found"}``; a model registered but still
loading -> 400 ``{"error": "Model m is not ready yet."}`` (after an unload the model is gone: 404); a runtime's
``InferenceError`` -> 400 ``{"error": "..."}``; a malformed body or unknown datatype -> 422 ``{"detail": [...]}``;
any other exception in the model, **including input the model cannot use** (sklearn's "X has 3 features, but
... expecting 4", a shape/data size mismatch) -> 500 ``{"error": "builtins.ValueError: ..."}``. The last is
indistinguishable from an outage, so it is ``ModelServerUnavailable``: a caller whose retry budget runs out on
a 500 may bisect the batch to find a poisoned row. Model and server readiness: 200 or 400, empty bodies.

Decisions:

* Deadlines are overall, as in gRPC: ``deadline_s`` bounds the whole call - waiting for a concurrency slot and
  a pooled connection and the answer. No httpx per-phase timeouts are used.
* The client never retries: callers own retries (:class:`vatic.serving.core.retry.RetryPolicy`; the stream
  retries a batch within its budget, the REST path answers 503 at once).
* ``max_concurrency`` (an ``asyncio.Semaphore``) caps requests in flight; further calls wait for a slot, which
  is the backpressure a streaming operator needs.
* A 2xx that does not parse is a ``ConfigError``, not an outage: a truncated transfer already fails as a
  transport error, so a complete but wrong body means a wrong endpoint or a model whose contract differs.
* The client asks for uncompressed responses (``accept-encoding: identity``; MLServer gzips bodies over 500 B
  otherwise), ignores proxy environment variables, and is meant to be used from one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self, TypeVar

import httpx
import orjson

from vatic.connectors.http import cause_of, retry_after
from vatic.connectors.v2.types import (
    Datatype,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    Tensor,
    TensorMetadata,
)
from vatic.schemas.errors import (
    ConfigError,
    DeadlineExceeded,
    ModelNotFound,
    ModelNotReady,
    ModelRejected,
    ModelServerUnavailable,
    ModelServerUntrusted,
    UnexpectedModelResponse,
)

__all__ = [
    "BaseClient",
    "Datatype",
    "InferenceClient",
    "InferenceRequest",
    "InferenceResponse",
    "ModelClient",
    "ModelMetadata",
    "Tensor",
    "TensorMetadata",
    "check_model",
    "model_client",
    "tls_context",
    "untrusted_certificate",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_SERVICE = "model-server"
_BODY_LIMIT = 8192  # characters of an error body kept on the exception (dead-letter records)
_NOT_READY = "is not ready yet"  # MLServer's ModelNotReady message: "Model m[ with version v] is not ready yet."


# --- the client -------------------------------------------------------------------------------------------


class ModelClient(Protocol):
    """What the core asks of the client of a model server, whatever the transport: :class:`InferenceClient`
    (REST) or :class:`~vatic.connectors.inference_grpc.GrpcInferenceClient` (gRPC, raw tensors); same errors."""

    base_url: str
    deadline_s: float

    async def infer(
        self, model: str, request: InferenceRequest, *, version: str | None = None, deadline_s: float | None = None
    ) -> InferenceResponse: ...

    async def server_ready(self, *, deadline_s: float | None = None) -> bool: ...

    async def ready(self, model: str, *, version: str | None = None, deadline_s: float | None = None) -> bool: ...

    async def metadata(
        self, model: str, *, version: str | None = None, deadline_s: float | None = None
    ) -> ModelMetadata: ...

    async def close(self) -> None: ...


def model_client(
    url: str,
    *,
    deadline_s: float = 5.0,
    max_concurrency: int | None = None,
    verify: ssl.SSLContext | None = None,
) -> ModelClient:
    """The client of the model server at ``url``; the URL's scheme picks the transport: ``grpc://host:port`` (the
    server's gRPC port) is gRPC with raw tensors, ``http(s)://`` is REST (``verify``: see :class:`InferenceClient`).
    """
    if urllib.parse.urlsplit(url).scheme in ("grpc", "grpcs"):
        from vatic.connectors.inference_grpc import GrpcInferenceClient

        return GrpcInferenceClient(url, deadline_s=deadline_s, max_concurrency=max_concurrency)
    return InferenceClient(url, deadline_s=deadline_s, max_concurrency=max_concurrency, verify=verify)


class BaseClient:
    """What the REST and the gRPC client share: the default deadline, the cap on calls in flight (an
    ``asyncio.Semaphore``: further calls wait for a slot), ``async with``."""

    base_url: str

    def __init__(self, deadline_s: float, max_concurrency: int | None) -> None:
        _check_deadline(deadline_s)
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.deadline_s = deadline_s
        self.max_concurrency = max_concurrency
        self._slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        raise NotImplementedError

    def _budget(self, deadline_s: float | None) -> float:
        """The deadline of one call: ``deadline_s``, else the client's."""
        return self.deadline_s if deadline_s is None else _check_deadline(deadline_s)

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        if self._slots is None:
            yield
            return
        async with self._slots:
            yield

    def _deadline_error(self, what: str, budget: float) -> DeadlineExceeded:
        error = DeadlineExceeded(f"{what} did not finish within its deadline of {budget:g}s", deadline_s=budget)
        error.stage = "infer"
        return error


class InferenceClient(BaseClient):
    """Async V2 REST client of one model server; see the module docstring for the error contract.

    ``base_url`` is the server's root (``http://host:8080``, or a prefix behind a gateway). ``deadline_s`` is
    the default deadline of every call; ``max_concurrency`` caps calls in flight (None: only the connection
    pool limits them). The pool keeps at most
    ``max_keepalive_connections`` idle connections for ``keepalive_expiry_s`` (below uvicorn's 5 s, so that a
    connection the server is closing is not reused). ``headers`` are sent with every request. ``verify``: the
    ``ssl.SSLContext`` that verifies an ``https://`` server (default: the system's CAs, :func:`tls_context`).
    ``transport`` replaces httpx's pooled transport (the pool limits then are the transport's own). Use it as
    ``async with`` or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        deadline_s: float = 5.0,
        max_concurrency: int | None = None,
        max_connections: int = 100,
        max_keepalive_connections: int = 20,
        keepalive_expiry_s: float = 4.0,
        headers: Mapping[str, str] | None = None,
        verify: ssl.SSLContext | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(
                f"model server URL {base_url!r} is not an absolute http(s) URL (or grpc://host:port)", stage="infer"
            )
        super().__init__(deadline_s, max_concurrency)
        self.base_url = str(url).rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_keepalive_connections,
                keepalive_expiry=keepalive_expiry_s,
            ),
            timeout=None,  # noqa: S113 (every call runs under its own overall deadline: asyncio.timeout)
            headers={"accept-encoding": "identity", **(headers or {})},
            transport=transport,
            trust_env=False,
            verify=verify if verify is not None else (tls_context(None) if url.scheme == "https" else True),
        )

    async def close(self) -> None:
        """Close the pooled connections. Idempotent."""
        await self._http.aclose()

    # -- data plane -------------------------------------------------------------------------------------

    async def infer(
        self,
        model: str,
        request: InferenceRequest,
        *,
        version: str | None = None,
        deadline_s: float | None = None,
    ) -> InferenceResponse:
        """``POST /v2/models/{model}[/versions/{version}]/infer``; raises the errors of the module table."""
        path = f"{_model_path(model, version)}/infer"
        response = await self._call(
            "POST", path, body=request.to_json(), model=model, version=version, deadline_s=deadline_s
        )
        return self._parse(response, InferenceResponse.from_json)

    # -- health and metadata ----------------------------------------------------------------------------

    async def server_ready(self, *, deadline_s: float | None = None) -> bool:
        """``GET /v2/health/ready``: True when every model is ready (MLServer: 200, else 400)."""
        return await self._flag("/v2/health/ready", None, None, deadline_s)

    async def ready(self, model: str, *, version: str | None = None, deadline_s: float | None = None) -> bool:
        """``GET /v2/models/{model}/ready``: True when it can infer, False while loading.

        An unknown model raises :class:`ModelNotFound` (a configuration error, not "not ready").
        """
        return await self._flag(f"{_model_path(model, version)}/ready", model, version, deadline_s)

    async def metadata(
        self, model: str, *, version: str | None = None, deadline_s: float | None = None
    ) -> ModelMetadata:
        """``GET /v2/models/{model}``: name, platform, versions, inputs and outputs."""
        response = await self._call(
            "GET", _model_path(model, version), model=model, version=version, deadline_s=deadline_s
        )
        return self._parse(response, ModelMetadata.from_json)

    # -- model repository (MLServer's extension of V2) ---------------------------------------------------

    async def repository_load(self, model: str, *, deadline_s: float | None = None) -> None:
        """``POST /v2/repository/models/{model}/load``: load every version of ``model`` the server's repository
        folder holds now and unload the versions it no longer holds (MLServer 1.7.1 reloads the ones it already
        serves, each swapped in once loaded). A version that fails to load raises :class:`ModelRejected` (400)
        or :class:`ModelServerUnavailable` (5xx) with the server's reason."""
        await self._call(
            "POST",
            f"/v2/repository/models/{urllib.parse.quote(model, safe='')}/load",
            body=b"{}",
            model=model,
            deadline_s=deadline_s,
        )

    # -- machinery --------------------------------------------------------------------------------------

    async def _flag(self, path: str, model: str | None, version: str | None, deadline_s: float | None) -> bool:
        response = await self._call("GET", path, model=model, version=version, deadline_s=deadline_s, flag=True)
        if response.status_code != 200:
            return False
        # KServe-style servers answer {"ready": bool} / {"live": bool}; MLServer answers an empty body
        with contextlib.suppress(orjson.JSONDecodeError):
            body = orjson.loads(response.content) if response.content else None
            if isinstance(body, dict):
                for key in ("ready", "live"):
                    if isinstance(body.get(key), bool):
                        return bool(body[key])
        return True

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        model: str | None = None,
        version: str | None = None,
        deadline_s: float | None = None,
        flag: bool = False,
    ) -> httpx.Response:
        """One attempt under one overall deadline. ``flag``: 400/503 are answers."""
        budget = self._budget(deadline_s)
        timeout = asyncio.timeout(budget)
        try:
            async with timeout, self._slot():
                return await self._attempt(method, path, body=body, model=model, version=version, flag=flag)
        except TimeoutError as exc:
            if not timeout.expired():
                raise
            raise self._deadline_error(f"{method} {self.base_url}{path}", budget) from exc

    async def _attempt(
        self, method: str, path: str, *, body: bytes | None, model: str | None, version: str | None, flag: bool
    ) -> httpx.Response:
        headers = {"content-type": "application/json"} if body is not None else None
        try:
            response = await self._http.request(method, path, content=body, headers=headers)
        except httpx.HTTPError as exc:  # connect/read/write errors, resets, protocol errors, bad encodings
            untrusted = untrusted_certificate(exc)
            if untrusted is not None:
                reason = untrusted.verify_message or untrusted
                raise ModelServerUntrusted(
                    f"model server {self.base_url}: its TLS certificate does not verify ({reason}): trust the CA "
                    "that signed it (the gateway: VATIC_GATEWAY_MODEL_CA_FILE) or fix the certificate",
                    url=self.base_url,
                ) from exc
            raise ModelServerUnavailable(
                f"model server {self.base_url} unreachable ({method} {path}): {type(exc).__name__}: {exc}",
                service=_SERVICE,
            ) from exc
        status = response.status_code
        if 200 <= status < 300 or (flag and status in (400, 503)):
            return response
        raise self._error(response, model, version)

    def _error(self, response: httpx.Response, model: str | None, version: str | None) -> Exception:
        status, text = response.status_code, response.text[:_BODY_LIMIT]
        reason = _error_text(response) or response.reason_phrase
        where = f"{response.request.method} {response.request.url}"
        wait = retry_after(response.headers.get("retry-after"))
        if status >= 500 or status in (408, 429):
            return ModelServerUnavailable(
                f"model server failed ({status}) on {where}: {reason}",
                service=_SERVICE,
                retry_after=wait,
                status=status,
                body=reason,
            )
        if status == 400 and model is not None and _NOT_READY in reason:
            return ModelNotReady(f"model {model!r} is not ready: {reason}", model=model, retry_after=wait)
        if status == 404 and model is not None:
            named = f"model {model!r}" + (f" version {version!r}" if version is not None else "")
            return ModelNotFound(
                f"{named} is not on the model server {self.base_url}: {reason}", model=model, version=version
            )
        if status in (401, 403, 404, 405) or status < 400:
            return UnexpectedModelResponse(
                f"{where} answered {status} {response.reason_phrase}: {reason} - check the model server URL "
                "and credentials",
                status=status,
                body=text,
            )
        return ModelRejected(f"model {model!r} rejected the request ({status}): {reason}", status=status, body=text)

    @staticmethod
    def _parse(response: httpx.Response, parse: Callable[[bytes], _T]) -> _T:
        try:
            result = parse(response.content)
        except ValueError as exc:
            raise UnexpectedModelResponse(
                f"{response.request.method} {response.request.url} answered {response.status_code} with a body "
                f"that is not what a V2 server sends: {exc}",
                status=response.status_code,
                body=response.text[:_BODY_LIMIT],
            ) from exc
        return result


def tls_context(ca_file: str | Path | None) -> ssl.SSLContext:
    """The context that verifies model servers: certificates signed by the CAs of ``ca_file`` (PEM), or by the
    system's CAs when None; host names are checked. A file that cannot be read or holds no CA certificate is a
    :class:`ConfigError` of one line."""
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise ConfigError(
            f"model CA file {ca_file}: cannot be used as a PEM CA bundle ({reason}): mount the CA certificate there",
            stage="infer",
        ) from None


def untrusted_certificate(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind an httpx error (its causes are followed), if that is what it
    is; a refused connection, a reset or any other TLS failure is not."""
    return cause_of(exc, ssl.SSLCertVerificationError)


def _check_deadline(deadline_s: float) -> float:
    if not (deadline_s > 0 and math.isfinite(deadline_s)):
        raise ValueError(f"deadline_s must be a positive number of seconds, got {deadline_s}")
    return deadline_s


def check_model(model: str) -> str:
    """``model``, refused with ``ValueError`` when empty (a caller's bug, not a server's answer)."""
    if not model:
        raise ValueError("model name is empty")
    return model


def _model_path(model: str, version: str | None) -> str:
    check_model(model)
    path = f"/v2/models/{urllib.parse.quote(model, safe='')}"
    if version is not None:
        path += f"/versions/{urllib.parse.quote(version, safe='')}"
    return path


def _error_text(response: httpx.Response) -> str:
    """MLServer's ``{"error": ...}``, FastAPI's ``{"detail": ...}``, or the start of a non-JSON body."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return response.text[:300].strip()
    if isinstance(body, dict):
        for key in ("error", "detail", "message"):
            if key in body:
                value = body[key]
                return value if isinstance(value, str) else orjson.dumps(value).decode()[:1000]
    return response.text[:300].strip()
