"""Deployment settings of a streaming job (``VATIC_STREAM_*``): where Kafka, the model server, the feature
store and the schemas are. What the job does comes from the service config; where it runs comes from here.

The same settings are the job's command line (:func:`job_argument_parser`), so that Flink's own tooling runs it
the way Flink users call a program::

    flink run --python .../vatic/streaming/main.py --service-dir /opt/vatic/service --env production \
        --model-url http://fraud-model:8080 --bootstrap-servers kafka:9092 --schema-registry-url http://...

This module imports no PyFlink: the CLI and the manifest renderer build command lines with it. Kafka security is
not a job option: it comes from the ``VATIC_KAFKA_*`` environment (:class:`~vatic.connectors.kafka.KafkaSettings`)
of the client and of every Flink process, so that no secret is ever on a command line.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vatic.connectors.kafka import KafkaSettings


class JobSettings(BaseSettings):
    """Connection and runtime settings of one job run. Plain values only: they are pickled into the Python
    functions that run in Flink's Python workers."""

    model_config = SettingsConfigDict(env_prefix="VATIC_STREAM_", extra="forbid")

    service_dir: Path = Field(description="the service folder (service.yaml + overlays)")
    job: Literal["predict", "monitor"] = Field(
        "predict",
        description="predict: the service's pipeline (input topic -> predictions); monitor: its drift monitor "
        "(predictions topic -> drift records, vatic.streaming.monitor)",
    )
    environment: str = "local"
    bootstrap_servers: str | None = Field(
        None,
        description="Kafka bootstrap servers (default: VATIC_KAFKA_BOOTSTRAP_SERVERS, then 127.0.0.1:9092); "
        "security (SASL, TLS) comes from the VATIC_KAFKA_* environment, secrets never from the command line",
    )
    model_url: str = Field("http://127.0.0.1:8080", description="base URL of the service's model server")
    model_ca_file: Path | None = Field(
        None, description="PEM CA that signed an https:// model server's certificate (default: the system's CAs)"
    )
    redis_url: str | None = Field(None, description="read features from this Redis instead of the repo's store")
    schema_registry_url: str | None = Field(None, description="Confluent-compatible registry; None: local store")
    schema_store: Path | None = Field(None, description="folder of the embedded local schema store")
    kafka_connector_jar: Path | None = Field(
        None, description="Flink Kafka SQL connector jar to ship with the job; None: the cluster has it in flink/lib"
    )
    checkpoint_dir: Path | None = Field(None, description="durable checkpoint storage (file://...); None: a temp dir")
    parallelism: int | None = Field(None, ge=1, description="override the service config's parallelism")
    job_name: str | None = None
    metrics_port: int = Field(
        9249,
        ge=0,
        le=65535,
        description="port of the Prometheus endpoint (/metrics) of a local (mini-cluster) job; 0: no endpoint. "
        "A job on a cluster uses the cluster's reporter configuration instead",
    )
    registry_root: Path | None = Field(
        None,
        description="monitor: the local model registry folder holding the reference profiles (default: the service "
        "config's registry section)",
    )
    monitor_window_s: float | None = Field(
        None, ge=1, le=86_400, description="monitor: override monitoring.window_s for this run (demos, backfills)"
    )
    monitor_lateness_s: float | None = Field(
        None, ge=0, le=86_400, description="monitor: override monitoring.lateness_s for this run"
    )
    monitor_min_count: int | None = Field(None, ge=1, description="monitor: override monitoring.min_count for this run")
    #: read the input topic up to its end offsets at start and stop (tests, backfills); False: run forever
    bounded: bool = False
    #: start from the earliest offset when the group has no committed offset (never 'latest': it skips events)
    start_from: str = Field("group-offsets", pattern="^(group-offsets|earliest-offset)$")

    @field_validator(
        "service_dir", "schema_store", "kafka_connector_jar", "checkpoint_dir", "model_ca_file", "registry_root"
    )
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        """Paths are made absolute where the settings are read (the client): Flink's Python workers run in
        another working directory, and a relative path would point elsewhere there."""
        return path.expanduser().absolute() if path is not None else None

    def kafka(self) -> KafkaSettings:
        """The job's Kafka connection: ``VATIC_KAFKA_*`` from the environment (security, credentials), the
        bootstrap servers from these settings when given."""
        if self.bootstrap_servers is None:
            return KafkaSettings()
        return KafkaSettings(bootstrap_servers=self.bootstrap_servers)


@dataclass(frozen=True)
class JobArguments:
    """What ``python -m vatic.streaming.main`` (or ``flink run --python .../main.py``) runs: one pipeline per
    service, where to restore from, and whether the job runs in an embedded mini-cluster."""

    services: list[JobSettings]
    resume_from: Path | None = None
    #: None: decide by where the program runs (a Flink client sets PYFLINK_GATEWAY_PORT: a cluster)
    local: bool | None = None


#: JobSettings fields that differ per service: repeated on the command line, one per --service-dir, in order
_PER_SERVICE = ("service_dir", "model_url", "redis_url")
#: command-line names that differ from the field's
_FLAGS = {"environment": "--env"}


def _flag(name: str) -> str:
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def job_argument_parser() -> argparse.ArgumentParser:
    """The job's command line: one option per :class:`JobSettings` field (per-service ones repeatable)."""
    parser = argparse.ArgumentParser(
        prog="python -m vatic.streaming.main",
        description="Run vatic's streaming job: one pipeline per --service-dir. Options left out come from "
        "VATIC_STREAM_* environment variables, then the defaults.",
    )
    for name, field in JobSettings.model_fields.items():
        help_text = field.description or name.replace("_", " ")
        if name in _PER_SERVICE:
            parser.add_argument(_flag(name), dest=name, action="append", help=f"{help_text} (one per service)")
        elif field.annotation is bool:
            parser.add_argument(_flag(name), dest=name, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)  # fmt: skip
        else:
            parser.add_argument(_flag(name), dest=name, help=help_text)
    parser.add_argument("--resume-from", type=Path, help="restore state and source offsets from this checkpoint")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--local", dest="local", action="store_true", default=None,
                        help="run in an embedded mini-cluster (the default outside `flink run`)")  # fmt: skip
    target.add_argument("--cluster", dest="local", action="store_false",
                        help="run on the cluster of the Flink client that runs this program")  # fmt: skip
    return parser


def parse_job_arguments(argv: list[str]) -> JobArguments:
    """:class:`JobArguments` from a command line built by :func:`job_arguments` or typed by a person."""
    parser = job_argument_parser()
    ns = vars(parser.parse_args(argv))
    dirs = ns.pop("service_dir") or [None]
    per_service = {name: ns.pop(name) or [] for name in _PER_SERVICE if name != "service_dir"}
    for name, values in per_service.items():
        if len(values) > 1 and len(values) != len(dirs):
            parser.error(
                f"{_flag(name)} given {len(values)} times for {len(dirs)} --service-dir: give one, or one each"
            )
    resume, local = ns.pop("resume_from"), ns.pop("local")
    shared = {name: value for name, value in ns.items() if value is not None}
    services = []
    for index, folder in enumerate(dirs):
        own = {name: values[index if len(values) > 1 else 0] for name, values in per_service.items() if values}
        if folder is not None:
            own["service_dir"] = folder
        services.append(JobSettings(**shared, **own))
    return JobArguments(services, resume, local)


def job_arguments(
    services: list[JobSettings], *, resume_from: Path | None = None, local: bool | None = None
) -> list[str]:
    """The command line of a job (the inverse of :func:`parse_job_arguments`): only what differs from the
    defaults is spelled out, shared values from the first service."""
    argv: list[str] = []
    for one in services:
        for name in _PER_SERVICE:
            value = getattr(one, name)
            if value is not None:
                argv += [_flag(name), str(value)]
    first = services[0]
    for name, field in JobSettings.model_fields.items():
        if name in _PER_SERVICE:
            continue
        value = getattr(first, name)
        if value is None or value == field.default:
            continue
        if field.annotation is bool:
            argv.append(_flag(name) if value else f"--no-{_flag(name)[2:]}")
        else:
            argv += [_flag(name), str(value)]
    if resume_from is not None:
        argv += ["--resume-from", str(resume_from)]
    if local is not None:
        argv.append("--local" if local else "--cluster")
    return argv
