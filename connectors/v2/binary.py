"""The binary tensor data extension of the V2 (Open Inference) REST protocol, both directions.

What tritonclient and Triton speak by default: a request body is a JSON header of
``Inference-Header-Content-Length`` bytes followed by the raw data of every input whose
``parameters.binary_data_size`` is set, in input order; a response is the same, for the outputs the request
asked in binary (``parameters.binary_data_output`` for all of them, ``outputs[i].parameters.binary_data`` for
one). Raw data is row-major little-endian; a ``BYTES`` element is a 4-byte little-endian length and its bytes.

:func:`json_request` turns such a request into the plain JSON request every V2 server reads (MLServer does not
speak the extension); :func:`binary_response` turns a JSON response into the binary form the caller asked for
(None: it asked for none). Anything wrong with a request is :class:`BinaryFormatError` naming the header or the
input at fault (a door answers 400 / ``INVALID_ARGUMENT``).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import orjson

from vatic.connectors.v2.types import Datatype, flatten
from vatic.schemas.errors import BinaryFormatError

__all__ = [
    "HEADER",
    "BinaryFormatError",
    "binary_response",
    "decode_tensor_data",
    "encode_tensor_data",
    "json_request",
    "wants_binary",
]

#: the HTTP header carrying the JSON part's length (request and response)
HEADER = "inference-header-content-length"

_LENGTH = struct.Struct("<I")


def json_request(body: bytes, header_length: str) -> dict[str, Any]:
    """The plain JSON request of a binary-extension body (``header_length``: the header's value as sent)."""
    try:
        size = int(header_length)
    except ValueError:
        raise BinaryFormatError(
            f"{HEADER} must be a non-negative integer, got {header_length!r}", field=HEADER
        ) from None
    if size < 0 or size > len(body):
        raise BinaryFormatError(
            f"{HEADER} is {size} but the body has {len(body)} bytes: the JSON part cannot run past the body",
            field=HEADER,
        )
    try:
        request = orjson.loads(body[:size])
    except orjson.JSONDecodeError as exc:
        raise BinaryFormatError(
            f"the first {size} bytes ({HEADER}) are not a JSON object: {exc}", field=HEADER
        ) from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise BinaryFormatError("the JSON part must be an object with an 'inputs' list", field="inputs")
    offset = size
    for index, tensor in enumerate(request["inputs"]):
        where = f"inputs[{index}]"
        if not isinstance(tensor, dict):
            raise BinaryFormatError(f"{where} must be an object", field=where)
        parameters = tensor.get("parameters") or {}
        if not isinstance(parameters, dict) or "binary_data_size" not in parameters:
            continue
        name = tensor.get("name", where)
        length = parameters.pop("binary_data_size")
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise BinaryFormatError(f"input {name!r}: binary_data_size must be a non-negative integer", field=where)
        if offset + length > len(body):
            raise BinaryFormatError(
                f"input {name!r}: binary_data_size {length} runs past the body ({len(body) - offset} bytes left)",
                field=where,
            )
        tensor["data"] = decode_tensor_data(body[offset : offset + length], tensor, str(name), where)
        offset += length
        if not parameters:
            tensor.pop("parameters", None)
    if offset != len(body):
        raise BinaryFormatError(
            f"{len(body) - offset} bytes after the last binary input: sizes and body do not add up", field=HEADER
        )
    return request


def decode_tensor_data(raw: bytes, tensor: Mapping[str, Any], name: str, where: str) -> list[Any]:
    """The JSON ``data`` (flat) of one tensor's raw data, checked against its datatype and shape."""
    datatype, shape = tensor.get("datatype"), tensor.get("shape")
    if not isinstance(shape, list) or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
        raise BinaryFormatError(f"input {name!r}: shape must be a list of non-negative integers", field=where)
    count = math.prod(shape)
    if datatype == "BYTES":
        items = list(_bytes_elements(raw, name, where))
        if len(items) != count:
            raise BinaryFormatError(
                f"input {name!r}: {len(items)} BYTES elements in its binary data, shape {shape} holds {count}",
                field=where,
            )
        try:
            return [item.decode("utf-8") for item in items]
        except UnicodeDecodeError:
            raise BinaryFormatError(
                f"input {name!r}: a BYTES element is not UTF-8 text, which the JSON protocol of the model server "
                "cannot carry",
                field=where,
            ) from None
    dtype = _raw_dtype(datatype)
    if dtype is None:
        raise BinaryFormatError(
            f"input {name!r}: datatype {datatype!r} has no JSON form (BF16) or is not a V2 datatype", field=where
        )
    expected = count * np.dtype(dtype).itemsize
    if len(raw) != expected:
        raise BinaryFormatError(
            f"input {name!r}: binary_data_size {len(raw)} but shape {shape} of {datatype} takes {expected} bytes",
            field=where,
        )
    values: list[Any] = np.frombuffer(raw, dtype=dtype).tolist()
    return values


def _bytes_elements(raw: bytes, name: str, where: str) -> Iterator[bytes]:
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise BinaryFormatError(f"input {name!r}: a BYTES element's 4-byte length is cut off", field=where)
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise BinaryFormatError(
                f"input {name!r}: a BYTES element of {length} bytes runs past its data", field=where
            )
        yield raw[offset : offset + length]
        offset += length


def wants_binary(request: Mapping[str, Any]) -> dict[str, bool]:
    """Which outputs the request asked for in binary, by name ("*": every output not named)."""
    parameters = request.get("parameters") or {}
    everything = bool(parameters.get("binary_data_output", False)) if isinstance(parameters, dict) else False
    asked = {"*": everything}
    for output in request.get("outputs") or []:
        if isinstance(output, dict) and isinstance(output.get("name"), str):
            own = output.get("parameters") or {}
            asked[output["name"]] = bool(own.get("binary_data", everything)) if isinstance(own, dict) else everything
    return asked


def binary_response(response: dict[str, Any], asked: Mapping[str, bool]) -> tuple[bytes, int] | None:
    """The response body with the asked outputs' data in binary, and its JSON part's length; None when no output
    is to be binary (the JSON response stands as it is)."""
    outputs = response.get("outputs") or []
    chosen = [o for o in outputs if isinstance(o, dict) and asked.get(str(o.get("name")), asked.get("*", False))]
    if not chosen:
        return None
    blobs = []
    for output in chosen:
        raw = encode_tensor_data(output)
        output.pop("data", None)
        output["parameters"] = {**(output.get("parameters") or {}), "binary_data_size": len(raw)}
        blobs.append(raw)
    header = orjson.dumps(response)
    return header + b"".join(blobs), len(header)


def encode_tensor_data(output: Mapping[str, Any]) -> bytes:
    """The raw data of one JSON tensor (its nested ``data`` flattened row-major)."""
    data = output.get("data")
    flat = flatten(data) if data is not None else []
    if output.get("datatype") == "BYTES":
        parts = []
        for item in flat:
            data = item if isinstance(item, bytes) else str(item).encode("utf-8")
            parts.append(_LENGTH.pack(len(data)) + data)
        return b"".join(parts)
    dtype = _raw_dtype(output.get("datatype")) or "<f8"
    return np.asarray(flat, dtype=dtype).tobytes()


def _raw_dtype(datatype: Any) -> str | None:
    """The raw form of a V2 datatype named on the wire; None for BYTES, BF16 or a name that is not V2's."""
    try:
        return Datatype(str(datatype)).raw
    except ValueError:
        return None
