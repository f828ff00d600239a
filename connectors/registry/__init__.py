"""Model registries: resolve a model reference and materialize its verified artifact folder.

Runs in both environments (no Feast, no ML library imports)::

    registry = open_registry("local", root="/models")
    model = registry.fetch("fraud@production", "/srv/models/fraud", pins=[ArtifactPin(sha, "model.joblib")])

Backends by name: ``local`` (:class:`LocalFolderRegistry`); ``comet`` and ``mlflow`` plug in later through
:func:`register_backend`. Every backend verifies the same way (:meth:`ModelRegistry.fetch`): sha256 pins are
checked, and pickle/joblib files are refused unless pinned, before anything reaches the destination.
"""

from vatic.connectors.registry.base import (
    ArtifactPin,
    MaterializedModel,
    ModelRef,
    ModelRegistry,
    ResolvedModel,
    available_backends,
    open_registry,
    register_backend,
    verify_artifact,
)
from vatic.connectors.registry.digest import PICKLE_SUFFIXES, file_sha256, folder_manifest, is_pickle, manifest_digest
from vatic.connectors.registry.local import STAGE_FILES, LocalFolderRegistry

__all__ = [
    "PICKLE_SUFFIXES",
    "STAGE_FILES",
    "ArtifactPin",
    "LocalFolderRegistry",
    "MaterializedModel",
    "ModelRef",
    "ModelRegistry",
    "ResolvedModel",
    "available_backends",
    "file_sha256",
    "folder_manifest",
    "is_pickle",
    "manifest_digest",
    "open_registry",
    "register_backend",
    "verify_artifact",
]
