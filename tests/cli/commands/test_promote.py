"""``vatic promote`` and ``vatic rollback`` as an operator runs them: the registry stage moves, the real model
server's rollout controller (its own process) switches, and the command waits for it; a version the server
refuses is reported, not waited for forever."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fixtures.model_server import model_server, server_python
from tests.fixtures.rollout import MODEL, follow, register, stage
from vatic.cli.stack.mlserver import ModelServer
from vatic.serving.config import load_service
from vatic.serving.runtimes.repository import write_repository
from vatic.serving.runtimes.rollout import controller_argv

VATIC = str(Path(sys.executable).parent / "vatic")


def _service(folder: Path, *, refresh_s: float, canary: bool = False) -> Path:
    folder.mkdir(parents=True)
    config = {
        "project": "test",
        "service": "echo-roll",
        "model": {
            "name": MODEL,
            "inputs": [
                {"name": "tag", "datatype": "BYTES", "columns": ["merchant_category"], "squeeze": True},
                {"name": "x", "datatype": "FP64", "columns": ["amount"]},
            ],
            "outputs": [{"name": "tag"}, {"name": "x"}],
        },
    }
    if refresh_s:
        follow(config, refresh_s)
    if canary:
        config["canary"] = {"key": ["merchant_category"], "weight": 0.5}
    (folder / "service.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return folder


@pytest.fixture(params=[False], ids=["no-canary"])
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Path, Path, ModelServer]]:
    root = tmp_path / "registry"
    for version in ("1", "2"):
        register(root, version)
    register(root, "3", fail_load="broken on purpose")
    stage(root, "1")
    folder = _service(tmp_path / "service", refresh_s=0.5, canary=request.param)
    repository = tmp_path / "models"
    write_repository(load_service(folder), repository, service_dir=folder, registry_root=root)
    server = model_server(tmp_path / "home", repository, name="promote-mlserver", parallel_workers=0)
    server.start()
    controller = subprocess.Popen(
        [*controller_argv(server_python(), folder, repository, server.url, registry_root=root), "--grace-s", "0"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "rollout.log").open("ab"),
    )  # fmt: skip
    try:
        yield folder, root, server
    finally:
        controller.terminate()
        controller.wait(timeout=30)
        server.stop()


def _vatic(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VATIC, *args], capture_output=True, text=True, timeout=120, check=False)


def test_promote_waits_for_the_switch_and_rollback_returns_to_the_previous_version(served) -> None:
    folder, root, server = served
    where = ["--registry-root", str(root), "--model-url", server.url]

    done = _vatic("promote", str(folder), "2", *where)
    assert done.returncode == 0, done.stderr
    assert f"{MODEL}: stage production moved from version 1 to 2" in done.stdout
    assert "the model server switched to version 2" in done.stdout
    assert "no entity key to split by" in done.stdout  # this service's events name no entity: no canary

    done = _vatic("rollback", str(folder), *where)
    assert done.returncode == 0, done.stderr
    assert "serving version 2, returning to 1" in done.stdout
    assert "switched to version 1" in done.stdout

    done = _vatic("promote", str(folder), "3", *where, "--timeout-s", "8")
    assert done.returncode == 2
    assert "still serves version 1 after 8 s" in done.stderr
    assert (root / MODEL / "stages.json").read_text().count('"3"') == 1  # the stage did move: the server refused

    done = _vatic("promote", str(folder), "9", *where)
    assert done.returncode == 2
    assert "has no version '9'" in done.stderr


def test_a_service_that_follows_no_stage_is_told_how(tmp_path: Path) -> None:
    folder = _service(tmp_path / "service", refresh_s=0)
    done = _vatic("promote", str(folder), "2", "--registry-root", str(tmp_path))
    assert done.returncode == 2
    assert "set registry.stages" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("served", [True], ids=["canary"], indirect=True)
def test_promote_goes_through_a_canary_and_a_refused_canary_promotes_nothing(served) -> None:
    folder, root, server = served
    where = ["--registry-root", str(root), "--model-url", server.url]

    done = _vatic("promote", str(folder), "2", *where, "--canary-s", "1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"{MODEL}: stage canary moved from version (none) to 2"
    assert "canary 2 answers 50% of the entities" in lines[1]
    assert lines[2] == f"{MODEL}: stage production moved from version 1 to 2"
    assert lines[3] == f"{MODEL}: stage canary emptied"
    assert "the model server switched to version 2" in lines[4]

    done = _vatic("promote", str(folder), "2", *where, "--canary-s", "1")  # the current version: nothing to try
    assert done.returncode == 0, done.stderr
    assert "version 2 already answers every entity: no canary" in done.stdout
    assert "the model server switched to version 2" in done.stdout

    done = _vatic("promote", str(folder), "3", *where, "--timeout-s", "6")
    assert done.returncode == 2
    assert "(canary: none) after 6 s" in done.stderr
    assert "stage canary emptied (the canary never started)" in done.stdout
    assert json.loads((root / MODEL / "stages.json").read_text()) == {"production": "2"}  # never reached step 2
