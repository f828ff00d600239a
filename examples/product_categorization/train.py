"""Train the product categorizer's linear head (server environment: sentence-transformers, scikit-learn).

Input: a labelled set (``prepare``'s ``labelled.parquet``: event fields, ``label`` = the true category, the seller
features after the policy). The model inputs are built by :func:`vatic.examples.tabular.model_arrays`,
the function serving uses: ``text`` ([N, 2] title, description) and ``seller_mix`` ([N, K] float32). The head
reads ``x = [embed(text_of(title, description)) (384), seller_mix (K)]`` and answers
``softmax(x @ weight.T + bias)``: a multinomial logistic regression fitted with L-BFGS. Split by time: the newest
``test_share`` of the listings is held out.

Output (``out`` folder), no pickle:

* ``head.safetensors`` - ``weight`` float32 [C, D] and ``bias`` float32 [C], D = 384 + K;
* ``labels.json`` - the C categories in score order (the service config's output labels);
* ``model.json`` - the embedding model and how the head's input is laid out (see :func:`model_card`);
* ``metrics.json`` - accuracy and macro-F1 on the hold-out, also for a text-only head (what the seller mix adds).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from numpy.typing import NDArray

from vatic.examples.product_categorization import embedding
from vatic.examples.tabular import model_arrays, reference_profile
from vatic.serving.config.model import ServiceConfig

TEXT = "text"
MIX = "seller_mix"
CATEGORY = "category"
#: inverse L2 strength of the head (embeddings are unit vectors: small weights would underfit)
C_REGULARIZATION = 5.0


def categories(config: ServiceConfig) -> list[str]:
    """The category labels in score order: the ``category`` output's ``labels`` of the service config."""
    for output in config.model.outputs:
        if output.name == CATEGORY and output.labels:
            return list(output.labels)
    raise ValueError(f"the service config has no output {CATEGORY!r} with labels")


def model_card(config: ServiceConfig, labels: list[str], mix_columns: list[str]) -> dict[str, Any]:
    """``model.json``: what the runtime needs to rebuild the head's input from the V2 inputs."""
    dimensions = embedding.DIMENSIONS + len(mix_columns)
    return {
        "format": "vatic.linear-head/1",
        "embedding": {
            "model": embedding.EMBEDDING_MODEL,
            "dimensions": embedding.DIMENSIONS,
            "max_seq_length": embedding.MAX_SEQ_LENGTH,
            "normalize": True,
            "text": "embedding.text_of(title, description)",
        },
        "inputs": {
            TEXT: {"datatype": "BYTES", "shape": [-1, 2], "columns": ["title", "description"]},
            MIX: {"datatype": "FP32", "shape": [-1, len(mix_columns)], "columns": mix_columns},
        },
        "head": {
            "file": "head.safetensors",
            "input_dimensions": dimensions,
            "layout": [
                {"name": "embedding", "start": 0, "stop": embedding.DIMENSIONS},
                {"name": MIX, "start": embedding.DIMENSIONS, "stop": dimensions, "columns": mix_columns},
            ],
            "weight": [len(labels), dimensions],
            "bias": [len(labels)],
            "scores": "softmax(x @ weight.T + bias)",
        },
        "labels": "labels.json",
        "outputs": {CATEGORY: "labels[argmax(scores)]", "scores": "FP32 [N, C] in labels order"},
        "feature_refs": [column for column in mix_columns if ":" in column],
    }


def _fit(x: NDArray[Any], y: NDArray[Any], seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C_REGULARIZATION, max_iter=3000, random_state=seed).fit(x, y)


def train(
    labelled: Path, out: Path, config: ServiceConfig, *, seed: int, test_share: float = 0.2, device: str = "auto"
) -> dict[str, Any]:
    """Embed, fit the head, evaluate on the time-based hold-out, write the artifacts; return the metrics."""
    from safetensors.numpy import save_file  # type: ignore[import-not-found, unused-ignore]
    from sklearn.metrics import accuracy_score, f1_score

    frame = pd.read_parquet(labelled).sort_values(["event_time", "event_id"], kind="stable").reset_index(drop=True)
    labels = categories(config)
    unknown = set(frame["label"]) - set(labels)
    if unknown:
        raise ValueError(f"labels {sorted(unknown)} are not among the service's categories {labels}")
    arrays = model_arrays(frame, config)
    texts = [embedding.text_of(title, description) for title, description in arrays[TEXT]]
    distinct, position = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    encoder = embedding.load_encoder(device)
    vectors = np.asarray(embedding.embed(encoder, distinct.tolist()), dtype=np.float32)[position.reshape(-1)]
    mix = arrays[MIX].astype(np.float32)
    x = np.concatenate([vectors, mix], axis=1)
    y = frame["label"].map({label: i for i, label in enumerate(labels)}).to_numpy()
    cut = int(len(frame) * (1 - test_share))
    if len(set(y[:cut].tolist())) != len(labels):
        raise ValueError("every category needs training examples: generate more listings")

    head = _fit(x[:cut], y[:cut], seed)
    text_only = _fit(vectors[:cut], y[:cut], seed)
    predicted = head.predict(x[cut:])
    predicted_text = text_only.predict(vectors[cut:])

    mix_spec = next(tensor for tensor in config.model.inputs if tensor.name == MIX)
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {
            "weight": np.ascontiguousarray(head.coef_, dtype=np.float32),
            "bias": np.ascontiguousarray(head.intercept_, dtype=np.float32),
        },
        str(out / "head.safetensors"),
        metadata={"format": "vatic.linear-head/1", "labels": json.dumps(labels)},
    )
    (out / "labels.json").write_text(json.dumps(labels, indent=2) + "\n", encoding="utf-8")
    card = model_card(config, labels, list(mix_spec.columns))
    (out / "model.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    metrics: dict[str, Any] = {
        "task": "multiclass classification (product category)",
        "accuracy": round(float(accuracy_score(y[cut:], predicted)), 4),
        "macro_f1": round(float(f1_score(y[cut:], predicted, average="macro")), 4),
        "accuracy_text_only": round(float(accuracy_score(y[cut:], predicted_text)), 4),
        "macro_f1_text_only": round(float(f1_score(y[cut:], predicted_text, average="macro")), 4),
        "split": "time-based: the newest share of the listings is held out",
        "test_share": test_share,
        "rows_train": cut,
        "rows_test": len(frame) - cut,
        "new_seller_rows": int(frame[[c for c in frame.columns if c.endswith("#missing")]].notna().any(axis=1).sum()),
        "embedding_model": embedding.EMBEDDING_MODEL,
        "head": "multinomial logistic regression (L-BFGS), C=" + str(C_REGULARIZATION),
        "seed": seed,
        "labels": labels,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    # the drift monitor's reference: the held-out listings' inputs (the text is free text: left out) and answers
    answered = [labels[int(i)] for i in predicted]
    reference_profile(frame.iloc[cut:].reset_index(drop=True), config, {_category_field(config): answered}).write(out)
    return metrics


def _category_field(config: ServiceConfig) -> str:
    """The prediction event's name of the output that carries the category label."""
    return next((o.field for o in config.model.outputs if o.labels), config.model.outputs[0].field)


def model_settings(config: ServiceConfig, version: str) -> dict[str, Any]:
    """MLServer ``model-settings.json`` of the artifact folder (the low-code runtime named by the config)."""
    return {
        "name": config.model.name,
        "implementation": config.serving.implementation,
        "parameters": {"uri": ".", "version": version},
    }


def evaluate(
    labelled: Path, model_dir: Path, config: ServiceConfig, *, test_share: float = 0.2, device: str = "auto"
) -> dict[str, Any]:
    """The held-out metrics of the model in ``model_dir`` (a registry version folder: its linear head over the
    embedding) on ``labelled``'s hold-out, split exactly as :func:`train` splits it."""
    from safetensors.numpy import load_file  # type: ignore[import-not-found, unused-ignore]
    from sklearn.metrics import accuracy_score, f1_score

    frame = pd.read_parquet(labelled).sort_values(["event_time", "event_id"], kind="stable").reset_index(drop=True)
    cut = int(len(frame) * (1 - test_share))
    held_out = frame.iloc[cut:].reset_index(drop=True)
    labels = json.loads((model_dir / "labels.json").read_text(encoding="utf-8"))
    arrays = model_arrays(held_out, config)
    texts = [embedding.text_of(title, description) for title, description in arrays[TEXT]]
    vectors = np.asarray(embedding.embed(embedding.load_encoder(device), texts), dtype=np.float32)
    x = np.concatenate([vectors, arrays[MIX].astype(np.float32)], axis=1)
    head = load_file(str(model_dir / "head.safetensors"))
    predicted = np.argmax(x @ head["weight"].T + head["bias"], axis=1)
    y = held_out["label"].map({label: i for i, label in enumerate(labels)}).to_numpy()
    return {
        "accuracy": round(float(accuracy_score(y, predicted)), 4),
        "macro_f1": round(float(f1_score(y, predicted, average="macro")), 4),
        "rows_test": len(held_out),
    }
