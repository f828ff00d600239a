"""Small real models, their registry folders and service folders, for the serving-layer tests.

Run in the server environment (imports lightgbm, sklearn, skops, safetensors). Each builder writes one registry
version ``<root>/<name>/<version>/`` in the :class:`~vatic.connectors.registry.LocalFolderRegistry` layout and
returns what the model itself predicts for its test rows, computed here by the fitted model, so that tests
compare a server's answers with the model's own.

Also a command line, for tests that run in the pipeline environment (no model libraries there)::

    .venv/server/bin/python tests/serving/runtimes/builders.py lightgbm <registry root> <name> <expected.json>
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

FEATURES = ["amount", "hour", "age_days", "country_risk", "velocity"]
CATEGORIES = ["electronics", "books", "kitchen"]
SELLER_FEATURES = ["share_electronics", "share_books", "share_kitchen"]


def _rows(n: int, k: int, seed: int) -> np.ndarray:
    """Rows exactly representable in float32 (FP32 on the wire gives the model the same values)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, k)).astype(np.float32).astype(np.float64)


def _version_dir(root: Path, name: str, version: str) -> Path:
    folder = root / name / version
    folder.mkdir(parents=True, exist_ok=False)
    return folder


def lightgbm_model(root: Path, name: str = "fraud-lgb", version: str = "1", *, seed: int = 0) -> dict[str, Any]:
    """A LightGBM binary booster over :data:`FEATURES`, saved as ``model.txt`` (native text format)."""
    import lightgbm as lgb

    x = _rows(400, len(FEATURES), seed)
    y = ((x[:, 0] + 0.5 * x[:, 4] + np.random.default_rng(seed + 1).normal(scale=0.3, size=len(x))) > 0.4).astype(int)
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 7, "verbose": -1, "seed": seed},
        lgb.Dataset(x, label=y, feature_name=FEATURES),
        num_boost_round=20,
    )
    folder = _version_dir(root, name, version)
    booster.save_model(str(folder / "model.txt"))
    (folder / "metrics.json").write_text(json.dumps({"features": FEATURES}), encoding="utf-8")
    rows = x[:16]
    return {"rows": rows.tolist(), "predict": booster.predict(rows).tolist()}


def sklearn_model(
    root: Path, name: str = "iris-sk", version: str = "1", *, fmt: str = "skops", seed: int = 0
) -> dict[str, Any]:
    """A 3-class LogisticRegression over :data:`FEATURES`, saved as ``model.skops`` (or ``model.joblib``)."""
    from sklearn.linear_model import LogisticRegression

    x = _rows(300, len(FEATURES), seed)
    y = np.digitize(x[:, 0] + x[:, 1], [-0.7, 0.7])
    model = LogisticRegression(max_iter=500).fit(x, y)
    folder = _version_dir(root, name, version)
    if fmt == "skops":
        import skops.io

        skops.io.dump(model, folder / "model.skops")
    else:
        import joblib

        joblib.dump(model, folder / "model.joblib")
    rows = x[:16]
    return {
        "rows": rows.tolist(),
        "predict": model.predict(rows).tolist(),
        "predict_proba": model.predict_proba(rows).tolist(),
    }


def categorizer(
    root: Path,
    name: str = "categorizer",
    version: str = "1",
    *,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    labels: list[str] | None = None,
    seller_features: list[str] | None = None,
    card: str = "trainer",
    seed: int = 0,
) -> Path:
    """A product categorizer artifact (head.safetensors, labels.json, model.json); random head by default.

    ``card``: ``trainer`` writes model.json as the training code does (``vatic.linear-head/1``), ``flat`` the
    short form the runtime also reads.
    """
    from safetensors.numpy import save_file

    labels = labels or CATEGORIES
    seller_features = SELLER_FEATURES if seller_features is None else seller_features
    width = 384 + len(seller_features)
    if weight is None:
        weight = np.random.default_rng(seed).normal(scale=2.0, size=(len(labels), width))
    if bias is None:
        bias = np.random.default_rng(seed + 1).normal(scale=0.1, size=len(labels))
    folder = _version_dir(root, name, version)
    save_file(
        {
            "weight": np.ascontiguousarray(weight, dtype=np.float32),
            "bias": np.ascontiguousarray(bias, dtype=np.float32),
        },
        str(folder / "head.safetensors"),
    )
    (folder / "labels.json").write_text(json.dumps(labels), encoding="utf-8")
    metadata: dict[str, Any] = {
        "embedding_model": "sentence-transformers/all-MiniLM-L6-v2",
        "embedding_dim": 384,
        "seller_features": seller_features,
    }
    if card == "trainer":
        metadata = {
            "format": "vatic.linear-head/1",
            "embedding": {"model": "sentence-transformers/all-MiniLM-L6-v2", "dimensions": 384, "max_seq_length": 128},
            "inputs": {
                "text": {"datatype": "BYTES", "shape": [-1, 2], "columns": ["title", "description"]},
                "seller_mix": {"datatype": "FP32", "shape": [-1, len(seller_features)], "columns": seller_features},
            },
            "labels": "labels.json",
        }
    (folder / "model.json").write_text(json.dumps(metadata), encoding="utf-8")
    return folder


def service_folder(folder: Path, config: dict[str, Any]) -> Path:
    """Write ``<folder>/service.yaml`` from a mapping; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "service.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return folder


def tabular_service(
    name: str, library: str, outputs: list[str], *, registry_model: str | None = None, **serving: Any
) -> dict[str, Any]:
    """A no-code service over :data:`FEATURES` as one FP32 ``[N, 5]`` input ``input-0``."""
    return {
        "project": "tests",
        "service": name,
        "serving": {"tier": "no-code", "library": library, **serving},
        "model": {
            "name": name,
            "inputs": [{"name": "input-0", "datatype": "FP32", "columns": FEATURES}],
            "outputs": [{"name": output} for output in outputs],
        },
        "registry": {"backend": "local", "model": registry_model or name},
    }


def categorizer_service(name: str, *, registry_model: str = "categorizer", **serving: Any) -> dict[str, Any]:
    """The product categorization service shape: text BYTES [N, 2], seller_mix FP32 [N, K] (low-code)."""
    return {
        "project": "tests",
        "service": name,
        "serving": {
            "tier": "low-code",
            "library": "torch",
            "implementation": "vatic.examples.product_categorization.runtime.ProductCategorizer",
            **serving,
        },
        "model": {
            "name": name,
            "inputs": [
                {"name": "text", "datatype": "BYTES", "columns": ["title", "description"]},
                {"name": "seller_mix", "datatype": "FP32", "columns": SELLER_FEATURES},
            ],
            "outputs": [{"name": "category"}, {"name": "scores"}],
        },
        "registry": {"backend": "local", "model": registry_model},
    }


def main(argv: list[str]) -> None:
    kind, root, name, expected = argv
    builders = {"lightgbm": lightgbm_model, "sklearn": sklearn_model}
    result = builders[kind](Path(root), name)
    Path(expected).write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
