"""Build a registry backend from the service config's ``registry:`` section and materialize its model.

The service config (``vatic.serving.config.model.RegistrySpec``) lives in a higher layer, so this module reads it
through the structural :class:`RegistrySpecLike` protocol: any object with those attributes works, and
``RegistrySpec`` has them. Two entry points::

    registry = registry_from_spec(service.registry, service_dir=service_dir)
    model = fetch_from_spec(service.registry, dest, service_dir=service_dir, default_name=service.model.name)

What each field means per backend (``uri`` is the only location field):

==========  =====================================================  ==============================================
backend     ``uri``                                                credentials
==========  =====================================================  ==============================================
``local``   registry root folder, relative to ``service_dir``      none
``comet``   Comet API base URL, e.g. ``https://comet.example.com/  ``COMET_API_KEY`` (environment only)
            clientlib/`` (default: comet_ml's own configuration)   ``workspace`` is required
``mlflow``  tracking URI, e.g. ``http://mlflow:5000`` (default:    MLflow's own variables
            ``MLFLOW_TRACKING_URI``)                               (``MLFLOW_TRACKING_TOKEN``, ...)
==========  =====================================================  ==============================================

Which version is served: ``version`` if set; else the newest version found under any of ``stages`` (a Comet
status or tag, an MLflow alias, a ``local`` stages-file entry); else the backend's latest version. Setting both
``version`` and ``stages`` is a ``ConfigError``. ``artifacts`` are the sha256 pins checked by
:meth:`ModelRegistry.fetch`; with ``allow_pickle: false`` a pickle/joblib file is refused even when pinned.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from vatic.connectors.registry.base import (
    ArtifactPin,
    MaterializedModel,
    ModelRef,
    ModelRegistry,
    ResolvedModel,
    open_registry,
)
from vatic.connectors.registry.digest import is_pickle
from vatic.schemas.errors import ArtifactRejected, ConfigError, ModelNotFound

__all__ = [
    "PinLike",
    "RegistrySpecLike",
    "fetch_from_spec",
    "pins_from_spec",
    "refs_from_spec",
    "registry_from_spec",
    "resolve_from_spec",
    "version_key",
]


class PinLike(Protocol):
    """One sha256 pin of the config (``ArtifactPin`` of the service config)."""

    @property
    def path(self) -> str | None: ...

    @property
    def sha256(self) -> str: ...


class RegistrySpecLike(Protocol):
    """The attributes of ``RegistrySpec`` that this module reads."""

    @property
    def backend(self) -> str: ...

    @property
    def uri(self) -> str | None: ...

    @property
    def workspace(self) -> str | None: ...

    @property
    def model(self) -> str | None: ...

    @property
    def version(self) -> str | None: ...

    @property
    def stages(self) -> Sequence[str]: ...

    @property
    def artifacts(self) -> Sequence[PinLike]: ...

    @property
    def allow_pickle(self) -> bool: ...


_NUMERIC = re.compile(r"^v?(\d+(?:\.\d+)*)(?:[-+](.*))?$")


def version_key(version: str) -> tuple[int, tuple[int, ...], int, str]:
    """Sort key giving "newer" as "greater": dotted numbers compare numerically (``1.10.0 > 1.9.2``, ``10 > 9``), a
    pre-release suffix sorts before its release (``2.0.0-rc1 < 2.0.0``), and any version that does not start
    with a number sorts below every numbered one (and by name among themselves)."""
    match = _NUMERIC.match(version)
    if match is None:
        return (0, (), 0, version)
    numbers = tuple(int(part) for part in match.group(1).split("."))
    suffix = match.group(2)
    return (1, numbers, 0 if suffix else 1, suffix or "")


def registry_from_spec(spec: RegistrySpecLike, *, service_dir: str | os.PathLike[str]) -> ModelRegistry:
    """The backend named by ``spec.backend``, built from ``spec`` (see the module docstring).

    ``service_dir`` is the folder of the service definition; a relative ``local`` root is taken from there.
    Raises ``ConfigError`` for a missing ``uri`` (``local``) or ``workspace`` (``comet``), a missing API key or
    tracking URI, an unknown backend, or a backend whose client library is not installed in this environment.
    Nothing is contacted yet: outages surface on the first ``resolve``/``fetch`` as ``Retryable``.
    """
    backend = spec.backend
    if backend == "local":
        if not spec.uri:
            raise ConfigError("registry.uri must name the local registry root folder", stage="load")
        root = Path(spec.uri).expanduser()
        if not root.is_absolute():
            root = Path(service_dir) / root
        return open_registry("local", root=root)
    if backend == "comet":
        if not spec.workspace:
            raise ConfigError("registry.workspace must name the Comet workspace", stage="load")
        return open_registry("comet", workspace=spec.workspace, url=spec.uri)
    if backend == "mlflow":
        return open_registry("mlflow", tracking_uri=spec.uri)
    return open_registry(backend)


def refs_from_spec(spec: RegistrySpecLike, *, default_name: str) -> list[ModelRef]:
    """The references ``spec`` accepts, in the config's order: one by version, one per stage, or the latest.

    The model name is ``spec.model`` or ``default_name`` (the service's model name). ``ConfigError`` if both
    ``version`` and ``stages`` are set, or for names that are not valid references.
    """
    name = spec.model or default_name
    if spec.version is not None and spec.stages:
        raise ConfigError(
            f"registry: give a version ({spec.version!r}) or stages ({list(spec.stages)}), not both", stage="load"
        )
    if spec.version is not None:
        return [ModelRef(name, version=spec.version)]
    if spec.stages:
        return [ModelRef(name, stage=stage) for stage in dict.fromkeys(spec.stages)]
    return [ModelRef(name)]


def resolve_from_spec(registry: ModelRegistry, spec: RegistrySpecLike, *, default_name: str) -> ResolvedModel:
    """Resolve what ``spec`` asks for in ``registry``: with several stages, the newest (:func:`version_key`)
    of the versions they name; stages that name no version are skipped. ``ModelNotFound`` when none does;
    ``Retryable`` errors of the backend pass through."""
    refs = refs_from_spec(spec, default_name=default_name)
    if len(refs) == 1:
        return registry.resolve(refs[0])
    found: list[ResolvedModel] = []
    missing: list[str] = []
    for ref in refs:
        try:
            found.append(registry.resolve(ref))
        except ModelNotFound as exc:
            missing.append(f"{ref.stage}: {exc}")
    if not found:
        err = ModelNotFound(
            f"model {refs[0].name!r} has no version in any of the stages {[r.stage for r in refs]}: "
            + "; ".join(missing),
            model=refs[0].name,
        )
        err.stage = "load"
        raise err
    return max(found, key=lambda model: version_key(model.version))


def pins_from_spec(spec: RegistrySpecLike) -> tuple[ArtifactPin, ...]:
    """``spec.artifacts`` as :class:`ArtifactPin` values (``ConfigError`` for a malformed digest or path)."""
    return tuple(ArtifactPin(pin.sha256, pin.path) for pin in spec.artifacts)


def fetch_from_spec(
    spec: RegistrySpecLike,
    dest: str | os.PathLike[str],
    *,
    service_dir: str | os.PathLike[str],
    default_name: str,
    registry: ModelRegistry | None = None,
) -> MaterializedModel:
    """Resolve what ``spec`` asks for and materialize it, verified, at ``dest``; the one call a model server's
    start-up needs.

    ``dest`` is where the model server will read the artifact folder (the caller decides the layout, e.g.
    ``<service_dir>/<spec.dest_path>/<name>``); it must not exist or be an empty folder. ``registry`` defaults
    to :func:`registry_from_spec`. Checks, before anything appears at ``dest``: the sha256 pins of
    ``spec.artifacts``, the pickle rule of :meth:`ModelRegistry.fetch`, and with ``allow_pickle: false`` no
    pickle/joblib file at all (``ArtifactRejected``). The result's ``stage`` is the stage that selected the
    version, if any.
    """
    registry = registry if registry is not None else registry_from_spec(spec, service_dir=service_dir)
    target = Path(dest)
    if target.is_symlink() or (target.exists() and (not target.is_dir() or any(target.iterdir()))):
        raise ConfigError(f"destination {target} exists and is not an empty folder", stage="load")
    resolved = resolve_from_spec(registry, spec, default_name=default_name)
    ref = ModelRef(resolved.name, version=resolved.version)
    pins = pins_from_spec(spec)
    if spec.allow_pickle:
        model = registry.fetch(ref, target, pins=pins)
        return dataclasses.replace(model, stage=resolved.stage)
    # Fetch next to the destination, refuse pickles there, then move: nothing appears at dest on a refusal.
    target.parent.mkdir(parents=True, exist_ok=True)
    holder = Path(tempfile.mkdtemp(prefix=f".{target.name}.spec-", dir=target.parent))
    try:
        model = registry.fetch(ref, holder / "model", pins=pins)
        pickles = sorted(path for path in model.files if is_pickle(path))
        if pickles:
            raise ArtifactRejected(
                f"model {resolved.name}:{resolved.version}: {pickles[0]} is a pickle/joblib file and "
                "registry.allow_pickle is false; loading a pickle can execute arbitrary code. Prefer a native "
                "format, or set allow_pickle: true and pin its sha256 in registry.artifacts",
                path=pickles[0],
                reason="unpinned_pickle",
                actual=model.files[pickles[0]],
            )
        os.replace(model.path, target)
    finally:
        shutil.rmtree(holder, ignore_errors=True)
    return dataclasses.replace(model, path=target, stage=resolved.stage)
