"""``CometRegistry``: models in a Comet ML model registry (backend ``comet``), through the real ``comet_ml`` client.

``comet_ml`` is imported on first use only (it is installed in the model-server environment, not in the
pipeline one). Mapping of :class:`ModelRef` onto Comet's registry (``comet_ml.API().get_model(workspace, name)``):

* ``name:version``: that version (Comet versions are semantic versions such as ``1.2.0``);
* ``name@stage``: the newest version whose Comet *status* (``Production``, ``Staging``, ...; the successor of
  Comet's deprecated "stages") is ``stage``, or that carries ``stage`` as a *tag*; both as spelled in Comet
  (the server compares them, case-sensitively);
* ``name``: the newest version. "Newest" is :func:`~vatic.connectors.registry.spec.version_key` order.

Files come from ``Model.download(version, staging)``: Comet-hosted assets, and remote assets synced from S3/GCS.
Asset file names are checked first (an absolute name or one with ``..`` is ``ArtifactRejected``,
``path_escape``), and an asset the client skipped (a remote asset with another URI scheme) is a ``ConfigError``:
a model folder is never silently incomplete.

Configuration: ``workspace`` (required); ``url``, Comet's API base URL (``https://www.comet.com/clientlib/`` for
the cloud; default: comet_ml's own configuration, ``COMET_URL_OVERRIDE`` or ``~/.comet.config``). comet_ml reads
its server URL from its configuration only, so a given ``url`` is applied as ``COMET_URL_OVERRIDE`` while this
backend's calls run, under a process-wide lock. The API key is ``api_key`` or ``COMET_API_KEY``; it is kept as a
``SecretStr``, handed only to comet_ml (whose logging redacts it) and never put in a message.

Before the first import of comet_ml this module sets, unless already set, ``COMET_DISABLE_AUTO_LOGGING=1``
(comet_ml would otherwise install import hooks that patch scikit-learn, LightGBM, XGBoost, ... in the model
server) and ``COMET_ERROR_TRACKING_ENABLE=false`` (no reports of client errors to Comet's error tracker).

Errors: no answer, a timeout, HTTP 408/429/5xx after comet_ml's own retries -> ``ServiceUnavailable``
(``Retryable``); HTTP 401/403 -> ``ConfigError`` (the key); an unknown workspace, model, version or stage (HTTP
400/404) -> ``ModelNotFound`` (a ``ConfigError``). comet_ml's retries follow its settings
``COMET_HTTP_SESSION_RETRY_TOTAL`` (default 3) and ``COMET_HTTP_SESSION_RETRY_BACKOFF_FACTOR`` (default 2).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

from pydantic import SecretStr

from vatic.connectors.http import retry_after
from vatic.connectors.registry.base import ModelRef, ModelRegistry, ResolvedModel, _check_name, model_not_found
from vatic.connectors.registry.spec import version_key
from vatic.schemas.errors import ArtifactRejected, ConfigError, ServiceUnavailable, VaticError

__all__ = ["API_KEY_ENV", "IMPORT_DEFAULTS", "URL_ENV", "CometRegistry"]

#: the environment variable holding the Comet API key
API_KEY_ENV = "COMET_API_KEY"
#: comet_ml's setting for its server URL (``comet.url_override``)
URL_ENV = "COMET_URL_OVERRIDE"
#: set (if unset) before comet_ml is first imported; see the module docstring. They only work if they are set
#: before comet_ml is imported for the first time in the process, by anyone.
IMPORT_DEFAULTS = {"COMET_DISABLE_AUTO_LOGGING": "1", "COMET_ERROR_TRACKING_ENABLE": "false"}
#: comet_ml reads its URL from process-wide configuration: one backend call at a time touches it
_LOCK = threading.RLock()

T = TypeVar("T")


def _comet_ml() -> Any:
    for name, value in IMPORT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    try:
        return importlib.import_module("comet_ml")
    except ImportError as exc:  # pragma: no cover - checked in __init__ already
        raise ConfigError(f"the comet registry backend needs comet-ml: {exc}", stage="load") from exc


def _unavailable(message: str, *, retry_after: float | None = None) -> ServiceUnavailable:
    err = ServiceUnavailable(message, service="comet", retry_after=retry_after)
    err.stage = "load"
    return err


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


class CometRegistry(ModelRegistry):
    """Models of one Comet workspace (see the module docstring).

    ``ConfigError`` at construction for an empty workspace, a ``url`` that is not http(s), a missing API key or a
    missing comet-ml installation. Nothing is contacted before the first ``resolve``/``versions``/``fetch``.
    """

    backend = "comet"

    def __init__(self, workspace: str, *, url: str | None = None, api_key: str | SecretStr | None = None) -> None:
        if not isinstance(workspace, str) or not workspace.strip():
            raise ConfigError("the comet registry backend needs a workspace", stage="load")
        if url is not None and (urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc):
            raise ConfigError(
                f"Comet URL {url!r} must be an http(s) URL such as https://www.comet.com/clientlib/", stage="load"
            )
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        secret = key if isinstance(key, SecretStr) else SecretStr(key or "")
        if not secret.get_secret_value().strip():
            raise ConfigError(f"the comet registry backend needs an API key: set {API_KEY_ENV}", stage="load")
        if importlib.util.find_spec("comet_ml") is None:
            raise ConfigError(
                "the comet registry backend needs the comet-ml package, which is installed in the model-server "
                "environment (.venv/server), not in this one",
                stage="load",
            )
        self.workspace = workspace
        self.url = url
        self._api_key = secret
        self._models: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"CometRegistry(workspace={self.workspace!r}, url={self.url!r})"

    # --- plumbing ---------------------------------------------------------------------------------------

    @contextmanager
    def _session(self) -> Iterator[Any]:
        """Hold the lock, point comet_ml at ``self.url`` (restored afterwards), yield the comet_ml module."""
        with _LOCK:
            comet_ml = _comet_ml()
            if self.url is None:
                yield comet_ml
                return
            previous = os.environ.get(URL_ENV)
            os.environ[URL_ENV] = self.url
            try:
                yield comet_ml
            finally:
                if previous is None:
                    os.environ.pop(URL_ENV, None)
                else:
                    os.environ[URL_ENV] = previous

    def _where(self) -> str:
        return f"Comet at {self.url}" if self.url else "Comet"

    def _raise(self, exc: BaseException, *, what: str, model: str, version: str | None = None) -> NoReturn:
        """Re-raise a comet_ml/requests failure as vatic's error taxonomy (see the module docstring)."""
        if isinstance(exc, VaticError):
            raise exc
        requests = importlib.import_module("requests")
        exceptions = importlib.import_module("comet_ml.exceptions")
        for error in _chain(exc):
            response = getattr(error, "response", None)
            if isinstance(error, exceptions.CometRestApiException) and isinstance(response, requests.Response):
                status = response.status_code
                detail = getattr(error, "safe_msg", None) or response.reason or ""
                if status in (401, 403):
                    raise ConfigError(
                        f"{self._where()} refused the API key for {what} (HTTP {status}); check {API_KEY_ENV} "
                        f"and the key's access to workspace {self.workspace!r}",
                        stage="load",
                    ) from None
                if status in (408, 429) or status >= 500:
                    raise _unavailable(
                        f"{self._where()} answered HTTP {status} for {what}: {detail}",
                        retry_after=retry_after(response.headers.get("Retry-After")),
                    ) from exc
                raise model_not_found(
                    f"{what} not found in {self._where()} (HTTP {status}: {detail})", model=model, version=version
                ) from exc
            if isinstance(error, requests.ConnectionError | requests.Timeout):
                raise _unavailable(f"{self._where()} could not be reached for {what}: {type(error).__name__}") from exc
            if isinstance(error, exceptions.BackendVersionTooOld):
                raise ConfigError(
                    f"{self._where()} is too old for the model registry API: {error}", stage="load"
                ) from exc
            if isinstance(error, exceptions.CometException) and "could not parse backend version" in str(error):
                # comet_ml swallows the cause (logged as a warning): no answer, or not a Comet server.
                raise _unavailable(
                    f"{self._where()} did not answer its version check for {what}: it is down, or the URL "
                    f"({URL_ENV} / registry.uri) is not a Comet server"
                ) from exc
        raise ConfigError(
            f"unexpected answer from {self._where()} for {what}: {type(exc).__name__}: {exc}", stage="load"
        ) from exc

    def _call(self, what: str, name: str, version: str | None, fn: Callable[[Any], T]) -> T:
        """``fn(comet_model)`` inside a session, errors mapped; the ``Model`` object is cached per name."""
        with self._session() as comet_ml:
            try:
                model = self._models.get(name)
                if model is None:
                    api = comet_ml.API(api_key=self._api_key.get_secret_value(), cache=False)
                    model = api.get_model(self.workspace, name)
                    self._models[name] = model
                return fn(model)
            except Exception as exc:
                self._raise(exc, what=what, model=name, version=version)

    def _find(self, name: str, **filters: str) -> list[str]:
        what = f"model {name!r} of workspace {self.workspace!r}"
        found = self._call(what, name, None, lambda model: model.find_versions(**filters))
        return [str(version) for version in found]

    # --- ModelRegistry ----------------------------------------------------------------------------------

    def versions(self, name: str) -> list[str]:
        """All versions of ``name``, oldest first (:func:`version_key` order)."""
        _check_name("name", name)
        return sorted(self._find(name), key=version_key)

    def resolve(self, ref: ModelRef | str) -> ResolvedModel:
        """See :meth:`ModelRegistry.resolve` and the module docstring; ``location`` is
        ``comet://<workspace>/<model>/<version>``."""
        ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
        where = f"Comet workspace {self.workspace!r}"
        if ref.version is not None:
            version = ref.version
            what = f"version {version!r} of model {ref.name!r} in workspace {self.workspace!r}"
            details = self._call(what, ref.name, version, lambda model: model.get_details(version))
            if not isinstance(details, dict) or str(details.get("version", version)) != version:
                raise model_not_found(f"model {ref.name!r} has no version {version!r} in {where}", model=ref.name)
        elif ref.stage is not None:
            stage = ref.stage
            candidates = set(self._find(ref.name, status=stage)) | set(self._find(ref.name, tag=stage))
            if not candidates:
                raise model_not_found(
                    f"model {ref.name!r} has no version with status or tag {stage!r} in {where}", model=ref.name
                )
            version = max(candidates, key=version_key)
        else:
            candidates = set(self._find(ref.name))
            if not candidates:
                raise model_not_found(f"model {ref.name!r} has no versions in {where}", model=ref.name)
            version = max(candidates, key=version_key)
        return ResolvedModel(
            name=ref.name,
            version=version,
            stage=ref.stage,
            location=f"comet://{self.workspace}/{ref.name}/{version}",
        )

    def _download(self, model: ResolvedModel, staging: Path) -> None:
        what = f"the files of model {model.name}:{model.version} in workspace {self.workspace!r}"
        assets = self._call(what, model.name, model.version, lambda m: list(m.get_assets(model.version)))
        expected = [_asset_path(asset, model) for asset in assets]
        self._call(what, model.name, model.version, lambda m: m.download(model.version, str(staging), expand=True))
        missing = [path for path in expected if not (staging / path).is_file()]
        if missing:
            raise ConfigError(
                f"model {model.name}:{model.version}: comet_ml did not download {missing} (remote assets that are "
                "not synced from S3 or GCS are not downloadable); the model folder would be incomplete",
                stage="load",
            )


def _asset_path(asset: Any, model: ResolvedModel) -> str:
    """The relative path an asset will be written to, or ``ArtifactRejected`` if it leaves the folder."""
    name = asset.get("fileName") if isinstance(asset, dict) else None
    if not isinstance(name, str) or not name:
        raise ConfigError(f"model {model.name}:{model.version}: an asset without a file name: {asset!r}", stage="load")
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or "\\" in name or "\x00" in name:
        raise ArtifactRejected(
            f"model {model.name}:{model.version}: asset file name {name!r} would be written outside the model folder",
            path=name,
            reason="path_escape",
        )
    return pure.as_posix()
