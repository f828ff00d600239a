"""``LocalFolderRegistry``: models in a folder tree, the default registry backend (``local``).

Layout::

    <root>/
      fraud/
        stages.json          # optional: {"production": "3", "staging": "4"} (or stages.yaml / stages.yml)
        3/                   # one folder per version: the artifact folder, copied as is
          model.joblib
          model-settings.json
        4/
          ...

Every path read must stay inside ``<root>`` once symlinks are resolved: a model, version or stages file that
is a symlink out of the root, or a symlinked file inside an artifact pointing out of it, is refused
(``ArtifactRejected``, reason ``path_escape``). Symlinked folders inside an artifact, devices and pipes are
refused too (``unsupported_file``); symlinked files inside the root are copied as plain files.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import yaml

from vatic.connectors.registry.base import ModelRef, ModelRegistry, ResolvedModel, _check_name, model_not_found
from vatic.schemas.errors import ArtifactRejected, ConfigError

__all__ = ["STAGE_FILES", "LocalFolderRegistry"]

#: names of the stage alias file of a model folder (at most one may exist)
STAGE_FILES = ("stages.json", "stages.yaml", "stages.yml")


def _version_order(version: str) -> tuple[int, int, str]:
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


class LocalFolderRegistry(ModelRegistry):
    """Models under ``root`` (see the module docstring). ``root`` must be an existing folder (``ConfigError``).

    Resolution: a version names its folder; a stage is looked up in the model's stages file; with neither,
    the highest numeric version is taken (non-numeric versions are only reached by name or stage).
    """

    backend = "local"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        path = Path(root)
        if not path.is_dir():
            raise ConfigError(f"model registry root {path} is not a folder", stage="load")
        self.root = path.resolve()

    def __repr__(self) -> str:
        return f"LocalFolderRegistry({str(self.root)!r})"

    def _inside(self, path: Path) -> Path:
        """``path`` with symlinks resolved, or ``ArtifactRejected`` if that leaves the root."""
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError) as exc:  # missing, or a symlink loop
            raise ArtifactRejected(
                f"{path} cannot be resolved: {exc}", path=str(path), reason="unsupported_file"
            ) from exc
        if not real.is_relative_to(self.root):
            raise ArtifactRejected(
                f"{path} resolves to {real}, outside the model registry root {self.root}",
                path=str(path),
                reason="path_escape",
            )
        return real

    def _model_dir(self, name: str) -> Path:
        model_dir = self.root / _check_name("name", name)
        if not model_dir.is_symlink() and not model_dir.exists():
            raise model_not_found(f"model {name!r} not found in {self.root}", model=name)
        real = self._inside(model_dir)
        if not real.is_dir():
            raise model_not_found(f"model {name!r} in {self.root} is not a folder", model=name)
        return real

    def stages(self, name: str) -> dict[str, str]:
        """Stage -> version of model ``name`` from its stages file (``{}`` without one).

        ``ConfigError`` for several stages files, unreadable YAML/JSON or entries that are not
        ``stage: version`` names.
        """
        model_dir = self._model_dir(name)
        present = [f for f in STAGE_FILES if (model_dir / f).is_symlink() or (model_dir / f).exists()]
        if not present:
            return {}
        if len(present) > 1:
            raise ConfigError(f"model {name!r} has several stage files {present}; keep one", stage="load")
        path = self._inside(model_dir / present[0])
        try:
            data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read stage file {path}: {exc}", stage="load") from exc
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigError(f"stage file {path} must map stages to versions", stage="load")
        stages: dict[str, str] = {}
        for stage, version in data.items():
            if isinstance(version, bool) or not isinstance(version, str | int) or not isinstance(stage, str):
                raise ConfigError(f"stage file {path}: bad entry {stage!r}: {version!r}", stage="load")
            stages[_check_name("stage", stage)] = _check_name("version", str(version))
        return stages

    def set_stage(self, name: str, stage: str, version: str) -> str | None:
        """Rewrite the model's stages file with ``stage: version`` (``stages.json`` unless a YAML one exists),
        atomically: a server reading it sees the old or the new file, never a part."""
        _check_name("stage", stage)
        if version not in self.versions(name):
            raise model_not_found(
                f"model {name!r} has no version {version!r} in {self.root}", model=name, version=version
            )
        stages = self.stages(name)
        before = stages.get(stage)
        stages[stage] = version
        self._write_stages(name, stages)
        return before

    def _write_stages(self, name: str, stages: dict[str, str]) -> None:
        model_dir = self._model_dir(name)
        target = next((model_dir / f for f in STAGE_FILES if (model_dir / f).exists()), model_dir / STAGE_FILES[0])
        text = json.dumps(stages, indent=2) + "\n" if target.suffix == ".json" else yaml.safe_dump(stages)
        staging = target.with_name(f".{target.name}.tmp")
        staging.write_text(text, encoding="utf-8")
        os.replace(staging, target)

    def clear_stage(self, name: str, stage: str) -> str | None:
        """Remove ``stage`` from the model's stages file, atomically (see :meth:`set_stage`)."""
        _check_name("stage", stage)
        stages = self.stages(name)
        before = stages.pop(stage, None)
        if before is not None:
            self._write_stages(name, stages)
        return before

    def versions(self, name: str) -> list[str]:
        """Version folders of model ``name``: numeric ones in numeric order, then the others by name."""
        model_dir = self._model_dir(name)
        found = [
            entry.name
            for entry in model_dir.iterdir()
            if entry.name not in STAGE_FILES and not entry.name.startswith(".") and entry.is_dir()
        ]
        return sorted(found, key=_version_order)

    def resolve(self, ref: ModelRef | str) -> ResolvedModel:
        """See :meth:`ModelRegistry.resolve`; the location is the version folder's resolved path."""
        ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
        model_dir = self._model_dir(ref.name)
        if ref.stage is not None:
            version = self.stages(ref.name).get(ref.stage)
            if version is None:
                raise model_not_found(f"model {ref.name!r} has no stage {ref.stage!r}", model=ref.name)
        elif ref.version is not None:
            version = ref.version
        else:
            numeric = [v for v in self.versions(ref.name) if v.isdigit()]
            if not numeric:
                raise model_not_found(
                    f"model {ref.name!r} has no numeric version to take as the latest; name a version or stage",
                    model=ref.name,
                )
            version = numeric[-1]
        version_dir = model_dir / version
        if not version_dir.is_symlink() and not version_dir.exists():
            raise model_not_found(f"model {ref.name!r} has no version {version!r}", model=ref.name, version=version)
        real = self._inside(version_dir)
        if not real.is_dir():
            raise model_not_found(
                f"model {ref.name!r} version {version!r} is not a folder", model=ref.name, version=version
            )
        return ResolvedModel(name=ref.name, version=version, stage=ref.stage, location=str(real))

    def read_file(self, ref: ModelRef | str, name: str) -> bytes | None:
        """See :meth:`ModelRegistry.read_file`: read in place (the version folder is not copied)."""
        model = self.resolve(ref)
        path = Path(model.location) / name
        if "/" in name or not path.is_file():
            return None
        return self._inside(path).read_bytes()

    def _download(self, model: ResolvedModel, staging: Path) -> None:
        source = self._inside(Path(model.location))
        for dirpath, dirnames, filenames in os.walk(source):
            base = Path(dirpath)
            relative = base.relative_to(source)
            for name in dirnames:
                if (base / name).is_symlink():
                    raise ArtifactRejected(
                        f"{base / name} is a symlinked folder; artifact folders must hold plain folders",
                        path=(relative / name).as_posix(),
                        reason="unsupported_file",
                    )
                (staging / relative / name).mkdir()
            for name in filenames:
                path = base / name
                rel = (relative / name).as_posix()
                if path.is_symlink():
                    path = self._inside(path)
                _copy_plain_file(path, staging / relative / name, rel)


def _copy_plain_file(source: Path, target: Path, relative: str) -> None:
    """Copy a regular file without following a final symlink (raced in) and without blocking on a FIFO."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise ArtifactRejected(f"cannot open {source}: {exc}", path=relative, reason="unsupported_file") from exc
    with os.fdopen(fd, "rb") as reader:
        if not stat.S_ISREG(os.fstat(reader.fileno()).st_mode):
            raise ArtifactRejected(f"{source} is not a regular file", path=relative, reason="unsupported_file")
        with open(target, "xb") as writer:
            shutil.copyfileobj(reader, writer, 1 << 20)
