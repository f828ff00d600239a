"""The job's command line: readable options, one per setting, the same for the local runner, `flink run` and the
rendered FlinkDeployment (:mod:`vatic.streaming.settings`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vatic.streaming.settings import JobSettings, job_argument_parser, job_arguments, parse_job_arguments


def test_a_command_line_round_trips_through_the_parser(tmp_path: Path) -> None:
    services = [
        JobSettings(service_dir=tmp_path / "fraud", model_url="http://fraud:8080", bounded=True, parallelism=2,
                    schema_registry_url="http://registry:8081/apis/ccompat/v7", environment="production"),
        JobSettings(service_dir=tmp_path / "product", model_url="http://product:8080", bounded=True, parallelism=2,
                    schema_registry_url="http://registry:8081/apis/ccompat/v7", environment="production"),
    ]  # fmt: skip
    argv = job_arguments(services, resume_from=tmp_path / "chk-7", local=False)
    assert argv[:4] == ["--service-dir", str(tmp_path / "fraud"), "--model-url", "http://fraud:8080"]
    assert "--env" in argv
    assert argv[-1] == "--cluster"
    assert not any(arg.startswith("{") for arg in argv)  # no JSON blob: options a person can read and type
    parsed = parse_job_arguments(argv)
    assert parsed.services == services
    assert (parsed.resume_from, parsed.local) == (tmp_path / "chk-7", False)


def test_defaults_are_left_out_and_come_back(tmp_path: Path) -> None:
    one = JobSettings(service_dir=tmp_path, model_url="http://m:8080")
    argv = job_arguments([one])
    assert argv == ["--service-dir", str(tmp_path), "--model-url", "http://m:8080"]
    assert parse_job_arguments(argv).services == [one]
    assert parse_job_arguments(argv).local is None  # decided by where it runs


def test_environment_variables_fill_what_the_command_line_leaves_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VATIC_STREAM_BOOTSTRAP_SERVERS", "kafka-1:9092")
    parsed = parse_job_arguments(["--service-dir", str(tmp_path)])
    assert parsed.services[0].bootstrap_servers == "kafka-1:9092"
    assert (
        parse_job_arguments(["--service-dir", str(tmp_path), "--bootstrap-servers", "k:1"])
        .services[0]
        .bootstrap_servers
        == "k:1"
    )


def test_a_per_service_option_given_for_some_services_only_is_refused(tmp_path: Path) -> None:
    argv = ["--service-dir", "a", "--service-dir", "b", "--service-dir", "c", "--model-url", "x", "--model-url", "y"]
    with pytest.raises(SystemExit):
        parse_job_arguments(argv)


def test_every_setting_has_an_option_with_its_description() -> None:
    helptext = job_argument_parser().format_help()
    for name, field in JobSettings.model_fields.items():
        flag = "--env" if name == "environment" else "--" + name.replace("_", "-")
        assert flag in helptext, flag
        assert (field.description or "").split(" ")[0] in helptext


def test_relative_paths_are_made_absolute_where_the_job_is_submitted(tmp_path, monkeypatch):
    """`flink run ... --service-dir examples/...` from a checkout: the workers run elsewhere, so the client's
    working directory must already be in the path they get."""
    monkeypatch.chdir(tmp_path)
    parsed = parse_job_arguments(["--service-dir", "svc", "--kafka-connector-jar", "lib/k.jar"]).services[0]
    assert parsed.service_dir == tmp_path / "svc"
    assert parsed.kafka_connector_jar == tmp_path / "lib" / "k.jar"
    assert parsed.schema_store is None
