"""``vatic init``: scaffold a serving layer (service configs, model code, tests) from the copier template.

Tiers: ``no-code`` (MLServer's sklearn / xgboost / lightgbm runtime, config only), ``low-code`` (a
``VaticModel`` runtime class), ``full-custom`` (a FastAPI V2 app of your own). Libraries: sklearn, xgboost,
lightgbm, torch, custom (NumPy). The project holds ``service/`` (service.yaml + staging + production, the
config's JSON Schema and ``smoke.json``, the event the deploy workflow predicts once after a roll-out),
``<package>/model.py`` (the model to replace: training, safe-format saving, loading, scoring),
``<package>/train.py`` (registers a version under ``registry/``), tests that pass as generated, and the deploy
files of ``vatic workflow``: ``Dockerfile`` (the model-server image) and ``.github/workflows/deploy-<service>.yml``.
With ``--train`` (default) the model is trained once in the model-server environment, so that
``vatic workspace up <dest>/service`` serves real predictions right away.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Annotated

import typer

from vatic.cli.commands.workflow import write_deploy_files
from vatic.cli.templates import LIBRARIES, TIERS, project_template
from vatic.schemas.errors import ConfigError

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def check_answers(service: str, project: str, tier: str, library: str) -> None:
    """One-line ``ConfigError`` for answers the service config would refuse."""
    if tier not in TIERS:
        raise ConfigError(f"--tier {tier!r}: choose one of {', '.join(TIERS)}")
    if library not in LIBRARIES:
        raise ConfigError(f"--library {library!r}: choose one of {', '.join(LIBRARIES)}")
    for label, value in (("service", service), ("project", project)):
        if not DNS_LABEL.match(value) or len(value) > 40:
            raise ConfigError(
                f"{label} {value!r} is not a DNS label: use lower-case letters, digits and '-', at most 40 characters"
            )
    if tier == "no-code" and library not in ("sklearn", "xgboost", "lightgbm"):
        raise ConfigError(
            f"the no-code tier serves sklearn, xgboost or lightgbm models, not {library}: use --tier low-code"
        )


def scaffold(
    dest: Path,
    *,
    service: str,
    project: str,
    tier: str,
    library: str,
    description: str | None = None,
    graph: bool = False,
) -> Path:
    """Render the template into ``dest`` (which must not exist or be empty); returns the service folder."""
    import copier

    from vatic.cli.commands.schema import schema_text

    check_answers(service, project, tier, library)
    if dest.exists() and any(dest.iterdir()):
        raise ConfigError(f"{dest} exists and is not empty: choose a new folder")
    if graph and tier == "full-custom":
        raise ConfigError("--graph: a graph's steps are MLServer models: use --tier no-code or low-code")
    data: dict[str, object] = {"service": service, "project": project, "tier": tier, "library": library, "graph": graph}
    if description:
        data["description"] = description
    copier.run_copy(str(project_template()), str(dest), data=data, defaults=True, quiet=True, overwrite=True)
    (dest / "service" / "service.schema.json").write_text(schema_text(), encoding="utf-8")
    write_deploy_files(dest / "service", root=dest)
    return dest / "service"


def server_python() -> Path | None:
    """The model-server environment's interpreter, when there is one."""
    try:
        from vatic.cli.stack.mlserver import mlserver_executable

        return mlserver_executable().parent / "python"
    except ConfigError:
        return None


def init(
    dest: Annotated[Path, typer.Argument(help="folder to create (the project)")],
    service: Annotated[
        str | None, typer.Option(help="service name, a DNS label (default: the folder's name)", show_default=False)
    ] = None,
    project: Annotated[str, typer.Option(help="project: the namespace prefix", envvar="VATIC_INIT_PROJECT")] = "demo",
    tier: Annotated[str, typer.Option(help="no-code | low-code | full-custom", envvar="VATIC_INIT_TIER")] = "no-code",
    library: Annotated[
        str, typer.Option(help="sklearn | xgboost | lightgbm | torch | custom", envvar="VATIC_INIT_LIBRARY")
    ] = "sklearn",
    description: Annotated[str | None, typer.Option(help="one line about the service", show_default=False)] = None,
    train: Annotated[
        bool, typer.Option("--train/--no-train", help="train and register version 1 (model-server environment)")
    ] = True,
    graph: Annotated[
        bool, typer.Option("--graph", help="also scaffold graph/: the model as the first step of an inference graph")
    ] = False,
) -> None:
    """Scaffold a serving layer: service configs, a model to replace, tests; then train it once."""
    name = service or dest.resolve().name.replace("_", "-").lower()
    service_dir = scaffold(
        dest, service=name, project=project, tier=tier, library=library, description=description, graph=graph
    )
    package = name.replace("-", "_")
    typer.echo(f"created {dest} ({tier}, {library}): service {name}, package {package}")
    python = server_python()
    train_cmd = [str(python) if python else "python", "-m", f"{package}.train"]
    if train and python is not None:
        done = subprocess.run(train_cmd, cwd=dest, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            tail = " | ".join(line for line in done.stderr.strip().splitlines()[-3:] if line.strip())
            raise ConfigError(f"training failed (run `{' '.join(train_cmd)}` in {dest}): {tail}")
        typer.echo(f"trained and registered: {done.stdout.strip().splitlines()[-1]}")
    elif train:
        typer.echo("no model-server environment found: train with `python -m <package>.train` where MLServer runs")
    typer.echo("next:")
    typer.echo(f"  cd {dest} && {train_cmd[0].replace('python', 'pytest')}        # the project's tests")
    typer.echo(f"  vatic workspace up {service_dir}                   # serve it locally (prints the URLs)")
    typer.echo(f"  vatic plan {service_dir}                           # Kubernetes manifests (then vatic render)")
    typer.echo(
        f"  {dest}/.github/workflows/deploy-{name}.yml: CI that tests, builds the image, deploys staging, production"
    )
