"""The service config model: every field the example service config shows, the Kubernetes section, and its
validators."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vatic.schemas.errors import ConfigFileError
from vatic.serving.config import load_service
from vatic.serving.config.model import ServiceConfig

MINIMAL = {
    "project": "shop",
    "service": "churn",
    "model": {"name": "churn", "inputs": [{"name": "x", "columns": ["a", "b"]}], "outputs": [{"name": "predict"}]},
}


def _folder(tmp_path: Path, config: dict, **overlays: dict) -> Path:
    (tmp_path / "service.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    for env, body in overlays.items():
        (tmp_path / f"{env}.yaml").write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    return tmp_path


def test_the_issue_fields_are_all_there():
    """Every field the example service config shows, under its name."""
    fields = ServiceConfig.model_fields
    for name in ("project", "service", "serving", "replicas", "resources", "env", "autoscaling", "registry",
                 "timeout_s", "features", "streaming", "kubernetes", "gateway"):  # fmt: skip
        assert name in fields, name
    serving = fields["serving"].annotation.model_fields
    assert {"layer", "entrypoint", "port", "tier", "library"} <= set(serving)
    config = ServiceConfig.model_validate(
        {**MINIMAL, "resources": {"cpu": "2", "memory": "4Gi", "gpu": {"count": 1, "type": "nvidia-l4"}},
         "autoscaling": {"min_replicas": 1, "max_replicas": 4, "cpu_utilization": None, "gpu_utilization": 70,
                         "kafka_lag": 100},
         "registry": {"backend": "comet", "workspace": "ml", "model": "churn", "version": "3", "stages": ["prod"],
                      "dest_path": "/models", "autodownload": False},
         "streaming": {"input_topic": "in", "output_topic": "out", "dead_letter_topic": "dlq",
                       "input_schema": "transaction", "batch_size": 32, "batch_wait_ms": 5, "capacity": 4,
                       "parallelism": 2, "guarantee": "at_least_once"}}
    )  # fmt: skip
    assert config.resources.gpu is not None
    assert config.resources.gpu.count == 1
    assert config.autoscaling is not None
    assert config.autoscaling.kafka_lag == 100
    assert config.registry.dest_path == "/models"


def test_the_kubernetes_section_has_defaults_and_overrides_the_namespace(tmp_path):
    folder = _folder(tmp_path, MINIMAL, staging={"kubernetes": {"namespace": "team-a", "node_selector": {"pool": "x"}}})
    assert load_service(folder).namespace == "shop"
    assert load_service(folder, "staging").namespace == "team-a"
    assert load_service(folder, "staging").kubernetes.node_selector == {"pool": "x"}
    assert load_service(folder).kubernetes.flink.upgrade_mode == "savepoint"


def test_environment_overlays_merge_key_by_key(tmp_path):
    base = {**MINIMAL, "resources": {"cpu": "1", "memory": "1Gi"}}
    folder = _folder(tmp_path, base, production={"resources": {"memory": "8Gi"}, "replicas": 3})
    config = load_service(folder, "production")
    assert (config.resources.cpu, config.resources.memory, config.replicas) == ("1", "8Gi", 3)
    assert config.environment == "production"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"autoscaling": {"min_replicas": 0, "cpu_utilization": 50}}, "min_replicas 0 needs kafka_lag"),
        ({"autoscaling": {"cpu_utilization": None}}, "autoscaling has no target"),
        ({"autoscaling": {"kafka_lag": 10}}, "add a streaming section or remove kafka_lag"),
        ({"resources": {"gpu": {"type": "nvidia-l4"}}}, "gpu.type nvidia-l4 without gpu.count: add gpu.count: 1"),
        ({"kubernetes": {"image_pull_policy": "Sometimes"}}, "fix: use one of 'Always', 'IfNotPresent' or 'Never'"),
        ({"kubernetes": {"flink": {"flink_version": "2.2"}}}, "fix: write flink_version to match"),
        ({"gateway": {"replicas": -2}}, "fix: set replicas to a value >= 0"),
        ({"registry": {"version": "3", "refresh_s": 5}}, "version '3' is pinned and never changes"),
        ({"registry": {"refresh_s": 5}, "model": {**MINIMAL["model"], "version": "3"}}, "remove model.version"),
        (
            {"registry": {"refresh_s": 5}, "serving": {"tier": "full-custom", "layer": "fastapi", "entrypoint": "a:b"}},
            "use the no-code or low-code tier",
        ),
        (
            {"serving": {"tier": "full-custom", "layer": "fastapi", "entrypoint": "a:b", "protocol": "grpc"}},
            "serves V2 over REST only: set protocol: rest",
        ),
        (
            {
                "serving": {"protocol": "grpc"},
                "kubernetes": {
                    "security": {
                        "model": {"tls_cert": {"name": "tls", "key": "crt"}, "tls_key": {"name": "tls", "key": "key"}}
                    }
                },
            },
            "grpc to a model server with TLS (kubernetes.security.model.tls_cert) is not supported yet",
        ),
        ({"serving": {"protocol": "http2"}}, "fix: use one of 'rest' or 'grpc'"),
    ],
)
def test_bad_values_name_file_line_and_fix(tmp_path, change, expected):
    folder = _folder(tmp_path, {**MINIMAL, **change})
    with pytest.raises(ConfigFileError) as caught:
        load_service(folder)
    assert len(caught.value.lines) == 1
    line = caught.value.lines[0]
    assert line.startswith(f"{folder / 'service.yaml'}:")
    assert expected in line


def test_the_protocol_picks_the_port_the_doors_call(tmp_path):
    from vatic.cli.deploy.manifests import model_url

    rest = load_service(_folder(tmp_path, MINIMAL))
    assert rest.serving.protocol == "rest"
    assert model_url(rest) == "http://churn-model.shop.svc.cluster.local:8080"
    grpc = load_service(_folder(tmp_path, {**MINIMAL, "serving": {"protocol": "grpc", "grpc_port": 9001}}))
    assert model_url(grpc) == "grpc://churn-model.shop.svc.cluster.local:9001"


def test_an_overlay_error_points_at_the_overlay(tmp_path):
    folder = _folder(tmp_path, MINIMAL, staging={"replicas": 1, "kubernetes": {"labels": {"team": 5}}})
    with pytest.raises(ConfigFileError) as caught:
        load_service(folder, "staging")
    (line,) = caught.value.lines
    assert line.startswith(f"{folder / 'staging.yaml'}:4: kubernetes.labels.team:"), line
    assert "fix: write team as a string" in line
