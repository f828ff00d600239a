"""Golden files of the renderer.

* The two demo services x staging and production: the committed output under ``k8s/<service>/<env>/`` *is* their
  golden set - a fresh render must equal it byte for byte (after an intended change: ``vatic plan`` to review,
  ``vatic render`` to update, commit both).
* A test-owned service (``fixtures/scorer``: full-custom FastAPI layer, GPUs with a custom node label and extra
  tolerations, KEDA with cpu + GPU + lag triggers, no autodownload, a named Flink state claim, gateway auth)
  against ``golden/scorer/<env>/``, so that renderer changes show even when the demo configs move. Regenerate with
  ``VATIC_UPDATE_GOLDEN=1``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vatic.cli.deploy.output import Target, render_all
from vatic.examples.layout import CASES, service_dir

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "k8s"
HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden"
SCORER = HERE / "fixtures" / "scorer" / "service"
ENVS = ("staging", "production")


def _compare(rendered: dict[Path, str], root: Path) -> None:
    on_disk = {p.relative_to(root) for p in root.rglob("*") if p.is_file()}
    assert set(rendered) == on_disk, f"files differ: {sorted(set(rendered) ^ on_disk)}"
    for rel, text in sorted(rendered.items()):
        assert (root / rel).read_text(encoding="utf-8") == text, f"{root / rel} differs from a fresh render"


@pytest.mark.parametrize("environment", ENVS)
@pytest.mark.parametrize("case", CASES)
def test_the_committed_demo_manifests_are_a_fresh_render(case, environment):
    rendered = render_all([Target(service_dir(case), environment)])
    (service,) = {rel.parts[0] for rel in rendered}
    assert {rel.parts[1] for rel in rendered} == {environment}
    _compare(
        {rel.relative_to(Path(service) / environment): t for rel, t in rendered.items()}, K8S / service / environment
    )


@pytest.mark.parametrize("environment", ENVS)
def test_the_fixture_service_matches_its_golden_files(environment):
    rendered = render_all([Target(SCORER, environment)])
    if os.environ.get("VATIC_UPDATE_GOLDEN"):
        for rel, text in rendered.items():
            (GOLDEN / rel).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / rel).write_text(text, encoding="utf-8")
    _compare({rel.relative_to(Path("scorer") / environment): t for rel, t in rendered.items()},
             GOLDEN / "scorer" / environment)  # fmt: skip


def test_rendering_is_deterministic():
    targets = [Target(service_dir(case), env) for case in CASES for env in ENVS]
    assert render_all(targets) == render_all(targets)
