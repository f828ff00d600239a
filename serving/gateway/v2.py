"""The V2 pass-through's request check: a V2 inference body is parsed and checked against the inputs the model
declares (its V2 metadata) before the gateway forwards it, so that a model server only ever sees well-formed
requests.

Why: MLServer handles some malformed requests outside the runtime's own checks and fails with a 500 - e.g. an
input of shape ``[]`` (no batch dimension) sent to a model with adaptive batching crashes MLServer's batcher
(``IndexError`` in ``mlserver/batching/shape.py``). The gateway refuses such requests itself, with the same rules
and messages as vatic's runtimes (:func:`vatic.serving.core.contract.decode_inputs`).

* :func:`parse_request` - the body's structure: :class:`MalformedRequest` (the gateway answers 422 with the
  ``field`` at fault) for a body that is not JSON, not an object, without an ``inputs`` list, or with a tensor
  whose ``name``/``datatype``/``shape``/``data`` is missing or of the wrong JSON type (as MLServer's 422).
* :func:`check_request` - the inputs against the declared ones: ``BadInput`` (answered 400
  ``{"error": "model <m>: ..."}``, as a vatic runtime answers) for unknown, missing or repeated inputs, another
  datatype, another rank or fixed dimension, a data size that is not the shape's, values of the wrong kind.

The original bytes are forwarded unchanged when the checks pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from vatic.serving.core.contract import DATATYPES, BadInput, RawTensor, TensorDecl, decode_inputs

__all__ = ["BadInput", "MalformedRequest", "check_request", "parse_request"]


class MalformedRequest(ValueError):
    """A body that is not a V2 inference request; ``field`` is the path of the first bad part."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def parse_request(body: bytes, payload: Any = None) -> list[RawTensor]:
    """The inputs of a V2 inference request body (unchecked data); :class:`MalformedRequest` when it is not one.
    ``payload``: the body already parsed (a door that built the JSON itself), so that it is not parsed again."""
    if payload is None:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise MalformedRequest(f"body is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise MalformedRequest("body must be a JSON object with an 'inputs' list (a V2 inference request)")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list):
        raise MalformedRequest("'inputs' must be a list of tensors", field="inputs")
    for key, kind in (("id", str), ("parameters", dict), ("outputs", list)):
        if payload.get(key) is not None and not isinstance(payload[key], kind):
            raise MalformedRequest(f"{key!r} must be a {'string' if kind is str else kind.__name__}", field=key)
    return [_tensor(item, f"inputs[{i}]") for i, item in enumerate(inputs)]


def _tensor(item: Any, where: str) -> RawTensor:
    if not isinstance(item, dict):
        raise MalformedRequest(f"{where} must be an object with name, datatype, shape and data", field=where)
    name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
    if not isinstance(name, str):
        raise MalformedRequest(f"{where}.name must be a string", field=f"{where}.name")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise MalformedRequest(
            f"{where}.datatype must be one of {', '.join(DATATYPES)}, got {datatype!r}", field=f"{where}.datatype"
        )
    if not isinstance(shape, list) or any(isinstance(d, bool) or not isinstance(d, int) for d in shape):
        raise MalformedRequest(f"{where}.shape must be a list of integers", field=f"{where}.shape")
    if "data" not in item:
        raise MalformedRequest(f"{where}.data is missing", field=f"{where}.data")
    if item.get("parameters") is not None and not isinstance(item["parameters"], dict):
        raise MalformedRequest(f"{where}.parameters must be an object", field=f"{where}.parameters")
    return RawTensor(name, str(datatype), tuple(shape), item["data"])


def check_request(inputs: Sequence[RawTensor], declared: Sequence[TensorDecl]) -> None:
    """Check parsed inputs against the model's declared inputs (``BadInput``); no declaration: nothing to check.

    Every declared input must have a batch dimension (rank >= 1): a scalar input is refused even where a model
    declares none, since model servers batch along the first dimension.
    """
    for tensor in inputs:
        if not tensor.shape:
            raise BadInput(f"input {tensor.name!r} has shape []; V2 inputs need a batch dimension first")
    if declared:
        decode_inputs(inputs, declared)
