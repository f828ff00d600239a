"""The tensor contract of a served model: declared inputs and outputs, request validation, device choice.

Pure Python and NumPy (no MLServer, no FastAPI, no torch at import): the low-code base runtime
(:mod:`vatic.serving.runtimes.base`), the validating no-code runtimes (:mod:`vatic.serving.runtimes.nocode`)
and the full-custom FastAPI tier (:mod:`vatic.serving.runtimes.custom`) all validate with the same functions, so a bad
request gets the same 400 message from every tier. Importable in both environments.

What :func:`decode_inputs` refuses with :class:`BadInput` (every tier answers it with HTTP 400 / gRPC
``INVALID_ARGUMENT`` and ``{"error": "<message>"}``):

* an input the model does not declare, a declared input that is missing, an input given twice;
* a datatype other than the declared one (no implicit casts: ``FP64`` is not ``FP32``);
* a shape of another rank than the declared one, or a fixed dimension (not ``-1``) that differs;
* data holding more or fewer elements than the shape says (nested lists are flattened row-major);
* text in a numeric tensor, a non-integral or out-of-range number in an integer tensor, something other than a
  string or UTF-8 bytes in a ``BYTES`` tensor, ``null`` in a non floating point tensor;
* inputs that disagree on the batch size (their first dimension N).

Decoded values: ``BYTES`` -> a NumPy array of Python ``str`` (dtype ``object``), numeric datatypes -> a NumPy
array of that datatype (``null`` in a floating point tensor is ``NaN``: a missing value), in the given shape.

What the model answers is checked by :func:`check_outputs`: a missing output, an output without the batch
dimension N or of the wrong kind is :class:`ModelOutputError` - a fault of the model, so 500, never 400.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vatic.connectors.v2.types import Datatype, flatten

__all__ = [
    "DATATYPES",
    "Array",
    "BadInput",
    "DeviceUnavailable",
    "ModelOutputError",
    "RawTensor",
    "Signature",
    "SignatureMismatch",
    "TensorDecl",
    "batch_size",
    "check_outputs",
    "datatype_of",
    "decode_inputs",
    "decode_tensor",
    "pick_device",
    "resolve_signature",
    "select_outputs",
    "wire_data",
]

#: V2 datatype -> NumPy dtype of the decoded array (``BYTES`` decode to Python ``str`` objects)
DATATYPES: dict[str, str] = {datatype.value: datatype.numpy for datatype in Datatype}

#: a NumPy array of any dtype (decoded inputs, outputs)
Array = NDArray[Any]

_KIND_TO_DATATYPE = {"U": "BYTES", "S": "BYTES", "O": "BYTES"}
_METADATA_KEYS = ("name", "datatype", "shape", "parameters")
_NOTHING = object()


class BadInput(ValueError):
    """A request the model cannot take (names, datatypes, shapes, data): the client's error, answered 400.

    ``predict_batch`` implementations may raise it too, for inputs that pass the declared contract but that
    the model still refuses (an empty title, an unknown category).
    """


class ModelOutputError(RuntimeError):
    """``predict_batch`` answered something that does not fit the declared outputs: the model's fault (500)."""


class SignatureMismatch(ValueError):
    """The loaded model's own signature contradicts what its settings (the service config) declare."""


class DeviceUnavailable(RuntimeError):
    """The configured device cannot be used, e.g. ``cuda`` where no GPU is visible: the model does not load."""


def _shape_text(shape: Sequence[int]) -> str:
    return (
        "[" + ", ".join("N" if i == 0 and d == -1 else ("*" if d == -1 else str(d)) for i, d in enumerate(shape)) + "]"
    )


@dataclass(frozen=True)
class TensorDecl:
    """One declared input or output: V2 name, datatype and shape (``-1``: any size; the first is the batch).

    ``content_type`` is MLServer's codec hint (``np``, ``str``, ``pd``...), carried into the model metadata.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    content_type: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a tensor needs a name")
        if self.datatype not in DATATYPES:
            raise ValueError(
                f"tensor {self.name!r}: unknown V2 datatype {self.datatype!r}; use one of {list(DATATYPES)}"
            )
        shape = tuple(self.shape)
        if any(isinstance(d, bool) or not isinstance(d, int) or d < -1 for d in shape):
            raise ValueError(f"tensor {self.name!r}: shape {list(shape)} must hold sizes >= 0 or -1")
        object.__setattr__(self, "shape", shape)

    def to_dict(self) -> dict[str, Any]:
        """The V2 metadata JSON of this tensor (``parameters.content_type`` when set)."""
        body: dict[str, Any] = {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}
        if self.content_type:
            body["parameters"] = {"content_type": self.content_type}
        return body

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> TensorDecl:
        """From V2 metadata JSON (or an object with the same attributes, e.g. MLServer's ``MetadataTensor``)."""
        fields = dict(body) if isinstance(body, Mapping) else {k: getattr(body, k, None) for k in _METADATA_KEYS}
        parameters = fields.get("parameters") or {}
        if not isinstance(parameters, Mapping):
            parameters = parameters.model_dump() if hasattr(parameters, "model_dump") else {}
        datatype = fields.get("datatype")
        return cls(
            name=str(fields.get("name")),
            datatype=str(getattr(datatype, "value", datatype)),
            shape=tuple(int(d) for d in fields.get("shape") or ()),
            content_type=parameters.get("content_type"),
        )

    def describe(self) -> str:
        """``name DATATYPE [N, 2]``: how error messages name the tensor."""
        return f"{self.name} {self.datatype} {_shape_text(self.shape)}"


@dataclass(frozen=True)
class Signature:
    """The inputs a model takes and the outputs it answers, in order. No outputs: not declared."""

    inputs: tuple[TensorDecl, ...]
    outputs: tuple[TensorDecl, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        for kind, tensors in (("input", self.inputs), ("output", self.outputs)):
            names = [t.name for t in tensors]
            if len(set(names)) != len(names):
                raise ValueError(f"{kind} names must be unique, got {names}")

    def output(self, name: str) -> TensorDecl | None:
        return next((t for t in self.outputs if t.name == name), None)


@dataclass(frozen=True)
class RawTensor:
    """One input as it arrives on the wire (REST JSON or gRPC): ``data`` flat or nested, not yet checked."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Any


# --- decoding and validating requests ---------------------------------------------------------------------


def _strings(flat: list[Any], where: str) -> Array:
    out = np.empty(len(flat), dtype=object)
    for i, value in enumerate(flat):
        if isinstance(value, str):
            out[i] = value
        elif isinstance(value, bytes | bytearray):
            try:
                out[i] = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                raise BadInput(f"{where}: element {i} is not UTF-8 text") from None
        else:
            raise BadInput(f"{where}: element {i} is {type(value).__name__} {value!r}, not a string (BYTES)")
    return out


def _numbers(flat: list[Any], datatype: str, where: str) -> Array:
    dtype = np.dtype(DATATYPES[datatype])
    try:
        found = np.asarray(flat)
    except (ValueError, TypeError):
        found = np.asarray(flat, dtype=object)
    if found.dtype.kind in "USV":
        raise BadInput(f"{where}: holds text, but {datatype} takes numbers")
    if found.dtype.kind == "O":  # a null, or numbers numpy could not unify (beyond 64 bits)
        nullable = dtype.kind == "f"
        bad = next((v for v in flat if not (_is_number(v) or (nullable and v is None))), _NOTHING)
        if bad is not _NOTHING:
            hint = f" ({datatype} takes no nulls)" if bad is None else ""
            raise BadInput(f"{where}: element {bad!r} is not a number{hint}")
        if not nullable:
            raise BadInput(f"{where}: a value is out of the range of {datatype}")
        found = np.asarray([math.nan if v is None else float(v) for v in flat], dtype=np.float64)
    if found.dtype.kind == "c":
        raise BadInput(f"{where}: complex numbers are not a V2 datatype")
    if dtype.kind == "b":
        if found.dtype.kind != "b" and not (found.size == 0 or np.isin(found, (0, 1)).all()):
            raise BadInput(f"{where}: BOOL takes true/false (or 0/1)")
        return found.astype(dtype)
    if dtype.kind in "iu":
        fractional = found.dtype.kind == "f" and found.size
        if fractional and not (np.isfinite(found).all() and (np.mod(found, 1) == 0).all()):
            raise BadInput(f"{where}: {datatype} takes integers, got a fractional or non-finite number")
        info = np.iinfo(dtype)
        if found.size and (found.min() < info.min or found.max() > info.max):
            raise BadInput(f"{where}: a value is out of the range of {datatype} [{info.min}, {info.max}]")
    with np.errstate(over="ignore"):
        return found.astype(dtype)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, complex)


def decode_tensor(raw: RawTensor, decl: TensorDecl) -> Array:
    """Check one input against its declaration and decode it (see the module docstring); :class:`BadInput`."""
    where = f"input {raw.name!r}"
    if raw.datatype != decl.datatype:
        raise BadInput(f"{where} has datatype {raw.datatype}; the model expects {decl.describe()}")
    shape = tuple(raw.shape)
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
        raise BadInput(f"{where} has shape {list(shape)}; sizes must be integers >= 0")
    if len(shape) != len(decl.shape) or any(want not in (-1, got) for want, got in zip(decl.shape, shape, strict=True)):
        raise BadInput(f"{where} has shape {list(shape)}; the model expects {decl.describe()}")
    flat = flatten(raw.data)
    size = math.prod(shape)
    if len(flat) != size:
        raise BadInput(f"{where} has {len(flat)} values but shape {list(shape)} holds {size}")
    array = _strings(flat, where) if decl.datatype == "BYTES" else _numbers(flat, decl.datatype, where)
    return array.reshape(shape)


def decode_inputs(raw: Iterable[RawTensor], declared: Sequence[TensorDecl]) -> dict[str, Array]:
    """Every declared input decoded, in declared order; :class:`BadInput` for anything the contract refuses."""
    by_name = {decl.name: decl for decl in declared}
    decoded: dict[str, Array] = {}
    for tensor in raw:
        if tensor.name in decoded:
            raise BadInput(f"input {tensor.name!r} is given twice")
        decl = by_name.get(tensor.name)
        if decl is None:
            raise BadInput(f"unknown input {tensor.name!r}; the model takes {_listing(declared)}")
        decoded[tensor.name] = decode_tensor(tensor, decl)
    missing = [decl.name for decl in declared if decl.name not in decoded]
    if missing:
        raise BadInput(f"missing input(s) {', '.join(map(repr, missing))}; the model takes {_listing(declared)}")
    sizes = {name: array.shape[0] for name, array in decoded.items() if array.ndim}
    if len(set(sizes.values())) > 1:
        detail = ", ".join(f"{name} has {n}" for name, n in sizes.items())
        raise BadInput(f"inputs disagree on the batch size (first dimension): {detail}")
    return {decl.name: decoded[decl.name] for decl in declared}


def _listing(tensors: Sequence[TensorDecl]) -> str:
    return "; ".join(t.describe() for t in tensors) or "no inputs"


def batch_size(inputs: Mapping[str, Array]) -> int:
    """N: the first dimension shared by the decoded inputs (1 for scalars only)."""
    for array in inputs.values():
        if array.ndim:
            return int(array.shape[0])
    return 1


# --- outputs ----------------------------------------------------------------------------------------------


def select_outputs(requested: Sequence[str], signature: Signature) -> list[str] | None:
    """The output names a request asks for (None: all), checked against the declared outputs (:class:`BadInput`)."""
    if not requested:
        return None
    if len(set(requested)) != len(requested):
        raise BadInput(f"outputs {list(requested)} name an output twice")
    if signature.outputs:
        known = [t.name for t in signature.outputs]
        unknown = [name for name in requested if name not in known]
        if unknown:
            raise BadInput(f"unknown output(s) {', '.join(map(repr, unknown))}; the model returns {', '.join(known)}")
    return list(requested)


def datatype_of(array: Array) -> str:
    """The V2 datatype of a NumPy array (str, bytes and object arrays are ``BYTES``)."""
    kind_type = _KIND_TO_DATATYPE.get(array.dtype.kind)
    if kind_type:
        return kind_type
    name = array.dtype.name
    for datatype, dtype in DATATYPES.items():
        if dtype == name:
            return datatype
    raise ModelOutputError(f"arrays of dtype {array.dtype} have no V2 datatype")


def _as_output(name: str, value: Any, decl: TensorDecl | None) -> Array:
    try:
        array = value if isinstance(value, np.ndarray) else np.asarray(value)
    except (ValueError, TypeError, RuntimeError) as exc:  # e.g. a CUDA tensor: return tensor.cpu().numpy()
        raise ModelOutputError(f"output {name!r} is not an array: {exc}") from None
    datatype = decl.datatype if decl is not None else datatype_of(array)
    if datatype == "BYTES":
        if array.dtype.kind not in "USO":
            raise ModelOutputError(f"output {name!r} is declared BYTES but holds {array.dtype}")
        flat = array.ravel()
        strings = np.empty(flat.shape, dtype=object)
        for i, item in enumerate(flat.tolist()):
            strings[i] = item.decode("utf-8") if isinstance(item, bytes) else str(item)
        return strings.reshape(array.shape)
    if array.dtype.kind not in "biuf":
        raise ModelOutputError(f"output {name!r} is declared {datatype} but holds {array.dtype}")
    if decl is not None and len(decl.shape) != array.ndim:
        raise ModelOutputError(f"output {name!r} has shape {list(array.shape)}; declared {decl.describe()}")
    return array.astype(DATATYPES[datatype], copy=False)


def check_outputs(
    result: Mapping[str, Any], signature: Signature, requested: Sequence[str] | None, n: int
) -> dict[str, Array]:
    """``predict_batch``'s answer, checked and converted to the declared datatypes, in answer order.

    Answers the ``requested`` outputs (None: every declared output, or every returned one when none are
    declared). Raises :class:`ModelOutputError` when an output is missing, is not an array of the declared
    kind, or does not have N rows.
    """
    if not isinstance(result, Mapping):
        raise ModelOutputError(
            f"predict_batch must return a mapping of output name -> array, not {type(result).__name__}"
        )
    if requested is not None:
        names = list(requested)
    elif signature.outputs:
        names = [t.name for t in signature.outputs]
    else:
        names = list(result)
    outputs: dict[str, Array] = {}
    for name in names:
        if name not in result:
            raise ModelOutputError(
                f"predict_batch returned no output {name!r} (it returned {', '.join(map(str, result))})"
            )
        array = _as_output(name, result[name], signature.output(name))
        if array.ndim == 0 or array.shape[0] != n:
            raise ModelOutputError(f"output {name!r} has shape {list(array.shape)}: no batch dimension of {n} rows")
        outputs[name] = array
    return outputs


def wire_data(array: Array) -> list[Any]:
    """The flat, row-major V2 ``data`` of an output: Python numbers, or ``str`` for ``BYTES``."""
    values: list[Any] = array.ravel().tolist()
    return values


# --- signatures -------------------------------------------------------------------------------------------


def _merge(own: TensorDecl, declared: TensorDecl, model: str, kind: str) -> TensorDecl:
    problem = own.datatype != declared.datatype or len(own.shape) != len(declared.shape)
    if not problem:
        problem = any(-1 not in (a, b) and a != b for a, b in zip(own.shape, declared.shape, strict=True))
    if problem:
        raise SignatureMismatch(
            f"model {model}: the service config declares {kind} {declared.describe()} but the loaded model "
            f"takes {own.describe()}; make the config's {kind} match the model (or retrain it)"
        )
    shape = tuple(a if a != -1 else b for a, b in zip(own.shape, declared.shape, strict=True))
    return TensorDecl(own.name, own.datatype, shape, declared.content_type or own.content_type)


def _merge_all(
    own: Sequence[TensorDecl], declared: Sequence[TensorDecl], model: str, kind: str, *, exact: bool
) -> tuple[TensorDecl, ...]:
    if not own:
        return tuple(declared)
    if not declared:
        return tuple(own)
    own_by_name = {t.name: t for t in own}
    unknown = [t.name for t in declared if t.name not in own_by_name]
    missing = [t.name for t in own if t.name not in {d.name for d in declared}]
    if unknown or (exact and missing):
        raise SignatureMismatch(
            f"model {model}: the service config declares {kind}s {[t.name for t in declared]} but the loaded model "
            f"has {[t.name for t in own]}; make the config's {kind}s match the model"
        )
    merged = {t.name: _merge(own_by_name[t.name], t, model, kind) for t in declared}
    return tuple(merged.get(t.name, t) for t in own)


def resolve_signature(
    own: Signature | None,
    declared_inputs: Sequence[TensorDecl] = (),
    declared_outputs: Sequence[TensorDecl] = (),
    *,
    wanted_outputs: Sequence[str] = (),
    model: str = "model",
) -> Signature:
    """The signature a loaded model serves: its own (``signature()`` of the runtime) checked against the
    declaration of its settings (inputs/outputs written from the service config).

    Both given: the input names must be the same sets, datatypes equal, ranks equal and fixed dimensions equal
    (``-1`` on either side takes the other's size); declared outputs must be outputs of the model.
    ``wanted_outputs`` (the outputs the service config reads) must all be outputs of the result when outputs
    are known. Raises :class:`SignatureMismatch`; inputs declared nowhere is one too.
    """
    own_inputs = own.inputs if own else ()
    own_outputs = own.outputs if own else ()
    inputs = _merge_all(own_inputs, declared_inputs, model, "input", exact=True)
    outputs = _merge_all(own_outputs, declared_outputs, model, "output", exact=False)
    if not inputs:
        raise SignatureMismatch(
            f"model {model}: no inputs are declared; list them in the service config (model.inputs) or return "
            "them from the runtime's signature()"
        )
    if outputs and wanted_outputs:
        missing = [name for name in wanted_outputs if name not in {t.name for t in outputs}]
        if missing:
            raise SignatureMismatch(
                f"model {model}: the service config reads output(s) {missing} but the model returns "
                f"{[t.name for t in outputs]}; fix model.outputs in the service config"
            )
    return Signature(inputs, outputs)


# --- devices ----------------------------------------------------------------------------------------------


def pick_device(requested: str = "auto") -> str:
    """The torch device to use: ``cpu``; ``cuda`` / ``cuda:<i>`` only when torch sees that GPU
    (:class:`DeviceUnavailable` otherwise, with the fix); ``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``.

    Imports torch only for ``auto`` and ``cuda`` and only where it is installed (no torch: ``auto`` is cpu).
    """
    requested = (requested or "auto").strip().lower()
    if requested == "cpu":
        return "cpu"
    if requested not in {"auto", "cuda"} and not requested.startswith("cuda:"):
        raise DeviceUnavailable(f"unknown device {requested!r}; use auto, cpu or cuda (cuda:<index>)")
    torch: Any = sys.modules.get("torch")
    if torch is None and importlib.util.find_spec("torch") is not None:
        torch = importlib.import_module("torch")
    available = bool(torch is not None and torch.cuda.is_available())
    if requested == "auto":
        return "cuda" if available else "cpu"
    if torch is None:
        raise DeviceUnavailable(f"device {requested!r} needs torch, which is not installed; use device: cpu")
    if not available:
        raise DeviceUnavailable(
            f"device {requested!r} was asked for but no GPU is visible (torch.cuda.is_available() is False); "
            "set device: auto (GPU when present, else CPU) or device: cpu, or run where a GPU is visible"
        )
    index = int(requested.partition(":")[2] or 0)
    count = int(torch.cuda.device_count())
    if index >= count:
        raise DeviceUnavailable(f"device {requested!r} was asked for but only {count} GPU(s) are visible")
    return requested
