"""The low-code tier: :class:`VaticModel`, an MLServer runtime whose subclass only loads and predicts.

A subclass implements two hooks (and optionally a third)::

    class Scorer(VaticModel):
        def load_artifacts(self, path: Path) -> None:          # path: the verified artifact folder
            self.weights = load_file(path / "head.safetensors")

        def predict_batch(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            x = inputs["features"]                               # FP32 [N, K], already checked
            return {"score": x @ self.w}                         # every output has N rows

        def signature(self) -> Signature | None:                 # optional: what the loaded model takes
            return Signature(inputs=(TensorDecl("features", "FP32", (-1, self.k)),),
                             outputs=(TensorDecl("score", "FP32", (-1,)),))

and is named in ``model-settings.json`` (``implementation``), which
:mod:`vatic.serving.runtimes.repository` writes from the service config (``serving.tier: low-code``,
``serving.implementation``).

What the base class does, so that the subclass does not:

* **load** (:meth:`VaticModel.load`): resolves ``parameters.uri`` to the artifact folder (its parent when the
  URI names a file) and calls ``load_artifacts`` in a thread (the event loop keeps answering health checks);
  then fixes the signature: the runtime's own ``signature()`` checked against the inputs/outputs of the
  model settings (written from the service config) - a contradiction fails the load with
  :class:`~vatic.serving.core.contract.SignatureMismatch`, naming both sides. The model metadata
  (``GET /v2/models/<m>``) then lists exactly these inputs and outputs.
* **device**: ``parameters.extra.device`` (``auto`` | ``cpu`` | ``cuda`` | ``cuda:<i>``, from
  ``serving.device``). :attr:`VaticModel.device` is the resolved torch device: ``auto`` is ``cuda`` when a GPU
  is visible, else ``cpu`` (torch is imported only when the subclass reads ``device``); ``cuda`` without a
  visible GPU fails the load with :class:`~vatic.serving.core.contract.DeviceUnavailable`. Same code on
  both: only the device string differs.
* **predict** (:meth:`VaticModel.predict`): decodes the V2 request with
  :func:`~vatic.serving.core.contract.decode_inputs` (``BYTES`` -> ``str``, numbers -> NumPy arrays of the
  datatype, JSON ``null`` in floats -> NaN), after checking names, datatypes, shapes, sizes and the batch
  dimension against the declared inputs. Anything wrong - and any
  :class:`~vatic.serving.core.contract.BadInput` that ``predict_batch`` raises itself - becomes MLServer's
  ``InferenceError``: HTTP **400** ``{"error": "..."}``, gRPC ``INVALID_ARGUMENT``. A malformed body
  (unknown datatype, a shape that is not a list) never reaches the runtime: MLServer's FastAPI answers
  **422** ``{"detail": [...]}``. Other exceptions of ``predict_batch`` are the model's fault: 500.
* **outputs**: the request's ``outputs`` (unknown names are a 400), else every declared output, else every
  output ``predict_batch`` returned; each is checked (present, N rows, declared kind), cast to the declared
  datatype and encoded as V2 (``BYTES`` as UTF-8 with ``content_type: str``), shapes as returned (a label per
  row is ``[N]``).
* ``offload = True`` (class attribute) runs ``predict_batch`` in a worker thread: for heavy models (torch),
  so that one long batch does not stall the server's event loop. Light models keep it False: a thread hop
  costs more than their prediction.

A subclass can also be served without an MLServer process (:mod:`vatic.serving.runtimes.custom`): ``Scorer()`` builds
default settings, and the FastAPI tier calls the same hooks.

Server environment only (imports ``mlserver``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from mlserver import MLModel
from mlserver.errors import InferenceError
from mlserver.settings import ModelSettings
from mlserver.types import InferenceRequest, InferenceResponse, MetadataTensor, Parameters, ResponseOutput
from mlserver.utils import get_model_uri

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
)

__all__ = ["VaticModel", "artifact_folder", "raw_tensors", "to_metadata", "to_response_output"]


def _datatype(value: Any) -> str:
    """A V2 datatype as a plain string (an enum in the server process, a str in MLServer's workers)."""
    return str(getattr(value, "value", value))


def raw_tensors(payload: InferenceRequest) -> list[RawTensor]:
    """The inputs of an MLServer request as :class:`RawTensor` (data flat or nested, unchecked)."""
    tensors = []
    for request_input in payload.inputs:
        data = getattr(request_input.data, "root", request_input.data)
        tensors.append(
            RawTensor(request_input.name, _datatype(request_input.datatype), tuple(request_input.shape), data)
        )
    return tensors


def to_metadata(decl: TensorDecl) -> MetadataTensor:
    parameters = Parameters(content_type=decl.content_type) if decl.content_type else None
    return MetadataTensor(name=decl.name, datatype=decl.datatype, shape=list(decl.shape), parameters=parameters)


def to_response_output(name: str, array: Array, decl: TensorDecl | None = None) -> ResponseOutput:
    """One checked output array as a V2 output (BYTES as UTF-8 bytes: valid for REST and gRPC alike)."""
    if array.dtype.kind == "O":
        data: list[Any] = [str(item).encode("utf-8") for item in array.ravel().tolist()]
        datatype, content_type = "BYTES", "str"
    else:
        data = array.ravel().tolist()
        datatype = decl.datatype if decl is not None else datatype_of(array)
        content_type = "np"
    return ResponseOutput(
        name=name,
        datatype=datatype,
        shape=list(array.shape),
        data=data,
        parameters=Parameters(content_type=content_type),
    )


async def artifact_folder(settings: ModelSettings) -> Path:
    """The artifact folder of a model: ``parameters.uri`` made absolute (its parent when it names a file)."""
    uri = await get_model_uri(settings)
    return await asyncio.to_thread(_folder_of, Path(uri))


def _folder_of(path: Path) -> Path:
    return path.parent if path.is_file() else path


class VaticModel(MLModel):  # type: ignore[misc]  # MLModel is untyped where mypy runs (pipeline env)
    """Base of low-code runtimes: implement :meth:`load_artifacts` and :meth:`predict_batch` (see the module)."""

    #: run ``predict_batch`` in a worker thread (heavy models); False runs it on the event loop
    offload: ClassVar[bool] = False

    def __init__(self, settings: ModelSettings | None = None) -> None:
        if settings is None:  # served without MLServer (full-custom tier) or built in a test
            settings = ModelSettings(name=type(self).__name__.lower(), implementation=type(self))
        super().__init__(settings)
        extra = self.extra
        self.requested_device = str(extra.get("device") or "auto")
        self._device: str | None = None
        self._signature: Signature | None = None

    # --- the hooks a subclass implements -----------------------------------------------------------------

    def load_artifacts(self, path: Path) -> None:
        """Load the model from its verified artifact folder ``path`` (runs in a worker thread)."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_artifacts(path)")

    def predict_batch(self, inputs: dict[str, Array]) -> Mapping[str, Any]:
        """Predict one batch: ``inputs`` holds every declared input, decoded and checked, all with N rows.

        Return ``{output name: array with N rows}`` (NumPy arrays or lists; strings for BYTES outputs).
        Raise :class:`~vatic.serving.core.contract.BadInput` for input the model refuses (400).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement predict_batch(inputs)")

    def signature(self) -> Signature | None:
        """The inputs and outputs of the loaded model (called after :meth:`load_artifacts`); None: the settings'."""
        return None

    # --- what the base class provides --------------------------------------------------------------------

    @property
    def extra(self) -> dict[str, Any]:
        """``parameters.extra`` of the model settings (empty when absent)."""
        parameters = self.settings.parameters
        extra = getattr(parameters, "extra", None) if parameters is not None else None
        return dict(extra or {})

    @property
    def device(self) -> str:
        """The torch device this model runs on (``cpu``, ``cuda``, ``cuda:<i>``), resolved on first use."""
        if self._device is None:
            self._device = pick_device(self.requested_device)
        return self._device

    @device.setter
    def device(self, requested: str) -> None:
        self.requested_device = requested
        self._device = pick_device(requested)

    @property
    def model_signature(self) -> Signature | None:
        """The signature fixed at load (None before)."""
        return self._signature

    def fix_signature(self) -> Signature:
        """Resolve and publish the signature (runtime's own vs. settings'); called by :meth:`load`."""
        declared_inputs = [TensorDecl.from_dict(t) for t in self.settings.inputs or []]
        declared_outputs = [TensorDecl.from_dict(t) for t in self.settings.outputs or []]
        wanted = [str(name) for name in self.extra.get("outputs") or []]
        signature = resolve_signature(
            self.signature(), declared_inputs, declared_outputs, wanted_outputs=wanted, model=self.name
        )
        self._signature = signature
        self.inputs = [to_metadata(t) for t in signature.inputs]
        self.outputs = [to_metadata(t) for t in signature.outputs]
        return signature

    async def load(self) -> bool:
        if self.requested_device != "auto":
            self._device = pick_device(self.requested_device)  # an unusable explicit device fails the load now
        path = await artifact_folder(self.settings)
        await asyncio.to_thread(self.load_artifacts, path)
        self.fix_signature()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        signature = self._signature
        if signature is None:
            raise InferenceError(f"model {self.name} is not loaded")
        try:
            inputs = decode_inputs(raw_tensors(payload), signature.inputs)
            requested = select_outputs([o.name for o in payload.outputs or []], signature)
            if self.offload:
                result = await asyncio.to_thread(self.predict_batch, inputs)
            else:
                result = self.predict_batch(inputs)
        except BadInput as exc:
            raise InferenceError(f"model {self.name}: {exc}") from None
        outputs = check_outputs(result, signature, requested, batch_size(inputs))
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[to_response_output(name, array, signature.output(name)) for name, array in outputs.items()],
        )
