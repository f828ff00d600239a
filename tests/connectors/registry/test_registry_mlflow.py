"""The ``mlflow`` registry backend against a REAL MLflow tracking server with a model registry.

The module starts ``.venv/server/bin/mlflow server`` as a process (SQLite backend store and artifact folder in a
temporary directory, a free port on 127.0.0.1, artifacts proxied by the server as in production), registers model
versions through the real MLflow client (LightGBM models in LightGBM's native text format, one MLflow 3 "logged
model" registered by ``mlflow.lightgbm.log_model``, one pickle), sets aliases, and then resolves and fetches them
through the backend. The server is stopped (its whole process group) at the end of the module.

Needs the model-server environment: mlflow is not installed in the pipeline one. It also shows that mlflow and
mlserver 1.7.1 are installed side by side there.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow", reason="mlflow is installed only in the model-server environment (.venv/server)")
lightgbm = pytest.importorskip("lightgbm", reason="lightgbm is installed only in the model-server environment")
np = pytest.importorskip("numpy")

from mlflow import MlflowClient  # noqa: E402

from vatic.connectors.registry import (  # noqa: E402
    ArtifactPin,
    MlflowRegistry,
    fetch_from_spec,
    open_registry,
    registry_from_spec,
    resolve_from_spec,
)
from vatic.schemas.errors import (  # noqa: E402
    ArtifactRejected,
    ConfigError,
    ModelNotFound,
    Retryable,
    ServiceUnavailable,
)
from vatic.serving.config.model import RegistrySpec  # noqa: E402

MLFLOW_BIN = Path(sys.executable).with_name("mlflow")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _booster(trees: int) -> object:
    rng = np.random.RandomState(11)
    features = rng.rand(200, 3)
    labels = ((features[:, 0] + 0.5 * features[:, 1]) > 0.8).astype(int)
    params = {"objective": "binary", "verbose": -1, "num_leaves": 4, "seed": 11, "deterministic": True}
    return lightgbm.train(params, lightgbm.Dataset(features, labels), num_boost_round=trees)


@dataclass
class Server:
    uri: str
    #: model version -> the bytes of its model.txt, for model "fraud"
    fraud: dict[str, bytes]
    pickle_bytes: bytes
    churn_trees: int


def _wait_healthy(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    """Poll /health until the server answers; fail with its log if it exits or never answers."""
    import urllib.request

    for _ in range(600):
        if process.poll() is not None:
            pytest.fail(f"mlflow server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"mlflow server did not answer /health:\n{log.read_text()[-4000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server and its workers (uvicorn, job runner, huey consumers): they all share the process group
    created for it. SIGTERM first; whatever of the group is still there after a grace period gets SIGKILL."""
    group = process.pid
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    for _ in range(60):  # the workers exit a few seconds after the server process
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    os.killpg(group, signal.SIGKILL)
    process.wait(timeout=30)


def _populate(uri: str, work: Path) -> Server:
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("vatic-registry-tests")
    run = client.create_run(experiment)
    run_id = run.info.run_id

    fraud: dict[str, bytes] = {}
    client.create_registered_model("fraud")
    for version, trees in (("1", 2), ("2", 3), ("3", 4)):
        folder = work / f"fraud-{version}"
        folder.mkdir()
        _booster(trees).save_model(str(folder / "model.txt"))  # type: ignore[attr-defined]
        settings = {"name": "fraud", "implementation": "mlserver_lightgbm.LightGBMModel"}
        (folder / "model-settings.json").write_text(json.dumps(settings))
        (folder / "extra").mkdir()
        (folder / "extra" / "thresholds.json").write_text('{"block": 0.9}')
        client.log_artifacts(run_id, str(folder), artifact_path=f"fraud-{version}")
        created = client.create_model_version("fraud", source=f"{run.info.artifact_uri}/fraud-{version}", run_id=run_id)
        assert created.version == version
        fraud[version] = (folder / "model.txt").read_bytes()
    client.set_registered_model_alias("fraud", "production", "2")
    client.set_registered_model_alias("fraud", "staging", "3")

    pickle_bytes = pickle.dumps({"weights": [0.1, 0.2]})
    folder = work / "legacy"
    folder.mkdir()
    (folder / "model.pkl").write_bytes(pickle_bytes)
    (folder / "model-settings.json").write_text('{"name": "legacy"}')
    client.log_artifacts(run_id, str(folder), artifact_path="legacy")
    client.create_registered_model("legacy")
    client.create_model_version("legacy", source=f"{run.info.artifact_uri}/legacy", run_id=run_id)

    client.create_registered_model("empty")
    client.set_terminated(run_id)

    # the MLflow 3 way: a logged model (source models:/m-...) registered by the flavor's log_model
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        patch.chdir(work)  # whatever a run writes to the working directory stays in the temporary folder
        with mlflow.start_run(experiment_id=experiment):
            mlflow.lightgbm.log_model(_booster(5), name="model", registered_model_name="churn", pip_requirements=[])
    return Server(uri=uri, fraud=fraud, pickle_bytes=pickle_bytes, churn_trees=5)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real ``mlflow server`` process with the models above; stopped after the module."""
    work = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    log = work / "server.log"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [
        str(MLFLOW_BIN),
        "server",
        "--backend-store-uri",
        f"sqlite:///{work / 'mlflow.db'}",
        "--artifacts-destination",
        str(work / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        uri = f"http://127.0.0.1:{port}"
        _wait_healthy(process, uri, log)
        models = work / "models"
        models.mkdir()
        yield _populate(uri, models)
    finally:
        _stop(process)


@pytest.fixture
def registry(server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> MlflowRegistry:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # MLflow must never fall back to ./mlflow.db or ./mlruns
    return MlflowRegistry(server.uri)


def test_mlflow_installs_beside_mlserver_1_7_1() -> None:
    import mlserver

    assert importlib.metadata.version("mlserver") == "1.7.1"
    assert mlserver.__version__ == "1.7.1"
    assert int(mlflow.__version__.split(".")[0]) >= 3


def test_open_registry_by_name(server: Server) -> None:
    registry = open_registry("mlflow", tracking_uri=server.uri)
    assert isinstance(registry, MlflowRegistry)
    assert registry.backend == "mlflow"
    assert registry.registry_uri == server.uri


def test_resolve_by_version_alias_and_latest(registry: MlflowRegistry) -> None:
    assert registry.resolve("fraud:1").version == "1"
    production = registry.resolve("fraud@production")
    assert (production.version, production.stage) == ("2", "production")
    assert production.location.startswith("mlflow-artifacts:")
    assert registry.resolve("fraud@staging").version == "3"
    assert registry.resolve("fraud").version == "3"
    assert registry.resolve("fraud@latest").version == "3"
    assert registry.versions("fraud") == ["1", "2", "3"]


def test_fetch_by_alias_downloads_the_version_files(registry: MlflowRegistry, server: Server, tmp_path: Path) -> None:
    pins = [ArtifactPin(_sha(server.fraud["2"]), "model.txt")]
    model = registry.fetch("fraud@production", tmp_path / "served" / "fraud", pins=pins)
    assert (model.version, model.stage) == ("2", "production")
    assert sorted(model.files) == ["extra/thresholds.json", "model-settings.json", "model.txt"]
    assert (model.path / "model.txt").read_bytes() == server.fraud["2"]
    assert lightgbm.Booster(model_file=str(model.path / "model.txt")).num_trees() == 3
    assert sorted(p.name for p in (tmp_path / "served").iterdir()) == ["fraud"]  # no download folders left
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "mlruns").exists()


def test_a_wrong_pin_leaves_nothing_at_the_destination(registry: MlflowRegistry, tmp_path: Path) -> None:
    with pytest.raises(ArtifactRejected) as info:
        registry.fetch("fraud:1", tmp_path / "served" / "fraud", pins=[ArtifactPin("1" * 64, "model.txt")])
    assert info.value.reason == "digest_mismatch"
    assert list((tmp_path / "served").iterdir()) == []


def test_a_model_logged_the_mlflow_3_way(registry: MlflowRegistry, server: Server, tmp_path: Path) -> None:
    resolved = registry.resolve("churn")
    assert resolved.version == "1"
    model = registry.fetch("churn:1", tmp_path / "churn")
    assert {"MLmodel", "model.lgb"} <= set(model.files)
    assert lightgbm.Booster(model_file=str(model.path / "model.lgb")).num_trees() == server.churn_trees


def test_unknown_model_version_and_alias_are_config_errors(registry: MlflowRegistry) -> None:
    with pytest.raises(ModelNotFound, match="nope") as info:
        registry.resolve("nope")
    assert isinstance(info.value, ConfigError)
    with pytest.raises(ModelNotFound, match="nope"):
        registry.resolve("nope@production")
    with pytest.raises(ModelNotFound, match="nope"):
        registry.versions("nope")
    with pytest.raises(ModelNotFound, match="version 9"):
        registry.resolve("fraud:9")
    with pytest.raises(ModelNotFound, match="no alias 'canary'"):
        registry.resolve("fraud@canary")
    with pytest.raises(ModelNotFound, match="no version whose registration finished"):
        registry.resolve("empty")
    with pytest.raises(ConfigError, match="integers"):
        registry.resolve("fraud:1.0")


def test_pickles_need_a_pin(registry: MlflowRegistry, server: Server, tmp_path: Path) -> None:
    with pytest.raises(ArtifactRejected) as info:
        registry.fetch("legacy", tmp_path / "a")
    assert info.value.reason == "unpinned_pickle"
    model = registry.fetch("legacy", tmp_path / "b", pins=[ArtifactPin(_sha(server.pickle_bytes), "model.pkl")])
    assert (model.path / "model.pkl").read_bytes() == server.pickle_bytes


def test_a_server_that_is_down_is_retryable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    monkeypatch.chdir(tmp_path)
    registry = MlflowRegistry(f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    with pytest.raises(ServiceUnavailable) as info:
        registry.fetch("fraud@production", tmp_path / "served")
    assert isinstance(info.value, Retryable)
    assert info.value.service == "mlflow"
    assert list(tmp_path.iterdir()) == []


# --- from the service config ----------------------------------------------------------------------------


def test_stages_take_the_newest_version_among_the_aliases(registry: MlflowRegistry, server: Server) -> None:
    spec = RegistrySpec(backend="mlflow", uri=server.uri, stages=["production", "staging"])
    assert resolve_from_spec(registry, spec, default_name="fraud").version == "3"
    spec = RegistrySpec(backend="mlflow", uri=server.uri, stages=["canary", "production"])
    assert resolve_from_spec(registry, spec, default_name="fraud").version == "2"
    spec = RegistrySpec(backend="mlflow", uri=server.uri, stages=["canary", "shadow"])
    with pytest.raises(ModelNotFound, match="no version in any of the stages"):
        resolve_from_spec(registry, spec, default_name="fraud")


def test_fetch_from_spec(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = RegistrySpec(
        backend="mlflow",
        uri=server.uri,
        model="fraud",
        stages=["production"],
        artifacts=[{"path": "model.txt", "sha256": _sha(server.fraud["2"])}],
    )
    assert isinstance(registry_from_spec(spec, service_dir=tmp_path), MlflowRegistry)
    model = fetch_from_spec(spec, tmp_path / "models" / "fraud", service_dir=tmp_path, default_name="ignored")
    assert (model.version, model.stage, model.path) == ("2", "production", tmp_path / "models" / "fraud")
    assert (model.path / "model.txt").read_bytes() == server.fraud["2"]


def test_allow_pickle_false_refuses_even_a_pinned_pickle(server: Server, tmp_path: Path) -> None:
    pin = {"path": "model.pkl", "sha256": _sha(server.pickle_bytes)}
    spec = RegistrySpec(backend="mlflow", uri=server.uri, model="legacy", artifacts=[pin])
    with pytest.raises(ArtifactRejected, match="allow_pickle is false"):
        fetch_from_spec(spec, tmp_path / "models" / "legacy", service_dir=tmp_path, default_name="legacy")
    assert list((tmp_path / "models").iterdir()) == []
    allowed = spec.model_copy(update={"allow_pickle": True})
    model = fetch_from_spec(allowed, tmp_path / "models" / "legacy", service_dir=tmp_path, default_name="legacy")
    assert (model.path / "model.pkl").read_bytes() == server.pickle_bytes


def test_a_database_tracking_uri_without_a_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow also reads a registry straight from its database; a source folder with a symlink leading out of it
    is refused (by MLflow) and nothing reaches the destination."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'registry.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    good = tmp_path / "sources" / "good"
    good.mkdir(parents=True)
    (good / "model.txt").write_text("tree")
    bad = tmp_path / "sources" / "bad"
    bad.mkdir()
    (bad / "model.txt").write_text("tree")
    (bad / "secret.txt").symlink_to(tmp_path / "outside.txt")
    (tmp_path / "outside.txt").write_text("not part of the model")
    client.create_registered_model("local-model")
    client.create_model_version("local-model", source=str(good))
    client.create_model_version("local-model", source=str(bad))

    registry = MlflowRegistry(uri)
    model = registry.fetch("local-model:1", tmp_path / "served" / "one")
    assert model.files == {"model.txt": _sha(b"tree")}
    with pytest.raises(ConfigError, match="outside the artifact directory"):
        registry.fetch("local-model:2", tmp_path / "served" / "two")
    assert sorted(p.name for p in (tmp_path / "served").iterdir()) == ["one"]
