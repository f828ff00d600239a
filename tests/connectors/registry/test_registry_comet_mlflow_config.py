"""Building the comet/mlflow/local backends from the service config, in either environment.

These tests need neither comet-ml nor mlflow: they run in the pipeline environment (where neither is installed:
the backends must then refuse with a clear ``ConfigError``) and in the model-server one (where both are).
The backends' behaviour against Comet and MLflow is in ``test_registry_comet.py`` and ``test_registry_mlflow.py``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vatic.connectors.registry import (
    LocalFolderRegistry,
    ModelRef,
    available_backends,
    fetch_from_spec,
    open_registry,
    pins_from_spec,
    refs_from_spec,
    registry_from_spec,
    resolve_from_spec,
    version_key,
)
from vatic.schemas.errors import ArtifactRejected, ConfigError, ModelNotFound
from vatic.serving.config.model import RegistrySpec

HAVE_COMET = importlib.util.find_spec("comet_ml") is not None
HAVE_MLFLOW = importlib.util.find_spec("mlflow") is not None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def service_dir(tmp_path: Path) -> Path:
    """A service folder with a local registry under ``registry/``: fraud 1, 2, 10 (stages), legacy 1 (joblib)."""
    service = tmp_path / "service"
    for version in ("1", "2", "10"):
        folder = service / "registry" / "fraud" / version
        folder.mkdir(parents=True)
        (folder / "model.txt").write_text(f"lightgbm text model {version}")
    (service / "registry" / "fraud" / "stages.json").write_text(json.dumps({"production": "2", "staging": "10"}))
    legacy = service / "registry" / "legacy" / "1"
    legacy.mkdir(parents=True)
    (legacy / "model.joblib").write_bytes(b"joblib bytes")
    return service


def test_the_backends_are_registered_by_name() -> None:
    assert {"local", "comet", "mlflow"} <= set(available_backends())


def test_importing_the_package_imports_neither_client() -> None:
    script = (
        "import sys\n"
        "import vatic.connectors.registry\n"
        "from vatic.connectors.registry import CometRegistry, MlflowRegistry, open_registry\n"
        "loaded = sorted(m for m in ('comet_ml', 'mlflow') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_version_key_orders_newest_last() -> None:
    ordered = ["exp-a", "exp-b", "1", "1.2.0", "1.9.0", "1.10.0", "2.0.0-rc1", "2.0.0", "10", "v11"]
    assert sorted(reversed(ordered), key=version_key) == ordered


def test_local_from_spec_is_relative_to_the_service(service_dir: Path, tmp_path: Path) -> None:
    spec = RegistrySpec(backend="local", uri="registry")
    registry = registry_from_spec(spec, service_dir=service_dir)
    assert isinstance(registry, LocalFolderRegistry)
    assert registry.root == (service_dir / "registry").resolve()
    with pytest.raises(ConfigError, match=r"registry\.uri"):
        registry_from_spec(RegistrySpec(backend="local"), service_dir=service_dir)


def test_refs_from_spec() -> None:
    assert refs_from_spec(RegistrySpec(), default_name="fraud") == [ModelRef("fraud")]
    assert refs_from_spec(RegistrySpec(model="f2", version="3"), default_name="fraud") == [ModelRef("f2", version="3")]
    spec = RegistrySpec(stages=["production", "staging", "production"])
    assert refs_from_spec(spec, default_name="fraud") == [
        ModelRef("fraud", stage="production"),
        ModelRef("fraud", stage="staging"),
    ]
    with pytest.raises(ConfigError, match="not both"):
        refs_from_spec(RegistrySpec(version="3", stages=["production"]), default_name="fraud")


def test_resolve_from_spec_takes_the_newest_of_the_stages(service_dir: Path) -> None:
    registry = registry_from_spec(RegistrySpec(backend="local", uri="registry"), service_dir=service_dir)

    def resolve(**fields: object) -> str:
        spec = RegistrySpec(backend="local", uri="registry", **fields)
        return resolve_from_spec(registry, spec, default_name="fraud").version

    assert resolve(stages=["production", "staging"]) == "10"
    assert resolve(stages=["canary", "production"]) == "2"
    assert resolve(version="1") == "1"
    assert resolve() == "10"
    with pytest.raises(ModelNotFound, match="canary"):
        resolve(stages=["canary", "shadow"])


def test_fetch_from_spec_checks_pins_and_records_the_stage(service_dir: Path) -> None:
    good = _sha(b"lightgbm text model 2")
    spec = RegistrySpec(
        backend="local", uri="registry", stages=["production"], artifacts=[{"path": "model.txt", "sha256": good}]
    )
    assert pins_from_spec(spec)[0].sha256 == good
    dest = service_dir / "models" / "fraud"
    model = fetch_from_spec(spec, dest, service_dir=service_dir, default_name="fraud")
    assert (model.version, model.stage, model.path) == ("2", "production", dest)
    assert (dest / "model.txt").read_text() == "lightgbm text model 2"

    wrong = RegistrySpec(
        backend="local", uri="registry", stages=["production"], artifacts=[{"path": "model.txt", "sha256": "0" * 64}]
    )
    with pytest.raises(ArtifactRejected):
        fetch_from_spec(wrong, service_dir / "models" / "other", service_dir=service_dir, default_name="fraud")
    assert sorted(p.name for p in (service_dir / "models").iterdir()) == ["fraud"]
    with pytest.raises(ConfigError, match="not an empty folder"):
        fetch_from_spec(spec, dest, service_dir=service_dir, default_name="fraud")


def test_allow_pickle_false_refuses_a_pinned_pickle(service_dir: Path) -> None:
    pin = {"path": "model.joblib", "sha256": _sha(b"joblib bytes")}
    spec = RegistrySpec(backend="local", uri="registry", model="legacy", artifacts=[pin])
    dest = service_dir / "models" / "legacy"
    with pytest.raises(ArtifactRejected, match="allow_pickle is false") as info:
        fetch_from_spec(spec, dest, service_dir=service_dir, default_name="legacy")
    assert info.value.path == "model.joblib"
    assert list((service_dir / "models").iterdir()) == []
    allowed = RegistrySpec(backend="local", uri="registry", model="legacy", artifacts=[pin], allow_pickle=True)
    model = fetch_from_spec(allowed, dest, service_dir=service_dir, default_name="legacy")
    assert (model.path / "model.joblib").read_bytes() == b"joblib bytes"
    unpinned = RegistrySpec(backend="local", uri="registry", model="legacy", allow_pickle=True)
    with pytest.raises(ArtifactRejected, match="pin its sha256"):
        fetch_from_spec(unpinned, service_dir / "models" / "x", service_dir=service_dir, default_name="legacy")


def test_comet_construction(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("COMET_API_KEY", raising=False)
    spec = RegistrySpec(backend="comet", workspace="vatic-ml", uri="https://comet.example.com/clientlib/")
    with pytest.raises(ConfigError, match="COMET_API_KEY"):
        registry_from_spec(spec, service_dir=tmp_path)
    with pytest.raises(ConfigError, match="http"):
        open_registry("comet", workspace="vatic-ml", url="ftp://comet.example.com", api_key="k" * 25)
    monkeypatch.setenv("COMET_API_KEY", "SeCrEtKeY" * 3)
    if not HAVE_COMET:
        with pytest.raises(ConfigError, match=r"comet-ml package.*\.venv/server"):
            registry_from_spec(spec, service_dir=tmp_path)
        return
    registry = registry_from_spec(spec, service_dir=tmp_path)
    assert registry.backend == "comet"
    assert "SeCrEtKeY" not in repr(registry)
    assert "SeCrEtKeY" not in repr(vars(registry))


def test_mlflow_construction(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI"):
        registry_from_spec(RegistrySpec(backend="mlflow"), service_dir=tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example.com:5000")
    if not HAVE_MLFLOW:
        with pytest.raises(ConfigError, match=r"mlflow package.*\.venv/server"):
            registry_from_spec(RegistrySpec(backend="mlflow"), service_dir=tmp_path)
        return
    registry = registry_from_spec(RegistrySpec(backend="mlflow"), service_dir=tmp_path)
    assert registry.backend == "mlflow"
    assert "mlflow.example.com" in repr(registry)
