"""``vatic schema``: write the JSON Schema of the service config, for editors (YAML language servers)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from vatic.serving.config.model import json_schema

#: where the committed schema lives (package data; ``# yaml-language-server: $schema=...`` points at it)
SCHEMA_FILE = Path(__file__).resolve().parents[1] / "config" / "service.schema.json"


def schema_text() -> str:
    """The schema as written to the file: pretty JSON, one trailing newline (deterministic)."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def schema(
    output: Annotated[
        Path,
        typer.Option("--output", "-o", envvar="VATIC_SCHEMA_OUTPUT", help="file to write; '-' prints it"),
    ] = SCHEMA_FILE,
    check: Annotated[
        bool, typer.Option("--check", help="write nothing; exit 1 when the file is not up to date")
    ] = False,
) -> None:
    """Write the service config's JSON Schema (generated from the pydantic model) for editors."""
    text = schema_text()
    if str(output) == "-":
        sys.stdout.write(text)
        return
    current = output.read_text(encoding="utf-8") if output.is_file() else None
    if check:
        if current != text:
            typer.echo(f"{output} is not up to date: run `vatic schema`", err=True)
            raise typer.Exit(1)
        typer.echo(f"{output} is up to date")
        return
    if current == text:
        typer.echo(f"{output} unchanged")
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {output}")
