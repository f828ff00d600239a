"""Packaging and layering: the four folders are the `vatic` namespace, and the layers import downwards only."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("connectors", "schemas", "serving", "streaming")


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
    import vatic.connectors
    import vatic.schemas
    import vatic.serving
    import vatic.streaming

    for module, folder in [
        (vatic.connectors, "connectors"),
        (vatic.schemas, "schemas"),
        (vatic.serving, "serving"),
        (vatic.streaming, "streaming"),
    ]:
        assert Path(module.__file__).parent == ROOT / folder


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _violations(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in _imports(path):
            if name.startswith(forbidden):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    return bad


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        # schemas/ is the bottom layer: nothing else of vatic
        ("schemas", ("vatic.connectors", "vatic.serving", "vatic.streaming")),
        # a client knows nothing of the pipeline
        ("connectors", ("vatic.serving", "vatic.streaming")),
    ],
)
def test_layers_import_downwards_only(folder, forbidden):
    assert _violations(folder, forbidden) == []


def test_the_core_imports_no_transport():
    """The core is shared by the Flink job and the gateway: neither door's framework may leak into it."""
    assert _violations("serving/core", ("pyflink", "fastapi", "starlette", "confluent_kafka", "mlserver")) == []
