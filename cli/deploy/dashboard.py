"""A Grafana dashboard per service and environment, rendered with the manifests (``grafana-dashboard.json``).

Queries use the metric names the services really export, scraped by the rendered ServiceMonitors (Prometheus
then adds the ``namespace`` and ``service`` labels of the target):

=======================  ==================================================================================
panel                    metrics
=======================  ==================================================================================
latency percentiles      gateway ``vatic_gateway_request_seconds_bucket{route=/v1/services/<s>/predict}``;
                         MLServer ``rest_server_request_duration_seconds_bucket{path=~/v2/models/.../infer}``
                         (starlette-exporter, route templates)
requests/s               gateway ``vatic_gateway_requests_total`` by status; MLServer
                         ``model_infer_request_success_total`` / ``model_infer_request_failure_total``
errors by class          gateway ``vatic_gateway_errors_total`` by ``error_class`` and ``stage``
requests by client       gateway ``vatic_gateway_client_requests_total`` by ``client`` and answer
consumer lag             ``kafka_consumergroup_lag`` (kafka-exporter) of the job's group on the input topic,
                         the number KEDA scales on - streaming services only
feature misses           gateway ``vatic_gateway_feature_misses_total`` by feature - services with features
batch sizes              gateway ``vatic_gateway_batch_size_bucket`` (adaptive micro-batches); MLServer's
                         adaptive batching ``batch_request_queue_bucket`` when ``max_batch_size`` > 1
predictions by version   gateway ``vatic_gateway_predictions_total`` by ``version``, and the job's
                         ``version_predictions`` (a rollout's switch, a canary's share)
shadow                   gateway ``vatic_gateway_shadow_batches_total`` by ``state``, the agreement
                         ``vatic_gateway_shadow_agreed_total`` / ``vatic_gateway_shadow_compared_total`` and
                         ``vatic_gateway_shadow_predictions_total``, ``..._shadow_write_failures_total``; the
                         job's ``shadowState_shadowBatches``,
                         ``shadowAgreed`` / ``shadowCompared`` - services with a shadow only
replicas                 kube-state-metrics ``kube_deployment_status_replicas_available``
GPU utilisation          ``kubernetes.gpu_metric`` (dcgm-exporter) - GPU services only
stream: events/s         the job's own metrics (:mod:`vatic.streaming.metrics`, Flink's Prometheus reporter,
                         prefix ``flink_taskmanager_job_task_operator_vatic_``): ``eventsIn``, ``predictions``
stream: dead letters/s   ``stage_deadLetters`` by ``stage``
stream: batch size       ``batchSize_le_bucket`` p50/p95 and the mean (``batchSize_sum`` / ``batchSize_count``)
stream: model calls/s    ``modelCalls`` and ``modelRetries`` (requests repeated after a failed attempt)
stream: model call and   ``modelCallMs_le_bucket`` and ``featureReadMs_le_bucket`` p50/p99 (ms per batch)
feature read latency
stream: source lag       the Kafka source's own metrics: ``flink_taskmanager_job_task_operator_pendingRecords``
                         (FLIP-33: records behind the end offsets) and the consumer's
                         ``..._KafkaSourceReader_KafkaConsumer_records_lag_max``
=======================  ==================================================================================

drift                    the drift monitor's gauges (:mod:`vatic.streaming.monitor`, job ``vatic-<service>-monitor``):
                         ``model_version_column_psi_x1000``, ``..._missingRate_x1000``,
                         ``..._wasserstein_x1000`` by version and column, ``model_version_drifted_driftWindows`` by
                         verdict - streaming services with ``monitoring.enabled``
=======================  ==================================================================================

The stream panels (streaming services only) follow the job by its Flink ``job_name`` (``vatic-<service>``) in
the service's namespace; the drift row follows; they are the last rows.

The dashboard is a plain Grafana JSON model (schema version 39) with a Prometheus data source variable; the
kustomization ships it as a ConfigMap labelled ``grafana_dashboard: "1"`` for Grafana's dashboard sidecar.
"""

from __future__ import annotations

from typing import Any

from vatic.serving.config.model import ServiceConfig

__all__ = ["dashboard"]

_DS = {"type": "prometheus", "uid": "${datasource}"}
_RATE = "$__rate_interval"


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": _DS, "expr": expr, "legendFormat": legend, "refId": ref}


def _panel(title: str, unit: str, targets: list[tuple[str, str]], description: str) -> dict[str, Any]:
    refs = "ABCDEFGHIJ"
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": _DS,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [_target(expr, legend, refs[i]) for i, (expr, legend) in enumerate(targets)],
    }


def _quantiles(bucket: str, selector: str, label: str) -> list[tuple[str, str]]:
    return [
        (f"histogram_quantile({q}, sum by (le) (rate({bucket}{{{selector}}}[{_RATE}])))", f"{label} p{int(q * 100)}")
        for q in (0.5, 0.95, 0.99)
    ]


#: the prefix of the job's own metrics as Flink's Prometheus reporter names them (operator scope + group "vatic")
STREAM_PREFIX = "flink_taskmanager_job_task_operator_vatic_"


def _stream_panels(config: ServiceConfig) -> list[dict[str, Any]]:
    """The streaming job's row: its own counters and histograms, and the Kafka source's lag."""
    job = f'namespace="{config.namespace}",job_name="vatic-{config.service}"'
    p = STREAM_PREFIX

    def rate(name: str, by: str = "") -> str:
        return f"sum{f' by ({by})' if by else ''} (rate({p}{name}{{{job}}}[{_RATE}]))"

    def quantiles(name: str, label: str, qs: tuple[float, ...]) -> list[tuple[str, str]]:
        return [
            (f"histogram_quantile({q}, sum by (le) (rate({p}{name}_le_bucket{{{job}}}[{_RATE}])))",
             f"{label} p{int(q * 100)}")
            for q in qs
        ]  # fmt: skip

    throughput = [(rate("eventsIn"), "events in"), (rate("predictions"), "predictions")]
    calls = [(rate("modelCalls"), "model calls"), (rate("modelRetries"), "retries")]
    dead = [(rate("stage_deadLetters", "stage"), "{{stage}}")]
    mean = (f"{rate('batchSize_sum')} / {rate('batchSize_count')}", "mean")
    batches = [*quantiles("batchSize", "batch", (0.5, 0.95)), mean]
    latency = quantiles("modelCallMs", "model call", (0.5, 0.99))
    if config.features is not None:
        latency += quantiles("featureReadMs", "feature read", (0.5, 0.99))
    operator = "flink_taskmanager_job_task_operator_"
    lag = [
        (f"sum({operator}pendingRecords{{{job}}})", "pending records"),
        (f"max({operator}KafkaSourceReader_KafkaConsumer_records_lag_max{{{job}}})", "consumer records-lag-max"),
    ]
    return [
        _panel("Stream events/s", "short", throughput, "Records the job read and predictions it wrote."),
        _panel("Stream dead letters/s", "short", dead, "Dead-letter records by the stage that refused the event."),
        _panel("Stream batch size", "short", batches, "Records per micro-batch (one feature read, one model call)."),
        _panel(
            "Stream model calls/s",
            "short",
            calls,
            "V2 requests of the job, and those repeated after a failed attempt (flaky or overloaded server).",
        ),
        _panel("Stream latency", "ms", latency, "Per micro-batch: model call (retries included) and feature read."),
        _panel("Stream source lag", "short", lag, "Input records not yet read (Kafka source's own metrics)."),
    ]


def _version_panels(config: ServiceConfig, gw: str) -> list[dict[str, Any]]:
    """Predictions by version, and the shadow's outcomes (services with a shadow)."""
    s, ns = config.service, config.namespace
    panels: list[dict[str, Any]] = []
    versions = [(f"sum by (version) (rate(vatic_gateway_predictions_total{{{gw}}}[{_RATE}]))", "gateway {{version}}")]
    job = f'namespace="{ns}",job_name="vatic-{s}"'
    if config.streaming is not None:
        versions.append(
            (f"sum by (version) (rate({STREAM_PREFIX}version_predictions{{{job}}}[{_RATE}]))", "stream {{version}}")
        )
    panels.append(
        _panel("Predictions by version", "short", versions, "Which model version answered (canary, rollout).")
    )

    if config.shadow is not None:
        shadow = [
            (f"sum by (state) (rate(vatic_gateway_shadow_batches_total{{{gw}}}[{_RATE}]))", "gateway {{state}}"),
            (f"sum(rate(vatic_gateway_shadow_predictions_total{{{gw}}}[{_RATE}]))", "gateway answers"),
            (f"sum(rate(vatic_gateway_shadow_write_failures_total{{{gw}}}[{_RATE}]))", "gateway not written"),
            (
                f"sum(rate(vatic_gateway_shadow_agreed_total{{{gw}}}[{_RATE}])) / "
                f"sum(rate(vatic_gateway_shadow_compared_total{{{gw}}}[{_RATE}]))",
                "gateway agreement",
            ),
        ]
        if config.streaming is not None:
            shadow += [
                (
                    f"sum by (shadowState) (rate({STREAM_PREFIX}shadowState_shadowBatches{{{job}}}[{_RATE}]))",
                    "stream {{shadowState}}",
                ),
                (
                    f"sum(rate({STREAM_PREFIX}shadowAgreed{{{job}}}[{_RATE}])) / "
                    f"sum(rate({STREAM_PREFIX}shadowCompared{{{job}}}[{_RATE}]))",
                    "stream agreement",
                ),
            ]
        panels.append(
            _panel("Shadow", "short", shadow, "Shadow batches by outcome, and the share of answers it agrees on.")
        )

    return panels


def _drift_panels(config: ServiceConfig) -> list[dict[str, Any]]:
    """The drift row: the drift monitor's gauges (vatic.streaming.monitor), per model version and column."""
    job = f'namespace="{config.namespace}",job_name="vatic-{config.service}-monitor"'
    threshold = config.monitoring.psi_threshold
    psi = [
        (f"max by (version, column) ({STREAM_PREFIX}model_version_column_psi_x1000{{{job}}}) / 1000",
         "v{{version}} {{column}}"),
        (f"vector({threshold:g})", "threshold"),
    ]  # fmt: skip
    missing = [
        (f"max by (version, column) ({STREAM_PREFIX}model_version_column_missingRate_x1000{{{job}}}) / 1000",
         "v{{version}} {{column}}"),
    ]  # fmt: skip
    score = [
        (f"max by (version, column) ({STREAM_PREFIX}model_version_column_wasserstein_x1000{{{job}}}) / 1000",
         "v{{version}} {{column}}"),
        (f'sum by (version, drifted) (increase({STREAM_PREFIX}model_version_drifted_driftWindows{{{job}}}[1h]))',
         "v{{version}} windows drifted={{drifted}}"),
    ]  # fmt: skip
    return [
        _panel("Drift: PSI by column", "short", psi, "Last window of each model version against its training data."),
        _panel("Drift: missing rate", "percentunit", missing, "Share of predictions where the column was missing."),
        _panel("Drift: outputs and windows", "short", score, "Wasserstein distance of numeric outputs; windows by "
               "verdict over the last hour."),
    ]  # fmt: skip


def dashboard(config: ServiceConfig) -> dict[str, Any]:
    """The Grafana dashboard of the service in ``config.environment`` (see the module docstring)."""
    s, ns, model = config.service, config.namespace, config.model.name
    gw = f'namespace="{ns}",service="{s}-gateway"'
    route = f'{gw},route="/v1/services/{s}/predict"'
    ms = f'namespace="{ns}",service="{s}-model"'
    mlserver = config.serving.layer == "mlserver"
    panels: list[dict[str, Any]] = []

    latency = _quantiles("vatic_gateway_request_seconds_bucket", route, "gateway")
    if mlserver:
        latency += _quantiles(
            "rest_server_request_duration_seconds_bucket", f'{ms},path=~"/v2/models/.*infer"', "model"
        )
    panels.append(_panel("Latency percentiles", "s", latency, "Predict requests at the gateway and V2 inference."))

    requests = [(f"sum by (status) (rate(vatic_gateway_requests_total{{{route}}}[{_RATE}]))", "gateway {{status}}")]
    if mlserver:
        requests += [
            (f'sum(rate(model_infer_request_success_total{{{ms},model="{model}"}}[{_RATE}]))', "model ok"),
            (f'sum(rate(model_infer_request_failure_total{{{ms},model="{model}"}}[{_RATE}]))', "model failed"),
        ]
    panels.append(_panel("Requests/s", "reqps", requests, "Gateway requests by HTTP status; model inferences."))

    errors = [
        (
            f'sum by (error_class, stage) (rate(vatic_gateway_errors_total{{namespace="{ns}",service="{s}-gateway"}}'
            f"[{_RATE}]))",
            "{{error_class}} ({{stage}})",
        )
    ]
    panels.append(_panel("Errors by class", "reqps", errors, "Failed predictions by error class and pipeline stage."))

    clients = [
        (
            f'sum by (client, status) (rate(vatic_gateway_client_requests_total{{namespace="{ns}",'
            f'service="{s}-gateway"}}[{_RATE}]))',
            "{{client}} {{status}}",
        )
    ]
    panels.append(
        _panel("Requests by client", "reqps", clients, "Authenticated callers (401: anonymous, 403, 429 per client).")
    )

    if config.streaming is not None:
        lag = [
            (
                f'sum by (topic) (kafka_consumergroup_lag{{consumergroup="{config.consumer_group}",'
                f'topic="{config.streaming.input_topic}"}})',
                "lag {{topic}}",
            )
        ]
        panels.append(_panel("Consumer lag", "short", lag, "Unprocessed input events of the streaming job's group."))

    if config.features is not None:
        misses = [
            (
                f'sum by (feature) (rate(vatic_gateway_feature_misses_total{{namespace="{ns}",service="{s}-gateway"}}'
                f"[{_RATE}]))",
                "{{feature}}",
            )
        ]
        panels.append(_panel("Feature misses/s", "short", misses, "Features served from defaults (missing)."))

    batch_selector = f'namespace="{ns}",service="{s}-gateway"'
    batches = [
        (f"histogram_quantile({q}, sum by (le) (rate(vatic_gateway_batch_size_bucket{{{batch_selector}}}[{_RATE}])))",
         f"gateway p{int(q * 100)}")
        for q in (0.5, 0.95)
    ]  # fmt: skip
    batches.append(
        (
            f"sum(rate(vatic_gateway_batch_size_sum{{{batch_selector}}}[{_RATE}])) / "
            f"sum(rate(vatic_gateway_batch_size_count{{{batch_selector}}}[{_RATE}]))",
            "gateway mean",
        )
    )
    if mlserver and config.serving.max_batch_size > 1:
        batches.append(
            (
                f'histogram_quantile(0.95, sum by (le) (rate(batch_request_queue_bucket{{{ms},model_name="{model}"}}'
                f"[{_RATE}])))",
                "model server p95",
            )
        )
    panels.append(_panel("Batch sizes", "short", batches, "Events per model call."))

    panels += _version_panels(config, gw)

    replicas = [
        (
            f'sum by (deployment) (kube_deployment_status_replicas_available{{namespace="{ns}",'
            f'deployment=~"{s}-(model|gateway)"}})',
            "{{deployment}}",
        )
    ]
    panels.append(_panel("Available replicas", "short", replicas, "Pods ready to serve (kube-state-metrics)."))

    if config.resources.gpu is not None:
        metric = config.kubernetes.gpu_metric
        gpu = [(f'avg({metric}{{namespace="{ns}",pod=~"{s}-model-.*"}})', "GPU utilisation %")]
        panels.append(_panel("GPU utilisation", "percent", gpu, "Mean GPU utilisation of the model server pods."))

    if config.streaming is not None:
        panels += _stream_panels(config)
        if config.monitoring.enabled:
            panels += _drift_panels(config)

    for index, panel in enumerate(panels):
        panel["id"] = index + 1
        panel["gridPos"] = {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)}
    uid = f"vatic-{s}-{config.environment}"[:40]
    return {
        "uid": uid,
        "title": f"vatic / {s} ({config.environment})",
        "description": config.description or f"Service {s} of project {config.project}",
        "tags": ["vatic", config.project, config.environment],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }
