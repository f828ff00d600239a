"""Shadow and canary: which version answers an event, and how two answers are compared.

Canary: an entity's version is a pure function of the service name and the values of the canary's key fields
(:func:`canary_share`), so the stream job and the gateway send the same entity to the same version, on every
replica and after every restart, with no state to share. An event whose key fields are absent is answered by
the serving version.

Shadow: a second model answers every event that reaches the model; :class:`ShadowBatch` is its outcome for one
micro-batch, :func:`agrees` compares its outputs with the serving answer (the doors' metrics count both). A
shadow's failure is data about the shadow, never an error of the serving path.

:func:`compare` summarises prediction events after the fact (``vatic compare``): answers and output
distributions per serving version, and the agreement with the shadow's answers to the same events.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vatic.serving.config.model import ServiceConfig

__all__ = ["CanaryRouter", "Comparison", "Distribution", "ShadowBatch", "agrees", "canary_share", "compare"]

_SCALE = float(1 << 64)


def canary_share(service: str, key: Sequence[str]) -> float:
    """A number in [0, 1) fixed by the service and the entity key (BLAKE2b of both): an entity is in a canary
    of weight ``w`` when its share is below ``w``, so raising the weight only ever adds entities."""
    digest = hashlib.blake2b("\x1f".join([service, *key]).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


class CanaryRouter:
    """Sorts a batch's events between the serving version and the canary (module docstring)."""

    def __init__(self, service: str, fields: Sequence[str]) -> None:
        self.service = service
        self.fields = list(fields)

    @classmethod
    def for_config(cls, config: ServiceConfig) -> CanaryRouter | None:
        """The router of a service: keyed by ``canary.key``, else its feature entity keys (None: it has neither,
        so no event can be sorted)."""
        if config.canary is not None and config.canary.key:
            return cls(config.service, config.canary.key)
        if config.features is not None:
            return cls(config.service, list(dict.fromkeys(config.features.entities.values())))
        return None

    def key(self, event: Mapping[str, Any]) -> list[str] | None:
        """The entity key of ``event`` (None when a key field is absent)."""
        values = [event.get(name) for name in self.fields]
        if any(value in (None, "") for value in values):
            return None
        return [str(value) for value in values]

    def picks(self, event: Mapping[str, Any], weight: float) -> bool:
        """Whether a canary answering ``weight`` of the entities answers ``event``."""
        key = self.key(event)
        return key is not None and canary_share(self.service, key) < weight


def agrees(main: Mapping[str, Any], shadow: Mapping[str, Any], tolerance: float) -> bool:
    """Whether two prediction ``outputs`` maps say the same: every field present in both, numbers within
    ``tolerance`` (NaN agrees with NaN), everything else equal; maps and lists compared element-wise."""
    if main.keys() != shadow.keys():
        return False
    return all(_same(main[name], shadow[name], tolerance) for name in main)


def _same(a: Any, b: Any, tolerance: float) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) == bool(b) and type(a) is type(b)
    if isinstance(a, int | float) and isinstance(b, int | float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return abs(a - b) <= tolerance
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return agrees(a, b, tolerance)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y, tolerance) for x, y in zip(a, b, strict=True))
    same: bool = a == b
    return same


@dataclass(slots=True)
class ShadowBatch:
    """The shadow's outcome for one micro-batch: its prediction events by input index, or why it has none.

    ``state``: ``answered``; ``failed`` (``error`` says why: the shadow is down, refused the inputs, answered
    outside the contract); ``late`` (not answered within the door's wait: its answers, if they come, only reach
    the metrics)."""

    state: str = "answered"
    #: the shadow's prediction events by input index (empty when the door wants only the counts)
    predictions: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    #: how many events the shadow answered
    answered: int = 0
    error: str | None = None
    #: how long the shadow's V2 call took
    infer_ms: float = 0.0
    #: of the events both answered, how many agree (:func:`agrees`)
    compared: int = 0
    agreed: int = 0


@dataclass(slots=True)
class Distribution:
    """Summary of one numeric output over a set of answers."""

    count: int
    mean: float
    p10: float
    p50: float
    p90: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Distribution | None:
        finite = [v for v in values if not math.isnan(v)]
        if not finite:
            return None
        # deciles by linear interpolation between closest ranks (NumPy's default); one value is every decile
        deciles = statistics.quantiles(finite, n=10, method="inclusive") if len(finite) > 1 else finite * 9
        return cls(len(finite), statistics.fmean(finite), deciles[0], deciles[4], deciles[8])


@dataclass(slots=True)
class Comparison:
    """Serving answers by version and, joined by event id, against the shadow's (:func:`compare`)."""

    #: version -> answers, and per numeric output its distribution
    versions: dict[str, int]
    by_version: dict[str, dict[str, Distribution]]
    #: the shadow's model and version, the events both answered and the share that agree
    shadow: str | None = None
    joined: int = 0
    agreed: int = 0
    #: per numeric output: the serving and the shadow distribution over the joined events, and the mean |diff|
    serving_joined: dict[str, Distribution] = field(default_factory=dict)
    shadow_joined: dict[str, Distribution] = field(default_factory=dict)
    mean_abs_diff: dict[str, float] = field(default_factory=dict)
    #: the raw numbers behind the distributions, for plots: (series name, output) -> values
    values: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.joined if self.joined else None


def _numbers(outputs: Mapping[str, Any]) -> dict[str, float]:
    """The numeric outputs of one answer (one-element lists count as their number; other values do not)."""
    found = {}
    for name, raw in outputs.items():
        value = raw[0] if isinstance(raw, list) and len(raw) == 1 else raw
        if isinstance(value, int | float) and not isinstance(value, bool):
            found[name] = float(value)
    return found


def compare(
    predictions: Sequence[Mapping[str, Any]], shadows: Sequence[Mapping[str, Any]], *, tolerance: float
) -> Comparison:
    """Compare serving prediction events by version (a canary against the rest) and against the shadow's
    prediction events of the same event ids (agreement as :func:`agrees` decides it with ``tolerance``)."""
    versions = Counter(str(p.get("model_version") or "") for p in predictions)
    values: dict[tuple[str, str], list[float]] = {}
    for prediction in predictions:
        version = str(prediction.get("model_version") or "")
        for name, number in _numbers(prediction["outputs"]).items():
            values.setdefault((f"version {version}", name), []).append(number)
    by_version: dict[str, dict[str, Distribution]] = {}
    for (series, name), numbers in values.items():
        distribution = Distribution.of(numbers)
        if distribution is not None:
            by_version.setdefault(series.removeprefix("version "), {})[name] = distribution
    result = Comparison(versions=dict(sorted(versions.items())), by_version=by_version, values=values)
    if not shadows:
        return result
    served = {str(p["event_id"]): p for p in predictions}
    first = shadows[0]
    result.shadow = f"{first.get('model_name')}:{first.get('model_version')}"
    pairs: dict[str, tuple[list[float], list[float], list[float]]] = {}
    seen: set[str] = set()
    for shadow in shadows:
        event_id = str(shadow["event_id"])
        main = served.get(event_id)
        if main is None or event_id in seen:
            continue
        seen.add(event_id)
        result.joined += 1
        result.agreed += agrees(main["outputs"], shadow["outputs"], tolerance)
        mine, theirs = _numbers(main["outputs"]), _numbers(shadow["outputs"])
        for name in mine.keys() & theirs.keys():
            a, b, d = pairs.setdefault(name, ([], [], []))
            a.append(mine[name])
            b.append(theirs[name])
            if not (math.isnan(mine[name]) or math.isnan(theirs[name])):
                d.append(abs(mine[name] - theirs[name]))
    for name, (a, b, d) in sorted(pairs.items()):
        serving_distribution, shadow_distribution = Distribution.of(a), Distribution.of(b)
        if serving_distribution is not None and shadow_distribution is not None:
            result.serving_joined[name] = serving_distribution
            result.shadow_joined[name] = shadow_distribution
        if d:
            result.mean_abs_diff[name] = sum(d) / len(d)
        values[("shadow", name)] = b
    return result
