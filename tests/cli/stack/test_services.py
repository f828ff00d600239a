"""The model servers of the local stack: a service folder + the local registry -> a real MLServer on its ports,
or one line saying why the service is skipped. Each test runs its own component on spare ports under its own
home; the model is a real LightGBM booster trained in the server environment."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from tests.fixtures.model_server import free_port, server_python
from tests.serving.runtimes.builders import tabular_service
from vatic.cli.stack.process import port_is_free
from vatic.cli.stack.services import FraudModelServer, ProductModelServer, ServiceModelServer
from vatic.cli.stack.settings import StackSettings
from vatic.cli.stack.stack import STACK
from vatic.schemas.errors import ConfigError, PortInUse

BUILDERS = Path(__file__).resolve().parents[2] / "serving" / "runtimes" / "builders.py"


def _ports() -> tuple[int, int, int]:
    ports: set[int] = set()
    while len(ports) < 3:
        ports.add(free_port())
    http, grpc, metrics = sorted(ports)
    return http, grpc, metrics


def _service(tmp: Path, **serving: object) -> Path:
    folder = tmp / "service"
    folder.mkdir(parents=True)
    config = tabular_service("fraud-lgb", "lightgbm", ["predict"], **serving)
    (folder / "service.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return folder


def _component(tmp: Path, service_dir: Path, registry: Path) -> ServiceModelServer:
    settings = StackSettings(home=tmp / "home", model_start_timeout_s=180)
    return FraudModelServer(settings, service_dir=service_dir, registry_root=registry, ports=_ports())


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A registry holding fraud-lgb version 1 (LightGBM, trained by the server environment) and its predictions."""
    root = tmp_path_factory.mktemp("registry")
    expected = root.parent / f"{root.name}-expected.json"
    subprocess.run(
        [str(server_python()), str(BUILDERS), "lightgbm", str(root), "fraud-lgb", str(expected)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return root, json.loads(expected.read_text())


def test_the_stack_starts_the_model_servers_after_the_others_on_their_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    assert list(STACK) == ["kafka", "redis", "registry", "fraud-model", "product-model", "gateway"]
    fraud, product = FraudModelServer(StackSettings()), ProductModelServer(StackSettings())
    assert (fraud.ports, product.ports) == ([8090, 8091, 8092], [8095, 8096, 8097])
    assert fraud.registry_root == StackSettings().home / "model-registry"
    assert fraud.service_dir is not None
    assert fraud.service_dir.parts[-3:] == ("examples", "fraud_detection", "service")
    monkeypatch.setenv("VATIC_STACK_PRODUCT_HTTP_PORT", "18095")
    monkeypatch.setenv("VATIC_STACK_MODEL_REGISTRY", "/srv/models")
    moved = ProductModelServer(StackSettings())
    assert (moved.http_port, moved.registry_root) == (18095, Path("/srv/models"))


def test_a_service_whose_model_is_not_prepared_is_skipped_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "registry").mkdir()
    server = _component(tmp_path, _service(tmp_path), tmp_path / "registry")
    assert server.start() is False
    health = server.health()
    assert (health.name, health.state, health.pid) == ("fraud-model", "skipped", None)
    assert "\n" not in health.detail
    assert "fraud-lgb" in health.detail
    assert health.detail.endswith("run `vatic usecases prepare` to train and register it")
    assert server.server.process.pid() is None
    assert all(port_is_free("127.0.0.1", port) for port in server.ports)


def test_a_service_without_a_definition_is_skipped(tmp_path: Path) -> None:
    server = _component(tmp_path, tmp_path / "not-written-yet", tmp_path / "registry")
    assert server.start() is False
    health = server.health()
    assert health.state == "skipped"
    assert health.detail == f"skipped: no service definition at {tmp_path / 'not-written-yet' / 'service.yaml'} yet"


def test_a_prepared_service_starts_serves_and_stops(tmp_path: Path, trained: tuple[Path, dict]) -> None:
    registry, expected = trained
    server = _component(tmp_path, _service(tmp_path, parallel_workers=1), registry)
    server.process.dir.mkdir(parents=True)
    server.skip_file.write_text("skipped: an earlier run\n")
    try:
        assert server.start() is True
        assert server.start() is False  # running: left alone
        health = server.health()
        assert (health.state, health.port) == ("up", server.http_port)
        assert server.skipped() is None
        assert json.loads((server.server.serve_dir / "settings.json").read_text())["parallel_workers"] == 1
        rows = expected["rows"]
        body = {
            "inputs": [
                {
                    "name": "input-0",
                    "datatype": "FP32",
                    "shape": [len(rows), 5],
                    "data": [v for row in rows for v in row],
                }
            ]
        }
        response = httpx.post(f"{server.url}/v2/models/fraud-lgb/infer", json=body, timeout=60, trust_env=False)
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(response.json()["outputs"][0]["data"], expected["predict"], rtol=1e-6)
    finally:
        assert server.stop() is True
    assert server.health().state == "down"
    assert all(port_is_free("127.0.0.1", port) for port in server.ports)


def test_a_following_service_gets_its_rollout_controller_beside_the_server(
    tmp_path: Path, trained: tuple[Path, dict]
) -> None:
    registry, _ = trained
    folder = _service(tmp_path)
    config = yaml.safe_load((folder / "service.yaml").read_text())
    config["registry"]["refresh_s"] = 0.5  # follows the latest version
    (folder / "service.yaml").write_text(yaml.safe_dump(config))
    server = _component(tmp_path, folder, registry)
    try:
        assert server.start() is True
        assert server.controller.pid() is not None
        pointer = httpx.get(f"{server.url}/v2/models/fraud-lgb.rollout", timeout=30, trust_env=False).json()
        assert pointer["versions"] == ["1"]
        assert "rollout controller" not in server.health().detail
        pid = server.controller.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while server.controller.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "its rollout controller has exited" in server.health().detail  # `vatic stack status` says so
    finally:
        server.stop()
    assert server.controller.pid() is None  # stopped with its server


def test_a_wrong_service_config_fails_the_start_in_one_line(tmp_path: Path, trained: tuple[Path, dict]) -> None:
    registry, _ = trained
    folder = _service(tmp_path)
    config = yaml.safe_load((folder / "service.yaml").read_text())
    config["model"]["outputs"] = [{"name": "predict_proba"}]
    (folder / "service.yaml").write_text(yaml.safe_dump(config))
    server = _component(tmp_path, folder, registry)
    with pytest.raises(ConfigError) as info:
        server.start()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("fraud-model: writing its model repository failed: ")
    assert "answers predict, not ['predict_proba']" in message
    assert server.server.process.pid() is None


def test_a_taken_port_names_the_variable_that_moves_it(tmp_path: Path) -> None:
    server = _component(tmp_path, _service(tmp_path), tmp_path / "registry")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", server.grpc_port))
        squatter.listen()
        with pytest.raises(PortInUse) as info:
            server.start()
    assert "VATIC_STACK_FRAUD_GRPC_PORT" in str(info.value)
