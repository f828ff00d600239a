"""The V2 (Open Inference Protocol) REST bodies as pydantic models: what a FastAPI door validates and documents.

The same JSON MLServer 1.7.1 speaks: a body that does not fit these models is answered 422 with FastAPI's
``{"detail": [...]}``, as MLServer does. Datatypes are :class:`vatic.connectors.v2.types.Datatype`, the one
list. Tensor ``data`` is kept as a plain (flat or nested) list here: its checks against the model's declared
inputs belong to the model's runtime.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from vatic.connectors.v2.types import Datatype

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
    "json_schema",
]


class Parameters(BaseModel):
    """Free-form V2 parameters; ``content_type`` is MLServer's codec hint (``np``, ``str``, ``pd``...)."""

    model_config = ConfigDict(extra="allow")

    content_type: str | None = None


class RequestInput(BaseModel):
    """One input tensor: ``data`` holds prod(shape) values, row-major, flat or nested."""

    name: str
    shape: list[Annotated[int, Field(ge=0)]] = Field(
        description="the tensor's shape; the first dimension is the batch (N)"
    )
    datatype: Datatype
    parameters: Parameters | None = None
    data: list[Any] = Field(description="the values, row-major; strings for BYTES, null for a missing float")


class RequestOutput(BaseModel):
    """An output the caller wants (none listed: every output of the model)."""

    name: str
    parameters: Parameters | None = None


# The JSON bodies of an infer call and its answer as a door validates and documents them: the same protocol
# messages as vatic.connectors.v2.types.InferenceRequest / InferenceResponse (the client's wire values), and named
# as the protocol names them, because the names are OpenAPI component names clients are generated from.
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
    """Model metadata; MLServer answers ``null`` lists (and platform) while a model is loading."""

    name: str
    versions: list[str] | None = Field(default_factory=list)
    platform: str | None = ""
    inputs: list[MetadataTensor] | None = Field(default_factory=list)
    outputs: list[MetadataTensor] | None = Field(default_factory=list)
    parameters: Parameters | None = None


class MetadataServerResponse(BaseModel):
    name: str
    version: str
    extensions: list[str] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    """Every error the server answers itself (400 bad input, 404 unknown model, 500 model failure)."""

    error: str


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema of one of these bodies with every ``$ref`` inlined: an OpenAPI fragment that needs no
    components, for a door that passes bodies through rather than parsing them into these models."""
    document = model.model_json_schema()
    definitions = document.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, list):
            return [inline(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {key: inline(value) for key, value in node.items() if key != "$ref"}
        if "$ref" in node:
            out = {**inline(definitions[node["$ref"].rsplit("/", 1)[-1]]), **out}
        return out

    result: dict[str, Any] = inline(document)
    return result
