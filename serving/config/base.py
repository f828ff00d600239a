"""The building blocks of every config section: the strict base, V2 input tensors and outputs.

Imported by :mod:`vatic.serving.config.model` and :mod:`vatic.serving.config.graph` (which the model imports).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vatic.connectors.v2.types import Datatype

#: a validator's message that starts with this carries, up to ": ", the key path (below the section validated)
#: of the value it is about: the loader reports the problem at that value's file and line
AT = "@"


def at(path: str, message: str) -> ValueError:
    """A validation error about the value at ``path`` (dotted, list positions as numbers) below the section."""
    return ValueError(f"{AT}{path}: {message}")


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class TensorSpec(Section):
    """One V2 input tensor, built per batch from event fields and feature values.

    Each entry of ``columns`` is an event field (``amount``), a feature reference (``customer_stats:orders_7d``)
    or a feature's missing flag (``customer_stats:orders_7d#missing``, 1 when the value was missing and the
    default was used). The tensor has shape ``[N, len(columns)]``; with ``squeeze`` and one column, ``[N]``.
    """

    name: str = Field(description="the V2 input name the model expects")
    datatype: Datatype = Field(Datatype.FP32, description="V2 datatype of the tensor")
    columns: list[str] = Field(min_length=1, description="event fields, feature refs or '<ref>#missing' flags")
    squeeze: bool = Field(False, description="shape [N] instead of [N, 1] for a single column")
    content_type: str | None = Field(None, description="MLServer content type parameter (e.g. 'str', 'np')")
    encodings: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="categorical event fields to numbers, e.g. {channel: {web: 0, pos: 1, '*': 2}}; a value not "
        "listed uses the '*' entry when there is one, else it is a data error (dead-letter / 422)",
    )

    @model_validator(mode="after")
    def _one_column_to_squeeze(self) -> TensorSpec:
        if self.squeeze and len(self.columns) != 1:
            raise ValueError("squeeze needs exactly one column; remove squeeze or list a single column")
        unknown = set(self.encodings) - set(self.columns)
        if unknown:
            raise ValueError(f"encodings for {sorted(unknown)} which are not columns of this tensor")
        return self


class OutputSpec(Section):
    """One V2 output copied into the prediction event."""

    name: str = Field(description="the V2 output name the model returns")
    rename: str | None = Field(None, description="name in the prediction event (default: the V2 name)")
    index: int | None = Field(
        None, ge=0, description="take one column of a [N, K] output (e.g. 1 for the positive class probability)"
    )
    labels: list[str] | None = Field(
        None, description="map an integer class output to these labels (index i -> labels[i])"
    )

    @property
    def field(self) -> str:
        return self.rename or self.name
