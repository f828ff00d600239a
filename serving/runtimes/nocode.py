"""The no-code runtimes: MLServer's sklearn / xgboost / lightgbm runtimes, with vatic's input contract.

:class:`SKLearnModel`, :class:`XGBoostModel` and :class:`LightGBMModel` subclass ``mlserver_sklearn.SKLearnModel``,
``mlserver_xgboost.XGBoostModel`` and ``mlserver_lightgbm.LightGBMModel``: loading, prediction and output
encoding are MLServer's. What they add (the settings writer names them unless ``validate_inputs=False``):

* **Input checks** before the model sees anything: the declared inputs of ``model-settings.json`` (written from
  ``model.inputs``) are enforced with :func:`vatic.serving.core.contract.decode_inputs`, so a wrong name,
  datatype, width or size is a **400** ``{"error": ...}`` - MLServer's own runtimes hand it to the library and
  answer 500 (``X has 3 features, but LogisticRegression is expecting 4``).
* **Several inputs, one matrix**: the inputs are joined column-wise in declared order (``[N]`` inputs count as
  one column), which is the feature order of the columns listed in the service config. A request or input with
  content type ``pd`` keeps MLServer's pandas decoding (a DataFrame with named columns), after the checks.
* **An empty batch** (every input of shape ``[0, ...]``) is answered 200 with empty outputs, as stock MLServer
  answers it, after the same checks as any batch (the libraries fail on a matrix of zero rows).
* **Outputs**: a request that names no outputs gets every output the service config reads
  (``parameters.extra.outputs``), e.g. ``predict_proba``, not only ``predict``. At load the outputs' metadata
  (datatype, shape) is worked out by predicting one all-zero row, and the model's feature count is checked
  against the declared inputs (a mismatch fails the load, naming both numbers).
* **Threads** (LightGBM, XGBoost): one prediction thread per request unless ``parameters.extra.threads`` says
  otherwise. The libraries default to every core through OpenMP, which for the single rows and small batches a
  streaming job sends costs far more in thread wake-ups than it gains - and with several inference workers the
  thread pools oversubscribe the cores (why: docs/decisions/0006-parallel-workers.md).
* **skops** (sklearn): a ``.skops`` file is loaded with ``skops.io`` - no pickle, so no ``allow_pickle``. Types
  skops does not trust by default are refused unless listed in ``parameters.extra.skops_trusted``.
* **pickles** (sklearn ``.joblib``/``.pkl``/``.pickle``): unpickling runs code, so the file's sha256 is checked
  right before it is loaded against ``parameters.extra.artifact.pickles`` (written by the settings writer from
  the registry fetch that verified it): a pickle without a pin there, or whose bytes changed since, fails the load
  with ``ArtifactRejected`` (``unpinned_pickle`` / ``digest_mismatch``) and nothing is unpickled.

Server environment only (imports ``mlserver`` and the model libraries).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import mlserver_sklearn
import numpy as np
from mlserver.codecs import NumpyCodec, NumpyRequestCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse, RequestOutput, ResponseOutput
from mlserver.utils import get_model_uri
from mlserver_sklearn.sklearn import WELLKNOWN_MODEL_FILENAMES as SKLEARN_FILES

from vatic.connectors.registry.digest import file_sha256, is_pickle
from vatic.schemas.errors import ArtifactRejected
from vatic.serving.core.contract import (
    Array,
    BadInput,
    Signature,
    SignatureMismatch,
    TensorDecl,
    decode_inputs,
)
from vatic.serving.runtimes.base import raw_tensors, to_metadata

__all__ = ["LightGBMModel", "SKLearnModel", "XGBoostModel", "feature_matrix"]

# imported by name: the pipeline environment, where mypy runs, has neither (nor stubs for them)
_mlserver_xgboost: Any = importlib.import_module("mlserver_xgboost")
_mlserver_lightgbm: Any = importlib.import_module("mlserver_lightgbm")


def feature_matrix(inputs: dict[str, Array]) -> Array:
    """The decoded inputs joined column-wise in their order: ``[N, sum of widths]`` (``[N]`` is one column)."""
    columns = [array.reshape(array.shape[0], -1) if array.ndim else array.reshape(1, 1) for array in inputs.values()]
    return columns[0] if len(columns) == 1 else np.concatenate(columns, axis=1)


def _width(decl: TensorDecl) -> int | None:
    """Columns one declared input contributes to the feature matrix (None: not fixed)."""
    width = 1
    for size in decl.shape[1:]:
        if size == -1:
            return None
        width *= size
    return width


class _Validating:
    """Mixin over an MLServer runtime: checks, joins and defaults (see the module docstring)."""

    _vatic_signature: Signature | None = None

    @property
    def _extra(self) -> dict[str, Any]:
        parameters = self.settings.parameters  # type: ignore[attr-defined]
        return dict(getattr(parameters, "extra", None) or {})

    def _feature_count(self) -> int | None:
        model: Any = getattr(self, "_model", None)
        count = getattr(model, "n_features_in_", None)
        if count is None and hasattr(model, "num_feature"):
            count = model.num_feature()
        return int(count) if count is not None else None

    async def load(self) -> bool:
        loaded = await self._load_model()
        self._fix_signature()
        return loaded

    async def _load_model(self) -> bool:
        """Load the model file (MLServer's runtime does)."""
        loaded: bool = await super().load()  # type: ignore[misc]
        return loaded

    def _fix_signature(self) -> None:
        declared = [TensorDecl.from_dict(t) for t in self.settings.inputs or []]  # type: ignore[attr-defined]
        name = self.settings.name  # type: ignore[attr-defined]
        widths = [_width(decl) for decl in declared]
        expected = self._feature_count()
        if declared and expected is not None and None not in widths and not self._pandas_model():
            total = sum(w for w in widths if w is not None)
            if total != expected:
                raise SignatureMismatch(
                    f"model {name}: the service config's inputs give {total} feature column(s) "
                    f"({', '.join(d.describe() for d in declared)}) but the model was trained on {expected}; "
                    "make model.inputs list the training columns"
                )
        outputs = list(self.settings.outputs or []) or self._probe_outputs(declared, expected)  # type: ignore[attr-defined]
        self._vatic_signature = Signature(tuple(declared), tuple(TensorDecl.from_dict(t) for t in outputs))
        if outputs:
            self.outputs = outputs

    def _pandas_model(self) -> bool:
        parameters = self.settings.parameters  # type: ignore[attr-defined]
        if parameters is not None and parameters.content_type == "pd":
            return True
        return any(t.parameters and t.parameters.content_type == "pd" for t in self.settings.inputs or [])  # type: ignore[attr-defined]

    def _threads(self) -> int:
        """Prediction threads of tree models: ``parameters.extra.threads``, default 1 (see the module docstring)."""
        return max(1, int(self._extra.get("threads") or 1))

    def _wanted_outputs(self) -> list[str]:
        return [str(name) for name in self._extra.get("outputs") or []]

    def _probe_outputs(self, declared: list[TensorDecl], features: int | None) -> list[Any]:
        """Output metadata from predicting one all-zero row (none when that is not possible)."""
        model = getattr(self, "_model", None)
        if model is None or features is None or self._pandas_model():
            return []
        row = np.zeros((1, features), dtype=np.float64)
        metadata = []
        for name in self._wanted_outputs() or ["predict"]:
            method = getattr(model, name, None)
            if method is None:
                raise SignatureMismatch(f"model {self.settings.name}: the model has no {name}() for output {name!r}")  # type: ignore[attr-defined]
            try:
                encoded = NumpyCodec.encode_output(name, np.asarray(method(row)))
            except Exception:  # a model that cannot predict zeros just has no output metadata
                return []
            datatype = str(getattr(encoded.datatype, "value", encoded.datatype))
            metadata.append(to_metadata(TensorDecl(name, datatype, (-1, *encoded.shape[1:]))))
        return metadata

    def decode_request(self, inference_request: InferenceRequest, default_codec: Any = None) -> Any:
        """The checked inputs as one feature matrix (pandas content type: MLServer's DataFrame after the checks)."""
        signature = self._vatic_signature
        if signature is None or not signature.inputs:
            return super().decode_request(inference_request, default_codec)  # type: ignore[misc]
        try:
            inputs = decode_inputs(raw_tensors(inference_request), signature.inputs)
        except BadInput as exc:
            raise InferenceError(f"model {self.settings.name}: {exc}") from None  # type: ignore[attr-defined]
        parameters = inference_request.parameters
        if self._pandas_model() or (parameters is not None and parameters.content_type == "pd"):
            return super().decode_request(inference_request, default_codec)  # type: ignore[misc]
        return feature_matrix(inputs)

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        empty = self._empty_answer(payload)
        if empty is not None:
            return empty
        if not payload.outputs and type(self)._answers_outputs:
            wanted = self._wanted_outputs()
            if wanted:
                payload.outputs = [RequestOutput(name=name) for name in wanted]
        response: InferenceResponse = await super().predict(payload)  # type: ignore[misc]
        return response

    def _empty_answer(self, payload: InferenceRequest) -> InferenceResponse | None:
        """The answer to a batch of zero rows (every input's first dimension 0, checked as any request is): empty
        outputs of the declared datatypes and shapes, as stock MLServer answers; the libraries themselves fail on
        an empty matrix. None for any other request."""
        tensors = raw_tensors(payload)
        if not tensors or any(not t.shape or t.shape[0] != 0 for t in tensors):
            return None
        signature = self._vatic_signature
        if signature is not None and signature.inputs:  # the same checks (names, datatypes, widths) as any batch
            try:
                decode_inputs(tensors, signature.inputs)
            except BadInput as exc:
                raise InferenceError(f"model {self.settings.name}: {exc}") from None  # type: ignore[attr-defined]
        declared = {d.name: d for d in (signature.outputs if signature else ())}
        names = [o.name for o in payload.outputs or []] or self._wanted_outputs() or ["predict"]
        if not type(self)._answers_outputs:
            names = ["predict"]
        outputs = []
        for name in names:
            decl = declared.get(name)
            rest = [max(0, d) for d in decl.shape[1:]] if decl else []
            outputs.append(
                ResponseOutput(name=name, datatype=decl.datatype if decl else "FP64", shape=[0, *rest], data=[])
            )
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=outputs)  # type: ignore[attr-defined]

    #: whether the MLServer runtime honours the request's ``outputs`` (LightGBM's answers ``predict`` only)
    _answers_outputs = True


class SKLearnModel(_Validating, mlserver_sklearn.SKLearnModel):  # type: ignore[misc]
    """``mlserver_sklearn.SKLearnModel`` with vatic's input contract; also loads ``.skops`` files."""

    async def _load_model(self) -> bool:
        uri = await get_model_uri(self.settings, wellknown_filenames=SKLEARN_FILES)
        if not str(uri).endswith(".skops"):
            if is_pickle(str(uri)):
                _check_pickle(Path(uri), self._extra, self.settings.name)
            return await super()._load_model()
        self._model = _load_skops(Path(uri), list(self._extra.get("skops_trusted") or []), self.settings.name)
        return True


class XGBoostModel(_Validating, _mlserver_xgboost.XGBoostModel):  # type: ignore[misc]
    """``mlserver_xgboost.XGBoostModel`` with vatic's input contract, predicting on ``threads`` threads."""

    async def _load_model(self) -> bool:
        loaded = await super()._load_model()
        self._model.set_params(n_jobs=self._threads())
        return loaded


class LightGBMModel(_Validating, _mlserver_lightgbm.LightGBMModel):  # type: ignore[misc]
    """``mlserver_lightgbm.LightGBMModel`` with vatic's input contract, predicting on ``threads`` threads (it
    answers ``predict`` only, as MLServer's)."""

    _answers_outputs = False

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        empty = self._empty_answer(payload)
        if empty is not None:
            return empty
        decoded = self.decode_request(payload, default_codec=NumpyRequestCodec)
        prediction = self._model.predict(decoded, num_threads=self._threads())
        output = NumpyCodec.encode_output(name="predict", payload=prediction)
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=[output])


def _check_pickle(path: Path, extra: dict[str, Any], model: str) -> None:
    """Refuse to unpickle ``path`` unless its sha256 is pinned in ``extra.artifact.pickles`` and matches."""
    artifact = extra.get("artifact")
    pins = artifact.get("pickles") if isinstance(artifact, dict) else None
    expected = pins.get(path.name) if isinstance(pins, dict) else None
    if not isinstance(expected, str):
        raise ArtifactRejected(
            f"model {model}: {path.name} is a pickle/joblib file and loading it can execute arbitrary code; it has "
            "no sha256 pin in parameters.extra.artifact.pickles (write the repository with vatic, from a registry "
            "with allow_pickle: true and a pin in registry.artifacts), so it is not loaded",
            path=path.name,
            reason="unpinned_pickle",
        )
    actual = file_sha256(path)
    if actual != expected:
        raise ArtifactRejected(
            f"model {model}: {path.name} has sha256 {actual}, the pin expects {expected}: the file changed after it "
            "was verified; refusing to unpickle it",
            path=path.name,
            reason="digest_mismatch",
            expected=expected,
            actual=actual,
        )


def _load_skops(path: Path, trusted: list[str], model: str) -> Any:
    import skops.io

    untrusted = [t for t in skops.io.get_untrusted_types(file=path) if t not in trusted]
    if untrusted:
        raise ArtifactRejected(
            f"model {model}: {path.name} holds types skops does not trust by default: {untrusted}; if you trust "
            "this artifact, list them in parameters.extra.skops_trusted of its model-settings.json",
            path=path.name,
            reason="untrusted_types",
        )
    return skops.io.load(path, trusted=list(trusted) or None)
