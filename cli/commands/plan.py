"""``vatic plan``: the difference between freshly rendered manifests and what is in ``k8s/`` (nothing written).

Exit code 0 when ``k8s/`` is up to date, 1 when ``vatic render`` would change something (CI can gate on it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from vatic.cli.commands.render import (
    Envs,
    Image,
    KubernetesVersion,
    Out,
    PipelineImage,
    Services,
    Validate,
    print_warning,
    targets,
)
from vatic.cli.deploy.output import Images, render_all
from vatic.cli.deploy.output import plan as plan_changes
from vatic.cli.deploy.validate import KUBERNETES_VERSION


def plan(
    services: Services = None,
    env: Envs = None,
    out: Out = Path("k8s"),
    validate: Validate = True,
    kubernetes_version: KubernetesVersion = KUBERNETES_VERSION,
    image: Image = None,
    pipeline_image: PipelineImage = None,
) -> None:
    """Show a unified diff of what `vatic render` would write; exit 1 when there is a difference."""
    rendered = render_all(
        targets(services, env),
        validate=validate,
        kubernetes_version=kubernetes_version,
        warn=print_warning,
        images=Images(image, pipeline_image),
    )
    diffs = plan_changes(rendered, out)
    for diff in diffs:
        sys.stdout.write(diff)
    if diffs:
        typer.echo(f"plan: {len(diffs)} file(s) differ under {out}; `vatic render` writes them", err=True)
        raise typer.Exit(1)
    typer.echo(f"plan: {out} is up to date ({len(rendered)} files)", err=True)
