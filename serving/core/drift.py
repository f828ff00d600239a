"""Drift of a service's inputs and outputs from the training data of the model version that answered.

**Reference profile.** A trainer stores ``profile.json`` beside the model version in the registry
(:func:`build_profile`, :meth:`Profile.write`): for every model input (an event field or a Feast feature) and every
scalar output, the bins of its training distribution and how often it was missing. A numeric column has quantile
bins (interior edges from the training data, open at both ends) and, per bin, the median training value; a
categorical one has its most frequent categories and one bin for any other value.

**Window counts.** The monitor counts every prediction of a window into the same bins (:meth:`Profile.cells` for a
prediction event: ``(cell, 1)`` pairs keyed ``role|name|bin``, plus ``#`` for the prediction itself). Counts add
up, so the partial counts of a window merge in any order, on any subtask.

**Judgement.** :func:`judge` compares a window's counts with the profile: the population stability index (PSI) of
every column, the Wasserstein distance of every numeric output over the bins' medians (scipy), and the missing
rate. A window is *drifted* when it has at least ``min_count`` predictions and a column's PSI reaches the
threshold, or a column's missing rate rises by ``missing_rise`` or more over its training rate. Smaller windows are
reported and never judged (their PSI is noise: for ``k`` bins and ``n`` predictions it is about ``(k - 1) / n``
under no drift at all).

Pure (NumPy; scipy for the statistics): the monitor job, the trainers and the tests call the same functions.
"""

from __future__ import annotations

import bisect
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "COUNT_CELL",
    "FORMAT",
    "PROFILE_FILE",
    "ColumnDrift",
    "ColumnProfile",
    "Profile",
    "WindowDrift",
    "build_profile",
    "judge",
    "merge",
    "psi",
]

#: the file of a model version's reference profile, beside its artifacts
PROFILE_FILE = "profile.json"
#: the profile format written by this module
FORMAT = 1
#: the cell that counts predictions
COUNT_CELL = "#"
#: the bin of a missing value
MISSING_BIN = -1
#: smallest proportion a bin is given before PSI's logarithm (an empty bin would make it infinite)
EPSILON = 1e-4

Role = Literal["input", "output"]
Kind = Literal["numeric", "categorical"]


def _scalar(value: Any) -> Any:
    """A value as a profile bins it: bool and str as categories, numbers as floats; anything else is missing."""
    if value is None:
        return None
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return None if isinstance(value, float) and math.isnan(value) else float(value)
    if hasattr(value, "item"):  # NumPy scalar
        return _scalar(value.item())
    return None


def _category(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class ColumnProfile:
    """The training distribution of one input or output column."""

    name: str
    role: Role
    kind: Kind
    #: training values per bin (numeric: len(edges) + 1 bins; categorical: len(categories) + 1, the last "other")
    counts: tuple[int, ...]
    #: training rows where the column was missing
    missing: int = 0
    #: numeric: interior bin edges, increasing; a value ``v`` is in bin ``searchsorted(edges, v, side="right")``
    edges: tuple[float, ...] = ()
    #: numeric: the median training value of each bin (where the Wasserstein distance puts the bin's mass)
    centers: tuple[float, ...] = ()
    #: categorical: the categories with a bin of their own
    categories: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        return sum(self.counts) + self.missing

    @property
    def missing_rate(self) -> float:
        return self.missing / self.rows if self.rows else 0.0

    def bin(self, value: Any) -> int:
        """The bin of one value (:data:`MISSING_BIN` when it is missing or of another kind)."""
        value = _scalar(value)
        if value is None:
            return MISSING_BIN
        if self.kind == "categorical":
            try:
                return self.categories.index(_category(value))
            except ValueError:
                return len(self.categories)
        if isinstance(value, str):
            return MISSING_BIN
        return bisect.bisect_right(self.edges, value)


@dataclass(frozen=True)
class Profile:
    """The reference profile of one model version."""

    model: str
    version: str
    rows: int
    columns: tuple[ColumnProfile, ...]
    format: int = FORMAT

    def column(self, role: Role, name: str) -> ColumnProfile | None:
        return next((c for c in self.columns if c.role == role and c.name == name), None)

    def cells(self, prediction: Mapping[str, Any]) -> list[str]:
        """The cells one prediction event counts into: ``#``, then ``role|name|bin`` per profiled column."""
        values = prediction_values(prediction)
        out = [COUNT_CELL]
        for column in self.columns:
            seen = values[column.role].get(column.name, _ABSENT)
            if seen is _ABSENT:
                continue  # a column this event does not carry: counted nowhere (its missing rate stays honest)
            out.append(f"{column.role}|{column.name}|{column.bin(seen)}")
        return out

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "columns": [asdict(c) for c in self.columns]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Profile:
        if int(data.get("format", 0)) != FORMAT:
            raise ValueError(f"profile format {data.get('format')!r} is not {FORMAT}: retrain with this vatic")
        columns = tuple(
            ColumnProfile(
                name=str(c["name"]),
                role=c["role"],
                kind=c["kind"],
                counts=tuple(int(n) for n in c["counts"]),
                missing=int(c.get("missing", 0)),
                edges=tuple(float(e) for e in c.get("edges", ())),
                centers=tuple(float(e) for e in c.get("centers", ())),
                categories=tuple(str(e) for e in c.get("categories", ())),
            )
            for c in data["columns"]
        )
        return cls(str(data["model"]), str(data["version"]), int(data["rows"]), columns)

    def write(self, folder: Path) -> Path:
        """Write ``profile.json`` into ``folder`` (atomically); return its path."""
        path = folder / PROFILE_FILE
        tmp = path.with_name(f".{PROFILE_FILE}.{os.getpid()}")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, path: Path) -> Profile:
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))


_ABSENT = object()


def prediction_values(prediction: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A prediction event's values by role: inputs (event fields and Feast features; a feature the store did not
    have is ``None``, missing) and outputs."""
    inputs: dict[str, Any] = dict(prediction.get("inputs") or {})
    for ref, feature in (prediction.get("features") or {}).items():
        inputs[ref] = None if feature.get("missing") else feature.get("value")
    return {"input": inputs, "output": dict(prediction.get("outputs") or {})}


def _numeric_profile(name: str, role: Role, values: NDArray[np.float64], missing: int, bins: int) -> ColumnProfile:
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])) if len(values) else np.array([])
    index = np.searchsorted(edges, values, side="right")
    counts = np.bincount(index, minlength=len(edges) + 1)

    def center(i: int) -> float:
        if counts[i]:
            return float(np.median(values[index == i]))
        # an empty bin (only possible without data) gets its edge as its center, so that every center is a number
        return float(edges[min(i, len(edges) - 1)]) if len(edges) else 0.0

    centers = [center(i) for i in range(len(edges) + 1)]
    return ColumnProfile(
        name, role, "numeric", tuple(int(n) for n in counts), missing,
        edges=tuple(float(e) for e in edges), centers=tuple(centers),
    )  # fmt: skip


def _column(name: str, role: Role, raw: Sequence[Any], bins: int, max_categories: int) -> ColumnProfile | None:
    values = [_scalar(v) for v in raw]
    present = [v for v in values if v is not None]
    missing = len(values) - len(present)
    if all(isinstance(v, float) for v in present):
        return _numeric_profile(name, role, np.asarray(present, dtype=np.float64), missing, bins)
    categories: dict[str, int] = {}
    for v in present:
        key = _category(v)
        categories[key] = categories.get(key, 0) + 1
    if len(categories) > max_categories * 4:
        return None  # free text or an identifier: no distribution to compare
    kept = sorted(categories, key=lambda c: (-categories[c], c))[:max_categories]
    other = len(present) - sum(categories[c] for c in kept)
    counts = (*(categories[c] for c in kept), other)
    return ColumnProfile(name, role, "categorical", counts, missing, categories=tuple(kept))


def build_profile(
    model: str,
    version: str,
    inputs: Mapping[str, Sequence[Any]],
    outputs: Mapping[str, Sequence[Any]],
    *,
    bins: int = 10,
    max_categories: int = 30,
) -> Profile:
    """The profile of training (or held-out) data: ``inputs`` and ``outputs`` map a column name to its values, one
    per row, ``None`` (or NaN) where missing. Numbers get ``bins`` quantile bins; strings and booleans their
    ``max_categories`` most frequent categories. A string column with more than four times that many distinct
    values (free text, identifiers) is left out."""
    columns: list[ColumnProfile] = []
    rows = 0
    for role, table in (("input", inputs), ("output", outputs)):
        for name, raw in table.items():
            listed = list(raw)
            rows = max(rows, len(listed))
            built = _column(name, role, listed, bins, max_categories)  # type: ignore[arg-type]
            if built is not None:
                columns.append(built)
    return Profile(model, version, rows, tuple(columns))


# --- judgement ------------------------------------------------------------------------------------------------


def psi(reference: Sequence[float], observed: Sequence[float]) -> float:
    """Population stability index of two bin count vectors: ``sum((o - r) * ln(o / r))`` over the proportions,
    each bin at least :data:`EPSILON` (scipy's relative entropy, both ways: PSI is the symmetric KL divergence)."""
    from scipy.special import rel_entr  # type: ignore[import-untyped]

    r = np.asarray(reference, dtype=np.float64)
    o = np.asarray(observed, dtype=np.float64)
    if r.sum() <= 0 or o.sum() <= 0:
        return 0.0
    r = np.maximum(r / r.sum(), EPSILON)
    o = np.maximum(o / o.sum(), EPSILON)
    return float(np.sum(rel_entr(o, r) + rel_entr(r, o)))


@dataclass(frozen=True)
class ColumnDrift:
    """One column of one window."""

    name: str
    role: Role
    kind: Kind
    #: predictions of the window with a value for the column (missing ones excluded)
    count: int
    missing_rate: float
    reference_missing_rate: float
    psi: float | None
    #: numeric outputs: Wasserstein distance between the window's and the training values (over the bin medians)
    wasserstein: float | None
    drifted: bool


@dataclass(frozen=True)
class WindowDrift:
    """The drift of one model version over one window: the monitor's record."""

    service: str
    model_name: str
    model_version: str
    window_start: int
    window_end: int
    predictions: int
    profiled: bool
    judged: bool
    drifted: bool
    psi_threshold: float
    columns: tuple[ColumnDrift, ...] = field(default_factory=tuple)

    @property
    def drifted_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.drifted]

    def record(self, emitted_ms: int) -> dict[str, Any]:
        """The Avro record (schema ``drift``)."""
        return {
            "service": self.service,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "predictions": self.predictions,
            "profiled": self.profiled,
            "judged": self.judged,
            "drifted": self.drifted,
            "drifted_columns": self.drifted_columns,
            "psi_threshold": self.psi_threshold,
            "columns": [{**asdict(c), "role": c.role.upper(), "kind": c.kind.upper()} for c in self.columns],
            "emitted_time": emitted_ms,
        }


def judge(
    profile: Profile | None,
    counts: Mapping[str, int],
    *,
    service: str,
    model_name: str,
    model_version: str,
    window: tuple[int, int],
    psi_threshold: float = 0.2,
    missing_rise: float = 0.2,
    min_count: int = 200,
) -> WindowDrift:
    """The drift of a window from its cell counts (:meth:`Profile.cells`, summed). Without a profile the window is
    reported (its prediction count) and never judged."""
    predictions = int(counts.get(COUNT_CELL, 0))
    if profile is None:
        return WindowDrift(
            service, model_name, model_version, window[0], window[1], predictions, False, False, False, psi_threshold
        )
    judged = predictions >= min_count
    by_column: dict[tuple[str, str], dict[int, int]] = {}
    for cell, n in counts.items():
        if cell == COUNT_CELL:
            continue
        role, rest = cell.split("|", 1)
        name, index = rest.rsplit("|", 1)
        column_bins = by_column.setdefault((role, name), {})
        column_bins[int(index)] = column_bins.get(int(index), 0) + int(n)
    columns = []
    for column in profile.columns:
        bins = by_column.get((column.role, column.name))
        if bins is None:
            continue
        columns.append(_column_drift(column, bins, judged, psi_threshold, missing_rise))
    drifted = any(c.drifted for c in columns)
    return WindowDrift(
        service, model_name, model_version, window[0], window[1], predictions, True, judged, drifted, psi_threshold,
        tuple(columns),
    )  # fmt: skip


def _column_drift(
    column: ColumnProfile, bins: Mapping[int, int], judged: bool, threshold: float, missing_rise: float
) -> ColumnDrift:
    observed = [bins.get(i, 0) for i in range(len(column.counts))]
    missing = bins.get(MISSING_BIN, 0)
    present = sum(observed)
    total = present + missing
    missing_rate = missing / total if total else 0.0
    value = psi(column.counts, observed) if present else None
    wasserstein = None
    if column.kind == "numeric" and column.role == "output" and present and sum(column.counts):
        from scipy.stats import wasserstein_distance  # type: ignore[import-untyped]

        wasserstein = float(wasserstein_distance(column.centers, column.centers, column.counts, observed))
    drifted = judged and (
        (value is not None and value >= threshold) or missing_rate - column.missing_rate >= missing_rise
    )
    return ColumnDrift(
        column.name, column.role, column.kind, present, round(missing_rate, 6), round(column.missing_rate, 6),
        None if value is None else round(value, 6), None if wasserstein is None else round(wasserstein, 6), drifted,
    )  # fmt: skip


def merge(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Add up partial cell counts (of one window and version)."""
    total: dict[str, int] = {}
    for part in counts:
        for cell, n in part.items():
            total[cell] = total.get(cell, 0) + int(n)
    return total
