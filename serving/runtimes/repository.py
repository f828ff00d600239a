"""The no-code and low-code tiers' model repository: MLServer settings written from the service config.

:func:`write_repository` turns one :class:`~vatic.serving.config.model.ServiceConfig` into a folder that
``mlserver start <folder>`` serves::

    <repository>/
      .vatic-repository            marker: vatic wrote this folder and may rewrite it
      settings.json                MLServer server settings (ports, workers, metrics)
      <model.name>/
        model-settings.json        MLServer model settings (name, implementation, uri, version, metadata)
        <artifact files>           the verified copy of one registry version (e.g. model.skops, head.safetensors)
        registry-model-settings.json   only when the artifact carried a model-settings.json (renamed: see below)
      <name>@<version>/            the canary's and the shadow's versions (``ServiceConfig.side_models``), each
                                   fetched and written as the serving one (steps 1-3); MLServer serves them
                                   beside it, under their own version
      <model.name>.rollout/        the rollout pointer (:mod:`vatic.serving.core.versions`), when the service
                                   follows its registry or loads other versions of its model beside an unpinned one

Steps, in order; nothing is replaced in ``repository`` unless all of them succeed:

1. **Artifacts** come from the registry of ``registry:`` (``local``: a folder tree; ``comet``/``mlflow`` when their
   backends are installed) through :func:`vatic.connectors.registry.spec.fetch_from_spec`, the one verified
   path: the version is resolved (``version``, else the newest of ``stages``, else the latest), copied, hashed,
   checked against the sha256 pins of ``registry.artifacts``; a ``.pkl``/``.pickle``/``.joblib`` file is refused
   unless ``allow_pickle: true`` **and** a pin covers it (``ArtifactRejected``). There is no other way in.
2. A ``model-settings.json`` shipped inside the artifact (the training code may write one) is read as the base of
   ours (``platform``, ``versions``, ``outputs`` metadata) and renamed ``registry-model-settings.json``, so that
   MLServer, which loads every ``**/model-settings.json``, does not load it as a second model.
3. ``model-settings.json``: ``implementation`` per tier and library (below); ``parameters.uri`` (no-code: the
   model file, e.g. ``./model.skops``; low-code: the model folder ``.``); ``parameters.version``
   (``model.version``, else the registry version); ``inputs`` from ``model.inputs`` (shape ``[-1, K]`` for K
   columns, ``[-1]`` with ``squeeze``; ``content_type`` as given); ``outputs`` metadata when the artifact
   declares it (else the runtime fills it in at load); ``parameters.extra``: ``device`` (``serving.device``),
   ``outputs`` (the output names the service reads - runtimes check at load that they produce them) and
   ``artifact`` (registry, model, version, sha256 manifest digest: provenance); adaptive batching
   (``max_batch_size``, ``max_batch_time`` in seconds) when ``serving.max_batch_size`` > 1.
4. ``settings.json``: ``http_port``/``grpc_port``/``metrics_port`` and ``parallel_workers`` from ``serving``,
   ``host 0.0.0.0`` (a container; the local stack's :class:`~vatic.cli.stack.mlserver.ModelServer`
   overrides host, ports and workers), metrics on.

Implementations (``implementation``):

=========  ==========  ==================================================  =====================================
tier       library     with ``validate_inputs`` (default)                  without
=========  ==========  ==================================================  =====================================
no-code    sklearn     ``vatic.serving.runtimes.nocode.SKLearnModel``      ``mlserver_sklearn.SKLearnModel``
no-code    xgboost     ``vatic.serving.runtimes.nocode.XGBoostModel``      ``mlserver_xgboost.XGBoostModel``
no-code    lightgbm    ``vatic.serving.runtimes.nocode.LightGBMModel``     ``mlserver_lightgbm.LightGBMModel``
low-code   any         ``serving.implementation`` (a ``VaticModel``)        same
=========  ==========  ==================================================  =====================================

The ``vatic`` no-code runtimes *are* MLServer's (subclasses): they add the input checks of
:mod:`vatic.serving.core.contract` (a bad request is a 400, not MLServer's 500 from inside sklearn), load
``.skops`` files (sklearn without pickle), concatenate several declared inputs into the one feature matrix
the model was trained on (in declared order), and answer every output the service config reads by default.
The full-custom tier (``layer: fastapi``) gets the same artifact folder and a ``vatic-model.json`` (the model
settings without ``implementation``) instead of MLServer files.

Defaults for light models: ``serving.parallel_workers: 0`` (predict runs in the server process) and, in the tree
runtimes, one predict thread per request (``parameters.extra.threads``); why: docs/decisions/0006-parallel-workers.md.

Runs in both environments (it imports pydantic and the registry client, never MLServer). Command line, used by
the local stack (``cli/stack/services.py``)::

    python -m vatic.serving.runtimes.repository SERVICE_DIR REPOSITORY [--environment ENV] [--registry-root DIR]

prints one JSON line describing what it wrote; exit code 2 with one ``vatic: ...`` line for a configuration
problem, 3 when the artifacts are not in the registry yet (``vatic usecases prepare`` writes them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vatic.connectors.registry import MaterializedModel, ModelRegistry, is_pickle, open_registry
from vatic.connectors.registry.spec import fetch_from_spec, registry_from_spec
from vatic.schemas.errors import ArtifactsMissing, ConfigError, ModelNotFound, VaticError
from vatic.serving.config.base import TensorSpec
from vatic.serving.config.graph import StepSpec
from vatic.serving.config.loader import load_service
from vatic.serving.config.model import RegistrySpec, ServiceConfig, step_model
from vatic.serving.core.versions import pointer_name

__all__ = [
    "MARKER",
    "MODEL_FILES",
    "NOCODE_OUTPUTS",
    "POINTER_IMPLEMENTATION",
    "ArtifactsMissing",
    "WrittenModel",
    "WrittenRepository",
    "canary_of",
    "implementation_for",
    "input_metadata",
    "main",
    "materialize_model",
    "model_settings",
    "pointer_settings",
    "server_settings",
    "service_registry",
    "side_config",
    "side_spec",
    "version_folder",
    "write_pointer",
    "write_repository",
]

MARKER = ".vatic-repository"
MODEL_SETTINGS = "model-settings.json"
SHIPPED_SETTINGS = "registry-model-settings.json"
CUSTOM_SETTINGS = "vatic-model.json"

#: model file names each no-code library loads, by preference (then any single file with one of the suffixes)
MODEL_FILES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sklearn": (("model.skops", "model.joblib", "model.pkl", "model.pickle"), (".skops", ".joblib", ".pkl", ".pickle")),
    "xgboost": (("model.json", "model.ubj", "model.bst"), (".ubj", ".bst", ".json")),
    "lightgbm": (("model.txt", "model.bst", "model.lgb"), (".txt", ".bst", ".lgb")),
}

#: files trainers write beside the model (its metrics, the drift monitor's reference profile): never a model file
SIDECARS = ("metrics.json", "profile.json")

#: outputs MLServer's no-code runtimes can answer
NOCODE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "sklearn": ("predict", "predict_proba", "transform"),
    "xgboost": ("predict", "predict_proba"),
    "lightgbm": ("predict",),
}

_NOCODE_CLASSES = {"sklearn": "SKLearnModel", "xgboost": "XGBoostModel", "lightgbm": "LightGBMModel"}


@dataclass(frozen=True)
class WrittenModel:
    """One model folder written: where, what runs it, and which registry version it holds."""

    name: str
    folder: Path
    implementation: str | None
    uri: str
    version: str
    registry_model: str
    registry_version: str
    digest: str
    files: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WrittenRepository:
    """What :func:`write_repository` wrote; ``server`` is the content of ``settings.json`` (empty: full-custom)."""

    root: Path
    server: dict[str, Any]
    models: tuple[WrittenModel, ...]
    #: ``registry.refresh_s``: > 0 when a rollout controller should follow the registry beside the server
    refresh_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        """A JSON-able description (what the command line prints)."""
        return {
            "repository": str(self.root),
            "parallel_workers": self.server.get("parallel_workers"),
            "refresh_s": self.refresh_s,
            "models": [
                {
                    "name": m.name,
                    "version": m.version,
                    "implementation": m.implementation,
                    "uri": m.uri,
                    "registry_model": m.registry_model,
                    "registry_version": m.registry_version,
                    "digest": m.digest,
                }
                for m in self.models
            ],
        }


# --- pure builders ----------------------------------------------------------------------------------------


def input_metadata(spec: TensorSpec) -> dict[str, Any]:
    """V2 metadata of one configured input: ``[-1, K]`` for K columns, ``[-1]`` when squeezed."""
    shape = [-1] if spec.squeeze else [-1, len(spec.columns)]
    body: dict[str, Any] = {"name": spec.name, "datatype": spec.datatype, "shape": shape}
    if spec.content_type:
        body["parameters"] = {"content_type": spec.content_type}
    return body


def implementation_for(config: ServiceConfig, *, validate_inputs: bool = True) -> str | None:
    """The ``implementation`` of the model settings (None for the full-custom tier); see the module table."""
    serving = config.serving
    if serving.tier == "full-custom":
        return None
    if serving.tier == "low-code":
        if not serving.implementation or "." not in serving.implementation:
            raise ConfigError(
                f"service {config.service}: serving.implementation must be 'module.Class' (a VaticModel subclass)"
            )
        return serving.implementation
    cls = _NOCODE_CLASSES[serving.library]
    return f"vatic.serving.runtimes.nocode.{cls}" if validate_inputs else f"mlserver_{serving.library}.{cls}"


def server_settings(config: ServiceConfig) -> dict[str, Any]:
    """MLServer's ``settings.json`` for the service (see the module docstring)."""
    serving = config.serving
    return {
        "debug": False,
        "host": "0.0.0.0",  # noqa: S104 - a container's server; the local stack binds loopback
        "http_port": serving.port,
        "grpc_port": serving.grpc_port,
        "metrics_port": serving.metrics_port,
        "parallel_workers": serving.parallel_workers,
        "load_models_at_startup": True,
        "metrics_endpoint": "/metrics",
    }


def model_settings(
    config: ServiceConfig,
    *,
    uri: str,
    registry_version: str,
    digest: str,
    registry_model: str | None = None,
    files: dict[str, str] | None = None,
    base: dict[str, Any] | None = None,
    validate_inputs: bool = True,
    inputs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """MLServer's ``model-settings.json`` for the service's model (see the module docstring); ``inputs`` replaces
    the input metadata built from ``model.inputs`` (a graph step reads tensors of other steps too).

    ``base`` is a ``model-settings.json`` that came with the artifact: its ``platform``, ``versions`` and
    ``outputs`` are kept; everything the service config decides is overwritten.
    """
    base = dict(base or {})
    serving, model = config.serving, config.model
    settings: dict[str, Any] = {"name": model.name}
    implementation = implementation_for(config, validate_inputs=validate_inputs)
    if implementation is not None:
        settings["implementation"] = implementation
    settings["platform"] = str(base.get("platform") or serving.library)
    if isinstance(base.get("versions"), list):
        settings["versions"] = [str(v) for v in base["versions"]]
    settings["inputs"] = inputs if inputs is not None else [input_metadata(spec) for spec in model.inputs]
    if isinstance(base.get("outputs"), list) and base["outputs"]:
        settings["outputs"] = base["outputs"]
    base_extra = (base.get("parameters") or {}).get("extra") if isinstance(base.get("parameters"), dict) else None
    extra: dict[str, Any] = dict(base_extra) if isinstance(base_extra, dict) else {}
    extra.update(
        {
            "device": serving.device,
            "outputs": [output.name for output in model.outputs],
            "service": config.service,
            "artifact": {
                "registry": config.registry.backend,
                "model": registry_model or config.registry.model or model.name,
                "version": registry_version,
                "digest": digest,
                **_pickle_pins(files),
            },
        }
    )
    settings["parameters"] = {"uri": uri, "version": model.version or registry_version, "extra": extra}
    if serving.max_batch_size > 1:
        settings["max_batch_size"] = serving.max_batch_size
        settings["max_batch_time"] = serving.max_batch_time_ms / 1000.0
    return settings


POINTER_IMPLEMENTATION = "vatic.serving.runtimes.pointer.RolloutPointer"


def pointer_settings(
    model: str, versions: Sequence[str], seq: int, canary: tuple[str, float] | None = None
) -> dict[str, Any]:
    """The ``model-settings.json`` of the rollout pointer of ``model`` (``versions``: current first; ``canary``:
    the version that answers a share of the entities, and that share)."""
    extra: dict[str, Any] = {"model": model, "switched_at": time.time()}
    if canary is not None:
        extra["canary"] = {"version": canary[0], "weight": canary[1]}
    return {
        "name": pointer_name(model),
        "implementation": POINTER_IMPLEMENTATION,
        "platform": "vatic-rollout",
        "versions": list(versions),
        "parameters": {"version": str(seq), "extra": extra},
    }


def canary_of(extra: Any) -> tuple[str, float] | None:
    """The canary a pointer's ``parameters.extra`` names (what :func:`pointer_settings` wrote), None without one."""
    canary = extra.get("canary") if isinstance(extra, dict) else None
    if not isinstance(canary, dict) or not canary.get("version"):
        return None
    return str(canary["version"]), float(canary.get("weight") or 0)


def version_folder(name: str, version: str) -> str:
    """The repository folder of a version served beside the serving one (a canary, a shadow, a rollout)."""
    return f"{name}@{version}"


def write_pointer(
    repository: Path, model: str, versions: Sequence[str], seq: int = 1, canary: tuple[str, float] | None = None
) -> Path:
    """Write the pointer's folder ``<repository>/<model>.rollout/``; returns it."""
    folder = repository / pointer_name(model)
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / MODEL_SETTINGS, pointer_settings(model, versions, seq, canary))
    return folder


def _pickle_pins(files: dict[str, str] | None) -> dict[str, Any]:
    """``{"pickles": {path: sha256}}`` for the verified pickle/joblib files of an artifact (none: nothing): vatic's
    runtimes check a pickle against it again right before unpickling it."""
    pickles = {path: sha for path, sha in (files or {}).items() if is_pickle(path)}
    return {"pickles": pickles} if pickles else {}


def _check_nocode_outputs(config: ServiceConfig) -> None:
    if config.serving.tier != "no-code":
        return
    library = config.serving.library
    allowed = NOCODE_OUTPUTS[library]
    unknown = [o.name for o in config.model.outputs if o.name not in allowed]
    if unknown:
        raise ConfigError(
            f"service {config.service}: the no-code {library} runtime answers {', '.join(allowed)}, not {unknown}; "
            "rename model.outputs (use index to pick a predict_proba column) or use tier: low-code"
        )


def _model_file(config: ServiceConfig, files: Sequence[str], where: str) -> str:
    """The no-code model file among the artifact's top-level ``files``: preferred names, else one by suffix."""
    library = config.serving.library
    names, suffixes = MODEL_FILES[library]
    top = [f for f in files if "/" not in f and f not in (MODEL_SETTINGS, SHIPPED_SETTINGS, *SIDECARS)]
    for name in names:
        if name in top:
            return name
    candidates = [f for f in top if f.endswith(suffixes)]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ConfigError(
            f"{where}: no {library} model file in the artifact (looked for {', '.join(names)} or "
            f"*{', *'.join(suffixes)}); it holds {', '.join(sorted(files)) or 'nothing'}"
        )
    raise ConfigError(f"{where}: several {library} model files {sorted(candidates)}; keep one, or name it {names[0]}")


# --- the writer -------------------------------------------------------------------------------------------


def service_registry(config: ServiceConfig, service_dir: Path, registry_root: Path | None) -> ModelRegistry:
    """The registry the service's model server reads: a ``local`` one at ``registry_root`` when given, else the
    service's ``registry`` section (``ArtifactsMissing`` for a local folder that does not exist)."""
    if registry_root is not None:
        if not registry_root.is_dir():
            raise ArtifactsMissing(
                f"service {config.service}: the model registry folder {registry_root} does not exist",
                stage="load",
            )
        return open_registry("local", root=registry_root)
    spec = config.registry
    if spec.backend == "local" and spec.uri:
        root = Path(spec.uri).expanduser()
        root = root if root.is_absolute() else service_dir / root
        if not root.is_dir():
            raise ArtifactsMissing(
                f"service {config.service}: the model registry folder {root} does not exist", stage="load"
            )
    return registry_from_spec(spec, service_dir=service_dir)


def _claim(repository: Path) -> None:
    """Create ``repository`` or make sure vatic wrote it (its content will be replaced)."""
    if repository.is_symlink() or (repository.exists() and not repository.is_dir()):
        raise ConfigError(f"model repository {repository} is not a folder")
    if repository.is_dir() and any(repository.iterdir()) and not (repository / MARKER).is_file():
        raise ConfigError(
            f"model repository {repository} is not empty and was not written by vatic; refusing to overwrite it "
            "(empty it or choose another folder)"
        )
    repository.mkdir(parents=True, exist_ok=True)


def _write_json(path: Path, body: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _adopt_shipped_settings(folder: Path) -> dict[str, Any] | None:
    """Rename every ``model-settings.json`` of the artifact; return the top-level one's content (the base)."""
    base: dict[str, Any] | None = None
    for shipped in sorted(folder.rglob(MODEL_SETTINGS)):
        if shipped.parent == folder:
            try:
                loaded = json.loads(shipped.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise ConfigError(f"{shipped}: the artifact's model-settings.json is not valid JSON: {exc}") from exc
            base = loaded if isinstance(loaded, dict) else None
        os.replace(shipped, shipped.with_name(SHIPPED_SETTINGS))
    return base


def materialize_model(
    config: ServiceConfig,
    folder: Path,
    *,
    registry: ModelRegistry,
    service_dir: Path,
    spec: RegistrySpec | None = None,
    validate_inputs: bool = True,
    inputs: list[dict[str, Any]] | None = None,
) -> tuple[MaterializedModel, str, dict[str, Any]]:
    """Steps 1-3 of the module docstring for one model folder: fetch and verify what ``spec`` (default: the
    service's ``registry`` section) names into ``folder`` (which must not exist or be empty), adopt a shipped
    ``model-settings.json`` and write ours (``vatic-model.json`` for the full-custom tier). Returns the fetched
    model, the settings' ``uri`` and the settings written. ``ModelNotFound`` when the registry has no such model."""
    spec = spec or config.registry
    fetched = fetch_from_spec(spec, folder, service_dir=service_dir, default_name=config.model.name, registry=registry)
    where = f"model {fetched.name}:{fetched.version}"
    base = _adopt_shipped_settings(folder)
    uri = "./" + _model_file(config, list(fetched.files), where) if config.serving.tier == "no-code" else "."
    settings = model_settings(
        config,
        uri=uri,
        registry_version=fetched.version,
        digest=fetched.digest,
        registry_model=fetched.name,
        files=dict(fetched.files),
        base=base,
        validate_inputs=validate_inputs,
        inputs=inputs,
    )
    custom = implementation_for(config, validate_inputs=validate_inputs) is None
    _write_json(folder / (CUSTOM_SETTINGS if custom else MODEL_SETTINGS), settings)
    return fetched, uri, settings


def side_config(config: ServiceConfig, name: str) -> ServiceConfig:
    """The service config as a side model served under ``name`` sees it (its own name, no pinned version)."""
    return config.model_copy(update={"model": config.model.model_copy(update={"name": name, "version": None})})


def side_spec(config: ServiceConfig, registry_model: str, version: str) -> RegistrySpec:
    """The registry section that names exactly one version of ``registry_model``."""
    return config.registry.model_copy(
        update={"model": registry_model, "version": version, "stages": [], "refresh_s": 0}
    )


def _materialize_sides(
    config: ServiceConfig,
    holder: Path,
    serving_version: str,
    registry: ModelRegistry,
    service_dir: Path,
    validate_inputs: bool,
) -> dict[tuple[str, str], Path]:
    """Fetch the canary and shadow versions (``ServiceConfig.side_models``) into ``holder``, each as the
    server's start fetches the serving one; a version equal to the serving one is served by it."""
    folders: dict[tuple[str, str], Path] = {}
    for name, registry_model, version in config.side_models:
        if name == config.model.name and version == serving_version:
            continue
        folder = holder / f"side-{len(folders)}"
        try:
            materialize_model(
                side_config(config, name),
                folder,
                registry=registry,
                service_dir=service_dir,
                spec=side_spec(config, registry_model, version),
                validate_inputs=validate_inputs,
            )
        except ModelNotFound as exc:
            raise ArtifactsMissing(
                f"service {config.service}: the canary or shadow version {registry_model}:{version}: {exc}",
                stage="load",
            ) from exc
        folders[(name, version)] = folder
    return folders


def step_config(config: ServiceConfig, step: StepSpec) -> ServiceConfig:
    """The service config as a graph step's model sees it: its name, version, inputs and outputs, its runtime
    (``library``: no-code, ``implementation``: low-code, else the service's ``serving``) and its registry model."""
    assert step.model is not None
    serving = config.serving
    if step.library:
        serving = serving.model_copy(update={"tier": "no-code", "library": step.library, "implementation": None})
    elif step.implementation:
        serving = serving.model_copy(update={"tier": "low-code", "implementation": step.implementation})
    model = step_model(step)
    registry = config.registry.model_copy(
        update={"model": step.registry_model or step.model, "version": step.version or config.registry.version}
    )
    update = {"graph": None, "model": model, "serving": serving, "registry": registry, "canary": None, "shadow": None}
    return config.model_copy(update=update)


def step_inputs(step: StepSpec, produced: dict[str, dict[str, tuple[str, list[int]]]]) -> list[dict[str, Any]]:
    """V2 metadata of a step's inputs: columns as :func:`input_metadata`, a tensor of another step ``[-1, *shape]``
    with that step's datatype (``produced``: :meth:`GraphSpec.produced`)."""
    out = []
    for tensor in step.inputs:
        if tensor.columns is not None:
            out.append(input_metadata(tensor.tensor()))
            continue
        producer, name = tensor.producer
        datatype, shape = produced[producer][name]
        body: dict[str, Any] = {"name": tensor.name, "datatype": datatype, "shape": [-1, *shape]}
        if tensor.content_type:
            body["parameters"] = {"content_type": tensor.content_type}
        out.append(body)
    return out


def served_steps(config: ServiceConfig) -> list[tuple[str, StepSpec]]:
    """The graph steps whose models the service's own model server serves, each once: ``(folder, step)``; a
    model served at two versions gets ``<model>@<version>`` for the second."""
    assert config.graph is not None
    out: list[tuple[str, StepSpec]] = []
    seen: set[tuple[str | None, str | None]] = set()
    names: set[str] = set()
    for step in config.graph.steps:
        if step.model is None or step.server is not None or (step.model, step.version) in seen:
            continue
        seen.add((step.model, step.version))
        folder = step.model if step.model not in names else version_folder(step.model, step.version or "default")
        names.add(step.model)
        out.append((folder, step))
    return out


def _write_graph_repository(
    config: ServiceConfig, target: Path, registry: ModelRegistry, service_dir: Path, validate_inputs: bool
) -> WrittenRepository:
    """:func:`write_repository` for a graph: one model folder per step the service's server serves."""
    assert config.graph is not None
    produced = config.graph.produced()
    written: list[WrittenModel] = []
    holder = Path(tempfile.mkdtemp(prefix=f".{config.service}.incoming-", dir=target))
    try:
        incoming: list[tuple[Path, str]] = []
        for folder, step in served_steps(config):
            view = step_config(config, step)
            _check_nocode_outputs(view)
            place = holder / f"step-{len(incoming)}"
            try:
                fetched, uri, settings = materialize_model(
                    view, place, registry=registry, service_dir=service_dir, validate_inputs=validate_inputs,
                    inputs=step_inputs(step, produced),
                )  # fmt: skip
            except ModelNotFound as exc:
                raise ArtifactsMissing(f"service {config.service}: step {step.name!r}: {exc}", stage="load") from exc
            except ConfigError as exc:
                if type(exc) is not ConfigError:  # missing, rejected artifacts: their own kinds, as they are
                    raise
                # e.g. a registry version trained before this step's model existed
                raise ConfigError(f"service {config.service}: step {step.name!r} ({step.model}): {exc}") from exc
            incoming.append((place, folder))
            written.append(
                WrittenModel(
                    name=view.model.name, folder=target / folder,
                    implementation=implementation_for(view, validate_inputs=validate_inputs), uri=uri,
                    version=settings["parameters"]["version"], registry_model=fetched.name,
                    registry_version=fetched.version, digest=fetched.digest, files=dict(fetched.files),
                )
            )  # fmt: skip
        server = server_settings(config)
        _swap(target, holder, incoming)
        _write_json(target / "settings.json", server)
    finally:
        shutil.rmtree(holder, ignore_errors=True)
    return WrittenRepository(root=target, server=server, models=tuple(written))


def _swap(target: Path, holder: Path, incoming: Sequence[tuple[Path, str]]) -> None:
    """Move every folder vatic wrote into ``target`` before out (into ``holder``), then ``incoming`` in."""
    for stale in list(target.iterdir()):
        if stale == holder or stale.name == MARKER:
            continue
        if stale.name.startswith("."):  # leftovers of an interrupted run
            if ".incoming-" in stale.name and stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            continue
        os.replace(stale, holder / f"old-{stale.name}")
    for folder, name in incoming:
        os.replace(folder, target / name)


def write_repository(
    config: ServiceConfig,
    repository: str | os.PathLike[str] | None = None,
    *,
    service_dir: str | os.PathLike[str] = ".",
    registry_root: str | os.PathLike[str] | None = None,
    registry: ModelRegistry | None = None,
    validate_inputs: bool = True,
) -> WrittenRepository:
    """Materialise the service's model from its registry and write the MLServer repository (module docstring).

    ``repository`` defaults to ``registry.dest_path`` (relative to the working directory, as in the image).
    ``service_dir`` anchors a relative ``registry.uri``. ``registry_root`` overrides the registry with a
    ``local`` one rooted there (the local stack's ``<home>/registry``); ``registry`` passes a backend object.

    Raises :class:`ArtifactsMissing` when the registry (folder) or the model is not there,
    ``ArtifactRejected`` for a pin mismatch or a refused pickle, ``ConfigError`` for everything else that the
    config gets wrong. On any error the repository is left as it was.
    """
    target = Path(repository if repository is not None else config.registry.dest_path)
    service_path = Path(service_dir)
    if config.graph is None:
        _check_nocode_outputs(config)
    implementation = implementation_for(config, validate_inputs=validate_inputs)
    if registry is None:
        registry = service_registry(config, service_path, Path(registry_root) if registry_root is not None else None)
    _claim(target)
    if config.graph is not None:
        (target / MARKER).write_text(json.dumps({"service": config.service}) + "\n", encoding="utf-8")
        return _write_graph_repository(config, target, registry, service_path, validate_inputs)
    name = config.model.name
    holder = Path(tempfile.mkdtemp(prefix=f".{name}.incoming-", dir=target))
    try:
        incoming = holder / name
        try:
            fetched, uri, settings = materialize_model(
                config, incoming, registry=registry, service_dir=service_path, validate_inputs=validate_inputs
            )
        except ModelNotFound as exc:
            raise ArtifactsMissing(f"service {config.service}: {exc}", stage="load") from exc
        sides = _materialize_sides(
            config, holder, settings["parameters"]["version"], registry, service_path, validate_inputs
        )
        full_custom = implementation is None
        server = {} if full_custom else server_settings(config)
        # swap: the old model folder out, the new one in; other folders vatic wrote earlier go too
        (target / MARKER).write_text(json.dumps({"service": config.service}) + "\n", encoding="utf-8")
        moved = [(incoming, name)]
        moved += [(folder, version_folder(side, version)) for (side, version), folder in sides.items()]
        _swap(target, holder, moved)
        if config.uses_pointer:
            write_pointer(target, name, [settings["parameters"]["version"]])
        if server:
            _write_json(target / "settings.json", server)
    finally:
        shutil.rmtree(holder, ignore_errors=True)
    written = WrittenModel(
        name=name,
        folder=target / name,
        implementation=implementation,
        uri=uri,
        version=settings["parameters"]["version"],
        registry_model=fetched.name,
        registry_version=fetched.version,
        digest=fetched.digest,
        files=dict(fetched.files),
    )
    return WrittenRepository(root=target, server=server, models=(written,), refresh_s=config.registry.refresh_s)


# --- command line -----------------------------------------------------------------------------------------


#: the command's exit status when the registry has no artifacts for the model yet
EXIT_NOT_PREPARED = 3


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vatic.serving.runtimes.repository SERVICE_DIR REPOSITORY`` (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m vatic.serving.runtimes.repository",
        description="Write an MLServer model repository (settings, verified artifacts) from a service folder.",
    )
    parser.add_argument("service_dir", type=Path, help="the service folder (service.yaml)")
    parser.add_argument("repository", type=Path, help="the model repository folder to write")
    parser.add_argument("--environment", default=None, help="environment overlay (<env>.yaml)")
    parser.add_argument("--registry-root", type=Path, default=None, help="serve from this local registry folder")
    parser.add_argument("--no-validate-inputs", action="store_true", help="no-code: MLServer's runtimes as they are")
    args = parser.parse_args(argv)
    try:
        config = load_service(args.service_dir, args.environment)
        written = write_repository(
            config,
            args.repository,
            service_dir=args.service_dir,
            registry_root=args.registry_root,
            validate_inputs=not args.no_validate_inputs,
        )
    except ArtifactsMissing as exc:
        print(f"vatic: {exc}".replace("\n", " "), file=sys.stderr)
        return EXIT_NOT_PREPARED
    except (VaticError, OSError) as exc:
        print(f"vatic: {exc}".replace("\n", "; "), file=sys.stderr)
        return 2
    print(json.dumps(written.summary()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
