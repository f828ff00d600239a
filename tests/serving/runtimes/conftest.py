"""Fixtures of the serving-layer tests (server environment): a registry of small real models, MiniLM, and
real MLServer processes serving repositories written by :mod:`vatic.serving.runtimes.repository`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fixtures.model_server import model_server
from tests.serving.runtimes import builders
from vatic.cli.stack.mlserver import ModelServer
from vatic.serving.config import load_service
from vatic.serving.runtimes.repository import WrittenRepository, write_repository

#: texts the separating head tells apart, one per category of builders.CATEGORIES
SEPARATED = {
    "electronics": ("Wireless bluetooth headphones", "noise cancelling, 30 hours of battery"),
    "books": ("Hardcover detective novel", "a mystery set in Victorian London"),
    "kitchen": ("Stainless steel chef knife", "forged blade for slicing vegetables and meat"),
}


@dataclass(frozen=True)
class Registry:
    root: Path
    expected: dict[str, Any]


@pytest.fixture(scope="session")
def encoder() -> Any:
    from vatic.examples.product_categorization.embedding import load_encoder

    return load_encoder("cpu")


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, encoder: Any) -> Registry:
    """A local registry: fraud-lgb (LightGBM), iris-sk (sklearn, skops), categorizer (random head, the training
    code's model.json) and categorizer-sep (a head that separates SEPARATED's texts, the flat model.json)."""
    from vatic.examples.product_categorization.embedding import embed, text_of

    root = tmp_path_factory.mktemp("registry")
    expected = {
        "fraud-lgb": builders.lightgbm_model(root, "fraud-lgb"),
        "iris-sk": builders.sklearn_model(root, "iris-sk"),
    }
    builders.categorizer(root, "categorizer", seed=3)
    texts = [text_of(*SEPARATED[label]) for label in builders.CATEGORIES]
    anchors = np.asarray(embed(encoder, texts), dtype=np.float64)
    weight = np.concatenate([20.0 * anchors, np.zeros((len(texts), len(builders.SELLER_FEATURES)))], axis=1)
    builders.categorizer(root, "categorizer-sep", weight=weight, bias=np.zeros(len(texts)), card="flat")
    return Registry(root, expected)


def write_service(
    tmp: Path, registry: Registry, config: dict[str, Any], repository: Path, **options: Any
) -> WrittenRepository:
    """service.yaml from ``config`` under ``tmp``, then the repository written from it."""
    folder = builders.service_folder(tmp / "services" / config["service"], config)
    return write_repository(
        load_service(folder), repository, service_dir=folder, registry_root=registry.root, **options
    )


@pytest.fixture(scope="session")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ModelServer]]:
    """Start a real MLServer on free ports over a repository folder; every one is stopped at the end."""
    started: list[ModelServer] = []

    def start(repository: Path, *, name: str, parallel_workers: int = 0) -> ModelServer:
        home = tmp_path_factory.mktemp(f"{name}-home")
        server = model_server(home, repository, name=name, parallel_workers=parallel_workers)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()
