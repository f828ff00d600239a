"""``vatic promote SERVICE_DIR VERSION``: point the stage the service follows at VERSION in its registry, then wait
until the model server has switched to it (or say that it refused it).

The registry is the one place a version is chosen: the command moves the stage (``registry.stages``, the first
one) and nothing else; the model server's rollout controller loads, checks and switches
(:mod:`vatic.serving.runtimes.rollout`), and the stream and REST doors follow its pointer. ``--wait`` (default)
reads that pointer until it names VERSION: exit 0; when the controller refuses the version the pointer never
moves, and after ``--timeout-s`` the command exits 1 saying where the reason is. ``vatic rollback`` moves the
stage back to the pointer's previous version.

The registry is the service's (``registry:``); a ``local`` one without ``uri`` is the local stack's
(``<VATIC_STACK_HOME>/model-registry``, or ``--registry-root``). Backends vatic does not write to (MLflow,
Comet) answer with one line saying to move the stage with their own tools.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from vatic.connectors.registry import ModelRegistry

from vatic.cli.commands.stream import Env, ServiceDir, model_url_for
from vatic.schemas.errors import ConfigError
from vatic.serving.config import ServiceConfig, load_service

RegistryRoot = Annotated[
    Path | None,
    typer.Option(
        help="a local registry folder (default: the service's, else the local stack's model registry)",
        envvar="VATIC_STACK_MODEL_REGISTRY",
        show_default=False,
    ),
]
ModelUrl = Annotated[
    str | None,
    typer.Option(
        help="the model server whose rollout to wait for (default: the local stack's server of the service)",
        envvar="VATIC_MODEL_URL",
        show_default=False,
    ),
]
Wait = Annotated[bool, typer.Option("--wait/--no-wait", help="wait until the model server has switched")]
TimeoutS = Annotated[float, typer.Option(help="how long --wait waits, in seconds")]


def open_registry_of(config: ServiceConfig, service_dir: Path, registry_root: Path | None) -> ModelRegistry:
    """The registry the service's model servers follow."""
    from vatic.cli.stack.settings import registry_root_for
    from vatic.connectors.registry import open_registry
    from vatic.connectors.registry.spec import registry_from_spec

    root = registry_root_for(config.registry, registry_root)
    if root is not None:
        return open_registry("local", root=root)
    return registry_from_spec(config.registry, service_dir=service_dir)


def following_stage(config: ServiceConfig) -> str:
    """The stage the service follows; ``ConfigError`` when it follows none."""
    if not config.registry.follows or not config.registry.stages:
        raise ConfigError(
            f"service {config.service} does not follow a registry stage: set registry.stages (e.g. [production]) "
            "and registry.refresh_s (e.g. 10) so that its model servers roll new versions out"
        )
    return config.registry.stages[0]


def pointer(url: str, model: str) -> list[str]:
    """The rollout pointer's versions (current first) on the model server at ``url``."""
    from vatic.connectors.inference import InferenceClient
    from vatic.serving.core.versions import pointer_name

    async def read() -> list[str]:
        async with InferenceClient(url, deadline_s=5) as client:
            return list((await client.metadata(pointer_name(model))).versions)

    return asyncio.run(read())


def wait_for(url: str, config: ServiceConfig, version: str, timeout_s: float) -> None:
    """Poll the pointer until it names ``version``; ``ConfigError`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    current: list[str] = []
    while time.monotonic() < deadline:
        current = pointer(url, config.model.name)
        if current and current[0] == version:
            return
        time.sleep(0.5)
    raise ConfigError(
        f"the model server at {url} still serves version {current[0] if current else '?'} after {timeout_s:.0f} s: "
        f"its rollout controller refused {version} or has not loaded it yet; its log says which "
        "(local stack: .vatic/<model server>-rollout/<model server>-rollout.log)"
    )


def move(
    service_dir: Path,
    env: str,
    version: str,
    *,
    registry_root: Path | None,
    model_url: str | None,
    wait: bool,
    timeout_s: float,
) -> None:
    """Move the followed stage to ``version``, then (``wait``) wait for the switch; prints one line per step."""
    config = load_service(service_dir, env)
    stage = following_stage(config)
    registry = open_registry_of(config, service_dir, registry_root)
    name = config.registry.model or config.model.name
    url = model_url_for(service_dir, model_url) if wait else None
    before = registry.set_stage(name, stage, version)
    typer.echo(f"{name}: stage {stage} moved from version {before or '(none)'} to {version}")
    if url is None:
        return
    started = time.monotonic()
    wait_for(url, config, version, timeout_s)
    typer.echo(
        f"{config.service}: the model server switched to version {version} in {time.monotonic() - started:.1f} s"
    )


def promote(
    service_dir: ServiceDir,
    version: Annotated[str, typer.Argument(help="the registry version to serve")],
    env: Env = "local",
    registry_root: RegistryRoot = None,
    model_url: ModelUrl = None,
    wait: Wait = True,
    timeout_s: TimeoutS = 120.0,
) -> None:
    """Point the stage the service follows at VERSION; wait until its model server has switched to it."""
    move(service_dir, env, version, registry_root=registry_root, model_url=model_url, wait=wait, timeout_s=timeout_s)
