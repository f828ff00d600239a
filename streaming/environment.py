"""The PyFlink execution environment vatic jobs run in: connector jars, Python workers, latency settings.

PyFlink ships no Kafka connector; vatic pins ``flink-sql-connector-kafka`` (see
:mod:`vatic.connectors.local.artifacts`) and adds it to every job's ``pipeline.jars``. Python UDF workers run
with the interpreter of the current environment (``python.executable``), so the pipeline environment's
packages, vatic included, are what the workers import.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pyflink.common import Configuration
from pyflink.datastream import StreamExecutionEnvironment

from vatic.connectors.local.artifacts import Artifacts
from vatic.connectors.local.settings import StackSettings


def connector_jars(cache: Path | None = None) -> list[str]:
    """``file://`` URLs of the jars every vatic job needs; raises a one-line ConfigError when one is missing."""
    artifacts = Artifacts(cache or StackSettings().cache)
    return [artifacts.require_flink_kafka_connector().resolve().as_uri()]


def local_environment(parallelism: int = 1, extra: dict[str, str] | None = None) -> StreamExecutionEnvironment:
    """A local (mini-cluster) environment with vatic's jars and this interpreter for the Python workers."""
    config = Configuration()
    config.set_string("pipeline.jars", ";".join(connector_jars()))
    config.set_string("python.executable", sys.executable)
    config.set_string("python.client.executable", sys.executable)
    for key, value in (extra or {}).items():
        config.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.set_parallelism(parallelism)
    return env
