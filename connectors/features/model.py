"""What a feature lookup returns, and the missing-feature policy applied to it (plain data, no Feast types)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, overload

from vatic.schemas.errors import ConfigError, MissingFeatures

__all__ = [
    "EntityFeatures",
    "FeatureLookup",
    "FeatureStatus",
    "MissingAction",
    "MissingFeaturePolicy",
]


class FeatureStatus(StrEnum):
    """Status of one feature of one entity; the names are Feast's ``FieldStatus`` names.

    A status other than ``PRESENT`` is a *miss*, never an outage: outages raise
    :class:`~vatic.schemas.errors.FeatureStoreUnavailable` instead.

    * ``PRESENT`` - a value was stored and is within the feature view's TTL.
    * ``NOT_FOUND`` - nothing is stored for this entity (or this feature of it).
    * ``OUTSIDE_MAX_AGE`` - a value is stored but older than the feature view's TTL; it is not returned.
    * ``NULL_VALUE`` - the stored value is null.
    """

    PRESENT = "PRESENT"
    NOT_FOUND = "NOT_FOUND"
    OUTSIDE_MAX_AGE = "OUTSIDE_MAX_AGE"
    NULL_VALUE = "NULL_VALUE"


@dataclass(frozen=True, slots=True)
class EntityFeatures:
    """The features of one entity, keyed by feature reference (``"view:feature"``).

    Contract:

    * ``values`` and ``statuses`` hold every requested reference, in request order.
    * ``values[ref]`` is the stored value (a Python value, converted as Feast's ``OnlineResponse.to_dict``
      converts it) when ``statuses[ref]`` is ``PRESENT``, else ``None`` - unless a
      :class:`MissingFeaturePolicy` filled in a default.
    * ``missing`` maps each reference whose status is not ``PRESENT`` to its status; it is empty when every
      feature was found. A policy keeps ``missing`` as it was: it is the "missing" flag of defaulted values.
    * ``event_times`` maps each feature view read to the event time (Unix seconds) of the stored row, or
      ``None`` when no row was found.

    Repeated entities in one batch share one instance: treat it as read-only.
    """

    values: Mapping[str, Any]
    statuses: Mapping[str, FeatureStatus]
    missing: Mapping[str, FeatureStatus]
    event_times: Mapping[str, float | None]

    @property
    def complete(self) -> bool:
        """True when every requested feature is ``PRESENT``."""
        return not self.missing


class FeatureLookup(Sequence[EntityFeatures]):
    """The result of one batched lookup: one :class:`EntityFeatures` per requested entity, in request order.

    ``features`` are the distinct references looked up; ``unique_entities`` counts the distinct entity keys
    actually read (repeated keys are read once); ``source`` names the read path (``redis``, ``sqlite``,
    ``feast-sdk``).
    """

    __slots__ = ("_rows", "features", "source", "unique_entities")

    def __init__(
        self, rows: list[EntityFeatures], *, features: tuple[str, ...], unique_entities: int, source: str
    ) -> None:
        self._rows = rows
        self.features = features
        self.unique_entities = unique_entities
        self.source = source

    @overload
    def __getitem__(self, index: int) -> EntityFeatures: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[EntityFeatures]: ...

    def __getitem__(self, index: int | slice) -> EntityFeatures | Sequence[EntityFeatures]:
        return self._rows[index]

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[EntityFeatures]:
        return iter(self._rows)

    def __repr__(self) -> str:
        incomplete = sum(1 for row in self._rows if row.missing)
        return (
            f"FeatureLookup({len(self._rows)} entities, {self.unique_entities} unique, "
            f"{len(self.features)} features, {incomplete} incomplete, source={self.source!r})"
        )


MissingAction = Literal["default", "reject"]
_ACTIONS: frozenset[str] = frozenset({"default", "reject"})


@dataclass(frozen=True)
class MissingFeaturePolicy:
    """What to do when a feature is missing (``NOT_FOUND``, ``OUTSIDE_MAX_AGE`` or ``NULL_VALUE``).

    * ``action`` - the default for every feature: ``"default"`` fills in ``defaults.get(ref)`` (``None``
      when no default is given) and keeps the entity's ``missing`` flag; ``"reject"`` raises
      :class:`~vatic.schemas.errors.MissingFeatures` (a ``DataError``: dead-letter the event, 4xx on REST).
    * ``per_feature`` - overrides ``action`` for single references.
    * ``defaults`` - default value per reference.

    Apply it per entity (:meth:`apply`) so that one incomplete entity does not fail a whole micro-batch.
    Invalid settings raise :class:`~vatic.schemas.errors.ConfigError` at construction.
    """

    action: MissingAction = "default"
    defaults: Mapping[str, Any] = field(default_factory=dict)
    per_feature: Mapping[str, MissingAction] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = {
            key: action
            for key, action in [("action", self.action), *self.per_feature.items()]
            if action not in _ACTIONS
        }
        if bad:
            raise ConfigError(
                f"missing-feature policy: unknown action(s) {bad}; use 'default' or 'reject'", stage="enrich"
            )

    def action_for(self, ref: str) -> MissingAction:
        """The action for one feature reference."""
        return self.per_feature.get(ref, self.action)

    def apply(self, row: EntityFeatures) -> EntityFeatures:
        """Return ``row`` with defaults filled in, or raise ``MissingFeatures`` if a rejected feature is missing.

        A complete row is returned as is. ``MissingFeatures.missing`` lists every missing feature of the entity
        (reference -> status name), not only the rejected ones.
        """
        if not row.missing:
            return row
        rejected = [ref for ref in row.missing if self.action_for(ref) == "reject"]
        if rejected:
            raise MissingFeatures(
                "required feature(s) missing: " + ", ".join(f"{ref} ({row.missing[ref].value})" for ref in rejected),
                missing={ref: status.value for ref, status in row.missing.items()},
            )
        values = dict(row.values)
        for ref in row.missing:
            values[ref] = self.defaults.get(ref)
        return EntityFeatures(values=values, statuses=row.statuses, missing=row.missing, event_times=row.event_times)

    def apply_all(self, rows: Iterable[EntityFeatures]) -> list[EntityFeatures | MissingFeatures]:
        """:meth:`apply` to every row; a rejected row yields its ``MissingFeatures`` error in its place."""
        out: list[EntityFeatures | MissingFeatures] = []
        for row in rows:
            try:
                out.append(self.apply(row))
            except MissingFeatures as exc:
                out.append(exc)
        return out
