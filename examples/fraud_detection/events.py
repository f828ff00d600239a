"""Synthetic payments with realistic fraud patterns, generated from a seed.

A :class:`World` holds customers (home country, spending level, usual channel, devices) and merchants
(category code, country, risk). :func:`transactions` draws payment events from it; each comes with a hidden
fraud label drawn from a logistic model of well-known fraud signals:

* card-not-present payments from a device the customer never used;
* a country other than the customer's home country;
* amounts far above the customer's usual spending;
* high-risk merchant categories (quasi-cash, wire transfers, digital goods, gambling);
* merchants with a history of chargebacks; night-time activity;
* a small set of compromised customers whose fraud comes in bursts.

The label is what the model learns; the events are what the stream carries (no label in them).
"""

from __future__ import annotations

import itertools
import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

CHANNELS = ["ONLINE", "POS", "ATM", "MOBILE_APP", "PHONE"]
COUNTRIES = ["DE", "FR", "NL", "ES", "IT", "PL", "SE", "GB", "US", "BR", "NG", "RU", "CN", "IN"]
HOME_COUNTRIES = COUNTRIES[:8]
#: merchant category code -> (label, risk weight)
MCC = {
    "5411": ("grocery stores", 0.0),
    "5812": ("restaurants", 0.1),
    "5541": ("fuel stations", 0.2),
    "5311": ("department stores", 0.2),
    "5732": ("electronics", 0.8),
    "5999": ("misc retail", 0.4),
    "4121": ("taxis and rideshare", 0.1),
    "4829": ("wire transfers", 1.6),
    "6051": ("quasi-cash, crypto", 1.8),
    "5967": ("direct marketing", 1.2),
    "7995": ("gambling", 1.4),
    "5816": ("digital goods, games", 1.0),
}
EPOCH_MS = 1_780_000_000_000  # 2026-05-28: the synthetic world's "now"


@dataclass
class Customer:
    customer_id: str
    home: str
    typical_amount: float
    channel: str
    devices: list[str]
    compromised: bool


@dataclass
class Merchant:
    merchant_id: str
    mcc: str
    country: str
    chargeback_rate: float


@dataclass
class World:
    customers: list[Customer]
    merchants: list[Merchant]
    seed: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)
    #: how often each customer pays, and how popular each merchant is (relative weights): the history and the
    #: live stream draw payers and payees with them, so that a stream looks like the data the model learnt from
    activity: list[float] = field(default_factory=list, repr=False)
    popularity: list[float] = field(default_factory=list, repr=False)


def make_world(n_customers: int = 2000, n_merchants: int = 300, seed: int = 7) -> World:
    """A reproducible population of customers and merchants."""
    rng = random.Random(seed)
    customers = []
    for i in range(n_customers):
        customers.append(
            Customer(
                customer_id=f"C{i:06d}",
                home=rng.choice(HOME_COUNTRIES),
                typical_amount=math.exp(rng.gauss(3.4, 0.8)),  # median ~30, long tail
                channel=rng.choices(CHANNELS, weights=[35, 40, 5, 18, 2])[0],
                devices=[f"dev-{rng.getrandbits(48):012x}" for _ in range(rng.randint(1, 3))],
                compromised=rng.random() < 0.03,
            )
        )
    merchants = []
    codes = list(MCC)
    weights = [20, 16, 10, 10, 6, 8, 8, 2, 2, 3, 2, 5]
    for i in range(n_merchants):
        mcc = rng.choices(codes, weights=weights)[0]
        risky = MCC[mcc][1]
        merchants.append(
            Merchant(
                merchant_id=f"M{i:05d}",
                mcc=mcc,
                country=rng.choice(COUNTRIES if risky > 1 else HOME_COUNTRIES),
                chargeback_rate=min(0.3, max(0.0, rng.gauss(0.004 + 0.02 * risky, 0.006))),
            )
        )
    draws = random.Random(seed + 2)  # its own stream: the population above stays what it was for the seed
    activity = [draws.lognormvariate(0.0, 0.8) for _ in customers]
    popularity = [draws.lognormvariate(0.0, 1.0) for _ in merchants]
    return World(customers, merchants, seed, random.Random(seed + 1), activity, popularity)


def _fraud_logit(
    c: Customer, m: Merchant, amount: float, channel: str, country: str, new_device: bool, hour: int
) -> float:
    z = -6.6
    z += 1.3 * (channel in ("ONLINE", "PHONE") and new_device)
    z += 1.1 * (country != c.home)
    z += 1.0 * min(3.0, max(0.0, math.log(amount / c.typical_amount)))
    z += 0.9 * MCC[m.mcc][1]
    z += 25.0 * m.chargeback_rate
    z += 0.8 * (hour < 5)
    z += 2.2 * c.compromised
    return z


def payment(
    rng: random.Random, c: Customer, m: Merchant, now_ms: int, hour: int | None = None
) -> tuple[dict[str, object], bool]:
    """One ordinary payment of customer ``c`` at merchant ``m`` at ``now_ms``, with its hidden fraud label.

    ``hour`` is the local hour of day the fraud model of the world sees (default: the UTC hour of ``now_ms``).
    """
    channel = c.channel if rng.random() < 0.7 else rng.choice(CHANNELS)
    card_present = channel in ("POS", "ATM")
    country = c.home if rng.random() < 0.9 else rng.choice(COUNTRIES)
    if card_present:
        country = m.country if m.country in HOME_COUNTRIES else country
    new_device = rng.random() < 0.08
    device = None if card_present else (f"dev-{rng.getrandbits(48):012x}" if new_device else rng.choice(c.devices))
    amount = round(c.typical_amount * math.exp(rng.gauss(0.0, 0.7)), 2)
    if hour is None:
        hour = int((now_ms / 3_600_000) % 24)
    p = 1 / (1 + math.exp(-_fraud_logit(c, m, amount, channel, country, new_device and not card_present, hour)))
    fraud = rng.random() < p
    if fraud and rng.random() < 0.5:  # fraudsters test big
        amount = round(amount * rng.uniform(2, 8), 2)
    return _event(rng, now_ms, c, m, amount, channel, country, device), fraud


def _event(
    rng: random.Random,
    now_ms: int,
    c: Customer,
    m: Merchant,
    amount: float,
    channel: str,
    country: str,
    device: str | None,
) -> dict[str, object]:
    card_present = channel in ("POS", "ATM")
    return {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "event_time": now_ms,
        "customer_id": c.customer_id,
        "merchant_id": m.merchant_id,
        "amount": max(0.01, amount),
        "currency": "EUR",
        "channel": channel,
        "card_present": card_present,
        "merchant_category": m.mcc,
        "country": country,
        "device_hash": device,
        "ip_hash": None if card_present else f"ip-{rng.getrandbits(32):08x}",
    }


def account_takeover(
    rng: random.Random, c: Customer, risky_merchants: list[Merchant], start_ms: int, span_ms: int
) -> list[tuple[dict[str, object], bool]]:
    """An account takeover: 3-12 fraudulent card-not-present payments within ``span_ms`` after ``start_ms``.

    The fraudster uses new devices, high-risk merchants (``risky_merchants``), often a foreign country, and
    spends several times the customer's usual amount. Every payment is labelled fraud.
    """
    burst = []
    for _ in range(rng.randint(3, 12)):
        now_ms = start_ms + rng.randrange(max(1, span_ms))
        m = rng.choice(risky_merchants)
        channel = rng.choices(["ONLINE", "MOBILE_APP", "PHONE"], weights=[6, 3, 1])[0]
        country = rng.choice(COUNTRIES) if rng.random() < 0.5 else c.home
        amount = round(c.typical_amount * rng.uniform(1.5, 6.0), 2)
        device = f"dev-{rng.getrandbits(48):012x}"
        burst.append((_event(rng, now_ms, c, m, amount, channel, country, device), True))
    return burst


def transactions(
    world: World, n: int, *, start_ms: int = EPOCH_MS, rate_per_s: float = 50.0
) -> Iterator[tuple[dict[str, object], bool]]:
    """``n`` payment events (Avro ``Transaction`` records) with their hidden fraud labels; payers and payees drawn
    by the world's activity and popularity, as in the history."""
    rng = world.rng
    now = start_ms
    customer_cum = list(itertools.accumulate(world.activity or [1.0] * len(world.customers)))
    merchant_cum = list(itertools.accumulate(world.popularity or [1.0] * len(world.merchants)))
    for _ in range(n):
        now += int(rng.expovariate(rate_per_s) * 1000) + 1
        c = rng.choices(world.customers, cum_weights=customer_cum)[0]
        m = rng.choices(world.merchants, cum_weights=merchant_cum)[0]
        yield payment(rng, c, m, now)
