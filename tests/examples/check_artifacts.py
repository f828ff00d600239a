"""Load the trained artifacts with the server environment's libraries and recompute the held-out metrics.

Usage::

    .venv/server/bin/python check_artifacts.py FRAUD_DIR FRAUD_LABELLED PRODUCT_DIR PRODUCT_LABELLED OUT

Writes ``<out>`` (JSON): for the fraud model the booster's feature count, the hold-out ROC AUC recomputed from
``model.txt`` and the scores of the first hold-out rows (compared with a real MLServer by the test); for the
product model the head's tensor shapes/dtypes and the hold-out accuracy recomputed from ``head.safetensors`` as
``softmax([embedding, seller_mix] @ weight.T + bias)`` - i.e. what a runtime reading only the documented
artifacts computes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from safetensors.numpy import load_file
from sklearn.metrics import roc_auc_score

from vatic.examples.layout import service_dir
from vatic.examples.product_categorization import embedding
from vatic.examples.tabular import model_arrays
from vatic.serving.config.loader import load_service


def _held_out(labelled: Path, share: float) -> tuple[pd.DataFrame, int]:
    frame = pd.read_parquet(labelled).sort_values(["event_time", "event_id"], kind="stable").reset_index(drop=True)
    return frame, int(len(frame) * (1 - share))


def main(fraud_dir: Path, fraud_labelled: Path, product_dir: Path, product_labelled: Path, out: Path) -> None:
    fraud_config = load_service(service_dir("fraud_detection"))
    frame, cut = _held_out(fraud_labelled, json.loads((fraud_dir / "metrics.json").read_text())["test_share"])
    booster = lgb.Booster(model_file=str(fraud_dir / "model.txt"))
    x = model_arrays(frame, fraud_config)["input-0"]
    scores = booster.predict(x[cut:])
    fraud = {
        "num_feature": booster.num_feature(),
        "roc_auc": float(roc_auc_score(frame["label"].astype(int)[cut:], scores)),
        "sample_event_ids": frame["event_id"][cut : cut + 16].tolist(),
        "sample_scores": scores[:16].tolist(),
    }

    product_config = load_service(service_dir("product_categorization"))
    metrics = json.loads((product_dir / "metrics.json").read_text())
    frame, cut = _held_out(product_labelled, metrics["test_share"])
    held = frame.iloc[cut:].reset_index(drop=True)
    head = load_file(str(product_dir / "head.safetensors"))
    labels = json.loads((product_dir / "labels.json").read_text())
    card = json.loads((product_dir / "model.json").read_text())
    arrays = model_arrays(held, product_config)
    assert card["embedding"]["model"] == embedding.EMBEDDING_MODEL
    encoder = embedding.load_encoder("cpu")
    vectors = embedding.embed(encoder, [embedding.text_of(t, d) for t, d in arrays["text"]])
    x = np.concatenate([vectors, arrays["seller_mix"]], axis=1).astype(np.float32)
    logits = x @ head["weight"].T + head["bias"]
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    predicted = [labels[i] for i in probabilities.argmax(axis=1)]
    product = {
        "weight": [list(head["weight"].shape), str(head["weight"].dtype)],
        "bias": [list(head["bias"].shape), str(head["bias"].dtype)],
        "accuracy": float(np.mean(np.asarray(predicted) == held["label"].to_numpy())),
        "probabilities_sum_to_one": bool(np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)),
    }
    out.write_text(json.dumps({"fraud": fraud, "product": product}), encoding="utf-8")


if __name__ == "__main__":
    main(*(Path(arg) for arg in sys.argv[1:6]))
