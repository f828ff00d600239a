"""``vatic promote SERVICE_DIR VERSION``: canary first, then every entity: point the registry's canary stage at
VERSION, hold while it answers its share of the entities, then point the stage the service follows at it and
wait until the model server has switched (or say that it refused it).

The registry is the one place a version is chosen: the command moves stages (``registry.canary_stage``, then
``registry.stages[0]``) and nothing else; the model server's rollout controller loads, checks and switches
(:mod:`vatic.serving.runtimes.rollout`), and the stream and REST doors follow its pointer. Steps:

1. ``--canary`` (default, for a service whose events have an entity key): the canary stage names VERSION; the
   command waits until the pointer names it as the canary (the controller loaded and checked it), then holds
   ``--canary-s`` seconds while it answers ``canary.weight`` of the entities (default 10%) on both doors;
2. the followed stage names VERSION and the canary stage is emptied; ``--wait`` (default) reads the pointer until
   it names VERSION as current: exit 0.

When the controller refuses the version the pointer never names it, and after ``--timeout-s`` the command exits 1
saying where the reason is (a refused canary never reaches step 2). ``vatic rollback`` moves the stage back to
the pointer's previous version and ends a canary.

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
Canary = Annotated[
    bool,
    typer.Option("--canary/--no-canary", help="serve the version to a share of the entities first (needs --wait)"),
]
CanaryS = Annotated[float, typer.Option(min=0, help="how long the canary answers its share before everyone")]
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


def pointer_state(url: str, model: str) -> tuple[list[str], tuple[str, float] | None]:
    """The rollout pointer on the model server at ``url``: its versions (current first) and its canary."""
    from vatic.connectors.inference import InferenceClient
    from vatic.serving.core.versions import pointer_canary, pointer_name

    async def read() -> tuple[list[str], tuple[str, float] | None]:
        async with InferenceClient(url, deadline_s=5) as client:
            metadata = await client.metadata(pointer_name(model))
            return list(metadata.versions), pointer_canary(metadata.parameters)

    return asyncio.run(read())


def pointer(url: str, model: str) -> list[str]:
    """The rollout pointer's versions (current first) on the model server at ``url``."""
    return pointer_state(url, model)[0]


_WHY = (
    "its rollout controller refused {version} or has not loaded it yet; its log says which "
    "(local stack: .vatic/<model server>-rollout/<model server>-rollout.log)"
)


def wait_for(
    url: str, config: ServiceConfig, version: str, timeout_s: float, *, canary: bool = False
) -> tuple[str, float] | None:
    """Poll the pointer until it names ``version`` (as current, or with ``canary`` as the canary); returns the
    canary it names then. ``ConfigError`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    current: list[str] = []
    named: tuple[str, float] | None = None
    while time.monotonic() < deadline:
        current, named = pointer_state(url, config.model.name)
        if canary and named is not None and named[0] == version:
            return named
        if not canary and current and current[0] == version:
            return named
        time.sleep(0.5)
    serving = f"still serves version {current[0] if current else '?'}"
    if canary:
        serving += f" (canary: {named[0] if named else 'none'})"
    raise ConfigError(f"the model server at {url} {serving} after {timeout_s:.0f} s: " + _WHY.format(version=version))


def move(
    service_dir: Path,
    env: str,
    version: str,
    *,
    registry_root: Path | None,
    model_url: str | None,
    wait: bool,
    timeout_s: float,
    canary_s: float | None = None,
) -> None:
    """Move the followed stage to ``version``, then (``wait``) wait for the switch; prints one line per step. With
    ``canary_s`` (and ``wait``), the canary stage first (module docstring)."""
    config = load_service(service_dir, env)
    stage = following_stage(config)
    registry = open_registry_of(config, service_dir, registry_root)
    name = config.registry.model or config.model.name
    url = model_url_for(service_dir, model_url) if wait else None
    if canary_s is not None and url is not None:
        _canary(config, registry, name, url, version, canary_s, timeout_s)
    before = registry.set_stage(name, stage, version)
    typer.echo(f"{name}: stage {stage} moved from version {before or '(none)'} to {version}")
    if registry.clear_stage(name, config.registry.canary_stage) is not None:
        typer.echo(f"{name}: stage {config.registry.canary_stage} emptied")
    if url is None:
        return
    started = time.monotonic()
    wait_for(url, config, version, timeout_s)
    typer.echo(
        f"{config.service}: the model server switched to version {version} in {time.monotonic() - started:.1f} s"
    )


def _canary(
    config: ServiceConfig, registry: ModelRegistry, name: str, url: str, version: str, hold_s: float,
    timeout_s: float,
) -> None:  # fmt: skip
    """Step 1 of the module docstring."""
    stage = config.registry.canary_stage
    before = registry.set_stage(name, stage, version)
    typer.echo(f"{name}: stage {stage} moved from version {before or '(none)'} to {version}")
    started = time.monotonic()
    try:
        named = wait_for(url, config, version, timeout_s, canary=True)
    except ConfigError:
        registry.clear_stage(name, stage)
        typer.echo(f"{name}: stage {stage} emptied (the canary never started)")
        raise
    share = f"{named[1]:.0%}" if named else "its share"
    typer.echo(
        f"{config.service}: canary {version} answers {share} of the entities (after {time.monotonic() - started:.1f} "
        f"s); holding {hold_s:g} s"
    )
    deadline = time.monotonic() + hold_s
    while time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        _, named = pointer_state(url, config.model.name)
        if named is None or named[0] != version:
            raise ConfigError(
                f"the canary {version} stopped while held (the pointer names {named[0] if named else 'none'}): "
                f"someone moved the stage {stage}; nothing was promoted"
            )


def promote(
    service_dir: ServiceDir,
    version: Annotated[str, typer.Argument(help="the registry version to serve")],
    env: Env = "local",
    registry_root: RegistryRoot = None,
    model_url: ModelUrl = None,
    wait: Wait = True,
    timeout_s: TimeoutS = 120.0,
    canary: Canary = True,
    canary_s: CanaryS = 30.0,
) -> None:
    """Serve VERSION to a canary share of the entities, then to all: move the registry stages the service follows
    and wait until its model server has switched."""
    config = load_service(service_dir, env)
    use_canary = canary and wait
    if use_canary and not _entity_keyed(config):
        typer.echo(f"{config.service}: no entity key to split by (features or canary.key): promoting without a canary")
        use_canary = False
    if use_canary and pointer(model_url_for(service_dir, model_url), config.model.name)[:1] == [version]:
        typer.echo(f"{config.service}: version {version} already answers every entity: no canary")
        use_canary = False
    move(
        service_dir, env, version, registry_root=registry_root, model_url=model_url, wait=wait, timeout_s=timeout_s,
        canary_s=canary_s if use_canary else None,
    )  # fmt: skip


def _entity_keyed(config: ServiceConfig) -> bool:
    from vatic.serving.core.experiments import CanaryRouter

    return CanaryRouter.for_config(config) is not None
