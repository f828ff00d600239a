"""Fuzz of the V2 wire conversions every door runs on untrusted input: the binary tensor data extension and
the gRPC ModelInfer request. Whatever the bytes, the answer is a plain JSON request or a BinaryFormatError
naming the part at fault - never another exception (which a door would answer 500 / INTERNAL)."""

from __future__ import annotations

import struct

import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from tests.fixtures.v2_strategies import binary_bodies, infer_requests
from vatic.connectors.v2 import grpc as wire
from vatic.connectors.v2.binary import json_request
from vatic.schemas.errors import BinaryFormatError

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))


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
