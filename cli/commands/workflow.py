"""``vatic workflow``: a service's model-server image definition and its deploy workflow (GitHub Actions).

``vatic workflow SERVICE_DIR`` writes ``<project>/Dockerfile`` and ``.github/workflows/deploy-<service>.yml``
under the repository root, or under ``--out`` at the same relative paths (:mod:`vatic.cli.deploy.workflow` says
what they hold); ``--check`` writes nothing and
exits 1 when a file would change (CI gates on it, as on ``vatic plan``). ``vatic init`` runs it for every new
project.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vatic.cli.deploy.workflow import deploy_files


def write_deploy_files(
    service_dir: Path, root: Path | None = None, *, out: Path | None = None, check: bool = False
) -> list[Path]:
    """Write (or with ``check`` only compare) the deploy files under ``out`` (default: the repository root);
    returns the paths that changed or would."""
    files = deploy_files(service_dir, root=root)
    base = out if out is not None else files.root
    changed: list[Path] = []
    for rel, text in files.files.items():
        path = base / rel
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        changed.append(path)
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    return changed


def workflow(
    service_dir: Annotated[Path, typer.Argument(help="the service folder (service.yaml + environment overlays)")],
    root: Annotated[
        Path | None,
        typer.Option(help="repository root (default: the closest folder above holding .git)", show_default=False),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="write under this folder instead of the repository root (same relative paths)"
        ),
    ] = None,
    check: Annotated[bool, typer.Option("--check", help="write nothing; exit 1 when a file would change")] = False,
) -> None:
    """Write the service's Dockerfile and its deploy workflow: test, image, then each environment in order."""
    changed = write_deploy_files(service_dir, root, out=out, check=check)
    for path in changed:
        typer.echo(f"{'differs' if check else 'wrote'}  {path}")
    if check and changed:
        typer.echo(f"workflow: {len(changed)} file(s) differ; `vatic workflow {service_dir}` writes them", err=True)
        raise typer.Exit(1)
    if not changed:
        typer.echo("workflow: up to date", err=True)
