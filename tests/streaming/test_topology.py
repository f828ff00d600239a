"""The job's plans, checked without running them: what the planner makes of each topology."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from vatic.cli.stack.artifacts import Artifacts
from vatic.cli.stack.settings import StackSettings
from vatic.serving.config import load_service
from vatic.streaming import job
from vatic.streaming.settings import JobSettings

ROOT = Path(__file__).resolve().parents[2]
FRAUD = ROOT / "examples" / "fraud_detection" / "service"


def _service(tmp_path: Path, **streaming: Any) -> Path:
    """A copy of the fraud service folder with streaming settings overridden."""
    folder = tmp_path / "service"
    folder.mkdir()
    for path in FRAUD.iterdir():
        if path.is_file():
            (folder / path.name).write_bytes(path.read_bytes())
    config = yaml.safe_load((folder / "service.yaml").read_text())
    config["streaming"].update(streaming)
    (folder / "service.yaml").write_text(yaml.safe_dump(config))
    return folder


def _explain(settings: JobSettings, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Any]:
    """Build the job and return the statement set's plan explanation and the Flink configuration used."""
    from pyflink.table.statement_set import StatementSet

    captured: dict[str, Any] = {}
    monkeypatch.setattr(StatementSet, "attach_as_datastream", lambda self: captured.setdefault("set", self))
    jar = Artifacts(StackSettings().cache).require_flink_kafka_connector()
    settings = settings.model_copy(update={"kafka_connector_jar": jar})
    config = load_service(settings.service_dir, settings.environment)
    env = job.local_environment(config, settings)
    job.build(env, settings)
    return str(captured["set"].explain()), job.flink_configuration(config, settings)


def test_vectorized_mode_calls_the_model_function_once_per_record_for_both_sinks(tmp_path, monkeypatch):
    folder = _service(tmp_path, mode="vectorized", batch_size=96, batch_wait_ms=7)
    plan, conf = _explain(JobSettings(service_dir=folder), monkeypatch)
    execution = plan.split("== Optimized Execution Plan ==")[1]
    # one evaluation of the inference function, reused by the prediction and the dead-letter sink
    assert len(re.findall(r"PythonCalc\(select=\[vatic_\w+_infer\(", execution)) == 1
    assert execution.count("Reused(reference_id=[1])") == 2
    assert "where=[(o.kind = 'P')]" in execution
    assert "where=[(o.kind = 'D')]" in execution
    assert conf.get_string("python.fn-execution.arrow.batch.size", "") == "96"
    assert conf.get_string("python.fn-execution.bundle.time", "") == "7"


def test_async_mode_builds_the_datastream_topology_with_stable_uids(tmp_path, monkeypatch):
    folder = _service(tmp_path, mode="async", bundle_size=500, bundle_time_ms=15)
    plan, conf = _explain(JobSettings(service_dir=folder), monkeypatch)
    assert "_infer(" not in plan  # no vectorized function in this topology
    assert conf.get_string("python.fn-execution.bundle.size", "") == "500"
    assert conf.get_string("python.fn-execution.bundle.time", "") == "15"
    assert conf.get_string("python.fn-execution.arrow.batch.size", "absent") == "absent"


def _with_shadow(folder: Path) -> None:
    config = yaml.safe_load((folder / "service.yaml").read_text())
    config["shadow"] = {"version": "7"}
    (folder / "service.yaml").write_text(yaml.safe_dump(config))


def test_a_shadow_adds_a_third_sink_fed_by_the_same_evaluation(tmp_path, monkeypatch):
    folder = _service(tmp_path, mode="vectorized")
    _with_shadow(folder)
    plan, _ = _explain(JobSettings(service_dir=folder), monkeypatch)
    execution = plan.split("== Optimized Execution Plan ==")[1]
    assert len(re.findall(r"PythonCalc\(select=\[vatic_\w+_infer\(", execution)) == 1
    assert execution.count("Reused(reference_id=[1])") == 3
    assert "where=[o.s IS NOT NULL]" in execution
    assert "vatic_fraud_detection_shadow_predictions" in plan


def test_a_shadow_in_async_mode_is_a_side_output_to_its_own_sink(tmp_path, monkeypatch):
    folder = _service(tmp_path, mode="async")
    _with_shadow(folder)
    plan, _ = _explain(JobSettings(service_dir=folder), monkeypatch)
    assert "vatic_fraud_detection_shadow_predictions" in plan
    sinks = set(re.findall(r"Sink\(table=\[default_catalog\.default_database\.(\w+)\]", plan))
    assert sinks == {f"vatic_fraud_detection_{name}" for name in ("predictions", "dead_letters", "shadow_predictions")}


def test_the_route_sends_a_predictions_shadow_to_the_shadow_output_and_drops_none():
    import pickle

    from pyflink.common import Row

    from vatic.streaming.operators import DEAD_LETTERS, SHADOWS, RouteFunction

    route = RouteFunction()
    headers = {"vatic-event-id": b"e1"}
    routed = list(route.process_element(pickle.dumps(("P", Row(b"k", b"v", headers), b"s")), None))
    assert routed[0] == Row(b"k", b"v", headers)
    assert routed[1] == (SHADOWS, Row(b"k", b"s", headers))
    assert list(route.process_element(pickle.dumps(("P", Row(b"k", b"v", headers), None)), None)) == [
        Row(b"k", b"v", headers)
    ]
    assert list(route.process_element(pickle.dumps(("D", Row(b"k", b"d", {}), None)), None)) == [
        (DEAD_LETTERS, Row(b"k", b"d", {}))
    ]
