"""``vatic rollback SERVICE_DIR``: point the stage the service follows back at the version its model server served
before the current one (the rollout pointer's previous version, which the server keeps loaded), then wait for
the switch. The same mechanism as ``vatic promote`` (:mod:`vatic.cli.commands.promote`)."""

from __future__ import annotations

import typer

from vatic.cli.commands.promote import ModelUrl, RegistryRoot, TimeoutS, Wait, move, pointer
from vatic.cli.commands.stream import Env, ServiceDir, model_url_for
from vatic.schemas.errors import ConfigError
from vatic.serving.config import load_service


def rollback(
    service_dir: ServiceDir,
    env: Env = "local",
    registry_root: RegistryRoot = None,
    model_url: ModelUrl = None,
    wait: Wait = True,
    timeout_s: TimeoutS = 120.0,
) -> None:
    """Return the service to the version its model server served before the current one."""
    config = load_service(service_dir, env)
    url = model_url_for(service_dir, model_url)
    versions = pointer(url, config.model.name)
    if len(versions) < 2:
        raise ConfigError(
            f"the model server at {url} has served only version {versions[0] if versions else '?'} since it started: "
            "there is no previous version to return to (vatic promote SERVICE_DIR VERSION picks any)"
        )
    typer.echo(f"{config.service}: serving version {versions[0]}, returning to {versions[1]}")
    # a canary in progress ends with the rollback (move empties the canary stage)
    move(service_dir, env, versions[1], registry_root=registry_root, model_url=url, wait=wait, timeout_s=timeout_s)
