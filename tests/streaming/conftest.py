"""Fixtures of the job's end-to-end tests: a real MLServer with the echo/fault models and a real Feast repo."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import feast_repo
from tests.fixtures.model_server import ModelRepo, build_model_repo, model_server
from vatic.cli.stack.mlserver import ModelServer


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> ModelRepo:
    return build_model_repo(tmp_path_factory.mktemp("models") / "repo", iris=False)


@pytest.fixture(scope="module")
def server(models: ModelRepo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    srv = model_server(tmp_path_factory.mktemp("home"), models.root, name="job-mlserver", parallel_workers=0)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return feast_repo.build_repo(tmp_path_factory.mktemp("feast"))
