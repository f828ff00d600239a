"""Packaging: the six folders are the `vatic` namespace. (The layers are import-linter contracts in pyproject.toml,
checked by `make lint`; tests/test_layers.py checks that the contracts run and can fail.)"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("cli", "connectors", "examples", "schemas", "serving", "streaming")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _package_dirs() -> list[str]:
    found = []
    for folder in FOLDERS:
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT)
            found.append("vatic." + ".".join(rel.parts))
    return sorted(found)


def test_every_package_folder_is_listed_for_the_wheel():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    assert set(_package_dirs()) <= listed
    mapping = _pyproject()["tool"]["setuptools"]["package-dir"]
    assert mapping == {f"vatic.{f}": f for f in FOLDERS}


def test_the_namespace_resolves_to_the_folders():
    import importlib

    for folder in FOLDERS:
        module = importlib.import_module(f"vatic.{folder}")
        assert Path(module.__file__).parent == ROOT / folder
