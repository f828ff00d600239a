"""The use cases' Feast repositories with real Feast 0.67: apply, materialize to SQLite and to the shared Redis,
online values equal to the newest rows written, and a point-in-time labelled set that never uses future rows."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from vatic.connectors.features import FeatureClient, FeatureStatus
from vatic.examples import feast_repo
from vatic.examples.fraud_detection import history as fraud_history
from vatic.examples.layout import case_home, feature_repo_dir, service_dir
from vatic.examples.product_categorization import history as product_history
from vatic.serving.config.loader import load_service
from vatic.serving.core.tensors import MISSING_SUFFIX

FRAUD = fraud_history.FraudParams(customers=250, merchants=50, days=100, per_customer_day=0.5, training_days=20, seed=4)
PRODUCTS = product_history.ProductParams(sellers=60, days=30, listings=2000, training_listings=600, seed=6)
DAY_MS = fraud_history.DAY_MS
FRAUD_CONFIG = load_service(service_dir("fraud_detection"))
PRODUCT_CONFIG = load_service(service_dir("product_categorization"))


def _now_ms() -> int:
    return int(datetime.now(UTC).replace(second=0, microsecond=0).timestamp() * 1000)


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("usecases-home")


@pytest.fixture(scope="module")
def fraud(home):
    """Fraud data anchored now, applied and materialized to SQLite."""
    anchor_ms = _now_ms()
    data = fraud_history.generate(FRAUD, anchor_ms)
    data_dir = case_home("fraud_detection", home) / "data"
    data_dir.mkdir(parents=True)
    data.customer_stats.to_parquet(data_dir / "customer_stats.parquet")
    data.merchant_stats.to_parquet(data_dir / "merchant_stats.parquet")
    config = feast_repo.repo_config("fraud_detection", home=home)
    written = feast_repo.apply_and_materialize(
        "fraud_detection", [config], data_dir, datetime.fromtimestamp(anchor_ms / 1000, UTC)
    )
    assert written == ["sqlite"]
    return data, config


@pytest.fixture(scope="module")
def products(home):
    anchor_ms = _now_ms()
    data = product_history.generate(PRODUCTS, anchor_ms)
    data_dir = case_home("product_categorization", home) / "data"
    data_dir.mkdir(parents=True)
    data.seller_category_mix.to_parquet(data_dir / "seller_category_mix.parquet")
    return data, data_dir, anchor_ms


def _newest(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    return frame.sort_values("event_timestamp").groupby(key).tail(1).set_index(key)


def _check_online(client: FeatureClient, table: pd.DataFrame, key: str, view: str, names: list[str]) -> None:
    newest = _newest(table, key)
    ids = sorted(newest.index)[:40]
    refs = [f"{view}:{name}" for name in names]
    lookup = client.get_sync([{key: entity} for entity in [*ids, "nobody"]], refs)
    for entity, row in zip(ids, lookup[: len(ids)], strict=True):
        assert row.complete, (entity, row.missing)
        for ref, name in zip(refs, names, strict=True):
            assert row.values[ref] == pytest.approx(newest.loc[entity, name]), (entity, ref)
    assert set(lookup[-1].missing.values()) == {FeatureStatus.NOT_FOUND}


def test_fraud_online_store_returns_the_newest_rows(fraud):
    data, config = fraud
    with FeatureClient(config) as client:
        assert client.source == "sqlite"
        _check_online(
            client, data.customer_stats, "customer_id", "customer_stats", list(fraud_history.CUSTOMER_FEATURES)
        )
        _check_online(
            client, data.merchant_stats, "merchant_id", "merchant_stats", list(fraud_history.MERCHANT_FEATURES)
        )


def test_the_service_reads_the_repo_through_feasts_own_loader(fraud, home, monkeypatch):
    """What serving does: open ``<service>/../features`` (feature_store.yaml expands $VATIC_STACK_HOME)."""
    data, _ = fraud
    monkeypatch.setenv("VATIC_STACK_HOME", str(home))
    repo = service_dir("fraud_detection") / FRAUD_CONFIG.features.repo
    assert repo.resolve() == feature_repo_dir("fraud_detection")
    with FeatureClient.from_repo(repo) as client:
        assert client.project == "vatic_fraud_detection"
        entity = sorted(set(data.customer_stats["customer_id"]))[0]
        row = client.get_sync([{"customer_id": entity, "merchant_id": "M00000"}], FRAUD_CONFIG.features.refs)[0]
        assert row.complete
        assert (
            row.values["customer_stats:txn_count_30d"]
            == _newest(data.customer_stats, "customer_id").loc[entity, "txn_count_30d"]
        )
    # nothing of Feast's state was written into the source tree
    assert sorted(p.name for p in feature_repo_dir("fraud_detection").iterdir() if p.name != "__pycache__") == [
        "definitions.py",
        "feature_store.yaml",
    ]


def _expected(history: pd.DataFrame, key: str, entity: str, at: int) -> dict[str, float] | None:
    """customer/merchant aggregates from the raw history, events strictly before ``at``; None if no row."""
    mine = history[history[key] == entity]
    window = mine[(mine["event_time"] < at) & (mine["event_time"] >= at - fraud_history.ACTIVE_DAYS * DAY_MS)]
    if window.empty:
        return None
    last7 = mine[(mine["event_time"] < at) & (mine["event_time"] >= at - 7 * DAY_MS)]
    last30 = mine[(mine["event_time"] < at) & (mine["event_time"] >= at - 30 * DAY_MS)]
    charged = mine["chargeback_time"].astype("float64")
    return {
        "txn_count_7d": len(last7),
        "amount_mean_30d": last30["amount"].mean() if len(last30) else 0.0,
        "chargeback_count_90d": int(((charged < at) & (charged >= at - fraud_history.ACTIVE_DAYS * DAY_MS)).sum()),
    }


def test_labelled_set_is_point_in_time_correct_and_never_sees_the_future(fraud):
    data, config = fraud
    spec = FRAUD_CONFIG.features
    since = data.anchor_ms - FRAUD.training_days * DAY_MS
    events = data.history[data.history["event_time"] >= since].reset_index(drop=True)
    with feast_repo.quiet():
        store = feast_repo.store_for(config)
    labelled, rejected = feast_repo.labelled_set(store, spec, events)
    assert rejected == 0
    assert list(labelled["event_id"]) == list(events["event_id"])  # every event, same order

    sample = labelled.sample(400, random_state=3)
    leaks_would_show = 0
    for row in sample.to_dict("records"):
        t = row["event_time"]
        snapshot = t - (t - data.anchor_ms) % DAY_MS  # newest daily snapshot at or before t
        for key, view in (("customer_id", "customer_stats"), ("merchant_id", "merchant_stats")):
            expected = _expected(data.history, key, row[key], snapshot)
            if expected is None:  # no row for this entity within the TTL: missing, defaulted, flagged
                assert row[f"{view}:txn_count_7d{MISSING_SUFFIX}"] == "NOT_FOUND"
                assert row[f"{view}:txn_count_7d"] == spec.policy(f"{view}:txn_count_7d").default
                continue
            assert row[f"{view}:txn_count_7d{MISSING_SUFFIX}"] is None
            for name, value in expected.items():
                assert row[f"{view}:{name}"] == pytest.approx(value), (key, row[key], name, t)
            # counting up to the event itself (what a leaky join would see) gives other values for some rows
            leaky = _expected(data.history, key, row[key], t + 1)
            assert leaky is not None
            leaks_would_show += leaky["txn_count_7d"] != expected["txn_count_7d"]
    assert leaks_would_show > 100  # the check above can tell a leak from a correct join


def test_new_customers_are_missing_not_dropped(fraud):
    """Feast's file store drops an entity row whose rows are all newer than the event; we keep it as missing."""
    data, config = fraud
    first = data.history.groupby("customer_id")["event_time"].min()
    late = first[first > data.anchor_ms - FRAUD.training_days * DAY_MS]
    assert len(late) > 0  # accounts opened during the window exist
    events = data.history[data.history["event_time"].isin(late.to_numpy())].reset_index(drop=True)
    events = events[events["customer_id"].isin(late.index)].reset_index(drop=True)
    with feast_repo.quiet():
        store = feast_repo.store_for(config)
    labelled, _ = feast_repo.labelled_set(store, FRAUD_CONFIG.features, events)
    assert len(labelled) == len(events)
    assert (labelled[f"customer_stats:txn_count_30d{MISSING_SUFFIX}"] == "NOT_FOUND").all()
    assert (labelled["customer_stats:txn_count_30d"] == 0).all()


def test_product_repo_materializes_to_sqlite_and_the_shared_redis(products, home, redis_url):
    data, data_dir, anchor_ms = products
    project = f"vt_{uuid.uuid4().hex[:10]}"
    sqlite = feast_repo.repo_config("product_categorization", home=home, project=project)
    redis = feast_repo.repo_config("product_categorization", home=home, project=project, redis_url=redis_url)
    anchor = datetime.fromtimestamp(anchor_ms / 1000, UTC)
    try:
        assert feast_repo.apply_and_materialize("product_categorization", [sqlite, redis], data_dir, anchor) == [
            "sqlite",
            "redis",
        ]
        names = list(product_history.SELLER_FEATURES)
        for config, source in ((sqlite, "sqlite"), (redis, "redis")):
            with FeatureClient(config) as client:
                assert client.source == source
                _check_online(client, data.seller_category_mix, "seller_id", "seller_category_mix", names)
    finally:
        with feast_repo.quiet():
            feast_repo.store_for(redis).teardown()


def test_product_labelled_set_has_the_seller_mix_before_the_listing(products, home):
    data, data_dir, anchor_ms = products
    config = feast_repo.repo_config("product_categorization", home=home)
    feast_repo.apply_and_materialize(
        "product_categorization", [config], data_dir, datetime.fromtimestamp(anchor_ms / 1000, UTC)
    )
    events = data.history.iloc[-PRODUCTS.training_listings :].reset_index(drop=True)
    with feast_repo.quiet():
        store = feast_repo.store_for(config)
    labelled, _ = feast_repo.labelled_set(store, PRODUCT_CONFIG.features, events)
    for row in labelled.sample(100, random_state=4).to_dict("records"):
        t = row["event_time"]
        snapshot = t - (t - anchor_ms) % DAY_MS
        past = data.history[(data.history["seller_id"] == row["seller_id"]) & (data.history["event_time"] < snapshot)]
        shares = past["category"].value_counts(normalize=True)
        for ref in PRODUCT_CONFIG.features.refs:
            category = ref.split(":share_", 1)[1]
            assert row[ref] == pytest.approx(shares.get(category, 0.0))
            assert math.isclose(row[ref], 0.0) or not past.empty


def test_the_feast_cli_applies_the_checked_in_repository(products, home):
    """``feast apply`` run in the repository folder, as a developer would (VATIC_STACK_HOME exported)."""
    _, _, _ = products
    feast = Path(sys.executable).parent / "feast"
    env = {**os.environ, "VATIC_STACK_HOME": str(home)}
    done = subprocess.run(
        [str(feast), "apply"],
        cwd=feature_repo_dir("product_categorization"),
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (case_home("product_categorization", home) / "feast" / "registry.db").is_file()
