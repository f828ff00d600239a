"""A real MLServer follows its registry stage: the rollout controller loads a new version beside the current one,
checks it and only then moves the pointer that the prediction core follows; a version that does not load or
does not keep the contract is refused and the current one keeps answering; a rollback is a stage moved back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.serving.runtimes import builders
from vatic.cli.stack.mlserver import ModelServer
from vatic.connectors.inference import InferenceClient
from vatic.serving.config import load_service
from vatic.serving.core.predictor import Predictor
from vatic.serving.core.versions import VersionFollower, pointer_name
from vatic.serving.runtimes.repository import write_repository
from vatic.serving.runtimes.rollout import Rollout

MODEL = "fraud-roll"


def _stage(root: Path, version: str) -> None:
    (root / MODEL / "stages.json").write_text(json.dumps({"production": version}), encoding="utf-8")


def _events(rows: list[list[float]]) -> list[dict[str, Any]]:
    return [{"event_id": str(i), **dict(zip(builders.FEATURES, row, strict=True))} for i, row in enumerate(rows)]


def test_a_following_server_switches_only_to_versions_that_load_and_keep_the_contract(
    tmp_path: Path, start_server: Callable[..., ModelServer]
) -> None:
    root = tmp_path / "registry"
    v1 = builders.lightgbm_model(root, MODEL, "1", seed=0)
    _stage(root, "1")
    config = builders.tabular_service(MODEL, "lightgbm", ["predict"])
    config["registry"].update({"stages": ["production"], "refresh_s": 1})
    folder = builders.service_folder(tmp_path / "service", config)
    service = load_service(folder)
    repository = tmp_path / "repository"
    write_repository(service, repository, service_dir=folder, registry_root=root)
    server = start_server(repository, name="rollout")
    rollout = Rollout(service, repository, server.url, service_dir=folder, registry_root=root, grace_s=0)

    async def scenario() -> None:
        client = InferenceClient(server.url, deadline_s=10)
        follower = VersionFollower(client, MODEL, refresh_s=0)
        predictor = Predictor(service, inference=client, versions=follower)

        async def answers(rows: list[list[float]] = v1["rows"]) -> tuple[set[str], list[float]]:
            result = await predictor.predict(_events(rows))
            assert not result.failures
            return {p["model_version"] for _, p in result.predictions}, [
                p["outputs"]["predict"] for _, p in result.predictions
            ]

        # the server starts on what the stage names, with the pointer on it
        assert (await client.metadata(pointer_name(MODEL))).versions == ("1",)
        assert (await rollout.step()).action == "unchanged"
        versions, scores = await answers()
        assert versions == {"1"}
        np.testing.assert_allclose(scores, v1["predict"], rtol=1e-6)

        # a new version: loaded beside the current one, checked, then switched to
        v2 = builders.lightgbm_model(root, MODEL, "2", seed=7)
        _stage(root, "2")
        step = await rollout.step()
        assert (step.action, step.current) == ("switched", "2")
        assert rollout.pointer() == ["2", "1"]
        versions, scores = await answers(v2["rows"])
        assert versions == {"2"}
        np.testing.assert_allclose(scores, v2["predict"], rtol=1e-6)
        assert follower.switches == 1

        # a version whose artifact does not load is refused; the current one keeps answering
        broken = root / MODEL / "3"
        broken.mkdir()
        (broken / "model.txt").write_text("this is not a LightGBM model\n", encoding="utf-8")
        _stage(root, "3")
        step = await rollout.step()
        assert (step.action, step.current, step.wanted) == ("refused", "2", "3")
        assert "did not load version 3" in rollout.refused["3"]
        assert rollout.pointer() == ["2", "1"]
        assert (await answers())[0] == {"2"}
        assert (await rollout.step()).action == "refused"  # not tried again while the stage names it

        # a version that does not fit the service's inputs (3 features where the service sends 5): its runtime
        # refuses it at load
        import lightgbm as lgb

        narrow = root / MODEL / "4"
        narrow.mkdir()
        x = np.random.default_rng(1).normal(size=(200, 3))
        lgb.train(
            {"objective": "binary", "verbose": -1}, lgb.Dataset(x, label=(x[:, 0] > 0).astype(int)), 5
        ).save_model(str(narrow / "model.txt"))
        _stage(root, "4")
        step = await rollout.step()
        assert (step.action, step.current, step.wanted) == ("refused", "2", "4")
        assert (await answers())[0] == {"2"}
        assert set(rollout.versions_on_disk()) == {"1", "2"}

        # a rollback is the stage moved back: instant, the previous version is still loaded
        _stage(root, "1")
        step = await rollout.step()
        assert (step.action, step.current) == ("switched", "1")
        assert rollout.pointer() == ["1", "2"]
        versions, scores = await answers()
        assert versions == {"1"}
        np.testing.assert_allclose(scores, v1["predict"], rtol=1e-6)
        await client.close()

    asyncio.run(scenario())
    from prometheus_client import generate_latest

    exposed = generate_latest(rollout.metrics.registry).decode()
    assert f'vatic_model_rollout_switches_total{{model="{MODEL}"}} 2.0' in exposed
    for version in ("3", "4"):
        assert f'vatic_model_rollout_refused_total{{model="{MODEL}",version="{version}"}} 1.0' in exposed
    assert f'vatic_model_rollout_version{{model="{MODEL}",role="current",version="1"}} 1.0' in exposed
    assert f'vatic_model_rollout_version{{model="{MODEL}",role="previous",version="2"}} 1.0' in exposed


def _stages(root: Path, **stages: str) -> None:
    (root / MODEL / "stages.json").write_text(json.dumps(stages), encoding="utf-8")


def test_the_canary_stage_serves_a_checked_version_to_a_share_of_the_entities(
    tmp_path: Path, start_server: Callable[..., ModelServer]
) -> None:
    from vatic.serving.core.experiments import canary_share

    root = tmp_path / "registry"
    v1 = builders.lightgbm_model(root, MODEL, "1", seed=0)
    builders.lightgbm_model(root, MODEL, "2", seed=7)
    broken = root / MODEL / "3"
    broken.mkdir()
    (broken / "model.txt").write_text("this is not a LightGBM model\n", encoding="utf-8")
    _stages(root, production="1")
    config = builders.tabular_service(MODEL, "lightgbm", ["predict"])
    config["registry"].update({"stages": ["production"], "refresh_s": 1})
    config["canary"] = {"key": [builders.FEATURES[0]], "weight": 0.5}
    folder = builders.service_folder(tmp_path / "service", config)
    service = load_service(folder)
    repository = tmp_path / "repository"
    write_repository(service, repository, service_dir=folder, registry_root=root)
    server = start_server(repository, name="canary")
    rollout = Rollout(service, repository, server.url, service_dir=folder, registry_root=root, grace_s=0)
    rows = v1["rows"]
    canary_rows = {str(i) for i, row in enumerate(rows) if canary_share(MODEL, [str(row[0])]) < 0.5}
    assert 0 < len(canary_rows) < len(rows)

    async def scenario() -> None:
        client = InferenceClient(server.url, deadline_s=10)
        predictor = Predictor(service, inference=client, versions=VersionFollower(client, MODEL, refresh_s=0))

        async def versions() -> dict[str, str]:
            result = await predictor.predict(_events(rows))
            assert not result.failures
            return {p["event_id"]: p["model_version"] for _, p in result.predictions}

        assert (await rollout.step()).canary is None
        assert set((await versions()).values()) == {"1"}

        # the canary stage names 2: loaded, checked, then named by the pointer with its share
        _stages(root, production="1", canary="2")
        step = await rollout.step()
        assert (step.action, step.current, step.canary) == ("unchanged", "1", "started")
        assert rollout.canary() == ("2", 0.5)
        metadata = await client.metadata(pointer_name(MODEL))
        assert metadata.versions == ("1",)
        assert dict(metadata.parameters or {}) == {"canary_version": "2", "canary_weight": 0.5}
        answered = await versions()
        assert {i for i, v in answered.items() if v == "2"} == canary_rows
        assert {i for i, v in answered.items() if v == "1"} == set(answered) - canary_rows

        # a canary that does not load is refused: the running canary stays
        _stages(root, production="1", canary="3")
        step = await rollout.step()
        assert step.canary == "refused"
        assert rollout.canary() == ("2", 0.5)
        assert {i for i, v in (await versions()).items() if v == "2"} == canary_rows

        # the stage emptied ends the canary; set again, then promoted: the canary becomes everyone's version
        _stages(root, production="1")
        assert (await rollout.step()).canary == "ended"
        assert set((await versions()).values()) == {"1"}
        _stages(root, production="1", canary="2")
        assert (await rollout.step()).canary == "started"
        _stages(root, production="2", canary="2")
        step = await rollout.step()
        assert (step.action, step.current, step.canary) == ("switched", "2", None)
        assert rollout.canary() is None
        assert set((await versions()).values()) == {"2"}
        assert "2" in rollout.versions_on_disk()
        await client.close()

    asyncio.run(scenario())


def test_a_following_server_follows_mlflow_aliases_and_its_canary_alias(
    tmp_path: Path, start_server: Callable[..., ModelServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same controller over a real MLflow registry (its SQLite store, the MLflow client's own API): moving
    the ``production`` alias rolls a version out, the ``canary`` alias starts and ends a canary."""
    mlflow = pytest.importorskip("mlflow", reason="mlflow is installed only in the model-server environment")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.chdir(tmp_path)  # MLflow writes nothing outside the test's folder
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    sources = tmp_path / "sources"
    trained = {
        version: builders.lightgbm_model(sources, MODEL, version, seed=seed) for version, seed in (("1", 0), ("2", 7))
    }
    client.create_registered_model(MODEL)
    for version in trained:
        assert str(client.create_model_version(MODEL, source=str(sources / MODEL / version)).version) == version
    client.set_registered_model_alias(MODEL, "production", "1")
    config = builders.tabular_service(MODEL, "lightgbm", ["predict"])
    config["registry"] = {"backend": "mlflow", "uri": uri, "stages": ["production"], "refresh_s": 1}
    config["canary"] = {"key": [builders.FEATURES[0]], "weight": 0.5}
    folder = builders.service_folder(tmp_path / "service", config)
    service = load_service(folder)
    repository = tmp_path / "repository"
    write_repository(service, repository, service_dir=folder)
    server = start_server(repository, name="rollout-mlflow")
    rollout = Rollout(service, repository, server.url, service_dir=folder, grace_s=0)

    async def scenario() -> None:
        client_ = InferenceClient(server.url, deadline_s=10)
        predictor = Predictor(service, inference=client_, versions=VersionFollower(client_, MODEL, refresh_s=0))

        async def answers(rows: list[list[float]]) -> tuple[set[str], list[float]]:
            result = await predictor.predict(_events(rows))
            assert not result.failures
            return {p["model_version"] for _, p in result.predictions}, [
                p["outputs"]["predict"] for _, p in result.predictions
            ]

        assert (await rollout.step()).action == "unchanged"
        assert (await answers(trained["1"]["rows"]))[0] == {"1"}

        client.set_registered_model_alias(MODEL, "production", "2")
        step = await rollout.step()
        assert (step.action, step.current) == ("switched", "2")
        versions, scores = await answers(trained["2"]["rows"])
        assert versions == {"2"}
        np.testing.assert_allclose(scores, trained["2"]["predict"], rtol=1e-6)

        client.set_registered_model_alias(MODEL, "canary", "1")
        assert (await rollout.step()).canary == "started"
        assert rollout.canary() == ("1", 0.5)
        assert (await answers(trained["2"]["rows"]))[0] == {"1", "2"}
        client.delete_registered_model_alias(MODEL, "canary")
        assert (await rollout.step()).canary == "ended"
        assert (await answers(trained["2"]["rows"]))[0] == {"2"}
        await client_.close()

    asyncio.run(scenario())
