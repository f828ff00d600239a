"""A history of product listings and the point-in-time seller category mix, on a timeline ending at ``anchor_ms``.

Pure pandas/NumPy (both Python environments). As for fraud detection, timestamps are ``anchor_ms`` minus
offsets that depend only on the seed and the sizes, so the labelled training set does not change with the
anchor while the newest feature rows are always fresh.

Seller features (:func:`seller_category_mix`): one snapshot row per seller and day boundary
``s = anchor - k days`` (k = days-1 .. 0), over the seller's listings with ``event_time < s``:

* ``share_<category>`` - fraction of the seller's past listings in that category (they sum to 1);
* ``listing_count_30d`` - listings in the 30 days before ``s``; ``listing_count_total`` - all past listings.

A row exists once the seller has listed anything. Its ``event_timestamp`` is ``s``, so a point-in-time join of a
listing at ``t`` never sees the listing itself (its own category would leak the label).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

from vatic.examples.product_categorization.events import CATEGORIES, make_sellers, products

DAY_MS = 86_400_000

#: seller_category_mix features: name -> kind ("int" or "float")
SELLER_FEATURES: dict[str, str] = {
    **{f"share_{category}": "float" for category in CATEGORIES},
    "listing_count_30d": "int",
    "listing_count_total": "int",
}
#: the seller features the categorization model reads, in the order of its ``seller_mix`` input
MIX_FEATURES = [f"share_{category}" for category in CATEGORIES]


@dataclass(frozen=True)
class ProductParams:
    """Sizes of the generated product data; defaults are ``prepare``'s."""

    sellers: int = 500
    days: int = 60
    listings: int = 20_000
    training_listings: int = 5000
    noise: float = 0.06
    seed: int = 11

    def __post_init__(self) -> None:
        if self.training_listings >= self.listings:
            raise ValueError(
                f"training_listings ({self.training_listings}) must be fewer than listings ({self.listings})"
            )


@dataclass(frozen=True)
class ProductData:
    """The generated data of one run: the labelled listings (``category`` column) and the seller mix table."""

    history: pd.DataFrame
    seller_category_mix: pd.DataFrame
    anchor_ms: int


def simulate(params: ProductParams, anchor_ms: int) -> pd.DataFrame:
    """Product-created events spread over the ``days`` before ``anchor_ms`` (about ``params.listings``, those
    before the anchor), with their true ``category``; without the ``attributes`` map.

    Sellers come from ``make_sellers(params.sellers)`` (the default population for 500 sellers).
    """
    span = params.days * DAY_MS
    gap = max(1, span // (params.listings + 1))
    start_ms = anchor_ms - span
    rows = []
    for event, category in products(
        params.listings,
        seed=params.seed,
        start_ms=start_ms,
        noise=params.noise,
        sellers=make_sellers(params.sellers),
        interval_ms=(1, 2 * gap - 1),
    ):
        at = event["event_time"]
        assert isinstance(at, int)
        if at >= anchor_ms:
            break
        rows.append({**event, "category": category})
    # the attributes map is not a model input: the table keeps the flat fields
    return pd.DataFrame(rows).drop(columns=["attributes"])


def seller_category_mix(history: pd.DataFrame, *, sellers: int, days: int, anchor_ms: int) -> pd.DataFrame:
    """Daily point-in-time seller features (:data:`SELLER_FEATURES`), see the module docstring."""
    ids = [seller.seller_id for seller in make_sellers(sellers)]
    position = {seller: i for i, seller in enumerate(ids)}
    start_ms = anchor_ms - days * DAY_MS
    index = history["seller_id"].map(position).to_numpy()
    day = ((history["event_time"].to_numpy() - start_ms) // DAY_MS).astype(np.int64)
    category = history["category"].map({c: i for i, c in enumerate(CATEGORIES)}).to_numpy()
    daily = np.zeros((len(ids), days, len(CATEGORIES)), dtype=np.int64)
    np.add.at(daily, (index, day, category), 1)
    # cumulative[:, k] = listings before snapshot k (k = 0..days)
    cumulative = np.concatenate([np.zeros_like(daily[:, :1]), np.cumsum(daily, axis=1)], axis=1)
    total = cumulative.sum(axis=2)
    per_day = daily.sum(axis=2)
    per_day_cum = np.concatenate([np.zeros_like(per_day[:, :1]), np.cumsum(per_day, axis=1)], axis=1)
    lagged = np.concatenate([np.zeros_like(per_day_cum[:, :30]), per_day_cum[:, :-30]], axis=1)[:, : days + 1]
    last_30 = per_day_cum - lagged

    seller_index, k_index = np.nonzero(total[:, 1:] > 0)
    k_index = k_index + 1
    frame = pd.DataFrame({"seller_id": np.asarray(ids, dtype=object)[seller_index]})
    counts = cumulative[seller_index, k_index, :].astype(np.float64)
    shares = counts / counts.sum(axis=1, keepdims=True)
    for i, name in enumerate(CATEGORIES):
        frame[f"share_{name}"] = shares[:, i]
    frame["listing_count_30d"] = last_30[seller_index, k_index].astype(np.int64)
    frame["listing_count_total"] = total[seller_index, k_index].astype(np.int64)
    frame["event_timestamp"] = pd.to_datetime(start_ms + k_index.astype(np.int64) * DAY_MS, unit="ms", utc=True)
    return frame.sort_values(["event_timestamp", "seller_id"], kind="stable").reset_index(drop=True)


def generate(params: ProductParams, anchor_ms: int) -> ProductData:
    """Listings and seller features for ``params``, anchored at ``anchor_ms``."""
    history = simulate(params, anchor_ms)
    return ProductData(
        history=history,
        seller_category_mix=seller_category_mix(history, sellers=params.sellers, days=params.days, anchor_ms=anchor_ms),
        anchor_ms=anchor_ms,
    )
