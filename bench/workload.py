"""The one workload every comparison uses: fraud-detection payments, their Feast features, the model's row.

Events come from the use case's seeded generator (``make_world()``: the customers and merchants that
``vatic usecases prepare`` materialized), so every lookup hits real rows. :func:`model_row` is the plain-Python
encoding a hand-written pipeline would do (the columns, category codes and ``#missing`` flags of
``service.yaml``); the V2 request bodies of the REST comparisons are built from it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from bench.common import ROOT

SERVICE_DIR = ROOT / "examples" / "fraud_detection" / "service"
FEATURE_REPO = ROOT / "examples" / "fraud_detection" / "features"
MODEL = "fraud-detector"
INPUT = "input-0"


@cache
def service_yaml() -> dict[str, Any]:
    import yaml

    loaded: dict[str, Any] = yaml.safe_load((SERVICE_DIR / "service.yaml").read_text(encoding="utf-8"))
    return loaded


def columns() -> list[str]:
    return list(service_yaml()["model"]["inputs"][0]["columns"])


def feature_refs() -> list[str]:
    return list(service_yaml()["features"]["refs"])


def events(n: int, *, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` payment events (Avro ``transaction`` records) of the prepared world, event_time = now."""
    from vatic.examples.fraud_detection.events import make_world, transactions

    now = time.time_ns() // 1_000_000
    out = [event for event, _ in transactions(make_world(seed=seed), n, start_ms=now)]
    for event in out:
        event["event_time"] = now
    return out


def model_row(event: Mapping[str, Any], features: Mapping[str, Any]) -> list[float]:
    """The model's input row: event fields, category codes, feature values (``None`` -> default 0 and the
    ``#missing`` flag set) in ``service.yaml``'s column order."""
    spec = service_yaml()["model"]["inputs"][0]
    encodings: dict[str, dict[str, int]] = spec.get("encodings", {})
    row: list[float] = []
    for column in spec["columns"]:
        if column.endswith("#missing"):
            row.append(1.0 if features.get(column.removesuffix("#missing")) is None else 0.0)
        elif column in encodings:
            row.append(float(encodings[column][str(event[column])]))
        elif ":" in column:
            value = features.get(column)
            row.append(0.0 if value is None else float(value))
        else:
            row.append(float(event[column]))
    return row


def v2_body(rows: list[list[float]]) -> dict[str, Any]:
    """An Open Inference Protocol (V2) request for ``rows`` of the fraud model."""
    return {
        "inputs": [
            {
                "name": INPUT,
                "datatype": "FP32",
                "shape": [len(rows), len(rows[0])],
                "data": [v for r in rows for v in r],
            }
        ]
    }


def feast_store() -> Any:
    """Feast's ``FeatureStore`` over the fraud feature repo (the stack home's registry and SQLite store)."""
    import os

    from feast import FeatureStore

    from vatic.cli.stack.settings import StackSettings

    os.environ.setdefault("VATIC_STACK_HOME", str(StackSettings().home))
    return FeatureStore(repo_path=str(FEATURE_REPO))


def write_bodies(folder: Path, n: int = 256) -> dict[str, Path]:
    """Request body files for the load generator: ``v2`` (one-row V2 requests with real features) and
    ``gateway`` (the raw events, which the gateway enriches itself)."""
    folder.mkdir(parents=True, exist_ok=True)
    sample = events(n, seed=11)
    store = feast_store()
    refs = feature_refs()
    rows = store.get_online_features(
        features=refs,
        entity_rows=[{"customer_id": e["customer_id"], "merchant_id": e["merchant_id"]} for e in sample],
        full_feature_names=True,
    ).to_dict()
    paths = {"v2": folder / "v2.jsonl", "gateway": folder / "gateway.jsonl"}
    with paths["v2"].open("w") as v2, paths["gateway"].open("w") as gateway:
        for i, event in enumerate(sample):
            features = {ref: rows[ref.replace(":", "__")][i] for ref in refs}
            v2.write(json.dumps(v2_body([model_row(event, features)])) + "\n")
            gateway.write(json.dumps(event) + "\n")
    return paths
