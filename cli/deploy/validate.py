"""Offline validation of rendered manifests: Kubernetes kinds with ``kubernetes-validate``, CRDs with their schemas.

Contract: :func:`validate_manifest` returns None for a valid object and raises :class:`ManifestInvalid` (one
line: kind/name, the path of the offending field, what is wrong) otherwise. Nothing is contacted: no cluster,
no network.

* **Kubernetes kinds** (Namespace, Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget, ConfigMap,
  NetworkPolicy, PersistentVolumeClaim) are checked by the ``kubernetes-validate`` package against the
  *strict* JSON schemas it ships for :data:`KUBERNETES_VERSION` (strict: an unknown field is an error, as with
  ``kubectl apply --validate=strict``).
* **Custom resources** (KEDA ``ScaledObject`` and ``TriggerAuthentication``, Prometheus operator ``ServiceMonitor``,
  Flink operator ``FlinkDeployment``) are checked against the ``openAPIV3Schema`` of the CustomResourceDefinitions
  the projects publish. No package installable here ships them in a readable form (npm's ``@kubernetes-models/*``
  ship compiled validators for Node 22, PyPI's ``cloudcoil-models-*`` only pydantic classes, and Maven Central does
  not serve ``flink-kubernetes-operator`` to this machine), so the schemas are vendored in ``crds/*.json``, taken
  from the projects' release tags (repository, tag, path and sha256 of the source file recorded in each file's
  ``source``; descriptions removed); the ``PrometheusRule`` schema is written from the operator's API reference
  (its ``source`` says so). They are turned into JSON Schema the way the API server reads a structural
  schema: ``nullable`` allows null, ``x-kubernetes-int-or-string`` allows both, and an object with ``properties``
  rejects unknown fields unless it says ``x-kubernetes-preserve-unknown-fields`` (strict field validation).

Pipeline environment only (``kubernetes-validate`` and ``jsonschema`` are installed there).
"""

from __future__ import annotations

import importlib
import json
from functools import cache
from importlib import resources
from typing import Any

from vatic.schemas.errors import ManifestInvalid

__all__ = [
    "CRD_KINDS",
    "KUBERNETES_VERSION",
    "ManifestInvalid",
    "crd_schema",
    "custom_resource_definitions",
    "validate_manifest",
]

#: the Kubernetes version whose schemas the rendered manifests are checked against
KUBERNETES_VERSION = "1.35"

#: (apiVersion, kind) of the custom resources the renderer writes -> vendored schema file
CRD_KINDS: dict[tuple[str, str], str] = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
    ("flink.apache.org/v1beta1", "FlinkDeployment"): "flinkdeployment.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.json",
}


def _structural_to_json_schema(node: Any) -> Any:
    """A CRD's structural OpenAPI v3 schema as a strict JSON Schema (see the module docstring)."""
    if isinstance(node, list):
        return [_structural_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _structural_to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    out.pop("nullable", None)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.pop("anyOf", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    preserve = bool(node.get("x-kubernetes-preserve-unknown-fields"))
    if "properties" in node and "additionalProperties" not in node and not preserve:
        out["additionalProperties"] = False
    return out


@cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The vendored CRD document (``source``, ``apiVersion``, ``kind``, ``openAPIV3Schema``) of a custom kind."""
    name = CRD_KINDS.get((api_version, kind))
    if name is None:
        raise KeyError(f"no vendored schema for {api_version} {kind}")
    text = (resources.files("vatic.cli.deploy") / "crds" / name).read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def custom_resource_definitions() -> list[dict[str, Any]]:
    """The vendored schemas as ``apiextensions.k8s.io/v1`` CustomResourceDefinitions (namespaced, the one version
    served and stored), to install in an API server before applying rendered manifests to it (the operators'
    own CRDs are what a real cluster has; these carry the same schemas)."""
    crds: list[dict[str, Any]] = []
    for api_version, kind in CRD_KINDS:
        group, version = api_version.split("/")
        plural = kind.lower() + "s"
        crds.append(
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": f"{plural}.{group}"},
                "spec": {
                    "group": group,
                    "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower()},
                    "scope": "Namespaced",
                    "versions": [
                        {
                            "name": version,
                            "served": True,
                            "storage": True,
                            "schema": {"openAPIV3Schema": crd_schema(api_version, kind)["openAPIV3Schema"]},
                            "subresources": {"status": {}},
                        }
                    ],
                },
            }
        )
    return crds


@cache
def _crd_validator(api_version: str, kind: str) -> Any:
    jsonschema = importlib.import_module("jsonschema")
    schema = _structural_to_json_schema(crd_schema(api_version, kind)["openAPIV3Schema"])
    # the API server accepts these on every object, whether the CRD's schema lists them or not
    properties = schema.setdefault("properties", {})
    properties.setdefault("apiVersion", {"const": api_version})
    properties.setdefault("kind", {"const": kind})
    properties.setdefault("metadata", {"type": "object"})
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    return jsonschema.Draft202012Validator(schema)


def _path(parts: Any) -> str:
    return ".".join(str(p) for p in parts) or "(top level)"


def validate_manifest(obj: dict[str, Any], *, kubernetes_version: str = KUBERNETES_VERSION) -> None:
    """Validate one manifest offline (see the module docstring); raise :class:`ManifestInvalid` when invalid."""
    api_version, kind = str(obj.get("apiVersion")), str(obj.get("kind"))
    name = f"{kind}/{(obj.get('metadata') or {}).get('name', '?')}"
    if (api_version, kind) in CRD_KINDS:
        errors = sorted(_crd_validator(api_version, kind).iter_errors(obj), key=lambda e: list(e.absolute_path))
        if errors:
            first = errors[0]
            raise ManifestInvalid(
                f"{name}: {_path(first.absolute_path)}: {first.message} (schema: CRD {api_version} {kind})"
            )
        return
    kv = importlib.import_module("kubernetes_validate")
    try:
        kv.validate(obj, kubernetes_version, strict=True)
    except kv.ValidationError as exc:
        raise ManifestInvalid(
            f"{name}: {_path(exc.absolute_path)}: {exc.message} (schema: Kubernetes {kubernetes_version}, strict)"
        ) from None
    except kv.SchemaNotFoundError as exc:
        raise ManifestInvalid(f"{name}: {exc.message}") from None
