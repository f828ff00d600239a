"""``vatic usecases``: the demo use cases' data, Feast features and models (Typer sub-app, pipeline environment).

Mount it with ``app.add_typer(vatic.cli.commands.usecases.app, name="usecases")``; then::

    vatic usecases prepare                  # both use cases, idempotent
    vatic usecases prepare --case fraud_detection --force
    vatic usecases prepare --redis          # also materialize into the local stack's Redis
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vatic.cli.stack.settings import StackSettings
from vatic.examples.layout import CASES, Case

app = typer.Typer(
    rich_markup_mode=None,
    name="usecases",
    help="The demo use cases (fraud detection, product categorization): data, Feast features, trained models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def usecases() -> None:
    """The demo use cases (fraud detection, product categorization): data, Feast features, trained models."""


@app.command()
def prepare(
    case: Annotated[
        list[str] | None, typer.Option("--case", help=f"use case to prepare (repeatable): {', '.join(CASES)}")
    ] = None,
    force: Annotated[bool, typer.Option(help="re-run every step even when up to date")] = False,
    redis: Annotated[
        bool, typer.Option("--redis", help="also materialize into the local stack's Redis (VATIC_STACK_REDIS_PORT)")
    ] = False,
    redis_url: Annotated[
        str | None,
        typer.Option(help="also materialize into this Redis (redis://host:port/db); default $VATIC_FEAST_REDIS_URL"),
    ] = None,
    home: Annotated[Path | None, typer.Option(help="state folder (default: $VATIC_STACK_HOME or .vatic)")] = None,
    registry: Annotated[Path | None, typer.Option(help="model registry root (default: <home>/registry)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON at the end")] = False,
) -> None:
    """Generate data, apply + materialize the Feast repos, train the models; skip what is up to date."""
    from vatic.examples.prepare import PrepareError
    from vatic.examples.prepare import prepare as run_prepare

    chosen = case or list(CASES)
    unknown = [name for name in chosen if name not in CASES]
    if unknown:
        raise typer.BadParameter(f"unknown use case(s) {unknown}; known: {', '.join(CASES)}", param_hint="--case")
    cases: list[Case] = [name for name in CASES if name in chosen]
    url = redis_url or (StackSettings().redis_url if redis else None)
    try:
        report = run_prepare(cases, home=home, registry=registry, redis_url=url, force=force, log=typer.echo)
    except PrepareError as exc:
        typer.echo(f"prepare: {exc}", err=True)
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2, default=str))
