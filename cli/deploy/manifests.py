"""Kubernetes manifests of one service in one environment, built from its service config.

:func:`build_manifests` is pure: a validated :class:`~vatic.serving.config.model.ServiceConfig` (loaded with its
environment overlay) and the service folder's files in, a list of :class:`Manifest` out, in apply order. The
same config drives the model server, the gateway and the streaming job, so every address between them is
derived here, never written twice.

Objects (``<s>`` is the service name; every object is in the service's namespace)::

    namespace.yaml               Namespace <namespace>
    configmap.yaml               ConfigMap <s>-config: service.yaml, <env>.yaml and the Feast repo files,
                                 mounted at /etc/vatic (service/, features/) by every pod
    model-deployment.yaml        Deployment <s>-model (below)
    model-service.yaml           Service <s>-model: http, grpc, metrics (MLServer) or http (FastAPI tier)
    model-hpa.yaml               HorizontalPodAutoscaler <s>-model: CPU utilisation and/or GPU utilisation as
                                 a per-pod custom metric (kubernetes.gpu_metric)     - autoscaling without kafka_lag
    model-triggerauthentication.yaml  KEDA TriggerAuthentication <s>-kafka: the Kafka credentials of the lag
                                 trigger, by reference                   - kafka_lag with Kafka credentials
    model-scaledobject.yaml      KEDA ScaledObject <s>-model: Kafka consumer lag of the job's group on the input
                                 topic, plus cpu / Prometheus GPU triggers           - autoscaling.kafka_lag set
    model-pdb.yaml               PodDisruptionBudget <s>-model
    default-deny-networkpolicy.yaml  NetworkPolicy <s>-default-deny: no ingress to any pod of the service but
                                 what the policies of its components let in
    model-networkpolicy.yaml     NetworkPolicy <s>-model: ingress only from the gateway's and the Flink job's
                                 pods (http, grpc) and from the monitoring namespace (metrics)
    model-servicemonitor.yaml    ServiceMonitor <s>-model: MLServer's metrics port  - MLServer layer only
    gateway-deployment.yaml      Deployment <s>-gateway: ``vatic gateway`` of the pipeline image
    gateway-service.yaml         Service <s>-gateway
    gateway-pdb.yaml             PodDisruptionBudget <s>-gateway
    gateway-networkpolicy.yaml   NetworkPolicy <s>-gateway: ingress on its HTTP port only
    gateway-servicemonitor.yaml  ServiceMonitor <s>-gateway: /metrics of the gateway
    flink-state-pvc.yaml         PersistentVolumeClaim <s>-flink-state (ReadWriteMany) - streaming, no claim named
    flink-deployment.yaml        FlinkDeployment <s>-stream (Flink Kubernetes Operator) - streaming section set
    stream-networkpolicy.yaml    NetworkPolicy <s>-stream: the job's pods among themselves, the operator's
                                 namespace to the JobManager's REST port and the monitoring namespace to the
                                 metrics port                                          - streaming section set
    stream-metrics-service.yaml  headless Service <s>-stream-metrics: the metrics port of the job's pods
    stream-servicemonitor.yaml   ServiceMonitor <s>-stream: Flink's Prometheus reporter of the JobManager and the
                                 TaskManagers (the job's own metrics, vatic.streaming.metrics)  - streaming set

Secrets (``kubernetes.security``, :mod:`vatic.cli.deploy.security`): only by reference, as environment variables
``valueFrom.secretKeyRef`` or read-only ``secret`` volumes under ``/var/run/secrets/vatic``; no manifest holds a
secret's value and none is a Secret. Kafka, schema registry and Redis credentials go to the JobManager and the
TaskManagers (the FlinkDeployment's one pod template, which the operator applies to both); Redis credentials,
TLS files, the clients file and the model servers' CA to the gateway; TLS files to the model server. Every
container runs non-root with a read-only root filesystem (emptyDirs where it writes), no capabilities, no
privilege escalation and the RuntimeDefault seccomp profile. The environment named ``production`` is refused
with unencrypted Kafka or an unauthenticated gateway unless the config explicitly allows it.

The model server pod: an init container ``fetch-model`` (the model-server image) runs the settings writer ``python
-m vatic.serving.runtimes.repository /etc/vatic/service /models --environment <env>`` which downloads the registry
version, checks its sha256 pins and writes MLServer's settings into the ``models`` volume (only with
``registry.autodownload``; credentials come from the optional Secret ``<s>-registry`` as environment variables); the
``model-server`` container then serves ``/models`` read-only (``mlserver start /models``, or ``uvicorn
<entrypoint>`` with ``VATIC_MODEL_DIR=/models/<model>`` for the full-custom tier). Without ``autodownload`` there is
no init container and no models volume: the image must hold the repository at ``registry.dest_path``, which is
served instead. A service that follows its registry (``registry.refresh_s`` > 0) gets a second container,
``rollout``, the rollout controller: it writes new versions into the ``models`` volume (mounted read-write there
only) and loads them through MLServer's repository API on loopback; its metrics on port 9099. Probes: startup and
liveness on ``/v2/health/live``, readiness on ``/v2/health/ready`` (HTTPS when the model server serves TLS).
Security: non-root (65532), read-only root filesystem (``/tmp`` is an emptyDir), every capability dropped, no
privilege escalation, RuntimeDefault seccomp, no service-account token, no service links.
GPUs: ``resources.gpu`` adds the extended resource as request and limit, a node selector ``<gpu.node_label>:
<gpu.type>`` and a toleration of the ``<gpu.resource>`` taint. With autoscaling the Deployment has no ``replicas``
(the autoscaler owns the count, as the Kubernetes docs advise); without, ``replicas`` is the config's. A pod
annotation carries the ConfigMap's digest, so that a config change rolls the pods.

The FlinkDeployment runs ``vatic.streaming.main --service-dir ... --env ... --cluster`` (the arguments a person
would give ``flink run -pym``) through Flink's ``PythonDriver`` in the pipeline image, with the service config
mounted as above, checkpoints and savepoints on the state volume (``file:///flink-state/...``), ``/tmp``
(``io.tmp.dirs``) and Flink's log folder on emptyDirs under a read-only root filesystem, Kubernetes HA,
``upgradeMode: savepoint`` by default, the parallelism of ``streaming.parallelism`` and the job's recovery settings
(:mod:`vatic.streaming.recovery`). Every Flink pod serves Flink's Prometheus reporter on the container port
``metrics`` (``metrics.reporter.prom.port``, 9249 unless ``kubernetes.flink.configuration`` sets it; the image's
Flink distribution ships the reporter in ``plugins/metrics-prometheus``, enabled by its ``factory.class``).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vatic.cli.deploy.security import (
    gateway_access,
    kafka_access,
    model_ca_access,
    model_tls_access,
    redis_access,
    refuse_literal_secrets,
    registry_access,
    security_check,
)
from vatic.schemas.errors import ConfigError
from vatic.serving.config.loader import BASE_FILE
from vatic.serving.config.model import GpuSpec, PodResources, ServiceConfig
from vatic.streaming.logconfig import console_log4j
from vatic.streaming.metrics import prometheus_reporter
from vatic.streaming.recovery import checkpoint_timeout_s, recovery_settings
from vatic.streaming.settings import JobSettings, job_arguments

__all__ = [
    "CONFIG_ROOT",
    "MODELS_DIR",
    "Manifest",
    "build_manifests",
    "config_files",
    "flink_cpu",
    "flink_memory",
    "labels",
    "model_url",
]

CONFIG_ROOT = "/etc/vatic"
MODELS_DIR = "/models"
STATE_DIR = "/flink-state"
FLINK_LOG_DIR = "/opt/flink/log"  # the image's FLINK_HOME/log: Flink writes its log files there
MODEL_SERVER_UID = 65532  # the model-server image's USER
PIPELINE_UID = 9999  # the pipeline image's flink user
FEATURE_SUFFIXES = (".yaml", ".yml", ".py")
#: the key of the Kafka SASL user name in the service's ConfigMap (KEDA reads it from there: not a secret)
KAFKA_USERNAME_KEY = "kafka.sasl-username"
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object and the file it is written to (relative to ``k8s/<service>/<env>/``)."""

    file: str
    obj: dict[str, Any]

    @property
    def ref(self) -> str:
        """``Kind/name`` for messages."""
        return f"{self.obj['kind']}/{self.obj['metadata']['name']}"


# --- names, labels, addresses -----------------------------------------------------------------------------

COMPONENTS = {"model": "model-server", "gateway": "gateway", "stream": "stream-job"}


def labels(config: ServiceConfig, part: str | None = None) -> dict[str, str]:
    """Labels of every object of the service; with ``part`` (model, gateway, stream) those of one component."""
    out = {
        "app.kubernetes.io/instance": config.service,
        "app.kubernetes.io/part-of": config.project,
        "app.kubernetes.io/managed-by": "vatic",
        "vatic.dev/service": config.service,
        "vatic.dev/environment": config.environment,
    }
    if part is not None:
        out = {"app.kubernetes.io/name": f"{config.service}-{part}", **out}
        out["app.kubernetes.io/component"] = COMPONENTS[part]
    return {**out, **config.kubernetes.labels}


def selector(config: ServiceConfig, part: str) -> dict[str, str]:
    """The label selector of one component's pods."""
    return {"app.kubernetes.io/name": f"{config.service}-{part}", "app.kubernetes.io/instance": config.service}


def model_url(config: ServiceConfig) -> str:
    """In-cluster base URL of the service's model server (what the gateway and the job call); ``https`` when
    the model server serves TLS (``kubernetes.security.model.tls_cert``); ``grpc://`` its gRPC port when
    ``serving.protocol`` is grpc."""
    if config.serving.protocol == "grpc":
        return f"grpc://{config.service}-model.{config.namespace}.svc.cluster.local:{config.serving.grpc_port}"
    scheme = "https" if config.kubernetes.security.model.tls_cert else "http"
    return f"{scheme}://{config.service}-model.{config.namespace}.svc.cluster.local:{config.serving.port}"


def _meta(config: ServiceConfig, name: str, part: str | None = None, *, namespaced: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespaced:
        meta["namespace"] = config.namespace
    meta["labels"] = labels(config, part)
    return meta


# --- quantities -------------------------------------------------------------------------------------------

_BINARY = {"Ki": 1 / 1024, "Mi": 1.0, "Gi": 1024.0, "Ti": 1024.0**2}
_DECIMAL = {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "": 1.0}


def flink_memory(quantity: str) -> str:
    """A Kubernetes memory quantity as Flink's MemorySize in mebibytes (``2Gi`` -> ``2048m``)."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", quantity)
    if not match:
        raise ConfigError(f"memory {quantity!r} is not a Kubernetes memory quantity (e.g. 2Gi, 512Mi)")
    number, unit = float(match.group(1)), match.group(2) or ""
    mebibytes = number * _BINARY[unit] if unit in _BINARY else number * _DECIMAL[unit] / 2**20
    return f"{max(1, round(mebibytes))}m"


def flink_cpu(quantity: str) -> float:
    """A Kubernetes CPU quantity as the Flink operator's number of cores (``500m`` -> 0.5)."""
    if quantity.endswith("m"):
        return int(quantity[:-1]) / 1000
    return float(quantity)


def _resources(spec: PodResources, gpu: GpuSpec | None = None) -> dict[str, Any]:
    requests: dict[str, str] = {"cpu": spec.cpu, "memory": spec.memory}
    limits: dict[str, str] = {"memory": spec.memory}
    if spec.cpu_limit:
        limits["cpu"] = spec.cpu_limit
    if gpu is not None and gpu.count:
        requests[gpu.resource] = str(gpu.count)
        limits[gpu.resource] = str(gpu.count)
    return {"requests": requests, "limits": limits}


# --- the service config as files --------------------------------------------------------------------------


def config_files(config: ServiceConfig, service_dir: Path) -> dict[str, tuple[str, str]]:
    """ConfigMap key -> (path under /etc/vatic, file text): the service config files and the Feast repo's.

    ``service.yaml`` and the environment's overlay go under ``service/``; the files of the Feast repository
    (``features.repo``, relative to the service folder) keep that relative position, so the config resolves the
    same way in the pod as in the checkout.
    """
    files: dict[str, tuple[str, str]] = {}
    names = [BASE_FILE]
    if config.environment != "local":
        names.append(f"{config.environment}.yaml")
    for name in names:
        path = service_dir / name
        if path.is_file():
            files[name] = (f"service/{name}", path.read_text(encoding="utf-8"))
    if config.features is not None:
        where = posixpath.normpath(posixpath.join("service", config.features.repo))
        if where.startswith(".."):
            raise ConfigError(
                f"service {config.service}: features.repo {config.features.repo!r} leaves the folder that holds "
                "the service folder; keep the Feast repository beside or below it (e.g. ../features)"
            )
        repo = (service_dir / config.features.repo).resolve()
        if repo.is_dir():
            for path in sorted(repo.iterdir()):
                if path.is_file() and path.suffix in FEATURE_SUFFIXES:
                    key = f"{where.replace('/', '.')}.{path.name}"
                    if not _CONFIG_KEY.match(key):
                        raise ConfigError(f"{path}: the file name cannot be a ConfigMap key; rename it")
                    files[key] = (f"{where}/{path.name}", path.read_text(encoding="utf-8"))
    return files


def _digest(files: dict[str, tuple[str, str]]) -> str:
    blob = json.dumps({k: v[1] for k, v in sorted(files.items())}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# --- pod building blocks ----------------------------------------------------------------------------------


def _container_security() -> dict[str, Any]:
    """Every container: non-root, read-only root filesystem (writes go to emptyDirs), no capabilities, no
    privilege escalation, the runtime's default seccomp profile."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_security(uid: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _config_volume(config: ServiceConfig, files: dict[str, tuple[str, str]]) -> dict[str, Any]:
    items = [{"key": key, "path": path} for key, (path, _) in sorted(files.items())]
    return {"name": "config", "configMap": {"name": f"{config.service}-config", "items": items}}


def _http_probe(
    path: str, port: str, *, period: int, failures: int, delay: int = 0, scheme: str = "HTTP"
) -> dict[str, Any]:
    """An HTTP(S) probe; scheme ``TCP`` is a TCP connect (a door that requires client certificates: the kubelet
    has none to show)."""
    if scheme == "TCP":
        probe: dict[str, Any] = {"tcpSocket": {"port": port}, "periodSeconds": period}
    elif scheme == "HTTPS":
        probe = {"httpGet": {"path": path, "port": port, "scheme": "HTTPS"}, "periodSeconds": period}
    else:
        probe = {"httpGet": {"path": path, "port": port}, "periodSeconds": period}
    if delay:
        probe["initialDelaySeconds"] = delay
    probe["timeoutSeconds"] = 2
    probe["failureThreshold"] = failures
    return probe


def _env(pairs: dict[str, str]) -> list[dict[str, Any]]:
    return [{"name": name, "value": value} for name, value in pairs.items()]


def _pod_meta(config: ServiceConfig, part: str, files: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """Pod template metadata: the component's labels; the config digest (a config change rolls the pods)."""
    annotations = {"vatic.dev/config-digest": _digest(files), **config.kubernetes.annotations}
    return {"labels": labels(config, part), "annotations": annotations}


def _spread(config: ServiceConfig, part: str) -> list[dict[str, Any]]:
    return [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector(config, part)},
        }
    ]


# --- objects ----------------------------------------------------------------------------------------------


def _namespace(config: ServiceConfig) -> dict[str, Any]:
    meta = {"name": config.namespace, "labels": {**labels(config), "kubernetes.io/metadata.name": config.namespace}}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def _configmap(config: ServiceConfig, files: dict[str, tuple[str, str]]) -> dict[str, Any]:
    data = {key: text for key, (_, text) in sorted(files.items())}
    if config.kubernetes.security.kafka.sasl_username:
        data[KAFKA_USERNAME_KEY] = config.kubernetes.security.kafka.sasl_username  # for KEDA; not mounted
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(config, f"{config.service}-config"),
        "data": data,
    }


def _registry_container(
    config: ServiceConfig, name: str, module: str, extra: list[str], resources: PodResources,
    ports: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A container of the model-server image that reads the registry (its credentials come from the optional
    Secret ``<service>-registry``) and writes into the models volume: ``python -m <module> /etc/vatic/service
    /models <extra> [--environment <env>]``."""
    command = ["python", "-m", module, f"{CONFIG_ROOT}/service", MODELS_DIR, *extra]
    if config.environment != "local":
        command += ["--environment", config.environment]
    container: dict[str, Any] = {
        "name": name,
        "image": config.image,
        "imagePullPolicy": config.kubernetes.image_pull_policy,
        "command": command,
    }
    if ports:
        container["ports"] = ports
    container.update(
        {
            "env": _env({"HOME": "/tmp"}),  # noqa: S108
            "envFrom": [{"secretRef": {"name": f"{config.service}-registry", "optional": True}}],
            "resources": _resources(resources),
            "securityContext": _container_security(),
            "volumeMounts": [
                {"name": "config", "mountPath": CONFIG_ROOT, "readOnly": True},
                {"name": "models", "mountPath": MODELS_DIR},
                {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108
            ],
        }
    )
    return container


def _fetch_container(config: ServiceConfig) -> dict[str, Any]:
    """The init container that materialises the registry version into the models volume (settings writer)."""
    resources = PodResources(cpu="250m", memory=config.resources.memory)
    return _registry_container(config, "fetch-model", "vatic.serving.runtimes.repository", [], resources)


#: the rollout controller's Prometheus port in the model server pod
ROLLOUT_METRICS_PORT = 9099


def _rollout_container(config: ServiceConfig) -> dict[str, Any]:
    """The rollout controller beside MLServer (``registry.refresh_s`` > 0): it writes new versions into the models
    volume and loads them through MLServer's repository API on loopback (:mod:`vatic.serving.runtimes.rollout`)."""
    server = ["--server", f"http://127.0.0.1:{config.serving.port}", "--metrics-port", str(ROLLOUT_METRICS_PORT)]
    ports = [{"name": "rollout-metrics", "containerPort": ROLLOUT_METRICS_PORT, "protocol": "TCP"}]
    resources = PodResources(cpu="100m", memory="512Mi")
    return _registry_container(config, "rollout", "vatic.serving.runtimes.rollout", server, resources, ports)


def _model_process(config: ServiceConfig, models: str) -> tuple[list[str], list[dict[str, Any]], dict[str, str]]:
    """The model server's command, container ports and plain environment (MLServer or uvicorn)."""
    serving = config.serving
    ports = [{"name": "http", "containerPort": serving.port, "protocol": "TCP"}]
    env = dict(sorted(config.env.items()))
    env["HOME"] = "/tmp"  # noqa: S108 - an emptyDir: the root filesystem is read-only
    if serving.layer == "mlserver":
        ports += [
            {"name": "grpc", "containerPort": serving.grpc_port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": serving.metrics_port, "protocol": "TCP"},
        ]
        command = ["python", "-m", "vatic.serving.runtimes.serve", "start", models]  # mlserver start + a body limit
        env["MLSERVER_METRICS_DIR"] = "/tmp/mlserver-metrics"  # noqa: S108
        env["MLSERVER_ENVIRONMENTS_DIR"] = "/tmp/mlserver-envs"  # noqa: S108
        return command, ports, env
    assert serving.entrypoint is not None  # the config model requires it for the full-custom tier
    command = ["uvicorn", serving.entrypoint, "--host", "0.0.0.0", "--port", str(serving.port)]  # noqa: S104
    if config.kubernetes.security.model.tls_cert:  # paths, not secrets: the files are mounted from Secrets
        command += ["--ssl-certfile", "$(VATIC_MODEL_TLS_CERT_FILE)", "--ssl-keyfile", "$(VATIC_MODEL_TLS_KEY_FILE)"]
    env["VATIC_MODEL_DIR"] = f"{models}/{config.model.name}"
    return command, ports, env


def _model_deployment(config: ServiceConfig, files: dict[str, tuple[str, str]]) -> dict[str, Any]:
    k8s, gpu = config.kubernetes, config.resources.gpu
    # autodownload: the init container fills the models volume; else the image holds them at registry.dest_path
    models = MODELS_DIR if config.registry.autodownload else config.registry.dest_path.rstrip("/")
    command, ports, env = _model_process(config, models)
    mounts = [{"name": "config", "mountPath": CONFIG_ROOT, "readOnly": True}]
    if config.registry.autodownload:
        mounts.append({"name": "models", "mountPath": MODELS_DIR, "readOnly": True})
    mounts.append({"name": "tmp", "mountPath": "/tmp"})  # noqa: S108
    access = model_tls_access(config)
    scheme = "HTTPS" if config.kubernetes.security.model.tls_cert else "HTTP"
    container: dict[str, Any] = {
        "name": "model-server",
        "image": config.image,
        "imagePullPolicy": k8s.image_pull_policy,
        "command": command,
        "ports": ports,
        "env": _env(env) + access.env,
        "resources": _resources(config.resources, gpu),
        "startupProbe": _http_probe("/v2/health/live", "http", period=5, failures=60, scheme=scheme),
        "livenessProbe": _http_probe("/v2/health/live", "http", period=10, failures=3, scheme=scheme),
        "readinessProbe": _http_probe("/v2/health/ready", "http", period=5, failures=3, scheme=scheme),
        "securityContext": _container_security(),
        "volumeMounts": mounts + access.mounts,
    }
    init = [_fetch_container(config)] if config.registry.autodownload else []
    node_selector = dict(k8s.node_selector)
    tolerations = [_toleration(t.model_dump(exclude_none=True)) for t in k8s.tolerations]
    if gpu is not None:
        if gpu.type:
            node_selector[gpu.node_label] = gpu.type
        tolerations.append({"key": gpu.resource, "operator": "Exists", "effect": "NoSchedule"})
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": _pod_security(MODEL_SERVER_UID),
        "terminationGracePeriodSeconds": k8s.termination_grace_period_s,
    }
    if k8s.priority_class:
        pod["priorityClassName"] = k8s.priority_class
    if k8s.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in k8s.image_pull_secrets]
    if node_selector:
        pod["nodeSelector"] = dict(sorted(node_selector.items()))
    if tolerations:
        pod["tolerations"] = tolerations
    pod["topologySpreadConstraints"] = _spread(config, "model")
    if init:
        pod["initContainers"] = init
    pod["containers"] = [container, _rollout_container(config)] if config.registry.follows else [container]
    pod["volumes"] = [_config_volume(config, files)]
    if config.registry.autodownload:
        pod["volumes"].append({"name": "models", "emptyDir": {"sizeLimit": k8s.model_storage}})
    pod["volumes"].append({"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}})
    pod["volumes"] += access.volumes
    spec: dict[str, Any] = {}
    if config.autoscaling is None:
        spec["replicas"] = config.replicas
    spec.update(
        {
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector(config, "model")},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": _int_or_percent(k8s.max_surge), "maxUnavailable": _int_or_percent(
                    k8s.max_unavailable)},
            },
            "template": {
                "metadata": _pod_meta(config, "model", files),
                "spec": pod,
            },
        }
    )  # fmt: skip
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(config, f"{config.service}-model", "model"),
        "spec": spec,
    }


def _toleration(raw: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in raw.items() if k != "toleration_seconds"}
    if "toleration_seconds" in raw:
        out["tolerationSeconds"] = raw["toleration_seconds"]
    return out


def _int_or_percent(value: str) -> int | str:
    return value if value.endswith("%") else int(value)


def _model_service(config: ServiceConfig) -> dict[str, Any]:
    serving = config.serving
    ports = [{"name": "http", "port": serving.port, "targetPort": "http", "protocol": "TCP"}]
    if serving.layer == "mlserver":
        ports += [
            {"name": "grpc", "port": serving.grpc_port, "targetPort": "grpc", "protocol": "TCP"},
            {"name": "metrics", "port": serving.metrics_port, "targetPort": "metrics", "protocol": "TCP"},
        ]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(config, f"{config.service}-model", "model"),
        "spec": {"type": "ClusterIP", "selector": selector(config, "model"), "ports": ports},
    }


def _gpu_query(config: ServiceConfig) -> str:
    metric = config.kubernetes.gpu_metric
    return f'avg({metric}{{namespace="{config.namespace}",pod=~"{config.service}-model-.*"}})'


def _hpa(config: ServiceConfig) -> dict[str, Any]:
    auto = config.autoscaling
    assert auto is not None
    metrics: list[dict[str, Any]] = []
    if auto.cpu_utilization is not None:
        target = {"type": "Utilization", "averageUtilization": auto.cpu_utilization}
        metrics.append({"type": "Resource", "resource": {"name": "cpu", "target": target}})
    if auto.gpu_utilization is not None:
        metric = {"name": config.kubernetes.gpu_metric}
        target = {"type": "AverageValue", "averageValue": str(auto.gpu_utilization)}
        metrics.append({"type": "Pods", "pods": {"metric": metric, "target": target}})
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(config, f"{config.service}-model", "model"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{config.service}-model"},
            "minReplicas": max(1, auto.min_replicas),
            "maxReplicas": auto.max_replicas,
            "metrics": metrics,
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


#: kubernetes.security.kafka.sasl_mechanism -> the KEDA Kafka scaler's ``sasl``
_KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}


def _keda_needs_auth(config: ServiceConfig) -> bool:
    kafka = config.kubernetes.security.kafka
    return bool(kafka.sasl_password or kafka.ca or kafka.client_cert or kafka.client_key_password)


def _trigger_authentication(config: ServiceConfig) -> dict[str, Any]:
    """KEDA's credentials for the Kafka lag trigger: the same Secrets as the job's, by reference."""
    kafka = config.kubernetes.security.kafka
    refs = [("password", kafka.sasl_password), ("ca", kafka.ca), ("cert", kafka.client_cert),
            ("key", kafka.client_key), ("keyPassword", kafka.client_key_password)]  # fmt: skip
    spec: dict[str, Any] = {
        "secretTargetRef": [{"parameter": p, "name": r.name, "key": r.key} for p, r in refs if r is not None]
    }
    if kafka.sasl_username:
        ref = {"parameter": "username", "name": f"{config.service}-config", "key": KAFKA_USERNAME_KEY}
        spec["configMapTargetRef"] = [ref]
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": _meta(config, f"{config.service}-kafka", "model"),
        "spec": spec,
    }


def _scaled_object(config: ServiceConfig) -> dict[str, Any]:
    auto, streaming = config.autoscaling, config.streaming
    assert auto is not None
    assert auto.kafka_lag is not None
    assert streaming is not None
    kafka = config.kubernetes.security.kafka
    lag: dict[str, Any] = {
        "type": "kafka",
        "metadata": {
            "bootstrapServers": config.kubernetes.kafka_bootstrap_servers,
            "consumerGroup": config.consumer_group,
            "topic": streaming.input_topic,
            "lagThreshold": str(auto.kafka_lag),
            "offsetResetPolicy": "earliest",
        },
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        lag["metadata"]["tls"] = "enable"
    if kafka.sasl_mechanism:
        lag["metadata"]["sasl"] = _KEDA_SASL[kafka.sasl_mechanism]
    if _keda_needs_auth(config):
        lag["authenticationRef"] = {"name": f"{config.service}-kafka"}
    triggers: list[dict[str, Any]] = [lag]
    if auto.cpu_utilization is not None:
        triggers.append({"type": "cpu", "metricType": "Utilization", "metadata": {"value": str(auto.cpu_utilization)}})
    if auto.gpu_utilization is not None:
        metadata = {
            "serverAddress": config.kubernetes.prometheus_url,
            "query": _gpu_query(config),
            "threshold": str(auto.gpu_utilization),
        }
        triggers.append({"type": "prometheus", "metadata": metadata})
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _meta(config, f"{config.service}-model", "model"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{config.service}-model"},
            "minReplicaCount": auto.min_replicas,
            "maxReplicaCount": auto.max_replicas,
            "pollingInterval": 15,
            "cooldownPeriod": 300,
            "advanced": {
                "horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}}}
            },
            "triggers": triggers,
        },
    }


def _pdb(config: ServiceConfig, part: str) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(config, f"{config.service}-{part}", part),
        "spec": {
            "maxUnavailable": _int_or_percent(config.kubernetes.pdb_max_unavailable),
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
            "selector": {"matchLabels": selector(config, part)},
        },
    }


def _model_network_policy(config: ServiceConfig) -> dict[str, Any]:
    serving = config.serving
    serving_ports = [{"protocol": "TCP", "port": "http"}]
    if serving.layer == "mlserver":
        serving_ports.append({"protocol": "TCP", "port": "grpc"})
    callers = [{"podSelector": {"matchLabels": selector(config, "gateway")}}]
    if config.streaming is not None:
        callers.append({"podSelector": {"matchLabels": selector(config, "stream")}})
    ingress: list[dict[str, Any]] = [{"from": callers, "ports": serving_ports}]
    if serving.layer == "mlserver":
        monitoring = {"kubernetes.io/metadata.name": config.kubernetes.monitoring_namespace}
        ingress.append(
            {
                "from": [{"namespaceSelector": {"matchLabels": monitoring}}],
                "ports": [{"protocol": "TCP", "port": "metrics"}],
            }
        )  # fmt: skip
    return _ingress_policy(config, "model", ingress)


def _ingress_policy(
    config: ServiceConfig, part: str, ingress: list[dict[str, Any]] | None, *, pods: dict[str, str] | None = None
) -> dict[str, Any]:
    """The NetworkPolicy ``<service>-<part>``: ingress to ``part``'s pods (or ``pods``, a label selector) only as
    ``ingress`` allows; None allows nothing (a default deny)."""
    component = None if pods is not None else part
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": pods if pods is not None else selector(config, part)},
        "policyTypes": ["Ingress"],
    }
    if ingress is not None:
        spec["ingress"] = ingress
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(config, f"{config.service}-{part}", component),
        "spec": spec,
    }


def _default_deny(config: ServiceConfig) -> dict[str, Any]:
    """Ingress to every pod of this service is denied unless a policy of its component lets it in.

    Scoped to the service's pods, not to the namespace: the namespace may hold other services of the project
    and their stores (see docs/decisions/0010-k8s-security.md).
    """
    service_pods = {"app.kubernetes.io/instance": config.service, "vatic.dev/service": config.service}
    return _ingress_policy(config, "default-deny", None, pods=service_pods)


def flink_rest_port(config: ServiceConfig) -> int:
    """The JobManager's REST port (``rest.port`` of the Flink configuration, 8081 by default)."""
    return int(config.kubernetes.flink.configuration.get("rest.port", "8081"))


#: the port of Flink's Prometheus reporter in the job's pods, unless the Flink configuration sets another
FLINK_METRICS_PORT = 9249


def flink_metrics_port(config: ServiceConfig) -> int:
    """The job's Prometheus port (``metrics.reporter.prom.port`` of the Flink configuration, else 9249)."""
    return int(config.kubernetes.flink.configuration.get("metrics.reporter.prom.port", str(FLINK_METRICS_PORT)))


def _stream_metrics_service(config: ServiceConfig) -> dict[str, Any]:
    """A headless Service over the job's pods (JobManager and TaskManagers), for the ServiceMonitor to find them."""
    port = {"name": "metrics", "port": flink_metrics_port(config), "targetPort": "metrics", "protocol": "TCP"}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(config, f"{config.service}-stream-metrics", "stream"),
        "spec": {"clusterIP": "None", "selector": selector(config, "stream"), "ports": [port]},
    }


def _stream_network_policy(config: ServiceConfig) -> dict[str, Any]:
    """The job's pods talk to each other on any port (RPC, blobs, data exchange use ports Flink picks), the
    Flink Kubernetes Operator's namespace reaches the JobManager's REST port and the monitoring namespace the
    metrics port; nothing else gets in."""
    operator = {"kubernetes.io/metadata.name": config.kubernetes.flink.operator_namespace}
    monitoring = {"kubernetes.io/metadata.name": config.kubernetes.monitoring_namespace}
    return _ingress_policy(
        config,
        "stream",
        [
            {"from": [{"podSelector": {"matchLabels": selector(config, "stream")}}]},
            {
                "from": [{"namespaceSelector": {"matchLabels": operator}}],
                "ports": [{"protocol": "TCP", "port": flink_rest_port(config)}],
            },
            {
                "from": [{"namespaceSelector": {"matchLabels": monitoring}}],
                "ports": [{"protocol": "TCP", "port": "metrics"}],
            },
        ],
    )


def _service_monitor(config: ServiceConfig, part: str, port: str) -> dict[str, Any]:
    meta = _meta(config, f"{config.service}-{part}", part)
    meta["labels"] = {**meta["labels"], **config.kubernetes.monitoring_labels}
    endpoint: dict[str, Any] = {"port": port, "path": "/metrics", "interval": config.kubernetes.scrape_interval}
    gateway = config.kubernetes.security.gateway
    if part == "gateway" and gateway.tls_cert is not None:  # the gateway serves /metrics on its one TLS port
        endpoint["scheme"] = "https"
        if gateway.tls_ca is not None:
            ca = {"secret": {"name": gateway.tls_ca.name, "key": gateway.tls_ca.key}}
            endpoint["tlsConfig"] = {"ca": ca, "serverName": f"{config.service}-gateway.{config.namespace}.svc"}
        else:  # metrics carry no secret; without the CA Prometheus cannot verify (docs/decisions/0010-k8s-security.md)
            endpoint["tlsConfig"] = {"insecureSkipVerify": True}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": selector(config, part)},
            "namespaceSelector": {"matchNames": [config.namespace]},
            "endpoints": [endpoint],
        },
    }


def _gateway_scheme(config: ServiceConfig) -> str:
    """How the kubelet probes the gateway: HTTP, HTTPS (gateway TLS) or TCP (client certificates required)."""
    gateway = config.kubernetes.security.gateway
    if gateway.client_ca is not None:
        return "TCP"
    return "HTTPS" if gateway.tls_cert is not None else "HTTP"


def _gateway_deployment(config: ServiceConfig, files: dict[str, tuple[str, str]]) -> dict[str, Any]:
    gateway, k8s = config.gateway, config.kubernetes
    args = ["gateway", "--service", f"{CONFIG_ROOT}/service", "--host", "0.0.0.0", "--port", str(gateway.port)]  # noqa: S104
    if config.environment != "local":
        args += ["--env", config.environment]
    args += ["--endpoint", f"{config.service}={model_url(config)}"]
    env: list[dict[str, Any]] = _env({"HOME": "/tmp", "VATIC_STACK_HOME": "/tmp/vatic"})  # noqa: S108
    env.append({"name": "VATIC_GATEWAY_MAX_BODY_BYTES", "value": str(gateway.max_body_bytes)})
    if gateway.auth_token_env:
        secret = {"name": f"{config.service}-gateway-auth", "key": "token"}
        env.append({"name": "VATIC_GATEWAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": secret}})
    access = gateway_access(config) + redis_access(config)
    if config.shadow_topic is not None:  # the doors' shadow answers go to the shadow topic, as the job's do
        env.append({"name": "VATIC_GATEWAY_SHADOW_TOPICS", "value": "true"})
        env.append({"name": "VATIC_KAFKA_BOOTSTRAP_SERVERS", "value": k8s.kafka_bootstrap_servers})
        if k8s.schema_registry_url:
            env.append({"name": "VATIC_SCHEMA_REGISTRY_URL", "value": k8s.schema_registry_url})
        access += kafka_access(config) + registry_access(config)
    scheme = _gateway_scheme(config)
    container = {
        "name": "gateway",
        "image": config.pipeline_image,
        "imagePullPolicy": k8s.image_pull_policy,
        "command": ["vatic"],
        "args": args,
        "ports": [{"name": "http", "containerPort": gateway.port, "protocol": "TCP"}],
        "env": env + access.env,
        "resources": _resources(gateway.resources),
        "livenessProbe": _http_probe("/v2/health/live", "http", period=10, failures=3, delay=5, scheme=scheme),
        "readinessProbe": _http_probe("/v2/health/live", "http", period=5, failures=3, scheme=scheme),
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_ROOT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108
            *access.mounts,
        ],
    }
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": _pod_security(PIPELINE_UID),
        "terminationGracePeriodSeconds": k8s.termination_grace_period_s,
    }
    if k8s.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in k8s.image_pull_secrets]
    pod["topologySpreadConstraints"] = _spread(config, "gateway")
    pod["containers"] = [container]
    pod["volumes"] = [_config_volume(config, files), {"name": "tmp", "emptyDir": {"sizeLimit": "512Mi"}}]
    pod["volumes"] += access.volumes
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(config, f"{config.service}-gateway", "gateway"),
        "spec": {
            "replicas": gateway.replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector(config, "gateway")},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": _pod_meta(config, "gateway", files),
                "spec": pod,
            },
        },
    }  # fmt: skip


def _gateway_service(config: ServiceConfig) -> dict[str, Any]:
    port = {"name": "http", "port": config.gateway.port, "targetPort": "http", "protocol": "TCP"}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(config, f"{config.service}-gateway", "gateway"),
        "spec": {"type": "ClusterIP", "selector": selector(config, "gateway"), "ports": [port]},
    }


def _gateway_network_policy(config: ServiceConfig) -> dict[str, Any]:
    return _ingress_policy(config, "gateway", [{"ports": [{"protocol": "TCP", "port": "http"}]}])


def state_claim(config: ServiceConfig) -> str:
    """The PersistentVolumeClaim of the job's checkpoints and savepoints."""
    return config.kubernetes.flink.state_volume_claim or f"{config.service}-flink-state"


def _state_pvc(config: ServiceConfig) -> dict[str, Any]:
    flink = config.kubernetes.flink
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": flink.state_storage}},
    }
    if flink.storage_class:
        spec["storageClassName"] = flink.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(config, state_claim(config), "stream"),
        "spec": spec,
    }


def job_settings(config: ServiceConfig, job: str = "predict") -> JobSettings:
    """The settings of the job (``predict``: the pipeline; ``monitor``: its drift monitor) in the cluster (built
    without reading this machine's environment)."""
    name = config.service if job == "predict" else f"{config.service}-monitor"
    fields: dict[str, Any] = {
        "service_dir": Path(f"{CONFIG_ROOT}/service"),
        "environment": config.environment,
        "bootstrap_servers": config.kubernetes.kafka_bootstrap_servers,
        "model_url": model_url(config),
        "schema_registry_url": config.kubernetes.schema_registry_url,
        "checkpoint_dir": Path(f"{STATE_DIR}/checkpoints/{name}"),
        "job_name": f"vatic-{name}",
    }
    if job == "monitor":
        fields["job"] = "monitor"
    return JobSettings.model_construct(**fields)


def _flink_deployment(config: ServiceConfig, files: dict[str, tuple[str, str]], job: str = "predict") -> dict[str, Any]:
    """The FlinkDeployment of the service's pipeline, or (``job="monitor"``) of its drift monitor: the same image,
    configuration and credentials, its own checkpoints and parallelism."""
    streaming, flink, k8s = config.streaming, config.kubernetes.flink, config.kubernetes
    assert streaming is not None
    service = config.service if job == "predict" else f"{config.service}-monitor"
    conf = {
        "taskmanager.numberOfTaskSlots": str(flink.task_slots),
        "execution.checkpointing.interval": f"{round(streaming.checkpoint_interval_s * 1000)} ms",
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "execution.checkpointing.dir": f"file://{STATE_DIR}/checkpoints/{service}",
        "execution.checkpointing.savepoint-dir": f"file://{STATE_DIR}/savepoints/{service}",
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "high-availability.type": "kubernetes",
        "high-availability.storageDir": f"file://{STATE_DIR}/ha/{service}",
        **recovery_settings(config),
        "execution.checkpointing.timeout": f"{round(checkpoint_timeout_s(config))} s",
        "execution.checkpointing.tolerable-failed-checkpoints": "1",
        "python.executable": "/opt/venv/bin/python",
        "python.client.executable": "/opt/venv/bin/python",
        "io.tmp.dirs": "/tmp",  # noqa: S108 - an emptyDir: the root filesystem is read-only
        **prometheus_reporter(FLINK_METRICS_PORT),
        **flink.configuration,
    }
    # the JobManager runs the Python driver and the Kafka source's enumerator, the TaskManagers the readers and
    # writers: both roles get every credential from this one template (the operator applies it to both)
    access = kafka_access(config) + registry_access(config) + redis_access(config) + model_ca_access(config)
    main_container = {
        "name": "flink-main-container",
        "ports": [{"name": "metrics", "containerPort": flink_metrics_port(config), "protocol": "TCP"}],
        "env": _env({"HOME": "/tmp", "VATIC_STACK_HOME": "/tmp/vatic"}) + access.env,  # noqa: S108
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_ROOT, "readOnly": True},
            {"name": "state", "mountPath": STATE_DIR},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - io.tmp.dirs, blobs, the Python workers' files
            {"name": "flink-log", "mountPath": FLINK_LOG_DIR},
            *access.mounts,
        ],
    }
    pod_template = {
        "metadata": _pod_meta(config, "stream", files),
        "spec": {
            "securityContext": _pod_security(PIPELINE_UID),
            "containers": [main_container],
            "volumes": [
                _config_volume(config, files),
                {"name": "state", "persistentVolumeClaim": {"claimName": state_claim(config)}},
                {"name": "tmp", "emptyDir": {"sizeLimit": "4Gi"}},
                {"name": "flink-log", "emptyDir": {"sizeLimit": "1Gi"}},
                *access.volumes,
            ],
        },
    }
    if k8s.image_pull_secrets:
        pod_template["spec"]["imagePullSecrets"] = [{"name": name} for name in k8s.image_pull_secrets]
    return {
        "apiVersion": "flink.apache.org/v1beta1",
        "kind": "FlinkDeployment",
        "metadata": _meta(config, f"{service}-stream" if job == "predict" else service, "stream"),
        "spec": {
            "image": config.pipeline_image,
            "imagePullPolicy": k8s.image_pull_policy,
            "flinkVersion": flink.flink_version,
            "serviceAccount": flink.service_account,
            "flinkConfiguration": conf,
            # Beam logs a Python worker's whole environment (the Secrets in it) unless told not to
            "logConfiguration": {"log4j-console.properties": console_log4j()},
            "podTemplate": pod_template,
            "jobManager": {
                "replicas": 1,
                "resource": {"cpu": flink_cpu(flink.jobmanager.cpu), "memory": flink_memory(flink.jobmanager.memory)},
            },
            "taskManager": {
                "resource": {"cpu": flink_cpu(flink.taskmanager.cpu), "memory": flink_memory(flink.taskmanager.memory)},
            },
            "job": {
                "jarURI": flink.python_jar,
                "entryClass": "org.apache.flink.client.python.PythonDriver",
                "args": ["-pym", "vatic.streaming.main", *job_arguments([job_settings(config, job)], local=False)],
                "parallelism": streaming.parallelism if job == "predict" else config.monitoring.parallelism,
                "upgradeMode": flink.upgrade_mode,
                "state": "running",
            },
        },
    }  # fmt: skip


def _drift_rule(config: ServiceConfig) -> dict[str, Any]:
    """The PrometheusRule of the drift monitor's gauges (vatic.streaming.monitor): an alert per model version and
    column that drifted in its last judged window (``monitoring.psi_threshold``, ``missing_rise``; windows under
    ``min_count`` are not judged), and one when the monitor reads undecodable records."""
    prefix = "flink_taskmanager_job_task_operator_vatic"
    job = f'job_name="vatic-{config.service}-monitor"'
    window = config.monitoring.window_s
    meta = _meta(config, f"{config.service}-drift", "stream")
    meta["labels"] = {**meta["labels"], **config.kubernetes.monitoring_labels}
    drift = {
        "alert": "VaticModelDrift",
        "expr": f"max by (model, version, column) ({prefix}_model_version_column_drifted{{{job}}}) == 1",
        "for": f"{max(60, round(window))}s",
        "labels": {"severity": "warning", "service": config.service},
        "annotations": {
            "summary": f"{config.service}: {{{{ $labels.column }}}} of model {{{{ $labels.model }}}} version "
            f"{{{{ $labels.version }}}} drifted from its training data",
            "description": f"The drift monitor of {config.service} judged the last {window:g} s window of this "
            f"version: a PSI of {config.monitoring.psi_threshold:g} or more, or a missing rate "
            f"{config.monitoring.missing_rise:g} above training. `vatic monitor show` lists the windows; "
            "`vatic retrain` trains the next version.",
        },
    }
    undecodable = {
        "alert": "VaticDriftMonitorUndecodable",
        "expr": f"increase({prefix}_undecodable{{{job}}}[15m]) > 0",
        "labels": {"severity": "info", "service": config.service},
        "annotations": {"summary": f"{config.service}: the drift monitor skipped records it could not decode"},
    }
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": meta,
        "spec": {"groups": [{"name": f"vatic-{config.service}-drift", "rules": [drift, undecodable]}]},
    }


def build_manifests(config: ServiceConfig, service_dir: Path) -> list[Manifest]:
    """Every object of the service in ``config.environment`` (see the module docstring), in apply order."""
    refuse_literal_secrets(config)
    security_check(config)  # production refuses unencrypted Kafka and an unauthenticated gateway
    files = config_files(config, service_dir)
    out = [
        Manifest("namespace.yaml", _namespace(config)),
        Manifest("configmap.yaml", _configmap(config, files)),
        Manifest("model-deployment.yaml", _model_deployment(config, files)),
        Manifest("model-service.yaml", _model_service(config)),
    ]
    auto = config.autoscaling
    if auto is not None and auto.kafka_lag is not None:
        if _keda_needs_auth(config):
            out.append(Manifest("model-triggerauthentication.yaml", _trigger_authentication(config)))
        out.append(Manifest("model-scaledobject.yaml", _scaled_object(config)))
    elif auto is not None:
        out.append(Manifest("model-hpa.yaml", _hpa(config)))
    out += [
        Manifest("model-pdb.yaml", _pdb(config, "model")),
        Manifest("default-deny-networkpolicy.yaml", _default_deny(config)),
        Manifest("model-networkpolicy.yaml", _model_network_policy(config)),
    ]
    if config.serving.layer == "mlserver":
        out.append(Manifest("model-servicemonitor.yaml", _service_monitor(config, "model", "metrics")))
    out += [
        Manifest("gateway-deployment.yaml", _gateway_deployment(config, files)),
        Manifest("gateway-service.yaml", _gateway_service(config)),
        Manifest("gateway-pdb.yaml", _pdb(config, "gateway")),
        Manifest("gateway-networkpolicy.yaml", _gateway_network_policy(config)),
        Manifest("gateway-servicemonitor.yaml", _service_monitor(config, "gateway", "http")),
    ]
    if config.streaming is not None:
        if config.kubernetes.flink.state_volume_claim is None:
            out.append(Manifest("flink-state-pvc.yaml", _state_pvc(config)))
        out.append(Manifest("flink-deployment.yaml", _flink_deployment(config, files)))
        if config.monitoring.enabled:
            out.append(Manifest("monitor-flink-deployment.yaml", _flink_deployment(config, files, "monitor")))
            out.append(Manifest("drift-prometheusrule.yaml", _drift_rule(config)))
        out.append(Manifest("stream-networkpolicy.yaml", _stream_network_policy(config)))
        out.append(Manifest("stream-metrics-service.yaml", _stream_metrics_service(config)))
        out.append(Manifest("stream-servicemonitor.yaml", _service_monitor(config, "stream", "metrics")))
    return out
