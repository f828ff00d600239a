"""Fast paths for the two byte formats the direct readers handle: Feast's entity keys and stored ``Value`` protos.

Both are exact re-encodings of what Feast itself writes and reads, in place of Feast's functions on the direct
read path (why: docs/decisions/0007-direct-feature-reads.md):

* :class:`KeyEncoder` - Feast's ``serialize_entity_key`` (version 3) for one entity-key group, with the join-key
  part precomputed; anything it does not cover (versions < 3, value types other than STRING / INT64 / INT32 /
  BYTES) goes through Feast's own function. ``tests/connectors/test_features_codec.py`` checks it byte for byte
  against Feast's function.
* :func:`decode_value` - one serialized ``Value`` as ``(kind, python value)``: the scalar kinds Feast
  materializes for tabular features (double, float, int64, int32, bool, string, bytes, and the empty message of a
  null) are read straight from the bytes; every other message is parsed by protobuf and converted as Feast's
  ``feast_value_type_to_python_type`` converts it, so the result is the same either way.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.protos.feast.types.Value_pb2 import ValueType as WireType
from feast.type_map import feast_value_type_to_python_type
from feast.value_type import ValueType

__all__ = ["NULL", "KeyEncoder", "decode_value", "python_value", "value_proto"]

_U32 = struct.Struct("<I").pack
_I64 = struct.Struct("<q").pack
_I32 = struct.Struct("<i").pack
_DOUBLE = struct.Struct("<d").unpack_from
_FLOAT = struct.Struct("<f").unpack_from

#: ``kind`` of a stored null (an empty ``Value``: no field of the ``val`` oneof set)
NULL = ""

_PLAIN = frozenset({"int64_val", "int32_val", "double_val", "float_val", "bool_val", "bytes_val"})
_UUIDS = frozenset({ValueType.UUID, ValueType.TIME_UUID})


def value_proto(value: Any, vtype: ValueType) -> ValueProto:
    """A join key value as the Feast ``Value`` proto Feast writes into entity keys."""
    if vtype is ValueType.STRING:
        return ValueProto(string_val=value)
    if vtype is ValueType.INT64:
        return ValueProto(int64_val=value)
    if vtype is ValueType.INT32:
        return ValueProto(int32_val=value)
    return ValueProto(bytes_val=value)


def _feast_key(
    join_keys: tuple[str, ...], values: tuple[Any, ...], types: tuple[ValueType, ...], version: int
) -> bytes:
    proto = EntityKeyProto(
        join_keys=join_keys,
        entity_values=[value_proto(v, t) for v, t in zip(values, types, strict=True)],
    )
    key: bytes = serialize_entity_key(proto, entity_key_serialization_version=version)
    return key


#: the u32 type tags of serialized keys (the proto enum's numbers, as ``serialize_entity_key`` packs them)
_STRING_TAG = _U32(WireType.STRING)
_INT64_HEAD = _U32(WireType.INT64) + _U32(8)
_INT32_HEAD = _U32(WireType.INT32) + _U32(4)
_BYTES_TAG = _U32(WireType.BYTES)


def _string(value: Any) -> bytes:
    data: bytes = value.encode("utf-8")
    return _STRING_TAG + _U32(len(data)) + data


def _int64(value: Any) -> bytes:
    return _INT64_HEAD + _I64(value)


def _int32(value: Any) -> bytes:
    return _INT32_HEAD + _I32(value)


def _bytes(value: Any) -> bytes:
    return _BYTES_TAG + _U32(len(value)) + bytes(value)


_VALUE_ENCODERS: dict[ValueType, Callable[[Any], bytes]] = {
    ValueType.STRING: _string,
    ValueType.INT64: _int64,
    ValueType.INT32: _int32,
    ValueType.BYTES: _bytes,
}


class KeyEncoder:
    """Serialized Feast entity keys of one group of join keys, as ``serialize_entity_key`` writes them.

    Version 3 layout: ``u32 number of keys``, per join key in sorted order ``u32 STRING, u32 length, utf-8
    name``, then per value in the same order ``u32 value type, u32 length, bytes`` (little endian). The
    names part is the same for every key of the group and is built once. Values must already be validated
    for their types (``plan.key_entities`` does); immutable and safe to share between threads.
    """

    __slots__ = ("_encoders", "_fast", "_order", "_prefix", "join_keys", "types", "version")

    def __init__(self, join_keys: tuple[str, ...], types: tuple[ValueType, ...], version: int) -> None:
        self.join_keys, self.types, self.version = join_keys, types, version
        self._fast = version >= 3 and all(t in _VALUE_ENCODERS for t in types)
        self._order = tuple(sorted(range(len(join_keys)), key=lambda i: join_keys[i]))
        self._encoders = tuple(_VALUE_ENCODERS.get(types[i]) for i in self._order)
        names = [join_keys[i].encode("utf-8") for i in self._order]
        self._prefix = _U32(len(names)) + b"".join(_STRING_TAG + _U32(len(n)) + n for n in names)

    def encode(self, values: tuple[Any, ...]) -> bytes:
        """The serialized key of one entity (``values`` in ``join_keys`` order)."""
        if not self._fast:
            return _feast_key(self.join_keys, values, self.types, self.version)
        if len(values) == 1:
            encoder = self._encoders[0]
            assert encoder is not None  # _fast
            return self._prefix + encoder(values[0])
        parts = [self._prefix]
        for i, encoder in zip(self._order, self._encoders, strict=True):
            assert encoder is not None  # _fast
            parts.append(encoder(values[i]))
        return b"".join(parts)


def python_value(proto: ValueProto, attr: str, vtype: ValueType) -> Any:
    """Convert like Feast's ``OnlineResponse.to_dict`` (``feast_value_type_to_python_type``), scalars inline."""
    if attr in _PLAIN or (attr == "string_val" and vtype not in _UUIDS):
        return getattr(proto, attr)
    return feast_value_type_to_python_type(proto, vtype)


def _varint(raw: bytes, at: int) -> tuple[int, int] | None:
    """(value, next position) of the base-128 varint at ``raw[at]``; ``None`` when it runs past the end."""
    result = shift = 0
    end = len(raw)
    while at < end:
        byte = raw[at]
        at += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, at
        shift += 7
    return None


def _slow(raw: bytes, vtype: ValueType) -> tuple[str, Any]:
    proto = ValueProto.FromString(raw)
    attr = proto.WhichOneof("val")
    if attr is None:
        return NULL, None
    return attr, python_value(proto, attr, vtype)


def decode_value(raw: bytes, vtype: ValueType) -> tuple[str, Any]:
    """``(kind, value)`` of one serialized Feast ``Value``: ``kind`` is the ``val`` oneof field set (e.g.
    ``"double_val"``) or :data:`NULL` for an empty message; ``value`` as Feast's SDK returns it.

    The message must be exactly one scalar field for the fast path (what Feast writes); anything else -
    lists, maps, timestamps, UUID strings, repeated or unknown fields - is parsed by protobuf. Malformed bytes
    raise protobuf's ``DecodeError`` as parsing them with protobuf would.
    """
    size = len(raw)
    if not size:
        return NULL, None
    tag = raw[0]
    if tag == 0x29:  # field 5 (double_val), fixed64
        if size == 9:
            return "double_val", _DOUBLE(raw, 1)[0]
    elif tag == 0x20 or tag == 0x18 or tag == 0x38:  # noqa: PLR1714 - int64_val (4), int32_val (3), bool_val (7)
        if size == 2 and raw[1] < 0x80:  # a one-byte varint: 0..127
            number = raw[1]
        else:
            read = _varint(raw, 1)
            if read is None or read[1] != size:
                return _slow(raw, vtype)
            number = read[0]
        if tag == 0x20:
            number &= 0xFFFFFFFFFFFFFFFF
            return "int64_val", number - (1 << 64) if number >= 1 << 63 else number
        if tag == 0x38:
            return "bool_val", number != 0
        number &= 0xFFFFFFFF  # int32: negative values are sign-extended to 64 bits on the wire
        return "int32_val", number - (1 << 32) if number >= 1 << 31 else number
    elif tag == 0x35:  # field 6 (float_val), fixed32
        if size == 5:
            return "float_val", _FLOAT(raw, 1)[0]
    elif (tag == 0x12 and vtype not in _UUIDS) or tag == 0x0A:  # string_val (2), bytes_val (1): length-delimited
        if size > 1 and raw[1] < 0x80:
            start, length = 2, raw[1]
        else:
            read = _varint(raw, 1)
            if read is None:
                return _slow(raw, vtype)
            length, start = read
        if start + length == size:
            if tag == 0x0A:
                return "bytes_val", raw[start:]
            try:
                return "string_val", raw[start:].decode("utf-8")
            except UnicodeDecodeError:
                pass  # protobuf decides what invalid UTF-8 is
    return _slow(raw, vtype)
