"""``vatic plan`` and ``vatic render`` through the real command: diff and exit code, writes, stale files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

VATIC = str(Path(sys.executable).parent / "vatic")
ROOT = Path(__file__).resolve().parents[3]
SCORER = Path(__file__).resolve().parent / "fixtures" / "scorer"


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VATIC, *args], capture_output=True, text=True, check=False, cwd=cwd)


def test_the_committed_k8s_folder_is_up_to_date():
    done = _run("plan", cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:]
    assert done.stdout == ""
    assert "is up to date" in done.stderr


def test_plan_shows_the_diff_and_render_writes_it(tmp_path):
    project = tmp_path / "scorer"
    shutil.copytree(SCORER, project)
    service, out = project / "service", tmp_path / "k8s"
    done = _run("plan", str(service), "--env", "staging", "--out", str(out))
    assert done.returncode == 1
    assert "+++ b/scorer/staging/model-deployment.yaml" in done.stdout
    assert not out.exists()  # plan writes nothing

    done = _run("render", str(service), "--env", "staging", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert (out / "scorer" / "staging" / "kustomization.yaml").is_file()
    assert _run("plan", str(service), "--env", "staging", "--out", str(out)).returncode == 0

    # a config change shows as a unified diff of exactly what changes
    text = (service / "staging.yaml").read_text(encoding="utf-8").replace("replicas: 2", "replicas: 5")
    (service / "staging.yaml").write_text(text, encoding="utf-8")
    stale = out / "scorer" / "staging" / "old-object.yaml"
    stale.write_text("kind: Leftover\n", encoding="utf-8")
    done = _run("plan", str(service), "--env", "staging", "--out", str(out))
    assert done.returncode == 1
    assert "-  replicas: 2\n+  replicas: 5\n" in done.stdout
    assert "--- a/scorer/staging/old-object.yaml\n+++ /dev/null" in done.stdout

    done = _run("render", str(service), "--env", "staging", "--out", str(out))
    assert "deleted  " in done.stdout
    assert "updated  " in done.stdout
    assert not stale.exists()
    assert _run("plan", str(service), "--env", "staging", "--out", str(out)).returncode == 0


def test_every_environment_by_default_and_help_and_env_vars(tmp_path):
    service = SCORER / "service"
    out = tmp_path / "k8s"
    # only the VATIC_RENDER_* variables say what to render (PYTHONPATH, when set, says which checkout runs)
    python_path = {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}
    done = subprocess.run([VATIC, "render"], capture_output=True, text=True, check=False,
                          env={"PATH": "/usr/bin:/bin", "VATIC_RENDER_SERVICES": str(service),
                               "VATIC_RENDER_OUT": str(out), **python_path})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (out / "scorer").iterdir()) == ["production", "staging"]
    for command in ("render", "plan", "init", "predict", "schema", "workspace", "workspace up", "workspace down"):
        helped = _run(*command.split(), "--help")
        assert helped.returncode == 0, command
        assert "Usage: vatic" in helped.stdout


def test_kustomization_lists_every_manifest_of_its_folder():
    import yaml

    folders = sorted(p for p in (ROOT / "k8s").glob("*/*") if (p / "kustomization.yaml").is_file())
    assert len(folders) >= 4
    for folder in folders:
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8"))
        listed = set(kustomization["resources"])
        present = {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml"}
        assert listed == present, folder
        assert kustomization["configMapGenerator"][0]["files"] == ["grafana-dashboard.json"]
        assert (folder / "grafana-dashboard.json").is_file()
