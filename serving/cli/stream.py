"""``vatic stream run | submit | tail``: the streaming job locally, on a Flink cluster, and its outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from vatic.connectors.local.settings import StackSettings
from vatic.schemas.errors import ConfigError
from vatic.serving.config import load_service

app = typer.Typer(help="Run the streaming job (local mini-cluster or a Flink cluster) and read its topics.")

ServiceDir = Annotated[Path, typer.Argument(help="service folder (service.yaml + environment overlays)")]
Env = Annotated[str, typer.Option("--env", help="environment overlay: local, staging, production")]
ModelUrl = Annotated[
    str | None, typer.Option(help="model server base URL (default: the local stack's server for the service)")
]


def _model_url(service_dir: Path, explicit: str | None) -> str:
    if explicit:
        return explicit
    if os.environ.get("VATIC_STREAM_MODEL_URL"):
        return os.environ["VATIC_STREAM_MODEL_URL"]
    try:
        from vatic.connectors.local.services import MODEL_SERVERS

        stack = StackSettings()
        for component in MODEL_SERVERS.values():
            server = component(stack)
            if server.service_dir.resolve() == service_dir.resolve():
                return str(server.url)
    except (ImportError, AttributeError):
        pass
    raise ConfigError(f"no model server known for {service_dir}: pass --model-url http://host:port")


def _settings(
    service_dir: Path,
    env: str,
    model_url: str | None,
    *,
    bounded: bool,
    parallelism: int | None,
    checkpoint_dir: Path | None,
    schema_registry_url: str | None,
) -> dict[str, Any]:
    stack = StackSettings()
    config = load_service(service_dir, env)
    return {
        "service_dir": str(service_dir.resolve()),
        "environment": env,
        "bootstrap_servers": os.environ.get("VATIC_STREAM_BOOTSTRAP_SERVERS", stack.kafka_bootstrap),
        "model_url": _model_url(service_dir, model_url),
        "redis_url": os.environ.get("VATIC_STREAM_REDIS_URL"),
        "schema_registry_url": schema_registry_url,
        "schema_store": str(stack.home / "schemas"),
        "checkpoint_dir": str((checkpoint_dir or stack.home / "checkpoints" / config.service).resolve()),
        "parallelism": parallelism,
        "bounded": bounded,
    }


def _create_topics(service_dir: Path, env: str, bootstrap: str) -> None:
    from vatic.connectors.kafka import KafkaSettings, ensure_topics

    config = load_service(service_dir, env)
    assert config.streaming is not None
    spec = config.streaming
    topics = [spec.input_topic, spec.output_topic, spec.dead_letter_topic]
    created = ensure_topics(
        topics, partitions=max(2, spec.parallelism), settings=KafkaSettings(bootstrap_servers=bootstrap)
    )
    if created:
        typer.echo(f"created topics: {', '.join(created)}", err=True)


@app.command()
def run(
    service_dirs: Annotated[
        list[Path], typer.Argument(help="service folder(s); several services run as one job, one pipeline each")
    ],
    env: Env = "local",
    model_url: Annotated[
        list[str] | None,
        typer.Option(help="model server base URL, one per service in order (default: the local stack's servers)"),
    ] = None,
    bounded: Annotated[bool, typer.Option(help="stop at the input topic's end offsets (backfills, tests)")] = False,
    parallelism: Annotated[int | None, typer.Option(min=1, help="override streaming.parallelism")] = None,
    checkpoint_dir: Annotated[Path | None, typer.Option(help="default: .vatic/checkpoints/<services>")] = None,
    resume: Annotated[bool, typer.Option(help="restore from the newest retained checkpoint")] = True,
    schema_registry_url: Annotated[str | None, typer.Option(help="Confluent-compatible registry URL")] = None,
    create_topics: Annotated[bool, typer.Option(help="create the services' topics when missing")] = True,
) -> None:
    """Run the job in the embedded local mini-cluster (blocks until it ends or Ctrl-C)."""
    from vatic.streaming.main import latest_checkpoint
    from vatic.streaming.main import run as run_job
    from vatic.streaming.settings import JobSettings

    urls = list(model_url or [])
    if urls and len(urls) != len(service_dirs):
        raise ConfigError(f"--model-url given {len(urls)} time(s) for {len(service_dirs)} service(s): give one each")
    names = "+".join(load_service(d, env).service for d in service_dirs)
    checkpoints = checkpoint_dir or StackSettings().home / "checkpoints" / names
    services = []
    for index, service_dir in enumerate(service_dirs):
        payload = _settings(
            service_dir, env, urls[index] if urls else None, bounded=bounded, parallelism=parallelism,
            checkpoint_dir=checkpoints, schema_registry_url=schema_registry_url,
        )  # fmt: skip
        if create_topics:
            _create_topics(service_dir, env, payload["bootstrap_servers"])
        services.append(JobSettings(**payload))
    checkpoint = latest_checkpoint(checkpoints) if resume else None
    if checkpoint is not None:
        typer.echo(f"resuming from {checkpoint}", err=True)
    for one in services:
        typer.echo(f"running {one.service_dir.name} (model {one.model_url})", err=True)
    run_job(services, resume_from=checkpoint)


@app.command()
def submit(
    service_dir: ServiceDir,
    env: Env = "local",
    model_url: ModelUrl = None,
    jobmanager: Annotated[str, typer.Option(help="REST address of the JobManager")] = "127.0.0.1:8088",
    parallelism: Annotated[int | None, typer.Option(min=1)] = None,
    checkpoint_dir: Annotated[Path | None, typer.Option(help="checkpoint folder the cluster can write")] = None,
    bounded: Annotated[bool, typer.Option(help="stop at the input topic's end offsets")] = False,
    detached: Annotated[bool, typer.Option(help="return once submitted")] = True,
    create_topics: Annotated[bool, typer.Option(help="create the service's topics when missing")] = True,
) -> None:
    """Submit the job to a (standalone or session) Flink cluster with `flink run --python`."""
    import pyflink

    payload = _settings(
        service_dir, env, model_url, bounded=bounded, parallelism=parallelism, checkpoint_dir=checkpoint_dir,
        schema_registry_url=None,
    )  # fmt: skip
    payload["local"] = False
    if create_topics:
        _create_topics(service_dir, env, payload["bootstrap_servers"])
    flink = Path(pyflink.__file__).parent / "bin" / "flink"
    from vatic.streaming import main as entry

    argv = [
        str(flink), "run", "--jobmanager", jobmanager,
        "--python", str(Path(entry.__file__).resolve()),
        "--pyExecutable", sys.executable, "--pyClientExecutable", sys.executable,
    ]  # fmt: skip
    if detached:
        argv.append("--detached")
    if parallelism:
        argv += ["--parallelism", str(parallelism)]
    argv.append(json.dumps(payload))
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        tail = " | ".join(line for line in output.splitlines()[-4:] if line.strip())
        raise ConfigError(f"flink run failed ({done.returncode}): {tail}")
    for line in output.splitlines():
        if "JobID" in line or "Job has been submitted" in line:
            typer.echo(line.strip())


@app.command()
def tail(
    service_dir: ServiceDir,
    env: Env = "local",
    dead_letters: Annotated[bool, typer.Option("--dead-letters", help="read the dead-letter topic")] = False,
    from_beginning: Annotated[bool, typer.Option(help="start at the earliest offset")] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="stop after this many records")] = None,
    timeout_s: Annotated[float | None, typer.Option(help="stop after this long without records")] = None,
) -> None:
    """Print prediction (or dead-letter) records of a service as JSON lines, as they arrive (read_committed)."""
    from vatic.connectors.kafka import Consumer, KafkaSettings
    from vatic.schemas import AvroCodec, LocalSchemaStore, load_schema, topic_subject

    config = load_service(service_dir, env)
    if config.streaming is None:
        raise ConfigError(f"service {config.service} has no streaming section")
    stack = StackSettings()
    topic = config.streaming.dead_letter_topic if dead_letters else config.streaming.output_topic
    schema = "dead_letter" if dead_letters else "prediction"
    codec = AvroCodec(LocalSchemaStore(stack.home / "schemas"), topic_subject(topic), load_schema(schema))
    settings = KafkaSettings(bootstrap_servers=os.environ.get("VATIC_STREAM_BOOTSTRAP_SERVERS", stack.kafka_bootstrap))
    reset = "earliest" if from_beginning else "latest"
    consumer = Consumer([topic], f"vatic-tail-{uuid.uuid4().hex[:8]}", settings, config={"auto.offset.reset": reset})
    seen = 0
    idle_since = time.monotonic()
    try:
        while limit is None or seen < limit:
            records = consumer.poll_batch(100, timeout=0.5)
            if not records:
                if timeout_s is not None and time.monotonic() - idle_since > timeout_s:
                    break
                continue
            idle_since = time.monotonic()
            for record in records:
                value = codec.decode(record.value or b"")
                typer.echo(json.dumps(value, default=_bytes_repr))
                seen += 1
                if limit is not None and seen >= limit:
                    break
    finally:
        consumer.close()


def _bytes_repr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)
