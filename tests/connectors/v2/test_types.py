"""One home for the V2 wire types: one list of datatypes that every door, client and runtime reads."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import orjson
import pytest
from pydantic import ValidationError

import vatic.connectors.inference as client
from vatic.connectors.v2 import grpc as grpc_wire
from vatic.connectors.v2 import schema, types
from vatic.connectors.v2.types import Datatype, InferenceResponse, WireError
from vatic.serving.config.base import TensorSpec
from vatic.serving.core import contract
from vatic.serving.gateway import openapi

ROOT = Path(__file__).resolve().parents[3]
ALL = [datatype.value for datatype in Datatype]


def test_the_public_names_are_pinned() -> None:
    assert sorted(types.__all__) == [
        "Datatype",
        "InferenceRequest",
        "InferenceResponse",
        "ModelMetadata",
        "Tensor",
        "TensorMetadata",
        "WireError",
        "flatten",
    ]
    # the REST client re-exports the same objects, not copies
    for name in ("Datatype", "InferenceRequest", "InferenceResponse", "ModelMetadata", "Tensor", "TensorMetadata"):
        assert getattr(client, name) is getattr(types, name)


@pytest.mark.parametrize("datatype", [d for d in Datatype if d is not Datatype.BYTES], ids=str)
def test_raw_and_decoded_forms_of_a_datatype_agree(datatype: Datatype) -> None:
    raw = np.dtype(datatype.raw)
    decoded = np.dtype(datatype.numpy)
    assert (raw.kind, raw.itemsize) == (decoded.kind, decoded.itemsize)
    assert raw.byteorder in "<|="  # little-endian on the wire
    assert Datatype.of_numpy(decoded.name) is datatype


def test_bytes_are_length_prefixed_not_raw() -> None:
    assert Datatype.BYTES.raw is None
    assert Datatype.BYTES.numpy == "object"
    assert Datatype.of_numpy("object") is None


def test_every_door_and_the_runtime_read_the_one_list() -> None:
    assert openapi.DATATYPES == ALL
    assert sorted(contract.DATATYPES) == sorted(ALL)
    enum = schema.RequestInput.model_json_schema()["$defs"]["Datatype"]["enum"]
    assert enum == ALL
    # gRPC: every datatype has a typed contents field but FP16, which travels only as raw contents
    assert sorted(set(ALL) - set(grpc_wire._CONTENTS)) == ["FP16"]


@pytest.mark.parametrize("datatype", ALL)
def test_the_service_config_and_the_pydantic_bodies_take_every_datatype(datatype: str) -> None:
    assert TensorSpec(name="x", datatype=datatype, columns=["amount"]).datatype == datatype
    body = schema.RequestInput(name="x", shape=[1], datatype=datatype, data=[1])
    assert orjson.loads(body.model_dump_json())["datatype"] == datatype


def test_a_datatype_that_is_not_v2s_is_refused_everywhere() -> None:
    with pytest.raises(ValidationError):
        TensorSpec(name="x", datatype="BF16", columns=["amount"])
    with pytest.raises(ValidationError):
        schema.RequestInput(name="x", shape=[1], datatype="FP128", data=[1])
    raw = orjson.dumps({"model_name": "m", "outputs": [{"name": "y", "shape": [1], "datatype": "FP128", "data": [1]}]})
    with pytest.raises(WireError, match=r"output 'y': unknown datatype 'FP128'"):
        InferenceResponse.from_json(raw)


def test_no_other_module_spells_out_the_datatypes() -> None:
    """A second list drifts (the service config once lacked UINT16..UINT64): only types.py may name them all."""
    offenders = []
    for folder in ("cli", "connectors", "examples", "serving", "streaming", "schemas"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == ROOT / "connectors" / "v2" / "types.py":
                continue
            literals = {
                node.value
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.Constant) and isinstance(node.value, str)
            }
            if {"UINT16", "UINT32", "FP16", "INT8"} <= literals:
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
