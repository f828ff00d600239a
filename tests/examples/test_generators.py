"""The use cases' synthetic data: plausible labels, point-in-time aggregates checked against a brute-force count,
and a timeline that only shifts with the anchor (pure pandas/NumPy, no Feast)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vatic.examples.fraud_detection import events as fraud_events
from vatic.examples.fraud_detection.history import (
    ACTIVE_DAYS,
    CUSTOMER_FEATURES,
    DAY_MS,
    MERCHANT_FEATURES,
    FraudParams,
    generate,
)
from vatic.examples.product_categorization import events as product_events
from vatic.examples.product_categorization.history import ProductParams
from vatic.examples.product_categorization.history import generate as generate_products

ANCHOR = 1_790_000_040_000
SMALL = FraudParams(customers=300, merchants=60, days=100, per_customer_day=0.5, training_days=30, seed=3)
SMALL_PRODUCTS = ProductParams(sellers=80, days=30, listings=3000, training_listings=1000, seed=5)


@pytest.fixture(scope="module")
def fraud():
    return generate(SMALL, ANCHOR)


@pytest.fixture(scope="module")
def products():
    return generate_products(SMALL_PRODUCTS, ANCHOR)


# --- fraud ---------------------------------------------------------------------------------------------------


def test_fraud_rate_and_chargebacks_are_plausible(fraud):
    history = fraud.history
    assert 0.005 < history["is_fraud"].mean() < 0.05
    charged = history["chargeback_time"].notna()
    # chargebacks come after the payment, before the anchor, and mostly for fraud
    assert (history.loc[charged, "chargeback_time"] > history.loc[charged, "event_time"]).all()
    assert (history.loc[charged, "chargeback_time"] < ANCHOR).all()
    assert history.loc[charged, "is_fraud"].mean() > 0.8
    assert history.loc[history["is_fraud"], "chargeback_time"].notna().mean() > 0.5
    # the history ends before the anchor and spans the requested days
    assert history["event_time"].max() < ANCHOR
    assert history["event_time"].min() >= ANCHOR - SMALL.days * DAY_MS


def test_fraud_signals_are_real(fraud):
    history = fraud.history
    risky = history["merchant_category"].map(lambda mcc: fraud_events.MCC[mcc][1] >= 1.0)
    assert history.loc[risky, "is_fraud"].mean() > 2 * history.loc[~risky, "is_fraud"].mean()
    world = fraud_events.make_world(SMALL.customers, SMALL.merchants, seed=SMALL.seed)
    compromised = {c.customer_id for c in world.customers if c.compromised}
    on_compromised = history["customer_id"].isin(compromised)
    assert history.loc[on_compromised, "is_fraud"].mean() > 4 * history.loc[~on_compromised, "is_fraud"].mean()


def test_every_generated_value_is_a_valid_transaction(fraud):
    from vatic.schemas import load_schema

    fields = [f["name"] for f in load_schema("transaction")["fields"]]
    assert set(fields) <= set(fraud.history.columns)
    assert fraud.history["event_id"].is_unique
    assert set(fraud.history["channel"]) <= set(fraud_events.CHANNELS)
    assert (fraud.history["amount"] > 0).all()


def _brute_force(history: pd.DataFrame, key: str, entity: str, at: int) -> dict[str, float]:
    """One snapshot's aggregates, counted directly from the raw history (events strictly before ``at``)."""
    mine = history[history[key] == entity]

    def before(days: int) -> pd.DataFrame:
        return mine[(mine["event_time"] < at) & (mine["event_time"] >= at - days * DAY_MS)]

    charged = mine["chargeback_time"].astype("float64")
    chargebacks = int(((charged < at) & (charged >= at - ACTIVE_DAYS * DAY_MS)).sum())
    last30, last90 = before(30), before(ACTIVE_DAYS)
    values = {
        "txn_count_1d": len(before(1)),
        "txn_count_7d": len(before(7)),
        "txn_count_30d": len(last30),
        "amount_mean_30d": last30["amount"].mean() if len(last30) else 0.0,
        "amount_max_30d": last30["amount"].max() if len(last30) else 0.0,
        "online_share_30d": (~last30["card_present"]).mean() if len(last30) else 0.0,
        "distinct_countries_30d": last30["country"].nunique(),
        "chargeback_count_90d": chargebacks,
        "chargeback_rate_90d": min(1.0, chargebacks / len(last90)) if len(last90) else 0.0,
    }
    return values


@pytest.mark.parametrize(
    ("table", "key", "names"),
    [("customer_stats", "customer_id", CUSTOMER_FEATURES), ("merchant_stats", "merchant_id", MERCHANT_FEATURES)],
)
def test_aggregates_count_only_what_happened_before_the_snapshot(fraud, table, key, names):
    frame = getattr(fraud, table)
    stamps = frame["event_timestamp"].astype("int64") // 1_000_000
    # snapshots sit on day boundaries before the anchor; the newest is the anchor itself ("now")
    assert ((ANCHOR - stamps) % DAY_MS == 0).all()
    assert stamps.max() == ANCHOR
    assert not frame.duplicated([key, "event_timestamp"]).any()
    sample = frame.sample(150, random_state=1)
    for row, at in zip(sample.itertuples(index=False), stamps[sample.index], strict=True):
        expected = _brute_force(fraud.history, key, getattr(row, key), int(at))
        for name in names:
            assert getattr(row, name) == pytest.approx(expected[name], rel=1e-9, abs=1e-9), (
                name,
                getattr(row, key),
                at,
            )


def test_moving_the_anchor_only_shifts_the_times():
    later = ANCHOR + 37 * 3_600_000 + 123
    a, b = generate(SMALL, ANCHOR), generate(SMALL, later)
    assert (b.history["event_time"] - a.history["event_time"] == later - ANCHOR).all()
    same = ["event_id", "customer_id", "merchant_id", "amount", "channel", "country", "is_fraud"]
    pd.testing.assert_frame_equal(a.history[same], b.history[same])
    cols = list(CUSTOMER_FEATURES)
    pd.testing.assert_frame_equal(a.customer_stats[["customer_id", *cols]], b.customer_stats[["customer_id", *cols]])


def test_the_demo_generators_keep_their_signatures():
    world = fraud_events.make_world(seed=8)
    sample = list(fraud_events.transactions(world, 50))
    assert len(sample) == 50
    assert all(isinstance(fraud, bool) for _, fraud in sample)
    assert [e["event_time"] for e, _ in sample] == sorted(e["event_time"] for e, _ in sample)
    listed = list(product_events.products(40, seed=8))
    assert len(listed) == 40
    assert {category for _, category in listed} <= set(product_events.CATEGORIES)
    # demo events come from the default sellers, whose history `prepare` turns into features
    assert {e["seller_id"] for e, _ in listed} <= {s.seller_id for s in product_events.default_sellers()}


# --- product categorization --------------------------------------------------------------------------------


def test_sellers_concentrate_on_few_categories(products):
    history = products.history
    top_share = history.groupby("seller_id")["category"].agg(lambda c: c.value_counts(normalize=True).iloc[0])
    busy = history["seller_id"].value_counts()
    assert top_share[busy[busy >= 20].index].mean() > 0.5
    # and listings of every category exist
    assert set(history["category"]) == set(product_events.CATEGORIES)


def test_seller_mix_is_the_share_of_past_listings(products):
    mix = products.seller_category_mix
    shares = mix[[f"share_{c}" for c in product_events.CATEGORIES]].to_numpy()
    assert np.allclose(shares.sum(axis=1), 1.0)
    stamps = mix["event_timestamp"].astype("int64") // 1_000_000
    assert stamps.max() == ANCHOR
    history = products.history
    sample = mix.sample(100, random_state=2)
    for row, at in zip(sample.itertuples(index=False), stamps[sample.index], strict=True):
        past = history[(history["seller_id"] == row.seller_id) & (history["event_time"] < at)]
        assert row.listing_count_total == len(past)
        assert row.listing_count_30d == int((past["event_time"] >= at - 30 * DAY_MS).sum())
        expected = past["category"].value_counts(normalize=True)
        for category in product_events.CATEGORIES:
            assert getattr(row, f"share_{category}") == pytest.approx(expected.get(category, 0.0))
