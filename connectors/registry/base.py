"""The model registry interface: resolve a model reference, materialize its verified artifact folder.

Backends (``local``, ``comet``, ``mlflow``) implement :meth:`ModelRegistry.resolve` and
:meth:`ModelRegistry._download`; :meth:`ModelRegistry.fetch` is shared, so every backend verifies the same way:
files are copied into a staging folder next to the destination, hashed there (what is hashed is what will be
loaded), checked against the caller's sha256 pins and the pickle rule, and only then moved to the destination.
A failed check leaves nothing at the destination.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from vatic.connectors.registry.digest import folder_manifest, is_pickle, manifest_digest
from vatic.schemas.errors import ArtifactRejected, ConfigError, ModelNotFound

__all__ = [
    "ArtifactPin",
    "MaterializedModel",
    "ModelRef",
    "ModelRegistry",
    "ResolvedModel",
    "available_backends",
    "model_not_found",
    "open_registry",
    "register_backend",
    "verify_artifact",
]

#: model names, versions and stages: one path component, no leading dot
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def model_not_found(message: str, *, model: str, version: str | None = None) -> ModelNotFound:
    """The error every backend raises for a model, version or alias it does not have (stage ``load``)."""
    err = ModelNotFound(message, model=model, version=version)
    err.stage = "load"
    return err


def _check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ConfigError(
            f"invalid model {kind} {value!r}: use letters, digits, '.', '_', '-' (not first), at most 128",
            stage="load",
        )
    return value


@dataclass(frozen=True)
class ModelRef:
    """A model in a registry: ``name`` and at most one of ``version`` and ``stage``.

    With neither, backends resolve the latest version (for ``local``: the highest numeric version).
    Names, versions and stages are single path components (``[A-Za-z0-9][A-Za-z0-9._-]*``); anything else
    raises ``ConfigError``.
    """

    name: str
    version: str | None = None
    stage: str | None = None

    def __post_init__(self) -> None:
        _check_name("name", self.name)
        if self.version is not None and self.stage is not None:
            raise ConfigError(f"model {self.name!r}: give a version or a stage, not both", stage="load")
        if self.version is not None:
            _check_name("version", self.version)
        if self.stage is not None:
            _check_name("stage", self.stage)

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """``"fraud"``, ``"fraud:3"`` (version 3) or ``"fraud@production"`` (stage)."""
        name, sep, stage = text.partition("@")
        if sep:
            return cls(name, stage=stage)
        name, sep, version = text.partition(":")
        return cls(name, version=version) if sep else cls(name)

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.stage is not None:
            return f"{self.name}@{self.stage}"
        return self.name


@dataclass(frozen=True)
class ArtifactPin:
    """An expected sha256: of the file ``path`` (relative, inside the artifact folder), or with ``path=None``
    of the whole folder's manifest (see :mod:`vatic.connectors.registry.digest`).

    ``sha256`` may carry a ``sha256:`` prefix and upper-case hex; it is stored normalized.
    """

    sha256: str
    path: str | None = None

    def __post_init__(self) -> None:
        digest = self.sha256.strip().lower().removeprefix("sha256:")
        if not _SHA256.fullmatch(digest):
            raise ConfigError(f"sha256 pin {self.sha256!r} is not 64 hex digits", stage="load")
        object.__setattr__(self, "sha256", digest)
        if self.path is not None:
            pure = PurePosixPath(self.path)
            if pure.is_absolute() or not pure.parts or ".." in pure.parts or "\\" in self.path:
                raise ArtifactRejected(
                    f"pinned path {self.path!r} must be relative to the artifact folder, without '..'",
                    path=self.path,
                    reason="path_escape",
                )
            object.__setattr__(self, "path", pure.as_posix())


@dataclass(frozen=True)
class ResolvedModel:
    """A reference resolved to one version; ``location`` is where the backend reads it (path or URI)."""

    name: str
    version: str
    stage: str | None
    location: str


@dataclass(frozen=True)
class MaterializedModel:
    """A verified artifact folder at ``path``: ``files`` maps relative paths to sha256, ``digest`` is the
    folder's manifest digest (pin it to freeze this exact artifact)."""

    name: str
    version: str
    stage: str | None
    path: Path
    digest: str
    files: Mapping[str, str] = field(default_factory=dict)


def verify_artifact(files: Mapping[str, str], pins: Iterable[ArtifactPin], *, model: str) -> str:
    """Check a folder manifest against ``pins`` and the pickle rule; return the manifest digest.

    * every pin must match (a file pin's file must exist) -> else ``ArtifactRejected`` (``digest_mismatch``
      or ``missing_file``);
    * every pickle/joblib file must be covered by a pin, of the folder or of that file -> else
      ``ArtifactRejected`` (``unpinned_pickle``): unpickling runs arbitrary code, so only pinned bytes load.
    """
    digest = manifest_digest(files)
    folder_pinned = False
    pinned_files: set[str] = set()
    for pin in pins:
        if pin.path is None:
            if pin.sha256 != digest:
                raise ArtifactRejected(
                    f"model {model}: artifact folder digest is {digest}, the pin expects {pin.sha256}; "
                    "refusing to load it",
                    path=".",
                    reason="digest_mismatch",
                    expected=pin.sha256,
                    actual=digest,
                )
            folder_pinned = True
            continue
        actual = files.get(pin.path)
        if actual is None:
            raise ArtifactRejected(
                f"model {model}: pinned file {pin.path!r} is not in the artifact folder",
                path=pin.path,
                reason="missing_file",
                expected=pin.sha256,
            )
        if actual != pin.sha256:
            raise ArtifactRejected(
                f"model {model}: {pin.path} has sha256 {actual}, the pin expects {pin.sha256}; refusing to load it",
                path=pin.path,
                reason="digest_mismatch",
                expected=pin.sha256,
                actual=actual,
            )
        pinned_files.add(pin.path)
    if not folder_pinned:
        for path in sorted(files):
            if is_pickle(path) and path not in pinned_files:
                raise ArtifactRejected(
                    f"model {model}: {path} is a pickle/joblib file and loading it can execute arbitrary code; "
                    f"pin its sha256 (or the folder's) to allow it. Its sha256 is {files[path]}",
                    path=path,
                    reason="unpinned_pickle",
                    actual=files[path],
                )
    return digest


class ModelRegistry(ABC):
    """Resolves model references and materializes verified artifact folders. See the module docstring."""

    #: the backend name (``local``, ``comet``, ``mlflow``)
    backend: str

    @abstractmethod
    def resolve(self, ref: ModelRef | str) -> ResolvedModel:
        """Resolve ``ref`` (a :class:`ModelRef` or ``"name[:version|@stage]"``) to one version.

        Raises ``ModelNotFound`` for an unknown model, version or stage, ``ConfigError`` for a bad reference.
        """

    @abstractmethod
    def versions(self, name: str) -> list[str]:
        """The versions of model ``name``, oldest first as far as the backend knows."""

    def set_stage(self, name: str, stage: str, version: str) -> str | None:
        """Point ``stage`` of model ``name`` at ``version`` (which must exist); returns the version it named before
        (None: the stage is new). Servers that follow the stage roll the version out
        (:mod:`vatic.serving.runtimes.rollout`). Backends that vatic does not write to raise ``ConfigError``."""
        raise self._stages_elsewhere()

    def clear_stage(self, name: str, stage: str) -> str | None:
        """Remove ``stage`` of model ``name``; returns the version it named (None: it named none). Backends that
        vatic does not write to raise ``ConfigError`` (see :meth:`set_stage`)."""
        raise self._stages_elsewhere()

    def _stages_elsewhere(self) -> ConfigError:
        return ConfigError(
            f"the {self.backend} registry's stages are moved with its own tools (UI or API), not by vatic; "
            "servers that follow the stage pick the change up",
            stage="load",
        )

    def read_file(self, ref: ModelRef | str, name: str) -> bytes | None:
        """The content of file ``name`` at the top of the artifact folder of ``ref`` (a version's
        ``metrics.json``, ``profile.json``), None when the version has no such file. Raises ``ModelNotFound``
        for an unknown reference. Backends read the one file where they can; this default fetches the folder."""
        with tempfile.TemporaryDirectory(prefix=".vatic-read-") as tmp:
            model = self.resolve(ref)
            self._download(model, Path(tmp))
            path = Path(tmp) / name
            return path.read_bytes() if path.is_file() else None

    @abstractmethod
    def _download(self, model: ResolvedModel, staging: Path) -> None:
        """Copy the artifact files of ``model`` into ``staging`` (an empty folder), as plain files.

        Raise ``ArtifactRejected`` for paths leaving the backend's root and for anything but plain files.
        """

    def fetch(
        self, ref: ModelRef | str, dest: str | os.PathLike[str], *, pins: Iterable[ArtifactPin] = ()
    ) -> MaterializedModel:
        """Materialize the artifact folder of ``ref`` at ``dest`` after verifying it.

        ``dest`` must not exist or be an empty folder; its parent is created. On any error nothing is left
        at ``dest``. Raises ``ArtifactRejected`` (a ``ConfigError``) for a pin mismatch, an unpinned pickle or
        an escaping path, ``ModelNotFound`` for an unknown reference.
        """
        target = Path(dest)
        if target.is_symlink() or (target.exists() and (not target.is_dir() or any(target.iterdir()))):
            raise ConfigError(f"destination {target} exists and is not an empty folder", stage="load")
        model = self.resolve(ref)
        pins = tuple(pins)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            self._download(model, staging)
            files = folder_manifest(staging)
            if not files:
                raise ConfigError(f"model {model.name}:{model.version} has no files", stage="load")
            digest = verify_artifact(files, pins, model=f"{model.name}:{model.version}")
            staging.chmod(0o755)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return MaterializedModel(
            name=model.name, version=model.version, stage=model.stage, path=target, digest=digest, files=files
        )


# --- backends by name ---------------------------------------------------------------------------------------

#: backend name -> factory, or "module:attribute" imported on first use (so that the model-server image
#: needs no Comet or MLflow client unless the service config asks for it)
_BACKENDS: dict[str, Callable[..., ModelRegistry] | str] = {
    "local": "vatic.connectors.registry.local:LocalFolderRegistry",
    "comet": "vatic.connectors.registry.comet:CometRegistry",
    "mlflow": "vatic.connectors.registry.mlflow:MlflowRegistry",
}


def register_backend(name: str, factory: Callable[..., ModelRegistry] | str) -> None:
    """Register a backend ``factory(**options) -> ModelRegistry``, or a ``"module:attribute"`` path to one."""
    _check_name("backend", name)
    _BACKENDS[name] = factory


def available_backends() -> tuple[str, ...]:
    """Names accepted by :func:`open_registry`."""
    return tuple(sorted(_BACKENDS))


def open_registry(backend: str = "local", /, **options: Any) -> ModelRegistry:
    """The registry backend ``backend`` built with ``options`` (``local``: ``root=...``).

    Unknown backends, backends whose client library is not installed and bad options raise ``ConfigError``.
    """
    factory = _BACKENDS.get(backend)
    if factory is None:
        raise ConfigError(
            f"unknown model registry backend {backend!r}; available: {', '.join(available_backends())}",
            stage="load",
        )
    if isinstance(factory, str):
        module_name, _, attribute = factory.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"model registry backend {backend!r} is not available: {exc}", stage="load") from exc
        _BACKENDS[backend] = factory
    try:
        inspect.signature(factory).bind(**options)
    except TypeError as exc:
        raise ConfigError(f"bad options for model registry backend {backend!r}: {exc}", stage="load") from exc
    return factory(**options)
