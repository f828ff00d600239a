"""The REST door follows a model server's rollout without an error: real gateway, real MLServer, the rollout
controller stepped by the test against a local registry stage while clients keep calling.

Every answer is a 200 naming the version that answered; once the pointer has moved (and the gateway's follower
has read it, within a second), answers name the new version; a version that cannot load is refused and the
answers stay on the current one; a rollback returns to the previous version, which was kept loaded.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.fixtures import feast_repo
from tests.fixtures.model_server import model_server
from tests.fixtures.rollout import follow, register, stage
from tests.serving.gateway.test_gateway import AUTH, Gateway, echo_service, transaction
from vatic.cli.stack.mlserver import ModelServer
from vatic.serving.config import load_service
from vatic.serving.runtimes.repository import write_repository
from vatic.serving.runtimes.rollout import Rollout


class Callers:
    """``n`` threads calling the gateway back to back; every answer's status and model version is kept."""

    def __init__(self, url: str, n: int = 4) -> None:
        self.url = url
        self.answers: list[tuple[float, int, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._call, daemon=True) for _ in range(n)]
        for thread in self._threads:
            thread.start()

    def _call(self) -> None:
        with httpx.Client(headers=AUTH, timeout=30) as client:
            while not self._stop.is_set():
                response = client.post(f"{self.url}/v1/services/echo/predict", json=transaction(3))
                version = response.json().get("model_version", "") if response.status_code == 200 else response.text
                self.answers.append((time.monotonic(), response.status_code, version))

    def since(self, moment: float) -> set[str]:
        return {version for at, _, version in list(self.answers) if at > moment}

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


@pytest.fixture
def following(tmp_path: Path) -> Iterator[tuple[Rollout, ModelServer, Gateway, Path]]:
    root = tmp_path / "registry"
    register(root, "1")
    stage(root, "1")
    folder = echo_service(tmp_path / "echo", feast_repo.build_repo(tmp_path / "feast"), name="echo")
    config = follow(yaml.safe_load((folder / "service.yaml").read_text()), refresh_s=1)
    (folder / "service.yaml").write_text(yaml.safe_dump(config))
    service = load_service(folder)
    repository = tmp_path / "models"
    write_repository(service, repository, service_dir=folder, registry_root=root)
    server = model_server(tmp_path / "home", repository, name="rollout-gateway-mlserver", parallel_workers=0)
    server.start()
    gateway = Gateway(["--service", str(folder), "--endpoint", f"echo={server.url}"], tmp_path / "gateway.log")
    try:
        yield Rollout(service, repository, server.url, registry_root=root, grace_s=0), server, gateway, root
    finally:
        gateway.stop()
        server.stop()


def _settle(callers: Callers, version: str, timeout_s: float = 15.0) -> float:
    """Wait until answers name ``version`` only; returns when that began."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        moment = time.monotonic()
        time.sleep(1.5)
        if callers.since(moment) == {version}:
            return moment
    raise AssertionError(f"answers did not settle on version {version}: {callers.since(time.monotonic() - 3)}")


def test_rest_answers_follow_the_rollout_without_an_error(following):
    rollout, _server, gateway, root = following
    callers = Callers(gateway.url)
    try:
        _settle(callers, "1")
        register(root, "2")
        stage(root, "2")
        assert asyncio.run(rollout.step()).action == "switched"
        _settle(callers, "2")

        register(root, "3", fail_load="broken on purpose")
        stage(root, "3")
        refused_at = time.monotonic()
        assert asyncio.run(rollout.step()).action == "refused"
        time.sleep(2)
        assert callers.since(refused_at) == {"2"}

        stage(root, "1")  # the rollback: version 1 is still loaded
        assert asyncio.run(rollout.step()).action == "switched"
        _settle(callers, "1")
    finally:
        callers.stop()
    statuses = {status for _, status, _ in callers.answers}
    assert statuses == {200}, [a for a in callers.answers if a[1] != 200][:3]
    assert {version for *_, version in callers.answers} == {"1", "2"}
    assert len(callers.answers) > 100
