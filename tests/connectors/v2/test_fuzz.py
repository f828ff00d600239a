"""Fuzz of the V2 wire conversions every door runs on untrusted input: the binary tensor data extension and
the gRPC ModelInfer request. Whatever the bytes, the answer is a plain JSON request or a BinaryFormatError
naming the part at fault - never another exception (which a door would answer 500 / INTERNAL)."""

from __future__ import annotations

import struct

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vatic.connectors.v2 import grpc as wire
from vatic.connectors.v2.binary import BinaryFormatError, json_request

DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
             "FP64", "BYTES", "BF16", "NOPE", ""]  # fmt: skip
shapes = st.lists(st.integers(min_value=-2, max_value=6), max_size=3)
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))


@st.composite
def binary_bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    tensors = []
    for i in range(draw(st.integers(0, 3))):
        tensor: dict[str, object] = {
            "name": f"t{i}",
            "datatype": draw(st.sampled_from(DATATYPES)),
            "shape": draw(shapes),
        }
        if draw(st.booleans()):
            tensor["parameters"] = {"binary_data_size": draw(st.one_of(st.integers(-4, 64), st.text(max_size=3)))}
        else:
            tensor["data"] = draw(st.lists(st.integers(0, 3), max_size=4))
        tensors.append(tensor)
    header = orjson.dumps({"inputs": tensors}) if draw(st.booleans()) else draw(st.binary(max_size=40))
    tail = draw(st.binary(max_size=80))
    length = draw(st.one_of(st.just(str(len(header))), st.integers(-5, 200).map(str), st.text(max_size=4)))
    return header + tail, length


@SETTINGS
@given(binary_bodies())
def test_any_binary_body_is_read_or_refused_naming_the_part(body: tuple[bytes, str]) -> None:
    content, length = body
    try:
        plain = json_request(content, length)
    except BinaryFormatError as exc:
        refused = exc
    else:
        assert isinstance(plain["inputs"], list)
        for tensor in plain["inputs"]:
            assert "binary_data_size" not in (tensor.get("parameters") or {})
        return
    assert refused.field  # either outcome is fine, each with its own checks
    assert refused.message


@st.composite
def infer_requests(draw: st.DrawFn) -> object:
    request = wire.message("inference.ModelInferRequest")(model_name="m")
    raw = draw(st.booleans())
    for i in range(draw(st.integers(0, 3))):
        datatype = draw(st.sampled_from(DATATYPES))
        tensor = request.inputs.add(
            name=f"t{i}", datatype=datatype, shape=draw(shapes.map(lambda s: [abs(d) for d in s]))
        )
        if raw:
            request.raw_input_contents.append(draw(st.binary(max_size=48)))
        elif datatype in ("FP32",):
            tensor.contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=4)))
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=4), max_size=4)))
        elif datatype == "INT64":
            tensor.contents.int64_contents.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4)))
    if raw and draw(st.booleans()):
        request.raw_input_contents.append(b"extra")  # one entry too many
    return request


@SETTINGS
@given(infer_requests())
def test_any_grpc_infer_request_converts_or_is_refused_naming_the_part(request: object) -> None:
    try:
        plain = wire.infer_request_to_json(request)
    except BinaryFormatError as exc:
        assert exc.field  # noqa: PT017 - hypothesis: either outcome is fine, each with its own checks
        return
    orjson.dumps(plain)  # what the model server will be sent is JSON
    assert len(plain["inputs"]) == len(request.inputs)  # type: ignore[attr-defined]


def test_a_bytes_element_running_past_its_data_is_refused() -> None:
    request = wire.message("inference.ModelInferRequest")(model_name="m")
    request.inputs.add(name="t", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(struct.pack("<I", 10) + b"abc")
    with pytest.raises(BinaryFormatError, match="runs past"):
        wire.infer_request_to_json(request)
