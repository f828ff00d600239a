"""The drift monitor: a second job of a service, reading its predictions topic and writing one drift record per
event-time window and model version to ``<service>.drift`` (schema ``drift``).

::

    kafka source (the predictions topic: the pipeline's source table, read_committed)
      -> vatic_<service>_cells(v, ts)  vectorized (Arrow) function, one call per batch: decode each prediction,
                                       bin it with its version's reference profile (vatic.serving.core.drift), and
                                       add the batch's cells up per (window, model version); one row per record
                                       (its event time and version), the sums ride on one record of each group
      -> event time + watermark        the watermark trails the newest event time by monitoring.lateness_s: a
                                       prediction later than that lands in no window (Flink counts it in
                                       numLateRecordsDropped); partitions idle for idle_s stop holding it back
      -> UNNEST -> TUMBLE(window_s) GROUP BY window, version, cell: SUM   (JVM, incremental; state: counts)
      -> key_by(window, version)
      -> drift report   [uid vatic-<service>-drift]  at the window's end (event-time timer, after every count of the
                                                     window has arrived): judge the window, update the gauges,
                                                     encode the record
      -> drift sink (Kafka, the service's guarantee: transactions committed on checkpoints under exactly_once)

Records cross from the JVM to Python as Arrow batches (the vectorized function) and, per window, only its few
hundred count rows (the report operator): the monitor's cost grows with the predictions' decode and binning, not
with PyFlink's per-record overhead. Counts are state in the JVM's window operator and the report operator's keyed
state, so a restart from a checkpoint neither loses nor double-counts a prediction (exactly once under
``read_committed`` predictions).

Reference profiles are read from the model registry (``profile.json`` of each version, once per version; a version
without one is re-read after :data:`PROFILE_RETRY_S`); a version without a profile is reported (its prediction
count) and never judged. Records on the predictions topic that cannot be decoded are counted (``undecodable``) and
skipped: they are not this job's input data, and the job that wrote them dead-letters its own bad inputs.

Metrics (the reporter of :mod:`vatic.streaming.metrics`; integer gauges, so ratios are exported in thousandths),
under ``flink_taskmanager_job_task_operator_vatic_``:

* ``model_version_drifted_driftWindows{model,version,drifted}``: windows reported, by verdict (``true``,
  ``false``, ``unjudged``);
* ``model_version_windowPredictions{model,version}``: predictions in the version's last window;
* ``model_version_column_psi_x1000{model,version,column}``: PSI x 1000 of each column in the last window;
* ``model_version_column_missingRate_x1000{...}``: its missing rate x 1000;
* ``model_version_column_wasserstein_x1000{...}``: numeric outputs, the Wasserstein distance x 1000;
* ``model_version_column_drifted{...}``: 1 when the column drifted in the last judged window (the alert's);
* ``monitoredPredictions`` / ``undecodable``: records read, and records skipped.
"""

from __future__ import annotations

import calendar
import json
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd  # type: ignore[import-untyped]
from pyflink.common import Row, Types
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor
from pyflink.table import DataTypes, Schema, StreamTableEnvironment
from pyflink.table.udf import FunctionContext, ScalarFunction, udf

from vatic.connectors.kafka import check_access
from vatic.schemas import AvroCodec, load_schema, topic_subject
from vatic.schemas.errors import ConfigError, ModelNotFound, Retryable
from vatic.serving.config import ServiceConfig, load_service
from vatic.serving.core.drift import PROFILE_FILE, Profile, WindowDrift, judge
from vatic.streaming.metrics import Count
from vatic.streaming.operators import SINK_ROW
from vatic.streaming.settings import JobSettings

__all__ = ["CELLS_TYPE", "PROFILE_RETRY_S", "DriftReport", "Profiles", "WindowCells", "build", "check_kafka"]

log = logging.getLogger(__name__)

#: how long a version without a readable profile waits before the registry is asked again
PROFILE_RETRY_S = 60.0
#: bundle time of the monitor's function (ms): a partial batch waits this long (throughput, not latency)
MONITOR_BUNDLE_MS = 1000

#: the function's row: event time (ms), "model@version" (null: undecodable, dropped), and the batch's counts of the
#: record's (window, version) as "cell=n" strings on one record of the group (empty on the others)
CELLS_TYPE = DataTypes.ROW(
    [
        DataTypes.FIELD("et", DataTypes.BIGINT()),
        DataTypes.FIELD("mv", DataTypes.STRING()),
        DataTypes.FIELD("cells", DataTypes.ARRAY(DataTypes.STRING())),
    ]
)


def monitor_config(settings: JobSettings) -> ServiceConfig:
    """The service config the monitor judges with: the service's, with the run's overrides of its monitoring
    section (``monitor_window_s``, ``monitor_lateness_s``, ``monitor_min_count``)."""
    config = load_service(settings.service_dir, settings.environment)
    overrides = {
        name: value
        for name, value in (
            ("window_s", settings.monitor_window_s),
            ("lateness_s", settings.monitor_lateness_s),
            ("min_count", settings.monitor_min_count),
        )
        if value is not None
    }
    if not overrides:
        return config
    return config.model_copy(update={"monitoring": config.monitoring.model_copy(update=overrides)})


def tag_of(config: ServiceConfig) -> str:
    return re.sub(r"[^a-z0-9]+", "_", config.service.lower())


def consumer_group(config: ServiceConfig) -> str:
    """The monitor's Kafka group (offsets committed on checkpoints, for lag monitoring only)."""
    return f"{config.consumer_group}-monitor"


def transactional_prefix(config: ServiceConfig) -> str:
    return f"vatic-{config.service}-{config.environment}-monitor-"


class Profiles:
    """Reference profiles by model and version, read from the registry once per version."""

    def __init__(self, config: ServiceConfig, settings: JobSettings) -> None:
        self.config = config
        self.settings = settings
        self._known: dict[tuple[str, str], Profile | None] = {}
        self._retry_at: dict[tuple[str, str], float] = {}
        self._registry: Any = None

    def _open(self) -> Any:
        if self._registry is None:
            from vatic.connectors.registry import open_registry
            from vatic.connectors.registry.spec import registry_from_spec

            if self.settings.registry_root is not None:
                self._registry = open_registry("local", root=self.settings.registry_root)
            else:
                self._registry = registry_from_spec(self.config.registry, service_dir=self.settings.service_dir)
        return self._registry

    def get(self, model: str, version: str) -> Profile | None:
        key = (model, version)
        if key in self._known and (self._known[key] is not None or time.monotonic() < self._retry_at[key]):
            return self._known[key]
        profile: Profile | None = None
        registry_model = self.config.registry.model if model == self.config.model.name else None
        try:
            raw = self._open().read_file(f"{registry_model or model}:{version}", PROFILE_FILE)
            profile = Profile.from_json(json.loads(raw)) if raw is not None else None
            if profile is None:
                log.warning("model %s version %s has no %s: its windows are counted, not judged", model, version,
                            PROFILE_FILE)  # fmt: skip
        except (ModelNotFound, Retryable, ConfigError, ValueError, OSError) as exc:
            log.warning("cannot read the profile of %s version %s: %s", model, version, exc)
        self._known[key] = profile
        self._retry_at[key] = time.monotonic() + PROFILE_RETRY_S
        return profile


class WindowCells(ScalarFunction):  # type: ignore[misc]
    """The vectorized function: decode and bin a batch of predictions; sums per (window, version)."""

    def __init__(self, settings: JobSettings) -> None:
        self.settings = settings

    def open(self, function_context: FunctionContext) -> None:
        from vatic.streaming.batch import schema_source

        self.config = monitor_config(self.settings)
        assert self.config.streaming is not None
        self.codec = AvroCodec(
            schema_source(self.settings), topic_subject(self.config.streaming.output_topic), load_schema("prediction")
        )
        self.window_ms = int(self.config.monitoring.window_s * 1000)
        self.profiles = Profiles(self.config, self.settings)
        group = function_context.get_metric_group().add_group("vatic")
        self.read, self.undecodable = Count(), Count()
        group.gauge("monitoredPredictions", self.read.get)
        group.gauge("undecodable", self.undecodable.get)

    def eval(self, v: pd.Series, ts: pd.Series) -> pd.DataFrame:
        times: list[int | None] = []
        versions: list[str | None] = []
        groups: dict[tuple[int, str], tuple[int, dict[str, int]]] = {}
        profiles: dict[str, Profile | None] = {}
        for index, (raw, when) in enumerate(zip(v, ts, strict=True)):
            try:
                prediction = self.codec.decode(raw)
                timings = prediction.get("timings") or {}
                event_time = int(timings["event_time"])
                model, version = str(prediction["model_name"]), str(prediction["model_version"])
            except Retryable:
                raise  # the schema registry is away: a task failure, restarted from the checkpoint
            except Exception as exc:  # not a prediction this job can read: counted, skipped
                self.undecodable.inc()
                log.debug("undecodable record on the predictions topic: %s", exc)
                times.append(_epoch_ms(when))
                versions.append(None)
                continue
            key = f"{model}@{version}"
            times.append(event_time)
            versions.append(key)
            carrier, counts = groups.setdefault((event_time // self.window_ms, key), (index, {}))
            if key not in profiles:  # once per version and batch: the registry cache is not on the per-record path
                profiles[key] = self.profiles.get(model, version)
            profile = profiles[key]
            cells = profile.cells(prediction) if profile is not None else ["#"]
            for cell in cells:
                counts[cell] = counts.get(cell, 0) + 1
        self.read.inc(len(v))
        cells_out: list[list[str]] = [[] for _ in range(len(v))]
        for carrier, counts in groups.values():
            cells_out[carrier] = [f"{cell}={n}" for cell, n in counts.items()]
        return pd.DataFrame({"et": times, "mv": versions, "cells": cells_out})


def _epoch_ms(ts: Any) -> int | None:
    from vatic.streaming.batch import epoch_ms

    return None if ts is None or pd.isna(ts) else epoch_ms(ts)


def utc_ms(moment: Any) -> int:
    """Epoch milliseconds of a window bound (a naive ``datetime`` in the job's UTC session time zone)."""
    if moment.tzinfo is not None:
        return int(moment.timestamp() * 1000)
    return int(calendar.timegm(moment.timetuple()) * 1000 + moment.microsecond // 1000)


class DriftReport(KeyedProcessFunction):  # type: ignore[misc]
    """Adds up a window's counts per version (keyed state) and judges the window at its end."""

    def __init__(self, settings: JobSettings) -> None:
        self.settings = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        from vatic.streaming.batch import schema_source

        self.config = monitor_config(self.settings)
        self.codec = AvroCodec(
            schema_source(self.settings), topic_subject(self.config.drift_topic), load_schema("drift")
        )
        _ = self.codec.schema_id  # registered (or looked up) now: a registry outage fails the start, not a window
        self.profiles = Profiles(self.config, self.settings)
        self.counts = runtime_context.get_map_state(MapStateDescriptor("counts", Types.STRING(), Types.LONG()))
        self.group = runtime_context.get_metrics_group().add_group("vatic")
        self.gauges: dict[tuple[str, ...], list[int]] = {}
        self.windows: dict[tuple[str, str, str], Count] = {}

    def process_element(self, value: Row, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        cell, n = value[4], int(value[5])
        self.counts.put(cell, (self.counts.get(cell) or 0) + n)
        ctx.timer_service().register_event_time_timer(utc_ms(value[1]) - 1)  # the window's last millisecond
        return iter(())

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Row]:
        counts = {cell: int(n) for cell, n in self.counts.items()}
        self.counts.clear()
        _, key = ctx.get_current_key().split("|", 1)
        model, version = key.split("@", 1)
        window_ms = int(self.config.monitoring.window_s * 1000)
        end = timestamp + 1
        spec = self.config.monitoring
        drift = judge(
            self.profiles.get(model, version), counts, service=self.config.service, model_name=model,
            model_version=version, window=(end - window_ms, end), psi_threshold=spec.psi_threshold,
            missing_rise=spec.missing_rise, min_count=spec.min_count,
        )  # fmt: skip
        self._export(drift)
        payload = self.codec.encode(drift.record(time.time_ns() // 1_000_000), validate=False)
        yield Row(version.encode(), payload, {})

    def _gauge(self, labels: tuple[tuple[str, str], ...], name: str) -> list[int]:
        key = (*(f"{k}={v}" for k, v in labels), name)
        cell = self.gauges.get(key)
        if cell is None:
            cell = self.gauges[key] = [0]
            group = self.group
            for label, value in labels:
                group = group.add_group(label, value)
            group.gauge(name, lambda: cell[0])
        return cell

    def _export(self, drift: WindowDrift) -> None:
        version = (("model", drift.model_name), ("version", drift.model_version))
        outcome = ("true" if drift.drifted else "false") if drift.judged else "unjudged"
        windows = self.windows.get((drift.model_name, drift.model_version, outcome))
        if windows is None:
            windows = self.windows[(drift.model_name, drift.model_version, outcome)] = Count()
            group = self.group.add_group("model", drift.model_name).add_group("version", drift.model_version)
            group.add_group("drifted", outcome).gauge("driftWindows", windows.get)
        windows.inc()
        self._gauge(version, "windowPredictions")[0] = drift.predictions
        for column in drift.columns:
            labels = (*version, ("column", column.name))
            self._gauge(labels, "psi_x1000")[0] = round((column.psi or 0.0) * 1000)
            self._gauge(labels, "missingRate_x1000")[0] = round(column.missing_rate * 1000)
            self._gauge(labels, "drifted")[0] = int(column.drifted)
            if column.wasserstein is not None:
                self._gauge(labels, "wasserstein_x1000")[0] = round(column.wasserstein * 1000)


def sql_interval(ms: int) -> str:
    """A SQL interval literal of ``ms`` milliseconds (Flink's parser has no MILLISECOND interval unit)."""
    seconds, millis = divmod(ms, 1000)
    minutes, second = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    days, hour = divmod(hours, 24)
    return f"INTERVAL '{days} {hour:02d}:{minute:02d}:{second:02d}.{millis:03d}' DAY TO SECOND(3)"


def check_kafka(config: ServiceConfig, settings: JobSettings) -> None:
    """Fail at submission, with one line, when Kafka refuses the monitor's identity or an ACL it needs."""
    assert config.streaming is not None
    check_access(
        settings.kafka(),
        read=[config.streaming.output_topic],
        write=[config.drift_topic],
        group=consumer_group(config),
        transactional_prefix=transactional_prefix(config) if config.streaming.guarantee == "exactly_once" else None,
    )


def monitor_configuration(config: ServiceConfig, conf: Any) -> None:
    """The monitor's Python batching and watermark idleness, set on the job's Flink configuration."""
    batch = config.monitoring.batch_size
    conf.set_string("python.fn-execution.arrow.batch.size", str(batch))
    conf.set_string("python.fn-execution.bundle.size", str(batch))
    conf.set_string("python.fn-execution.bundle.time", str(MONITOR_BUNDLE_MS))
    conf.set_string("table.exec.source.idle-timeout", f"{int(config.monitoring.idle_s * 1000)} ms")
    conf.set_string("pipeline.name", f"vatic-{config.service}-monitor")


def build(
    env: StreamExecutionEnvironment, settings: JobSettings, t_env: StreamTableEnvironment | None = None
) -> StreamTableEnvironment:
    """Add one service's drift monitor to ``env``; returns the table environment that owns its Kafka tables."""
    from vatic.streaming.job import configure_checkpoints, sink_ddl, source_ddl

    config = monitor_config(settings)
    if config.streaming is None:
        raise ConfigError(f"service {config.service} has no streaming section: no predictions topic to monitor")
    spec, monitoring = config.streaming, config.monitoring
    parallelism = settings.parallelism or monitoring.parallelism
    env.set_parallelism(parallelism)
    configure_checkpoints(env, config)
    t_env = t_env or StreamTableEnvironment.create(env)
    # windows align to the epoch, and their bounds read as UTC, whatever the machine's time zone
    t_env.get_config().set("table.local-time-zone", "UTC")
    tag = tag_of(config)
    source, sink = f"vatic_{tag}_monitored", f"vatic_{tag}_drift"
    t_env.execute_sql(source_ddl(config, settings, source, topic=spec.output_topic, group=consumer_group(config)))
    t_env.execute_sql(sink_ddl(sink, config.drift_topic, config, settings, prefix=transactional_prefix(config)))
    cells = udf(WindowCells(settings), result_type=CELLS_TYPE, func_type="pandas")
    t_env.create_temporary_function(f"vatic_{tag}_cells", cells)
    rows = t_env.sql_query(
        f"SELECT o.et AS et, o.mv AS mv, o.cells AS cells FROM "  # noqa: S608
        f"(SELECT vatic_{tag}_cells(v, `ts`) AS o FROM {source}) WHERE o.mv IS NOT NULL"
    )
    timed = t_env.from_data_stream(
        t_env.to_data_stream(rows),
        Schema.new_builder()
        .column("et", DataTypes.BIGINT())
        .column("mv", DataTypes.STRING())
        .column("cells", DataTypes.ARRAY(DataTypes.STRING()))
        .column_by_expression("rt", "TO_TIMESTAMP_LTZ(et, 3)")
        .watermark("rt", f"rt - {sql_interval(int(monitoring.lateness_s * 1000))}")
        .build(),
    )
    t_env.create_temporary_view(f"vatic_{tag}_timed", timed)
    t_env.create_temporary_view(
        f"vatic_{tag}_cell_counts",
        t_env.sql_query(
            f"SELECT rt, mv, SPLIT_INDEX(c.cell, '=', 0) AS cell, CAST(SPLIT_INDEX(c.cell, '=', 1) AS BIGINT) AS n "  # noqa: S608
            f"FROM vatic_{tag}_timed CROSS JOIN UNNEST(cells) AS c(cell)"
        ),
    )
    windows = t_env.sql_query(
        f"SELECT window_start, window_end, window_time, mv, cell, SUM(n) AS n FROM TABLE(TUMBLE("  # noqa: S608
        f"TABLE vatic_{tag}_cell_counts, DESCRIPTOR(rt), {sql_interval(int(monitoring.window_s * 1000))})) "
        "GROUP BY window_start, window_end, window_time, mv, cell"
    )
    reports = (
        t_env.to_data_stream(windows)
        .key_by(lambda row: f"{utc_ms(row[1])}|{row[3]}", key_type=Types.STRING())
        .process(DriftReport(settings), output_type=SINK_ROW)
        .uid(f"vatic-{config.service}-drift")
        .name(f"{config.service}: drift report")
    )
    statements = t_env.create_statement_set()
    statements.add_insert(sink, t_env.from_data_stream(reports))
    statements.attach_as_datastream()
    return t_env
