"""``vatic workspace up | down | status``: run a service's serving layer locally (model server, gateway, stream)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vatic.cli.deploy.workspace import Workspace, default_home, load_state
from vatic.cli.stack.settings import registry_root_for
from vatic.schemas.errors import ConfigError

app = typer.Typer(
    rich_markup_mode=None,
    help="Run one service's serving layer locally on free ports (model server, gateway with Swagger, optional "
    "stream job), for development and load tests.",
)

Home = Annotated[
    Path | None,
    typer.Option(help="state folder (default: .vatic/workspaces)", envvar="VATIC_WORKSPACE_HOME", show_default=False),
]


@app.command()
def up(
    service_dir: Annotated[Path, typer.Argument(help="service folder (service.yaml + overlays)")],
    env: Annotated[
        str, typer.Option("--env", "-e", help="environment overlay", envvar="VATIC_WORKSPACE_ENV")
    ] = "local",
    host: Annotated[str, typer.Option(help="bind address (loopback)", envvar="VATIC_WORKSPACE_HOST")] = "127.0.0.1",
    model_port: Annotated[
        int | None,
        typer.Option(help="model server HTTP port (default: a free one)", envvar="VATIC_WORKSPACE_MODEL_PORT"),
    ] = None,
    gateway_port: Annotated[
        int | None, typer.Option(help="gateway port (default: a free one)", envvar="VATIC_WORKSPACE_GATEWAY_PORT")
    ] = None,
    registry_root: Annotated[
        Path | None,
        typer.Option(
            help="serve from this local registry folder instead of the config's registry (default for a local "
            "registry without a uri: the stack's model registry, where `vatic usecases prepare` registers)",
            envvar="VATIC_WORKSPACE_REGISTRY_ROOT",
        ),
    ] = None,
    redis_url: Annotated[
        str | None, typer.Option(help="the gateway reads features from this Redis", envvar="VATIC_WORKSPACE_REDIS_URL")
    ] = None,
    stream: Annotated[bool, typer.Option("--stream/--no-stream", help="also run the stream job (needs Kafka)")] = False,
    home: Home = None,
) -> None:
    """Start the model server and the gateway (and the stream job) and print their URLs."""
    if not (service_dir / "service.yaml").is_file():
        raise ConfigError(f"{service_dir}: no service.yaml here; pass a service folder")
    workspace, config = Workspace.for_service_dir(home or default_home(), service_dir, env)
    registry_root = registry_root_for(config.registry, registry_root)
    state = workspace.up(
        service_dir, environment=env, host=host, model_port=model_port, gateway_port=gateway_port,
        registry_root=registry_root, redis_url=redis_url, stream=stream,
    )  # fmt: skip
    typer.echo(f"workspace {state.service} ({state.environment}) is up; state in {workspace.dir}")
    for name, url in state.urls().items():
        typer.echo(f"  {name:<16} {url}")
    typer.echo(f"  try: vatic predict {state.service} --data '{{...}}'   stop: vatic workspace down {state.service}")


def _name(service: str) -> str:
    folder = Path(service)
    if (folder / "service.yaml").is_file():
        from vatic.serving.config.loader import load_yaml_with_lines

        data, _ = load_yaml_with_lines(folder / "service.yaml")
        return str((data or {}).get("service", service))
    return service


@app.command()
def down(
    service: Annotated[str, typer.Argument(help="service name or service folder")],
    home: Home = None,
) -> None:
    """Stop the workspace's processes (only its own, verified by their ownership token)."""
    workspace = Workspace(home or default_home(), _name(service))
    stopped = workspace.down()
    typer.echo(
        f"workspace {workspace.service}: " + (f"stopped {', '.join(stopped)}" if stopped else "nothing was running")
    )


@app.command()
def status(home: Home = None) -> None:
    """List the workspaces and their URLs; exit code 1 when none is up."""
    root = home or default_home()
    found = False
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        state = load_state(root, folder.name)
        if state is None:
            continue
        running = Workspace(root, folder.name).running()
        found = found or bool(running)
        typer.echo(f"{state.service:<24} {('up: ' + ', '.join(running)) if running else 'down'}  {state.gateway_url}")
    raise typer.Exit(0 if found else 1)
