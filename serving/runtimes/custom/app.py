"""The full-custom tier: a FastAPI app that serves predictors over the same V2 REST endpoints as MLServer.

For models whose serving needs more than a runtime class - extra routes, custom middleware, a server without
MLServer - a service sets ``serving.layer: fastapi``, ``serving.tier: full-custom`` and
``serving.entrypoint: "my_module:app"``, where ``my_module`` builds the app::

    from vatic.serving.runtimes.custom import ServedModel, create_app

    app = create_app([ServedModel("categorizer", MyModel(), Path("/models/categorizer"), device="auto")])

    @app.get("/explain/{product_id}")          # room for routes of your own
    async def explain(product_id: str) -> dict[str, str]: ...

A predictor is any object with ``load_artifacts(path)`` and ``predict_batch(inputs) -> {output: array}``
(:class:`ModelHooks`), optionally ``signature()``, a settable ``device`` and a class attribute ``offload`` - the
hooks of :class:`~vatic.serving.runtimes.base.VaticModel`, so a low-code runtime
(e.g. ``ProductCategorizer()``) is served here unchanged, without an MLServer process.

Endpoints (the V2 REST API as MLServer 1.7.1 answers it, so the same clients work against both):

===============================================  ============================================================
``GET  /v2/health/live``                         200 while the process runs
``GET  /v2/health/ready``                        200 when every model is loaded, else 400
``GET  /v2``                                     server metadata
``GET  /v2/models/{m}[/versions/{v}]``           model metadata: name, versions, platform, inputs, outputs
``GET  /v2/models/{m}[/versions/{v}]/ready``     200 / 400; 404 ``{"error": ...}`` for an unknown model
``POST /v2/models/{m}[/versions/{v}]/infer``     inference
``GET  /docs``, ``GET /openapi.json``            Swagger UI and the OpenAPI document
===============================================  ============================================================

Errors, always a JSON body: a request the model's declared inputs refuse (:mod:`vatic.serving.core.contract`)
or a :class:`~vatic.serving.core.contract.BadInput` from ``predict_batch`` -> **400** ``{"error": ...}``; a
body that is not V2 -> **422** ``{"detail": [...]}`` (FastAPI's validation, as MLServer); an unknown model or
version -> **404** ``{"error": "Model m not found"}``; a model still loading -> 400 ``{"error": "Model m is not
ready yet."}`` (MLServer's words: vatic's client maps them to ``ModelNotReady``); anything else the predictor
raises -> **500** ``{"error": "<exception class>: <message>"}``.

Loading: every model is loaded in the app's lifespan (``load_artifacts`` in a thread) before the server accepts
requests; a model that fails to load fails the start-up, as in MLServer. The device is chosen as in the
low-code tier (:func:`~vatic.serving.core.contract.pick_device`). ``predict_batch`` runs in a worker
thread unless the predictor's class sets ``offload = False``.

Runs in either environment (FastAPI, NumPy); serve it with uvicorn (installed with MLServer in the server env),
or with ``python -m vatic.serving.runtimes.custom my_module:app --host 0.0.0.0 --port 8080``, which also serves
TLS when ``VATIC_MODEL_TLS_CERT_FILE`` and ``VATIC_MODEL_TLS_KEY_FILE`` name a certificate and its key
(:mod:`vatic.serving.runtimes.custom.serve`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import ORJSONResponse, Response

from vatic.connectors.v2 import schema as wire
from vatic.serving.core.contract import (
    Array,
    BadInput,
    RawTensor,
    Signature,
    TensorDecl,
    batch_size,
    check_outputs,
    datatype_of,
    decode_inputs,
    pick_device,
    resolve_signature,
    select_outputs,
    wire_data,
)

__all__ = ["ModelFailed", "ModelHooks", "ServedModel", "V2Error", "create_app"]

log = logging.getLogger("vatic.serving.runtimes.custom")

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": wire.ErrorResponse, "description": "bad input, or the model is not ready"},
    404: {"model": wire.ErrorResponse, "description": "unknown model or version"},
    500: {"model": wire.ErrorResponse, "description": "the model failed"},
}


@runtime_checkable
class ModelHooks(Protocol):
    """What the app serves: the two hooks of a low-code runtime."""

    def load_artifacts(self, path: Path) -> None:
        """Load from the artifact folder ``path``."""

    def predict_batch(self, inputs: dict[str, Array]) -> Mapping[str, Any]:
        """``{output: array with N rows}`` for checked, decoded inputs with N rows."""


class V2Error(Exception):
    """An error answered as ``{"error": message}`` with ``status`` (raise it from routes of your own too)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ModelFailed(RuntimeError):
    """A model could not be loaded at start-up (the message names the model and the cause)."""


@dataclass
class ServedModel:
    """One model of the app: its predictor, artifact folder and what the service config declares.

    ``inputs``/``outputs`` are checked against the predictor's own ``signature()`` at load (as in the low-code
    tier); ``wanted_outputs`` are the outputs the service reads (they must exist). ``version`` None: the
    model answers under any version path segment but reports none.
    """

    name: str
    predictor: ModelHooks
    path: Path
    version: str | None = None
    device: str = "auto"
    inputs: Sequence[TensorDecl] = ()
    outputs: Sequence[TensorDecl] = ()
    wanted_outputs: Sequence[str] = ()
    platform: str = ""
    versions: Sequence[str] = ()
    signature: Signature | None = field(default=None, init=False)

    @property
    def ready(self) -> bool:
        return self.signature is not None

    @classmethod
    def from_folder(cls, folder: str | Path, predictor: ModelHooks) -> ServedModel:
        """A model described by the ``vatic-model.json`` (or ``model-settings.json``) that
        :func:`vatic.serving.runtimes.repository.write_repository` wrote into ``folder``."""
        folder = Path(folder)
        for name in ("vatic-model.json", "model-settings.json"):
            if (folder / name).is_file():
                settings = json.loads((folder / name).read_text(encoding="utf-8"))
                break
        else:
            raise FileNotFoundError(
                f"{folder} has no vatic-model.json (write it with vatic.serving.runtimes.repository)"
            )
        parameters = settings.get("parameters") or {}
        extra = parameters.get("extra") or {}
        uri = parameters.get("uri") or "."
        return cls(
            name=settings.get("name") or folder.name,
            predictor=predictor,
            path=(folder / uri).resolve(),
            version=parameters.get("version"),
            device=str(extra.get("device") or "auto"),
            inputs=[TensorDecl.from_dict(t) for t in settings.get("inputs") or []],
            outputs=[TensorDecl.from_dict(t) for t in settings.get("outputs") or []],
            wanted_outputs=[str(n) for n in extra.get("outputs") or []],
            platform=str(settings.get("platform") or ""),
            versions=[str(v) for v in settings.get("versions") or []],
        )

    def load(self) -> None:
        """Pick the device, load the artifacts, fix the signature (blocking: call it in a thread)."""
        resolved = pick_device(self.device)
        with contextlib.suppress(AttributeError):  # a predictor without a (settable) device
            self.predictor.device = resolved  # type: ignore[attr-defined]
        self.predictor.load_artifacts(self.path)
        own_signature = getattr(self.predictor, "signature", None)
        own = own_signature() if callable(own_signature) else None
        self.signature = resolve_signature(
            own, self.inputs, self.outputs, wanted_outputs=self.wanted_outputs, model=self.name
        )

    def metadata(self) -> dict[str, Any]:
        signature = self.signature or Signature(tuple(self.inputs), tuple(self.outputs))
        return {
            "name": self.name,
            "versions": list(self.versions),
            "platform": self.platform,
            "inputs": [t.to_dict() for t in signature.inputs],
            "outputs": [t.to_dict() for t in signature.outputs],
        }


def _error(status: int, message: str) -> ORJSONResponse:
    return ORJSONResponse({"error": message}, status_code=status)


def create_app(
    models: Sequence[ServedModel],
    *,
    title: str = "vatic model server",
    version: str = "0.1.0",
    routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """The V2 app serving ``models`` (see the module docstring); add routes to it as to any FastAPI app."""
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique, got {names}")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for model in models:
            try:
                await asyncio.to_thread(model.load)
            except Exception as exc:
                raise ModelFailed(f"model {model.name} failed to load: {type(exc).__name__}: {exc}") from exc
            log.info("model %s loaded from %s", model.name, model.path)
        yield

    app = FastAPI(
        title=title,
        version=version,
        description="V2 (Open Inference Protocol) REST endpoints, as MLServer serves them.",
        default_response_class=ORJSONResponse,
        lifespan=lifespan,
    )

    @app.exception_handler(V2Error)
    async def _v2_error(_: Request, exc: V2Error) -> ORJSONResponse:
        return _error(exc.status, exc.message)

    app.include_router(_V2Routes(models, title, version).router())
    for router in routers:
        app.include_router(router)
    return app


class _V2Routes:
    """The ``/v2`` endpoints over a fixed set of models."""

    def __init__(self, models: Sequence[ServedModel], title: str, version: str) -> None:
        self.models = list(models)
        self.registry = {m.name: m for m in models}
        self.title = title
        self.version = version

    def find(self, name: str, model_version: str | None) -> ServedModel:
        model = self.registry.get(name)
        if model is None:
            raise V2Error(404, f"Model {name} not found")
        if model_version is not None and model.version is not None and model_version != model.version:
            raise V2Error(404, f"Model {name} with version {model_version} not found")
        return model

    async def live(self) -> Response:
        return Response(status_code=200)

    async def ready(self) -> Response:
        return Response(status_code=200 if all(m.ready for m in self.models) else 400)

    async def server_metadata(self) -> dict[str, Any]:
        return {"name": self.title, "version": self.version, "extensions": []}

    async def model_metadata(self, name: str, model_version: str | None) -> dict[str, Any]:
        return self.find(name, model_version).metadata()

    async def model_ready(self, name: str, model_version: str | None) -> Response:
        return Response(status_code=200 if self.find(name, model_version).ready else 400)

    async def infer(self, name: str, model_version: str | None, request: wire.InferenceRequest) -> ORJSONResponse:
        model = self.find(name, model_version)
        signature = model.signature
        if signature is None:
            raise V2Error(400, f"Model {name} is not ready yet.")
        raw = [RawTensor(i.name, i.datatype, tuple(i.shape), i.data) for i in request.inputs]
        try:
            inputs = decode_inputs(raw, signature.inputs)
            requested = select_outputs([o.name for o in request.outputs or []], signature)
            if getattr(type(model.predictor), "offload", True):
                result = await asyncio.to_thread(model.predictor.predict_batch, inputs)
            else:
                result = model.predictor.predict_batch(inputs)
            outputs = check_outputs(result, signature, requested, batch_size(inputs))
        except BadInput as exc:
            raise V2Error(400, f"model {name}: {exc}") from None
        except Exception as exc:
            log.exception("model %s failed on a request", name)
            raise V2Error(500, f"{type(exc).__module__}.{type(exc).__name__}: {exc}") from None
        return ORJSONResponse(
            {
                "model_name": name,
                "model_version": model.version,
                "id": request.id or str(uuid.uuid4()),
                "parameters": {},
                "outputs": [_output(n, a, signature.output(n)) for n, a in outputs.items()],
            }
        )

    def router(self) -> APIRouter:
        v2 = APIRouter(prefix="/v2", tags=["V2 inference protocol"])
        v2.add_api_route("/health/live", self.live, methods=["GET"], summary="Server liveness")
        v2.add_api_route(
            "/health/ready",
            self.ready,
            methods=["GET"],
            summary="Server readiness: every model loaded",
            responses={400: {"description": "not ready"}},
        )
        v2.add_api_route(
            "",
            self.server_metadata,
            methods=["GET"],
            summary="Server metadata",
            response_model=wire.MetadataServerResponse,
        )
        for prefix in ("/models/{name}", "/models/{name}/versions/{model_version}"):
            versioned = "model_version" in prefix
            suffix = " (one version)" if versioned else ""
            v2.add_api_route(
                prefix,
                _bind(self.model_metadata, versioned),
                methods=["GET"],
                summary="Model metadata" + suffix,
                response_model=wire.MetadataModelResponse,
                responses={404: _ERRORS[404]},
            )
            v2.add_api_route(
                prefix + "/ready",
                _bind(self.model_ready, versioned),
                methods=["GET"],
                summary="Model readiness" + suffix,
                responses={400: {"description": "not ready"}, 404: _ERRORS[404]},
            )
            v2.add_api_route(
                prefix + "/infer",
                _bind_infer(self.infer, versioned),
                methods=["POST"],
                summary="Inference" + suffix,
                response_model=wire.InferenceResponse,
                responses=_ERRORS,
            )
        return v2


def _bind(handler: Any, versioned: bool) -> Any:
    """A route function with the path parameters FastAPI should see (with or without a version)."""
    if versioned:

        async def with_version(name: str, model_version: str) -> Any:
            return await handler(name, model_version)

        return with_version

    async def without_version(name: str) -> Any:
        return await handler(name, None)

    return without_version


def _bind_infer(handler: Any, versioned: bool) -> Any:
    if versioned:

        async def infer_version(name: str, model_version: str, request: wire.InferenceRequest) -> Any:
            return await handler(name, model_version, request)

        return infer_version

    async def infer_model(name: str, request: wire.InferenceRequest) -> Any:
        return await handler(name, None, request)

    return infer_model


def _output(name: str, array: Array, decl: TensorDecl | None) -> dict[str, Any]:
    datatype = decl.datatype if decl is not None else datatype_of(array)
    return {
        "name": name,
        "shape": list(array.shape),
        "datatype": datatype,
        "parameters": {"content_type": "str" if datatype == "BYTES" else "np"},
        "data": wire_data(array),
    }
