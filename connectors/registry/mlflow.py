"""``MlflowRegistry``: models in an MLflow model registry (backend ``mlflow``), through ``mlflow.MlflowClient``.

``mlflow`` is imported on first use only (it is installed in the model-server environment, not in the pipeline
one). Mapping of :class:`ModelRef` onto the registry (MLflow 3: aliases replace the deprecated stages):

* ``name:version``: that version (MLflow versions are integers);
* ``name@alias``: the version the alias points to (``get_model_version_by_alias``); ``name@latest`` is the
  newest version, as in MLflow's own ``models:/name/latest`` (``latest`` cannot be an alias in MLflow). Legacy
  stages (``Staging``, ``Production``) are not read: set an alias instead;
* ``name``: the newest version (highest number) whose registration finished (status ``READY``).

A version still registering (``PENDING_REGISTRATION``) is ``ServiceUnavailable`` (retry later); one whose
registration failed is ``ConfigError``. ``location`` is the version's artifact URI as the registry reports it
(``get_model_version_download_uri``), and its files are downloaded with ``mlflow.artifacts.download_artifacts``
against this backend's tracking URI, never against MLflow's process-wide default (which would create a local
``mlflow.db`` in the working directory).

Before the first import of mlflow this module sets ``MLFLOW_DISABLE_TELEMETRY=true`` unless it is already set: a
model server fetching its model does not send usage events to MLflow's telemetry service.

Configuration: ``tracking_uri`` (default ``MLFLOW_TRACKING_URI``; required), ``registry_uri`` (default
``MLFLOW_REGISTRY_URI``, else the tracking URI). Credentials and HTTP behaviour come from MLflow's own
environment variables (``MLFLOW_TRACKING_TOKEN``, ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``,
``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` (default 7, exponential backoff), ``MLFLOW_HTTP_REQUEST_TIMEOUT``).

Errors, after MLflow's own retries: no answer, a timeout, a 5xx or 429 -> ``ServiceUnavailable`` (``Retryable``);
an unknown model, version or alias -> ``ModelNotFound`` (a ``ConfigError``); 401/403, a malformed request, a URL
that is not an MLflow server -> ``ConfigError``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from vatic.connectors.registry.base import ModelRef, ModelRegistry, ResolvedModel, _check_name, model_not_found
from vatic.schemas.errors import ArtifactRejected, ConfigError, ServiceUnavailable, VaticError

__all__ = ["MlflowRegistry"]

T = TypeVar("T")

#: the stage name that means "the newest version" rather than an alias
LATEST = "latest"
#: MLflow error codes (``MlflowException.error_code``) that mean "no such model, version or alias"
_NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"}
#: error codes that a later attempt may not get: everything else is a configuration problem
_TRANSIENT = {
    "INTERNAL_ERROR",
    "TEMPORARILY_UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "REQUEST_LIMIT_EXCEEDED",
    "RESOURCE_EXHAUSTED",
    "ABORTED",
    "CANCELLED",
    "IO_ERROR",
}


def _mlflow(module: str) -> Any:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    return importlib.import_module(module)


def _unavailable(message: str) -> ServiceUnavailable:
    err = ServiceUnavailable(message, service="mlflow")
    err.stage = "load"
    return err


class MlflowRegistry(ModelRegistry):
    """Models of one MLflow registry (see the module docstring).

    ``ConfigError`` at construction without a tracking URI or without the mlflow package. Nothing is contacted
    before the first ``resolve``/``versions``/``fetch``.
    """

    backend = "mlflow"

    def __init__(self, tracking_uri: str | None = None, *, registry_uri: str | None = None) -> None:
        tracking = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not tracking:
            raise ConfigError(
                "the mlflow registry backend needs a tracking URI: set registry.uri or MLFLOW_TRACKING_URI",
                stage="load",
            )
        if importlib.util.find_spec("mlflow") is None:
            raise ConfigError(
                "the mlflow registry backend needs the mlflow package, which is installed in the model-server "
                "environment (.venv/server), not in this one",
                stage="load",
            )
        self.tracking_uri = tracking
        self.registry_uri = registry_uri or os.environ.get("MLFLOW_REGISTRY_URI") or tracking
        self._client: Any = None

    def __repr__(self) -> str:
        return f"MlflowRegistry({self.tracking_uri!r}, registry_uri={self.registry_uri!r})"

    # --- plumbing ---------------------------------------------------------------------------------------

    def _mlflow_client(self) -> Any:
        if self._client is None:
            tracking = _mlflow("mlflow.tracking")
            self._client = tracking.MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
        return self._client

    def _raise(self, exc: BaseException, *, what: str, model: str, version: str | None = None) -> NoReturn:
        """Re-raise an MLflow/requests/OS failure as vatic's error taxonomy (see the module docstring)."""
        if isinstance(exc, VaticError):
            raise exc
        exceptions = _mlflow("mlflow.exceptions")
        requests = importlib.import_module("requests")
        where = f"MLflow at {self.registry_uri}"
        if isinstance(exc, exceptions.MlflowException):
            code = str(getattr(exc, "error_code", "INTERNAL_ERROR"))
            if code in _NOT_FOUND:
                raise model_not_found(
                    f"{what} not found in {where}: {exc.message}", model=model, version=version
                ) from exc
            if code in _TRANSIENT:
                raise _unavailable(f"{where} failed on {what} ({code}): {exc.message}") from exc
            raise ConfigError(f"{where} refused {what} ({code}): {exc.message}", stage="load") from exc
        if isinstance(exc, requests.RequestException | OSError):
            raise _unavailable(f"{where} failed on {what}: {type(exc).__name__}: {exc}") from exc
        raise ConfigError(
            f"unexpected failure of {where} on {what}: {type(exc).__name__}: {exc}", stage="load"
        ) from exc

    def _call(self, what: str, model: str, version: str | None, fn: Callable[[Any], T]) -> T:
        """``fn(client)`` with errors mapped onto the taxonomy."""
        try:
            return fn(self._mlflow_client())
        except Exception as exc:
            self._raise(exc, what=what, model=model, version=version)

    def _all_versions(self, name: str) -> list[Any]:
        """All model versions of ``name`` (``ModelNotFound`` if the model does not exist)."""
        what = f"the versions of model {name!r}"
        found = self._call(
            what, name, None, lambda client: list(client.search_model_versions(filter_string=f"name = '{name}'"))
        )
        if not found:  # no versions, or no such model: ask which
            self._call(f"model {name!r}", name, None, lambda client: client.get_registered_model(name))
        return found

    # --- ModelRegistry ----------------------------------------------------------------------------------

    def versions(self, name: str) -> list[str]:
        """All versions of ``name`` (any registration status), oldest (lowest number) first."""
        _check_name("name", name)
        return sorted((str(v.version) for v in self._all_versions(name)), key=int)

    def resolve(self, ref: ModelRef | str) -> ResolvedModel:
        """See :meth:`ModelRegistry.resolve` and the module docstring; ``location`` is the artifact URI."""
        ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
        name = ref.name
        if ref.version is not None:
            version = ref.version
            if not version.isdigit():
                raise ConfigError(f"MLflow model versions are integers, not {version!r} (model {name!r})", stage="load")
            what = f"version {version} of model {name!r}"
            found = self._call(what, name, version, lambda client: client.get_model_version(name, version))
        elif ref.stage is not None and ref.stage != LATEST:
            alias = ref.stage
            what = f"alias {alias!r} of model {name!r}"
            try:
                found = self._mlflow_client().get_model_version_by_alias(name, alias)
            except Exception as exc:
                # an unknown alias of an existing model is INVALID_PARAMETER_VALUE: look at the model first
                if getattr(exc, "error_code", None) == "INVALID_PARAMETER_VALUE":
                    self._call(f"model {name!r}", name, None, lambda client: client.get_registered_model(name))
                    raise model_not_found(f"model {name!r} has no alias {alias!r} in MLflow", model=name) from exc
                self._raise(exc, what=what, model=name)
        else:
            ready = [v for v in self._all_versions(name) if str(v.status) == "READY"]
            if not ready:
                raise model_not_found(f"model {name!r} has no version whose registration finished", model=name)
            found = max(ready, key=lambda v: int(v.version))
        version = str(found.version)
        status = str(found.status)
        if status == "PENDING_REGISTRATION":
            raise _unavailable(f"version {version} of model {name!r} is still being registered in MLflow")
        if status != "READY":
            raise ConfigError(
                f"version {version} of model {name!r} is not usable: MLflow registration status {status}"
                + (f" ({found.status_message})" if getattr(found, "status_message", None) else ""),
                stage="load",
            )
        what = f"the artifact location of version {version} of model {name!r}"
        location = self._call(what, name, version, lambda client: client.get_model_version_download_uri(name, version))
        return ResolvedModel(name=name, version=version, stage=ref.stage, location=str(location))

    def _download(self, model: ResolvedModel, staging: Path) -> None:
        what = f"the files of version {model.version} of model {model.name!r} ({model.location})"
        artifacts = _mlflow("mlflow.artifacts")
        holder = Path(tempfile.mkdtemp(prefix=".mlflow-", dir=staging.parent))
        try:
            try:
                local = artifacts.download_artifacts(
                    artifact_uri=model.location,
                    dst_path=str(holder),
                    tracking_uri=self.tracking_uri,
                    registry_uri=self.registry_uri,
                )
            except Exception as exc:
                self._raise(exc, what=what, model=model.name, version=model.version)
            # download_artifacts writes <holder>/<last path component>/...: move its content into staging
            downloaded = Path(local).resolve()
            if not downloaded.is_relative_to(holder.resolve()):
                raise ConfigError(f"MLflow wrote {what} outside the download folder ({downloaded})", stage="load")
            if downloaded.is_dir():
                for entry in downloaded.iterdir():
                    os.replace(entry, staging / entry.name)
            else:
                os.replace(downloaded, staging / downloaded.name)
        finally:
            shutil.rmtree(holder, ignore_errors=True)
        _require_plain_files(staging, model)


def _require_plain_files(folder: Path, model: ResolvedModel) -> None:
    """``ArtifactRejected`` (``unsupported_file``) for a symlink, device or pipe in ``folder``: an artifact store
    on a local file system could hand one over, and the model server would follow it."""
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            mode = path.lstat().st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                relative = path.relative_to(folder).as_posix()
                raise ArtifactRejected(
                    f"model {model.name}:{model.version}: {relative} is not a plain file or folder",
                    path=relative,
                    reason="unsupported_file",
                )
