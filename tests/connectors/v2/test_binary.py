"""The binary tensor data extension's codec: a binary request read into plain JSON, a JSON response written in
binary, and every malformed request refused naming the header or the input."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest

from vatic.connectors.v2.binary import binary_response, json_request, wants_binary
from vatic.schemas.errors import BinaryFormatError


def _request(inputs: list[tuple[dict, bytes]], **parameters: object) -> tuple[bytes, str]:
    """A body as tritonclient builds it: JSON header, then each binary input's raw data in order."""
    header = {"inputs": [meta for meta, _ in inputs]}
    if parameters:
        header["parameters"] = parameters
    text = orjson.dumps(header)
    return text + b"".join(raw for _, raw in inputs), str(len(text))


def _bytes(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def test_numeric_and_bytes_inputs_become_json_data() -> None:
    x = np.arange(6, dtype="<f4").reshape(2, 3) / 10
    tags = _bytes(b"a", "\u00e9".encode())
    body, length = _request(
        [
            ({"name": "x", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": x.nbytes}},
             x.tobytes()),
            ({"name": "tag", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(tags)}}, tags),
            ({"name": "n", "datatype": "INT64", "shape": [2], "data": [1, 2]}, b""),
        ],
        binary_data_output=True,
    )  # fmt: skip
    plain = json_request(body, length)
    x_in, tag_in, n_in = plain["inputs"]
    assert np.array_equal(np.asarray(x_in["data"], dtype="<f4"), x.ravel())
    assert "parameters" not in x_in  # binary_data_size consumed
    assert tag_in["data"] == ["a", "\u00e9"]
    assert n_in["data"] == [1, 2]
    assert plain["parameters"] == {"binary_data_output": True}


@pytest.mark.parametrize(
    ("mutate", "field", "says"),
    [
        (lambda b, n: (b, str(len(b) + 1)), "inference-header-content-length", "run past the body"),
        (lambda b, n: (b, "twelve"), "inference-header-content-length", "non-negative integer"),
        (lambda b, n: (b + b"\x00", n), "inference-header-content-length", "do not add up"),
        (lambda b, n: (b[:-1], n), "inputs[0]", "runs past the body"),
    ],
)
def test_malformed_bodies_are_refused_naming_what_is_wrong(mutate, field, says) -> None:
    raw = np.zeros(4, dtype="<f8").tobytes()
    body, length = _request([({"name": "x", "datatype": "FP64", "shape": [4], "parameters": {"binary_data_size": 32}},
                              raw)])  # fmt: skip
    bad_body, bad_length = mutate(body, length)
    with pytest.raises(BinaryFormatError, match=says) as caught:
        json_request(bad_body, bad_length)
    assert caught.value.field == field


def test_a_size_that_does_not_fit_the_shape_and_datatype_names_the_input() -> None:
    raw = np.zeros(3, dtype="<f8").tobytes()
    body, length = _request([({"name": "x", "datatype": "FP64", "shape": [4], "parameters": {"binary_data_size": 24}},
                              raw)])  # fmt: skip
    with pytest.raises(BinaryFormatError, match="input 'x': binary_data_size 24 but shape \\[4\\] of FP64 takes 32"):
        json_request(body, length)


def test_bf16_and_non_utf8_bytes_have_no_json_form() -> None:
    body, length = _request([({"name": "h", "datatype": "BF16", "shape": [1], "parameters": {"binary_data_size": 2}},
                              b"\x00\x00")])  # fmt: skip
    with pytest.raises(BinaryFormatError, match="BF16"):
        json_request(body, length)
    blob = _bytes(b"\xff\xfe")
    body, length = _request([({"name": "t", "datatype": "BYTES", "shape": [1],
                               "parameters": {"binary_data_size": len(blob)}}, blob)])  # fmt: skip
    with pytest.raises(BinaryFormatError, match="not UTF-8"):
        json_request(body, length)


def test_a_response_is_written_in_binary_for_the_outputs_asked() -> None:
    response = {
        "model_name": "m",
        "outputs": [
            {"name": "p", "datatype": "FP64", "shape": [2, 1], "data": [0.5, 1.5]},
            {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["x", "yz"]},
        ],
    }
    asked = wants_binary({"outputs": [{"name": "p", "parameters": {"binary_data": True}}, {"name": "label"}]})
    encoded = binary_response(response, asked)
    assert encoded is not None
    content, length = encoded
    header = orjson.loads(content[:length])
    p, label = header["outputs"]
    assert p["parameters"]["binary_data_size"] == 16
    assert "data" not in p
    assert label["data"] == ["x", "yz"]  # not asked in binary: stays JSON
    assert np.frombuffer(content[length:], dtype="<f8").tolist() == [0.5, 1.5]

    labels = {"outputs": [{"name": "label", "datatype": "BYTES", "shape": [2], "data": ["x", "yz"]}]}
    everything = binary_response(labels, wants_binary({"parameters": {"binary_data_output": True}}))
    assert everything is not None
    content, length = everything
    assert content[length:] == _bytes(b"x", b"yz")
    assert binary_response({"outputs": [{"name": "p", "datatype": "FP64", "shape": [1], "data": [1.0]}]},
                           wants_binary({})) is None  # fmt: skip
