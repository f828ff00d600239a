"""``vatic dlq``: a service's dead letters - ``list`` counts them by stage and error class, ``replay`` re-produces
their original records into the service's input topic (a dry run unless ``--apply``; see
:mod:`vatic.connectors.dlq` for the once-per-dead-letter contract)."""

from __future__ import annotations

import contextlib
import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vatic.cli.commands.schema import RegistryUrl, open_source
from vatic.cli.commands.stream import Env, ServiceDir, tool_kafka
from vatic.schemas.errors import ConfigError
from vatic.serving.config import load_service

if TYPE_CHECKING:
    from vatic.connectors.dlq import DeadLetter, Plan, Replayer, Selection

app = typer.Typer(help="List and replay a service's dead letters.", no_args_is_help=True, rich_markup_mode=None)

Stages = Annotated[
    list[str] | None,
    typer.Option("--stage", help="stage that failed (repeatable): decode, enrich, infer, encode, produce"),
]
ErrorClasses = Annotated[
    list[str] | None, typer.Option("--error-class", help="error class (repeatable), e.g. DecodeError")
]
Since = Annotated[
    str | None, typer.Option(help="failed at or after: ISO 8601 time, epoch ms, or an age such as 30m, 2h, 1d")
]
Until = Annotated[str | None, typer.Option(help="failed at or before (same forms as --since)")]
Partitions = Annotated[
    list[int] | None, typer.Option("--partition", min=0, help="dead-letter topic partition (repeatable)")
]
FromOffset = Annotated[int | None, typer.Option(min=0, help="first dead-letter offset (in each selected partition)")]
ToOffset = Annotated[int | None, typer.Option(min=0, help="last dead-letter offset, inclusive")]

_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_STAGES = ("decode", "enrich", "infer", "encode", "produce", "unknown")


def moment_ms(text: str | None, option: str) -> int | None:
    """Epoch ms of an ISO 8601 time (UTC when it names no zone), an epoch-ms integer, or an age before now."""
    if text is None:
        return None
    text = text.strip()
    if text.isdigit():
        return int(text)
    age = _AGE.match(text)
    if age:
        return int((time.time() - float(age.group(1)) * _SECONDS[age.group(2)]) * 1000)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{option} {text!r}: give an ISO 8601 time, epoch milliseconds or an age like 30m") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _selection(
    stage: list[str] | None, error_class: list[str] | None, since: str | None, until: str | None,
    partition: list[int] | None, from_offset: int | None, to_offset: int | None,
) -> Selection:  # fmt: skip
    from vatic.connectors.dlq import Selection

    unknown = sorted(set(stage or ()) - set(_STAGES))
    if unknown:
        raise ConfigError(f"--stage {', '.join(unknown)}: the stages are {', '.join(_STAGES)}")
    return Selection(
        stages=frozenset(stage or ()), error_classes=frozenset(error_class or ()),
        since_ms=moment_ms(since, "--since"), until_ms=moment_ms(until, "--until"),
        partitions=frozenset(partition or ()), from_offset=from_offset, to_offset=to_offset,
    )  # fmt: skip


def _replayer(service_dir: Path, env: str, schema_registry_url: str | None) -> Replayer:
    from vatic.connectors.dlq import Replayer
    from vatic.schemas import AvroCodec, load_schema, topic_subject

    config = load_service(service_dir, env)
    if config.streaming is None:
        raise ConfigError(f"service {config.service} has no streaming section: it has no dead letters")
    topic = config.streaming.dead_letter_topic
    source, _ = open_source(schema_registry_url)
    codec = AvroCodec(source, topic_subject(topic), load_schema("dead_letter"))
    return Replayer(topic, config.streaming.input_topic, codec, tool_kafka())


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@app.command(name="list")
def list_(
    service_dir: ServiceDir,
    env: Env = "local",
    stage: Stages = None,
    error_class: ErrorClasses = None,
    since: Since = None,
    until: Until = None,
    partition: Partitions = None,
    from_offset: FromOffset = None,
    to_offset: ToOffset = None,
    show: Annotated[int, typer.Option(min=0, help="also print this many of them, one JSON line each")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print the counts as one JSON object")] = False,
    schema_registry_url: RegistryUrl = None,
) -> None:
    """Count the selected dead letters by stage and error class, with their failure times and how many were
    replayed already (read up to the topic's end at the start; read_committed)."""
    from vatic.connectors.dlq import read, replayed

    replayer = _replayer(service_dir, env, schema_registry_url)
    selection = _selection(stage, error_class, since, until, partition, from_offset, to_offset)
    done = replayed(replayer.dead_letter_topic, replayer.settings)
    groups: dict[tuple[str, str], dict[str, int]] = {}
    shown: list[DeadLetter] = []
    for letter in read(replayer.dead_letter_topic, replayer.codec, replayer.settings, selection):
        group = groups.setdefault(
            (letter.stage, letter.error_class), {"count": 0, "replayed": 0, "first": 0, "last": 0}
        )
        group["count"] += 1
        group["replayed"] += letter.position in done
        group["first"] = min(group["first"] or letter.failure_ms, letter.failure_ms)
        group["last"] = max(group["last"], letter.failure_ms)
        if len(shown) < show:
            shown.append(letter)
    total = sum(g["count"] for g in groups.values())
    if as_json:
        rows = [{"stage": s, "error_class": e, **g} for (s, e), g in sorted(groups.items())]
        typer.echo(json.dumps({"topic": replayer.dead_letter_topic, "selected": total, "groups": rows}))
    else:
        typer.echo(f"{replayer.dead_letter_topic}: {total} dead letter(s) selected")
        if groups:
            typer.echo(
                f"{'stage':<8} {'error class':<28} {'count':>8} {'replayed':>9}  {'first failure':<20}  last failure"
            )
            for (stage_, error), g in sorted(groups.items()):
                typer.echo(f"{stage_:<8} {error:<28} {g['count']:>8} {g['replayed']:>9}  "
                           f"{_iso(g['first']):<20}  {_iso(g['last'])}")  # fmt: skip
    for letter in shown:
        value = letter.value
        typer.echo(json.dumps({
            "position": letter.position, "stage": letter.stage, "error_class": letter.error_class,
            "error_message": value["error_message"], "event_id": value.get("event_id"),
            "source": f"{value['topic']}/{value['partition']}/{value['offset']}", "replays": letter.replays,
            "failed_at": _iso(letter.failure_ms),
        }))  # fmt: skip


@app.command()
def replay(
    service_dir: ServiceDir,
    env: Env = "local",
    stage: Stages = None,
    error_class: ErrorClasses = None,
    since: Since = None,
    until: Until = None,
    partition: Partitions = None,
    from_offset: FromOffset = None,
    to_offset: ToOffset = None,
    max_replays: Annotated[
        int,
        typer.Option(
            min=1,
            help="replay an input at most this many times in all (a dead letter whose input "
            "was replayed this often is skipped as exhausted)",
        ),
    ] = 3,
    apply: Annotated[
        bool, typer.Option("--apply", help="re-produce them (without it: a dry run, counts only)")
    ] = False,
    schema_registry_url: RegistryUrl = None,
) -> None:
    """Re-produce the selected dead letters' original records (key, value, headers) into the service's input
    topic, each at most once, with ``vatic-replay-of`` and ``vatic-replays`` headers.

    Prints the counts first; writes only with --apply. Dead letters replayed before (the ledger topic
    ``<dead-letter topic>.replayed``), exhausted ones and ones without a complete value are skipped and counted.
    """
    replayer = _replayer(service_dir, env, schema_registry_url)
    selection = _selection(stage, error_class, since, until, partition, from_offset, to_offset)
    if not apply:
        for line in replayer.plan(selection, max_replays).lines():
            typer.echo(line)
        typer.echo(f"dry run: nothing written; add --apply to replay into {replayer.input_topic}")
        return
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        bars: list[Any] = []

        def on_plan(plan: Plan) -> None:
            for line in plan.lines():
                typer.echo(line)
            if plan.replay:  # a bar on a terminal; click hides it elsewhere
                bars.append(stack.enter_context(typer.progressbar(length=len(plan.replay), label="replaying")))

        def on_progress(count: int) -> None:
            if bars:
                bars[0].update(count - bars[0].pos)

        carried = replayer.replay(selection, max_replays, on_plan=on_plan, on_progress=on_progress)
    typer.echo(f"replayed {len(carried.replay)} record(s) into {replayer.input_topic} in "
               f"{time.monotonic() - started:.1f} s (ledger {replayer.dead_letter_topic}.replayed)")  # fmt: skip
