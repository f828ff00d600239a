"""Labelled sets as model inputs: the same :func:`vatic.serving.core.tensors.build_inputs` serving uses.

A labelled set (written by ``prepare`` with :func:`vatic.examples.feast_repo.labelled_set`) is a table
with the event fields, one column per feature reference (the value after the missing-feature policy) and one
``<ref>#missing`` column (the feature's status when it was missing, else null). :func:`model_arrays` turns it
into the V2 input tensors of a service's model, as NumPy arrays: training reads exactly what the model server
will be sent; :func:`reference_profile` profiles the same columns for the drift monitor. Both environments
(pandas, NumPy and the pure tensor code; no Feast, no ML library).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from numpy.typing import NDArray

from vatic.serving.config.model import ServiceConfig
from vatic.serving.core.drift import Profile, build_profile
from vatic.serving.core.tensors import MISSING_SUFFIX, build_inputs

#: NumPy dtype of each V2 datatype used by the use cases
_DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_}


def _plain(value: Any) -> Any:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def rows_of(
    frame: pd.DataFrame, config: ServiceConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, str]]]:
    """``(events, features, missing)`` for :func:`build_inputs`, one entry per row of ``frame``."""
    fields = config.event_fields()
    refs = list(config.features.refs) if config.features else []
    events = [
        {field: _plain(v) for field, v in zip(fields, values, strict=True)}
        for values in frame[fields].itertuples(index=False)
    ]
    features: list[dict[str, Any]] = [{} for _ in range(len(frame))]
    missing: list[dict[str, str]] = [{} for _ in range(len(frame))]
    for ref in refs:
        for i, (value, status) in enumerate(
            zip(frame[ref].tolist(), frame[ref + MISSING_SUFFIX].tolist(), strict=True)
        ):
            features[i][ref] = _plain(value)
            if _plain(status) is not None:
                missing[i][ref] = str(status)
    return events, features, missing


def model_arrays(frame: pd.DataFrame, config: ServiceConfig) -> dict[str, NDArray[Any]]:
    """The model's V2 inputs for every row of ``frame``, by input name: numeric tensors as arrays of their
    datatype (null -> NaN), ``BYTES`` tensors as object arrays of ``str``; shapes as the service sends them.

    Raises ``ValueError`` naming the first rows that cannot be encoded (a labelled set must encode cleanly).
    """
    events, features, missing = rows_of(frame, config)
    tensors, problems = build_inputs(config.model, events, features, missing)
    if problems:
        sample = dict(list(problems.items())[:3])
        raise ValueError(f"{len(problems)} of {len(frame)} rows cannot be encoded, e.g. {sample}")
    arrays: dict[str, NDArray[Any]] = {}
    for tensor in tensors:
        if tensor.datatype.value == "BYTES":
            array = np.array(tensor.data, dtype=object)
        else:
            dtype = _DTYPES[tensor.datatype.value]
            data = [np.nan if value is None else value for value in tensor.data]
            array = np.asarray(data, dtype=dtype)
        arrays[tensor.name] = array.reshape(tensor.shape)
    return arrays


def reference_profile(
    frame: pd.DataFrame, config: ServiceConfig, outputs: dict[str, Any], *, version: str = ""
) -> Profile:
    """The reference profile (drift monitor) of the rows of ``frame`` the model answered ``outputs`` for: every
    event field the model reads, as the event carried it, every feature after the policy (``None`` where it was
    missing: a missing feature counts in its missing rate, not in its bins), and the outputs by their names in
    prediction events. ``version`` is set by whoever registers the model (``prepare``, ``vatic retrain``)."""
    events, features, missing = rows_of(frame, config)
    inputs: dict[str, list[Any]] = {name: [event[name] for event in events] for name in config.event_fields()}
    for ref in config.features.refs if config.features else []:
        inputs[ref] = [None if ref in flags else row.get(ref) for row, flags in zip(features, missing, strict=True)]
    model = config.registry.model or config.model.name
    return build_profile(model, version, inputs, {name: list(values) for name, values in outputs.items()})
