"""Every rendered manifest validates offline; the validation is strict enough to fail.

Kubernetes kinds: the ``kubernetes-validate`` package's strict schemas of Kubernetes 1.35 (an unknown field is an
error). Custom resources (KEDA ScaledObject, Prometheus operator ServiceMonitor, Flink operator FlinkDeployment):
the ``openAPIV3Schema`` of the CRDs the projects publish, vendored in ``cli/deploy/crds/`` - no package
installable here ships them readably (see :mod:`vatic.cli.deploy.validate`) - read as the API server reads a
structural schema, with unknown fields rejected.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from vatic.cli.deploy.validate import CRD_KINDS, crd_schema, validate_manifest
from vatic.schemas.errors import ManifestInvalid

ROOT = Path(__file__).resolve().parents[3]
MANIFESTS = sorted(
    p for p in [*(ROOT / "k8s").glob("*/*/*.yaml"), *(Path(__file__).parent / "golden").glob("*/*/*.yaml")]
    if p.name != "kustomization.yaml"
)  # fmt: skip


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_there_is_something_to_validate():
    kinds = {_load(p)["kind"] for p in MANIFESTS}
    assert kinds >= {
        "Namespace", "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "ScaledObject",
        "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "PersistentVolumeClaim", "FlinkDeployment",
        "TriggerAuthentication", "PrometheusRule",
    }  # fmt: skip


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_rendered_manifest_validates(path):
    validate_manifest(_load(path))


def _first(kind: str) -> dict:
    return next(_load(p) for p in MANIFESTS if _load(p)["kind"] == kind)


@pytest.mark.parametrize(
    ("kind", "mutate", "message"),
    [
        ("Deployment", lambda o: o["spec"]["template"]["spec"]["containers"][0].update(bogus=1),
         "'bogus' was unexpected"),
        ("Deployment", lambda o: o["spec"].update(replicas="two"), "is not of type 'integer'"),
        ("HorizontalPodAutoscaler", lambda o: o["spec"].pop("maxReplicas"), "'maxReplicas' is a required property"),
        ("NetworkPolicy", lambda o: o["spec"].update(policyTypes="Ingress"), "is not of type 'array'"),
        ("ScaledObject", lambda o: o["spec"].update(minReplicaCount="one"), "is not of type 'integer'"),
        ("ScaledObject", lambda o: o["spec"].pop("scaleTargetRef"), "'scaleTargetRef' is a required property"),
        ("ServiceMonitor", lambda o: o["spec"]["endpoints"][0].update(scrapeEvery="1m"),
         "'scrapeEvery' was unexpected"),
        ("FlinkDeployment", lambda o: o["spec"]["job"].update(upgradeMode="rolling"), "is not one of"),
        ("FlinkDeployment", lambda o: o["spec"].update(flinkVersion="v9_9"), "is not one of"),
        ("FlinkDeployment", lambda o: o["spec"]["podTemplate"]["spec"]["containers"][0].update(bogus=1),
         "'bogus' was unexpected"),
        ("TriggerAuthentication", lambda o: o["spec"]["secretTargetRef"][0].pop("key"),
         "'key' is a required property"),
        ("TriggerAuthentication", lambda o: o["spec"].update(secretRef=[]), "'secretRef' was unexpected"),
        ("PrometheusRule", lambda o: o["spec"]["groups"][0]["rules"][0].pop("expr"), "'expr' is a required property"),
        ("PrometheusRule", lambda o: o["spec"]["groups"][0]["rules"][0].update(every="5m"), "'every' was unexpected"),
        ("PrometheusRule", lambda o: o["spec"]["groups"][0]["rules"][0].update({"for": "5 minutes"}),
         "does not match"),
        ("Deployment", lambda o: o["spec"]["template"]["spec"]["containers"][0]["securityContext"].update(
            seccompProfile={"type": 1}), "is not of type 'string'"),
    ],
)  # fmt: skip
def test_validation_fails_on_a_broken_manifest(kind, mutate, message):
    obj = copy.deepcopy(_first(kind))
    validate_manifest(obj)
    mutate(obj)
    with pytest.raises(ManifestInvalid, match=message):
        validate_manifest(obj)


@pytest.mark.parametrize(("api_version", "kind"), list(CRD_KINDS))
def test_the_vendored_crd_schemas_say_where_they_come_from(api_version, kind):
    document = crd_schema(api_version, kind)
    assert (document["apiVersion"], document["kind"]) == (api_version, kind)
    source = document["source"]
    if source.get("kind") == "API reference":  # written from the project's API reference, not vendored
        assert source["note"].startswith("written for vatic from")
    else:
        assert {"repository", "tag", "path", "sha256"} <= set(source)
        assert len(source["sha256"]) == 64
    assert document["openAPIV3Schema"]["type"] == "object"
    assert "spec" in document["openAPIV3Schema"]["properties"]


def test_the_vendored_files_are_intact():
    """The vendored JSON parses and is stored canonically (sorted keys): edits by hand would show here."""
    folder = ROOT / "cli" / "deploy" / "crds"
    for path in folder.glob("*.json"):
        text = path.read_text(encoding="utf-8")
        assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":")) + "\n", path.name
