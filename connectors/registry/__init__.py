"""Model registries: resolve a model reference and materialize its verified artifact folder.

Runs in both environments (no Feast, no ML library imports)::

    registry = open_registry("local", root="/models")
    model = registry.fetch("fraud@production", "/srv/models/fraud", pins=[ArtifactPin(sha, "model.joblib")])

Backends by name: ``local`` (:class:`LocalFolderRegistry`), ``comet`` (:class:`CometRegistry`, needs comet-ml)
and ``mlflow`` (:class:`MlflowRegistry`, needs mlflow); more plug in through :func:`register_backend`. The Comet
and MLflow clients are imported on first use only, so this package imports in both environments. Every backend
verifies the same way (:meth:`ModelRegistry.fetch`): sha256 pins are checked, and pickle/joblib files are refused
unless pinned, before anything reaches the destination. From the service config's ``registry:`` section:
:func:`registry_from_spec` and :func:`fetch_from_spec`.
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
from vatic.connectors.registry.comet import CometRegistry
from vatic.connectors.registry.digest import PICKLE_SUFFIXES, file_sha256, folder_manifest, is_pickle, manifest_digest
from vatic.connectors.registry.local import STAGE_FILES, LocalFolderRegistry
from vatic.connectors.registry.mlflow import MlflowRegistry
from vatic.connectors.registry.spec import (
    RegistrySpecLike,
    fetch_from_spec,
    pins_from_spec,
    refs_from_spec,
    registry_from_spec,
    resolve_from_spec,
    version_key,
)

__all__ = [
    "PICKLE_SUFFIXES",
    "STAGE_FILES",
    "ArtifactPin",
    "CometRegistry",
    "LocalFolderRegistry",
    "MaterializedModel",
    "MlflowRegistry",
    "ModelRef",
    "ModelRegistry",
    "RegistrySpecLike",
    "ResolvedModel",
    "available_backends",
    "fetch_from_spec",
    "file_sha256",
    "folder_manifest",
    "is_pickle",
    "manifest_digest",
    "open_registry",
    "pins_from_spec",
    "refs_from_spec",
    "register_backend",
    "registry_from_spec",
    "resolve_from_spec",
    "verify_artifact",
    "version_key",
]
