"""``ProductCategorizer``: the low-code MLServer runtime of product categorization (MiniLM + a linear head), and its
two halves as models of their own for an inference graph (``ProductEmbedder`` -> ``CategoryHead``).

Artifact folder (one registry version; written by ``train.py``, read here)::

    head.safetensors   tensors "weight" float32 [C, D] and "bias" float32 [C], D = 384 + K
    labels.json        ["electronics", "books", ...]: the C category names, in the head's row order
    model.json         the embedding model and the layout of the head's input (below)

``model.json`` in the training code's format (``"format": "vatic.linear-head/1"``)::

    {"embedding": {"model": "sentence-transformers/all-MiniLM-L6-v2", "dimensions": 384, "max_seq_length": 128},
     "inputs": {"text": {"datatype": "BYTES", "shape": [-1, 2], "columns": ["title", "description"]},
                "seller_mix": {"datatype": "FP32", "shape": [-1, K], "columns": [<K seller features>]}},
     ...}

or the flat form ``{"embedding_model": ..., "embedding_dim": 384, "seller_features": [<K names>]}``. Other keys
are ignored. The input names are taken from ``inputs`` (the ``BYTES`` one is the text, the ``FP32`` one the
seller features; default ``text`` and ``seller_mix``). The head's input for one product is
``[embedding (384, L2-normalised) | seller features (K)]``, in that order.

V2 contract (the model metadata lists exactly this; :class:`~vatic.serving.runtimes.base.VaticModel` checks
every request against it and answers 400 otherwise):

* inputs: ``text`` BYTES ``[N, 2]`` - title, description per row (joined with
  :func:`~vatic.examples.product_categorization.embedding.text_of`; an empty description is fine);
  ``seller_mix`` FP32 ``[N, K]`` - the seller features in ``model.json``'s order (``NaN`` / JSON ``null``, a
  missing feature, counts as 0.0: a seller without history has no category mix). With K = 0 there is no
  ``seller_mix`` input.
* outputs: ``category`` BYTES ``[N]`` - the label of the highest score; ``scores`` FP32 ``[N, C]`` - softmax
  probabilities over the labels, in ``labels.json`` order.

Device: ``parameters.extra.device`` (``serving.device``): the encoder runs on CUDA when ``auto`` finds a GPU
(or ``cuda`` is asked for; without a GPU that is a load error), on the CPU otherwise - the same code, only the
device string differs. The linear head runs in NumPy on the CPU (C x D multiply-adds per row: microseconds).
Texts are embedded in batches of ``parameters.extra.embed_batch_size`` (default 64). ``predict_batch`` runs
in a worker thread (``offload``), so the server keeps answering health checks during a long batch.

Server environment only (torch, sentence-transformers, safetensors).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vatic.examples.product_categorization.embedding import (
    DIMENSIONS,
    EMBEDDING_MODEL,
    embed,
    load_encoder,
    text_of,
)
from vatic.serving.core.contract import Array, Signature, TensorDecl
from vatic.serving.runtimes.base import VaticModel

__all__ = [
    "EMBEDDING",
    "HEAD_FILE",
    "LABELS_FILE",
    "METADATA_FILE",
    "ArtifactError",
    "CategoryHead",
    "ProductCategorizer",
    "ProductEmbedder",
    "softmax",
]

HEAD_FILE = "head.safetensors"
LABELS_FILE = "labels.json"
METADATA_FILE = "model.json"
#: the tensor between the two halves of an inference graph (the embedder's output, the head's input)
EMBEDDING = "embedding"


class ArtifactError(ValueError):
    """The artifact folder does not hold a usable categorizer (the message names the file and the fix)."""


def softmax(logits: Array) -> Array:
    """Row-wise softmax, numerically stable (float32 in, float32 out)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    result: Array = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
    return result


class ProductCategorizer(VaticModel):
    """MiniLM sentence embedding + seller features -> linear head -> softmax (see the module docstring)."""

    offload = True

    encoder: Any
    weight: Array
    bias: Array
    labels: list[str]
    seller_features: list[str]

    text_input = "text"
    mix_input = "seller_mix"

    def load_artifacts(self, path: Path) -> None:
        card = self._load_head(path)
        self._load_encoder(card)

    def _load_head(self, path: Path) -> _Card:
        """The labels, the head's weights and the input layout; checked against each other."""
        card = _Card.read(path / METADATA_FILE)
        features = card.seller_features
        self.text_input, self.mix_input = card.text_input, card.mix_input
        dim = DIMENSIONS
        labels = _read_json(path / LABELS_FILE, list)
        if not labels or not all(isinstance(label, str) for label in labels):
            raise ArtifactError(f"{path / LABELS_FILE}: must be a non-empty list of category names")

        safetensors_numpy: Any = importlib.import_module("safetensors.numpy")  # server env only, untyped
        try:
            tensors = safetensors_numpy.load_file(str(path / HEAD_FILE))
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{path / HEAD_FILE}: cannot be read as safetensors: {exc}") from exc
        if "weight" not in tensors or "bias" not in tensors:
            raise ArtifactError(f"{path / HEAD_FILE}: needs tensors 'weight' and 'bias', has {sorted(tensors)}")
        weight = np.asarray(tensors["weight"], dtype=np.float32)
        bias = np.asarray(tensors["bias"], dtype=np.float32)
        classes, width = len(labels), dim + len(features)
        if weight.shape != (classes, width) or bias.shape != (classes,):
            raise ArtifactError(
                f"{path / HEAD_FILE}: weight {list(weight.shape)} / bias {list(bias.shape)} do not fit {classes} "
                f"labels x ({dim} embedding + {len(features)} seller features): [{classes}, {width}] / [{classes}]"
            )
        self.weight, self.bias, self.labels, self.seller_features = weight, bias, labels, features
        return card

    def _load_encoder(self, card: _Card) -> None:
        self.embed_batch_size = int(self.extra.get("embed_batch_size") or 64)
        self.encoder = load_encoder(self.device)
        if card.max_seq_length:
            self.encoder.max_seq_length = card.max_seq_length
        embed(self.encoder, ["warm up"], batch_size=1)  # the first call initialises kernels: not on a request

    def signature(self) -> Signature:
        inputs = [TensorDecl(self.text_input, "BYTES", (-1, 2))]
        if self.seller_features:
            inputs.append(TensorDecl(self.mix_input, "FP32", (-1, len(self.seller_features))))
        outputs = (TensorDecl("category", "BYTES", (-1,)), TensorDecl("scores", "FP32", (-1, len(self.labels))))
        return Signature(tuple(inputs), outputs)

    def embeddings(self, inputs: dict[str, Array]) -> Array:
        """Normalised text embeddings ``[N, 384]`` of the ``text`` input."""
        texts = [text_of(title, description) for title, description in inputs[self.text_input].tolist()]
        embedded = np.asarray(embed(self.encoder, texts, batch_size=self.embed_batch_size), dtype=np.float32)
        return embedded.reshape(len(texts), DIMENSIONS)

    def classify(self, embedded: Array, inputs: dict[str, Array]) -> dict[str, Array]:
        """The head: ``[embedding | seller features]`` -> softmax scores and the best label."""
        x = embedded
        if self.seller_features:
            seller = np.nan_to_num(inputs[self.mix_input].astype(np.float32), nan=0.0)
            x = np.concatenate([embedded, seller], axis=1)
        scores = softmax(x @ self.weight.T + self.bias)
        labels = np.asarray(self.labels, dtype=object)
        return {"category": labels[scores.argmax(axis=1)], "scores": scores}

    def predict_batch(self, inputs: dict[str, Array]) -> dict[str, Array]:
        return self.classify(self.embeddings(inputs), inputs)


class ProductEmbedder(ProductCategorizer):
    """The first half as a model of its own (an inference graph's first step): ``text`` BYTES ``[N, 2]`` ->
    ``embedding`` FP32 ``[N, 384]``, the normalised MiniLM embedding the head reads. Same artifact folder."""

    def load_artifacts(self, path: Path) -> None:
        self._load_encoder(_Card.read(path / METADATA_FILE))

    def signature(self) -> Signature:
        return Signature(
            (TensorDecl(self.text_input, "BYTES", (-1, 2)),), (TensorDecl(EMBEDDING, "FP32", (-1, DIMENSIONS)),)
        )

    def predict_batch(self, inputs: dict[str, Array]) -> dict[str, Array]:
        return {EMBEDDING: self.embeddings(inputs)}


class CategoryHead(ProductCategorizer):
    """The second half as a model of its own: ``embedding`` FP32 ``[N, 384]`` (the embedder's output) and
    ``seller_mix`` FP32 ``[N, K]`` -> ``category`` and ``scores``, as :class:`ProductCategorizer` answers them.
    Same artifact folder; no encoder is loaded (microseconds per row, on the CPU)."""

    offload = False

    def load_artifacts(self, path: Path) -> None:
        self._load_head(path)

    def signature(self) -> Signature:
        inputs = [TensorDecl(EMBEDDING, "FP32", (-1, DIMENSIONS))]
        if self.seller_features:
            inputs.append(TensorDecl(self.mix_input, "FP32", (-1, len(self.seller_features))))
        outputs = (TensorDecl("category", "BYTES", (-1,)), TensorDecl("scores", "FP32", (-1, len(self.labels))))
        return Signature(tuple(inputs), outputs)

    def predict_batch(self, inputs: dict[str, Array]) -> dict[str, Array]:
        embedded = np.asarray(inputs[EMBEDDING], dtype=np.float32).reshape(-1, DIMENSIONS)
        return self.classify(embedded, inputs)


@dataclass(frozen=True)
class _Card:
    """What the runtime reads from ``model.json`` (either format, see the module docstring)."""

    seller_features: list[str]
    text_input: str = "text"
    mix_input: str = "seller_mix"
    max_seq_length: int | None = None

    @classmethod
    def read(cls, path: Path) -> _Card:
        card = _read_json(path, dict)
        embedding = card.get("embedding")
        if isinstance(embedding, dict):
            model, dim = embedding.get("model"), embedding.get("dimensions")
            max_seq_length = embedding.get("max_seq_length")
        else:
            model, dim = card.get("embedding_model"), card.get("embedding_dim", card.get("embedding_dims"))
            max_seq_length = None
        if (model or EMBEDDING_MODEL) != EMBEDDING_MODEL:
            raise ArtifactError(f"{path}: embedding model {model!r} is not the packaged {EMBEDDING_MODEL!r}")
        if int(dim or DIMENSIONS) != DIMENSIONS:
            raise ArtifactError(f"{path}: embedding dimensions {dim}, but {EMBEDDING_MODEL} has {DIMENSIONS}")
        text_input, mix_input, features = "text", "seller_mix", card.get("seller_features", [])
        inputs = card.get("inputs")
        if isinstance(inputs, dict):
            for name, spec in inputs.items():
                kind = spec.get("datatype") if isinstance(spec, dict) else None
                if kind == "BYTES":
                    text_input = str(name)
                elif kind == "FP32":
                    mix_input, features = str(name), spec.get("columns", [])
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise ArtifactError(f"{path}: the seller feature columns must be a list of names")
        return cls(list(features), text_input, mix_input, int(max_seq_length) if max_seq_length else None)


def _read_json(path: Path, kind: type) -> Any:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing from the artifact folder") from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(value, kind):
        raise ArtifactError(f"{path} must hold a JSON {'object' if kind is dict else 'array'}")
    return value
