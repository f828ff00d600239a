"""The job's metric definitions (:mod:`vatic.streaming.metrics`) on PyFlink's real metric group, read back the way
PyFlink's worker reads them when a bundle ends; and where the job's configuration turns the endpoint on.

The live endpoint of a running job is tested in ``test_job_metrics.py``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from pyflink.fn_execution.metrics.process.metric_impl import GenericMetricGroup, MetricGroupType

from vatic.cli.stack.artifacts import Artifacts
from vatic.cli.stack.settings import StackSettings
from vatic.schemas.errors import PortInUse
from vatic.serving.config import load_service
from vatic.streaming import job
from vatic.streaming.batch import DEAD_LETTER, PREDICTION, Output
from vatic.streaming.main import _metrics_port
from vatic.streaming.metrics import LATENCY_BOUNDS_MS, PROMETHEUS_FACTORY, Histogram, JobMetrics, prometheus_reporter
from vatic.streaming.settings import JobSettings, job_arguments, parse_job_arguments

ROOT = Path(__file__).resolve().parents[2]
FRAUD = ROOT / "examples" / "fraud_detection" / "service"


def read(group: GenericMetricGroup) -> dict[tuple[str, ...], int]:
    """Every gauge under ``group`` as PyFlink reports it (``Operation._update_gauge``): its namespace (group
    names, keys and values in order) plus its name -> the value read now."""
    found: dict[tuple[str, ...], int] = {}

    def walk(g: GenericMetricGroup) -> None:
        names, _ = g._get_metric_group_names_and_types()
        for name, gauge in g._flink_gauge.items():
            found[(*names, name)] = gauge()
        for sub in g._sub_groups:
            walk(sub)

    walk(group)
    return found


def output(kind: str, stage: str | None = None) -> Output:
    headers = {"vatic-stage": stage.encode()} if stage else {"vatic-event-id": b"e"}
    return Output(kind, None, b"v", headers)


@pytest.fixture
def root() -> GenericMetricGroup:
    return GenericMetricGroup(None, None)  # what PyFlink hands a function (base_metric_group)


def test_a_batch_counts_events_in_predictions_and_dead_letters_by_stage(root: GenericMetricGroup) -> None:
    metrics = JobMetrics(root)
    outputs = [output(PREDICTION)] * 5 + [output(DEAD_LETTER, "decode")] * 2 + [output(DEAD_LETTER, "infer")]
    metrics.batch(8, outputs, model_ms=12.0, feature_ms=3.0, model_calls=3, model_retries=1)
    metrics.batch(3, [output(DEAD_LETTER, "decode")] * 3)  # nothing decoded: no model call, no feature read
    values = read(root)
    assert values[("vatic", "eventsIn")] == 11
    assert values[("vatic", "predictions")] == 5
    assert values[("vatic", "batches")] == 2
    assert values[("vatic", "modelCalls")] == 3
    assert values[("vatic", "modelRetries")] == 1
    assert values[("vatic", "stage", "decode", "deadLetters")] == 5
    assert values[("vatic", "stage", "infer", "deadLetters")] == 1
    assert values[("vatic", "stage", "enrich", "deadLetters")] == 0  # known stages exist before their first one
    assert values[("vatic", "stage", "encode", "deadLetters")] == 0
    assert values[("vatic", "modelCallMs", "count")] == 1
    assert values[("vatic", "featureReadMs", "count")] == 1
    assert values[("vatic", "batchSize", "count")] == 2
    assert values[("vatic", "batchSize", "sum")] == 11


def test_stage_and_le_are_key_value_groups_so_that_they_become_labels(root: GenericMetricGroup) -> None:
    JobMetrics(root)
    vatic = root.add_group("vatic")  # PyFlink hands back the existing group
    for key, value, name in (("stage", "enrich", "deadLetters"), ("le", "+Inf", "bucket")):
        group = (vatic.add_group("batchSize") if key == "le" else vatic).add_group(key, value)
        names, types = group._get_metric_group_names_and_types()
        assert names[-2:] == [key, value]
        # what the JVM parses: a key group followed by its value group is a variable (a Prometheus label)
        assert types[-2:] == [str(MetricGroupType.key), str(MetricGroupType.value)]
        assert name in group._flink_gauge


def test_a_service_without_features_exports_no_feature_read_series(root: GenericMetricGroup) -> None:
    metrics = JobMetrics(root)
    metrics.batch(4, [output(PREDICTION)] * 4, model_ms=3.0, model_calls=1)
    assert not any("featureReadMs" in key for key in read(root))
    metrics.batch(4, [output(PREDICTION)] * 4, model_ms=3.0, feature_ms=1.0, model_calls=1)
    assert read(root)[("vatic", "featureReadMs", "le", "1", "bucket")] == 1


def test_a_stage_outside_the_known_ones_gets_its_own_label(root: GenericMetricGroup) -> None:
    metrics = JobMetrics(root)
    metrics.batch(2, [output(DEAD_LETTER, "route"), output(DEAD_LETTER)])  # no stage header: "unknown"
    values = read(root)
    assert values[("vatic", "stage", "route", "deadLetters")] == 1


def test_histogram_buckets_are_cumulative_and_inclusive_with_count_and_sum(root: GenericMetricGroup) -> None:
    histogram = Histogram(root, "h", (1, 2.5, 10))
    for value in (0.2, 1, 2.5, 2.6, 10, 11, 500):
        histogram.observe(value)
    values = read(root)
    assert values[("h", "le", "1", "bucket")] == 2  # 0.2 and 1: a bound counts the values equal to it
    assert values[("h", "le", "2.5", "bucket")] == 3
    assert values[("h", "le", "10", "bucket")] == 5
    assert values[("h", "le", "+Inf", "bucket")] == 7
    assert values[("h", "count")] == 7
    assert values[("h", "sum")] == round(0.2 + 1 + 2.5 + 2.6 + 10 + 11 + 500)


def test_latency_buckets_have_readable_le_labels(root: GenericMetricGroup) -> None:
    JobMetrics(root)
    les = sorted({key[3] for key in read(root) if key[1] == "modelCallMs" and key[2] == "le"}, key=float)
    assert les == [*("2.5" if b == 2.5 else str(b) for b in LATENCY_BOUNDS_MS), "+Inf"]


@pytest.mark.parametrize("bounds", [(), (1, 1, 2), (5, 2)])
def test_histogram_bounds_must_increase_strictly(root: GenericMetricGroup, bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="increase strictly"):
        Histogram(root, "h", bounds)


def test_counts_made_on_another_thread_are_read_on_the_bundle_thread(root: GenericMetricGroup) -> None:
    """The async topology's function runs on PyFlink's event-loop thread; the gauges are read on the bundle's."""
    metrics = JobMetrics(root)
    worker = threading.Thread(target=lambda: [metrics.batch(4, [output(PREDICTION)] * 4) for _ in range(50)])
    worker.start()
    worker.join()
    values = read(root)
    assert (values[("vatic", "eventsIn")], values[("vatic", "predictions")]) == (200, 200)


def test_the_reporter_keeps_label_values_as_they_are() -> None:
    assert prometheus_reporter(19249) == {
        "metrics.reporter.prom.factory.class": PROMETHEUS_FACTORY,
        "metrics.reporter.prom.port": "19249",
        "metrics.reporter.prom.filterLabelValueCharacters": "false",
    }


def test_pyflink_ships_the_prometheus_reporter_of_its_own_version() -> None:
    """The local job's mini-cluster loads reporters from PyFlink's plugins folder."""
    import pyflink
    from pyflink.version import __version__

    plugin = Path(pyflink.__file__).parent / "plugins" / "metrics-prometheus"
    assert [p.name for p in plugin.glob("*.jar")] == [f"flink-metrics-prometheus-{__version__}.jar"]


def _conf(tmp_path: Path, *, local: bool = True, **settings: Any) -> dict[str, str]:
    jar = Artifacts(StackSettings().cache).flink_kafka_connector
    if not jar.is_file():
        pytest.skip("the Flink Kafka connector is not fetched: run `make setup`")
    config = load_service(FRAUD, "local")
    one = JobSettings(service_dir=FRAUD, kafka_connector_jar=jar, checkpoint_dir=tmp_path, **settings)
    return dict(job.flink_configuration(config, one, local=local).to_dict())


def test_a_local_job_serves_metrics_on_its_port_unless_turned_off(tmp_path: Path) -> None:
    conf = _conf(tmp_path, metrics_port=19249)
    assert conf["metrics.reporter.prom.factory.class"] == PROMETHEUS_FACTORY
    assert conf["metrics.reporter.prom.port"] == "19249"
    assert conf["metrics.reporter.prom.filterLabelValueCharacters"] == "false"
    assert not any(key.startswith("metrics.reporter") for key in _conf(tmp_path, metrics_port=0))
    # on a cluster the cluster's own reporter configuration applies (a job cannot start a reporter there)
    assert not any(key.startswith("metrics.reporter") for key in _conf(tmp_path, local=False, metrics_port=19249))


def test_the_metrics_port_is_a_setting_an_option_and_an_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert JobSettings(service_dir=tmp_path).metrics_port == 9249
    one = JobSettings(service_dir=tmp_path, metrics_port=0)
    argv = job_arguments([one])
    assert argv[-2:] == ["--metrics-port", "0"]
    assert parse_job_arguments(argv).services == [one]
    monkeypatch.setenv("VATIC_STREAM_METRICS_PORT", "19250")
    assert JobSettings(service_dir=tmp_path).metrics_port == 19250


def test_a_taken_metrics_port_given_on_purpose_is_one_line_before_the_job_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse, match=f"metrics port {port} is taken.*--metrics-port") as info:
            _metrics_port(JobSettings(service_dir=tmp_path, metrics_port=port))
    assert "\n" not in str(info.value)
    free = JobSettings(service_dir=tmp_path, metrics_port=port)  # released: kept as it is
    assert _metrics_port(free) is free


def test_the_default_port_taken_by_another_local_job_runs_this_one_without_an_endpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    default = JobSettings(service_dir=tmp_path)
    with socket.socket() as taken:
        with contextlib.suppress(OSError):  # another job on this machine may hold it already: the same situation
            taken.bind(("", default.metrics_port))
            taken.listen()
        assert _metrics_port(default).metrics_port == 0
    assert "default metrics port 9249 is taken" in capsys.readouterr().err


def test_predictions_by_version_and_the_shadow_outcomes_are_labelled_series(root: GenericMetricGroup) -> None:
    metrics = JobMetrics(root)
    assert not any("shadow" in "".join(key) for key in read(root))  # a service without a shadow has none
    metrics.version_predictions("1", 7)
    metrics.version_predictions("2", 3)
    metrics.version_predictions("1", 1)
    metrics.shadow("answered", 10, 10, 8)
    metrics.shadow("failed", 0, 0, 0)
    values = read(root)
    assert values[("vatic", "version", "1", "predictions")] == 8
    assert values[("vatic", "version", "2", "predictions")] == 3
    assert values[("vatic", "shadowState", "answered", "shadowBatches")] == 1
    assert values[("vatic", "shadowState", "failed", "shadowBatches")] == 1
    assert values[("vatic", "shadowState", "late", "shadowBatches")] == 0
    assert (values[("vatic", "shadowPredictions")], values[("vatic", "shadowCompared")]) == (10, 10)
    assert values[("vatic", "shadowAgreed")] == 8
