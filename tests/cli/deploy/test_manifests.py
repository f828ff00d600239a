"""What the rendered objects mean: the addresses between them agree, and what the service config's ``kubernetes``
section asks for holds (a locked-down model server, GPU placement, autoscaling, the network policy, dashboards)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vatic.cli.deploy.dashboard import dashboard
from vatic.cli.deploy.manifests import build_manifests, flink_cpu, flink_memory
from vatic.examples.layout import service_dir
from vatic.serving.config import ShadowSpec, load_service
from vatic.serving.gateway.metrics import GatewayMetrics
from vatic.streaming.settings import parse_job_arguments

SCORER = Path(__file__).resolve().parent / "fixtures" / "scorer" / "service"


def _objects(folder: Path, env: str) -> dict[str, dict]:
    config = load_service(folder, env)
    return {f"{m.obj['kind']}/{m.obj['metadata']['name']}": m.obj for m in build_manifests(config, folder)}


@pytest.fixture(scope="module")
def fraud() -> dict[str, dict]:
    return _objects(service_dir("fraud_detection"), "production")


@pytest.fixture(scope="module")
def product() -> dict[str, dict]:
    return _objects(service_dir("product_categorization"), "production")


def _pod(objects: dict[str, dict], name: str) -> dict:
    return objects[f"Deployment/{name}"]["spec"]["template"]["spec"]


def test_the_model_server_is_locked_down(fraud):
    pod = _pod(fraud, "fraud-detection-model")
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in [*pod["initContainers"], *pod["containers"]]:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
    server = pod["containers"][0]
    assert server["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert server["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in server["volumeMounts"]
    assert fraud["Deployment/fraud-detection-model"]["spec"]["strategy"]["type"] == "RollingUpdate"


def test_the_init_container_runs_the_settings_writer_for_the_environment(fraud):
    (init,) = _pod(fraud, "fraud-detection-model")["initContainers"]
    assert init["command"] == [
        "python", "-m", "vatic.serving.runtimes.repository", "/etc/vatic/service", "/models", "--environment",
        "production",
    ]  # fmt: skip


def test_the_configmap_mounts_the_service_folder_and_its_feast_repo(fraud):
    data = fraud["ConfigMap/fraud-detection-config"]["data"]
    assert data["service.yaml"] == (service_dir("fraud_detection") / "service.yaml").read_text(encoding="utf-8")
    assert "production.yaml" in data
    assert "staging.yaml" not in data
    assert "features.feature_store.yaml" in data
    volume = _pod(fraud, "fraud-detection-model")["volumes"][0]["configMap"]
    paths = {item["key"]: item["path"] for item in volume["items"]}
    # the config says features.repo: ../features - the pod resolves it the same way
    assert paths["service.yaml"] == "service/service.yaml"
    assert paths["features.feature_store.yaml"] == "features/feature_store.yaml"


def test_gpu_requests_node_selector_and_toleration(product):
    pod = _pod(product, "product-categorization-model")
    resources = pod["containers"][0]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


def test_kafka_lag_renders_keda_on_the_jobs_group_and_input_topic(product):
    config = load_service(service_dir("product_categorization"), "production")
    scaled = product["ScaledObject/product-categorization-model"]
    assert "HorizontalPodAutoscaler/product-categorization-model" not in product
    kafka, prometheus = scaled["spec"]["triggers"]
    assert kafka["metadata"]["consumerGroup"] == config.consumer_group
    assert kafka["metadata"]["topic"] == config.streaming.input_topic
    assert kafka["metadata"]["lagThreshold"] == "1000"
    assert "DCGM_FI_DEV_GPU_UTIL" in prometheus["metadata"]["query"]
    assert "replicas" not in product["Deployment/product-categorization-model"]["spec"]  # the autoscaler owns it


def test_cpu_autoscaling_renders_an_hpa(fraud):
    hpa = fraud["HorizontalPodAutoscaler/fraud-detection-model"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 60


def test_gpu_utilisation_without_lag_is_a_custom_pod_metric(tmp_path):
    objects = _objects(SCORER, "production")
    assert "ScaledObject/scorer-model" in objects  # lag is set there; without it, an HPA with a Pods metric:
    config = load_service(SCORER, "production")
    config.autoscaling.min_replicas = 1
    config.autoscaling.kafka_lag = None
    (hpa,) = [m.obj for m in build_manifests(config, SCORER) if m.obj["kind"] == "HorizontalPodAutoscaler"]
    assert {"type": "Pods", "pods": {"metric": {"name": "DCGM_FI_DEV_GPU_UTIL"},
            "target": {"type": "AverageValue", "averageValue": "60"}}} in hpa["spec"]["metrics"]  # fmt: skip


def _matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def test_the_network_policy_admits_exactly_the_gateway_and_the_job(fraud):
    policy = fraud["NetworkPolicy/fraud-detection-model"]["spec"]
    model_labels = fraud["Deployment/fraud-detection-model"]["spec"]["template"]["metadata"]["labels"]
    gateway_labels = fraud["Deployment/fraud-detection-gateway"]["spec"]["template"]["metadata"]["labels"]
    job_labels = fraud["FlinkDeployment/fraud-detection-stream"]["spec"]["podTemplate"]["metadata"]["labels"]
    assert _matches(policy["podSelector"], model_labels)
    callers = policy["ingress"][0]["from"]
    assert [_matches(c["podSelector"], gateway_labels) for c in callers] == [True, False]
    assert [_matches(c["podSelector"], job_labels) for c in callers] == [False, True]
    assert not any(_matches(c["podSelector"], model_labels) for c in callers)
    assert policy["ingress"][1]["ports"] == [{"protocol": "TCP", "port": "metrics"}]


def test_services_select_their_pods_and_monitors_their_ports(fraud):
    for part in ("model", "gateway"):
        service = fraud[f"Service/fraud-detection-{part}"]["spec"]
        labels = fraud[f"Deployment/fraud-detection-{part}"]["spec"]["template"]["metadata"]["labels"]
        assert all(labels[k] == v for k, v in service["selector"].items())
        monitor = fraud[f"ServiceMonitor/fraud-detection-{part}"]["spec"]
        assert monitor["endpoints"][0]["port"] in {p["name"] for p in service["ports"]}
        assert _matches(monitor["selector"], fraud[f"Service/fraud-detection-{part}"]["metadata"]["labels"])


def test_the_gateway_calls_the_model_service(fraud):
    args = _pod(fraud, "fraud-detection-gateway")["containers"][0]["args"]
    endpoint = args[args.index("--endpoint") + 1]
    assert endpoint == "fraud-detection=http://fraud-detection-model.payments.svc.cluster.local:8080"
    assert args[args.index("--env") + 1] == "production"


def test_the_flink_deployment_runs_the_job_module_with_valid_settings(fraud):
    spec = fraud["FlinkDeployment/fraud-detection-stream"]["spec"]
    job = spec["job"]
    assert job["args"][:2] == ["-pym", "vatic.streaming.main"]
    assert (job["upgradeMode"], job["parallelism"]) == ("savepoint", 4)
    args = job["args"][2:]  # readable options, the job's own parser accepts them
    assert args[:4] == ["--service-dir", "/etc/vatic/service", "--model-url", args[3]]
    assert args[-1] == "--cluster"
    parsed = parse_job_arguments(args)
    assert parsed.local is False
    (settings,) = parsed.services
    assert settings.environment == "production"
    assert settings.model_url.startswith("http://fraud-detection-model.payments.svc")
    conf = spec["flinkConfiguration"]
    # the cluster restarts and times checkpoints out as the local job does
    assert conf["restart-strategy.exponential-delay.max-backoff"] == "10 s"
    assert conf["restart-strategy.exponential-delay.attempts-before-reset-backoff"] == "30"
    assert conf["execution.checkpointing.tolerable-failed-checkpoints"] == "1"
    assert conf["execution.checkpointing.savepoint-dir"] == "file:///flink-state/savepoints/fraud-detection"
    assert conf["execution.checkpointing.dir"] == f"file://{settings.checkpoint_dir}"
    claim = spec["podTemplate"]["spec"]["volumes"][1]["persistentVolumeClaim"]["claimName"]
    assert f"PersistentVolumeClaim/{claim}" in fraud


def test_without_autodownload_the_image_serves_its_own_models():
    objects = _objects(SCORER, "staging")
    pod = _pod(objects, "scorer-model")
    assert "initContainers" not in pod
    assert [v["name"] for v in pod["volumes"]] == ["config", "tmp"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["VATIC_MODEL_DIR"] == "models/scorer"


def test_a_following_service_runs_its_rollout_controller_beside_the_model_server(fraud, product):
    pod = _pod(fraud, "fraud-detection-model")  # the fraud service follows its registry's production stage
    server, controller = pod["containers"]
    assert controller["name"] == "rollout"
    assert controller["command"] == [
        "python", "-m", "vatic.serving.runtimes.rollout", "/etc/vatic/service", "/models",
        "--server", "http://127.0.0.1:8080", "--metrics-port", "9099", "--environment", "production",
    ]  # fmt: skip
    assert {"name": "models", "mountPath": "/models"} in controller["volumeMounts"]  # it writes new versions there
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in server["volumeMounts"]
    assert controller["envFrom"] == pod["initContainers"][0]["envFrom"]  # the registry's credentials
    assert [c["name"] for c in _pod(product, "product-categorization-model")["containers"]] == ["model-server"]


def test_quantity_conversions_for_flink():
    assert (flink_memory("2Gi"), flink_memory("512Mi"), flink_memory("1G")) == ("2048m", "512m", "954m")
    assert (flink_cpu("500m"), flink_cpu("2")) == (0.5, 2.0)


def test_the_dashboard_uses_the_gateways_metric_names():
    exported = {m.name for m in GatewayMetrics().registry.collect()}
    config = load_service(service_dir("fraud_detection"), "production")
    text = json.dumps(dashboard(config))
    shadowed = json.dumps(dashboard(config.model_copy(update={"shadow": ShadowSpec(version="7")})))
    for name in exported:  # counters export <name>_total, histograms <name>_bucket
        if "shadow" in name:
            assert name not in text, name  # a service without a shadow has no shadow panel
            assert name in shadowed, name
        else:
            assert name in text, name
    assert "vatic_version_predictions" in text
    for other in ("rest_server_request_duration_seconds_bucket", "model_infer_request_success_total",
                  "kafka_consumergroup_lag", "vatic-fraud-detection"):  # fmt: skip
        assert other in text


def test_the_dashboard_has_gpu_and_batching_panels_only_where_they_apply():
    product = dashboard(load_service(service_dir("product_categorization"), "production"))
    fraud = dashboard(load_service(service_dir("fraud_detection"), "production"))
    titles = lambda d: [p["title"] for p in d["panels"]]  # noqa: E731
    assert "GPU utilisation" in titles(product)
    assert "GPU utilisation" not in titles(fraud)
    assert "batch_request_queue_bucket" in json.dumps(product)
    assert "batch_request_queue_bucket" not in json.dumps(fraud)
    assert {"Latency percentiles", "Requests/s", "Errors by class", "Consumer lag", "Feature misses/s",
            "Batch sizes"} <= set(titles(fraud))  # fmt: skip


def test_the_job_pods_serve_metrics_where_the_service_monitor_scrapes(fraud):
    spec = fraud["FlinkDeployment/fraud-detection-stream"]["spec"]
    conf = spec["flinkConfiguration"]
    factory = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
    assert conf["metrics.reporter.prom.factory.class"] == factory
    assert conf["metrics.reporter.prom.filterLabelValueCharacters"] == "false"  # le="2.5", le="+Inf" intact
    (container,) = spec["podTemplate"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == int(conf["metrics.reporter.prom.port"])
    service = fraud["Service/fraud-detection-stream-metrics"]
    assert service["spec"]["clusterIP"] == "None"
    assert _matches({"matchLabels": service["spec"]["selector"]}, spec["podTemplate"]["metadata"]["labels"])
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["metrics"]
    monitor = fraud["ServiceMonitor/fraud-detection-stream"]["spec"]
    assert _matches(monitor["selector"], service["metadata"]["labels"])
    assert monitor["endpoints"][0]["port"] == "metrics"
    # the monitoring namespace may reach that port (and only that one) through the job's network policy
    policy = fraud["NetworkPolicy/fraud-detection-stream"]["spec"]["ingress"]
    monitoring = [rule for rule in policy if "monitoring" in json.dumps(rule.get("from", []))]
    assert [rule["ports"] for rule in monitoring] == [[{"protocol": "TCP", "port": "metrics"}]]


def _job_metric_names() -> set[str]:
    """The Prometheus names of the job's own metrics: Flink's operator scope, the group names without the values
    of key/value groups (those become labels), the metric name."""
    from pyflink.fn_execution.metrics.process.metric_impl import GenericMetricGroup

    from vatic.streaming.batch import PREDICTION, Output
    from vatic.streaming.metrics import JobMetrics

    root = GenericMetricGroup(None, None)
    JobMetrics(root).batch(1, [Output(PREDICTION, None, b"", {})], model_ms=1.0, feature_ms=1.0, model_calls=1)
    return _gauge_names(root)


def _gauge_names(root: Any) -> set[str]:
    """The Prometheus names of the gauges under a PyFlink metric group: Flink's operator scope, the group names
    without the values of key/value groups (those become labels), the metric name."""
    from pyflink.fn_execution.metrics.process.metric_impl import MetricGroupType

    names: set[str] = set()

    def walk(group: Any) -> None:
        scope, types = group._get_metric_group_names_and_types()
        kept = [n for n, t in zip(scope, types, strict=True) if t != str(MetricGroupType.value)]
        names.update("flink_taskmanager_job_task_operator_" + "_".join([*kept, m]) for m in group._flink_gauge)
        for sub in group._sub_groups:
            walk(sub)

    walk(root)
    return names


def test_the_dashboard_stream_row_reads_the_jobs_own_metric_names():
    import re

    board = dashboard(load_service(service_dir("fraud_detection"), "production"))
    stream = [p for p in board["panels"] if p["title"].startswith("Stream ")]
    assert [p["title"] for p in stream] == [
        "Stream events/s", "Stream dead letters/s", "Stream batch size", "Stream model calls/s", "Stream latency",
        "Stream source lag",
    ]  # fmt: skip
    text = json.dumps(stream)
    used = set(re.findall(r"flink_taskmanager_job_task_operator_vatic_\w+", text))
    exported = _job_metric_names()
    assert used <= exported, used - exported
    shown = ("eventsIn", "predictions", "deadLetters", "_le_bucket", "modelCalls", "modelRetries")
    assert {n for n in exported if n.endswith(shown)} <= used
    assert 'job_name=\\"vatic-fraud-detection\\"' in text
    for lag in ("_operator_pendingRecords", "_KafkaSourceReader_KafkaConsumer_records_lag_max"):
        assert lag in text


def test_a_service_without_streaming_has_no_stream_row():
    config = load_service(service_dir("fraud_detection"), "production").model_copy(update={"streaming": None})
    assert not any(p["title"].startswith("Stream ") for p in dashboard(config)["panels"])


def test_a_gateway_with_a_shadow_writes_its_answers_to_the_shadow_topic_with_the_jobs_kafka_access(fraud):
    def gateway_env(objects: dict[str, dict]) -> dict[str, str]:
        container = objects["Deployment/fraud-detection-gateway"]["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value", "secret") for e in container["env"]}

    assert "VATIC_GATEWAY_SHADOW_TOPICS" not in gateway_env(fraud)
    folder = service_dir("fraud_detection")
    config = load_service(folder, "production").model_copy(update={"shadow": ShadowSpec(version="7")})
    shadowed = {f"{m.obj['kind']}/{m.obj['metadata']['name']}": m.obj for m in build_manifests(config, folder)}
    env = gateway_env(shadowed)
    assert env["VATIC_GATEWAY_SHADOW_TOPICS"] == "true"
    assert env["VATIC_KAFKA_BOOTSTRAP_SERVERS"] == config.kubernetes.kafka_bootstrap_servers
    assert env["VATIC_SCHEMA_REGISTRY_URL"] == config.kubernetes.schema_registry_url
    job_env = {e["name"] for e in shadowed["FlinkDeployment/fraud-detection-stream"]["spec"]["podTemplate"]["spec"]
               ["containers"][0]["env"]}  # fmt: skip
    kafka = {name for name in job_env if name.startswith("VATIC_KAFKA_") and name != "VATIC_KAFKA_BOOTSTRAP_SERVERS"}
    assert kafka  # the example's production overlay uses SASL_SSL
    assert kafka <= set(env)  # the same Kafka identity as the job's


def _monitor_metric_names() -> set[str]:
    """The Prometheus names of the drift monitor's gauges, as its report operator registers them for a window."""
    import re

    from pyflink.fn_execution.metrics.process.metric_impl import GenericMetricGroup

    from vatic.serving.core.drift import ColumnDrift, WindowDrift
    from vatic.streaming.monitor import DriftReport

    root = GenericMetricGroup(None, None)
    report = DriftReport.__new__(DriftReport)
    report.group, report.gauges, report.windows = root.add_group("vatic"), {}, {}
    columns = (
        ColumnDrift("amount", "input", "numeric", 300, 0.0, 0.0, 0.4, None, True),
        ColumnDrift("score", "output", "numeric", 300, 0.0, 0.0, 0.1, 0.02, False),
    )
    report._export(WindowDrift("s", "m", "3", 0, 1, 300, True, True, True, 0.2, columns))
    names = _gauge_names(root)
    assert all(re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", n) for n in names)
    return names


def test_the_drift_monitor_runs_as_a_second_flink_deployment_with_its_alert_and_dashboard_row(fraud):
    import re

    monitor = fraud["FlinkDeployment/fraud-detection-monitor"]
    job = monitor["spec"]["job"]
    parsed = parse_job_arguments(job["args"][2:])
    settings = parsed.services[0]
    assert (settings.job, settings.job_name, parsed.local) == ("monitor", "vatic-fraud-detection-monitor", False)
    assert str(settings.checkpoint_dir).endswith("/checkpoints/fraud-detection-monitor")
    assert job["parallelism"] == load_service(service_dir("fraud_detection"), "production").monitoring.parallelism
    pipeline = fraud["FlinkDeployment/fraud-detection-stream"]
    assert monitor["spec"]["image"] == pipeline["spec"]["image"]
    assert monitor["spec"]["podTemplate"]["metadata"]["labels"] == pipeline["spec"]["podTemplate"]["metadata"]["labels"]

    exported = _monitor_metric_names()
    rule = fraud["PrometheusRule/fraud-detection-drift"]
    rules = rule["spec"]["groups"][0]["rules"]
    assert [r["alert"] for r in rules] == ["VaticModelDrift", "VaticDriftMonitorUndecodable"]
    text = json.dumps(rule)
    assert 'job_name=\\"vatic-fraud-detection-monitor\\"' in text
    used = set(re.findall(r"flink_taskmanager_job_task_operator_vatic_\w+", text))
    assert used - exported == {"flink_taskmanager_job_task_operator_vatic_undecodable"}  # the function's counter

    board = json.dumps([p for p in dashboard(load_service(service_dir("fraud_detection"), "production"))["panels"]
                        if p["title"].startswith("Drift")])  # fmt: skip
    used = set(re.findall(r"flink_taskmanager_job_task_operator_vatic_\w+", board))
    assert used
    assert used <= exported, used - exported


def test_a_service_with_monitoring_disabled_renders_no_monitor(tmp_path):
    config = load_service(service_dir("fraud_detection"), "production")
    off = config.model_copy(update={"monitoring": config.monitoring.model_copy(update={"enabled": False})})
    kinds = {(m.obj["kind"], m.obj["metadata"]["name"]) for m in build_manifests(off, service_dir("fraud_detection"))}
    assert ("FlinkDeployment", "fraud-detection-monitor") not in kinds
    assert not any(kind == "PrometheusRule" for kind, _ in kinds)
    assert not any(p["title"].startswith("Drift") for p in dashboard(off)["panels"])


def test_a_graph_whose_steps_share_the_services_server_renders_one_model_server():
    ensemble = service_dir("fraud_detection").parent / "ensemble"
    objects = _objects(ensemble, "local")
    deployments = sorted(name for name in objects if name.startswith("Deployment/"))
    assert deployments == ["Deployment/fraud-ensemble-gateway", "Deployment/fraud-ensemble-model"]
    (init,) = _pod(objects, "fraud-ensemble-model")["initContainers"]
    assert init["command"][:5] == ["python", "-m", "vatic.serving.runtimes.repository", "/etc/vatic/service", "/models"]
    data = objects["ConfigMap/fraud-ensemble-config"]["data"]
    assert data["service.yaml"] == (ensemble / "service.yaml").read_text(encoding="utf-8")
