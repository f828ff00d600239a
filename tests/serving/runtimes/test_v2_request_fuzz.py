"""Fuzzing the runtimes' side of a V2 request (hypothesis, server environment): whatever body MLServer's own
request model accepts, vatic's runtimes turn it into checked arrays or a ``BadInput`` (their 400) - never another
exception, which MLServer would answer with a 500.

The path is the one every vatic runtime runs: ``mlserver.types.InferenceRequest`` (MLServer's REST layer; what
it refuses is its 422) -> :func:`vatic.serving.runtimes.base.raw_tensors` ->
:func:`vatic.serving.core.contract.decode_inputs` against declared inputs like the demo models'.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlserver.types import InferenceRequest
from pydantic import ValidationError

from vatic.serving.core.contract import DATATYPES, BadInput, TensorDecl, decode_inputs
from vatic.serving.runtimes.base import raw_tensors

FUZZ = settings(
    max_examples=300, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
DECLARED = (TensorDecl("input-0", "FP32", (-1, 3)), TensorDecl("text", "BYTES", (-1, 2)))

SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=5)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=14,
)


@st.composite
def tensors(draw: st.DrawFn) -> dict[str, Any]:
    decl = draw(st.sampled_from(DECLARED))
    shape = draw(
        st.sampled_from([[1, decl.shape[1]], [2, decl.shape[1]], [0, decl.shape[1]]])
        | st.lists(st.integers(-2, 4) | st.sampled_from([2**40, 10**20]), max_size=3)
    )
    size = math.prod(shape) if all(0 <= d <= 4 for d in shape) else 1
    return {
        "name": draw(st.sampled_from([decl.name, decl.name, "nope"])),
        "datatype": draw(st.sampled_from([decl.datatype, decl.datatype, *DATATYPES])),
        "shape": shape,
        "data": draw(st.lists(SCALARS, min_size=size, max_size=size) | JSON),
    }


def _outcome(call: Callable[[], Any], *expected: type[Exception]) -> tuple[Any, Exception | None]:
    try:
        return call(), None
    except expected as exc:
        return None, exc


@FUZZ
@given(inputs=st.lists(tensors(), max_size=3), extra=st.dictionaries(st.sampled_from(["id", "parameters"]), JSON))
def test_what_mlserver_accepts_decodes_or_is_a_bad_input(inputs: list[dict[str, Any]], extra: dict[str, Any]) -> None:
    request, refused = _outcome(lambda: InferenceRequest.model_validate({"inputs": inputs, **extra}), ValidationError)
    if refused is not None:
        return  # MLServer's REST layer answers 422 itself
    decoded, error = _outcome(lambda: decode_inputs(raw_tensors(request), DECLARED), BadInput)
    if error is not None:
        assert str(error)
        return
    assert [array.shape[1] for array in decoded.values()] == [3, 2]
    assert decoded["input-0"].dtype.name == "float32"
