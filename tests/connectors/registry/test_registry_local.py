"""The model registry interface and its local folder backend, on real folders (and one real FIFO)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from vatic.connectors.registry import (
    ArtifactPin,
    LocalFolderRegistry,
    ModelRef,
    ModelRegistry,
    ResolvedModel,
    available_backends,
    file_sha256,
    folder_manifest,
    is_pickle,
    manifest_digest,
    open_registry,
    register_backend,
)
from vatic.schemas.errors import ArtifactRejected, ConfigError, ModelNotFound

REPO_ROOT = Path(__file__).resolve().parents[3]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A registry: fraud (versions 1, 2, 10 and 'exp-a', stages.json), churn (stages.yaml, an ONNX model)."""
    root = tmp_path / "models"
    for version in ("1", "2", "10", "exp-a"):
        _write(root / "fraud" / version / "model.joblib", f"joblib bytes of fraud {version}")
        _write(root / "fraud" / version / "model-settings.json", json.dumps({"name": "fraud", "version": version}))
    _write(root / "fraud" / "10" / "extra" / "thresholds.json", "[0.5]")
    _write(root / "fraud" / "stages.json", json.dumps({"production": "2", "staging": "10"}))
    _write(root / "churn" / "7" / "model.onnx", b"\x08\x07onnx")
    _write(root / "churn" / "stages.yaml", "production: 7\n")
    return root


@pytest.fixture
def registry(root: Path) -> LocalFolderRegistry:
    return LocalFolderRegistry(root)


# --- resolution -------------------------------------------------------------------------------------------


def test_versions_and_latest(registry: LocalFolderRegistry, root: Path) -> None:
    assert registry.versions("fraud") == ["1", "2", "10", "exp-a"]
    latest = registry.resolve("fraud")
    assert latest == ResolvedModel(
        name="fraud", version="10", stage=None, location=str(root.resolve() / "fraud" / "10")
    )
    assert registry.resolve("fraud:exp-a").version == "exp-a"
    assert registry.resolve(ModelRef("fraud", version="1")).location.endswith("/fraud/1")


def test_stages_from_json_and_yaml(registry: LocalFolderRegistry) -> None:
    assert registry.stages("fraud") == {"production": "2", "staging": "10"}
    production = registry.resolve("fraud@production")
    assert (production.version, production.stage) == ("2", "production")
    assert registry.resolve(ModelRef("fraud", stage="staging")).version == "10"
    # YAML's integer 7 is the version folder "7"
    assert registry.resolve("churn@production").version == "7"
    assert registry.stages("churn") == {"production": "7"}


def test_unknown_model_version_or_stage(registry: LocalFolderRegistry) -> None:
    with pytest.raises(ModelNotFound) as info:
        registry.resolve("nope")
    assert info.value.model == "nope"
    assert isinstance(info.value, ConfigError)
    with pytest.raises(ModelNotFound) as info:
        registry.resolve("fraud:3")
    assert info.value.version == "3"
    with pytest.raises(ModelNotFound):
        registry.resolve("fraud@canary")


def test_model_without_numeric_versions_needs_a_version(registry: LocalFolderRegistry, root: Path) -> None:
    _write(root / "beta" / "exp" / "model.onnx", b"x")
    with pytest.raises(ModelNotFound):
        registry.resolve("beta")
    assert registry.resolve("beta:exp").version == "exp"


def test_bad_stage_files(registry: LocalFolderRegistry, root: Path) -> None:
    _write(root / "fraud" / "stages.yaml", "production: '1'\n")
    with pytest.raises(ConfigError, match="several stage files"):
        registry.resolve("fraud@production")
    (root / "fraud" / "stages.yaml").unlink()
    _write(root / "fraud" / "stages.json", json.dumps({"production": "../churn/7"}))
    with pytest.raises(ConfigError, match="invalid model version"):
        registry.resolve("fraud@production")
    _write(root / "fraud" / "stages.json", "[1, 2]")
    with pytest.raises(ConfigError):
        registry.resolve("fraud@production")


@pytest.mark.parametrize(
    "text", ["..", "../fraud", "/etc", "fraud/1", ".hidden", "fraud:../1", "fraud:", "fraud@", "fraud@a/b", ""]
)
def test_references_that_are_not_names_are_refused(registry: LocalFolderRegistry, text: str) -> None:
    with pytest.raises(ConfigError):
        registry.resolve(text)


def test_version_and_stage_together_are_refused() -> None:
    with pytest.raises(ConfigError):
        ModelRef("fraud", version="1", stage="production")


def test_registry_root_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        LocalFolderRegistry(tmp_path / "missing")


# --- materializing -----------------------------------------------------------------------------------------


def test_fetch_copies_the_version_folder(registry: LocalFolderRegistry, root: Path, tmp_path: Path) -> None:
    dest = tmp_path / "serving" / "churn"
    model = registry.fetch("churn@production", dest)
    assert (model.name, model.version, model.stage, model.path) == ("churn", "7", "production", dest)
    assert (dest / "model.onnx").read_bytes() == b"\x08\x07onnx"
    assert model.files == {"model.onnx": _sha(b"\x08\x07onnx")}
    assert model.digest == manifest_digest(folder_manifest(dest)) == manifest_digest(model.files)
    # no staging folders are left behind
    assert sorted(p.name for p in dest.parent.iterdir()) == ["churn"]


def test_fetch_into_an_existing_empty_folder_only(registry: LocalFolderRegistry, tmp_path: Path) -> None:
    dest = tmp_path / "empty"
    dest.mkdir()
    registry.fetch("churn:7", dest)
    assert (dest / "model.onnx").exists()
    with pytest.raises(ConfigError, match="not an empty folder"):
        registry.fetch("churn:7", dest)


def test_nested_folders_are_copied(registry: LocalFolderRegistry, root: Path, tmp_path: Path) -> None:
    joblib = (root / "fraud" / "10" / "model.joblib").read_bytes()
    model = registry.fetch("fraud@staging", tmp_path / "m", pins=[ArtifactPin(_sha(joblib), "model.joblib")])
    assert sorted(model.files) == ["extra/thresholds.json", "model-settings.json", "model.joblib"]
    assert (tmp_path / "m" / "extra" / "thresholds.json").read_text() == "[0.5]"


# --- sha256 pins and pickles ---------------------------------------------------------------------------------


def test_file_pin_mismatch_is_refused_before_anything_is_materialized(
    registry: LocalFolderRegistry, tmp_path: Path
) -> None:
    dest = tmp_path / "out" / "churn"
    wrong = "0" * 64
    with pytest.raises(ArtifactRejected) as info:
        registry.fetch("churn:7", dest, pins=[ArtifactPin(wrong, "model.onnx")])
    err = info.value
    assert isinstance(err, ConfigError)
    assert (err.reason, err.path, err.expected, err.actual) == (
        "digest_mismatch",
        "model.onnx",
        wrong,
        _sha(b"\x08\x07onnx"),
    )
    assert "refusing to load" in err.message
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_folder_pin(registry: LocalFolderRegistry, root: Path, tmp_path: Path) -> None:
    joblib = ArtifactPin(file_sha256(root / "fraud" / "1" / "model.joblib"), "model.joblib")
    first = registry.fetch("fraud:1", tmp_path / "a", pins=[joblib])
    # pinning the folder digest freezes the whole folder (and allows its pickles)
    again = registry.fetch("fraud:1", tmp_path / "b", pins=[ArtifactPin("sha256:" + first.digest.upper())])
    assert again.digest == first.digest
    with pytest.raises(ArtifactRejected) as info:
        registry.fetch("fraud:2", tmp_path / "c", pins=[ArtifactPin(first.digest)])
    assert info.value.reason == "digest_mismatch"
    assert info.value.path == "."
    assert not (tmp_path / "c").exists()


def test_pinned_file_must_exist(registry: LocalFolderRegistry, tmp_path: Path) -> None:
    with pytest.raises(ArtifactRejected) as info:
        registry.fetch("churn:7", tmp_path / "x", pins=[ArtifactPin("a" * 64, "weights.bin")])
    assert info.value.reason == "missing_file"


def test_pickles_are_refused_unless_pinned(registry: LocalFolderRegistry, root: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactRejected) as info:
        registry.fetch("fraud@production", tmp_path / "a")
    err = info.value
    assert (err.reason, err.path) == ("unpinned_pickle", "model.joblib")
    assert err.actual == file_sha256(root / "fraud" / "2" / "model.joblib")  # the digest to pin, if trusted
    assert "arbitrary code" in err.message
    assert not (tmp_path / "a").exists()

    # a pin of another file does not cover the pickle
    settings = file_sha256(root / "fraud" / "2" / "model-settings.json")
    with pytest.raises(ArtifactRejected):
        registry.fetch("fraud@production", tmp_path / "b", pins=[ArtifactPin(settings, "model-settings.json")])

    model = registry.fetch("fraud@production", tmp_path / "c", pins=[ArtifactPin(err.actual or "", "model.joblib")])
    assert (tmp_path / "c" / "model.joblib").read_text() == "joblib bytes of fraud 2"
    assert model.version == "2"


@pytest.mark.parametrize(
    ("path", "pickle"),
    [
        ("model.pkl", True),
        ("model.PICKLE", True),
        ("sub/model.joblib", True),
        ("model.pkl.gz", True),
        ("model.onnx", False),
        ("model.json", False),
        ("pkl", False),
    ],
)
def test_pickle_detection(path: str, pickle: bool) -> None:
    assert is_pickle(path) is pickle


@pytest.mark.parametrize("bad", ["xyz", "0" * 63, "g" * 64, "md5:" + "0" * 64])
def test_malformed_pins_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError):
        ArtifactPin(bad)


@pytest.mark.parametrize("path", ["../model.joblib", "/etc/passwd", "a/../../b", "a\\..\\b"])
def test_pins_cannot_name_paths_outside_the_artifact(path: str) -> None:
    with pytest.raises(ArtifactRejected) as info:
        ArtifactPin("0" * 64, path)
    assert info.value.reason == "path_escape"


def test_manifest_digest_matches_sha256sum(registry: LocalFolderRegistry, tmp_path: Path) -> None:
    if shutil.which("sha256sum") is None or shutil.which("find") is None:
        pytest.skip("coreutils/findutils not installed")
    pin = ArtifactPin(file_sha256(tmp_path / "models" / "fraud" / "10" / "model.joblib"), "model.joblib")
    model = registry.fetch("fraud:10", tmp_path / "m", pins=[pin])
    shell = subprocess.run(
        "find . -type f -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum",
        shell=True,
        cwd=model.path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout.split()[0] == model.digest


# --- paths must stay inside the root --------------------------------------------------------------------------


def test_model_symlinked_out_of_the_root_is_refused(registry: LocalFolderRegistry, root: Path, tmp_path: Path) -> None:
    _write(tmp_path / "elsewhere" / "1" / "model.onnx", b"x")
    (root / "evil").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ArtifactRejected) as info:
        registry.resolve("evil:1")
    assert info.value.reason == "path_escape"


def test_version_symlinked_out_of_the_root_is_refused(
    registry: LocalFolderRegistry, root: Path, tmp_path: Path
) -> None:
    _write(tmp_path / "elsewhere" / "model.onnx", b"x")
    (root / "churn" / "8").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ArtifactRejected) as info:
        registry.fetch("churn:8", tmp_path / "out")
    assert info.value.reason == "path_escape"
    assert not (tmp_path / "out").exists()


def test_version_symlink_inside_the_root_is_followed(registry: LocalFolderRegistry, root: Path, tmp_path: Path) -> None:
    (root / "churn" / "8").symlink_to(root / "churn" / "7")
    assert registry.fetch("churn:8", tmp_path / "out").files == {"model.onnx": _sha(b"\x08\x07onnx")}


def test_file_symlinked_out_of_the_root_is_refused(registry: LocalFolderRegistry, root: Path, tmp_path: Path) -> None:
    secret = _write(tmp_path / "secret.txt", "do not copy")
    (root / "churn" / "7" / "notes.txt").symlink_to(secret)
    with pytest.raises(ArtifactRejected) as info:
        registry.fetch("churn:7", tmp_path / "out")
    assert info.value.reason == "path_escape"
    assert not (tmp_path / "out").exists()


def test_file_symlinked_inside_the_root_is_copied_as_a_file(
    registry: LocalFolderRegistry, root: Path, tmp_path: Path
) -> None:
    (root / "churn" / "7" / "settings.json").symlink_to(root / "fraud" / "1" / "model-settings.json")
    model = registry.fetch("churn:7", tmp_path / "out")
    copied = tmp_path / "out" / "settings.json"
    assert not copied.is_symlink()
    assert json.loads(copied.read_text()) == {"name": "fraud", "version": "1"}
    assert "settings.json" in model.files


def test_symlinked_folders_fifos_and_dangling_links_are_refused(
    registry: LocalFolderRegistry, root: Path, tmp_path: Path
) -> None:
    (root / "churn" / "7" / "linked").symlink_to(root / "fraud" / "1")
    with pytest.raises(ArtifactRejected) as info:
        registry.fetch("churn:7", tmp_path / "a")
    assert info.value.reason == "unsupported_file"
    (root / "churn" / "7" / "linked").unlink()

    os.mkfifo(root / "churn" / "7" / "pipe")
    with pytest.raises(ArtifactRejected) as info:
        registry.fetch("churn:7", tmp_path / "b")
    assert (info.value.reason, info.value.path) == ("unsupported_file", "pipe")
    (root / "churn" / "7" / "pipe").unlink()

    (root / "churn" / "7" / "gone").symlink_to(root / "nowhere")
    with pytest.raises(ArtifactRejected):
        registry.fetch("churn:7", tmp_path / "c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]


# --- backends by name ------------------------------------------------------------------------------------------


def test_open_registry_by_name(root: Path) -> None:
    assert "local" in available_backends()
    registry = open_registry("local", root=root)
    assert isinstance(registry, LocalFolderRegistry)
    assert registry.backend == "local"
    with pytest.raises(ConfigError, match="unknown model registry backend"):
        open_registry("comet-typo", root=root)
    with pytest.raises(ConfigError, match="bad options"):
        open_registry("local", rooot=root)


class _DictRegistry(ModelRegistry):
    """A stand-in remote backend (what comet/mlflow will be): artifacts come from memory, not from the disk."""

    backend = "memory"

    def __init__(self, models: dict[str, dict[str, bytes]]) -> None:
        self.models = models

    def resolve(self, ref: ModelRef | str) -> ResolvedModel:
        ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
        version = ref.version or "1"
        if f"{ref.name}:{version}" not in self.models:
            raise ModelNotFound("no such model", model=ref.name, version=version)
        return ResolvedModel(ref.name, version, ref.stage, f"memory://{ref.name}/{version}")

    def versions(self, name: str) -> list[str]:
        return sorted(key.split(":")[1] for key in self.models if key.startswith(f"{name}:"))

    def _download(self, model: ResolvedModel, staging: Path) -> None:
        for path, data in self.models[f"{model.name}:{model.version}"].items():
            _write(staging / path, data)


def test_other_backends_plug_in_and_get_the_same_checks(tmp_path: Path) -> None:
    register_backend("memory", _DictRegistry)
    try:
        registry = open_registry("memory", models={"m:1": {"model.pkl": b"pickle", "a.txt": b"a"}})
        with pytest.raises(ArtifactRejected) as info:
            registry.fetch("m:1", tmp_path / "x")
        assert info.value.reason == "unpinned_pickle"
        model = registry.fetch("m:1", tmp_path / "y", pins=[ArtifactPin(_sha(b"pickle"), "model.pkl")])
        assert model.files == {"a.txt": _sha(b"a"), "model.pkl": _sha(b"pickle")}
        with pytest.raises(ConfigError):
            register_backend("../x", _DictRegistry)
    finally:
        from vatic.connectors.registry import base

        base._BACKENDS.pop("memory", None)


def test_registry_imports_and_works_in_the_server_environment(root: Path, tmp_path: Path) -> None:
    python = REPO_ROOT / ".venv" / "server" / "bin" / "python"
    if not python.exists():
        pytest.skip("no .venv/server")
    script = (
        "import sys\n"
        "from vatic.connectors.registry import open_registry\n"
        f"model = open_registry('local', root={str(root)!r}).fetch('churn@production', {str(tmp_path / 's')!r})\n"
        "assert model.version == '7', model\n"
        "assert 'feast' not in sys.modules\n"
        "print('ok')\n"
    )
    done = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
