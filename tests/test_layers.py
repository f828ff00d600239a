"""The layer contracts (``[tool.importlinter]`` in pyproject.toml) hold on the tree, and they catch a violation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cli", "connectors", "examples", "schemas", "serving", "streaming")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=tree, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def _tree(tmp_path: Path, copied: str | None = None) -> Path:
    """A ``vatic`` namespace of links to the six folders (one of them copied, to be changed)."""
    vatic = tmp_path / "tree" / "vatic"
    vatic.mkdir(parents=True)
    for package in PACKAGES:
        if package == copied:
            shutil.copytree(ROOT / package, vatic / package, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (vatic / package).symlink_to(ROOT / package)
    return vatic.parent


def test_the_tree_keeps_every_contract(tmp_path):
    result = _lint(_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_job_importing_the_local_stack_is_refused(tmp_path):
    tree = _tree(tmp_path, copied="streaming")
    (tree / "vatic" / "streaming" / "shortcut.py").write_text("from vatic.cli.stack.settings import StackSettings\n")
    result = _lint(tree)
    assert result.returncode != 0
    assert "vatic.streaming.shortcut -> vatic.cli.stack.settings" in result.stdout


def test_the_gateway_importing_the_job_is_refused(tmp_path):
    tree = _tree(tmp_path, copied="serving")
    (tree / "vatic" / "serving" / "gateway" / "shortcut.py").write_text("import vatic.streaming.batch\n")
    result = _lint(tree)
    assert result.returncode != 0
    assert "vatic.serving.gateway.shortcut -> vatic.streaming.batch" in result.stdout
