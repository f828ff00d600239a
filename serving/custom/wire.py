"""Wire types of the V2 (Open Inference Protocol) REST API, as pydantic models (requests validated, docs shown).

The same JSON MLServer 1.7.1 speaks: a body that does not fit these models is answered 422 with FastAPI's
``{"detail": [...]}``, as MLServer does. Tensor ``data`` is kept as a plain (flat or nested) list here; its
checks against the model's declared inputs are :func:`vatic.serving.runtimes.contract.decode_inputs`'.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Datatype",
    "ErrorResponse",
    "InferenceRequest",
    "InferenceResponse",
    "MetadataModelResponse",
    "MetadataServerResponse",
    "MetadataTensor",
    "Parameters",
    "RequestInput",
    "RequestOutput",
    "ResponseOutput",
]

Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"
]


class Parameters(BaseModel):
    """Free-form V2 parameters; ``content_type`` is MLServer's codec hint (``np``, ``str``, ``pd``...)."""

    model_config = ConfigDict(extra="allow")

    content_type: str | None = None


class RequestInput(BaseModel):
    """One input tensor: ``data`` holds prod(shape) values, row-major, flat or nested."""

    name: str
    shape: list[int] = Field(description="the tensor's shape; the first dimension is the batch (N)")
    datatype: Datatype
    parameters: Parameters | None = None
    data: list[Any] = Field(description="the values, row-major; strings for BYTES, null for a missing float")


class RequestOutput(BaseModel):
    """An output the caller wants (none listed: every output of the model)."""

    name: str
    parameters: Parameters | None = None


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: Parameters | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: Datatype
    parameters: Parameters | None = None
    data: list[Any]


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


class MetadataTensor(BaseModel):
    name: str
    datatype: Datatype
    shape: list[int] = Field(description="-1 marks a dimension of any size")
    parameters: Parameters | None = None


class MetadataModelResponse(BaseModel):
    name: str
    versions: list[str] = Field(default_factory=list)
    platform: str = ""
    inputs: list[MetadataTensor] = Field(default_factory=list)
    outputs: list[MetadataTensor] = Field(default_factory=list)
    parameters: Parameters | None = None


class MetadataServerResponse(BaseModel):
    name: str
    version: str
    extensions: list[str] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    """Every error the server answers itself (400 bad input, 404 unknown model, 500 model failure)."""

    error: str
