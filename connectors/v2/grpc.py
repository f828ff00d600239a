"""The V2 (Open Inference) protocol's gRPC messages, and their conversion to and from the V2 JSON.

The messages of ``inference.GRPCInferenceService`` that vatic's gRPC door serves (ServerLive, ServerReady,
ModelReady, ServerMetadata, ModelMetadata, ModelInfer) are declared here as data and built into message
classes at import, in a descriptor pool of their own: no generated code, no protoc, and the same field numbers
as every V2 client (tritonclient.grpc, MLServer's, KServe's). The vatic service ``vatic.Gateway`` adds
``Predict``: an event in, the prediction event out, both as JSON bytes (exact numbers, no Struct doubles).

Conversions (the gRPC door turns a request into the JSON the model server reads and the answer back):

* :func:`infer_request_to_json` - tensor data from ``contents`` (by datatype) or from ``raw_input_contents``
  (little-endian, one entry per input, what tritonclient.grpc sends); a malformed request is
  :class:`~vatic.connectors.v2.binary.BinaryFormatError` naming the input.
* :func:`infer_response_from_json` - every output's data as ``raw_output_contents`` (as Triton answers).

And the other way round, for vatic's gRPC client of a model server
(:class:`~vatic.connectors.inference_grpc.GrpcInferenceClient`): :func:`infer_request_from_json` (every input's data
as ``raw_input_contents``, so that MLServer answers with ``raw_output_contents`` too), :func:`infer_response_to_json`
and :func:`metadata_to_json`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from vatic.connectors.v2.binary import decode_tensor_data, encode_tensor_data
from vatic.connectors.v2.types import Datatype
from vatic.schemas.errors import BinaryFormatError

__all__ = [
    "GATEWAY_SERVICE",
    "INFERENCE_SERVICE",
    "BinaryFormatError",
    "infer_request_from_json",
    "infer_request_to_json",
    "infer_response_from_json",
    "infer_response_to_json",
    "message",
    "metadata_to_json",
]

INFERENCE_SERVICE = "inference.GRPCInferenceService"
GATEWAY_SERVICE = "vatic.Gateway"

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "bool": _F.TYPE_BOOL, "string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES, "int32": _F.TYPE_INT32,
    "int64": _F.TYPE_INT64, "uint32": _F.TYPE_UINT32, "uint64": _F.TYPE_UINT64, "float": _F.TYPE_FLOAT,
    "double": _F.TYPE_DOUBLE,
}  # fmt: skip

#: message -> [(number, name, type, repeated, oneof)]; a type that is not a scalar is a message of the package
_INFERENCE: dict[str, list[tuple[int, str, str, bool, str | None]]] = {
    "ServerLiveRequest": [],
    "ServerLiveResponse": [(1, "live", "bool", False, None)],
    "ServerReadyRequest": [],
    "ServerReadyResponse": [(1, "ready", "bool", False, None)],
    "ModelReadyRequest": [(1, "name", "string", False, None), (2, "version", "string", False, None)],
    "ModelReadyResponse": [(1, "ready", "bool", False, None)],
    "ServerMetadataRequest": [],
    "ServerMetadataResponse": [
        (1, "name", "string", False, None), (2, "version", "string", False, None),
        (3, "extensions", "string", True, None),
    ],
    "ModelMetadataRequest": [(1, "name", "string", False, None), (2, "version", "string", False, None)],
    "ModelMetadataResponse.TensorMetadata": [
        (1, "name", "string", False, None), (2, "datatype", "string", False, None), (3, "shape", "int64", True, None),
    ],
    "ModelMetadataResponse": [
        (1, "name", "string", False, None), (2, "versions", "string", True, None),
        (3, "platform", "string", False, None), (4, "inputs", "ModelMetadataResponse.TensorMetadata", True, None),
        (5, "outputs", "ModelMetadataResponse.TensorMetadata", True, None), (6, "parameters", "map", True, None),
    ],
    "InferParameter": [
        (1, "bool_param", "bool", False, "parameter_choice"), (2, "int64_param", "int64", False, "parameter_choice"),
        (3, "string_param", "string", False, "parameter_choice"),
        (4, "double_param", "double", False, "parameter_choice"),
        (5, "uint64_param", "uint64", False, "parameter_choice"),
    ],
    "InferTensorContents": [
        (1, "bool_contents", "bool", True, None), (2, "int_contents", "int32", True, None),
        (3, "int64_contents", "int64", True, None), (4, "uint_contents", "uint32", True, None),
        (5, "uint64_contents", "uint64", True, None), (6, "fp32_contents", "float", True, None),
        (7, "fp64_contents", "double", True, None), (8, "bytes_contents", "bytes", True, None),
    ],
    "ModelInferRequest.InferInputTensor": [
        (1, "name", "string", False, None), (2, "datatype", "string", False, None), (3, "shape", "int64", True, None),
        (4, "parameters", "map", True, None), (5, "contents", "InferTensorContents", False, None),
    ],
    "ModelInferRequest.InferRequestedOutputTensor": [
        (1, "name", "string", False, None), (2, "parameters", "map", True, None),
    ],
    "ModelInferRequest": [
        (1, "model_name", "string", False, None), (2, "model_version", "string", False, None),
        (3, "id", "string", False, None), (4, "parameters", "map", True, None),
        (5, "inputs", "ModelInferRequest.InferInputTensor", True, None),
        (6, "outputs", "ModelInferRequest.InferRequestedOutputTensor", True, None),
        (7, "raw_input_contents", "bytes", True, None),
    ],
    "ModelInferResponse.InferOutputTensor": [
        (1, "name", "string", False, None), (2, "datatype", "string", False, None), (3, "shape", "int64", True, None),
        (4, "parameters", "map", True, None), (5, "contents", "InferTensorContents", False, None),
    ],
    "ModelInferResponse": [
        (1, "model_name", "string", False, None), (2, "model_version", "string", False, None),
        (3, "id", "string", False, None), (4, "parameters", "map", True, None),
        (5, "outputs", "ModelInferResponse.InferOutputTensor", True, None),
        (6, "raw_output_contents", "bytes", True, None),
    ],
}  # fmt: skip
_GATEWAY: dict[str, list[tuple[int, str, str, bool, str | None]]] = {
    "PredictRequest": [(1, "service", "string", False, None), (2, "event_json", "bytes", False, None)],
    "PredictResponse": [(1, "prediction_json", "bytes", False, None)],
}
_METHODS = {
    INFERENCE_SERVICE: {
        name: (f"{name}Request", f"{name}Response")
        for name in ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer")
    },
    GATEWAY_SERVICE: {"Predict": ("PredictRequest", "PredictResponse")},
}


def _file(name: str, package: str, messages: Mapping[str, list[tuple[int, str, str, bool, str | None]]]) -> Any:
    file = descriptor_pb2.FileDescriptorProto(name=name, package=package, syntax="proto3")
    built: dict[str, Any] = {}
    for full in sorted(messages, key=lambda n: n.count(".")):  # parents before their nested messages
        parent, _, own = full.rpartition(".")
        container = built[parent].nested_type if parent else file.message_type
        built[full] = container.add(name=own)
    for full, fields in messages.items():
        proto = built[full]
        oneofs: dict[str, int] = {}
        for number, field_name, kind, repeated, oneof in fields:
            field = proto.field.add(name=field_name, number=number, json_name=_camel(field_name))
            field.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
            if kind == "map":  # map<string, InferParameter>: a nested entry message, as protoc writes it
                entry = proto.nested_type.add(name=_camel(field_name, upper=True) + "Entry")
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL, json_name="key")
                entry.field.add(name="value", number=2, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
                                type_name=f".{package}.InferParameter", json_name="value")  # fmt: skip
                field.type, field.type_name = _F.TYPE_MESSAGE, f".{package}.{full}.{entry.name}"
            elif kind in _SCALARS:
                field.type = _SCALARS[kind]
            else:
                field.type, field.type_name = _F.TYPE_MESSAGE, f".{package}.{kind}"
            if oneof is not None:
                if oneof not in oneofs:
                    oneofs[oneof] = len(proto.oneof_decl)
                    proto.oneof_decl.add(name=oneof)
                field.oneof_index = oneofs[oneof]
    for service, methods in _METHODS.items():
        if service.startswith(f"{package}."):
            svc = file.service.add(name=service.rpartition(".")[2])
            for method, (request, response) in methods.items():
                svc.method.add(name=method, input_type=f".{package}.{request}", output_type=f".{package}.{response}")
    return file


def _camel(name: str, *, upper: bool = False) -> str:
    parts = name.split("_")
    text = parts[0] + "".join(p.title() for p in parts[1:])
    return text[0].upper() + text[1:] if upper else text


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file("vatic/inference.proto", "inference", _INFERENCE))
_POOL.Add(_file("vatic/gateway.proto", "vatic", _GATEWAY))


def message(full_name: str) -> type[Message]:
    """The message class of ``inference.ModelInferRequest``, ``vatic.PredictRequest``, ..."""
    cls: type[Message] = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(full_name))
    return cls


def methods(service: str) -> dict[str, tuple[type[Message], type[Message]]]:
    """Each method of ``service`` with its request and response classes."""
    package = service.rpartition(".")[0]
    return {
        name: (message(f"{package}.{request}"), message(f"{package}.{response}"))
        for name, (request, response) in _METHODS[service].items()
    }


# --- conversions --------------------------------------------------------------------------------------------


def _parameters(entries: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in entries.items():
        choice = value.WhichOneof("parameter_choice")
        if choice is not None:
            out[key] = getattr(value, choice)
    return out


def _set_parameters(target: Any, values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        entry = target[key]
        if isinstance(value, bool):
            entry.bool_param = value
        elif isinstance(value, int):
            entry.int64_param = value
        elif isinstance(value, float):
            entry.double_param = value
        else:
            entry.string_param = str(value)


#: the typed ``contents`` field of each datatype (FP16 has none: it travels in ``raw_input_contents`` only)
_CONTENTS: dict[str, str] = {
    Datatype.BOOL: "bool_contents", Datatype.INT8: "int_contents", Datatype.INT16: "int_contents",
    Datatype.INT32: "int_contents", Datatype.INT64: "int64_contents", Datatype.UINT8: "uint_contents",
    Datatype.UINT16: "uint_contents", Datatype.UINT32: "uint_contents", Datatype.UINT64: "uint64_contents",
    Datatype.FP32: "fp32_contents", Datatype.FP64: "fp64_contents", Datatype.BYTES: "bytes_contents",
}  # fmt: skip


def infer_request_to_json(request: Any) -> dict[str, Any]:
    """The V2 JSON request of a ``ModelInferRequest`` (data from ``contents`` or ``raw_input_contents``)."""
    out: dict[str, Any] = {"inputs": _tensors_to_json(request.inputs, list(request.raw_input_contents), "input")}
    if request.id:
        out["id"] = request.id
    parameters = _parameters(request.parameters)
    if parameters:
        out["parameters"] = parameters
    if request.outputs:
        out["outputs"] = [{"name": o.name, **({"parameters": p} if (p := _parameters(o.parameters)) else {})}
                          for o in request.outputs]  # fmt: skip
    return out


def infer_response_to_json(response: Any) -> dict[str, Any]:
    """The V2 JSON response of a ``ModelInferResponse`` (data from ``raw_output_contents`` or ``contents``); a
    response whose data does not fit its outputs is :class:`BinaryFormatError`."""
    out: dict[str, Any] = {
        "model_name": response.model_name,
        "outputs": _tensors_to_json(response.outputs, list(response.raw_output_contents), "output"),
    }
    if response.model_version:
        out["model_version"] = response.model_version
    if response.id:
        out["id"] = response.id
    parameters = _parameters(response.parameters)
    if parameters:
        out["parameters"] = parameters
    return out


def _tensors_to_json(tensors: Any, raw: list[bytes], kind: str) -> list[dict[str, Any]]:
    if raw and len(raw) != len(tensors):
        raise BinaryFormatError(
            f"raw_{kind}_contents has {len(raw)} entries for {len(tensors)} {kind}s: give one per {kind} or none",
            field=f"raw_{kind}_contents",
        )
    out = []
    for index, tensor in enumerate(tensors):
        where = f"{kind}s[{index}]"
        item: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if raw:
            item["data"] = decode_tensor_data(raw[index], item, tensor.name, where)
        else:
            field = _CONTENTS.get(tensor.datatype)
            if field is None:
                raise BinaryFormatError(f"{kind} {tensor.name!r}: datatype {tensor.datatype!r} has no contents field",
                                        field=where)  # fmt: skip
            values = list(getattr(tensor.contents, field))
            if tensor.datatype == "BYTES":
                try:
                    values = [v.decode("utf-8") for v in values]
                except UnicodeDecodeError:
                    raise BinaryFormatError(f"{kind} {tensor.name!r}: a BYTES element is not UTF-8 text",
                                            field=where) from None  # fmt: skip
            item["data"] = values
        parameters = _parameters(tensor.parameters)
        if parameters:
            item["parameters"] = parameters
        out.append(item)
    return out


def infer_request_from_json(model: str, version: str | None, body: Mapping[str, Any]) -> Any:
    """A ``ModelInferRequest`` of a V2 JSON request for ``model`` (``version``): every input's data in
    ``raw_input_contents`` (row-major little-endian; a missing FP value, ``null``, is NaN)."""
    request = message("inference.ModelInferRequest")(model_name=model, model_version=version or "")
    if body.get("id"):
        request.id = str(body["id"])
    _set_parameters(request.parameters, body.get("parameters") or {})
    for tensor in body.get("inputs") or []:
        item = request.inputs.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
        _set_parameters(item.parameters, tensor.get("parameters") or {})
        request.raw_input_contents.append(encode_tensor_data(tensor))
    for output in body.get("outputs") or []:
        wanted = request.outputs.add(name=output["name"])
        _set_parameters(wanted.parameters, output.get("parameters") or {})
    return request


def metadata_to_json(response: Any) -> dict[str, Any]:
    """The V2 JSON model metadata of a ``ModelMetadataResponse``."""
    out: dict[str, Any] = {
        "name": response.name,
        "versions": list(response.versions),
        "platform": response.platform,
        "inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in response.inputs],
        "outputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in response.outputs],
        "parameters": _parameters(response.parameters),  # as MLServer's REST door answers: {} when it has none
    }
    return out


def infer_response_from_json(body: Mapping[str, Any]) -> Any:
    """A ``ModelInferResponse`` of a V2 JSON response: every output's data in ``raw_output_contents``."""
    response = message("inference.ModelInferResponse")()
    response.model_name = str(body.get("model_name") or "")
    response.model_version = str(body.get("model_version") or "")
    response.id = str(body.get("id") or "")
    _set_parameters(response.parameters, body.get("parameters") or {})
    for output in body.get("outputs") or []:
        tensor = response.outputs.add(name=output["name"], datatype=output["datatype"], shape=output["shape"])
        _set_parameters(tensor.parameters, output.get("parameters") or {})
        response.raw_output_contents.append(encode_tensor_data(output))
    return response
