"""The V2 (Open Inference Protocol) wire types and their JSON codec: the one home every door and client uses.

:class:`Datatype` is the one list of V2 datatypes; its properties give each one's NumPy dtype (decoded arrays)
and its little-endian raw form (the binary tensor data extension, gRPC ``raw_*_contents``), so a datatype is
added in one place. :class:`Tensor`, :class:`InferenceRequest`, :class:`InferenceResponse`,
:class:`TensorMetadata` and :class:`ModelMetadata` are small frozen dataclasses of the V2 JSON: no transport
here (the REST client is :mod:`vatic.connectors.inference`, the binary extension :mod:`.binary`, the gRPC
conversion :mod:`.grpc`, the pydantic models that validate and document a body :mod:`.schema`).

Parsing a body that is not V2 raises :class:`WireError` (a ``ValueError``) naming the part at fault.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

__all__ = [
    "Datatype",
    "InferenceRequest",
    "InferenceResponse",
    "ModelMetadata",
    "Tensor",
    "TensorMetadata",
    "WireError",
    "flatten",
]

# --- wire types -------------------------------------------------------------------------------------------


class Datatype(StrEnum):
    """V2 tensor datatypes."""

    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    BYTES = "BYTES"

    @property
    def numpy(self) -> str:
        """The NumPy dtype of a decoded array of this datatype (``object``: ``BYTES`` decode to Python ``str``)."""
        return _NUMPY[self]

    @property
    def raw(self) -> str | None:
        """The little-endian NumPy dtype of its raw bytes (binary extension, gRPC ``raw_*_contents``); None for
        ``BYTES``, whose elements are length-prefixed."""
        return _RAW.get(self)

    @classmethod
    def of_numpy(cls, name: str) -> Datatype | None:
        """The datatype of a NumPy dtype name (``float32`` -> ``FP32``); None when V2 has none."""
        return _OF_NUMPY.get(name)


_NUMPY: dict[Datatype, str] = {
    Datatype.BOOL: "bool", Datatype.UINT8: "uint8", Datatype.UINT16: "uint16", Datatype.UINT32: "uint32",
    Datatype.UINT64: "uint64", Datatype.INT8: "int8", Datatype.INT16: "int16", Datatype.INT32: "int32",
    Datatype.INT64: "int64", Datatype.FP16: "float16", Datatype.FP32: "float32", Datatype.FP64: "float64",
    Datatype.BYTES: "object",
}  # fmt: skip
_RAW: dict[Datatype, str] = {
    Datatype.BOOL: "?", Datatype.UINT8: "u1", Datatype.UINT16: "<u2", Datatype.UINT32: "<u4",
    Datatype.UINT64: "<u8", Datatype.INT8: "i1", Datatype.INT16: "<i2", Datatype.INT32: "<i4",
    Datatype.INT64: "<i8", Datatype.FP16: "<f2", Datatype.FP32: "<f4", Datatype.FP64: "<f8",
}  # fmt: skip
_OF_NUMPY: dict[str, Datatype] = {name: datatype for datatype, name in _NUMPY.items() if datatype is not Datatype.BYTES}


class WireError(ValueError):
    """A V2 body that does not have the expected form (mapped to UnexpectedModelResponse by the client)."""


@dataclass(frozen=True, slots=True)
class Tensor:
    """A V2 request input or response output.

    ``data`` is row-major and normally flat (``len(data) == prod(shape)``); nested lists, as some servers send
    them, are accepted on the way in. For ``FP*`` tensors ``NaN`` is sent as ``null`` (JSON has no NaN), which
    MLServer's NumPy codec decodes back to NaN: a missing value for models that handle them.
    """

    name: str
    datatype: Datatype
    shape: tuple[int, ...]
    data: list[Any]
    parameters: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "shape": list(self.shape),
            "datatype": self.datatype.value,
            "data": self.data,
        }
        if self.parameters:
            body["parameters"] = dict(self.parameters)
        return body

    def rows(self, *, squeeze: bool = True) -> list[Any]:
        """The tensor cut along its first (batch) dimension: ``shape[0]`` values.

        A row of shape ``()`` is a scalar; with ``squeeze`` a row of shape ``(1,)`` is one too (sklearn's
        ``predict`` answers ``[N, 1]``); other rows are nested lists of shape ``shape[1:]``.
        Raises ``ValueError`` when the data does not hold ``prod(shape)`` values.
        """
        if not self.shape:
            raise WireError(f"tensor {self.name!r} has no batch dimension (shape [])")
        flat = flatten(self.data)
        if len(flat) != math.prod(self.shape):
            raise WireError(
                f"tensor {self.name!r} has {len(flat)} values, its shape {list(self.shape)} needs "
                f"{math.prod(self.shape)}"
            )
        n, row_shape = self.shape[0], self.shape[1:]
        if not row_shape or (squeeze and row_shape == (1,)):
            return list(flat)
        size = math.prod(row_shape)
        return [_unflatten(flat[i * size : (i + 1) * size], row_shape) for i in range(n)]


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """A V2 inference request. ``outputs`` names the outputs to compute (the model's default when None)."""

    inputs: tuple[Tensor, ...]
    outputs: tuple[str, ...] | None = None
    id: str | None = None
    parameters: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"inputs": [tensor.as_dict() for tensor in self.inputs]}
        if self.id is not None:
            body["id"] = self.id
        if self.parameters:
            body["parameters"] = dict(self.parameters)
        if self.outputs is not None:
            body["outputs"] = [{"name": name} for name in self.outputs]
        return body

    def to_json(self) -> bytes:
        """The request body (orjson; NumPy arrays and scalars inside ``data`` are serialised too)."""
        return orjson.dumps(self.as_dict(), option=orjson.OPT_SERIALIZE_NUMPY)


@dataclass(frozen=True, slots=True)
class InferenceResponse:
    """A V2 inference response."""

    model_name: str
    outputs: tuple[Tensor, ...]
    model_version: str | None = None
    id: str | None = None
    parameters: Mapping[str, Any] | None = None

    @classmethod
    def from_json(cls, raw: bytes) -> InferenceResponse:
        """Parse a response body; raises ``ValueError`` when it is not a V2 inference response."""
        return cls.from_dict(_load_object(raw))

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> InferenceResponse:
        """A parsed response body; raises ``ValueError`` when it is not a V2 inference response."""
        outputs = body.get("outputs")
        if not isinstance(outputs, list):
            raise WireError("'outputs' is missing or not a list")
        return cls(
            model_name=_opt_str(body, "model_name") or "",
            model_version=_opt_str(body, "model_version"),
            id=_opt_str(body, "id"),
            parameters=_opt_dict(body, "parameters"),
            outputs=tuple(_parse_tensor(item) for item in outputs),
        )

    def output(self, name: str) -> Tensor:
        """The output called ``name``; ``KeyError`` when the response has none."""
        for tensor in self.outputs:
            if tensor.name == name:
                return tensor
        raise KeyError(f"no output {name!r}; outputs: {[t.name for t in self.outputs]}")

    def split(self, n: int, *, squeeze: bool = True) -> list[dict[str, Any]]:
        """N per-row results ``{output name: row value}`` (see :meth:`Tensor.rows`).

        Raises ``ValueError`` when an output's first dimension is not ``n``.
        """
        columns: dict[str, list[Any]] = {}
        for tensor in self.outputs:
            if not tensor.shape or tensor.shape[0] != n:
                raise WireError(
                    f"output {tensor.name!r} has shape {list(tensor.shape)}: no batch dimension of {n} rows"
                )
            columns[tensor.name] = tensor.rows(squeeze=squeeze)
        return [{name: values[i] for name, values in columns.items()} for i in range(n)]


@dataclass(frozen=True, slots=True)
class TensorMetadata:
    """An input or output as the model describes it (``-1`` marks a variable dimension)."""

    name: str
    datatype: Datatype
    shape: tuple[int, ...]
    parameters: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """V2 model metadata. MLServer fills ``versions`` from ``model-settings.json`` (e.g. ``sklearn/1.5.2``)
    and answers empty metadata while the model is loading."""

    name: str
    platform: str
    versions: tuple[str, ...]
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]
    parameters: Mapping[str, Any] | None = None

    @classmethod
    def from_json(cls, raw: bytes) -> ModelMetadata:
        """Parse a model metadata body; raises ``ValueError`` when it is not one."""
        return cls.from_dict(_load_object(raw))

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> ModelMetadata:
        """A parsed model metadata body; raises ``ValueError`` when it is not one."""
        name = body.get("name")
        if not isinstance(name, str):
            raise WireError("'name' is missing")
        versions = body.get("versions") or []
        if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
            raise WireError("'versions' is not a list of strings")
        return cls(
            name=name,
            platform=_opt_str(body, "platform") or "",
            versions=tuple(versions),
            inputs=_parse_metadata_tensors(body.get("inputs")),
            outputs=_parse_metadata_tensors(body.get("outputs")),
            parameters=_opt_dict(body, "parameters"),
        )


# --- encoding rows ----------------------------------------------------------------------------------------

_KIND_OF: dict[Datatype, str] = {Datatype.BOOL: "b", Datatype.BYTES: "s"}
_KIND_OF.update({dt: "i" for dt in Datatype if dt.name.startswith(("INT", "UINT"))})
_KIND_OF.update({dt: "n" for dt in Datatype if dt.name.startswith("FP")})
#: Python scalar types a column may consist of entirely, with the datatype it then gets
_SCALARS: dict[type, Datatype] = {float: Datatype.FP64, int: Datatype.INT64, bool: Datatype.BOOL, str: Datatype.BYTES}


def flatten(data: Any) -> list[Any]:
    """The leaves of nested lists (or tuples), row-major; a scalar is one leaf. Iterative: a body nested a
    thousand levels deep (JSON parsers accept about 1000) is refused by a size check, not by a RecursionError."""
    if not isinstance(data, list | tuple):
        return [data]
    if not any(isinstance(item, list | tuple) for item in data):
        return list(data)
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list | tuple):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _unflatten(flat: list[Any], shape: tuple[int, ...]) -> list[Any]:
    if len(shape) == 1:
        return list(flat)
    size = math.prod(shape[1:])
    return [_unflatten(flat[i * size : (i + 1) * size], shape[1:]) for i in range(shape[0])]


# --- parsing ----------------------------------------------------------------------------------------------


def _load_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise WireError(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise WireError(f"expected a JSON object, got {type(body).__name__}")
    return body


def _opt_str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    raise WireError(f"{key!r} is not a string")


def _opt_dict(body: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, dict):
        return value
    raise WireError(f"{key!r} is not an object")


def _parse_shape(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise WireError(f"{what}: 'shape' is not a list of integers")
    return tuple(value)


def _parse_datatype(value: Any, what: str) -> Datatype:
    try:
        return Datatype(value)
    except ValueError:
        raise WireError(f"{what}: unknown datatype {value!r}") from None


def _parse_tensor(item: Any) -> Tensor:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise WireError("an output is not an object with a 'name'")
    what = f"output {item['name']!r}"
    data = item.get("data")
    if not isinstance(data, list):
        raise WireError(f"{what}: 'data' is not a list")
    return Tensor(
        name=item["name"],
        datatype=_parse_datatype(item.get("datatype"), what),
        shape=_parse_shape(item.get("shape"), what),
        data=data,
        parameters=_opt_dict(item, "parameters"),
    )


def _parse_metadata_tensors(value: Any) -> tuple[TensorMetadata, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise WireError("tensor metadata is not a list")
    out = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise WireError("tensor metadata without a 'name'")
        what = f"tensor {item['name']!r}"
        out.append(
            TensorMetadata(
                name=item["name"],
                datatype=_parse_datatype(item.get("datatype"), what),
                shape=_parse_shape(item.get("shape"), what),
                parameters=_opt_dict(item, "parameters"),
            )
        )
    return tuple(out)
