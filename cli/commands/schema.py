"""``vatic schema``: the service config's JSON Schema for editors, and the Avro schemas in the schema registry.

* ``vatic schema [--check] [-o FILE]`` writes the JSON Schema of the service config (YAML language servers).
* ``vatic schema register TARGET`` registers Avro schemas: TARGET is a service folder (its input, prediction and
  dead-letter schemas under its topics' subjects) or an ``.avsc`` file with ``--subject``. Each subject's
  compatibility level is set first (BACKWARD_TRANSITIVE unless ``--compatibility`` says otherwise; ``keep``
  leaves it as it is).
* ``vatic schema check TARGET`` asks the registry whether registering would be accepted, without registering:
  exit 0 when every schema is compatible, 1 with the problems (a producer's CI runs it before a change ships).

Both talk to the one source of schema ids of this machine (:func:`registry_url`): ``--schema-registry-url``,
else ``VATIC_SCHEMA_REGISTRY_URL``, else the local stack's registry when it runs, else the embedded store.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from vatic.cli.stack.settings import StackSettings
from vatic.cli.stack.stack import running_registry_url
from vatic.connectors.schema_registry import REGISTRY_URL_ENV, schema_source
from vatic.schemas import SchemaSource, load_schema, topic_subject
from vatic.schemas.compat import CompatibilityLevel
from vatic.schemas.errors import ConfigError
from vatic.serving.config import load_service
from vatic.serving.config.model import json_schema

#: where the committed schema lives (package data; ``# yaml-language-server: $schema=...`` points at it)
SCHEMA_FILE = Path(__file__).resolve().parents[2] / "serving" / "config" / "service.schema.json"

app = typer.Typer(
    rich_markup_mode=None,
    help="The service config's JSON Schema (no subcommand), and Avro schemas in the schema registry.",
    invoke_without_command=True,
)

RegistryUrl = Annotated[
    str | None,
    typer.Option(
        "--schema-registry-url",
        envvar=REGISTRY_URL_ENV,
        help="Confluent-compatible registry (default: the local stack's when it runs, else the embedded store)",
    ),
]


def registry_url(explicit: str | None) -> str | None:
    """The schema registry every vatic process on this machine uses: ``explicit`` (a flag or
    ``VATIC_SCHEMA_REGISTRY_URL``), else the local stack's registry when it runs, else None (the embedded
    store)."""
    return explicit or os.environ.get(REGISTRY_URL_ENV) or running_registry_url(StackSettings())


def open_source(explicit: str | None) -> tuple[SchemaSource, str]:
    """The schema source :func:`registry_url` picks, and one line saying which it is."""
    url = registry_url(explicit)
    store = StackSettings().home / "schemas"
    where = f"schema registry {url}" if url else f"embedded schema store {store} (no registry runs)"
    return schema_source(url, store), where


def schema_text() -> str:
    """The schema as written to the file: pretty JSON, one trailing newline (deterministic)."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


@app.callback()
def config_schema(
    ctx: typer.Context,
    output: Annotated[
        Path,
        typer.Option("--output", "-o", envvar="VATIC_SCHEMA_OUTPUT", help="file to write; '-' prints it"),
    ] = SCHEMA_FILE,
    check: Annotated[
        bool, typer.Option("--check", help="write nothing; exit 1 when the file is not up to date")
    ] = False,
) -> None:
    """Write the service config's JSON Schema (generated from the pydantic model) for editors."""
    if ctx.invoked_subcommand is not None:
        return
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


Target = Annotated[Path, typer.Argument(help="a service folder, or an .avsc file (with --subject)")]
Subject = Annotated[str | None, typer.Option(help="the subject of an .avsc file (e.g. fraud.transactions-value)")]
Env = Annotated[str, typer.Option("--env", help="environment overlay of a service folder")]


def _targets(target: Path, subject: str | None, env: str) -> list[tuple[str, dict[str, Any]]]:
    """(subject, schema) pairs of a service folder or of one .avsc file."""
    if target.is_dir():
        if subject is not None:
            raise ConfigError("--subject is for an .avsc file; a service folder names its subjects by its topics")
        config = load_service(target, env)
        spec = config.streaming
        if spec is None:
            raise ConfigError(f"{target} has no streaming section: no topics, so no subjects")
        subjects = [
            (topic_subject(spec.input_topic), load_schema(spec.input_schema)),
            (topic_subject(spec.output_topic), load_schema("prediction")),
            (topic_subject(spec.dead_letter_topic), load_schema("dead_letter")),
        ]
        if config.shadow_topic is not None:
            subjects.append((topic_subject(config.shadow_topic), load_schema("prediction")))
        return subjects
    if subject is None:
        raise ConfigError(f"{target}: an .avsc file needs --subject (e.g. --subject my.topic-value)")
    try:
        schema = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{target}: not a readable JSON schema file: {exc}") from exc
    return [(subject, schema)]


@app.command()
def register(
    target: Target,
    subject: Subject = None,
    env: Env = "local",
    compatibility: Annotated[
        str, typer.Option(help="level set on each subject first (BACKWARD_TRANSITIVE, ..., or keep)")
    ] = "BACKWARD_TRANSITIVE",
    schema_registry_url: RegistryUrl = None,
) -> None:
    """Register Avro schemas (a service's three, or one .avsc file) under their subjects; one line each."""
    pairs = _targets(target, subject, env)
    source, where = open_source(schema_registry_url)
    typer.echo(f"schemas: {where}", err=True)
    level = None if compatibility.lower() == "keep" else CompatibilityLevel.parse(compatibility)
    for name, schema in pairs:
        if level is not None:
            source.set_compatibility(name, level)
        schema_id = source.register(name, schema)
        registered = source.lookup(name, schema)
        typer.echo(f"{name}: version {registered.version}, id {schema_id}, {source.get_compatibility(name).value}")


@app.command()
def check(target: Target, subject: Subject = None, env: Env = "local", schema_registry_url: RegistryUrl = None) -> None:
    """Would the registry accept these schemas? Exit 0 when all are compatible, 1 listing the problems."""
    pairs = _targets(target, subject, env)
    source, where = open_source(schema_registry_url)
    typer.echo(f"schemas: {where}", err=True)
    refused = 0
    for name, schema in pairs:
        problems = source.check_compatibility(name, schema)
        level = source.get_compatibility(name).value
        if problems:
            refused += 1
            typer.echo(f"{name}: INCOMPATIBLE under {level}")
            for problem in problems:
                typer.echo(f"  - {problem}")
        else:
            typer.echo(f"{name}: compatible under {level}")
    if refused:
        raise typer.Exit(1)
