"""Lookup plans: feature references resolved against the Feast registry, and entity batches keyed for reading.

A :class:`LookupPlan` is built once per distinct tuple of feature references and cached by the client (reading
a feature view from Feast's registry costs about half a millisecond). Feature views are grouped by their join
keys: every reader looks each distinct entity key of a group up once, whatever the number of views and of
repeated entities in the batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from feast import FeatureView
from feast.errors import FeastObjectNotFoundException
from feast.infra.registry.base_registry import BaseRegistry
from feast.value_type import ValueType

from vatic.schemas.errors import ConfigError, InvalidEntityKey

__all__ = ["KeyedBatch", "LookupPlan", "ViewPlan", "build_plan", "key_entities", "parse_refs"]

#: join key value types we can look up, with the Python type an entity value must have
_KEY_TYPES: dict[ValueType, type] = {
    ValueType.STRING: str,
    ValueType.INT64: int,
    ValueType.INT32: int,
    ValueType.BYTES: bytes,
}
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True, slots=True, eq=False)
class ViewPlan:
    """The requested features of one feature view.

    ``features``/``refs``/``value_types`` are aligned; ``group`` indexes :attr:`LookupPlan.groups`;
    ``ttl_s`` is ``None`` when the view's TTL is unset or zero (values never expire); ``declared`` is the
    number of features the view declares (requested or not; 0 when unknown).
    """

    name: str
    group: int
    features: tuple[str, ...]
    refs: tuple[str, ...]
    value_types: tuple[ValueType, ...]
    ttl_s: float | None
    declared: int = 0


@dataclass(frozen=True, slots=True, eq=False, weakref_slot=True)
class LookupPlan:
    """Resolved feature references. Identity-hashed and weak-referenceable: readers cache per-plan layouts.

    ``groups[g]`` is a sorted tuple of join keys; ``group_views[g]`` the indexes of the views keyed by it;
    ``key_types`` the value type of every join key used.
    """

    project: str
    refs: tuple[str, ...]
    views: tuple[ViewPlan, ...]
    groups: tuple[tuple[str, ...], ...]
    group_views: tuple[tuple[int, ...], ...]
    key_types: Mapping[str, ValueType]


@dataclass(frozen=True, slots=True)
class KeyedBatch:
    """An entity batch keyed for reading.

    ``keys[g]`` lists the distinct key tuples of group ``g`` (values in the group's join-key order);
    ``slots[i]`` is the index of entity ``i``'s distinct combination in ``combos``, and ``combos[c][g]`` the
    index into ``keys[g]`` of that combination.
    """

    keys: tuple[list[tuple[Any, ...]], ...]
    combos: list[tuple[int, ...]]
    slots: list[int]

    @property
    def unique_keys(self) -> int:
        """Number of distinct entity keys across all groups (what is actually read)."""
        return sum(len(k) for k in self.keys)


def parse_refs(features: Sequence[str]) -> tuple[str, ...]:
    """Validate ``"view:feature"`` references and drop repeats, keeping first-seen order."""
    if isinstance(features, str):
        raise ConfigError("features must be a list of 'view:feature' references, not one string")
    refs: dict[str, None] = {}
    for ref in features:
        view, sep, feature = ref.partition(":")
        if not sep or not view or not feature or ":" in feature:
            raise ConfigError(f"feature reference {ref!r} is not of the form 'feature_view:feature'")
        refs[ref] = None
    if not refs:
        raise ConfigError("no feature references given")
    return tuple(refs)


def _ttl_seconds(ttl: timedelta | None) -> float | None:
    if ttl is None:
        return None
    seconds = ttl.total_seconds()
    return seconds if seconds > 0 else None


def build_plan(registry: BaseRegistry, project: str, refs: tuple[str, ...]) -> LookupPlan:
    """Resolve ``refs`` (from :func:`parse_refs`) against Feast's registry.

    Raises ``ConfigError`` for an unknown feature view or feature, an on-demand view, a view without entities
    or one whose join keys are remapped (``with_join_key_map``), and join keys of a type other than string,
    int64, int32 or bytes.
    """
    by_view: dict[str, list[str]] = {}
    for ref in refs:
        view, _, feature = ref.partition(":")
        by_view.setdefault(view, []).append(feature)

    groups: dict[tuple[str, ...], int] = {}
    group_views: list[list[int]] = []
    key_types: dict[str, ValueType] = {}
    views: list[ViewPlan] = []
    for view_name, features in by_view.items():
        try:
            fv = registry.get_any_feature_view(view_name, project, allow_cache=True)
        except FeastObjectNotFoundException as exc:
            raise ConfigError(f"feature view {view_name!r} not found in Feast project {project!r}") from exc
        if not isinstance(fv, FeatureView):
            raise ConfigError(
                f"feature view {view_name!r} is a {type(fv).__name__}; only (stream) feature views "
                "stored in the online store can be looked up"
            )
        if fv.projection.join_key_map:
            raise ConfigError(f"feature view {view_name!r}: remapped join keys are not supported")
        columns = {f.name: f.dtype.to_value_type() for f in fv.entity_columns}
        if not columns:
            raise ConfigError(f"feature view {view_name!r} has no entities; entity-less views are not supported")
        for key, vtype in columns.items():
            if vtype not in _KEY_TYPES:
                raise ConfigError(f"join key {key!r} of {view_name!r} has unsupported type {vtype.name}")
            if key_types.setdefault(key, vtype) != vtype:
                raise ConfigError(f"join key {key!r} has different types across the requested feature views")
        declared = {f.name: f.dtype.to_value_type() for f in fv.features}
        unknown = [f for f in features if f not in declared]
        if unknown:
            raise ConfigError(f"feature view {view_name!r} has no feature(s) {unknown}")
        group_key = tuple(sorted(columns))
        group = groups.setdefault(group_key, len(groups))
        if group == len(group_views):
            group_views.append([])
        group_views[group].append(len(views))
        views.append(
            ViewPlan(
                name=view_name,
                group=group,
                features=tuple(features),
                refs=tuple(f"{view_name}:{f}" for f in features),
                value_types=tuple(declared[f] for f in features),
                ttl_s=_ttl_seconds(fv.ttl),
                declared=len(declared),
            )
        )
    return LookupPlan(
        project=project,
        refs=tuple(ref for view in views for ref in view.refs),
        views=tuple(views),
        groups=tuple(groups),
        group_views=tuple(tuple(v) for v in group_views),
        key_types=key_types,
    )


def _check_value(key: str, value: Any, vtype: ValueType) -> str | None:
    if value is None:
        return f"join key {key!r} is missing or null"
    expected = _KEY_TYPES[vtype]
    if type(value) is not expected:  # bool is an int subclass, and must not pass for one
        return f"join key {key!r} must be {expected.__name__} ({vtype.name}), got {type(value).__name__}"
    if vtype is ValueType.INT32 and isinstance(value, int) and not _INT32_MIN <= value <= _INT32_MAX:
        return f"join key {key!r} is out of the int32 range"
    return None


def key_entities(plan: LookupPlan, entities: Sequence[Mapping[str, Any]]) -> KeyedBatch:
    """Key a batch of entity dicts for ``plan``: validate join keys and dedupe repeated keys.

    Keys not used by the plan are ignored. Raises ``InvalidEntityKey`` (a ``DataError``) naming every bad
    entity by its index when any join key is missing, ``None`` or of the wrong Python type.
    """
    group_index: list[dict[tuple[Any, ...], int]] = [{} for _ in plan.groups]
    keys: tuple[list[tuple[Any, ...]], ...] = tuple([] for _ in plan.groups)
    combo_index: dict[tuple[int, ...], int] = {}
    combos: list[tuple[int, ...]] = []
    slots: list[int] = []
    problems: dict[int, str] = {}
    key_types = plan.key_types
    # per group, the exact type each join key must have; INT32 keys (range-checked) always take the full check
    fast = [
        tuple(type(None) if key_types[k] is ValueType.INT32 else _KEY_TYPES[key_types[k]] for k in join_keys)
        for join_keys in plan.groups
    ]
    for i, entity in enumerate(entities):
        combo: list[int] = []
        for g, join_keys in enumerate(plan.groups):
            try:
                values = (entity[join_keys[0]],) if len(join_keys) == 1 else tuple(entity[k] for k in join_keys)
            except KeyError as exc:
                problems[i] = f"join key {exc.args[0]!r} is missing or null"
                break
            except TypeError:
                problems[i] = f"entity must be a mapping of join keys, got {type(entity).__name__}"
                break
            # fast check (exact Python types, no int32 key); the precise message only for a failing entity
            expected = fast[g]
            if (
                type(values[0]) is not expected[0]
                if len(values) == 1
                else not all(type(v) is t for v, t in zip(values, expected, strict=True))
            ):
                bad = next(
                    (p for k, v in zip(join_keys, values, strict=True) if (p := _check_value(k, v, key_types[k]))),
                    None,
                )
                if bad is not None:
                    problems[i] = bad
                    break
            index = group_index[g]
            slot = index.get(values)
            if slot is None:
                slot = index[values] = len(keys[g])
                keys[g].append(values)
            combo.append(slot)
        else:
            combo_t = tuple(combo)
            c = combo_index.get(combo_t)
            if c is None:
                c = combo_index[combo_t] = len(combos)
                combos.append(combo_t)
            slots.append(c)
    if problems:
        shown = "; ".join(f"#{i}: {p}" for i, p in list(problems.items())[:5])
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        raise InvalidEntityKey(f"{len(problems)} invalid entity key(s): {shown}{more}", problems=problems)
    return KeyedBatch(keys=keys, combos=combos, slots=slots)
