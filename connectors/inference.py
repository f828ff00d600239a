"""Async client of a V2 (Open Inference Protocol) model server over REST, written for MLServer 1.7.1.

One :class:`InferenceClient` per model server (base URL): one pooled ``httpx.AsyncClient`` with keep-alive,
bodies encoded and decoded with orjson. This module never imports ``mlserver``: it runs in the pipeline
environment, where MLServer cannot be installed. The wire types below (:class:`Tensor`,
:class:`InferenceRequest`, :class:`InferenceResponse`, :class:`ModelMetadata`) are small frozen dataclasses of
the V2 JSON, kept apart from the transport as MLServer keeps its ``types`` apart from its servers.

Batching - what the streaming job does once per micro-batch of events::

    async with InferenceClient("http://127.0.0.1:8080", deadline_s=2.0, max_concurrency=8) as client:
        results = await client.infer_batch("fraud", [{"amount": 12.5, "country": "FR"}, ...])
        # one V2 request: inputs "amount" FP64 [N] and "country" BYTES [N]; results[i] == {"predict": ...}

:meth:`InferenceRequest.from_rows` (or :meth:`~InferenceRequest.from_columns`) builds ONE request whose tensors
have the batch dimension N first; :meth:`InferenceResponse.split` cuts every output back into N per-row values.

Errors, sorted by what the caller does (all from :mod:`vatic.connectors.errors`):

=====================================================  ===========================  ============================
what happened                                          raised                       root
=====================================================  ===========================  ============================
connect refused/reset, protocol error, 5xx, 408, 429   ``ModelServerUnavailable``   ``Retryable`` (Retry-After)
400 ``{"error": "Model m is not ready yet."}``          ``ModelNotReady``            ``Retryable``
the call's deadline passed (all attempts included)     ``DeadlineExceeded``         ``Retryable``
404 on a model endpoint (unknown model or version)     ``ModelNotFound``            ``ConfigError``
401/403, 404/405 on a server endpoint, 1xx/3xx,        ``UnexpectedModelResponse``  ``ConfigError``
a 2xx body that is not V2, outputs without N rows
any other 4xx (400 bad input, 413, 422 ...)            ``ModelRejected``            ``DataError`` (dead-letter)
a row that cannot be encoded (before sending)          ``InvalidModelInput``        ``DataError`` (per row)
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
  a pooled connection, every attempt and every backoff sleep. No httpx per-phase timeouts are used.
* Retries are off by default: callers own them (the stream retries a batch within its budget, the REST path
  answers 503 at once). Pass a :class:`RetryPolicy` to retry ``ModelServerUnavailable``/``ModelNotReady``
  with exponential backoff and full jitter inside the deadline; a Retry-After longer than the time left ends
  the call with the server's error rather than a ``DeadlineExceeded``.
* ``max_concurrency`` (an ``asyncio.Semaphore``) caps requests in flight; further calls wait for a slot, which
  is the backpressure a streaming operator needs. The slot is released during backoff sleeps.
* A 2xx that does not parse is a ``ConfigError``, not an outage: a truncated transfer already fails as a
  transport error, so a complete but wrong body means a wrong endpoint or a model whose contract differs.
* The client asks for uncompressed responses (``accept-encoding: identity``; MLServer gzips bodies over 500 B
  otherwise), ignores proxy environment variables, and is meant to be used from one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import math
import random
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import orjson

from vatic.connectors.errors import (
    ConfigError,
    DeadlineExceeded,
    InvalidModelInput,
    ModelNotFound,
    ModelNotReady,
    ModelRejected,
    ModelServerUnavailable,
    Retryable,
    UnexpectedModelResponse,
)

__all__ = [
    "Datatype",
    "InferenceClient",
    "InferenceRequest",
    "InferenceResponse",
    "ModelMetadata",
    "RetryPolicy",
    "Tensor",
    "TensorMetadata",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_SERVICE = "model-server"
_BODY_LIMIT = 8192  # characters of an error body kept on the exception (dead-letter records)
_NOT_READY = "is not ready yet"  # MLServer's ModelNotReady message: "Model m[ with version v] is not ready yet."


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


class _WireError(ValueError):
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
            raise _WireError(f"tensor {self.name!r} has no batch dimension (shape [])")
        flat = _flatten(self.data) if any(isinstance(v, list) for v in self.data[:1]) else self.data
        if len(flat) != math.prod(self.shape):
            raise _WireError(
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

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[Mapping[str, Any]],
        *,
        names: Sequence[str] | None = None,
        datatypes: Mapping[str, Datatype | str] | None = None,
        parameters: Mapping[str, Any] | None = None,
        outputs: Sequence[str] | None = None,
        id: str | None = None,
    ) -> InferenceRequest:
        """ONE request for N rows (events): one tensor per input name, shape ``[N, *row_shape]``.

        ``names`` are the inputs, in order (default: the first row's keys; other keys are ignored). Each value is
        a scalar (tensor ``[N]``) or a nested list / array of one fixed shape (``[N, d1, ...]``). The datatype of
        each input is ``datatypes[name]`` when given (e.g. ``FP32``), otherwise inferred from all its values:
        bool -> ``BOOL``, int -> ``INT64``, int and float -> ``FP64``, str/bytes -> ``BYTES``. Decimal becomes
        float; NumPy values and arrays are accepted.

        Raises :class:`InvalidModelInput` naming every bad row (missing input, ``None``, wrong type, wrong
        shape) and ``ValueError`` when ``rows`` is empty.
        """
        if not rows:
            raise ValueError("from_rows needs at least one row")
        keys = list(names) if names is not None else list(rows[0])
        columns: dict[str, list[Any]] = {}
        problems: dict[int, str] = {}
        for name in keys:
            try:
                columns[name] = [row[name] for row in rows]
            except KeyError:
                columns[name] = [row.get(name) for row in rows]
                for index, row in enumerate(rows):
                    if name not in row:
                        problems.setdefault(index, f"input {name!r} is missing")
        return cls._encode(
            columns,
            n=len(rows),
            problems=problems,
            datatypes=datatypes,
            parameters=parameters,
            outputs=outputs,
            request_id=id,
        )

    @classmethod
    def from_columns(
        cls,
        columns: Mapping[str, Sequence[Any]],
        *,
        datatypes: Mapping[str, Datatype | str] | None = None,
        parameters: Mapping[str, Any] | None = None,
        outputs: Sequence[str] | None = None,
        id: str | None = None,
    ) -> InferenceRequest:
        """Like :meth:`from_rows` for data already in columns: ``{input name: N values}``, all of one length."""
        lengths = {len(values) for values in columns.values()}
        if len(lengths) != 1 or 0 in lengths:
            raise ValueError(f"from_columns needs columns of one non-zero length, got lengths {sorted(lengths)}")
        return cls._encode(
            columns,
            n=lengths.pop(),
            problems={},
            datatypes=datatypes,
            parameters=parameters,
            outputs=outputs,
            request_id=id,
        )

    @classmethod
    def _encode(
        cls,
        columns: Mapping[str, Sequence[Any]],
        *,
        n: int,
        problems: dict[int, str],
        datatypes: Mapping[str, Datatype | str] | None,
        parameters: Mapping[str, Any] | None,
        outputs: Sequence[str] | None,
        request_id: str | None,
    ) -> InferenceRequest:
        declared = {name: Datatype(dt) for name, dt in (datatypes or {}).items()}
        inputs = [_encode_column(name, values, declared.get(name), problems) for name, values in columns.items()]
        if problems:
            first = min(problems)
            raise InvalidModelInput(
                f"{len(problems)} of {n} rows cannot be sent to the model; row {first}: {problems[first]}",
                problems=dict(sorted(problems.items())),
            )
        return cls(
            inputs=tuple(t for t in inputs if t is not None),
            outputs=tuple(outputs) if outputs is not None else None,
            id=request_id,
            parameters=parameters,
        )

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
        body = _load_object(raw)
        outputs = body.get("outputs")
        if not isinstance(outputs, list):
            raise _WireError("'outputs' is missing or not a list")
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
                raise _WireError(
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
        body = _load_object(raw)
        name = body.get("name")
        if not isinstance(name, str):
            raise _WireError("'name' is missing")
        versions = body.get("versions") or []
        if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
            raise _WireError("'versions' is not a list of strings")
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
_KIND_NAMES = {"b": "bool", "i": "int", "n": "number", "s": "str or bytes"}


def _encode_column(
    name: str, values: Sequence[Any], declared: Datatype | None, problems: dict[int, str]
) -> Tensor | None:
    """One input tensor from N row values; records bad rows in ``problems`` (and then returns None)."""
    fast = _scalar_column(name, values, declared)
    if fast is not None and not problems:
        return fast
    row_shape: tuple[int, ...] | None = None
    flat: list[Any] = []
    kinds: list[str | None] = []
    for index, raw in enumerate(values):
        kind = None
        if index not in problems:
            leaves, kind, problem = _row_leaves(name, raw, row_shape)
            if problem is not None:
                problems[index] = problem
            else:
                row_shape = row_shape or _shape_of(_plain(raw))
                flat.extend(leaves)
        kinds.append(kind)
    datatype = declared or _infer_datatype(kinds)
    if datatype is None or row_shape is None:
        return None  # every row of this column is bad, and recorded
    expected = _KIND_OF[datatype]
    for index, kind in enumerate(kinds):
        if kind is not None and not (kind == expected or (expected == "n" and kind == "i")):
            problems[index] = f"input {name!r} is {_KIND_NAMES[kind]}, the tensor is {datatype.value}"
    if problems:
        return None
    return Tensor(name=name, datatype=datatype, shape=(len(values), *row_shape), data=flat)


#: Python scalar types a column may consist of entirely, with the datatype it then gets
_SCALARS: dict[type, Datatype] = {float: Datatype.FP64, int: Datatype.INT64, bool: Datatype.BOOL, str: Datatype.BYTES}


def _scalar_column(name: str, values: Sequence[Any], declared: Datatype | None) -> Tensor | None:
    """The common cases, fast: every value is a plain Python scalar of one type (ints and floats: FP64), or a
    list of such scalars of one length (shape ``[N]`` or ``[N, k]``). None when it needs the general path."""
    first = values[0]
    shape: tuple[int, ...] = (len(values),)
    if type(first) is list and first:
        width = len(first)
        flat: list[Any] = []
        for value in values:
            if type(value) is not list or len(value) != width:
                return None
            flat.extend(value)
        shape = (len(values), width)
    else:
        flat = list(values)
    kinds = set(map(type, flat))
    kind = float if kinds == {int, float} else kinds.pop() if len(kinds) == 1 else None
    inferred = _SCALARS.get(kind) if kind is not None else None
    if kind is None or inferred is None:
        return None
    if declared is not None and declared is not inferred:
        compatible = _KIND_OF[declared] == _KIND_OF[inferred] or (_KIND_OF[declared] == "n" and kind is int)
        if not compatible:
            return None
    return Tensor(name=name, datatype=declared or inferred, shape=shape, data=flat)


def _row_leaves(name: str, raw: Any, row_shape: tuple[int, ...] | None) -> tuple[list[Any], str | None, str | None]:
    """The flat values of one row's input, their kind, and what is wrong with them (None when nothing)."""
    value = _plain(raw)
    if value is None:
        return [], None, f"input {name!r} is None"
    shape = _shape_of(value)
    expected = shape if row_shape is None else row_shape
    leaves: list[Any] = []
    if shape != expected or not _collect(value, expected, leaves):
        return [], None, f"input {name!r} has shape {list(shape)}, the batch has {list(expected)}"
    kind = _kind(leaves)
    if kind is None:
        return [], None, f"input {name!r} holds {_describe(leaves)}; expected numbers, bools or strings"
    if kind == "s":
        try:
            leaves = [v.decode("utf-8") if isinstance(v, bytes) else v for v in leaves]
        except UnicodeDecodeError:
            return [], None, f"input {name!r} holds bytes that are not UTF-8"
    elif kind == "n":
        leaves = [float(v) if isinstance(v, Decimal) else v for v in leaves]
    return leaves, kind, None


def _infer_datatype(kinds: Sequence[str | None]) -> Datatype | None:
    seen = [k for k in kinds if k is not None]
    if not seen:
        return None
    first = "n" if seen[0] == "i" and "n" in seen else seen[0]
    if first == "i":
        return Datatype.INT64
    return {"b": Datatype.BOOL, "n": Datatype.FP64, "s": Datatype.BYTES}[first]


def _plain(value: Any) -> Any:
    """NumPy arrays and scalars as Python lists and scalars; everything else unchanged."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes, bool, int, float)):
        return value.tolist()
    return value


def _shape_of(value: Any) -> tuple[int, ...]:
    dims: list[int] = []
    while isinstance(value, (list, tuple)):
        dims.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(dims)


def _collect(value: Any, shape: tuple[int, ...], out: list[Any]) -> bool:
    """Append the leaves of ``value`` to ``out``; False when it is ragged (does not have ``shape``)."""
    if not shape:
        if isinstance(value, (list, tuple)):
            return False
        out.append(_plain(value))
        return True
    if not isinstance(value, (list, tuple)) or len(value) != shape[0]:
        return False
    return all(_collect(item, shape[1:], out) for item in value)


def _kind(leaves: list[Any]) -> str | None:
    """The common kind of a row's leaves: b(ool), i(nt), n(umber), s(tring); None if mixed or unsupported."""
    kind: str | None = None
    for leaf in leaves:
        if isinstance(leaf, bool):
            this = "b"
        elif isinstance(leaf, int):
            this = "i"
        elif isinstance(leaf, (float, Decimal)):
            this = "n"
        elif isinstance(leaf, (str, bytes)):
            this = "s"
        else:
            return None
        if kind is None or kind == this:
            kind = this
        elif {kind, this} == {"i", "n"}:
            kind = "n"
        else:
            return None
    return kind or "n"  # an empty row (shape with a 0) carries no values


def _describe(leaves: list[Any]) -> str:
    return ", ".join(sorted({type(leaf).__name__ for leaf in leaves}))


def _flatten(data: list[Any]) -> list[Any]:
    """The leaves of nested lists, row-major; iterative, so that no nesting depth raises a RecursionError."""
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
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
        raise _WireError(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _WireError(f"expected a JSON object, got {type(body).__name__}")
    return body


def _opt_str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    raise _WireError(f"{key!r} is not a string")


def _opt_dict(body: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, dict):
        return value
    raise _WireError(f"{key!r} is not an object")


def _parse_shape(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise _WireError(f"{what}: 'shape' is not a list of integers")
    return tuple(value)


def _parse_datatype(value: Any, what: str) -> Datatype:
    try:
        return Datatype(value)
    except ValueError:
        raise _WireError(f"{what}: unknown datatype {value!r}") from None


def _parse_tensor(item: Any) -> Tensor:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise _WireError("an output is not an object with a 'name'")
    what = f"output {item['name']!r}"
    data = item.get("data")
    if not isinstance(data, list):
        raise _WireError(f"{what}: 'data' is not a list")
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
        raise _WireError("tensor metadata is not a list")
    out = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise _WireError("tensor metadata without a 'name'")
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


# --- retries ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Built-in retries of ``ModelServerUnavailable`` and ``ModelNotReady`` within the call's deadline.

    Attempt ``k`` (from 1) that fails is followed by a sleep drawn uniformly from
    ``[0, min(max_backoff_s, initial_backoff_s * multiplier ** (k - 1))]`` ("full jitter"), or the server's
    Retry-After when that is longer. No retry is started when the sleep would reach the deadline; the last
    error is raised instead. ``max_attempts`` counts the first try.
    """

    max_attempts: int = 5
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.initial_backoff_s < 0 or self.max_backoff_s < 0 or self.multiplier < 1:
            raise ValueError(f"invalid retry policy {self}")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to sleep after failed attempt number ``attempt`` (1-based)."""
        cap = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))
        return max(random.uniform(0.0, cap), retry_after or 0.0)  # noqa: S311 (jitter, not crypto)


# --- the client -------------------------------------------------------------------------------------------


class InferenceClient:
    """Async V2 REST client of one model server; see the module docstring for the error contract.

    ``base_url`` is the server's root (``http://host:8080``, or a prefix behind a gateway). ``deadline_s`` is
    the default deadline of every call; ``max_concurrency`` caps calls in flight (None: only the connection
    pool limits them); ``retry`` turns on built-in retries (off by default). The pool keeps at most
    ``max_keepalive_connections`` idle connections for ``keepalive_expiry_s`` (below uvicorn's 5 s, so that a
    connection the server is closing is not reused). ``headers`` are sent with every request. ``transport``
    replaces httpx's pooled transport (the pool limits then are the transport's own). Use it as
    ``async with`` or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        deadline_s: float = 5.0,
        max_concurrency: int | None = None,
        retry: RetryPolicy | None = None,
        max_connections: int = 100,
        max_keepalive_connections: int = 20,
        keepalive_expiry_s: float = 4.0,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(f"model server URL {base_url!r} is not an absolute http(s) URL", stage="infer")
        _check_deadline(deadline_s)
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.base_url = str(url).rstrip("/")
        self.deadline_s = deadline_s
        self.retry = retry
        self.max_concurrency = max_concurrency
        self._slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None
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
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

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

    async def infer_batch(
        self,
        model: str,
        rows: Sequence[Mapping[str, Any]],
        *,
        version: str | None = None,
        deadline_s: float | None = None,
        names: Sequence[str] | None = None,
        datatypes: Mapping[str, Datatype | str] | None = None,
        parameters: Mapping[str, Any] | None = None,
        outputs: Sequence[str] | None = None,
        squeeze: bool = True,
    ) -> list[dict[str, Any]]:
        """N rows in ONE request, N results back: ``results[i]`` is ``{output name: value}`` for ``rows[i]``.

        See :meth:`InferenceRequest.from_rows` (encoding; :class:`InvalidModelInput` before sending) and
        :meth:`InferenceResponse.split` (an answer without N rows per output is
        :class:`UnexpectedModelResponse`). MLServer's sklearn runtime wants ``parameters={"content_type": "pd"}``
        when a model takes several named inputs (one column each).
        """
        request = InferenceRequest.from_rows(
            rows, names=names, datatypes=datatypes, parameters=parameters, outputs=outputs
        )
        path = f"{_model_path(model, version)}/infer"
        response = await self._call(
            "POST", path, body=request.to_json(), model=model, version=version, deadline_s=deadline_s
        )
        return self._parse(response, lambda raw: InferenceResponse.from_json(raw).split(len(rows), squeeze=squeeze))

    # -- health and metadata ----------------------------------------------------------------------------

    async def server_live(self, *, deadline_s: float | None = None) -> bool:
        """``GET /v2/health/live``: True on 200, False on 400/503. Unreachable: ``ModelServerUnavailable``."""
        return await self._flag("/v2/health/live", None, None, deadline_s)

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
        """One call under one overall deadline, retried per :attr:`retry`. ``flag``: 400/503 are answers."""
        budget = self.deadline_s if deadline_s is None else _check_deadline(deadline_s)
        loop = asyncio.get_running_loop()
        deadline_at = loop.time() + budget
        last: Retryable | None = None
        attempt = 0
        timeout = asyncio.timeout_at(deadline_at)
        try:
            async with timeout:
                while True:
                    attempt += 1
                    try:
                        async with self._slot():
                            return await self._attempt(method, path, body=body, model=model, version=version, flag=flag)
                    except (ModelServerUnavailable, ModelNotReady) as exc:
                        last = exc
                        pause = self._pause(attempt, exc, deadline_at - loop.time())
                        if pause is None:
                            raise
                        log.debug("%s %s: attempt %d failed (%s); retrying in %.3fs", method, path, attempt, exc, pause)
                        await asyncio.sleep(pause)
        except TimeoutError as exc:
            if not timeout.expired():
                raise
            detail = f"; last error: {last}" if last is not None else ""
            error = DeadlineExceeded(
                f"{method} {self.base_url}{path} did not finish within its deadline of {budget:g}s "
                f"({attempt} attempt{'s' if attempt != 1 else ''}){detail}",
                deadline_s=budget,
            )
            error.stage = "infer"
            raise error from (last or exc)

    def _pause(self, attempt: int, exc: Retryable, time_left: float) -> float | None:
        if self.retry is None or attempt >= self.retry.max_attempts:
            return None
        pause = self.retry.delay(attempt, exc.retry_after)
        return pause if pause < time_left else None

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        if self._slots is None:
            yield
            return
        async with self._slots:
            yield

    async def _attempt(
        self, method: str, path: str, *, body: bytes | None, model: str | None, version: str | None, flag: bool
    ) -> httpx.Response:
        headers = {"content-type": "application/json"} if body is not None else None
        try:
            response = await self._http.request(method, path, content=body, headers=headers)
        except httpx.HTTPError as exc:  # connect/read/write errors, resets, protocol errors, bad encodings
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
        retry_after = _retry_after(response.headers.get("retry-after"))
        if status >= 500 or status in (408, 429):
            return ModelServerUnavailable(
                f"model server failed ({status}) on {where}: {reason}",
                service=_SERVICE,
                retry_after=retry_after,
                status=status,
                body=reason,
            )
        if status == 400 and model is not None and _NOT_READY in reason:
            return ModelNotReady(f"model {model!r} is not ready: {reason}", model=model, retry_after=retry_after)
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


def _check_deadline(deadline_s: float) -> float:
    if not (deadline_s > 0 and math.isfinite(deadline_s)):
        raise ValueError(f"deadline_s must be a positive number of seconds, got {deadline_s}")
    return deadline_s


def _model_path(model: str, version: str | None) -> str:
    if not model:
        raise ValueError("model name is empty")
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


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
