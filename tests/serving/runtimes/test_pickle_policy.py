"""No pickle without a pinned sha256, end to end: a real joblib sklearn model in a local registry, written into an
MLServer repository by the settings writer and loaded by vatic's no-code sklearn runtime (in process).

* no pin -> refused (``unpinned_pickle``), nothing written; a wrong pin -> refused (``digest_mismatch``);
  ``allow_pickle: false`` -> refused even when pinned;
* the right pin -> written, loaded, and its predictions are the model's own;
* the runtime checks again right before unpickling: a repository whose pickle was swapped after it was written,
  or a hand-written model-settings.json without the pin, fails the load and nothing is unpickled.
"""

from __future__ import annotations

import asyncio
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from mlserver.settings import ModelSettings
from mlserver.types import InferenceRequest, RequestInput

from tests.serving.runtimes import builders
from vatic.connectors.registry import file_sha256
from vatic.schemas.errors import ArtifactRejected
from vatic.serving.config import load_service
from vatic.serving.runtimes.nocode import SKLearnModel
from vatic.serving.runtimes.repository import write_repository

NAME = "legacy-sk"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """A registry holding one joblib model: (root, the model's own predictions, the file's sha256)."""
    root = tmp_path_factory.mktemp("registry")
    expected = builders.sklearn_model(root, NAME, fmt="joblib")
    return root, expected, file_sha256(root / NAME / "1" / "model.joblib")


def _write(tmp: Path, root: Path, **registry: Any) -> Path:
    config = builders.tabular_service(NAME, "sklearn", ["predict", "predict_proba"])
    config["registry"].update(registry)
    folder = builders.service_folder(tmp / "service", config)
    write_repository(load_service(folder), tmp / "repo", service_dir=folder, registry_root=root)
    return tmp / "repo" / NAME


def _load(model_folder: Path) -> SKLearnModel:
    model = SKLearnModel(ModelSettings.parse_file(str(model_folder / "model-settings.json")))
    asyncio.run(model.load())
    return model


def _predict(model: SKLearnModel, rows: list[list[float]]) -> list[Any]:
    flat = [v for row in rows for v in row]
    request = InferenceRequest(
        inputs=[RequestInput(name="input-0", datatype="FP32", shape=[len(rows), len(rows[0])], data=flat)],
        outputs=[{"name": "predict"}],
    )
    response = asyncio.run(model.predict(request))
    return list(response.outputs[0].data.root)


def test_a_pickle_without_a_pin_is_refused(tmp_path: Path, registry: tuple[Path, dict[str, Any], str]) -> None:
    root, _, _ = registry
    with pytest.raises(ArtifactRejected) as info:
        _write(tmp_path, root, allow_pickle=True)
    assert (info.value.reason, info.value.path) == ("unpinned_pickle", "model.joblib")
    assert not (tmp_path / "repo" / NAME).exists()


@pytest.mark.parametrize("wrong", ["0" * 64, file_sha256(__file__)])
def test_a_pickle_with_the_wrong_pin_is_refused(
    tmp_path: Path, registry: tuple[Path, dict[str, Any], str], wrong: str
) -> None:
    root, _, sha = registry
    with pytest.raises(ArtifactRejected) as info:
        _write(tmp_path, root, allow_pickle=True, artifacts=[{"path": "model.joblib", "sha256": wrong}])
    assert (info.value.reason, info.value.expected, info.value.actual) == ("digest_mismatch", wrong, sha)
    assert not (tmp_path / "repo" / NAME).exists()


def test_a_pinned_pickle_is_refused_without_allow_pickle(
    tmp_path: Path, registry: tuple[Path, dict[str, Any], str]
) -> None:
    root, _, sha = registry
    with pytest.raises(ArtifactRejected, match="allow_pickle is false"):
        _write(tmp_path, root, artifacts=[{"path": "model.joblib", "sha256": sha}])


def test_a_pickle_with_the_right_pin_loads_and_predicts_as_the_model(
    tmp_path: Path, registry: tuple[Path, dict[str, Any], str]
) -> None:
    root, expected, sha = registry
    folder = _write(tmp_path, root, allow_pickle=True, artifacts=[{"path": "model.joblib", "sha256": sha}])
    settings = json.loads((folder / "model-settings.json").read_text())
    assert settings["implementation"] == "vatic.serving.runtimes.nocode.SKLearnModel"
    assert settings["parameters"]["extra"]["artifact"]["pickles"] == {"model.joblib": sha}
    model = _load(folder)
    assert _predict(model, expected["rows"]) == expected["predict"]


def test_a_pickle_swapped_after_writing_is_not_unpickled(
    tmp_path: Path, registry: tuple[Path, dict[str, Any], str]
) -> None:
    root, _, sha = registry
    folder = _write(tmp_path, root, allow_pickle=True, artifacts=[{"path": "model.joblib", "sha256": sha}])
    marker = tmp_path / "unpickled"
    (folder / "model.joblib").write_bytes(pickle.dumps(_Touch(str(marker))))
    with pytest.raises(ArtifactRejected) as info:
        _load(folder)
    assert (info.value.reason, info.value.expected) == ("digest_mismatch", sha)
    assert not marker.exists()  # the payload never ran


def test_a_hand_written_settings_without_the_pin_is_refused(
    tmp_path: Path, registry: tuple[Path, dict[str, Any], str]
) -> None:
    root, _, sha = registry
    folder = _write(tmp_path, root, allow_pickle=True, artifacts=[{"path": "model.joblib", "sha256": sha}])
    settings = json.loads((folder / "model-settings.json").read_text())
    del settings["parameters"]["extra"]["artifact"]["pickles"]
    (folder / "model-settings.json").write_text(json.dumps(settings))
    with pytest.raises(ArtifactRejected) as info:
        _load(folder)
    assert info.value.reason == "unpinned_pickle"


class _Touch:
    """A pickle payload that creates a file when it is unpickled (what a malicious artifact would do)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.path),))


def test_the_payload_would_run_if_it_were_unpickled(tmp_path: Path) -> None:
    """The control of the swapped-pickle test: the payload does run when unpickled."""
    marker = tmp_path / "unpickled"
    pickle.loads(pickle.dumps(_Touch(str(marker))))
    assert marker.exists()
