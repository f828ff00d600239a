"""The Feast side of the use cases (pipeline environment): repo configs, definitions, apply, materialize, and the
point-in-time labelled training sets.

* :func:`repo_config` - the use case's checked-in ``feature_store.yaml`` for a given home, optionally with a Redis
  online store and another project name (tests use unique ones on the shared Redis).
* :func:`definitions` - the Feast entities and feature views of a use case over the Parquet files of a data folder
  (``features/definitions.py`` exposes the same objects to the ``feast`` CLI).
* :func:`apply_and_materialize` - ``apply`` the definitions and materialize the rows of the last TTL into the
  online store(s).
* :func:`labelled_set` - Feast's ``get_historical_features`` for labelled events, then the service's
  missing-feature policy exactly as serving applies it (:func:`vatic.serving.core.enrich.policy_of`): the values a
  model is trained on are those it is served.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd  # type: ignore[import-untyped]
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig, ValueType
from feast.infra.online_stores.redis import RedisOnlineStoreConfig
from feast.types import Float64, Int64, String

from vatic.connectors.features import EntityFeatures, FeatureStatus
from vatic.connectors.features.redis_security import secure_feature_store
from vatic.examples.layout import Case, feast_config, feature_repo_dir
from vatic.schemas.errors import MissingFeatures
from vatic.serving.config.model import FeatureSpec
from vatic.serving.core.enrich import policy_of
from vatic.serving.core.tensors import MISSING_SUFFIX

#: TTL of every feature view: rows are written daily, so the newest row of an active entity is never older
TTL = timedelta(days=3)


def repo_config(
    case: Case, *, home: Path | None = None, redis_url: str | None = None, project: str | None = None
) -> RepoConfig:
    """The Feast ``RepoConfig`` of ``feature_store.yaml`` for ``home`` (default: the stack's home).

    ``redis_url`` replaces the SQLite online store by that Redis; ``project`` replaces the project name.
    """
    raw = feast_config(case, home, redis_url)
    if project is not None:
        raw["project"] = project
    config = RepoConfig(**raw)
    config.repo_path = feature_repo_dir(case)
    return config


def _field(name: str, kind: str) -> Field:
    return Field(name=name, dtype=Int64 if kind == "int" else Float64)


def _view(name: str, entity: Entity, key: str, features: dict[str, str], source: Path, doc: str) -> FeatureView:
    return FeatureView(
        name=name,
        entities=[entity],
        ttl=TTL,
        schema=[Field(name=key, dtype=String), *(_field(f, kind) for f, kind in features.items())],
        source=FileSource(name=f"{name}_source", path=str(source), timestamp_field="event_timestamp"),
        online=True,
        description=doc,
    )


def definitions(case: Case, data_dir: Path) -> list[Entity | FeatureView]:
    """The entities and feature views of ``case`` over ``<data_dir>/<view>.parquet``."""
    if case == "fraud_detection":
        from vatic.examples.fraud_detection.history import CUSTOMER_FEATURES, MERCHANT_FEATURES

        customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
        merchant = Entity(name="merchant", join_keys=["merchant_id"], value_type=ValueType.STRING)
        return [
            customer,
            merchant,
            _view(
                "customer_stats",
                customer,
                "customer_id",
                CUSTOMER_FEATURES,
                data_dir / "customer_stats.parquet",
                "Daily point-in-time aggregates of the customer's payments and chargebacks",
            ),
            _view(
                "merchant_stats",
                merchant,
                "merchant_id",
                MERCHANT_FEATURES,
                data_dir / "merchant_stats.parquet",
                "Daily point-in-time aggregates of the merchant's payments and chargebacks",
            ),
        ]
    from vatic.examples.product_categorization.history import SELLER_FEATURES

    seller = Entity(name="seller", join_keys=["seller_id"], value_type=ValueType.STRING)
    return [
        seller,
        _view(
            "seller_category_mix",
            seller,
            "seller_id",
            SELLER_FEATURES,
            data_dir / "seller_category_mix.parquet",
            "Daily point-in-time category mix of the seller's past listings",
        ),
    ]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence Feast's progress output, warnings and info logs (errors still raise)."""
    loggers = [logging.getLogger(name) for name in ("feast", "dask", "distributed")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def store_for(config: RepoConfig) -> FeatureStore:
    """A ``FeatureStore`` over ``config`` (relative paths resolve against the feature repository folder).

    A Redis online store connects with the ``VATIC_REDIS_*`` credentials and TLS settings, like the serving
    side's reads (:func:`vatic.connectors.features.redis_security.secure_feature_store`).
    """
    return secure_feature_store(FeatureStore(repo_path=str(config.repo_path), config=config))


def apply_and_materialize(
    case: Case, configs: Sequence[RepoConfig], data_dir: Path, anchor: datetime, *, fresh: bool = True
) -> list[str]:
    """Apply ``case``'s definitions with the first config and materialize ``[anchor - TTL, anchor]`` into the
    online store of every config (they must share one registry). With ``fresh``, the registry and SQLite
    online store files of the first config are removed first, so stale views cannot survive a change.

    Returns the online store types written, in order.
    """
    first = configs[0]
    if fresh:
        for path in (first.registry.path, getattr(first.online_store, "path", None)):
            if path:
                Path(path).unlink(missing_ok=True)
    for config in configs:
        if getattr(config.online_store, "type", "") == "sqlite":
            Path(config.online_store.path).parent.mkdir(parents=True, exist_ok=True)
    Path(first.registry.path).parent.mkdir(parents=True, exist_ok=True)
    objects = definitions(case, data_dir)
    written = []
    with quiet():
        store_for(first).apply(list(objects))
        for config in configs:
            store = store_for(config)
            if isinstance(config.online_store, RedisOnlineStoreConfig):
                # rewrite this project's keys from scratch: a changed view leaves no stale fields behind
                store.teardown()  # type: ignore[no-untyped-call]
                store.apply(list(objects))
            store.materialize(start_date=anchor - TTL - timedelta(hours=1), end_date=anchor + timedelta(minutes=1))
            written.append(str(config.online_store.type))
    return written


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def _plain(value: Any) -> Any:
    """A NumPy/pandas scalar as the Python value an online lookup returns (int, float, str, bool)."""
    if hasattr(value, "item"):
        return value.item()
    return value


def historical_features(store: FeatureStore, spec: FeatureSpec, events: pd.DataFrame, time_column: str) -> pd.DataFrame:
    """The raw point-in-time values of ``spec.refs`` for ``events`` (same rows, same order; null when missing).

    One ``get_historical_features`` call per feature view, over the distinct (join keys, timestamp) pairs of the
    events, merged back onto the events here: Feast 0.67's file (Dask) offline store drops an entity row whose
    stored rows all lie outside the TTL window (e.g. a new customer whose first snapshot is after the event) and
    collapses entity rows sharing a key and a timestamp (feast-dev/feast#6787), where the contract - and the
    online store - say "missing".
    """
    stamp = pd.to_datetime(events[time_column], unit="ms", utc=True)
    result = pd.DataFrame(index=range(len(events)))
    views: dict[str, list[str]] = {}
    for ref in spec.refs:
        view, name = ref.split(":", 1)
        views.setdefault(view, []).append(name)
    for view, names in views.items():
        join_keys = [column.name for column in store.get_feature_view(view).entity_columns]
        unknown = [key for key in join_keys if key not in spec.entities]
        if unknown:
            raise ValueError(f"feature view {view} is keyed by {unknown}, which features.entities does not map")
        keys = pd.DataFrame({key: events[spec.entities[key]].to_numpy() for key in join_keys})
        keys["event_timestamp"] = stamp.to_numpy()
        wanted = keys.drop_duplicates(ignore_index=True)
        with quiet():
            found = store.get_historical_features(
                entity_df=wanted, features=[f"{view}:{name}" for name in names], full_feature_names=True
            ).to_df()
        found = found.drop_duplicates(subset=[*join_keys, "event_timestamp"], keep="last")
        merged = keys.merge(found, on=[*join_keys, "event_timestamp"], how="left", validate="many_to_one")
        for name in names:
            result[f"{view}:{name}"] = merged[f"{view}__{name}"].to_numpy()
    return result


def labelled_set(
    store: FeatureStore, spec: FeatureSpec, events: pd.DataFrame, *, time_column: str = "event_time"
) -> tuple[pd.DataFrame, int]:
    """``events`` joined point-in-time with ``spec.refs`` (:func:`historical_features`), after the policy.

    ``events`` must have the event fields named by ``spec.entities`` and ``time_column`` (epoch ms). Returns the
    events (same order) with one column per feature reference holding the value after the missing-feature
    policy, and one ``<ref>#missing`` column holding the status of each missing feature (``NOT_FOUND``: no row
    within the TTL before the event) or None, as serving's ``missing`` flags; and the number of events dropped
    because the policy rejects them (serving dead-letters those).
    """
    joined = historical_features(store, spec, events, time_column)
    policy = policy_of(spec)
    values: dict[str, list[Any]] = {ref: [] for ref in spec.refs}
    flags: dict[str, list[str | None]] = {ref: [] for ref in spec.refs}
    keep: list[bool] = []
    columns = {ref: joined[ref].tolist() for ref in spec.refs}
    for i in range(len(events)):
        raw = {ref: columns[ref][i] for ref in spec.refs}
        statuses = {
            ref: FeatureStatus.NOT_FOUND if _missing(value) else FeatureStatus.PRESENT for ref, value in raw.items()
        }
        row = EntityFeatures(
            values={ref: None if _missing(value) else _plain(value) for ref, value in raw.items()},
            statuses=statuses,
            missing={ref: status for ref, status in statuses.items() if status != FeatureStatus.PRESENT},
            event_times={},
        )
        try:
            applied = policy.apply(row)
        except MissingFeatures:
            keep.append(False)
            continue
        keep.append(True)
        for ref in spec.refs:
            values[ref].append(applied.values[ref])
            status = applied.missing.get(ref)
            flags[ref].append(status.value if status is not None else None)
    out = events[keep].reset_index(drop=True).copy()
    for ref in spec.refs:
        out[ref] = pd.Series(values[ref])  # ints stay int64; with a float default or a None, float64
        out[ref + MISSING_SUFFIX] = pd.Series(flags[ref], dtype=object)
    return out, keep.count(False)
