"""``vatic stack up | down | status | fetch``: the embedded local stack of real processes."""

from __future__ import annotations

from typing import Annotated

import typer

from vatic.cli.stack.artifacts import Artifacts
from vatic.cli.stack.settings import StackSettings
from vatic.cli.stack.stack import Stack

app = typer.Typer(
    rich_markup_mode=None, help="Run the local stack (Kafka KRaft broker, Redis, schema registry) as real processes."
)

Components = Annotated[
    list[str] | None,
    typer.Argument(
        help="components to act on (default: all but the optional Flink cluster): kafka, redis, registry, "
        "fraud-model, product-model, gateway; flink (flink-jobmanager + flink-taskmanager)",
        show_default=False,
    ),
]


@app.command()
def fetch() -> None:
    """Download the pinned jars and distributions from Maven Central into the cache folder (idempotent)."""
    for line in Artifacts(StackSettings().cache).fetch_all():
        typer.echo(line)


@app.command()
def up(components: Components = None) -> None:
    """Start components and wait until each is ready. Already running ones are left as they are."""
    stack = Stack()
    components = components or None
    started = stack.up(components)
    for health in stack.status(components):
        verb = "started" if health.name in started else ("running" if health.state == "up" else health.state)
        typer.echo(f"{health.name:<16} {verb:<8} port {health.port:<6} pid {health.pid}  {health.detail}")


@app.command()
def down(components: Components = None) -> None:
    """Stop vatic's own processes (by PID file; never anything else on the ports)."""
    stopped = Stack().down(components or None)
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
def status(components: Components = None) -> None:
    """Show each component, its port and its health. Exit code 1 if any is not up."""
    all_up = True
    for health in Stack().status(components or None):
        all_up &= health.state == "up"
        pid = health.pid if health.pid is not None else "-"
        typer.echo(f"{health.name:<16} {health.state:<8} port {health.port:<6} pid {pid!s:<8} {health.detail}")
    raise typer.Exit(0 if all_up else 1)
