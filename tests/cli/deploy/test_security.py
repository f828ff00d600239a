"""Security of the rendered manifests: Secrets only by reference, locked-down containers, NetworkPolicies that
admit exactly the callers, and ``vatic render`` refusing unencrypted Kafka or an unauthenticated gateway in
production unless the config says so explicitly.

Network policies are checked by evaluating them (which policies select a pod, which peers and ports their rules
admit) against the labels the rendered pods carry, not by comparing strings.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from vatic.cli.deploy.manifests import build_manifests
from vatic.cli.deploy.output import Target, render_all
from vatic.cli.deploy.security import SECRET_FILE_MODE, looks_secret
from vatic.examples.layout import CASES, service_dir
from vatic.schemas.errors import ConfigError, ConfigFileError
from vatic.serving.config import load_service

VATIC = str(Path(sys.executable).parent / "vatic")
SCORER = Path(__file__).resolve().parent / "fixtures" / "scorer" / "service"
FRAUD = service_dir("fraud_detection")
ENVS = ("staging", "production")
SENTINEL = "hunter2-SENTINEL-7c1f0e"  # what a user might paste where a reference belongs
#: environment variables of the shared contract that hold a secret's value
SECRET_ENV = {
    "VATIC_KAFKA_SASL_PASSWORD",
    "VATIC_KAFKA_SSL_KEY_PASSWORD",
    "VATIC_REDIS_PASSWORD",
    "VATIC_SCHEMA_REGISTRY_PASSWORD",
    "VATIC_GATEWAY_AUTH_TOKEN",
}
ALL_TARGETS = [(service_dir(case), env) for case in CASES for env in ENVS] + [(SCORER, env) for env in ENVS]


def _objects(folder: Path, env: str) -> dict[str, dict[str, Any]]:
    config = load_service(folder, env)
    return {f"{m.obj['kind']}/{m.obj['metadata']['name']}": m.obj for m in build_manifests(config, folder)}


def _deep_merge(base: Any, extra: Any) -> Any:
    """The Flink operator's merge of the shared pod template with a role's: mappings merge, containers by name."""
    if isinstance(base, dict) and isinstance(extra, dict):
        out = dict(base)
        for key, value in extra.items():
            out[key] = _deep_merge(base[key], value) if key in base else value
        return out
    if isinstance(base, list) and isinstance(extra, list) and all(isinstance(i, dict) and "name" in i
                                                                   for i in base + extra):  # fmt: skip
        merged = {item["name"]: item for item in base}
        for item in extra:
            merged[item["name"]] = _deep_merge(merged[item["name"]], item) if item["name"] in merged else item
        return list(merged.values())
    return extra


def _flink_pods(flink: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The JobManager's and the TaskManagers' effective pod templates (shared template + the role's own)."""
    spec = flink["spec"]
    return {
        role: _deep_merge(spec.get("podTemplate", {}), spec[role].get("podTemplate", {}))
        for role in ("jobManager", "taskManager")
    }


def _pods(objects: dict[str, dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, pod template) of every pod the manifests create: Deployments, and the FlinkDeployment's two roles."""
    for ref, obj in objects.items():
        if obj["kind"] == "Deployment":
            yield ref, obj["spec"]["template"]
        elif obj["kind"] == "FlinkDeployment":
            for role, template in _flink_pods(obj).items():
                yield f"{ref}/{role}", template


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def _main(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["spec"]["containers"][0]


def _file_source(pod: dict[str, Any], container: dict[str, Any], path: str) -> tuple[str, str]:
    """(Secret name, key) of the file at ``path`` in ``container``: through its mount, volume and item."""
    (mount,) = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert mount.get("readOnly") is True
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    secret = volume["secret"]
    assert secret["defaultMode"] in (0o400, 0o440)
    relative = path[len(mount["mountPath"].rstrip("/")) + 1 :]
    (item,) = [i for i in secret["items"] if i["path"] == relative]
    return secret["secretName"], item["key"]


def _secret_ref(container: dict[str, Any], name: str) -> tuple[str, str]:
    entry = _env(container)[name]
    assert "value" not in entry
    ref = entry["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


# --- containers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("folder", "env"), ALL_TARGETS, ids=lambda v: v.parent.name if isinstance(v, Path) else v)
def test_every_container_of_every_pod_is_locked_down(folder, env):
    pods = list(_pods(_objects(folder, env)))
    assert {name.split("/")[0] for name, _ in pods} >= {"Deployment", "FlinkDeployment"}
    for name, pod in pods:
        spec = pod["spec"]
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True, name
        assert pod_security["runAsUser"] != 0, name
        writable = {v["name"] for v in spec["volumes"] if "emptyDir" in v or "persistentVolumeClaim" in v}
        for container in _containers(pod):
            where = f"{name}/{container['name']}"
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["runAsNonRoot"] is True, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            assert security["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert "privileged" not in security, where
            for mount in container["volumeMounts"]:  # what a process may write is an emptyDir or the state claim
                if not mount.get("readOnly"):
                    assert mount["name"] in writable, f"{where}: {mount['mountPath']}"
            assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"]), where
        for volume in spec["volumes"]:
            if "secret" in volume:
                assert volume["secret"]["defaultMode"] == SECRET_FILE_MODE


def test_flink_writes_only_to_its_empty_dirs(fraud_production):
    for pod in _flink_pods(fraud_production["FlinkDeployment/fraud-detection-stream"]).values():
        mounts = {m["mountPath"]: m["name"] for m in _main(pod)["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        for path in ("/tmp", "/opt/flink/log"):
            assert "emptyDir" in volumes[mounts[path]], path
    conf = fraud_production["FlinkDeployment/fraud-detection-stream"]["spec"]["flinkConfiguration"]
    assert conf["io.tmp.dirs"] == "/tmp"


# --- secrets by reference --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fraud_production() -> dict[str, dict[str, Any]]:
    return _objects(FRAUD, "production")


@pytest.fixture(scope="module")
def scorer_production() -> dict[str, dict[str, Any]]:
    return _objects(SCORER, "production")


@pytest.mark.parametrize(("folder", "env"), ALL_TARGETS, ids=lambda v: v.parent.name if isinstance(v, Path) else v)
def test_no_manifest_is_a_secret_or_holds_a_secret_value(folder, env):
    objects = _objects(folder, env)
    assert not [ref for ref, obj in objects.items() if obj["kind"] == "Secret"]
    for name, pod in _pods(objects):
        for container in _containers(pod):
            for entry in container.get("env", []):
                if entry["name"] in SECRET_ENV or looks_secret(entry["name"]):
                    assert "value" not in entry, f"{name}/{container['name']}: {entry['name']}"
                    assert set(entry["valueFrom"]) == {"secretKeyRef"}


def test_the_job_manager_and_the_task_managers_get_the_kafka_credentials(fraud_production):
    config = load_service(FRAUD, "production")
    kafka = config.kubernetes.security.kafka
    pods = _flink_pods(fraud_production["FlinkDeployment/fraud-detection-stream"])
    assert set(pods) == {"jobManager", "taskManager"}
    for pod in pods.values():
        main = _main(pod)
        env = _env(main)
        assert env["VATIC_KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
        assert env["VATIC_KAFKA_SASL_MECHANISM"]["value"] == kafka.sasl_mechanism
        assert env["VATIC_KAFKA_SASL_USERNAME"]["value"] == kafka.sasl_username
        assert _secret_ref(main, "VATIC_KAFKA_SASL_PASSWORD") == (kafka.sasl_password.name, kafka.sasl_password.key)
        ca = env["VATIC_KAFKA_SSL_CA_LOCATION"]["value"]
        assert _file_source(pod, main, ca) == (kafka.ca.name, kafka.ca.key)
        redis = config.kubernetes.security.redis
        assert _secret_ref(main, "VATIC_REDIS_PASSWORD") == (redis.password.name, redis.password.key)


def test_mutual_tls_and_store_credentials_reach_the_job_as_files(scorer_production):
    security = load_service(SCORER, "production").kubernetes.security
    for pod in _flink_pods(scorer_production["FlinkDeployment/scorer-stream"]).values():
        main = _main(pod)
        env = {name: entry.get("value") for name, entry in _env(main).items()}
        files = {
            "VATIC_KAFKA_SSL_CA_LOCATION": security.kafka.ca,
            "VATIC_KAFKA_SSL_CERTIFICATE_LOCATION": security.kafka.client_cert,
            "VATIC_KAFKA_SSL_KEY_LOCATION": security.kafka.client_key,
            "VATIC_SCHEMA_REGISTRY_CA_FILE": security.schema_registry.ca,
            "VATIC_REDIS_CA_FILE": security.redis.ca,
            "VATIC_STREAM_MODEL_CA_FILE": security.model.ca,
        }
        for name, ref in files.items():
            assert _file_source(pod, main, env[name]) == (ref.name, ref.key), name
        assert _secret_ref(main, "VATIC_KAFKA_SSL_KEY_PASSWORD") == ("scorer-kafka-client", "key-password")
        assert _secret_ref(main, "VATIC_SCHEMA_REGISTRY_PASSWORD") == ("scorer-registry", "password")
        assert env["VATIC_SCHEMA_REGISTRY_USERNAME"] == "scorer"
        assert not {n for n in env if n.startswith(("VATIC_GATEWAY_", "VATIC_MODEL_TLS_"))}


def test_the_gateway_and_the_model_server_get_their_own_files_only(scorer_production):
    security = load_service(SCORER, "production").kubernetes.security
    gateway_pod = scorer_production["Deployment/scorer-gateway"]["spec"]["template"]
    gateway = _main(gateway_pod)
    env = {name: entry.get("value") for name, entry in _env(gateway).items()}
    files = {
        "VATIC_GATEWAY_TLS_CERT_FILE": security.gateway.tls_cert,
        "VATIC_GATEWAY_TLS_KEY_FILE": security.gateway.tls_key,
        "VATIC_GATEWAY_TLS_CLIENT_CA_FILE": security.gateway.client_ca,
        "VATIC_GATEWAY_CLIENTS_FILE": security.gateway.clients,
        "VATIC_GATEWAY_MODEL_CA_FILE": security.model.ca,
        "VATIC_REDIS_CA_FILE": security.redis.ca,
    }
    for name, ref in files.items():
        assert _file_source(gateway_pod, gateway, env[name]) == (ref.name, ref.key), name
    assert not {n for n in env if n.startswith(("VATIC_KAFKA_", "VATIC_SCHEMA_REGISTRY_", "VATIC_MODEL_TLS_"))}
    # client certificates are required: the kubelet has none, so the probes only connect
    assert set(gateway["livenessProbe"]) >= {"tcpSocket"}
    assert "--endpoint" in gateway["args"]
    assert gateway["args"][gateway["args"].index("--endpoint") + 1].startswith("scorer=https://")

    model_pod = scorer_production["Deployment/scorer-model"]["spec"]["template"]
    model = _main(model_pod)
    env = {name: entry.get("value") for name, entry in _env(model).items()}
    assert _file_source(model_pod, model, env["VATIC_MODEL_TLS_CERT_FILE"]) == ("scorer-model-tls", "tls.crt")
    assert _file_source(model_pod, model, env["VATIC_MODEL_TLS_KEY_FILE"]) == ("scorer-model-tls", "tls.key")
    assert _secret_ref(model, "HF_TOKEN") == ("scorer-hub", "token")
    assert not {n for n in env if n.startswith(("VATIC_KAFKA_", "VATIC_REDIS_", "VATIC_GATEWAY_"))}
    # uvicorn serves the mounted pair (Kubernetes expands $(VAR) from the container's environment)
    command = model["command"]
    assert command[command.index("--ssl-certfile") + 1] == "$(VATIC_MODEL_TLS_CERT_FILE)"
    assert command[command.index("--ssl-keyfile") + 1] == "$(VATIC_MODEL_TLS_KEY_FILE)"
    assert model["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"


def test_keda_reads_the_same_kafka_secrets_by_reference():
    objects = _objects(service_dir("product_categorization"), "production")
    kafka = load_service(service_dir("product_categorization"), "production").kubernetes.security.kafka
    (trigger,) = [t for t in objects["ScaledObject/product-categorization-model"]["spec"]["triggers"]
                  if t["type"] == "kafka"]  # fmt: skip
    assert (trigger["metadata"]["tls"], trigger["metadata"]["sasl"]) == ("enable", "scram_sha512")
    auth = objects[f"TriggerAuthentication/{trigger['authenticationRef']['name']}"]["spec"]
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["secretTargetRef"]}
    assert refs == {
        "password": (kafka.sasl_password.name, kafka.sasl_password.key),
        "ca": (kafka.ca.name, kafka.ca.key),
    }
    (username,) = auth["configMapTargetRef"]
    assert objects[f"ConfigMap/{username['name']}"]["data"][username["key"]] == kafka.sasl_username
    staging = _objects(service_dir("product_categorization"), "staging")  # plaintext: nothing to authenticate
    assert not [ref for ref in staging if ref.startswith("TriggerAuthentication/")]


def test_prometheus_scrapes_a_tls_gateway_over_https(fraud_production):
    (endpoint,) = fraud_production["ServiceMonitor/fraud-detection-gateway"]["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    tls = load_service(FRAUD, "production").kubernetes.security.gateway.tls_ca
    assert endpoint["tlsConfig"]["ca"]["secret"] == {"name": tls.name, "key": tls.key}


def test_the_renderer_never_reads_secrets_from_its_own_environment(monkeypatch):
    for name in SECRET_ENV:
        monkeypatch.setenv(name, SENTINEL)
    rendered = render_all([Target(folder, env) for folder, env in ALL_TARGETS])
    assert not [path for path, text in rendered.items() if SENTINEL in text]


# --- literal secrets are refused, never echoed -----------------------------------------------------------


def _service_copy(tmp_path: Path) -> Path:
    """A copy of the fraud detection use case (service folder + its Feast repo) to edit."""
    shutil.copytree(FRAUD.parent, tmp_path / "case", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "case" / "service"


def _overlay(service: Path, env: str, change: dict[str, Any]) -> None:
    """Merge ``change`` into the overlay file ``<env>.yaml`` (mappings merge, other values replace)."""
    path = service / f"{env}.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    path.write_text(yaml.safe_dump(_deep_merge(data, change)), encoding="utf-8")


def _security(**parts: Any) -> dict[str, Any]:
    return {"kubernetes": {"security": parts}}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (_security(kafka={"sasl_password": SENTINEL}), "sasl_password"),
        (_security(kafka={"client_key_password": SENTINEL}), "client_key_password"),
        (_security(redis={"password": SENTINEL}), "password"),
        (_security(schema_registry={"password": SENTINEL}), "password"),
        (_security(gateway={"clients": SENTINEL}), "clients"),
        (_security(model={"tls_key": SENTINEL}), "tls_key"),
        (_security(model={"secret_env": {"HF_TOKEN": SENTINEL}}), "secret_env"),
        ({"features": {"redis_url": f"redis://:{SENTINEL}@feast-redis:6379/0"}}, "features.redis_url"),
        ({"features": {"redis_url": f"rediss://default:{SENTINEL}@feast-redis:6379/0"}}, "features.redis_url"),
        ({"registry": {"uri": f"https://mlops:{SENTINEL}@mlflow.mlops.svc:5000"}}, "registry.uri"),
        ({"kubernetes": {"schema_registry_url": f"https://u:{SENTINEL}@registry:8081"}},
         "kubernetes.schema_registry_url"),
        ({"env": {"DB_PASSWORD": SENTINEL}}, "env.DB_PASSWORD"),
        ({"env": {"HF_TOKEN": SENTINEL}}, "env.HF_TOKEN"),
        ({"env": {"OPENAI_API_KEY": SENTINEL}}, "env.OPENAI_API_KEY"),
        ({"kubernetes": {"flink": {"configuration": {"security.ssl.internal.keystore-password": SENTINEL}}}},
         "kubernetes.flink.configuration.security.ssl.internal.keystore-password"),
        ({"kubernetes": {"flink": {"configuration": {
            "properties.sasl.jaas.config": f'ScramLoginModule required username="u" password="{SENTINEL}";'}}}},
         "kubernetes.flink.configuration.properties.sasl.jaas.config"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("env", ENVS)
def test_a_literal_secret_is_refused_and_never_echoed(tmp_path, change, named, env):
    service = _service_copy(tmp_path)
    _overlay(service, env, change)
    with pytest.raises(ConfigError) as caught:
        render_all([Target(service, env)])
    message = str(caught.value)
    assert named in message
    assert SENTINEL not in message
    if isinstance(caught.value, ConfigFileError):  # a config error points at the overlay's line
        assert f"{env}.yaml:" in message


def test_a_reference_is_the_accepted_form(tmp_path):
    service = _service_copy(tmp_path)
    _overlay(service, "staging", _security(redis={"password": {"name": "feast-redis", "key": "password"}}))
    _overlay(service, "staging", {"env": {"TOKENIZERS_PARALLELISM": "false", "MODEL_KEY_COLUMN": "id"}})
    rendered = render_all([Target(service, "staging")])
    (gateway,) = [yaml.safe_load(t) for p, t in rendered.items() if p.name == "gateway-deployment.yaml"]
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    assert _secret_ref(container, "VATIC_REDIS_PASSWORD") == ("feast-redis", "password")
    (model,) = [yaml.safe_load(t) for p, t in rendered.items() if p.name == "model-deployment.yaml"]
    env = _env(model["spec"]["template"]["spec"]["containers"][0])
    assert env["TOKENIZERS_PARALLELISM"]["value"] == "false"  # a plain setting whose name only looks alike


@pytest.mark.parametrize(
    ("kafka", "message"),
    [
        ({"security_protocol": "SASL_SSL"}, "needs sasl_mechanism, sasl_username and sasl_password"),
        ({"security_protocol": "SSL", "client_cert": {"name": "c", "key": "tls.crt"}}, "both client_cert"),
        ({"security_protocol": "PLAINTEXT", "ca": {"name": "c", "key": "ca.crt"}}, "use SSL or SASL_SSL"),
        ({"security_protocol": "SSL", "sasl_username": "u"}, "use SASL_SSL or remove them"),
    ],
)
def test_inconsistent_kafka_security_is_a_config_error(tmp_path, kafka, message):
    service = _service_copy(tmp_path)
    _overlay(service, "staging", _security(kafka=kafka))
    with pytest.raises(ConfigFileError, match=message):
        load_service(service, "staging")


# --- production refuses unencrypted Kafka and an unauthenticated gateway ---------------------------------


def _without_security(service: Path) -> None:
    path = service / "production.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    del data["kubernetes"]["security"]
    path.write_text(yaml.safe_dump(data), encoding="utf-8")


def _render(service: Path, env: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VATIC, "render", str(service), "--env", env, "--out", str(out)], capture_output=True, text=True, check=False
    )


def test_production_refuses_plaintext_kafka_and_an_open_gateway_one_line_each(tmp_path):
    service = _service_copy(tmp_path)
    _without_security(service)
    done = _render(service, "production", tmp_path / "k8s")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2, done.stderr
    assert "kubernetes.security.kafka.security_protocol is PLAINTEXT" in lines[0]
    assert "kubernetes.security.allow_plaintext_kafka: true" in lines[0]
    assert "kubernetes.security.gateway.clients" in lines[1]
    assert "kubernetes.security.allow_unauthenticated_gateway: true" in lines[1]
    assert not (tmp_path / "k8s").exists()  # nothing written


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
def test_the_explicit_opt_outs_render_production(tmp_path, protocol):
    service = _service_copy(tmp_path)
    _without_security(service)
    kafka: dict[str, Any] = {"security_protocol": protocol}
    if protocol == "SASL_PLAINTEXT":
        kafka |= {"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": {"name": "k", "key": "p"}}
    _overlay(service, "production", _security(kafka=kafka, allow_unauthenticated_gateway=True))
    with pytest.raises(ConfigError, match=f"security_protocol is {protocol}") as caught:
        render_all([Target(service, "production")])
    assert "gateway" not in str(caught.value)  # the gateway's opt-out holds; only Kafka is left
    _overlay(service, "production", _security(allow_plaintext_kafka=True))
    rendered = render_all([Target(service, "production")])
    assert any(p.name == "flink-deployment.yaml" for p in rendered)


def test_a_gateway_token_or_mutual_tls_counts_as_authentication(tmp_path):
    service = _service_copy(tmp_path)
    _overlay(service, "production", _security(gateway={"clients": None}))
    with pytest.raises(ConfigError, match="the gateway authenticates no client"):
        render_all([Target(service, "production")])
    _overlay(service, "production", {"gateway": {"auth_token_env": "FRAUD_TOKEN"}})
    assert render_all([Target(service, "production")])
    _overlay(service, "production", {"gateway": {"auth_token_env": None}})
    _overlay(service, "production", _security(gateway={"client_ca": {"name": "clients-ca", "key": "ca.crt"}}))
    assert render_all([Target(service, "production")])


def test_jwt_clients_count_as_authentication_and_reach_the_gateway_by_reference(tmp_path):
    service = _service_copy(tmp_path)
    _overlay(service, "production", _security(gateway={"clients": None}))
    jwt = {"jwt_key": {"name": "fraud-jwt", "key": "public.pem"}, "jwt_audience": "fraud-detection",
           "jwt_issuer": "https://login.example.com"}  # fmt: skip
    _overlay(service, "production", _security(gateway=jwt))
    rendered = render_all([Target(service, "production")])
    gateway = yaml.safe_load(next(t for p, t in rendered.items() if p.name == "gateway-deployment.yaml"))
    pod = gateway["spec"]["template"]
    (container,) = [c for c in _containers(pod) if c["name"] == "gateway"]
    env = _env(container)
    assert env["VATIC_GATEWAY_JWT_AUDIENCE"]["value"] == "fraud-detection"
    assert env["VATIC_GATEWAY_JWT_ISSUER"]["value"] == "https://login.example.com"
    key_file = env["VATIC_GATEWAY_JWT_KEY_FILE"]["value"]
    assert _file_source(pod, container, key_file) == ("fraud-jwt", "public.pem")
    _overlay(service, "production", _security(gateway={"jwt_audience": None}))
    with pytest.raises(ConfigFileError, match="jwt_audience"):
        render_all([Target(service, "production")])


def test_staging_renders_with_a_warning_line(tmp_path):
    service = _service_copy(tmp_path)
    done = _render(service, "staging", tmp_path / "k8s")
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2
    assert "kubernetes.security.kafka.security_protocol is PLAINTEXT" in warnings[0]
    assert "the gateway authenticates no client" in warnings[1]
    assert "warning" not in done.stdout
    assert (tmp_path / "k8s" / "fraud-detection" / "staging" / "flink-deployment.yaml").is_file()


# --- network policies, evaluated -------------------------------------------------------------------------

NAMESPACE_LABEL = "kubernetes.io/metadata.name"
#: labels the Flink operator adds to the job's pods besides those of the pod template
FLINK_ROLE_LABELS = {"jobManager": {"component": "jobmanager"}, "taskManager": {"component": "taskmanager"}}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}  # the renderer uses matchLabels only
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _port_matches(rule_port: dict[str, Any], port: tuple[str, int]) -> bool:
    return rule_port["port"] in port


def _admitted(policies: list[dict[str, Any]], namespace: str, source: tuple[str, dict[str, str]],
              target: dict[str, str], port: tuple[str, int]) -> bool:  # fmt: skip
    """Whether ``source`` (namespace, pod labels) may connect to the pod labelled ``target`` (in ``namespace``)
    on ``port`` (name, number), as NetworkPolicy semantics say: a pod no policy selects admits everything; a
    selected pod admits what some rule of some selecting policy admits."""
    selecting = [p["spec"] for p in policies if _selects(p["spec"]["podSelector"], target)]
    if not selecting:
        return True
    source_namespace, source_labels = source
    for spec in selecting:
        assert spec["policyTypes"] == ["Ingress"]
        for rule in spec.get("ingress", []):
            peers = rule.get("from")
            if peers is None:
                peer_ok = True
            else:
                peer_ok = any(
                    (_selects(peer["podSelector"], source_labels) and source_namespace == namespace)
                    if "podSelector" in peer
                    else _selects(peer["namespaceSelector"], {NAMESPACE_LABEL: source_namespace})
                    for peer in peers
                )
            ports = rule.get("ports")
            if peer_ok and (ports is None or any(_port_matches(p, port) for p in ports)):
                return True
    return False


@pytest.mark.parametrize(("folder", "env"), [(FRAUD, "production"), (SCORER, "production"), (SCORER, "staging")],
                         ids=lambda v: v.parent.name if isinstance(v, Path) else v)  # fmt: skip
def test_network_policies_admit_exactly_the_callers(folder, env):
    config = load_service(folder, env)
    objects = _objects(folder, env)
    namespace, service = config.namespace, config.service
    policies = [obj for obj in objects.values() if obj["kind"] == "NetworkPolicy"]
    model = objects[f"Deployment/{service}-model"]["spec"]["template"]["metadata"]["labels"]
    gateway = objects[f"Deployment/{service}-gateway"]["spec"]["template"]["metadata"]["labels"]
    flink = _flink_pods(objects[f"FlinkDeployment/{service}-stream"])
    jobmanager = {**flink["jobManager"]["metadata"]["labels"], **FLINK_ROLE_LABELS["jobManager"]}
    taskmanager = {**flink["taskManager"]["metadata"]["labels"], **FLINK_ROLE_LABELS["taskManager"]}
    other = {"app.kubernetes.io/name": "another-service", "app.kubernetes.io/instance": "another"}
    http = ("http", config.serving.port)
    rest = ("rest", int(config.kubernetes.flink.configuration.get("rest.port", 8081)))
    operator = config.kubernetes.flink.operator_namespace

    def admitted(source: tuple[str, dict[str, str]], target: dict[str, str], port: tuple[str, int]) -> bool:
        return _admitted(policies, namespace, source, target, port)

    # the model server: the gateway and both roles of the job, nobody else
    assert admitted((namespace, gateway), model, http)
    assert admitted((namespace, taskmanager), model, http)
    assert admitted((namespace, jobmanager), model, http)
    assert not admitted((namespace, other), model, http)
    assert not admitted((namespace, model), model, http)
    assert not admitted(("elsewhere", gateway), model, http)  # same labels, another namespace
    # the gateway: anyone, on its port only
    assert admitted((namespace, other), gateway, ("http", config.gateway.port))
    assert admitted(("ingress-nginx", {"app": "ingress"}), gateway, ("http", config.gateway.port))
    assert not admitted((namespace, other), gateway, ("debug", 5678))
    # the job: its own pods on any port, the operator on the REST port, nobody else
    assert admitted((namespace, taskmanager), jobmanager, ("rpc", 6123))
    assert admitted((namespace, jobmanager), taskmanager, ("data", 39211))
    assert admitted((operator, {"app": "flink-kubernetes-operator"}), jobmanager, rest)
    assert not admitted((operator, {"app": "flink-kubernetes-operator"}), jobmanager, ("rpc", 6123))
    assert not admitted((namespace, other), jobmanager, rest)
    assert not admitted((namespace, gateway), taskmanager, ("data", 39211))
    assert not admitted((namespace, model), jobmanager, rest)
    # the service's default deny covers every one of its pods and nobody else's
    (deny,) = [p for p in policies if p["metadata"]["name"] == f"{service}-default-deny"]
    assert all(_selects(deny["spec"]["podSelector"], labels) for labels in (model, gateway, jobmanager, taskmanager))
    assert not _selects(deny["spec"]["podSelector"], other)
    assert "ingress" not in deny["spec"]


def test_model_metrics_are_open_to_the_monitoring_namespace_only(fraud_production):
    config = load_service(FRAUD, "production")
    policies = [o for o in fraud_production.values() if o["kind"] == "NetworkPolicy"]
    model = fraud_production["Deployment/fraud-detection-model"]["spec"]["template"]["metadata"]["labels"]
    metrics = ("metrics", config.serving.metrics_port)
    monitoring = config.kubernetes.monitoring_namespace
    assert _admitted(policies, config.namespace, (monitoring, {"app": "prometheus"}), model, metrics)
    assert not _admitted(policies, config.namespace, (monitoring, {"app": "prometheus"}), model, ("http", 8080))
    assert not _admitted(policies, config.namespace, (config.namespace, {"app": "x"}), model, metrics)
