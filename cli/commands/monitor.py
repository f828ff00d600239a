"""``vatic monitor run | submit | show``: a service's drift monitor (vatic.streaming.monitor) and its records."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vatic.cli.commands.dlq import moment_ms
from vatic.cli.commands.schema import RegistryUrl, open_source
from vatic.cli.commands.stream import (
    Cluster,
    Env,
    JobManager,
    ServiceDir,
    _check_slots,
    _create_topics,
    _settings,
    flink_submit,
    run_local,
    tool_kafka,
)
from vatic.cli.stack.settings import StackSettings, registry_root_for
from vatic.schemas.errors import ConfigError
from vatic.serving.config import ServiceConfig, load_service

if TYPE_CHECKING:
    from vatic.streaming.settings import JobSettings

app = typer.Typer(
    rich_markup_mode=None,
    help="Drift of a service's predictions from its models' training data: the monitor job and its records.",
)

#: the local monitor's Prometheus port (the pipeline's local job has 9249, the stack's Flink cluster 9250 and 9251)
MONITOR_METRICS_PORT = 9252
#: the monitor's stand-in model URL: it calls no model
_NO_MODEL = "http://127.0.0.1:8080"


def monitor_settings(
    service_dir: Path,
    env: str,
    *,
    bounded: bool,
    parallelism: int | None,
    checkpoint_dir: Path | None,
    schema_registry_url: str | None,
    registry_root: Path | None,
    local: bool,
    cluster: bool = False,
) -> JobSettings:
    """The settings of a service's monitor job: the pipeline's connections, ``job=monitor``, the registry of the
    reference profiles."""
    from vatic.streaming.settings import JobSettings

    config = _config(service_dir, env)
    payload: dict[str, Any] = _settings(
        service_dir, env, _NO_MODEL, bounded=bounded, parallelism=parallelism,
        checkpoint_dir=checkpoint_dir or StackSettings().home / "checkpoints" / f"{config.service}-monitor",
        schema_registry_url=schema_registry_url, local=local, cluster=cluster,
    )  # fmt: skip
    payload.pop("model_url")
    root = registry_root_for(config.registry, registry_root)
    return JobSettings(**payload, job="monitor", registry_root=root)


def _config(service_dir: Path, env: str) -> ServiceConfig:
    config = load_service(service_dir, env)
    if config.streaming is None:
        raise ConfigError(f"service {config.service} has no streaming section: it has no predictions topic to monitor")
    return config


def _create_drift_topic(config: ServiceConfig, bootstrap: str | None) -> None:
    from vatic.connectors.kafka import KafkaSettings, ensure_topics

    settings = KafkaSettings(bootstrap_servers=bootstrap) if bootstrap else KafkaSettings()
    created = ensure_topics([config.drift_topic], partitions=1, settings=settings)
    if created:
        typer.echo(f"created topics: {', '.join(created)}", err=True)


RegistryRoot = Annotated[
    Path | None,
    typer.Option(help="local model registry folder of the reference profiles (default: the service's registry)"),
]


@app.command()
def run(
    service_dir: ServiceDir,
    env: Env = "local",
    bounded: Annotated[
        bool, typer.Option(help="stop at the predictions topic's end offsets (backfills, tests)")
    ] = False,
    parallelism: Annotated[int | None, typer.Option(min=1, help="override monitoring.parallelism")] = None,
    checkpoint_dir: Annotated[Path | None, typer.Option(help="default: .vatic/checkpoints/<service>-monitor")] = None,
    resume: Annotated[bool, typer.Option(help="restore from the newest retained checkpoint")] = True,
    schema_registry_url: RegistryUrl = None,
    registry_root: RegistryRoot = None,
    create_topics: Annotated[bool, typer.Option(help="create the drift topic when missing")] = True,
    window_s: Annotated[
        float | None, typer.Option(min=1, help="override monitoring.window_s for this run (demos, backfills)")
    ] = None,
    lateness_s: Annotated[float | None, typer.Option(min=0, help="override monitoring.lateness_s for this run")] = None,
    min_count: Annotated[int | None, typer.Option(min=1, help="override monitoring.min_count for this run")] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help=f"Prometheus endpoint (default {MONITOR_METRICS_PORT}); 0: none"),
    ] = None,
) -> None:
    """Run the service's drift monitor in the embedded local mini-cluster (blocks until it ends or Ctrl-C).

    It reads the predictions topic and writes one record per event-time window (monitoring.window_s) and model
    version to <service>.drift; `vatic monitor show` prints them.
    """
    config = _config(service_dir, env)
    settings = monitor_settings(
        service_dir, env, bounded=bounded, parallelism=parallelism, checkpoint_dir=checkpoint_dir,
        schema_registry_url=schema_registry_url, registry_root=registry_root, local=True,
    )  # fmt: skip
    port = metrics_port
    if port is None:  # the default: taken (another monitor runs), the monitor runs without an endpoint
        port = int(os.environ.get("VATIC_MONITOR_METRICS_PORT", MONITOR_METRICS_PORT))
        from vatic.streaming.main import port_bindable

        if not port_bindable(port):
            typer.echo(f"vatic: the monitor's default metrics port {port} is taken: no metrics endpoint "
                       "(pass --metrics-port <free port> for one)", err=True)  # fmt: skip
            port = 0

    settings = settings.model_copy(
        update={"metrics_port": port, "monitor_window_s": window_s, "monitor_lateness_s": lateness_s,
                "monitor_min_count": min_count}
    )  # fmt: skip
    if create_topics:
        _create_drift_topic(config, settings.bootstrap_servers)
    assert settings.checkpoint_dir is not None
    run_local([settings], settings.checkpoint_dir, resume=resume)


@app.command()
def submit(
    service_dir: ServiceDir,
    env: Env = "local",
    jobmanager: JobManager = None,
    parallelism: Annotated[int | None, typer.Option(min=1, help="override monitoring.parallelism")] = None,
    checkpoint_dir: Annotated[Path | None, typer.Option(help="checkpoint folder the cluster can write")] = None,
    bounded: Annotated[bool, typer.Option(help="stop at the predictions topic's end offsets")] = False,
    detached: Annotated[bool, typer.Option(help="return once the cluster accepted the job")] = False,
    schema_registry_url: RegistryUrl = None,
    registry_root: RegistryRoot = None,
    cluster: Cluster = False,
) -> None:
    """Submit the drift monitor to a standalone (session) Flink cluster with the distribution's `flink run`, as
    `vatic stream submit` submits the pipeline (the same entry point, with --job monitor)."""
    from vatic.cli.stack.flink import FlinkRest

    address = jobmanager or StackSettings().flink_jobmanager
    rest = FlinkRest(address)
    config = _config(service_dir, env)
    wanted = parallelism or config.monitoring.parallelism
    _check_slots(rest, wanted)
    settings = monitor_settings(
        service_dir, env, bounded=bounded, parallelism=wanted, checkpoint_dir=checkpoint_dir,
        schema_registry_url=schema_registry_url, registry_root=registry_root, local=False, cluster=cluster,
    )  # fmt: skip
    _create_drift_topic(config, settings.bootstrap_servers)
    _create_topics(service_dir, env, settings.bootstrap_servers)
    flink_submit(settings, address, wanted, detached=detached, label=f"{config.service}-monitor")


def read_drift(config: ServiceConfig, since_ms: int, schema_registry_url: str | None = None) -> list[dict[str, Any]]:
    """The drift records of ``config``'s service whose window ends at or after ``since_ms``, in window order."""
    from vatic.connectors.kafka import scan
    from vatic.schemas import AvroCodec, load_schema, topic_subject

    source, _ = open_source(schema_registry_url)
    codec = AvroCodec(source, topic_subject(config.drift_topic), load_schema("drift"))
    records = [codec.decode(r.value) for r in scan(config.drift_topic, tool_kafka()) if r.value is not None]
    found = [r for r in records if r["window_end"] >= since_ms]
    return sorted(found, key=lambda r: (r["window_start"], r["model_name"], r["model_version"]))


def describe(record: dict[str, Any]) -> str:
    """One line per drift record: window, version, verdict and the columns that moved most."""
    start = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record["window_start"] / 1000))
    seconds = (record["window_end"] - record["window_start"]) / 1000
    verdict = "DRIFT" if record["drifted"] else ("ok" if record["judged"] else "not judged")
    if not record["profiled"]:
        verdict = "no reference profile"
    ranked = sorted((c for c in record["columns"] if c["psi"] is not None), key=lambda c: -c["psi"])[:3]
    top = ", ".join(f"{c['name']} psi {c['psi']:.3f}" for c in ranked)
    return (
        f"{start} UTC +{seconds:g}s  {record['model_name']} v{record['model_version']}: {record['predictions']} "
        f"predictions, {verdict}"
        + (f" ({', '.join(record['drifted_columns'])})" if record["drifted"] else "")
        + (f"; top: {top}" if top else "")
    )


@app.command()
def show(
    service_dir: ServiceDir,
    env: Env = "local",
    since: Annotated[
        str, typer.Option(help="windows ending at or after: ISO 8601 time, epoch ms, or an age (30m, 2h)")
    ] = "1h",
    as_json: Annotated[bool, typer.Option("--json", help="print the records as JSON lines")] = False,
    schema_registry_url: RegistryUrl = None,
) -> None:
    """Print the drift records of a service: one line per window and model version."""
    config = _config(service_dir, env)
    records = read_drift(config, moment_ms(since, "--since") or 0, schema_registry_url)
    for record in records:
        typer.echo(json.dumps(record) if as_json else describe(record))
    if not as_json:
        drifted = sum(1 for r in records if r["drifted"])
        typer.echo(f"{len(records)} window(s), {drifted} drifted ({config.drift_topic})", err=True)
