"""The settings writer: service config + registry -> MLServer repository (settings.json, model-settings.json, the
verified artifacts). Pure file work: runs in the pipeline environment, with artifact files written here (their
content is never loaded; tests/serving/runtimes serve real ones)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from vatic.connectors.registry import file_sha256, folder_manifest, manifest_digest
from vatic.schemas.errors import ArtifactRejected, ArtifactsMissing, ConfigError
from vatic.serving.config import load_service
from vatic.serving.runtimes.repository import MARKER, main, write_repository

COLUMNS = ["amount", "hour", "age_days"]


def _service(tmp: Path, **overrides: Any) -> Path:
    config: dict[str, Any] = {
        "project": "tests",
        "service": "scoring",
        "serving": {"tier": "no-code", "library": "lightgbm", "port": 9000, "grpc_port": 9001, "metrics_port": 9002},
        "model": {
            "name": "scorer",
            "inputs": [
                {"name": "input-0", "datatype": "FP32", "columns": COLUMNS},
                {"name": "flag", "datatype": "BOOL", "columns": ["new"], "squeeze": True, "content_type": "np"},
            ],
            "outputs": [{"name": "predict", "rename": "score"}],
        },
        "registry": {"backend": "local", "model": "scorer"},
    }
    for key, value in overrides.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    folder = tmp / "service"
    folder.mkdir(exist_ok=True)
    (folder / "service.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return folder


def _artifact(root: Path, files: dict[str, str], name: str = "scorer", version: str = "1") -> Path:
    folder = root / name / version
    folder.mkdir(parents=True)
    for path, text in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text, encoding="utf-8")
    return folder


def _write(service: Path, repository: Path, registry: Path, **options: Any):
    return write_repository(load_service(service), repository, service_dir=service, registry_root=registry, **options)


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def test_no_code_lightgbm_repository(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    source = _artifact(registry, {"model.txt": "tree", "metrics.json": "{}"})
    _artifact(registry, {"model.txt": "older tree"}, version="0")
    written = _write(_service(tmp_path), tmp_path / "repo", registry)

    repo = tmp_path / "repo"
    assert (repo / MARKER).is_file()
    assert _json(repo / "settings.json") == {
        "debug": False,
        "host": "0.0.0.0",
        "http_port": 9000,
        "grpc_port": 9001,
        "metrics_port": 9002,
        "parallel_workers": 0,
        "load_models_at_startup": True,
        "metrics_endpoint": "/metrics",
    }
    settings = _json(repo / "scorer" / "model-settings.json")
    assert settings["name"] == "scorer"
    assert settings["implementation"] == "vatic.serving.runtimes.nocode.LightGBMModel"
    assert settings["platform"] == "lightgbm"
    assert settings["inputs"] == [
        {"name": "input-0", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "flag", "datatype": "BOOL", "shape": [-1], "parameters": {"content_type": "np"}},
    ]
    assert "outputs" not in settings  # the runtime declares them at load
    assert "max_batch_size" not in settings
    digest = manifest_digest(folder_manifest(source))
    assert settings["parameters"] == {
        "uri": "./model.txt",
        "version": "1",  # the highest numeric registry version
        "extra": {
            "device": "auto",
            "outputs": ["predict"],
            "service": "scoring",
            "artifact": {"registry": "local", "model": "scorer", "version": "1", "digest": digest},
        },
    }
    assert (repo / "scorer" / "model.txt").read_text() == "tree"
    assert written.models[0].digest == digest
    assert written.summary()["models"][0]["uri"] == "./model.txt"


def test_plain_mlserver_runtimes_without_input_validation(tmp_path: Path) -> None:
    _artifact(tmp_path / "registry", {"model.txt": "tree"})
    _write(_service(tmp_path), tmp_path / "repo", tmp_path / "registry", validate_inputs=False)
    settings = _json(tmp_path / "repo" / "scorer" / "model-settings.json")
    assert settings["implementation"] == "mlserver_lightgbm.LightGBMModel"


def test_low_code_version_device_and_adaptive_batching(tmp_path: Path) -> None:
    _artifact(tmp_path / "registry", {"head.safetensors": "x", "labels.json": "[]"}, version="4")
    service = _service(
        tmp_path,
        serving={
            "tier": "low-code",
            "library": "torch",
            "implementation": "my_runtime.Model",
            "device": "cuda",
            "parallel_workers": 2,
            "max_batch_size": 16,
            "max_batch_time_ms": 20,
        },
        model={"version": "v4"},
    )
    _write(service, tmp_path / "repo", tmp_path / "registry")
    settings = _json(tmp_path / "repo" / "scorer" / "model-settings.json")
    assert settings["implementation"] == "my_runtime.Model"
    assert settings["parameters"]["uri"] == "."
    assert settings["parameters"]["version"] == "v4"  # the service config's version wins
    assert settings["parameters"]["extra"]["artifact"]["version"] == "4"
    assert settings["parameters"]["extra"]["device"] == "cuda"
    assert (settings["max_batch_size"], settings["max_batch_time"]) == (16, 0.02)
    assert _json(tmp_path / "repo" / "settings.json")["parallel_workers"] == 2


def test_a_shipped_model_settings_is_the_base_and_is_renamed(tmp_path: Path) -> None:
    shipped = {
        "name": "whatever",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "platform": "sklearn",
        "versions": ["sklearn/1.5.2"],
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1, 1]}],
        "parameters": {"uri": "./elsewhere.joblib", "extra": {"skops_trusted": ["numpy.dtype"]}},
    }
    _artifact(tmp_path / "registry", {"model.skops": "m", "model-settings.json": json.dumps(shipped)})
    service = _service(tmp_path, serving={"library": "sklearn"})
    _write(service, tmp_path / "repo", tmp_path / "registry")
    folder = tmp_path / "repo" / "scorer"
    settings = _json(folder / "model-settings.json")
    assert settings["implementation"] == "vatic.serving.runtimes.nocode.SKLearnModel"
    assert settings["parameters"]["uri"] == "./model.skops"
    assert (settings["platform"], settings["versions"], settings["outputs"]) == (
        "sklearn",
        ["sklearn/1.5.2"],
        shipped["outputs"],
    )
    assert settings["parameters"]["extra"]["skops_trusted"] == ["numpy.dtype"]
    assert _json(folder / "registry-model-settings.json") == shipped
    # MLServer loads every model-settings.json: exactly one is left, ours
    assert [p.relative_to(tmp_path / "repo").as_posix() for p in (tmp_path / "repo").rglob("model-settings.json")] == [
        "scorer/model-settings.json"
    ]


def test_full_custom_gets_the_artifacts_and_a_vatic_model_json(tmp_path: Path) -> None:
    _artifact(tmp_path / "registry", {"weights.bin": "w"})
    service = _service(
        tmp_path, serving={"layer": "fastapi", "tier": "full-custom", "library": "custom", "entrypoint": "app:app"}
    )
    written = _write(service, tmp_path / "repo", tmp_path / "registry")
    folder = tmp_path / "repo" / "scorer"
    assert written.server == {}
    assert not (tmp_path / "repo" / "settings.json").exists()
    assert not (folder / "model-settings.json").exists()
    described = _json(folder / "vatic-model.json")
    assert "implementation" not in described
    assert described["parameters"]["uri"] == "."


# --- the registry's safety rules go through ------------------------------------------------------------------


def test_an_unpinned_pickle_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    _artifact(tmp_path / "registry", {"model.joblib": "pickle bytes"})
    service = _service(tmp_path, serving={"library": "sklearn"}, registry={"allow_pickle": True})
    with pytest.raises(ArtifactRejected) as info:
        _write(service, tmp_path / "repo", tmp_path / "registry")
    assert info.value.reason == "unpinned_pickle"
    assert [p.name for p in (tmp_path / "repo").iterdir()] == []


def test_a_pinned_pickle_is_refused_without_allow_pickle(tmp_path: Path) -> None:
    source = _artifact(tmp_path / "registry", {"model.joblib": "pickle bytes"})
    pin = {"path": "model.joblib", "sha256": file_sha256(source / "model.joblib")}
    service = _service(tmp_path, serving={"library": "sklearn"}, registry={"artifacts": [pin]})
    with pytest.raises(ArtifactRejected, match="allow_pickle is false"):
        _write(service, tmp_path / "repo", tmp_path / "registry")


def test_a_pinned_pickle_with_allow_pickle_is_served(tmp_path: Path) -> None:
    source = _artifact(tmp_path / "registry", {"model.joblib": "pickle bytes"})
    pin = {"path": "model.joblib", "sha256": file_sha256(source / "model.joblib")}
    service = _service(tmp_path, serving={"library": "sklearn"}, registry={"artifacts": [pin], "allow_pickle": True})
    _write(service, tmp_path / "repo", tmp_path / "registry")
    settings = _json(tmp_path / "repo" / "scorer" / "model-settings.json")
    assert settings["parameters"]["uri"] == "./model.joblib"


def test_a_pin_that_does_not_match_is_refused_and_the_old_repository_stays(tmp_path: Path) -> None:
    _artifact(tmp_path / "registry", {"model.txt": "tree"})
    _write(_service(tmp_path), tmp_path / "repo", tmp_path / "registry")
    before = sorted(p.relative_to(tmp_path / "repo") for p in (tmp_path / "repo").rglob("*"))
    service = _service(tmp_path, registry={"artifacts": [{"path": "model.txt", "sha256": "0" * 64}]})
    with pytest.raises(ArtifactRejected) as info:
        _write(service, tmp_path / "repo", tmp_path / "registry")
    assert info.value.reason == "digest_mismatch"
    assert sorted(p.relative_to(tmp_path / "repo") for p in (tmp_path / "repo").rglob("*")) == before


def test_missing_artifacts_are_artifacts_missing(tmp_path: Path) -> None:
    service = _service(tmp_path)
    with pytest.raises(ArtifactsMissing, match="does not exist"):
        _write(service, tmp_path / "repo", tmp_path / "no-registry")
    (tmp_path / "registry").mkdir()
    with pytest.raises(ArtifactsMissing, match="scorer"):
        _write(service, tmp_path / "repo", tmp_path / "registry")


# --- what the config gets wrong ------------------------------------------------------------------------------


def test_a_no_code_output_the_runtime_cannot_answer_is_a_config_error(tmp_path: Path) -> None:
    _artifact(tmp_path / "registry", {"model.txt": "tree"})
    service = _service(tmp_path, model={"outputs": [{"name": "predict_proba"}]})
    with pytest.raises(ConfigError, match="answers predict, not"):
        _write(service, tmp_path / "repo", tmp_path / "registry")


def test_an_artifact_without_a_model_file_names_what_it_holds(tmp_path: Path) -> None:
    _artifact(tmp_path / "registry", {"weights.npy": "w"})
    with pytest.raises(ConfigError, match=r"no lightgbm model file.*holds weights.npy"):
        _write(_service(tmp_path), tmp_path / "repo", tmp_path / "registry")


def test_a_folder_vatic_did_not_write_is_not_overwritten(tmp_path: Path) -> None:
    _artifact(tmp_path / "registry", {"model.txt": "tree"})
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not written by vatic"):
        _write(_service(tmp_path), tmp_path / "repo", tmp_path / "registry")
    assert (tmp_path / "repo" / "notes.txt").read_text() == "mine"


def test_rewriting_replaces_the_model_and_drops_stale_folders(tmp_path: Path) -> None:
    _artifact(tmp_path / "registry", {"model.txt": "tree v1", "old.txt": "x"})
    _write(_service(tmp_path), tmp_path / "repo", tmp_path / "registry")
    (tmp_path / "repo" / "renamed-model").mkdir()
    _artifact(tmp_path / "registry", {"model.txt": "tree v2"}, version="2")
    _write(_service(tmp_path), tmp_path / "repo", tmp_path / "registry")
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == [MARKER, "scorer", "settings.json"]
    assert (tmp_path / "repo" / "scorer" / "model.txt").read_text() == "tree v2"
    assert not (tmp_path / "repo" / "scorer" / "old.txt").exists()


# --- command line --------------------------------------------------------------------------------------------


def test_command_line_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    service = _service(tmp_path)
    registry = tmp_path / "registry"
    registry.mkdir()
    assert main([str(service), str(tmp_path / "repo"), "--registry-root", str(registry)]) == 3
    assert "vatic: service scoring" in capsys.readouterr().err
    _artifact(registry, {"weights.npy": "w"})
    assert main([str(service), str(tmp_path / "repo"), "--registry-root", str(registry)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "no lightgbm model file" in err
    _artifact(registry, {"model.txt": "tree"}, version="2")
    assert main([str(service), str(tmp_path / "repo"), "--registry-root", str(registry)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["parallel_workers"] == 0
    assert summary["models"][0]["registry_version"] == "2"


def test_runs_as_a_module(tmp_path: Path) -> None:
    _artifact(tmp_path / "registry", {"model.txt": "tree"})
    argv = [sys.executable, "-m", "vatic.serving.runtimes.repository", str(_service(tmp_path)), str(tmp_path / "repo")]
    done = subprocess.run(
        [*argv, "--registry-root", str(tmp_path / "registry")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["models"][0]["name"] == "scorer"


def _graph_service(tmp: Path, second: dict[str, Any]) -> Path:
    """A graph: `lgbm` (no-code LightGBM) and `second` reading lgbm's output, both from registry model `scorer`."""
    tensor = {"name": "input-0", "datatype": "FP32", "columns": COLUMNS}
    steps = [
        {"name": "lgbm", "model": "scorer-lgbm", "library": "lightgbm", "registry_model": "scorer", "inputs": [tensor],
         "outputs": [{"name": "predict", "datatype": "FP64"}]},
        {"name": "second", "registry_model": "scorer", "inputs": [{"name": "x", "from": "lgbm.predict"}],
         "outputs": [{"name": "predict", "datatype": "FP32"}], **second},
    ]  # fmt: skip
    folder = _service(tmp, graph={"steps": steps})
    body = yaml.safe_load((folder / "service.yaml").read_text(encoding="utf-8"))
    body["model"] = {"name": "scoring-graph", "outputs": [{"name": "predict", "rename": "score"}]}
    (folder / "service.yaml").write_text(yaml.safe_dump(body), encoding="utf-8")
    return folder


def test_a_graph_gets_one_model_folder_per_step_each_with_its_runtime_and_inputs(tmp_path):
    _artifact(tmp_path / "registry", {"model.txt": "tree\n", "model.json": "{}", "metrics.json": "{}"})
    service = _graph_service(tmp_path, {"model": "scorer-xgb", "library": "xgboost"})
    written = _write(service, tmp_path / "models", tmp_path / "registry")
    assert [(m.name, m.uri, m.registry_model, m.registry_version) for m in written.models] == [
        ("scorer-lgbm", "./model.txt", "scorer", "1"), ("scorer-xgb", "./model.json", "scorer", "1"),
    ]  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [
        MARKER,
        "scorer-lgbm",
        "scorer-xgb",
        "settings.json",
    ]
    xgb = _json(tmp_path / "models" / "scorer-xgb" / "model-settings.json")
    assert xgb["implementation"] == "vatic.serving.runtimes.nocode.XGBoostModel"
    assert xgb["inputs"] == [{"name": "x", "datatype": "FP64", "shape": [-1]}]  # lgbm's output, one per event
    lgbm = _json(tmp_path / "models" / "scorer-lgbm" / "model-settings.json")
    assert lgbm["implementation"] == "vatic.serving.runtimes.nocode.LightGBMModel"
    assert lgbm["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, len(COLUMNS)]}]


def test_a_step_whose_file_the_version_lacks_is_refused_naming_the_step(tmp_path):
    _artifact(tmp_path / "registry", {"model.txt": "tree\n", "metrics.json": "{}", "profile.json": "{}"})
    service = _graph_service(tmp_path, {"model": "scorer-xgb", "library": "xgboost"})
    with pytest.raises(
        ConfigError, match=r"step 'second'.*no xgboost model file in the artifact \(looked for model.json"
    ):
        _write(service, tmp_path / "models", tmp_path / "registry")
    assert not (tmp_path / "models" / "scorer-lgbm").exists()  # nothing half-written
