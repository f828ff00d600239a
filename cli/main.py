"""``vatic``: the command line of the platform. Each command group lives in a module of its own."""

from __future__ import annotations

import sys

import typer

from vatic.cli.commands import (
    compare,
    demo,
    dlq,
    gateway,
    graph,
    init,
    monitor,
    plan,
    predict,
    promote,
    render,
    retrain,
    rollback,
    schema,
    stack,
    stream,
    usecases,
    workflow,
    workspace,
)
from vatic.cli.stack.settings import export_home
from vatic.schemas.errors import VaticError

app = typer.Typer(
    rich_markup_mode=None,
    name="vatic",
    help="Real-time ML predictions: one service definition, served from Kafka and REST.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(stack.app, name="stack")
app.add_typer(stream.app, name="stream")
app.add_typer(usecases.app, name="usecases")
app.command(name="demo")(demo.demo)
app.command(name="gateway")(gateway.gateway)
app.command(name="init")(init.init)
app.add_typer(workspace.app, name="workspace")
app.command(name="render")(render.render)
app.command(name="plan")(plan.plan)
app.command(name="workflow")(workflow.workflow)
app.command(name="predict")(predict.predict)
app.add_typer(schema.app, name="schema")
app.add_typer(dlq.app, name="dlq")
app.add_typer(monitor.app, name="monitor")
app.add_typer(graph.app, name="graph")
app.command(name="compare")(compare.compare)
app.command(name="promote")(promote.promote)
app.command(name="rollback")(rollback.rollback)
app.command(name="retrain")(retrain.retrain_command)


def main() -> None:
    """Console entry point: vatic errors become one line on stderr and exit code 2, never a traceback."""
    export_home()
    try:
        app()
    except VaticError as exc:
        print(f"vatic: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
