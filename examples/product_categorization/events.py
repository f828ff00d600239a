"""Synthetic product-created events over a fixed category list, generated from a seed.

Titles and descriptions are composed from per-category vocabularies (product nouns, brands, materials, uses)
with deliberate overlap between neighbouring categories (a "smart watch" may be electronics or sports, a
"water bottle" kitchen or sports) and a little label noise, so that a text model has something to learn and
cannot be perfect. Each event comes with its true category (the training label; not part of the event).

Sellers (:func:`make_sellers`) concentrate on one to three categories: what a seller listed before is a real
signal for what it lists next, which the seller features of the feature store carry.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate

EPOCH_MS = 1_780_000_000_000

#: category -> (nouns, brands, qualities, uses)
VOCABULARY: dict[str, tuple[list[str], list[str], list[str], list[str]]] = {
    "electronics": (
        [
            "wireless earbuds",
            "bluetooth speaker",
            "smart watch",
            "4K monitor",
            "USB-C charger",
            "noise cancelling headphones",
            "portable SSD",
            "webcam",
        ],
        ["Sonix", "Voltra", "Pixelon", "Auralis"],
        ["fast charging", "low latency", "high resolution", "long battery life", "Bluetooth 5.3"],
        ["for work and gaming", "for your home office", "for music on the go", "for video calls"],
    ),
    "kitchen": (
        [
            "chef's knife",
            "non-stick frying pan",
            "espresso machine",
            "stand mixer",
            "cast iron skillet",
            "water bottle",
            "cutting board",
            "air fryer",
        ],
        ["Cucina", "Ferro&Co", "Brewly", "Oakhaus"],
        ["dishwasher safe", "stainless steel", "BPA free", "induction ready", "easy to clean"],
        ["for everyday cooking", "for baking", "for the perfect crema", "for family meals"],
    ),
    "books": (
        [
            "paperback novel",
            "hardcover cookbook",
            "children's picture book",
            "science fiction trilogy",
            "travel guide",
            "history of Rome",
            "poetry collection",
        ],
        ["Northwind Press", "Blue Heron Books", "Atlas Publishing"],
        ["first edition", "illustrated", "bestselling", "annotated", "420 pages"],
        ["for curious readers", "for bedtime stories", "for your next trip", "for book clubs"],
    ),
    "toys": (
        [
            "building blocks set",
            "plush teddy bear",
            "remote control car",
            "wooden puzzle",
            "dollhouse",
            "board game",
            "toy train set",
        ],
        ["Playnest", "Tinkerly", "Bricko"],
        ["ages 3+", "non-toxic paint", "battery powered", "educational", "500 pieces"],
        ["for creative play", "for family game night", "for toddlers", "as a birthday gift"],
    ),
    "clothing": (
        [
            "cotton t-shirt",
            "denim jacket",
            "wool sweater",
            "summer dress",
            "rain coat",
            "slim fit chinos",
            "hooded sweatshirt",
        ],
        ["Northline", "Maison Lune", "Urbanwear"],
        ["machine washable", "organic cotton", "relaxed fit", "water repellent", "recycled fabric"],
        ["for everyday wear", "for chilly evenings", "for the office", "for weekend trips"],
    ),
    "shoes": (
        ["running shoes", "leather boots", "canvas sneakers", "hiking boots", "sandals", "trail running shoes"],
        ["Stridex", "Pathfinder", "Velo"],
        ["cushioned sole", "waterproof", "breathable mesh", "vegan leather", "wide fit"],
        ["for long runs", "for city walks", "for mountain trails", "for summer days"],
    ),
    "beauty": (
        [
            "moisturizing face cream",
            "vitamin C serum",
            "mineral sunscreen SPF 50",
            "shampoo bar",
            "lip balm",
            "hair dryer",
        ],
        ["Glowa", "Purely", "Botanique"],
        ["fragrance free", "for sensitive skin", "dermatologically tested", "vegan", "50 ml"],
        ["for daily care", "for dry skin", "for shiny hair", "for sun protection"],
    ),
    "sports": (
        [
            "yoga mat",
            "adjustable dumbbells",
            "fitness tracker",
            "water bottle",
            "resistance bands",
            "tennis racket",
            "cycling helmet",
            "smart watch",
        ],
        ["Peakform", "Stridex", "Vigor"],
        ["non-slip", "lightweight", "heart rate monitoring", "durable", "sweat resistant"],
        ["for home workouts", "for the gym", "for marathon training", "for outdoor rides"],
    ),
    "garden": (
        [
            "garden hose",
            "pruning shears",
            "raised garden bed",
            "solar lights",
            "lawn mower",
            "flower seeds mix",
            "watering can",
        ],
        ["Greenleaf", "Oakhaus", "Verdant"],
        ["weather resistant", "rust proof", "cordless", "UV stable", "eco friendly"],
        ["for your backyard", "for balcony gardens", "for healthy plants", "for spring planting"],
    ),
    "pet_supplies": (
        [
            "dog leash",
            "cat scratching post",
            "grain free dog food",
            "pet bed",
            "aquarium filter",
            "bird feeder",
            "cat litter",
        ],
        ["Pawsome", "Furrytale", "Tailwag"],
        ["chew resistant", "washable cover", "vet approved", "odor control", "for large breeds"],
        ["for happy pets", "for puppies", "for indoor cats", "for daily walks"],
    ),
}
CATEGORIES = list(VOCABULARY)


@dataclass(frozen=True)
class Seller:
    """A seller and the categories it lists in (sellers concentrate on one to three categories)."""

    seller_id: str
    categories: tuple[str, ...]
    weights: tuple[float, ...]
    activity: float


#: share of a seller's listings outside its own categories
OFF_CATALOG = 0.08


def make_sellers(n: int = 500, seed: int = 5) -> list[Seller]:
    """A reproducible population of sellers ``S0000``.., each with its category mix and activity level.

    The default population is the one every generator uses unless told otherwise, so that product events of
    any seed come from the sellers whose history ``prepare`` turned into features.
    """
    rng = random.Random(seed)
    sellers = []
    for i in range(n):
        k = rng.choices([1, 2, 3], weights=[45, 35, 20])[0]
        categories = tuple(rng.sample(CATEGORIES, k=k))
        weights = tuple(rng.uniform(0.3, 1.0) for _ in categories)
        sellers.append(Seller(f"S{i:04d}", categories, weights, rng.lognormvariate(0.0, 0.9)))
    return sellers


def category_of(rng: random.Random, seller: Seller) -> str:
    """The true category of the seller's next listing."""
    if rng.random() < OFF_CATALOG:
        return rng.choice(CATEGORIES)
    return rng.choices(seller.categories, weights=seller.weights)[0]


#: vague listings (no brand, no category words): only the seller's history hints at their category
GENERIC_TITLES = [
    "Gift set",
    "Starter kit",
    "Bundle deal",
    "Accessory pack",
    "Value pack",
    "Mystery box",
    "Premium set",
]
GENERIC_DESCRIPTIONS = [
    "Great value, fast shipping.",
    "Brand new, never used.",
    "Limited stock, order now.",
    "Perfect gift idea.",
]
#: share of vague listings
GENERIC = 0.1


def listing(rng: random.Random, category: str, noise: float) -> tuple[str, str | None, str | None]:
    """Title, description (None for ~5%) and brand of a product of ``category``.

    With probability ``noise`` the product is described with another category's words (label noise); with
    probability :data:`GENERIC` it is a vague listing without brand or category words.
    """
    if rng.random() < GENERIC:
        colour = rng.choice(["black", "white", "blue", "red", "green", "assorted"])
        description = rng.choice(GENERIC_DESCRIPTIONS) if rng.random() < 0.7 else None
        return f"{rng.choice(GENERIC_TITLES)}, {colour}", description, None
    words_from = rng.choice(CATEGORIES) if rng.random() < noise else category
    nouns, brands, qualities, uses = VOCABULARY[words_from]
    noun, brand = rng.choice(nouns), rng.choice(brands)
    picked = rng.sample(qualities, k=2)
    title = f"{brand} {noun}" + (f", {picked[0]}" if rng.random() < 0.6 else "")
    description = f"{noun.capitalize()} by {brand}: {picked[0]}, {picked[1]}. {rng.choice(uses).capitalize()}."
    return title, description if rng.random() < 0.95 else None, brand


_DEFAULT_SELLERS: list[Seller] = []


def default_sellers() -> list[Seller]:
    """:func:`make_sellers` with its defaults (computed once)."""
    if not _DEFAULT_SELLERS:
        _DEFAULT_SELLERS.extend(make_sellers())
    return _DEFAULT_SELLERS


def products(
    n: int,
    *,
    seed: int = 11,
    start_ms: int = EPOCH_MS,
    noise: float = 0.03,
    sellers: Sequence[Seller] | None = None,
    interval_ms: tuple[int, int] = (5, 400),
) -> Iterator[tuple[dict[str, object], str]]:
    """``n`` product-created events (Avro ``ProductCreated`` records) with their true categories.

    Sellers are drawn by activity from ``sellers`` (default: :func:`default_sellers`), the category from the
    seller's mix; consecutive events are ``interval_ms`` (uniform, inclusive) apart, the first after ``start_ms``.
    """
    rng = random.Random(seed)
    population = list(sellers) if sellers is not None else default_sellers()
    cumulative = list(accumulate(s.activity for s in population))
    now = start_ms
    for i in range(n):
        now += rng.randint(*interval_ms)
        seller = rng.choices(population, cum_weights=cumulative)[0]
        category = category_of(rng, seller)
        title, description, brand = listing(rng, category, noise)
        event = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "event_time": now,
            "product_id": f"P{i:07d}",
            "seller_id": seller.seller_id,
            "title": title,
            "description": description,
            "brand": brand,
            "price": round(rng.uniform(3, 400), 2),
            "currency": "EUR",
            "attributes": {"source": "demo"},
        }
        yield event, category
