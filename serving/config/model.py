"""The service config model (pydantic v2). Every section rejects unknown keys.

One :class:`ServiceConfig` describes one prediction service end to end:

* ``serving`` and ``model``: how MLServer (or a FastAPI app) serves the model and which V2 tensors it takes;
* ``features``: which Feast features enrich each event, and what happens when one is missing;
* ``streaming``: the Kafka topics and the PyFlink job's batching, capacity and delivery guarantee;
* ``replicas``, ``resources``, ``autoscaling``, ``registry``, ``env``: what the Kubernetes renderer needs.

This module imports only pydantic and the V2 wire types (:mod:`vatic.connectors.v2.types`, stdlib and orjson):
the model server environment, the pipeline environment and the CLI all read the same classes.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import Field, field_validator, model_validator

from vatic.serving.config.base import OutputSpec, Section, TensorSpec, at
from vatic.serving.config.graph import GraphSpec, StepSpec

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"
FEATURE_REF = r"^[A-Za-z_][A-Za-z0-9_]*:[A-Za-z_][A-Za-z0-9_]*$"
TOPIC = r"^[A-Za-z0-9._-]{1,249}$"


_EnvMap = TypeVar("_EnvMap", bound=dict[str, Any])


def _env_names(value: _EnvMap) -> _EnvMap:
    """``value`` unchanged when every key is a valid environment variable name; ValueError naming the first that is
    not."""
    for name in value:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise ValueError(f"{name!r} is not a valid environment variable name")
    return value


class ModelSpec(Section):
    """The model as the V2 protocol sees it."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="model name on the model server")
    version: str | None = Field(None, description="model version on the model server (None: the default one)")
    inputs: list[TensorSpec] = Field(
        default_factory=list, description="the V2 input tensors (none with a graph: its steps declare theirs)"
    )
    outputs: list[OutputSpec] = Field(
        min_length=1, description="the outputs the prediction carries (with a graph: of its output step)"
    )


class ServingSpec(Section):
    """How the model is served.

    Tiers: ``no-code`` (MLServer's own runtime for sklearn / xgboost / lightgbm, config only), ``low-code`` (an
    ``MLModel`` subclass named by ``implementation``), ``full-custom`` (a FastAPI app named by ``entrypoint``).
    """

    layer: Literal["mlserver", "fastapi"] = "mlserver"
    tier: Literal["no-code", "low-code", "full-custom"] = "no-code"
    library: Literal["sklearn", "xgboost", "lightgbm", "torch", "custom"] = "sklearn"
    implementation: str | None = Field(None, description="MLServer runtime class 'module.Class' (low-code tier)")
    entrypoint: str | None = Field(None, description="ASGI app 'module:app' (full-custom tier)")
    port: int = Field(8080, ge=1, le=65535, description="HTTP port (V2 REST)")
    grpc_port: int = Field(8081, ge=1, le=65535)
    protocol: Literal["rest", "grpc"] = Field(
        "rest",
        description="how the gateway and the stream job call the model server: rest (V2 JSON on port) or grpc "
        "(V2 on grpc_port, every tensor as raw bytes: no JSON numbers to write and parse, for large tensors)",
    )
    metrics_port: int = Field(8082, ge=1, le=65535)
    parallel_workers: int = Field(
        0,
        ge=0,
        description="MLServer inference worker processes; 0 runs predict in the server process "
        "(why 0 by default: docs/decisions/0006-parallel-workers.md)",
    )
    max_batch_size: int = Field(1, ge=1, description="MLServer adaptive batching: largest batch (1 = off)")
    max_batch_time_ms: int = Field(0, ge=0, description="MLServer adaptive batching: longest wait")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when a GPU is visible")

    @model_validator(mode="after")
    def _tier_matches(self) -> ServingSpec:
        if self.layer == "fastapi" and self.tier != "full-custom":
            raise ValueError("layer fastapi is the full-custom tier: set tier: full-custom")
        if self.tier == "full-custom" and not self.entrypoint:
            raise ValueError("the full-custom tier needs entrypoint: 'module:app' (the FastAPI app to serve)")
        if self.tier == "low-code" and not self.implementation:
            raise ValueError("the low-code tier needs implementation: 'module.Class' (your MLModel subclass)")
        if self.protocol == "grpc" and self.layer != "mlserver":
            raise at("protocol", "the full-custom tier (FastAPI) serves V2 over REST only: set protocol: rest")
        if self.tier == "no-code" and self.library not in ("sklearn", "xgboost", "lightgbm"):
            raise ValueError(
                f"the no-code tier serves sklearn, xgboost or lightgbm models, not {self.library}: "
                "use tier: low-code with an implementation"
            )
        return self


class GpuSpec(Section):
    """GPUs per model server replica: a resource request/limit, a node selector and a toleration."""

    count: int | None = Field(None, ge=1, description="GPUs per replica (an integer >= 1)")
    type: str | None = Field(None, description="GPU product, e.g. nvidia-l4 (becomes a node selector)")
    resource: str = Field("nvidia.com/gpu", description="extended resource name (also the taint key tolerated)")
    node_label: str = Field(
        "cloud.google.com/gke-accelerator",
        description="node label whose value is the GPU type (GKE: cloud.google.com/gke-accelerator; NVIDIA GPU "
        "feature discovery: nvidia.com/gpu.product)",
    )

    @model_validator(mode="after")
    def _type_needs_count(self) -> GpuSpec:
        if self.count is None:
            if self.type:
                raise ValueError(
                    f"gpu.type {self.type} without gpu.count: add gpu.count: 1 (GPUs per replica) "
                    "or remove the gpu section"
                )
            raise ValueError("gpu.count is missing: add gpu.count: 1 (or remove the gpu section)")
        return self


class PodResources(Section):
    """CPU and memory of one container (Kubernetes quantities: ``500m``, ``2``, ``512Mi``, ``4Gi``)."""

    cpu: str = Field("1", pattern=QUANTITY, description="CPU request per replica (Kubernetes quantity, e.g. 500m)")
    memory: str = Field("1Gi", pattern=QUANTITY, description="memory request and limit per replica (e.g. 2Gi)")
    cpu_limit: str | None = Field(None, pattern=QUANTITY, description="CPU limit (default: none, avoids throttling)")


class ResourcesSpec(PodResources):
    """The model server's resources; ``gpu`` adds GPUs (request, node selector, toleration)."""

    gpu: GpuSpec | None = Field(None, description="GPUs per replica: count (required), type, resource")


class AutoscalingSpec(Section):
    """Horizontal scaling: an HPA on CPU (and GPU utilisation via a custom metric), or KEDA on consumer lag."""

    min_replicas: int = Field(1, ge=0, description="fewest replicas (0 only with kafka_lag: KEDA scales to zero)")
    max_replicas: int = Field(3, ge=1, description="most replicas (an integer >= 1, at least min_replicas)")
    cpu_utilization: int | None = Field(70, ge=1, le=100, description="target average CPU utilisation, %")
    gpu_utilization: int | None = Field(None, ge=1, le=100, description="target GPU utilisation, % (DCGM metric)")
    kafka_lag: int | None = Field(None, ge=1, description="target consumer lag per replica: renders KEDA")

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSpec:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas})")
        if self.min_replicas == 0 and self.kafka_lag is None:
            raise ValueError("min_replicas 0 needs kafka_lag (KEDA scales from zero; an HPA cannot)")
        if self.cpu_utilization is None and self.gpu_utilization is None and self.kafka_lag is None:
            raise ValueError(
                "autoscaling has no target: set cpu_utilization, gpu_utilization or kafka_lag (or remove autoscaling)"
            )
        return self


class ArtifactPin(Section):
    path: str = Field(description="artifact file, relative to the model folder")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class RegistrySpec(Section):
    """Where the model artifacts come from; downloaded at server start into ``dest_path``."""

    backend: Literal["local", "comet", "mlflow"] = "local"
    uri: str | None = Field(None, description="local: root folder; mlflow: tracking URI; comet: API base URL")
    workspace: str | None = Field(None, description="Comet workspace")
    model: str | None = Field(None, description="registry model name (default: model.name)")
    version: str | None = None
    stages: list[str] = Field(default_factory=list, description="accept the newest version in one of these stages")
    canary_stage: str = Field(
        "canary",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="with refresh_s: the stage whose version answers a canary share of the entities (canary.weight, "
        "default 0.1), beside the followed one (`vatic promote` puts a version there first)",
    )
    dest_path: str = Field("models", description="where artifacts are materialised for the model server")
    autodownload: bool = True
    artifacts: list[ArtifactPin] = Field(default_factory=list, description="sha256 pins of artifact files")
    allow_pickle: bool = Field(False, description="allow .pkl/.joblib artifacts (only with a sha256 pin)")
    refresh_s: float = Field(
        0,
        ge=0,
        le=86400,
        description="follow the registry: every refresh_s seconds the model server loads the version the stages "
        "(or the latest) name now, checks it and switches to it (0: resolved once, at server start)",
    )

    @model_validator(mode="after")
    def _comet_needs_workspace(self) -> RegistrySpec:
        if self.backend == "comet" and not self.workspace:
            raise ValueError("the comet backend needs workspace: <your Comet workspace>")
        if self.refresh_s and not self.autodownload:
            raise ValueError(
                "registry.refresh_s loads new versions from the registry, and autodownload: false serves the models "
                "the image holds: remove one of them"
            )
        if self.refresh_s and self.version is not None:
            raise ValueError(
                f"registry.refresh_s follows a stage or the latest version; version {self.version!r} is pinned and "
                "never changes: remove one of them"
            )
        return self

    @property
    def follows(self) -> bool:
        """Whether the served version follows the registry while running (``refresh_s`` > 0)."""
        return self.refresh_s > 0


class ShadowSpec(Section):
    """A second model that answers every event beside the serving one, for comparison only: its answers go to
    the shadow topic and metrics, never to the caller, the predictions topic or the dead letters."""

    model: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="registry model of the shadow, served under this name (default: the service's own model)",
    )
    version: str = Field(description="registry version of the shadow (loaded beside the serving version)")
    stream_wait_ms: int = Field(
        100,
        ge=0,
        le=60_000,
        description="stream: after the serving answer, how long a micro-batch waits for the shadow's (later "
        "answers are dropped and counted)",
    )
    rest_wait_ms: int = Field(
        0,
        ge=0,
        le=60_000,
        description="REST and gRPC: how long an answer waits for the shadow (0: never; the shadow finishes behind it)",
    )
    tolerance: float = Field(0.01, ge=0, description="two numeric outputs agree when they differ by at most this much")


class CanarySpec(Section):
    """A share of the entities answered by another version of the model, the same entities on every path."""

    version: str | None = Field(
        None,
        description="registry version of the canary, loaded beside the serving version (a service that follows "
        "its registry takes it from the registry's canary stage instead)",
    )
    weight: float = Field(0.1, gt=0, lt=1, description="share of entities the canary answers (0 < weight < 1)")
    key: list[str] = Field(
        default_factory=list,
        description="event fields whose values pick an entity's version (default: the feature entity keys)",
    )


class FeaturePolicy(Section):
    on_missing: Literal["default", "reject"] = Field(
        "default", description="default: use the default value and set the missing flag; reject: data error"
    )
    default: float | int | str | bool | None = Field(
        None, description="value passed to the model; None becomes NaN for numeric tensors (native 'missing')"
    )


class FeatureSpec(Section):
    """Feast enrichment: which features, for which entity keys of the event, and the missing-feature policy."""

    repo: str = Field("features", description="Feast feature repository folder, relative to the service folder")
    project: str | None = Field(None, description="Feast project (default: the repository's own)")
    online_store: Literal["repo", "sqlite", "redis"] = Field("repo", description="override the repo's store")
    redis_url: str | None = Field(None, description="Redis URL when online_store is redis")
    entities: dict[str, str] = Field(min_length=1, description="Feast join key -> event field")
    refs: list[Annotated[str, Field(pattern=FEATURE_REF)]] = Field(min_length=1, description="'view:feature' refs")
    on_missing: Literal["default", "reject"] = "default"
    defaults: dict[str, float | int | str | bool | None] = Field(default_factory=dict)
    policies: dict[str, FeaturePolicy] = Field(default_factory=dict, description="per-feature overrides")
    deadline_ms: int = Field(200, ge=1)
    cache_ttl_ms: int = Field(
        1000,
        ge=0,
        description="serve an entity's features read less than this long ago from memory (0: always read the "
        "store); materialized aggregates change far more slowly than one entity's events arrive",
    )

    @model_validator(mode="after")
    def _known_refs(self) -> FeatureSpec:
        unknown = (set(self.defaults) | set(self.policies)) - set(self.refs)
        if unknown:
            raise ValueError(f"defaults/policies name features that are not in refs: {sorted(unknown)}")
        return self

    def policy(self, ref: str) -> FeaturePolicy:
        """The effective policy of one feature."""
        if ref in self.policies:
            return self.policies[ref]
        return FeaturePolicy(on_missing=self.on_missing, default=self.defaults.get(ref))


class RetrySpec(Section):
    budget_s: float = Field(60.0, gt=0, description="retry transient errors this long, then fail the task")
    initial_backoff_ms: int = Field(50, ge=1)
    max_backoff_ms: int = Field(5000, ge=1)


class StreamingSpec(Section):
    """The PyFlink job: topics, micro-batching, in-flight capacity, parallelism and delivery guarantee."""

    input_topic: str = Field(pattern=TOPIC, description="Kafka topic of the input events (e.g. fraud.transactions)")
    output_topic: str = Field(pattern=TOPIC, description="Kafka topic the prediction events are written to")
    dead_letter_topic: str = Field(
        pattern=TOPIC, description="Kafka topic of the dead letters (inputs that cannot be predicted, with the error)"
    )
    input_schema: str = Field(description="Avro schema name of the input events (schemas/avro/<name>.avsc)")
    mode: Literal["vectorized", "async"] = Field(
        "vectorized",
        description="vectorized: a vectorized (Arrow) Table-API function per micro-batch, one batch in flight per "
        "subtask; async: DataStream keyed micro-batches and AsyncDataStream, up to `capacity` batches in flight per "
        "subtask (why vectorized by default: docs/decisions/0004-vectorized-default.md)",
    )
    consumer_group: str | None = Field(None, description="Kafka group id (default: vatic-<service>)")
    batch_size: int = Field(128, ge=1, le=8192, description="events per micro-batch (one Feast read, one V2 call)")
    batch_wait_ms: int = Field(
        10, ge=0, le=60_000, description="flush a partial batch after this long (vectorized mode: the bundle time)"
    )
    capacity: int = Field(8, ge=1, le=1024, description="micro-batches in flight per subtask (backpressure)")
    parallelism: int = Field(1, ge=1, le=1024, description="Flink parallelism of the job (1 to 1024)")
    guarantee: Literal["exactly_once", "at_least_once"] = "exactly_once"
    checkpoint_interval_s: float = Field(5.0, gt=0)
    transaction_timeout_s: float = Field(900.0, gt=0, description="Kafka transaction timeout (EXACTLY_ONCE)")
    max_record_bytes: int = Field(1_000_000, ge=1024, description="larger inputs/outputs are dead-lettered")
    retry: RetrySpec = Field(default_factory=RetrySpec)
    bundle_size: int = Field(
        1000, ge=1, description="python.fn-execution.bundle.size (vectorized mode: at least batch_size)"
    )
    bundle_time_ms: int = Field(
        20, ge=1, description="python.fn-execution.bundle.time in async mode (vectorized mode: batch_wait_ms)"
    )
    buffer_timeout_ms: int = Field(5, ge=0, description="execution.buffer-timeout")
    restart_attempts: int = Field(
        30,
        ge=1,
        le=10_000,
        description="failed restarts in a row (back-off 1 s doubling to 10 s) before the job gives up and FAILS",
    )
    shadow_topic: str | None = Field(
        None, pattern=TOPIC, description="topic of the shadow model's answers (default: <service>.shadow-predictions)"
    )
    partition_discovery_s: float = Field(
        60.0,
        ge=0,
        description="how often the Kafka source looks for partitions added to the input topic (0: never); new "
        "partitions are read from their earliest offset",
    )

    @model_validator(mode="after")
    def _topics_and_timeouts(self) -> StreamingSpec:
        topics = [self.input_topic, self.output_topic, self.dead_letter_topic]
        if len(set(topics)) != 3:
            raise ValueError("input_topic, output_topic and dead_letter_topic must be three different topics")
        if self.shadow_topic in topics:
            raise ValueError(f"shadow_topic {self.shadow_topic!r} is already the input, output or dead-letter topic")
        if self.guarantee == "exactly_once" and self.transaction_timeout_s < 3 * self.checkpoint_interval_s + 60:
            raise ValueError(
                "transaction_timeout_s must stay well above checkpoint + restart time: "
                f"at least {3 * self.checkpoint_interval_s + 60:.0f}s for checkpoint_interval_s "
                f"{self.checkpoint_interval_s:g}"
            )
        return self


class RetrainSpec(Section):
    """`vatic retrain`: the promotion gate of a retrained version, and whether drift starts a retrain."""

    metric: str | None = Field(
        None,
        description="held-out metric the gate compares (higher is better; default: the trainer's first headline "
        "metric, roc_auc or accuracy)",
    )
    margin: float = Field(
        0.01, ge=0, le=1, description="the new version passes when its metric >= the serving version's - margin"
    )
    on_drift: bool = Field(
        False,
        description="`vatic retrain --watch` retrains when `after_windows` judged windows in a row drifted",
    )
    after_windows: int = Field(2, ge=1, le=1000, description="drifted windows in a row that start a retrain")


class MonitoringSpec(Section):
    """The drift monitor (`vatic monitor run|submit`): a PyFlink job reading the predictions topic."""

    enabled: bool = Field(
        True, description="`vatic render` deploys the monitor (a FlinkDeployment) and its PrometheusRule beside the job"
    )
    topic: str | None = Field(None, pattern=TOPIC, description="topic of the drift records (default: <service>.drift)")
    window_s: float = Field(300.0, ge=1, le=86_400, description="event-time tumbling window of the judgement")
    lateness_s: float = Field(
        60.0,
        ge=0,
        le=86_400,
        description="how late (event time) a prediction may arrive and still count in its window: the watermark "
        "trails the newest event time by this much; later ones are dropped (Flink's numLateRecordsDropped)",
    )
    psi_threshold: float = Field(0.2, gt=0, description="a column whose PSI reaches this has drifted")
    missing_rise: float = Field(
        0.2, gt=0, le=1, description="a column whose missing rate rises this much over training has drifted"
    )
    min_count: int = Field(200, ge=1, description="windows with fewer predictions of a version are not judged")
    parallelism: int = Field(1, ge=1, le=1024, description="Flink parallelism of the monitor job")
    batch_size: int = Field(
        2000,
        ge=1,
        le=100_000,
        description="predictions per vectorized call of the monitor; lateness is judged per call: a prediction "
        "counts when the first one of its window and version in the same call was on time",
    )
    idle_s: float = Field(
        30.0, ge=1, description="a partition without predictions for this long stops holding the watermark back"
    )
    retrain: RetrainSpec = Field(default_factory=RetrainSpec)


class GatewaySpec(Section):
    """The REST gateway in front of the model server (also its Kubernetes Deployment)."""

    port: int = Field(8000, ge=1, le=65535, description="HTTP port of the gateway")
    auth_token_env: str | None = Field(
        None, description="env var holding the bearer token; unset = no auth (health endpoints are always open)"
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="largest request body in bytes (413 above)")
    replicas: int = Field(2, ge=0, description="gateway replicas in Kubernetes (an integer >= 0)")
    resources: PodResources = Field(
        default_factory=lambda: PodResources(cpu="500m", memory="512Mi"), description="gateway container resources"
    )


class Toleration(Section):
    """A Kubernetes toleration (see the Pod spec); ``operator: Exists`` tolerates every value of ``key``."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(None, ge=0, description="NoExecute only: how long the pod stays bound")


class FlinkSpec(Section):
    """The FlinkDeployment of the streaming job (Flink Kubernetes Operator)."""

    flink_version: str = Field("v2_2", pattern=r"^v[0-9]+_[0-9]+$", description="the operator's FlinkVersion")
    jobmanager: PodResources = Field(
        default_factory=lambda: PodResources(cpu="1", memory="2Gi"), description="JobManager resources"
    )
    taskmanager: PodResources = Field(
        default_factory=lambda: PodResources(cpu="2", memory="4Gi"), description="TaskManager resources"
    )
    task_slots: int = Field(2, ge=1, description="slots per TaskManager (TaskManagers = parallelism / slots)")
    upgrade_mode: Literal["savepoint", "last-state", "stateless"] = Field(
        "savepoint", description="how the operator upgrades the job (savepoint: stop-with-savepoint, then restore)"
    )
    service_account: str = Field("flink", description="service account of the JobManager (operator's RBAC)")
    python_jar: str = Field(
        "local:///opt/flink/opt/flink-python-2.2.1.jar", description="jarURI of Flink's PythonDriver in the image"
    )
    state_volume_claim: str | None = Field(
        None,
        description="PersistentVolumeClaim (ReadWriteMany) for checkpoints and savepoints; default: "
        "<service>-flink-state, rendered with state_storage",
    )
    state_storage: str = Field("20Gi", pattern=QUANTITY, description="size of the rendered state volume claim")
    storage_class: str | None = Field(None, description="storage class of the state volume claim (RWX capable)")
    configuration: dict[str, str] = Field(default_factory=dict, description="extra flinkConfiguration entries")
    operator_namespace: str = Field(
        "flink-operator",
        pattern=DNS_LABEL,
        description="namespace of the Flink Kubernetes Operator: the only one let in to the JobManager's REST port",
    )


DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
DATA_KEY = r"^[-._a-zA-Z0-9]+$"


class SecretKeyRef(Section):
    """One key of an existing Kubernetes Secret: the renderer writes a ``secretKeyRef`` or a ``secret`` volume.

    The config names where a secret lives, never the secret: the Secret is created in the cluster (by hand, by
    an operator such as external-secrets or cert-manager), not by ``vatic render``.
    """

    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253, description="name of the Secret (same namespace)")
    key: str = Field(pattern=DATA_KEY, max_length=253, description="key of the value inside the Secret")


class _SecretRefs(Section):
    """A section with :class:`SecretKeyRef` fields; a plain value where a reference belongs is refused.

    The refusal is raised on the section (not on the field), so the error never quotes the value: a user who
    writes a password into the config gets told where, not shown it back.
    """

    @model_validator(mode="before")
    @classmethod
    def _references_not_values(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(str(name))
                if field is None or value is None:
                    continue
                literal = not isinstance(value, dict)
                if field.annotation == dict[str, SecretKeyRef]:  # a mapping of names to references
                    literal = not literal and any(not isinstance(v, dict) for v in value.values())
                    where = f"each entry of {name}"
                elif SecretKeyRef in get_args(field.annotation):
                    where = name
                else:
                    continue
                if literal:
                    raise ValueError(
                        f"{where} names a Kubernetes Secret and never holds the value itself: write "
                        "{name: <secret>, key: <key>} and create that Secret in the cluster"
                    )
        return data


class KafkaSecurity(_SecretRefs):
    """How every Kafka client of the service (the Flink job) authenticates and encrypts (``VATIC_KAFKA_*``)."""

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security.protocol (production refuses PLAINTEXT and SASL_PLAINTEXT)"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism (SASL_* protocols)"
    )
    sasl_username: str | None = Field(None, description="SASL user name (not a secret: plain config)")
    sasl_password: SecretKeyRef | None = Field(None, description="Secret key holding the SASL password")
    ca: SecretKeyRef | None = Field(None, description="Secret key holding the brokers' CA (PEM), mounted as a file")
    client_cert: SecretKeyRef | None = Field(None, description="Secret key holding the client certificate (mTLS)")
    client_key: SecretKeyRef | None = Field(None, description="Secret key holding the client private key (mTLS)")
    client_key_password: SecretKeyRef | None = Field(None, description="Secret key holding the key's password")

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecurity:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_mechanism, sasl_username and sasl_password"
            )
        if not sasl and (self.sasl_mechanism or self.sasl_username or self.sasl_password):
            raise ValueError(
                f"SASL settings with security_protocol {self.security_protocol}: use SASL_SSL or remove them"
            )
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("mutual TLS needs both client_cert and client_key (or neither)")
        tls = self.security_protocol in ("SSL", "SASL_SSL")
        if not tls and (self.ca or self.client_cert or self.client_key_password):
            raise ValueError(f"TLS files with security_protocol {self.security_protocol}: use SSL or SASL_SSL")
        if self.client_key_password and not self.client_key:
            raise ValueError("client_key_password without client_key: add client_key or remove the password")
        return self


class CredentialsSecurity(_SecretRefs):
    """A user name (plain config), a password (a Secret key) and a CA file (a Secret key) of one store."""

    username: str | None = Field(None, description="user name (not a secret: plain config)")
    password: SecretKeyRef | None = Field(None, description="Secret key holding the password")
    ca: SecretKeyRef | None = Field(None, description="Secret key holding the CA (PEM) that signed the server")


class GatewaySecurity(_SecretRefs):
    """The gateway's TLS, per-client credentials and mutual TLS (``VATIC_GATEWAY_*`` files)."""

    tls_cert: SecretKeyRef | None = Field(None, description="Secret key holding the gateway's certificate (PEM)")
    tls_key: SecretKeyRef | None = Field(None, description="Secret key holding the gateway's private key (PEM)")
    tls_ca: SecretKeyRef | None = Field(
        None, description="Secret key holding the CA of tls_cert: Prometheus verifies the gateway with it"
    )
    client_ca: SecretKeyRef | None = Field(
        None, description="Secret key holding the CA of client certificates: requires them (mutual TLS)"
    )
    clients: SecretKeyRef | None = Field(None, description="Secret key holding the per-client credentials file")
    jwt_key: SecretKeyRef | None = Field(
        None, description="Secret key holding the public key (PEM) that signs bearer JWTs: JWT clients"
    )
    jwt_audience: str | None = Field(None, description="the audience (aud) a JWT must name (required with jwt_key)")
    jwt_issuer: str | None = Field(None, description="the issuer (iss) a JWT must name, when set")

    @model_validator(mode="after")
    def _pairs(self) -> GatewaySecurity:
        if self.jwt_key is not None and not self.jwt_audience:
            raise ValueError("jwt_key needs jwt_audience: the gateway accepts only JWTs issued for it")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("gateway TLS needs both tls_cert and tls_key (or neither)")
        if (self.client_ca or self.tls_ca) and self.tls_cert is None:
            raise ValueError("client_ca and tls_ca need gateway TLS: add tls_cert and tls_key")
        return self


class ModelSecurity(_SecretRefs):
    """TLS of the model servers (``VATIC_MODEL_TLS_*``) and the CA their callers verify them with."""

    tls_cert: SecretKeyRef | None = Field(None, description="Secret key holding the model server's certificate")
    tls_key: SecretKeyRef | None = Field(None, description="Secret key holding the model server's private key")
    ca: SecretKeyRef | None = Field(
        None, description="Secret key holding the CA of tls_cert: the gateway and the job verify the server with it"
    )
    secret_env: dict[str, SecretKeyRef] = Field(
        default_factory=dict,
        description="environment variables of the model server taken from Secrets (env holds plain values only)",
    )

    @field_validator("secret_env")
    @classmethod
    def _secret_env_names(cls, value: dict[str, SecretKeyRef]) -> dict[str, SecretKeyRef]:
        return _env_names(value)

    @model_validator(mode="after")
    def _pairs(self) -> ModelSecurity:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("model server TLS needs both tls_cert and tls_key (or neither)")
        if self.ca is not None and self.tls_cert is None:
            raise ValueError("ca without model server TLS: add tls_cert and tls_key, or remove ca")
        return self


class SecuritySpec(Section):
    """Credentials by reference to Kubernetes Secrets, and the production checks of ``vatic render``.

    ``vatic render`` refuses a ``production`` environment whose Kafka is PLAINTEXT or SASL_PLAINTEXT, or whose
    gateway has no authentication, unless the matching ``allow_*`` flag says so explicitly.
    """

    kafka: KafkaSecurity = Field(default_factory=KafkaSecurity, description="Kafka clients of the Flink job")
    schema_registry: CredentialsSecurity = Field(
        default_factory=CredentialsSecurity, description="schema registry credentials (VATIC_SCHEMA_REGISTRY_*)"
    )
    redis: CredentialsSecurity = Field(
        default_factory=CredentialsSecurity, description="Redis feature store credentials (VATIC_REDIS_*)"
    )
    gateway: GatewaySecurity = Field(default_factory=GatewaySecurity, description="gateway TLS and client auth")
    model: ModelSecurity = Field(default_factory=ModelSecurity, description="model server TLS")
    allow_plaintext_kafka: bool = Field(
        False, description="render production with PLAINTEXT or SASL_PLAINTEXT Kafka (unencrypted) anyway"
    )
    allow_unauthenticated_gateway: bool = Field(
        False, description="render production with a gateway that does not authenticate its clients anyway"
    )


class KubernetesSpec(Section):
    """What ``vatic render`` needs beyond the service itself: cluster addresses, scheduling, labels, policies.

    Defaults name conventional in-cluster addresses; set them per environment in ``staging.yaml`` /
    ``production.yaml``.
    """

    namespace: str | None = Field(
        None, pattern=DNS_LABEL, description="namespace (default: <project> in production, <project>-<env> otherwise)"
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: list[str] = Field(default_factory=list, description="names of docker-registry Secrets")
    labels: dict[str, str] = Field(default_factory=dict, description="extra labels on every object and pod")
    annotations: dict[str, str] = Field(default_factory=dict, description="extra annotations on every pod")
    node_selector: dict[str, str] = Field(default_factory=dict, description="node selector of the model server")
    tolerations: list[Toleration] = Field(default_factory=list, description="tolerations of the model server")
    priority_class: str | None = Field(None, description="PriorityClass of the model server pods")
    max_surge: str = Field("25%", pattern=r"^[0-9]+%?$", description="rolling update: extra pods during a rollout")
    max_unavailable: str = Field("0", pattern=r"^[0-9]+%?$", description="rolling update: pods down during a rollout")
    pdb_max_unavailable: str = Field("1", pattern=r"^[0-9]+%?$", description="PodDisruptionBudget maxUnavailable")
    model_storage: str = Field("4Gi", pattern=QUANTITY, description="size limit of the model volume (emptyDir)")
    termination_grace_period_s: int = Field(30, ge=0, description="seconds a pod gets to finish in-flight requests")
    kafka_bootstrap_servers: str = Field(
        "kafka-bootstrap.kafka.svc.cluster.local:9092", description="Kafka bootstrap servers of the cluster"
    )
    schema_registry_url: str | None = Field(
        "http://schema-registry.kafka.svc.cluster.local:8081/apis/ccompat/v7",
        description="Confluent-compatible schema registry the streaming job reads schemas from",
    )
    prometheus_url: str = Field(
        "http://prometheus-operated.monitoring.svc.cluster.local:9090",
        description="Prometheus KEDA queries for the GPU utilisation trigger",
    )
    gpu_metric: str = Field(
        "DCGM_FI_DEV_GPU_UTIL", description="per-pod GPU utilisation metric (dcgm-exporter via a metrics adapter)"
    )
    monitoring_namespace: str = Field("monitoring", description="namespace Prometheus scrapes from")
    monitoring_labels: dict[str, str] = Field(
        default_factory=dict, description="labels the Prometheus operator selects ServiceMonitors by"
    )
    scrape_interval: str = Field("15s", pattern=r"^[0-9]+(ms|s|m|h)$", description="ServiceMonitor scrape interval")
    flink: FlinkSpec = Field(default_factory=FlinkSpec, description="the FlinkDeployment of the streaming job")
    security: SecuritySpec = Field(
        default_factory=SecuritySpec, description="Secrets by reference, TLS, and the production checks"
    )


class ServiceConfig(Section):
    """One prediction service, served from Kafka and REST."""

    project: str = Field(pattern=DNS_LABEL, max_length=40, description="project; the Kubernetes namespace prefix")
    service: str = Field(pattern=DNS_LABEL, max_length=40, description="service name (DNS label)")
    description: str = ""
    environment: str = Field("local", pattern=DNS_LABEL, description="set from the overlay file by the loader")
    image: str = Field("vatic/model-server:0.1.0", description="model server image")
    pipeline_image: str = Field("vatic/pipeline:0.1.0", description="Flink job and gateway image")
    serving: ServingSpec = Field(default_factory=ServingSpec)
    model: ModelSpec
    replicas: int = Field(1, ge=0, description="model server replicas (an integer >= 0)")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    env: dict[str, str] = Field(default_factory=dict, description="environment variables of the model server")
    autoscaling: AutoscalingSpec | None = None
    registry: RegistrySpec = Field(default_factory=RegistrySpec)
    timeout_s: float = Field(5.0, gt=0, le=600, description="deadline of one inference call")
    features: FeatureSpec | None = None
    streaming: StreamingSpec | None = None
    shadow: ShadowSpec | None = Field(None, description="a model answering beside the serving one, for comparison")
    canary: CanarySpec | None = Field(None, description="a version answering a fixed share of the entities")
    graph: GraphSpec | None = Field(
        None, description="an inference graph: several models (sequence, ensemble, switch) answer each event"
    )
    gateway: GatewaySpec = Field(default_factory=GatewaySpec)
    monitoring: MonitoringSpec = Field(
        default_factory=MonitoringSpec, description="drift of the predictions from the training data, and retraining"
    )
    kubernetes: KubernetesSpec = Field(
        default_factory=KubernetesSpec, description="what `vatic render` needs: cluster addresses, scheduling, labels"
    )

    @field_validator("env")
    @classmethod
    def _plain_env_names(cls, value: dict[str, str]) -> dict[str, str]:
        return _env_names(value)

    @model_validator(mode="after")
    def _following_needs_a_repository(self) -> ServiceConfig:
        if self.registry.follows and self.serving.tier == "full-custom":
            raise ValueError(
                "registry.refresh_s rolls new versions out through MLServer's repository API: use the no-code or "
                "low-code tier, or restart a full-custom server to change its model"
            )
        if self.registry.follows and self.kubernetes.security.model.tls_cert is not None:
            raise ValueError(
                "registry.refresh_s with a TLS model server: the rollout controller beside it calls it on loopback, "
                "over plain HTTP; serve the model without kubernetes.security.model.tls_cert to follow the registry"
            )
        if self.registry.follows and self.model.version is not None:
            raise ValueError(
                f"model.version {self.model.version!r} pins the version the clients call; with registry.refresh_s "
                "the model server says which version is current: remove model.version"
            )
        return self

    @model_validator(mode="after")
    def _experiments(self) -> ServiceConfig:
        if (self.shadow or self.canary) and self.serving.tier == "full-custom":
            raise ValueError(
                "shadow and canary load more versions beside the serving one through MLServer: use the no-code or "
                "low-code tier (a full-custom server serves one model version)"
            )
        if self.canary is not None:
            if self.registry.follows and self.canary.version is not None:
                raise ValueError(
                    f"canary.version {self.canary.version!r} with registry.refresh_s: a service that follows its "
                    f"registry takes its canary from the stage {self.registry.canary_stage!r}; remove canary.version"
                )
            if not self.registry.follows and self.canary.version is None:
                raise ValueError("canary.version is missing: the registry version that answers the canary share")
            if not self.canary.key and self.features is None:
                raise ValueError(
                    "canary splits by entity: name the event fields of an entity in canary.key (this service has no "
                    "feature entities to default to)"
                )
            if self.model.version is not None and self.canary.version == self.model.version:
                raise ValueError(f"canary.version {self.canary.version!r} is the serving model.version")
        shadow = self.shadow
        if shadow is not None and shadow.model in (None, self.model.name) and shadow.version == self.model.version:
            raise ValueError(f"shadow.version {shadow.version!r} is the serving model.version")
        return self

    @model_validator(mode="after")
    def _grpc_without_tls(self) -> ServiceConfig:
        if self.serving.protocol == "grpc" and self.kubernetes.security.model.tls_cert is not None:
            raise at("serving.protocol", "grpc to a model server with TLS (kubernetes.security.model.tls_cert) is "
                     "not supported yet: set protocol: rest")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _graph_fits(self) -> ServiceConfig:
        graph = self.graph
        if graph is None:
            if not self.model.inputs:
                raise at("model.inputs", "no input tensors: list the V2 inputs the model takes (or add a graph)")
            return self
        if self.model.inputs:
            raise at("model.inputs", "with a graph, its steps declare the inputs: remove model.inputs")
        if self.model.version is not None:
            raise at("model.version", "with a graph, each step names its version: remove model.version")
        refused = [name for name, on in (("canary", self.canary), ("shadow", self.shadow)) if on is not None]
        if self.registry.follows:
            refused.append("registry.refresh_s")
        if refused:
            raise at("graph", f"{' and '.join(refused)} with a graph: vatic rolls out one model's versions, not a "
                     "graph's; pin each step's version and remove them")  # fmt: skip
        out = graph.output_step
        produced = graph.produced()[out.name]
        for i, spec in enumerate(self.model.outputs):
            if spec.name not in produced:
                raise at(f"model.outputs.{i}.name", f"{spec.name!r} is not an output of the graph's output step "
                         f"{out.name!r}; it outputs: {', '.join(produced)}")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _columns_resolve(self) -> ServiceConfig:
        refs = set(self.features.refs) if self.features else set()
        for tensor in self.model.inputs:
            for column in tensor.columns:
                ref = column.removesuffix("#missing")
                if ":" in ref and ref not in refs:
                    raise ValueError(f"model input {tensor.name!r} uses feature {ref!r} which is not in features.refs")
        if self.graph is not None:
            for i, step in enumerate(self.graph.steps):
                for j, step_input in enumerate(step.inputs):
                    for column in step_input.columns or ():
                        ref = column.removesuffix("#missing")
                        if ":" in ref and ref not in refs:
                            raise at(f"graph.steps.{i}.inputs.{j}.columns", f"feature {ref!r} is not in features.refs")
                on = step.value
                if on is not None and ":" in on and on.removesuffix("#missing") not in refs:
                    raise at(f"graph.steps.{i}.value", f"feature {on!r} is not in features.refs")
        if self.autoscaling and self.autoscaling.kafka_lag is not None and self.streaming is None:
            raise ValueError(
                "autoscaling.kafka_lag scales on the consumer lag of streaming.input_topic: "
                "add a streaming section or remove kafka_lag"
            )
        return self

    @property
    def namespace(self) -> str:
        """The Kubernetes namespace: ``kubernetes.namespace``, else the project (production, local) or
        ``<project>-<environment>``."""
        if self.kubernetes.namespace:
            return self.kubernetes.namespace
        return self.project if self.environment in ("local", "production") else f"{self.project}-{self.environment}"

    @property
    def side_models(self) -> list[tuple[str, str, str]]:
        """Versions the model server loads beside the serving one: ``(served name, registry model, version)`` of
        the canary and the shadow, without repeats."""
        registry_model = self.registry.model or self.model.name
        sides: list[tuple[str, str, str]] = []
        if self.canary is not None and self.canary.version is not None:
            sides.append((self.model.name, registry_model, self.canary.version))
        if self.shadow is not None:
            name = self.shadow.model or self.model.name
            side = (name, registry_model if name == self.model.name else name, self.shadow.version)
            if side not in sides:
                sides.append(side)
        return sides

    @property
    def uses_pointer(self) -> bool:
        """Whether clients read the serving version from the model server's rollout pointer: when the service
        follows its registry, and when other versions of the model sit beside an unpinned serving version (the
        server's default version would be the newest of them)."""
        if self.registry.follows:
            return True
        return self.model.version is None and any(name == self.model.name for name, _, _ in self.side_models)

    @property
    def shadow_topic(self) -> str | None:
        """The topic of the shadow's answers (None without a shadow or a streaming section)."""
        if self.shadow is None or self.streaming is None:
            return None
        return self.streaming.shadow_topic or f"{self.service}.shadow-predictions"

    @property
    def written_topics(self) -> list[str]:
        """Every topic the streaming job writes: predictions, dead letters and, with a shadow, its answers."""
        if self.streaming is None:
            return []
        topics = [self.streaming.output_topic, self.streaming.dead_letter_topic]
        return [*topics, self.shadow_topic] if self.shadow_topic else topics

    @property
    def drift_topic(self) -> str:
        """The topic of the drift monitor's records."""
        return self.monitoring.topic or f"{self.service}.drift"

    @property
    def consumer_group(self) -> str:
        if self.streaming and self.streaming.consumer_group:
            return self.streaming.consumer_group
        return f"vatic-{self.service}"

    def event_fields(self) -> list[str]:
        """Event fields the model inputs read (not features, not flags), in first-use order."""
        columns = [c for tensor in self.model.inputs for c in tensor.columns]
        if self.graph is not None:
            columns.extend(self.graph.columns())
        return list(dict.fromkeys(c for c in columns if ":" not in c))


def step_model(step: StepSpec) -> ModelSpec:
    """A graph model step as the V2 model it calls: its name and version, its column inputs (the tensors it takes
    from other steps are built per batch) and its outputs."""
    assert step.model is not None
    return ModelSpec(
        name=step.model,
        version=step.version,
        inputs=[t.tensor() for t in step.inputs if t.columns is not None],
        outputs=[OutputSpec(name=o.name) for o in step.outputs],
    )


def json_schema() -> dict[str, Any]:
    """JSON Schema of the service config, for editors (``# yaml-language-server: $schema=...``)."""
    schema = ServiceConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "vatic service config"
    return schema
