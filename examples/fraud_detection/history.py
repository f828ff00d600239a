"""A labelled payment history of the :class:`~.events.World`, and its point-in-time customer and merchant aggregates.

Pure pandas/NumPy (both Python environments). Everything is generated on a *relative* timeline of ``days`` whole
days that ends at ``anchor_ms`` (the time ``prepare`` runs): shifting the anchor shifts every timestamp and
changes nothing else, so the labelled training set - and the model trained on it - only depend on the seed and
the sizes, while the newest feature rows are always fresh.

History (:func:`simulate`): ordinary payments drawn with :func:`.events.payment` (customers by activity,
merchants by popularity) plus account-takeover bursts on compromised accounts (:func:`.events.account_takeover`).
Each payment carries its hidden label ``is_fraud`` and, when the payment was disputed, ``chargeback_time``:
most frauds are charged back 1-60 days later (a few legitimate payments too, "friendly fraud"); a chargeback
after the anchor is not known yet (null).

Aggregates (:func:`customer_stats`, :func:`merchant_stats`): one snapshot row per entity and day boundary
``s = anchor - k days`` (k = days-1 .. 0), over the payments with ``event_time < s`` only, and the chargebacks
*filed* before ``s`` (not the chargebacks of the payments in the window: a chargeback is known when it is filed).
A row exists when the entity had a payment in the 90 days before ``s``. Its ``event_timestamp`` is ``s``: a
point-in-time join (Feast's ``get_historical_features``) of a payment at ``t`` takes the newest row with
``event_timestamp <= t``, which never counts the payment itself nor anything after it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from numpy.typing import NDArray

from vatic.examples.fraud_detection.events import (
    COUNTRIES,
    MCC,
    World,
    account_takeover,
    make_world,
    payment,
)

DAY_MS = 86_400_000
HOUR_MS = 3_600_000

#: customer_stats features: name -> kind ("int" or "float"); windows end at the snapshot time (exclusive)
CUSTOMER_FEATURES: dict[str, str] = {
    "txn_count_1d": "int",
    "txn_count_7d": "int",
    "txn_count_30d": "int",
    "amount_mean_30d": "float",
    "amount_max_30d": "float",
    "online_share_30d": "float",
    "distinct_countries_30d": "int",
    "chargeback_count_90d": "int",
    "chargeback_rate_90d": "float",
}
#: merchant_stats features
MERCHANT_FEATURES: dict[str, str] = {
    "txn_count_1d": "int",
    "txn_count_7d": "int",
    "amount_mean_30d": "float",
    "chargeback_count_90d": "int",
    "chargeback_rate_90d": "float",
}
#: an entity has a snapshot row when it had a payment within this many days before the snapshot
ACTIVE_DAYS = 90
#: share of the customers whose account opens during the timeline
NEW_ACCOUNTS = 0.12


@dataclass(frozen=True)
class FraudParams:
    """Sizes of the generated fraud data; defaults are ``prepare``'s."""

    customers: int = 2000
    merchants: int = 300
    days: int = 120
    per_customer_day: float = 0.5
    training_days: int = 45
    seed: int = 7

    def __post_init__(self) -> None:
        if self.training_days >= self.days:
            raise ValueError(f"training_days ({self.training_days}) must be fewer than days ({self.days})")


def _time(event: dict[str, object]) -> int:
    value = event["event_time"]
    assert isinstance(value, int)
    return value


def simulate(world: World, *, days: int, per_customer_day: float, anchor_ms: int, seed: int) -> pd.DataFrame:
    """The payment history of ``world`` over the ``days`` days before ``anchor_ms``, sorted by ``event_time``.

    Columns: the Avro ``Transaction`` fields, ``is_fraud`` (bool) and ``chargeback_time`` (epoch ms, null when
    not charged back before the anchor). Deterministic for (world, days, per_customer_day, seed) up to the
    shift by ``anchor_ms``; the world's own ``rng`` is not used.
    """
    rng = random.Random(seed)
    start_ms = anchor_ms - days * DAY_MS
    span_ms = days * DAY_MS
    activity = world.activity or [1.0] * len(world.customers)
    # most accounts predate the timeline; the others open during it (no history, no feature rows at first)
    opened = [0 if rng.random() < 1 - NEW_ACCOUNTS else rng.randrange(days * DAY_MS) for _ in world.customers]
    position = {c.customer_id: i for i, c in enumerate(world.customers)}
    popularity = world.popularity or [1.0] * len(world.merchants)
    customer_cum = list(np.cumsum(activity))
    merchant_cum = list(np.cumsum(popularity))
    risky = [m for m in world.merchants if MCC[m.mcc][1] >= 0.8] or world.merchants

    rows: list[tuple[dict[str, object], bool]] = []
    n = int(len(world.customers) * days * per_customer_day)
    offset = 0.0
    mean_gap = span_ms / max(1, n)
    while True:
        offset += rng.expovariate(1.0 / mean_gap)
        if offset >= span_ms:
            break
        c = rng.choices(world.customers, cum_weights=customer_cum)[0]
        m = rng.choices(world.merchants, cum_weights=merchant_cum)[0]
        at = int(offset)
        if at < opened[position[c.customer_id]]:
            continue
        rows.append(payment(rng, c, m, start_ms + at, hour=(at // HOUR_MS) % 24))
    for c in world.customers:
        if not c.compromised:
            continue
        for _ in range(1 + (rng.random() < 0.4)):
            begin = opened[position[c.customer_id]] + rng.randrange(span_ms - opened[position[c.customer_id]])
            length = rng.randint(6 * HOUR_MS, 3 * DAY_MS)
            burst = account_takeover(rng, c, risky, start_ms + begin, length)
            rows.extend((event, fraud) for event, fraud in burst if _time(event) < anchor_ms)

    frame = pd.DataFrame([event for event, _ in rows])
    frame["is_fraud"] = [fraud for _, fraud in rows]
    chargebacks: list[int | None] = []
    for event, fraud in rows:
        disputed = rng.random() < (0.85 if fraud else 0.003)
        delay = int(min(60.0, max(1.0, rng.lognormvariate(2.3, 0.6))) * DAY_MS)
        at = _time(event) + delay
        chargebacks.append(at if disputed and at < anchor_ms else None)
    frame["chargeback_time"] = pd.array(chargebacks, dtype="Int64")
    frame = frame.sort_values(["event_time", "event_id"], kind="stable").reset_index(drop=True)
    return frame


def _window(daily: NDArray[Any], width: int) -> NDArray[Any]:
    """``out[:, k]`` = sum of ``daily[:, k-width:k]`` (days before snapshot k), for k = 0..days."""
    cumulative = np.concatenate([np.zeros_like(daily[:, :1]), np.cumsum(daily, axis=1)], axis=1)
    lagged = np.concatenate([np.zeros_like(cumulative[:, :width]), cumulative[:, :-width]], axis=1)
    result: NDArray[Any] = cumulative - lagged[:, : cumulative.shape[1]]
    return result


def _daily(
    index: NDArray[Any], day: NDArray[Any], entities: int, days: int, weights: NDArray[Any] | None = None
) -> Any:
    out = np.zeros((entities, days), dtype=np.float64)
    np.add.at(out, (index, day), 1.0 if weights is None else weights)
    return out


def _snapshots(
    history: pd.DataFrame, key: str, ids: list[str], days: int, anchor_ms: int, *, customer: bool
) -> pd.DataFrame:
    position = {entity: i for i, entity in enumerate(ids)}
    start_ms = anchor_ms - days * DAY_MS
    index = history[key].map(position).to_numpy()
    day = ((history["event_time"].to_numpy() - start_ms) // DAY_MS).astype(np.int64)
    amount = history["amount"].to_numpy(dtype=np.float64)
    count = _daily(index, day, len(ids), days)
    amounts = _daily(index, day, len(ids), days, amount)

    charged = history["chargeback_time"].notna().to_numpy()
    cb_day = ((history.loc[charged, "chargeback_time"].to_numpy(dtype=np.int64) - start_ms) // DAY_MS).astype(np.int64)
    chargebacks = _daily(index[charged], cb_day, len(ids), days)

    n_1, n_7, n_30, n_90 = (_window(count, w) for w in (1, 7, 30, ACTIVE_DAYS))
    sum_30 = _window(amounts, 30)
    cb_90 = _window(chargebacks, ACTIVE_DAYS)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_30 = np.where(n_30 > 0, sum_30 / np.maximum(n_30, 1), 0.0)
        rate_90 = np.minimum(1.0, np.where(n_90 > 0, cb_90 / np.maximum(n_90, 1), 0.0))
    columns: dict[str, NDArray[Any]] = {
        "txn_count_1d": n_1,
        "txn_count_7d": n_7,
        "amount_mean_30d": mean_30,
        "chargeback_count_90d": cb_90,
        "chargeback_rate_90d": rate_90,
    }
    if customer:
        daily_max = np.zeros((len(ids), days), dtype=np.float64)
        np.maximum.at(daily_max, (index, day), amount)
        max_30 = np.zeros((len(ids), days + 1), dtype=np.float64)
        for k in range(1, days + 1):
            max_30[:, k] = daily_max[:, max(0, k - 30) : k].max(axis=1)
        online = _daily(index, day, len(ids), days, (~history["card_present"].to_numpy(dtype=bool)).astype(np.float64))
        online_30 = _window(online, 30)
        country_index = history["country"].map({c: i for i, c in enumerate(COUNTRIES)}).to_numpy()
        seen = np.zeros((len(ids), days, len(COUNTRIES)), dtype=np.float64)
        np.add.at(seen, (index, day, country_index), 1.0)
        cumulative = np.concatenate([np.zeros_like(seen[:, :1]), np.cumsum(seen, axis=1)], axis=1)
        lagged = np.concatenate([np.zeros_like(cumulative[:, :30]), cumulative[:, :-30]], axis=1)
        distinct_30 = ((cumulative - lagged[:, : days + 1]) > 0).sum(axis=2)
        columns |= {
            "txn_count_30d": n_30,
            "amount_max_30d": max_30,
            "online_share_30d": np.where(n_30 > 0, online_30 / np.maximum(n_30, 1), 0.0),
            "distinct_countries_30d": distinct_30,
        }
    kinds = CUSTOMER_FEATURES if customer else MERCHANT_FEATURES
    # snapshots k = 1..days (k = days is the anchor); rows of entities active in the 90 days before
    entity_index, k_index = np.nonzero(n_90[:, 1:] > 0)
    k_index = k_index + 1
    frame = pd.DataFrame({key: np.asarray(ids, dtype=object)[entity_index]})
    for name, kind in kinds.items():
        values = columns[name][entity_index, k_index]
        frame[name] = np.rint(values).astype(np.int64) if kind == "int" else values.astype(np.float64)
    frame["event_timestamp"] = pd.to_datetime(start_ms + k_index.astype(np.int64) * DAY_MS, unit="ms", utc=True)
    return frame.sort_values(["event_timestamp", key], kind="stable").reset_index(drop=True)


def customer_stats(history: pd.DataFrame, world: World, *, days: int, anchor_ms: int) -> pd.DataFrame:
    """Daily point-in-time customer aggregates (:data:`CUSTOMER_FEATURES`), see the module docstring."""
    ids = [c.customer_id for c in world.customers]
    return _snapshots(history, "customer_id", ids, days, anchor_ms, customer=True)


def merchant_stats(history: pd.DataFrame, world: World, *, days: int, anchor_ms: int) -> pd.DataFrame:
    """Daily point-in-time merchant aggregates (:data:`MERCHANT_FEATURES`), see the module docstring."""
    ids = [m.merchant_id for m in world.merchants]
    return _snapshots(history, "merchant_id", ids, days, anchor_ms, customer=False)


@dataclass(frozen=True)
class FraudData:
    """The generated data of one run: the labelled history and the two feature tables."""

    history: pd.DataFrame
    customer_stats: pd.DataFrame
    merchant_stats: pd.DataFrame
    anchor_ms: int


def generate(params: FraudParams, anchor_ms: int) -> FraudData:
    """History and aggregates for ``params``, anchored at ``anchor_ms``."""
    world = make_world(params.customers, params.merchants, seed=params.seed)
    history = simulate(
        world, days=params.days, per_customer_day=params.per_customer_day, anchor_ms=anchor_ms, seed=params.seed + 100
    )
    return FraudData(
        history=history,
        customer_stats=customer_stats(history, world, days=params.days, anchor_ms=anchor_ms),
        merchant_stats=merchant_stats(history, world, days=params.days, anchor_ms=anchor_ms),
        anchor_ms=anchor_ms,
    )
