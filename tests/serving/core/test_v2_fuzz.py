"""Fuzzing the V2 request path (hypothesis): whatever a client or a model server sends, the parsers and tensor
builders answer with vatic's typed errors only - never an IndexError, a RecursionError or a NumPy exception that
would become a 500 at the gateway or a crashed task in the stream.

* the gateway's pass-through check (:mod:`vatic.serving.gateway.v2`): any body -> ``MalformedRequest`` (422) or
  ``BadInput`` (400) or accepted;
* the runtimes' decoder (:func:`vatic.serving.core.contract.decode_inputs`): any tensors (names, datatypes,
  huge or negative shapes, data of any JSON shape and depth) -> decoded arrays of the given shape, or ``BadInput``;
* the core's tensor builder (:func:`vatic.serving.core.tensors.build_inputs`): any event values -> tensors for
  the clean events and a problem for each other event, never an exception;
* the client's wire types (:mod:`vatic.connectors.v2.types`): any response body -> an ``InferenceResponse`` or
  ``ValueError`` (the client reports it as ``UnexpectedModelResponse``), and ``split`` -> rows or ``ValueError``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vatic.connectors.v2.types import InferenceRequest, InferenceResponse
from vatic.serving.config.model import ModelSpec
from vatic.serving.core.contract import DATATYPES, BadInput, RawTensor, TensorDecl, decode_inputs
from vatic.serving.core.tensors import build_inputs
from vatic.serving.gateway.v2 import MalformedRequest, check_request, parse_request

FUZZ = settings(
    max_examples=200, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
)

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=6)
    | st.binary(max_size=4).map(lambda b: b.decode("latin-1"))
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=16,
)
DIMS = st.integers(-3, 6) | st.sampled_from([2**31, 2**63, 10**30]) | st.floats(0, 4) | st.booleans()
SHAPES = st.lists(DIMS, max_size=4) | JSON
DATATYPE_NAMES = st.sampled_from([*DATATYPES, "FP128", "", "fp32"])

#: declared inputs like the demo models' (a matrix, a squeezed text column) and a wide integer one
DECLARED = (
    TensorDecl("input-0", "FP32", (-1, 3)),
    TensorDecl("text", "BYTES", (-1,)),
    TensorDecl("count", "INT8", (-1, 2)),
)


def _data(shape: list[int]) -> st.SearchStrategy[Any]:
    """Data of roughly the right size (so that checks past the size check are reached), or anything."""
    size = math.prod(shape) if shape and all(isinstance(d, int) and 0 <= d <= 6 for d in shape) else 1
    return st.lists(SCALARS, min_size=size, max_size=size) | JSON


@st.composite
def raw_tensors(draw: st.DrawFn) -> RawTensor:
    decl = draw(st.sampled_from(DECLARED))
    name = draw(st.sampled_from([decl.name, decl.name, "other", ""]))
    datatype = draw(st.sampled_from([decl.datatype, decl.datatype]) | DATATYPE_NAMES)
    shape = draw(st.sampled_from([[2, *decl.shape[1:]], [1, *decl.shape[1:]]]) | st.lists(DIMS, max_size=4))
    return RawTensor(name, datatype, tuple(shape) if isinstance(shape, list) else shape, draw(_data(shape)))


def _deep(depth: int) -> bytes:
    """JSON text of one number nested ``depth`` lists deep (orjson's writer stops at 254 levels, its reader
    accepts about 1020)."""
    return b"[" * depth + b"1.0" + b"]" * depth


def _outcome(call: Callable[[], Any], *expected: type[Exception]) -> tuple[Any, Exception | None]:
    """(result, None) or (None, the exception) for the ``expected`` types; any other exception fails the test."""
    try:
        return call(), None
    except expected as exc:
        return None, exc


@FUZZ
@given(tensors=st.lists(raw_tensors(), max_size=4))
def test_decode_inputs_decodes_or_raises_bad_input(tensors: list[RawTensor]) -> None:
    decoded, error = _outcome(lambda: decode_inputs(tensors, DECLARED), BadInput)
    if error is not None:
        assert str(error)
        return
    assert list(decoded) == [decl.name for decl in DECLARED]
    by_name = {t.name: t for t in tensors}
    for name, array in decoded.items():
        assert array.shape == by_name[name].shape


@pytest.mark.parametrize("depth", [2, 50, 500, 995, 1015])
def test_deeply_nested_data_is_a_bad_input_not_a_recursion_error(depth: int) -> None:
    """Found here: the runtimes' flattener recursed once per nesting level, so data nested ~1000 deep (which JSON
    parsers accept) raised RecursionError - a 500 from the gateway's check and from the runtime."""
    body = b'{"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 3], "data": ' + _deep(depth) + b"}]}"
    tensors = parse_request(body)
    with pytest.raises(BadInput, match="has 1 values but shape"):
        check_request(tensors, DECLARED[:1])


def _dumps(value: Any) -> bytes:
    """JSON text of ``value`` (the standard library's writer: integers beyond 64 bits, NaN and Infinity too,
    which JSON readers then refuse or take)."""
    return json.dumps(value).encode()


@st.composite
def v2_bodies(draw: st.DrawFn) -> bytes:
    """Bytes, any JSON, or a V2-looking body whose parts are drawn from valid and invalid values."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(st.binary(max_size=40))
    if choice == 1:
        return _dumps(draw(JSON))
    tensors = []
    for tensor in draw(st.lists(raw_tensors(), max_size=3)):
        item: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        item["data"] = tensor.data
        for key in draw(st.lists(st.sampled_from(["name", "datatype", "shape", "data"]), max_size=1)):
            item[key] = draw(JSON)  # one part replaced by anything
        tensors.append(item)
    body: dict[str, Any] = {"inputs": tensors}
    if choice == 3:
        body.update(draw(st.dictionaries(st.sampled_from(["id", "parameters", "outputs", "inputs"]), JSON)))
    return _dumps(body)


@FUZZ
@given(body=v2_bodies())
def test_the_gateway_check_answers_422_400_or_forwards(body: bytes) -> None:
    _, error = _outcome(lambda: check_request(parse_request(body), DECLARED), MalformedRequest, BadInput)
    if error is not None:
        assert str(error)


# --- the core's tensor builder ----------------------------------------------------------------------------------

MODEL = ModelSpec.model_validate(
    {
        "name": "m",
        "inputs": [
            {
                "name": "x",
                "datatype": "FP32",
                "columns": ["amount", "flag", "v:f", "v:f#missing", "channel"],
                "encodings": {"channel": {"web": 0, "pos": 1}},
            },
            {"name": "title", "datatype": "BYTES", "columns": ["title"], "squeeze": True},
            {"name": "n", "datatype": "INT64", "columns": ["count"]},
            {"name": "b", "datatype": "BOOL", "columns": ["flag"], "squeeze": True},
        ],
        "outputs": [{"name": "y"}],
    }
)
EVENT = st.fixed_dictionaries(
    {},
    optional={key: JSON for key in ("amount", "flag", "channel", "title", "count")},
)


@FUZZ
@given(
    events=st.lists(EVENT, min_size=1, max_size=5),
    features=st.lists(st.dictionaries(st.just("v:f"), JSON, max_size=1), min_size=5, max_size=5),
)
def test_build_inputs_isolates_every_bad_event_and_never_raises(events: list[dict[str, Any]], features: list) -> None:
    tensors, problems = build_inputs(MODEL, events, features[: len(events)], [{}] * len(events))
    assert set(problems) <= set(range(len(events)))
    clean = len(events) - len(problems)
    for tensor in tensors:
        assert tensor.shape[0] == clean
        assert len(tensor.data) == math.prod(tensor.shape)
    if clean:
        assert InferenceRequest(inputs=tuple(tensors)).to_json()  # what is built can be sent


# --- the client's wire types ------------------------------------------------------------------------------------


@st.composite
def response_bodies(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return _dumps(draw(JSON))
    outputs = [
        {
            "name": draw(st.text(max_size=3)),
            "datatype": draw(DATATYPE_NAMES),
            "shape": draw(SHAPES),
            "data": draw(JSON),
        }
        for _ in range(draw(st.integers(0, 2)))
    ]
    return _dumps({"model_name": "m", "outputs": outputs})


@FUZZ
@given(body=response_bodies(), n=st.integers(0, 3))
def test_any_response_body_parses_and_splits_or_raises_value_error(body: bytes, n: int) -> None:
    rows, error = _outcome(lambda: InferenceResponse.from_json(body).split(n), ValueError)
    if error is not None:
        assert str(error)
        return
    assert len(rows) == n


def test_a_deeply_nested_response_is_a_value_error_not_a_recursion_error() -> None:
    """The client's flattener recursed too (a model server answering data nested ~1000 deep)."""
    body = b'{"model_name": "m", "outputs": [{"name": "y", "datatype": "FP64", "shape": [2], "data": '
    body += _deep(1000) + b"}]}"
    with pytest.raises(ValueError, match="has 1 values"):
        InferenceResponse.from_json(body).split(2)
