"""The streaming job: Kafka (Avro) -> decode -> micro-batches -> enrichment + inference -> Kafka.

One service's pipeline has two topologies (service config ``streaming.mode``); both run every micro-batch
through the same :class:`~vatic.streaming.batch.BatchProcessor` (decode, one feature lookup, one V2 request,
encode; exactly one output per input record), so they produce the same records.

``vectorized`` (default)::

    kafka source (SQL connector: raw key/value + topic/partition/offset/timestamp/headers metadata)
      -> vatic_<service>_infer(...)   vectorized (Arrow) Python function: one call per batch of up to
                                      batch_size records, cut at latest every batch_wait_ms (bundle time)
      -> WHERE kind = 'P' -> predictions sink      WHERE kind = 'D' -> dead-letter sink
    (the planner evaluates the function once per record and feeds both sinks from it: sub-plan reuse,
    pinned on in :func:`flink_configuration` and checked by a test)

``async`` (DataStream + AsyncDataStream; several batches in flight per subtask)::

    kafka source -> to_data_stream
      -> key_by(subtask)   one key per parallel subtask (see subtask_keys): one batch buffer each
      -> micro-batch       [uid vatic-<service>-batch]   size N or T ms, buffer in keyed state
      -> async inference   [uid vatic-<service>-infer]   unordered, capacity C batches in flight (backpressure)
      -> route             [uid vatic-<service>-route]   predictions | dead letters (side output)

Records cross between the JVM and Python one by one in the DataStream operators and as Arrow batches in the
vectorized function; the async topology overlaps model calls (``capacity``), for a model server that is slow and
remote (why vectorized is the default: docs/decisions/0004-vectorized-default.md).

In both, predictions go to a Kafka sink (EXACTLY_ONCE transactions, or AT_LEAST_ONCE) and dead letters to
another with the same guarantee; a failed dead-letter write fails the checkpoint (never dropped).

Why the SQL connector for Kafka: PyFlink's DataStream ``KafkaSource`` only offers value-only
deserializers, which lose the topic/partition/offset a dead-letter record must carry. The SQL Kafka connector
exposes them as metadata columns with the ``raw`` format (bytes untouched), and the ``to_data_stream`` /
``from_data_stream`` bridge keeps everything in one job and one checkpoint.

Guarantees: checkpointing (EXACTLY_ONCE mode, interval from the service config, unaligned checkpoints so that
backpressure does not stall them), exponential-delay restarts, source offsets committed to Kafka on
checkpoint completion (monitoring only: recovery uses the checkpoint). The EXACTLY_ONCE sinks write in Kafka
transactions committed on checkpoint completion; consumers read with ``isolation.level=read_committed``.

Recovery settings, chosen together (:mod:`vatic.streaming.recovery`; docs/decisions/0001-recovery-bounds.md
has the measurements): a failed job restarts after 1 s, backing off to at most 10 s, so that it is running again at
most ~10 s plus its restart time after an outage ends; it gives up (the job FAILS, ``vatic stream run`` exits
non-zero) after ``streaming.restart_attempts`` failed attempts in a row (30 by default: 5-10 minutes of an
outage that never ends).
A checkpoint may take as long as a batch may retry (retry budget + two model deadlines) plus 30 s; two
checkpoints in a row that time out fail the job, so a job whose checkpoints cannot complete does not hang
silently. The sinks' producers give a record up after ``delivery.timeout.ms`` (60 s, below the checkpoint
timeout: a broker that stays away fails the task before the checkpoint expires). The transaction timeout
(service config, default 15 min) stays above the restart window plus a checkpoint, so that a transaction
pre-committed by a completed checkpoint is still there to commit when the job comes back, and below the
broker's ``transaction.max.timeout.ms``.

Latency settings (process mode; why: docs/decisions/0005-bundle-time.md): ``execution.buffer-timeout`` is
``buffer_timeout_ms`` (default 5 ms) and, in async mode, bundles of ``bundle_size`` / ``bundle_time_ms``
(default 1000 records / 20 ms); in vectorized mode the Arrow batch size is the service's ``batch_size`` and the
bundle time its ``batch_wait_ms`` (default 10 ms), so a partial batch waits at most that long. A bundle always
ends before a checkpoint barrier passes a Python operator (every record in it answered), which is what makes
both topologies' checkpoints consistent.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from pyflink.common import Configuration, Time, Types
from pyflink.datastream import AsyncDataStream, CheckpointingMode, StreamExecutionEnvironment
from pyflink.datastream.checkpoint_config import ExternalizedCheckpointRetention
from pyflink.table import StreamTableEnvironment
from pyflink.table.udf import udf

from vatic.connectors.kafka import check_access
from vatic.schemas.errors import ConfigError
from vatic.serving.config import ServiceConfig, load_service
from vatic.streaming.metrics import prometheus_reporter
from vatic.streaming.operators import (
    DEAD_LETTERS,
    PICKLED,
    SHADOWS,
    SINK_ROW,
    BatchedInferenceFunction,
    MicroBatchFunction,
    RouteFunction,
)
from vatic.streaming.recovery import DELIVERY_TIMEOUT_MS, checkpoint_timeout_s, recovery_settings
from vatic.streaming.settings import JobSettings
from vatic.streaming.vectorized import RESULT_TYPE, VectorizedInference


def flink_configuration(config: ServiceConfig, settings: JobSettings, *, local: bool = True) -> Configuration:
    """The Flink configuration of the job: jars, Python workers, latency, checkpointing, restarts; for a local
    job also the Prometheus reporter on ``settings.metrics_port`` (:mod:`vatic.streaming.metrics`)."""
    assert config.streaming is not None
    spec = config.streaming
    import sys

    conf = Configuration()
    jar = settings.kafka_connector_jar
    if jar is not None:
        if not jar.is_file():
            raise ConfigError(f"the Flink Kafka connector jar {jar} does not exist: run `vatic stack fetch`")
        conf.set_string("pipeline.jars", jar.resolve().as_uri())
    elif local:
        raise ConfigError(
            "a local job needs the Flink Kafka connector jar: pass --kafka-connector-jar (`vatic stream run` does)"
        )
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.client.executable", sys.executable)
    if spec.mode == "vectorized":
        # a micro-batch is an Arrow batch: batch_size records, cut at latest when a bundle ends (batch_wait_ms)
        conf.set_string("python.fn-execution.arrow.batch.size", str(spec.batch_size))
        conf.set_string("python.fn-execution.bundle.size", str(max(spec.bundle_size, spec.batch_size)))
        conf.set_string("python.fn-execution.bundle.time", str(max(1, spec.batch_wait_ms)))
    else:
        conf.set_string("python.fn-execution.bundle.size", str(spec.bundle_size))
        conf.set_string("python.fn-execution.bundle.time", str(spec.bundle_time_ms))
    conf.set_string("execution.buffer-timeout", f"{spec.buffer_timeout_ms} ms")
    # vectorized mode: both sinks must read ONE evaluation of the inference function (it calls a model)
    conf.set_string("table.optimizer.reuse-sub-plan-enabled", "true")
    for key, value in recovery_settings(config).items():
        conf.set_string(key, value)
    checkpoints = settings.checkpoint_dir or Path(tempfile.mkdtemp(prefix="vatic-checkpoints-"))
    conf.set_string("state.checkpoints.dir", checkpoints.resolve().as_uri())
    conf.set_string("execution.checkpointing.dir", checkpoints.resolve().as_uri())
    conf.set_string("pipeline.name", settings.job_name or f"vatic-{config.service}")
    if local:
        conf.set_string("taskmanager.numberOfTaskSlots", str(max(1, settings.parallelism or spec.parallelism)))
        # the mini-cluster's one metric registry (JobManager and TaskManager in one JVM): one endpoint; a cluster
        # has its own reporter configuration (the rendered FlinkDeployment's, the local session cluster's)
        if settings.metrics_port:
            for key, value in prometheus_reporter(settings.metrics_port).items():
                conf.set_string(key, value)
    return conf


def transactional_prefix(config: ServiceConfig) -> str:
    """The prefix of every transactional id the service's exactly-once sinks use (an ACL grants it prefixed)."""
    return f"vatic-{config.service}-{config.environment}-"


def kafka_options(settings: JobSettings) -> str:
    """The Kafka connection and security of a table, as ``'properties.<key>' = '<value>',`` lines. Secrets are
    references that Kafka resolves in each Flink process (see :meth:`KafkaSettings.java_properties`)."""
    props = settings.kafka().java_properties()
    return "\n          ".join(f"'properties.{key}' = '{_sql_string(value)}'," for key, value in props.items())


def _sql_string(value: str) -> str:
    return value.replace("'", "''")


def check_kafka(config: ServiceConfig, settings: JobSettings) -> None:
    """Fail at submission, with one line naming what to fix, when Kafka refuses the job's identity or lacks an
    ACL it needs (inside the running job each would be a task failure restarted until the budget is spent)."""
    spec = config.streaming
    assert spec is not None
    check_access(
        settings.kafka(),
        read=[spec.input_topic],
        write=config.written_topics,
        group=config.consumer_group,
        transactional_prefix=transactional_prefix(config) if spec.guarantee == "exactly_once" else None,
    )


def source_ddl(
    config: ServiceConfig, settings: JobSettings, name: str = "vatic_input", *, topic: str | None = None,
    group: str | None = None,
) -> str:  # fmt: skip
    """A read_committed Kafka source table of raw keys and values with their topic, partition, offset, timestamp
    and headers: the service's input topic and group, unless ``topic`` and ``group`` name others (the monitor's)."""
    assert config.streaming is not None
    spec = config.streaming
    bounded = "'scan.bounded.mode' = 'latest-offset'," if settings.bounded else ""
    return f"""
        CREATE TABLE {name} (
          k BYTES, v BYTES,
          `topic` STRING METADATA VIRTUAL,
          `partition` INT METADATA VIRTUAL,
          `offset` BIGINT METADATA VIRTUAL,
          `ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,
          `headers` MAP<STRING, BYTES> METADATA VIRTUAL
        ) WITH (
          'connector' = 'kafka',
          'topic' = '{topic or spec.input_topic}',
          {kafka_options(settings)}
          'properties.group.id' = '{group or config.consumer_group}',
          'properties.auto.offset.reset' = 'earliest',
          'properties.isolation.level' = 'read_committed',
          'scan.startup.mode' = '{settings.start_from}',
          'scan.topic-partition-discovery.interval' = '{int(spec.partition_discovery_s * 1000)} ms',
          {bounded}
          'key.format' = 'raw', 'key.fields' = 'k',
          'value.format' = 'raw', 'value.fields-include' = 'EXCEPT_KEY'
        )"""


def sink_ddl(name: str, topic: str, config: ServiceConfig, settings: JobSettings, *, prefix: str | None = None) -> str:
    """A Kafka sink table (raw key and value, headers); under exactly_once its transactional ids start with
    ``prefix`` (default: :func:`transactional_prefix`) and the table name."""
    assert config.streaming is not None
    spec = config.streaming
    if spec.guarantee == "exactly_once":
        guarantee = f"""
          'sink.delivery-guarantee' = 'exactly-once',
          'sink.transactional-id-prefix' = '{prefix or transactional_prefix(config)}{name}',
          'properties.transaction.timeout.ms' = '{int(spec.transaction_timeout_s * 1000)}',"""
    else:
        guarantee = "'sink.delivery-guarantee' = 'at-least-once',"
    return f"""
        CREATE TABLE {name} (
          k BYTES, v BYTES, headers MAP<STRING, BYTES> METADATA
        ) WITH (
          'connector' = 'kafka',
          'topic' = '{topic}',
          {kafka_options(settings)}
          'properties.enable.idempotence' = 'true',
          'properties.acks' = 'all',
          'properties.max.request.size' = '{spec.max_record_bytes + 65536}',
          'properties.delivery.timeout.ms' = '{DELIVERY_TIMEOUT_MS}',
          {guarantee}
          'key.format' = 'raw', 'key.fields' = 'k',
          'value.format' = 'raw', 'value.fields-include' = 'EXCEPT_KEY'
        )"""


MAX_PARALLELISM = 128


def _murmur(code: int) -> int:
    """Flink's ``MathUtils.murmurHash(int)`` (32-bit arithmetic), as used to assign keys to key groups."""
    mask = 0xFFFFFFFF

    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (32 - r))) & mask

    h = code & mask
    h = (h * 0xCC9E2D51) & mask
    h = rotl(h, 15)
    h = (h * 0x1B873593) & mask
    h = rotl(h, 13)
    h = (h * 5 + 0xE6546B64) & mask
    h ^= 4
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    h ^= h >> 16
    signed = h - (1 << 32) if h & 0x80000000 else h
    if signed >= 0:
        return signed
    return -signed if signed != -(1 << 31) else 0


def subtask_keys(parallelism: int, max_parallelism: int = MAX_PARALLELISM) -> list[int]:
    """For each subtask index, the smallest non-negative int key that Flink routes to that subtask.

    Keying micro-batches by these keys gives every subtask exactly one batch buffer: batches fill as fast as
    the subtask receives records (several buffers per subtask would split its records and shrink batches).
    """
    keys: dict[int, int] = {}
    candidate = 0
    while len(keys) < parallelism:
        group = _murmur(candidate) % max_parallelism  # Integer.hashCode(k) == k
        keys.setdefault(group * parallelism // max_parallelism, candidate)
        candidate += 1
    return [keys[i] for i in range(parallelism)]


def _bucket(keys: list[int]) -> Any:
    def key(row: Any) -> int:
        # spread by source offset and partition: stable across processes, even for equal payloads
        return keys[(int(row.offset) + 31 * int(row.partition)) % len(keys)]

    return key


def configure_checkpoints(env: StreamExecutionEnvironment, config: ServiceConfig) -> None:
    """Checkpointing of a service's jobs (the pipeline and its drift monitor): exactly-once mode at the service's
    interval, unaligned, retained on cancellation, one failure tolerated (see the module docstring)."""
    spec = config.streaming
    assert spec is not None
    env.set_max_parallelism(MAX_PARALLELISM)
    env.enable_checkpointing(int(spec.checkpoint_interval_s * 1000), CheckpointingMode.EXACTLY_ONCE)
    checkpointing = env.get_checkpoint_config()
    checkpointing.enable_unaligned_checkpoints()
    checkpointing.set_min_pause_between_checkpoints(int(spec.checkpoint_interval_s * 500))
    checkpointing.set_checkpoint_timeout(int(max(checkpoint_timeout_s(config), spec.checkpoint_interval_s * 10) * 1000))
    checkpointing.set_externalized_checkpoint_retention(ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION)
    checkpointing.set_tolerable_checkpoint_failure_number(1)


def build(
    env: StreamExecutionEnvironment, settings: JobSettings, t_env: StreamTableEnvironment | None = None
) -> StreamTableEnvironment:
    """Add one service's pipeline to ``env`` (several services can share one job: tables and operator uids are
    named after the service); returns the table environment that owns the Kafka tables."""
    config = load_service(settings.service_dir, settings.environment)
    if config.streaming is None:
        raise ConfigError(f"service {config.service} has no streaming section: nothing to run")
    spec = config.streaming
    parallelism = settings.parallelism or spec.parallelism
    env.set_parallelism(parallelism)
    configure_checkpoints(env, config)

    t_env = t_env or StreamTableEnvironment.create(env)
    tag = re.sub(r"[^a-z0-9]+", "_", config.service.lower())
    source, predictions, dead_letters = f"vatic_{tag}_input", f"vatic_{tag}_predictions", f"vatic_{tag}_dead_letters"
    t_env.execute_sql(source_ddl(config, settings, source))
    t_env.execute_sql(sink_ddl(predictions, spec.output_topic, config, settings))
    t_env.execute_sql(sink_ddl(dead_letters, spec.dead_letter_topic, config, settings))
    shadows = None
    if config.shadow_topic is not None:
        shadows = f"vatic_{tag}_shadow_predictions"
        t_env.execute_sql(sink_ddl(shadows, config.shadow_topic, config, settings))

    statements = t_env.create_statement_set()
    if spec.mode == "vectorized":
        _vectorized(t_env, statements, settings, tag, source, predictions, dead_letters, shadows)
    else:
        _async(env, t_env, statements, config, settings, source, predictions, dead_letters, shadows, parallelism)
    statements.attach_as_datastream()
    return t_env


def _vectorized(
    t_env: StreamTableEnvironment, statements: Any, settings: JobSettings, tag: str, source: str,
    predictions: str, dead_letters: str, shadows: str | None,
) -> None:  # fmt: skip
    """source -> vectorized inference (one call per Arrow batch) -> two filtered inserts (three with a shadow)."""
    function = udf(VectorizedInference(settings), result_type=RESULT_TYPE, func_type="pandas")
    t_env.create_temporary_function(f"vatic_{tag}_infer", function)
    # table names are built from [a-z0-9_] only (see build): no quoting issue in these statements
    results = f"vatic_{tag}_results"
    t_env.execute_sql(
        f"CREATE TEMPORARY VIEW {results} AS SELECT vatic_{tag}_infer(k, v, `topic`, `partition`, `offset`, `ts`, "  # noqa: S608
        f"MAP_KEYS(`headers`), MAP_VALUES(`headers`)) AS o FROM {source}"
    )
    for sink, kind in ((predictions, "P"), (dead_letters, "D")):
        statements.add_insert_sql(
            f"INSERT INTO {sink} SELECT o.k, o.v, MAP_FROM_ARRAYS(o.hk, o.hv) FROM {results} "  # noqa: S608
            f"WHERE o.kind = '{kind}'"
        )
    if shadows is not None:
        statements.add_insert_sql(
            f"INSERT INTO {shadows} SELECT o.k, o.s, MAP_FROM_ARRAYS(o.hk, o.hv) FROM {results} "  # noqa: S608
            "WHERE o.s IS NOT NULL"
        )


def _async(
    env: StreamExecutionEnvironment, t_env: StreamTableEnvironment, statements: Any, config: ServiceConfig,
    settings: JobSettings, source: str, predictions: str, dead_letters: str, shadows: str | None, parallelism: int,
) -> None:  # fmt: skip
    """source -> key_by(subtask) -> keyed micro-batches -> AsyncDataStream over batches -> route."""
    spec = config.streaming
    assert spec is not None

    def uid(name: str) -> str:
        return f"vatic-{config.service}-{name}"

    raw = t_env.to_data_stream(t_env.from_path(source))
    batches = (
        raw.key_by(_bucket(subtask_keys(parallelism)), key_type=Types.INT())
        .process(MicroBatchFunction(spec.batch_size, spec.batch_wait_ms), output_type=PICKLED)
        .uid(uid("batch"))
        .name(f"{config.service}: micro-batch")
    )
    # the core retries transient errors for up to retry.budget_s; the operator timeout sits above it
    timeout = Time.milliseconds(int((spec.retry.budget_s + 2 * config.timeout_s + 30) * 1000))
    inferred = (
        AsyncDataStream.unordered_wait(
            batches, BatchedInferenceFunction(settings), timeout, spec.capacity, output_type=PICKLED
        )
        .uid(uid("infer"))
        .name(f"{config.service}: enrich + infer")
    )
    routed = inferred.process(RouteFunction(), output_type=SINK_ROW).uid(uid("route")).name(f"{config.service}: route")
    statements.add_insert(predictions, t_env.from_data_stream(routed))
    statements.add_insert(dead_letters, t_env.from_data_stream(routed.get_side_output(DEAD_LETTERS)))
    if shadows is not None:
        statements.add_insert(shadows, t_env.from_data_stream(routed.get_side_output(SHADOWS)))


def local_environment(config: ServiceConfig, settings: JobSettings) -> StreamExecutionEnvironment:
    """A mini-cluster environment configured for the job."""
    return StreamExecutionEnvironment.get_execution_environment(flink_configuration(config, settings))
