"""Events + features -> V2 input tensors, and V2 outputs -> prediction outputs, as the service config says.

Pure functions over plain data: no I/O, no framework. A value that cannot be encoded is reported per event
(its index in the batch), never for the whole batch.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from vatic.connectors.v2.types import Datatype, Tensor
from vatic.serving.config.base import OutputSpec, TensorSpec
from vatic.serving.config.model import ModelSpec

_FLOATS = {"FP16", "FP32", "FP64"}
_INTS = {"INT8", "INT16", "INT32", "INT64", "UINT8"}
MISSING_SUFFIX = "#missing"
#: key of an encoding table that catches every value not listed (an "other" bucket)
OTHER = "*"


class EncodingProblem(ValueError):
    """One event's value cannot be put into a tensor (message names the column and the value)."""


def _cell(spec: TensorSpec, column: str, value: Any) -> Any:
    """One value converted to the tensor's datatype; raises :class:`EncodingProblem`."""
    if column in spec.encodings:
        table = spec.encodings[column]
        if not isinstance(value, Hashable):  # a list or an object is no category, not even the catch-all one
            raise EncodingProblem(f"{column}={value!r} is not a category: one of {sorted(table)}")
        if value in table:
            value = table[value]
        elif OTHER in table:
            value = table[OTHER]
        else:
            raise EncodingProblem(f"{column}={value!r} is not one of {sorted(table)}")
    dtype = spec.datatype
    if dtype in _FLOATS:
        if value is None:
            return None  # JSON null: NaN for the model (LightGBM/XGBoost treat it as missing)
        if isinstance(value, bool):
            return 1.0 if value else 0.0
        if isinstance(value, int | float):
            number = float(value)
            return None if math.isnan(number) else number
        raise EncodingProblem(f"{column}={value!r} is not a number")
    if dtype in _INTS:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise EncodingProblem(f"{column}={value!r} is not an integer")
    if dtype == "BOOL":
        if isinstance(value, bool):
            return value
        raise EncodingProblem(f"{column}={value!r} is not a boolean")
    if dtype == "BYTES":
        if value is None:
            return ""
        if isinstance(value, str | bytes):
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
        return str(value)
    raise EncodingProblem(f"datatype {dtype} is not supported for column {column}")  # pragma: no cover


def column_value(column: str, event: Mapping[str, Any], features: Mapping[str, Any], missing: Mapping[str, Any]) -> Any:
    """The value a tensor column names: an event field, a feature value, or a feature's missing flag."""
    if column.endswith(MISSING_SUFFIX):
        return column.removesuffix(MISSING_SUFFIX) in missing
    if ":" in column:
        return features.get(column)
    if column not in event:
        raise EncodingProblem(f"event field {column!r} is absent")
    return event[column]


def build_inputs(
    model: ModelSpec,
    events: Sequence[Mapping[str, Any]],
    features: Sequence[Mapping[str, Any]],
    missing: Sequence[Mapping[str, Any]],
) -> tuple[list[Tensor], dict[int, str]]:
    """The V2 input tensors for ``events`` (with their feature values and missing flags, same order).

    Returns the tensors over the events that encoded cleanly, and ``{batch index: problem}`` for the rest.
    The tensors' rows follow the order of the clean events.
    """
    problems: dict[int, str] = {}
    per_tensor_rows: list[list[list[Any]]] = [[] for _ in model.inputs]
    for index, event in enumerate(events):
        encoded: list[list[Any]] = []
        try:
            for spec in model.inputs:
                encoded.append(
                    [_cell(spec, c, column_value(c, event, features[index], missing[index])) for c in spec.columns]
                )
        except EncodingProblem as exc:
            problems[index] = str(exc)
            continue
        for rows, row in zip(per_tensor_rows, encoded, strict=True):
            rows.append(row)
    tensors = []
    for spec, rows in zip(model.inputs, per_tensor_rows, strict=True):
        n = len(rows)
        if spec.squeeze:
            shape: tuple[int, ...] = (n,)
            data = [row[0] for row in rows]
        else:
            shape = (n, len(spec.columns))
            data = [value for row in rows for value in row]
        parameters = {"content_type": spec.content_type} if spec.content_type else None
        tensors.append(Tensor(spec.name, Datatype(spec.datatype), shape, data, parameters))
    return tensors, problems


def _plain(value: Any) -> Any:
    """A JSON/Avro friendly value: bytes decoded, NumPy scalars unwrapped by the client already."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def output_value(spec: OutputSpec, value: Any) -> Any:
    """One row's value of one V2 output, shaped for the prediction event's ``outputs`` map.

    ``index`` picks a column; ``labels`` turn an integer class into its label, or a score vector into
    ``{label: score}``. Integral floats of a labelled output are accepted as class indices.
    """
    value = _plain(value)
    if spec.index is not None:
        if not isinstance(value, list) or spec.index >= len(value):
            raise ValueError(f"output {spec.name!r} has no column {spec.index} (value {value!r})")
        value = _plain(value[spec.index])
    if spec.labels is not None:
        if isinstance(value, list):
            if len(value) != len(spec.labels):
                raise ValueError(f"output {spec.name!r} has {len(value)} scores for {len(spec.labels)} labels")
            return {label: float(score) for label, score in zip(spec.labels, value, strict=True)}
        if isinstance(value, str) and value in spec.labels:
            return value
        if isinstance(value, int | float) and float(value).is_integer() and 0 <= int(value) < len(spec.labels):
            return spec.labels[int(value)]
        raise ValueError(f"output {spec.name!r} value {value!r} is not a class of {spec.labels}")
    if isinstance(value, list):
        try:
            flat = [math.nan if v is None else float(v) for v in value]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"output {spec.name!r} is not a list of numbers: {value!r}") from exc
        return flat[0] if len(flat) == 1 else flat
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, int):
        return value
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"output {spec.name!r} value {value!r} is not a number, string or boolean") from exc
