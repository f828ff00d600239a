"""The deploy files of one service: its model-server image definition and a CI workflow (GitHub Actions syntax).

:func:`deploy_files` is pure but for reading the service folder: the service config (every environment overlay)
and the repository layout in, ``{path relative to the repository root: text}`` out. The same manifests that
``vatic render`` writes decide what the workflow waits for (every Deployment, every FlinkDeployment) and in which
namespace, so the workflow never repeats a name the config already gives.

Files:

* ``<project>/Dockerfile``: ``FROM vatic/model-server:<vatic version>`` plus the project's own Python packages,
  those the config imports (``serving.implementation``, ``serving.entrypoint``, a graph step's implementation) and
  that are folders of the project; nothing else (the model comes from the registry at start).
* ``.github/workflows/deploy-<service>.yml``: ``test`` (the project's pytest suite when it has one, in the
  model-server environment of the tools image; every environment rendered and validated offline) ->
  ``image`` (build and push ``ghcr.io/<owner>/<service>-model``, addressed by digest from then on) -> for each
  environment in order (every overlay but production, sorted, then production): ``deploy-<env>`` (``vatic render
  --image <digest>``, a server-side dry run, ``kubectl apply --server-side``, the roll-out waited for) and
  ``check-<env>`` (readiness of the model and the gateway where they serve plain HTTP; one ``vatic predict`` of
  ``<service dir>/smoke.json`` through an open gateway when the file exists). Each environment is a GitHub
  environment: its ``KUBECONFIG`` secret and its protection rules (the human gate before production).

The ``project`` is the service folder's parent (``vatic init``'s layout: ``<project>/service/``); the repository
root is the closest folder above the service folder that holds ``.git`` (else ``root``, else the project).
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vatic.cli.deploy.manifests import build_manifests
from vatic.cli.deploy.output import environments
from vatic.schemas.errors import ConfigError
from vatic.serving.config.loader import load_service
from vatic.serving.config.model import ServiceConfig

__all__ = ["SMOKE_FILE", "TOOLS_IMAGE", "DeployFiles", "deploy_files", "deploy_order", "repository_root"]

SMOKE_FILE = "smoke.json"
_PATH = re.compile(r"^[A-Za-z0-9._/-]+$")


def _vatic_version() -> str:
    try:
        return importlib.metadata.version("vatic")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source tree without metadata
        return "0.1.0"


VATIC_VERSION = _vatic_version()
#: the image the workflow's jobs run in: vatic's CLI (pipeline environment) and the model-server environment
TOOLS_IMAGE = f"vatic/tools:{VATIC_VERSION}"


@dataclass(frozen=True)
class DeployFiles:
    """What :func:`deploy_files` returns: the repository root and its files by path relative to it."""

    root: Path
    files: dict[Path, str]


def repository_root(service_dir: Path, root: Path | None = None) -> Path:
    """``root`` when given, else the closest folder above ``service_dir`` holding ``.git``, else its parent."""
    if root is not None:
        return root.resolve()
    here = service_dir.resolve()
    for folder in (here, *here.parents):
        if (folder / ".git").exists():
            return folder
    return here.parent


def deploy_order(envs: list[str]) -> list[str]:
    """The order the workflow deploys in: every environment but production (sorted), then production."""
    return sorted(e for e in envs if e != "production") + (["production"] if "production" in envs else [])


def _packages(config: ServiceConfig, project: Path) -> list[str]:
    """Top-level packages the config imports that are folders of the project (its own code)."""
    dotted: list[str] = []
    if config.serving.implementation:
        dotted.append(config.serving.implementation)
    if config.serving.entrypoint:
        dotted.append(config.serving.entrypoint.split(":", 1)[0])
    if config.graph is not None:
        dotted += [step.implementation for step in config.graph.steps if step.implementation]
    found = {name.split(".", 1)[0] for name in dotted}
    return sorted(p for p in found if (project / p / "__init__.py").is_file())


def _has_tests(project: Path) -> bool:
    return (project / "pytest.ini").is_file() or (project / "tests").is_dir()


def _checks(config: ServiceConfig) -> list[dict[str, Any]]:
    """The endpoints the runner can call through a port-forward: plain HTTP only, the gateway last."""
    checks: list[dict[str, Any]] = []
    if config.kubernetes.security.model.tls_cert is None:
        checks.append(
            {
                "what": "the model is loaded",
                "service": f"{config.service}-model",
                "local_port": 18080,
                "path": f"/v2/models/{config.model.name}/ready",
            }
        )
    if config.kubernetes.security.gateway.tls_cert is None:
        checks.append(
            {
                "what": "the gateway is ready",
                "service": f"{config.service}-gateway",
                "local_port": 18081,
                "path": "/v2/health/ready",
            }
        )
    return checks


def _open_gateway(config: ServiceConfig) -> bool:
    gateway = config.kubernetes.security.gateway
    return (
        gateway.tls_cert is None
        and gateway.clients is None
        and gateway.jwt_key is None
        and not config.gateway.auth_token_env
    )


def _environment(service_dir: Path, env: str, smoke: str | None) -> dict[str, Any]:
    config = load_service(service_dir, env)
    manifests = build_manifests(config, service_dir)
    return {
        "name": env,
        "namespace": config.namespace,
        "model": config.model.name,
        "deployments": [m.obj["metadata"]["name"] for m in manifests if m.obj["kind"] == "Deployment"],
        "flink": [m.obj["metadata"]["name"] for m in manifests if m.obj["kind"] == "FlinkDeployment"],
        "checks": _checks(config),
        # an open gateway serves plain HTTP, so it is the last check: the prediction goes through its port-forward
        "smoke": smoke if smoke and _open_gateway(config) else None,
    }


def _posix(path: Path) -> str:
    text = path.as_posix()
    return text if text else "."


def deploy_files(service_dir: Path, *, root: Path | None = None) -> DeployFiles:
    """The Dockerfile and the workflow of the service in ``service_dir`` (see the module's contract).

    Raises ``ConfigError`` when the service folder has no environment overlay (nothing to deploy to) or lies
    outside ``root``; ``ConfigFileError`` for a bad config, as ``vatic render`` does.
    """
    import jinja2

    service_dir = service_dir.resolve()
    repo = repository_root(service_dir, root)
    try:
        project_rel = service_dir.parent.relative_to(repo)
    except ValueError:
        raise ConfigError(f"{service_dir} is not inside the repository root {repo}: pass --root") from None
    envs = deploy_order(environments(service_dir))
    if not envs:
        raise ConfigError(
            f"{service_dir}: no environment overlays (staging.yaml, production.yaml): nothing to deploy to"
        )
    base = load_service(service_dir)
    project = service_dir.parent
    service_rel = _posix(service_dir.relative_to(repo))
    if not _PATH.match(service_rel):
        raise ConfigError(
            f"{service_rel}: the workflow names this folder in YAML and shell lines; use letters, digits, '.', '_', "
            "'-' and '/' in its path"
        )
    smoke = f"{service_rel}/{SMOKE_FILE}" if (service_dir / SMOKE_FILE).is_file() else None
    workflow_file = f".github/workflows/deploy-{base.service}.yml"
    loader = jinja2.FileSystemLoader(str(Path(__file__).resolve().parents[1] / "templates" / "deploy"))
    # YAML and Dockerfile text, not HTML: every value put in is a DNS label, a checked path or a quoted line
    templates = jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701
    )
    project_dir = _posix(project_rel)
    dockerfile = templates.get_template("Dockerfile.jinja").render(
        service=base.service,
        packages=_packages(base, project),
        vatic_version=VATIC_VERSION,
        description=(base.description or base.service).replace('"', "'").replace("\n", " "),
    )
    workflow = templates.get_template("workflow.yml.jinja").render(
        service=base.service,
        service_dir=service_rel,
        project_dir=project_dir,
        dockerfile=_posix(project_rel / "Dockerfile"),
        watch=_posix(project_rel / "**"),
        workflow_file=workflow_file,
        tools_image=TOOLS_IMAGE,
        tests=_has_tests(project),
        envs=[_environment(service_dir, env, smoke) for env in envs],
    )
    return DeployFiles(repo, {project_rel / "Dockerfile": dockerfile, Path(workflow_file): workflow})
