"""Realistic records of every shipped schema, built fresh for each test."""

from __future__ import annotations

from typing import Any

import pytest

EVENT_TIME = 1_764_079_200_123  # 2025-11-25T14:00:00.123Z


@pytest.fixture
def transaction() -> dict[str, Any]:
    return {
        "event_id": "0b7c7f0e-5d0b-4c52-9a53-4f0a7d1c2e11",
        "event_time": EVENT_TIME,
        "customer_id": "cus_81723",
        "merchant_id": "mer_0042",
        "amount": 129.99,
        "currency": "EUR",
        "channel": "ONLINE",
        "card_present": False,
        "merchant_category": "5732",
        "country": "DE",
        "device_hash": "9f86d081884c7d659a2feaa0c55ad015",
        "ip_hash": None,
    }


@pytest.fixture
def product_created() -> dict[str, Any]:
    return {
        "event_id": "5c1e7f5a-2f0e-4a7e-8d2b-3b1f9e0c6a77",
        "event_time": EVENT_TIME,
        "product_id": "prd_99812",
        "seller_id": "sel_311",
        "title": "Trail running shoe, waterproof, men's size 44",
        "description": "Lightweight trail shoe with a Gore-Tex membrane and a Vibram sole. Größe 44, grün.",
        "brand": "Salomon",
        "price": 149.0,
        "currency": "EUR",
        "attributes": {"colour": "green", "size": "44", "material": "synthetic"},
    }


@pytest.fixture
def fraud_prediction() -> dict[str, Any]:
    return {
        "event_id": "0b7c7f0e-5d0b-4c52-9a53-4f0a7d1c2e11",
        "service": "fraud-detection",
        "origin": "STREAM",
        "entity_keys": {"customer_id": "cus_81723", "merchant_id": "mer_0042"},
        "model_name": "fraud-lgbm",
        "model_version": "7",
        "outputs": {"fraud_probability": 0.9312, "is_fraud": True, "threshold": 0.8},
        "features": {
            "customer_stats:txn_count_1h": {"value": 14, "missing": False},
            "customer_stats:avg_amount_30d": {"value": 42.17, "missing": False},
            "merchant_stats:chargeback_rate_90d": {"value": None, "missing": True},
            "customer_profile:home_country": {"value": "DE", "missing": False},
        },
        "inputs": {"amount": 129.5, "channel": "ONLINE", "card_present": False, "merchant_category": "5411"},
        "steps": [],
        "timings": {
            "event_time": EVENT_TIME,
            "received_time": EVENT_TIME + 35,
            "enrich_ms": 1.84,
            "infer_ms": 6.2,
            "emit_time": EVENT_TIME + 44,
        },
    }


@pytest.fixture
def category_prediction() -> dict[str, Any]:
    return {
        "event_id": "5c1e7f5a-2f0e-4a7e-8d2b-3b1f9e0c6a77",
        "service": "product-categorization",
        "origin": "REST",
        "entity_keys": {"product_id": "prd_99812", "seller_id": "sel_311"},
        "model_name": "category-tfidf-sgd",
        "model_version": "2025-11-20",
        "outputs": {
            "category": "Shoes > Running",
            "category_scores": {"Shoes > Running": 0.81, "Shoes > Hiking": 0.12, "Sportswear": 0.04},
            "embedding": [0.12, -0.5, 0.33],
        },
        "features": {},
        "inputs": {"title": "Trail runner 2", "description": None},
        "steps": [
            {"name": "embed", "model_name": "minilm", "model_version": "1", "infer_ms": 8.25},
            {"name": "head", "model_name": "category-head", "model_version": "2025-11-20", "infer_ms": 2.5},
        ],
        "timings": {
            "event_time": EVENT_TIME,
            "received_time": EVENT_TIME + 3,
            "enrich_ms": None,
            "infer_ms": 11.5,
            "emit_time": EVENT_TIME + 15,
        },
    }


@pytest.fixture
def dead_letter() -> dict[str, Any]:
    return {
        "service": "fraud-detection",
        "stage": "infer",
        "error_class": "ModelRejected",
        "error_message": "model server answered 400: input has 11 columns, model expects 12",
        "attempts": 1,
        "failure_time": EVENT_TIME + 60,
        "topic": "transactions",
        "partition": 3,
        "offset": 1_048_576,
        "record_time": EVENT_TIME + 2,
        "key": b"cus_81723",
        "value": b"\x00\x00\x00\x00\x01\x48garbage\xff",
        "headers": [{"key": "traceparent", "value": b"00-4bf92f3577b34da6-00f067aa0ba902b7-01"}],
        "schema_id": 1,
        "event_id": "0b7c7f0e-5d0b-4c52-9a53-4f0a7d1c2e11",
        "model_name": "fraud-lgbm",
        "step": "lgbm",
        "model_version": "7",
        "model_response": b'{"error": "input has 11 columns, model expects 12"}',
    }
