"""The streaming job's own metrics, registered in Flink's metric system and exported by its reporters.

:class:`JobMetrics` is built from a PyFlink metric group (``FunctionContext.get_metric_group()`` in the vectorized
function's ``open``, ``RuntimeContext.get_metrics_group()`` in the async operator's) and records one micro-batch
at a time (:meth:`JobMetrics.batch`), called by :class:`~vatic.streaming.batch.BatchProcessor` once per batch.
Every metric lives under the group ``vatic``; with Flink's Prometheus reporter
(``metrics.reporter.prom.factory.class``, :func:`prometheus_reporter`) the names are
``flink_taskmanager_job_task_operator_vatic_<name>`` with Flink's variables (job, task, subtask...) as labels:

=========================================  ========================================================================
metric (after the prefix above)            meaning
=========================================  ========================================================================
``eventsIn``                               records read from the input topic (one per Kafka record, bad or not)
``predictions``                            prediction records written
``stage_deadLetters{stage=...}``           dead-letter records written, by stage (decode, enrich, infer, encode)
``batches``                                micro-batches processed
``modelCalls``                             V2 requests made, retries and the splits that isolate a refused input
                                           included (``modelCalls`` / ``batches`` above 1: retries or refusals)
``modelRetries``                           of those, the requests repeated after a failed attempt (an outage
                                           answer, a timeout, a reset, a suspicious 5xx)
``batchSize_le_bucket{le=...}``            histogram of records per micro-batch (cumulative buckets), with
``batchSize_count`` / ``batchSize_sum``    its count and sum
``modelCallMs_le_bucket{le=...}``          histogram of the model-call time of a batch in ms (retries included)
``featureReadMs_le_bucket{le=...}``        histogram of the feature-read time of a batch in ms (from the first
                                           feature read on: services with features only)
``version_predictions{version=...}``       prediction records by the model version that answered (a canary's
                                           share, a rollout's switch)
``shadowState_shadowBatches{shadowState=}``  micro-batches by what the shadow did: answered, failed, late
                                           (services with a shadow only, as are the three below)
``shadowPredictions``                      shadow answers (written to the shadow topic when they came in time)
``shadowCompared`` / ``shadowAgreed``      events both models answered, and of those the ones they agree on
=========================================  ========================================================================

Histograms: Flink has no cumulative histogram of its own (its ``Histogram`` becomes a Prometheus *summary*, whose
quantiles cannot be aggregated over subtasks or pods, and PyFlink offers none), so each histogram is a set of
series, one per upper bound under a ``le`` key group, plus ``_count`` and ``_sum``: exactly the series of a
Prometheus histogram, so that ``histogram_quantile(0.99, sum by (le) (rate(..._le_bucket[5m])))`` works across
subtasks (why, and the cost: docs/decisions/0014-job-metrics.md). The reporter must keep label values as they are
(``filterLabelValueCharacters: false``), or ``le="2.5"`` and ``le="+Inf"`` would lose their ``.`` and ``+``.

How the numbers travel: every count is a plain Python integer of the worker (:class:`Count`), registered once as a
PyFlink gauge; PyFlink reads the gauges when a bundle finishes, on the bundle's thread, and sends them to the JVM.
Not PyFlink counters, for two reasons: a PyFlink (Beam) counter records into the metrics container of the
*calling thread*, and the async topology's function runs on PyFlink's own event-loop thread, which has none (its
increments would be lost without a word); and an ``inc`` on a Python int costs a fraction of a Beam counter's.
Flink's Prometheus reporter exports Flink counters as Prometheus gauges anyway, so the exported series are the
same (monotonic, reset when a worker restarts: ``rate()`` handles both). A scrape sees a batch at most one bundle
(``batch_wait_ms``) after it was processed. This module imports no PyFlink (the metric group is duck-typed), so
it is tested and benchmarked without a Flink worker.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from vatic.streaming.batch import Output

__all__ = [
    "BATCH_SIZE_BOUNDS",
    "LATENCY_BOUNDS_MS",
    "PROMETHEUS_FACTORY",
    "STAGES",
    "Histogram",
    "JobMetrics",
    "prometheus_reporter",
]

#: the stages a dead letter can come from (created up front so that their rates read 0, not "no data")
STAGES = ("decode", "enrich", "infer", "encode")
#: upper bounds of the model-call and feature-read histograms (ms); +Inf is added
LATENCY_BOUNDS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
#: upper bounds of the batch-size histogram (records); +Inf is added
BATCH_SIZE_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
#: Flink's Prometheus reporter (shipped as a plugin in every Flink distribution, PyFlink's included)
PROMETHEUS_FACTORY = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"


class MetricGroup(Protocol):
    """What this module needs of ``pyflink.metrics.MetricGroup``."""

    def add_group(self, name: str, extra: str | None = None) -> MetricGroup: ...

    def gauge(self, name: str, obj: Callable[[], int]) -> None: ...


class Count:
    """A monotonic count kept in the worker and exported as a Flink gauge read when a bundle finishes."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, n: int = 1) -> None:
        self.value += n

    def get(self) -> int:
        return self.value


def prometheus_reporter(port: int | str) -> dict[str, str]:
    """The Flink configuration of the Prometheus reporter ``prom`` on ``port`` (a port or a range such as
    ``9250-9260``, for several Flink processes on one host), label values kept as they are."""
    return {
        "metrics.reporter.prom.factory.class": PROMETHEUS_FACTORY,
        "metrics.reporter.prom.port": str(port),
        "metrics.reporter.prom.filterLabelValueCharacters": "false",
    }


def _le(bound: float) -> str:
    """A bucket's ``le`` label as Prometheus writes it: ``5``, ``2.5``, ``+Inf``."""
    if math.isinf(bound):
        return "+Inf"
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


class Histogram:
    """A Prometheus-style histogram: ``<name>_le_bucket{le=b}`` (cumulative), ``<name>_count``, ``<name>_sum``
    (the sum is rounded to an integer: the series are integer gauges)."""

    def __init__(self, group: MetricGroup, name: str, bounds: Sequence[float]) -> None:
        if not bounds or list(bounds) != sorted(set(bounds)):
            raise ValueError(f"histogram {name}: bounds must increase strictly, got {list(bounds)}")
        own = group.add_group(name)
        self.bounds = tuple(bounds)
        #: observations per bucket, not cumulative (the last one is +Inf); the gauges add them up when read
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        for index, bound in enumerate((*bounds, math.inf)):
            own.add_group("le", _le(bound)).gauge("bucket", self._cumulative(index))
        own.gauge("count", lambda: sum(self.counts))
        own.gauge("sum", lambda: round(self.sum))

    def _cumulative(self, index: int) -> Callable[[], int]:
        return lambda: sum(self.counts[: index + 1])

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose bound is at least ``value``."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value


class JobMetrics:
    """The job's metrics in one operator subtask (see the module docstring for the names)."""

    def __init__(self, group: MetricGroup) -> None:
        from vatic.streaming.batch import PREDICTION  # here: the stack's CLI imports this module for the reporter

        self._prediction = PREDICTION
        vatic = group.add_group("vatic")
        self._vatic = vatic
        self.events_in = self._count(vatic, "eventsIn")
        self.predictions = self._count(vatic, "predictions")
        self.batches = self._count(vatic, "batches")
        self.model_calls = self._count(vatic, "modelCalls")
        self.model_retries = self._count(vatic, "modelRetries")
        self._dead: dict[str, Count] = {stage: self._dead_count(stage) for stage in STAGES}
        self.batch_size = Histogram(vatic, "batchSize", BATCH_SIZE_BOUNDS)
        self.model_call_ms = Histogram(vatic, "modelCallMs", LATENCY_BOUNDS_MS)
        #: made at the first feature read: a service without features exports no such series
        self.feature_read_ms: Histogram | None = None
        self._versions: dict[str, Count] = {}
        #: made at the first shadow outcome: batches by state, and answers / compared / agreed
        self._shadow_states: dict[str, Count] = {}
        self._shadow_counts: tuple[Count, Count, Count] | None = None

    @staticmethod
    def _count(group: MetricGroup, name: str) -> Count:
        count = Count()
        group.gauge(name, count.get)
        return count

    def _dead_count(self, stage: str) -> Count:
        return self._count(self._vatic.add_group("stage", stage), "deadLetters")

    def dead_letter(self, stage: str, n: int = 1) -> None:
        """Count ``n`` dead letters of ``stage`` (a stage not in :data:`STAGES` gets its own label value)."""
        count = self._dead.get(stage)
        if count is None:
            count = self._dead[stage] = self._dead_count(stage)
        count.inc(n)

    def version_predictions(self, version: str, n: int) -> None:
        """Count ``n`` predictions answered by ``version``."""
        count = self._versions.get(version)
        if count is None:
            count = self._versions[version] = self._count(self._vatic.add_group("version", version), "predictions")
        count.inc(n)

    def _shadow_state(self, state: str) -> Count:
        count = self._shadow_states.get(state)
        if count is None:
            count = self._shadow_states[state] = self._count(
                self._vatic.add_group("shadowState", state), "shadowBatches"
            )
        return count

    def shadow(self, state: str, predictions: int, compared: int, agreed: int) -> None:
        """Record one micro-batch's shadow outcome (``state``: answered, failed, late)."""
        if self._shadow_counts is None:
            for known in ("answered", "failed", "late"):  # made together, so that their rates read 0, not "no data"
                self._shadow_state(known)
            self._shadow_counts = (
                self._count(self._vatic, "shadowPredictions"),
                self._count(self._vatic, "shadowCompared"),
                self._count(self._vatic, "shadowAgreed"),
            )
        self._shadow_state(state).inc()
        for count, n in zip(self._shadow_counts, (predictions, compared, agreed), strict=True):
            count.inc(n)

    def batch(
        self,
        records: int,
        outputs: Iterable[Output],
        *,
        model_ms: float | None = None,
        feature_ms: float | None = None,
        model_calls: int = 0,
        model_retries: int = 0,
    ) -> None:
        """Record one micro-batch: ``records`` read, its ``outputs`` (predictions, and dead letters by their
        ``vatic-stage`` header), the time of its model calls and of its feature read (None: none was made) and
        the number of V2 requests made (``model_retries`` of them repeats after a failed attempt)."""
        self.batches.inc()
        self.events_in.inc(records)
        self.batch_size.observe(records)
        predicted = 0
        dead: dict[str, int] = {}
        for output in outputs:
            if output.kind == self._prediction:
                predicted += 1
            else:
                stage = output.headers.get("vatic-stage", b"unknown").decode()
                dead[stage] = dead.get(stage, 0) + 1
        if predicted:
            self.predictions.inc(predicted)
        for stage, n in dead.items():
            self.dead_letter(stage, n)
        if model_calls:
            self.model_calls.inc(model_calls)
        if model_retries:
            self.model_retries.inc(model_retries)
        if model_ms is not None and model_calls:
            self.model_call_ms.observe(model_ms)
        if feature_ms is not None:
            if self.feature_read_ms is None:
                self.feature_read_ms = Histogram(self._vatic, "featureReadMs", LATENCY_BOUNDS_MS)
            self.feature_read_ms.observe(feature_ms)
