"""``vatic stack up | down | status | fetch``: the embedded local stack of real processes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vatic.cli.stack.artifacts import Artifacts
from vatic.cli.stack.secure import SecureKafkaBroker
from vatic.cli.stack.settings import StackSettings
from vatic.cli.stack.stack import Stack
from vatic.schemas.errors import ConfigError

app = typer.Typer(
    rich_markup_mode=None, help="Run the local stack (Kafka KRaft broker, Redis, schema registry) as real processes."
)

Components = Annotated[
    list[str] | None,
    typer.Argument(
        help="components to act on (default: all but the optional ones): kafka, redis, registry, "
        "fraud-model, product-model, gateway; optional: kafka-secure (SASL_SSL + mutual TLS + ACLs), flink "
        "(flink-jobmanager + flink-taskmanager + flink-taskmanager-2), kafka-cluster (kafka-1 + kafka-2 + kafka-3), "
        "cluster (both clusters)",
        show_default=False,
    ),
]


@app.command()
def fetch() -> None:
    """Download the pinned jars and distributions from Maven Central into the cache folder (idempotent)."""
    for line in Artifacts(StackSettings().cache).fetch_all():
        typer.echo(line)


@app.command()
def up(
    components: Components = None,
    secure: Annotated[
        bool,
        typer.Option(
            help="also start the secured broker (kafka-secure): SASL_SSL with SCRAM users, mutual TLS and ACLs, "
            "certificates from a private CA; prints where its client settings are"
        ),
    ] = False,
    cluster: Annotated[
        bool,
        typer.Option(
            help="also start a three-node KRaft Kafka cluster (kafka-1..3: replication 3, min.insync.replicas 2) "
            "and the Flink session cluster (a JobManager, two TaskManagers of 2 slots): `vatic stream submit "
            "--cluster` runs a job there"
        ),
    ] = False,
) -> None:
    """Start components and wait until each is ready. Already running ones are left as they are."""
    stack = Stack()
    if secure:
        components = [*(components or [c.name for c in stack.select(None)]), SecureKafkaBroker.name]
    if cluster:
        components = [*(components or [c.name for c in stack.select(None)]), "cluster"]
    components = components or None
    started = stack.up(components)
    for health in stack.status(components):
        verb = "started" if health.name in started else ("running" if health.state == "up" else health.state)
        typer.echo(f"{health.name:<20} {verb:<8} port {health.port:<6} pid {health.pid}  {health.detail}")


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
        typer.echo(f"{health.name:<20} {health.state:<8} port {health.port:<6} pid {pid!s:<8} {health.detail}")
    raise typer.Exit(0 if all_up else 1)


@app.command()
def grant(
    service_dir: Annotated[Path, typer.Argument(help="the service folder (service.yaml + overlays)")],
    env: Annotated[str, typer.Option(help="environment overlay")] = "local",
) -> None:
    """On the secured broker (`stack up --secure`): create the service's topics as admin, let vatic-job run its
    streaming job (read the input in its group, write the outputs, its transactional ids) and vatic-app write the
    input and read the outputs. Prints each grant; idempotent."""
    from vatic.cli.stack.secure import ADMIN, APP, JOB, app_acls, apply_acls, job_acls
    from vatic.connectors.kafka import ensure_topics
    from vatic.serving.config import load_service
    from vatic.streaming.job import transactional_prefix

    config = load_service(service_dir, env)
    if config.streaming is None:
        raise ConfigError(f"service {config.service} has no streaming section: no topics to grant")
    spec = config.streaming
    broker = SecureKafkaBroker(StackSettings())
    if broker.process.pid() is None:
        raise ConfigError("the secured broker is not running: `vatic stack up kafka-secure` (or `stack up --secure`)")
    admin = broker.client_settings(ADMIN)
    created = ensure_topics(
        [spec.input_topic, *config.written_topics], partitions=max(2, spec.parallelism),
        settings=admin,
    )  # fmt: skip
    if created:
        typer.echo(f"created topics: {', '.join(created)}")
    grants = job_acls(
        JOB, input_topic=spec.input_topic, output_topics=config.written_topics,
        group=config.consumer_group, transactional_prefix=transactional_prefix(config),
    ) + app_acls(APP, produce=[spec.input_topic], consume=config.written_topics)  # fmt: skip
    apply_acls(admin, grants)
    for g in grants:
        pattern = "prefixed " if g.prefixed else ""
        typer.echo(f"granted {g.principal} {g.operation} on {g.resource} {pattern}{g.name}")
