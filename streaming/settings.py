"""Deployment settings of a streaming job (``VATIC_STREAM_*``): where Kafka, the model server, the feature
store and the schemas are. What the job does comes from the service config; where it runs comes from here."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class JobSettings(BaseSettings):
    """Connection and runtime settings of one job run. Plain values only: they are pickled into the Python
    functions that run in Flink's Python workers."""

    model_config = SettingsConfigDict(env_prefix="VATIC_STREAM_", extra="forbid")

    service_dir: Path = Field(description="the service folder (service.yaml + overlays)")
    environment: str = "local"
    bootstrap_servers: str = "127.0.0.1:9092"
    model_url: str = Field("http://127.0.0.1:8080", description="base URL of the service's model server")
    redis_url: str | None = Field(None, description="read features from this Redis instead of the repo's store")
    schema_registry_url: str | None = Field(None, description="Confluent-compatible registry; None: local store")
    schema_store: Path | None = Field(None, description="folder of the embedded local schema store")
    checkpoint_dir: Path | None = Field(None, description="durable checkpoint storage (file://...); None: a temp dir")
    parallelism: int | None = Field(None, ge=1, description="override the service config's parallelism")
    job_name: str | None = None
    #: read the input topic up to its end offsets at start and stop (tests, backfills); False: run forever
    bounded: bool = False
    #: start from the earliest offset when the group has no committed offset (never 'latest': it skips events)
    start_from: str = Field("group-offsets", pattern="^(group-offsets|earliest-offset)$")
