"""The pinned artifacts' presence checks (fetching itself needs Maven Central: `make setup`)."""

from __future__ import annotations

from pathlib import Path

import pyflink
import pytest

from vatic.cli.stack.artifacts import FLINK_PROMETHEUS_REPORTER_VERSION, Artifacts
from vatic.cli.stack.flink import mini_cluster_lib
from vatic.cli.stack.settings import StackSettings
from vatic.schemas.errors import MissingArtifact


def test_the_reporter_is_pinned_to_pyflinks_version() -> None:
    from pyflink.version import __version__

    assert __version__ == FLINK_PROMETHEUS_REPORTER_VERSION


def test_the_fetched_reporter_is_used_else_the_identical_one_pyflink_ships(tmp_path: Path) -> None:
    artifacts = Artifacts(tmp_path)
    shipped = Path(pyflink.__file__).parent / "plugins" / "metrics-prometheus" / artifacts.prometheus_reporter.name
    assert artifacts.require_prometheus_reporter() == shipped
    artifacts.prometheus_reporter.parent.mkdir(parents=True)
    artifacts.prometheus_reporter.write_bytes(b"jar")
    assert artifacts.require_prometheus_reporter() == artifacts.prometheus_reporter


def test_a_missing_reporter_is_one_line_naming_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vatic.cli.stack.artifacts._pyflink_plugin", lambda relative: None)
    with pytest.raises(MissingArtifact, match=r"vatic stack fetch.*--metrics-port 0") as info:
        Artifacts(tmp_path).require_prometheus_reporter()
    assert "\n" not in str(info.value)


def test_the_mini_cluster_lib_is_pyflinks_lib_plus_the_reporter(tmp_path: Path) -> None:
    settings = StackSettings(home=tmp_path / "home")
    reporter = Artifacts(tmp_path).require_prometheus_reporter()
    folder = mini_cluster_lib(settings, [reporter])
    lib = Path(pyflink.__file__).parent / "lib"
    expected = sorted([*(p.name for p in lib.glob("*.jar")), reporter.name])
    assert sorted(p.name for p in folder.iterdir()) == expected
    assert (folder / reporter.name).resolve() == reporter.resolve()
    (folder / "stale.jar").symlink_to(reporter)  # a jar an older build linked: removed on the next build
    assert sorted(p.name for p in mini_cluster_lib(settings, [reporter]).iterdir()) == expected
