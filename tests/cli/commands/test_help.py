"""Every command's ``--help`` shows every option's whole name, even in a narrow terminal (no "--schema-re…")."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from vatic.cli.main import app


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command of the tree (typer vendors its own click: groups are known by their ``commands``)."""
    yield path, command
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) or "vatic" for p, _ in COMMANDS])
def test_help_names_every_option_whole_at_60_columns(path: tuple[str, ...], command: Any) -> None:
    done = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "60", "TERMINAL_WIDTH": "60"})
    assert done.exit_code == 0, done.output
    for param in command.params:
        for name in [*param.opts, *param.secondary_opts]:
            if name.startswith("--"):
                assert name in done.output, f"{' '.join(path)}: {name} is not shown whole"
