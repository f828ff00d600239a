"""Render services into ``k8s/<service>/<env>/``, compare with what is there (plan), write (render).

Layout: one folder per service and environment, self-contained and Kustomize-friendly (``kubectl apply -k
k8s/<service>/<env>``): one object per YAML file, a ``kustomization.yaml`` listing them, and the Grafana
dashboard (``grafana-dashboard.json``) turned into a ConfigMap by the kustomization's ``configMapGenerator``.
The renderer owns each ``k8s/<service>/<env>/`` folder: a file there that the current render does not produce
is stale, and ``render`` removes it (``plan`` shows it as deleted). Nothing outside those folders is touched.

Contract: :func:`render_service` returns ``{file name: text}`` and is deterministic (same config files, same
bytes); every manifest is validated offline first (:mod:`vatic.cli.deploy.validate`) unless asked not to,
so an invalid manifest is never written. :func:`plan` returns unified diffs (empty when ``k8s/`` is up to date).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vatic.cli.deploy.dashboard import dashboard
from vatic.cli.deploy.manifests import Manifest, build_manifests
from vatic.cli.deploy.security import security_check
from vatic.cli.deploy.validate import KUBERNETES_VERSION, validate_manifest
from vatic.schemas.errors import ConfigError, ManifestInvalid
from vatic.serving.config.loader import BASE_FILE, load_service
from vatic.serving.config.model import ServiceConfig

__all__ = [
    "DASHBOARD_FILE",
    "Change",
    "Images",
    "Target",
    "dump_yaml",
    "environments",
    "plan",
    "render_all",
    "render_service",
    "write",
]

DASHBOARD_FILE = "grafana-dashboard.json"
KUSTOMIZATION_FILE = "kustomization.yaml"
OWNED_SUFFIXES = (".yaml", ".yml", ".json")


class _Dumper(yaml.SafeDumper):
    """Block style, multi-line strings as literal blocks (the ConfigMap's files stay readable), no aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _represent_str)


def dump_yaml(obj: Any) -> str:
    """``obj`` as block-style YAML, keys in insertion order."""
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120, allow_unicode=True)


def _header(service: str, environment: str) -> str:
    return (
        f"# Rendered by `vatic render --env {environment}` from the service config of {service}.\n"
        "# Do not edit: change the service config and render again (`vatic plan` shows the difference).\n"
    )


@dataclass(frozen=True)
class Target:
    """One service folder in one environment, rendered into ``<out>/<service>/<environment>/``."""

    service_dir: Path
    environment: str


_IMAGE_REF = re.compile(r"^[a-z0-9]+(?:[._/:@-][A-Za-z0-9_.-]+)*$")


@dataclass(frozen=True)
class Images:
    """Images that replace the service config's for one render: the model server's (``image``) and the Flink
    job's and gateway's (``pipeline_image``); ``None`` keeps the config's."""

    model: str | None = None
    pipeline: str | None = None

    def __post_init__(self) -> None:
        for option, ref in (("--image", self.model), ("--pipeline-image", self.pipeline)):
            if ref is not None and not _IMAGE_REF.match(ref):
                raise ConfigError(
                    f"{option} {ref!r} is not an image reference (e.g. ghcr.io/acme/churn:1.2 or name@sha256:...)"
                )

    def apply(self, config: ServiceConfig) -> ServiceConfig:
        """The config with these images."""
        update = {k: v for k, v in (("image", self.model), ("pipeline_image", self.pipeline)) if v is not None}
        return config.model_copy(update=update) if update else config


def environments(service_dir: Path) -> list[str]:
    """The environments a service folder defines: its overlay files (``staging.yaml``, ``production.yaml``)."""
    return sorted(p.stem for p in service_dir.glob("*.yaml") if p.name != BASE_FILE)


def _kustomization(service: str, manifests: list[Manifest], namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": namespace,
        "resources": [m.file for m in manifests],
        "configMapGenerator": [
            {
                "name": f"{service}-grafana-dashboard",
                "files": [DASHBOARD_FILE],
                "options": {"disableNameSuffixHash": True, "labels": {"grafana_dashboard": "1"}},
            }
        ],
    }


def render_service(
    service_dir: Path,
    environment: str,
    *,
    validate: bool = True,
    kubernetes_version: str = KUBERNETES_VERSION,
    warn: Callable[[str], None] | None = None,
    images: Images | None = None,
) -> tuple[str, dict[str, str]]:
    """Render one service in one environment: ``(service name, {file name: text})``.

    Raises ``ConfigFileError`` for a bad config (file:line lines), ``ConfigError`` for a literal secret or an
    unsafe production setting (:mod:`vatic.cli.deploy.security`) and :class:`ManifestInvalid` (naming the file)
    when a manifest does not validate. ``warn`` gets one line per unsafe setting of a non-production environment.
    ``images`` replaces the config's images for this render only (a CI run deploys the image it just built).
    """
    config = load_service(service_dir, environment)
    if images is not None:
        config = images.apply(config)
    manifests = build_manifests(config, service_dir)
    if warn is not None:
        for line in security_check(config):
            warn(line)
    if validate:
        for manifest in manifests:
            try:
                validate_manifest(manifest.obj, kubernetes_version=kubernetes_version)
            except ManifestInvalid as exc:
                raise ManifestInvalid(f"{config.service}/{environment}/{manifest.file}: {exc}") from None
    header = _header(config.service, environment)
    files = {m.file: header + dump_yaml(m.obj) for m in manifests}
    files[DASHBOARD_FILE] = json.dumps(dashboard(config), indent=2) + "\n"
    files[KUSTOMIZATION_FILE] = header + dump_yaml(_kustomization(config.service, manifests, config.namespace))
    return config.service, files


def render_all(
    targets: list[Target],
    *,
    validate: bool = True,
    kubernetes_version: str = KUBERNETES_VERSION,
    warn: Callable[[str], None] | None = None,
    images: Images | None = None,
) -> dict[Path, str]:
    """Render every target; keys are paths relative to the output root: ``<service>/<env>/<file>``."""
    out: dict[Path, str] = {}
    for target in targets:
        service, files = render_service(
            target.service_dir,
            target.environment,
            validate=validate,
            kubernetes_version=kubernetes_version,
            warn=warn,
            images=images,
        )
        for name, text in files.items():
            out[Path(service) / target.environment / name] = text
    return out


def _owned(rendered: dict[Path, str]) -> list[Path]:
    return sorted({path.parent for path in rendered})


def _stale(rendered: dict[Path, str], root: Path) -> list[Path]:
    stale = []
    for folder in _owned(rendered):
        if (root / folder).is_dir():
            for path in sorted((root / folder).iterdir()):
                rel = folder / path.name
                if path.is_file() and path.suffix in OWNED_SUFFIXES and rel not in rendered:
                    stale.append(rel)
    return stale


def plan(rendered: dict[Path, str], root: Path) -> list[str]:
    """Unified diffs from what is under ``root`` to ``rendered`` (new, changed and stale files); [] when equal."""
    diffs = []
    for rel, text in sorted(rendered.items()):
        path = root / rel
        old = path.read_text(encoding="utf-8") if path.is_file() else ""
        if old != text:
            before = f"a/{rel}" if path.is_file() else "/dev/null"
            lines = difflib.unified_diff(
                old.splitlines(keepends=True), text.splitlines(keepends=True), before, f"b/{rel}"
            )
            diffs.append("".join(_terminated(lines)))
    for rel in _stale(rendered, root):
        old = (root / rel).read_text(encoding="utf-8")
        lines = difflib.unified_diff(old.splitlines(keepends=True), [], f"a/{rel}", "/dev/null")
        diffs.append("".join(_terminated(lines)))
    return diffs


def _terminated(lines: Any) -> list[str]:
    return [line if line.endswith("\n") else line + "\n" for line in lines]


@dataclass(frozen=True)
class Change:
    """What :func:`write` did to one file: ``created``, ``updated`` or ``deleted``."""

    action: str
    path: Path


def write(rendered: dict[Path, str], root: Path) -> list[Change]:
    """Write ``rendered`` under ``root`` and remove stale files of the folders it owns; unchanged files are left."""
    changes = []
    for rel, text in sorted(rendered.items()):
        path = root / rel
        existed = path.is_file()
        if existed and path.read_text(encoding="utf-8") == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        changes.append(Change("updated" if existed else "created", rel))
    for rel in _stale(rendered, root):
        (root / rel).unlink()
        changes.append(Change("deleted", rel))
    return changes
