"""``vatic init`` -> the generated project's own tests -> ``vatic workspace up`` -> ``vatic predict`` -> ``down``.

Real processes throughout: copier renders the template, the model is trained in the model-server environment,
the project's pytest runs there, MLServer (or uvicorn for the full-custom tier) and the gateway serve it on free
ports, and the prediction comes back through the gateway. Every tier runs at least once and every library once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from vatic.cli.deploy.workspace import Workspace, load_state
from vatic.cli.stack.mlserver import mlserver_executable
from vatic.serving.core.drift import Profile

VATIC = str(Path(sys.executable).parent / "vatic")
SERVER_BIN = mlserver_executable().parent

CASES = [
    ("no-code", "sklearn"),
    ("no-code", "xgboost"),
    ("no-code", "lightgbm"),
    ("low-code", "torch"),
    ("full-custom", "custom"),
]


def _vatic(*args: str, home: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    if home is not None:
        env["VATIC_WORKSPACE_HOME"] = str(home)
    return subprocess.run([VATIC, *args], capture_output=True, text=True, check=False, env=env, timeout=timeout)


def _predict(name: str, home: Path, **fields: float) -> float:
    done = _vatic("predict", name, "--data", json.dumps(fields), home=home)
    assert done.returncode == 0, done.stdout + done.stderr
    answer = json.loads(done.stdout)
    assert answer["service"] == name
    assert answer["model_name"] == name
    assert answer["model_version"] == "1"
    score = float(answer["outputs"]["score"])
    assert 0.0 <= score <= 1.0
    return score


@pytest.mark.parametrize(("tier", "library"), CASES)
def test_init_test_serve_predict(tmp_path, tier, library):
    name = f"{library}-{tier.split('-')[0]}"
    dest = tmp_path / name
    graph = tier != "full-custom"  # a graph's steps are MLServer models
    done = _vatic("init", str(dest), "--tier", tier, "--library", library, "--project", "trials",
                  *(["--graph"] if graph else []))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (dest / "graph" / "service.yaml").is_file() == graph
    assert (dest / "registry" / name / "1" / "metrics.json").is_file()
    # the drift monitor's reference: every model input and the served output, named after the version
    profile = Profile.read(dest / "registry" / name / "1" / "profile.json")
    assert profile.version == "1"
    assert [(c.role, c.name) for c in profile.columns] == [("input", f"f{i}") for i in range(4)] + [("output", "score")]
    assert {p.name for p in (dest / "service").iterdir()} >= {"service.yaml", "staging.yaml", "production.yaml"}

    # the generated project's own tests pass as generated
    tests = subprocess.run([str(SERVER_BIN / "pytest"), "-q", "-p", "no:cacheprovider"], cwd=dest,
                           capture_output=True, text=True, check=False, timeout=600)  # fmt: skip
    assert tests.returncode == 0, tests.stdout[-3000:]
    assert " passed" in tests.stdout
    assert " failed" not in tests.stdout

    # its configs render into valid manifests
    rendered = _vatic("render", str(dest / "service"), "--out", str(tmp_path / "k8s"))
    assert rendered.returncode == 0, rendered.stderr
    assert (tmp_path / "k8s" / name / "production" / "model-deployment.yaml").is_file()

    home = tmp_path / "workspaces"
    up = _vatic("workspace", "up", str(dest / "service"), "--home", str(home))
    try:
        assert up.returncode == 0, up.stderr
        state = load_state(home, name)
        assert state is not None
        assert state.urls()["predict"] in up.stdout
        # Swagger of the gateway and of the model server
        for url in (state.urls()["gateway docs"], state.urls()["model docs"]):
            assert httpx.get(url, timeout=10, trust_env=False).status_code == 200, url
        positive = _predict(name, home, f0=2.5, f1=-2.0, f2=0.5, f3=1.0)
        negative = _predict(name, home, f0=-2.5, f1=2.0, f2=0.5, f3=-1.0)
        assert positive > 0.5 > negative
        if tier == "no-code" and library == "sklearn":
            again = _vatic("workspace", "up", str(dest / "service"), "--home", str(home))
            assert again.returncode == 2
            assert "already up" in again.stderr
    finally:
        down = _vatic("workspace", "down", name, "--home", str(home))
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stdout
    assert Workspace(home, name).running() == []
    assert load_state(home, name) is None
    if tier == "no-code" and library == "lightgbm":
        _the_scaffolded_graph_serves(dest, name, home)


def _the_scaffolded_graph_serves(dest: Path, name: str, home: Path) -> None:
    """``vatic init --graph``'s graph/ folder: shown by `vatic graph show`, served by a workspace, answering with
    its one step's model and version."""
    shown = _vatic("graph", "show", str(dest / "graph"))
    assert shown.returncode == 0, shown.stderr
    assert f"  first: model {name}" in shown.stdout
    up = _vatic("workspace", "up", str(dest / "graph"), "--home", str(home))
    try:
        assert up.returncode == 0, up.stderr
        done = _vatic("predict", f"{name}-graph", "--data", json.dumps({"f0": 2.5, "f1": -2.0, "f2": 0.5, "f3": 1.0}),
                      home=home)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        answer = json.loads(done.stdout)
        assert [(s["name"], s["model_name"], s["model_version"]) for s in answer["steps"]] == [("first", name, "1")]
        assert answer["outputs"]["score"] > 0.5
    finally:
        down = _vatic("workspace", "down", f"{name}-graph", "--home", str(home))
    assert down.returncode == 0, down.stderr


def test_a_workspace_without_a_trained_model_fails_in_one_line_and_leaves_nothing(tmp_path):
    dest = tmp_path / "untrained"
    assert _vatic("init", str(dest), "--no-train").returncode == 0
    home = tmp_path / "workspaces"
    up = _vatic("workspace", "up", str(dest / "service"), "--home", str(home))
    assert up.returncode == 2
    lines = up.stderr.strip().splitlines()
    assert len(lines) == 1, up.stderr
    assert "the model repository could not be written" in lines[0]
    assert "python -m <package>.train" in lines[0]
    assert Workspace(home, "untrained").running() == []
    down = _vatic("workspace", "down", "untrained", "--home", str(home))
    assert "nothing was running" in down.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tier", "no-code", "--library", "torch"], "the no-code tier serves sklearn, xgboost or lightgbm"),
        (["--tier", "some-code"], "--tier 'some-code': choose one of no-code, low-code, full-custom"),
        (["--service", "Bad_Name"], "service 'Bad_Name' is not a DNS label"),
    ],
)
def test_init_refuses_bad_answers_in_one_line(tmp_path, args, message):
    done = _vatic("init", str(tmp_path / "x"), "--no-train", *args)
    assert done.returncode == 2
    assert done.stderr.strip() == f"vatic: {message}" or message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_init_takes_options_from_the_environment(tmp_path):
    env = {**os.environ, "VATIC_INIT_TIER": "low-code", "VATIC_INIT_LIBRARY": "custom", "VATIC_INIT_PROJECT": "ops"}
    done = subprocess.run([VATIC, "init", str(tmp_path / "envy"), "--no-train"], capture_output=True, text=True,
                          check=False, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "envy" / "service" / "service.yaml").read_text(encoding="utf-8")
    assert "tier: low-code" in text
    assert "library: custom" in text
    assert "project: ops" in text
    assert (tmp_path / "envy" / "envy" / "runtime.py").is_file()
    assert not (tmp_path / "envy" / "envy" / "app.py").exists()
