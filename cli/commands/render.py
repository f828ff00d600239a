"""``vatic render``: Kubernetes and Flink manifests and a Grafana dashboard into ``k8s/<service>/<env>/``.

``vatic plan`` (same arguments) shows what ``render`` would change, without writing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vatic.cli.deploy.output import Images, Target, environments, render_all, write
from vatic.cli.deploy.validate import KUBERNETES_VERSION
from vatic.schemas.errors import ConfigError

Services = Annotated[
    list[Path] | None,
    typer.Argument(
        help="service folders (service.yaml + overlays); default: the demo use cases of this checkout",
        envvar="VATIC_RENDER_SERVICES",
        show_default=False,
    ),
]
Envs = Annotated[
    list[str] | None,
    typer.Option(
        "--env",
        "-e",
        help="environment to render (repeatable): staging, production; default: every overlay file of the service",
        envvar="VATIC_RENDER_ENV",
        show_default=False,
    ),
]
Out = Annotated[Path, typer.Option("--out", "-o", help="output root (k8s/<service>/<env>/)", envvar="VATIC_RENDER_OUT")]
Validate = Annotated[
    bool, typer.Option("--validate/--no-validate", help="validate every manifest offline before writing")
]
KubernetesVersion = Annotated[
    str, typer.Option(help="Kubernetes version of the schemas to validate against", envvar="VATIC_KUBERNETES_VERSION")
]
Image = Annotated[
    str | None,
    typer.Option(
        "--image",
        help="model-server image for this render, instead of the config's `image` (e.g. the digest CI just built)",
        envvar="VATIC_RENDER_IMAGE",
        show_default=False,
    ),
]
PipelineImage = Annotated[
    str | None,
    typer.Option(
        "--pipeline-image",
        help="Flink job and gateway image for this render, instead of the config's `pipeline_image`",
        envvar="VATIC_RENDER_PIPELINE_IMAGE",
        show_default=False,
    ),
]


def default_services() -> list[Path]:
    """The demo use cases' service folders (``examples/<case>/service``)."""
    from vatic.examples.layout import CASES, service_dir

    return [service_dir(case) for case in CASES]


def targets(services: list[Path] | None, envs: list[str] | None) -> list[Target]:
    """Every (service folder, environment) pair to render; a folder without service.yaml is a one-line error."""
    found = []
    for given in services or default_services():
        folder = given.parent if given.is_file() else given
        if not (folder / "service.yaml").is_file():
            raise ConfigError(f"{folder}: no service.yaml here; pass a service folder (service.yaml + overlays)")
        wanted = envs or environments(folder)
        if not wanted:
            raise ConfigError(f"{folder}: no environment overlays (staging.yaml, production.yaml); pass --env")
        found += [Target(folder, env) for env in wanted]
    return found


def print_warning(line: str) -> None:
    """An unsafe setting of a non-production environment: one line on stderr (production refuses it)."""
    typer.echo(line, err=True)


def render(
    services: Services = None,
    env: Envs = None,
    out: Out = Path("k8s"),
    validate: Validate = True,
    kubernetes_version: KubernetesVersion = KUBERNETES_VERSION,
    image: Image = None,
    pipeline_image: PipelineImage = None,
) -> None:
    """Render and write the manifests of each service and environment (run `vatic plan` first to see the diff)."""
    rendered = render_all(
        targets(services, env),
        validate=validate,
        kubernetes_version=kubernetes_version,
        warn=print_warning,
        images=Images(image, pipeline_image),
    )
    changes = write(rendered, out)
    for change in changes:
        typer.echo(f"{change.action:<8} {out / change.path}")
    folders = sorted({str(out / p.parent) for p in rendered})
    typer.echo(f"render: {len(changes)} file(s) changed in {', '.join(folders)}")
