"""Synthetic product-created events over a fixed category list, generated from a seed.

Titles and descriptions are composed from per-category vocabularies (product nouns, brands, materials, uses)
with deliberate overlap between neighbouring categories (a "smart watch" may be electronics or sports, a
"water bottle" kitchen or sports) and a little label noise, so that a text model has something to learn and
cannot be perfect. Each event comes with its true category (the training label; not part of the event).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator

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


def products(
    n: int, *, seed: int = 11, start_ms: int = EPOCH_MS, noise: float = 0.03
) -> Iterator[tuple[dict[str, object], str]]:
    """``n`` product-created events (Avro ``ProductCreated`` records) with their true categories."""
    rng = random.Random(seed)
    now = start_ms
    for i in range(n):
        now += rng.randint(5, 400)
        category = rng.choice(CATEGORIES)
        nouns, brands, qualities, uses = VOCABULARY[category]
        # label noise: a few products are described with another category's words
        words_from = rng.choice(CATEGORIES) if rng.random() < noise else category
        nouns, brands, qualities, uses = VOCABULARY[words_from]
        noun, brand = rng.choice(nouns), rng.choice(brands)
        picked = rng.sample(qualities, k=2)
        title = f"{brand} {noun}" + (f", {picked[0]}" if rng.random() < 0.6 else "")
        description = f"{noun.capitalize()} by {brand}: {picked[0]}, {picked[1]}. {rng.choice(uses).capitalize()}."
        event = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "event_time": now,
            "product_id": f"P{i:07d}",
            "seller_id": f"S{rng.randint(0, 499):04d}",
            "title": title,
            "description": description if rng.random() < 0.95 else None,
            "brand": brand,
            "price": round(rng.uniform(3, 400), 2),
            "currency": "EUR",
            "attributes": {"source": "demo"},
        }
        yield event, category
