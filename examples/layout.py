"""Where the use cases live: source folders (service configs, Feast repos) and generated state (data, stores, models).

Generated state goes under the local stack's home (``$VATIC_STACK_HOME``, by default ``.vatic/`` of the checkout,
see :class:`~vatic.cli.stack.settings.StackSettings`)::

    <home>/usecases/<case>/data/*.parquet       generated history, feature tables, labelled training set
    <home>/usecases/<case>/feast/registry.db    Feast registry (file)
    <home>/usecases/<case>/feast/online_store.db  Feast online store (SQLite)
    <home>/usecases/<case>/prepare.json         what ``prepare`` did last (fingerprints of each step)
    <home>/registry/<model>/<version>/           trained models (LocalFolderRegistry layout)

The checked-in ``feature_store.yaml`` of each use case names its registry and online store as
``${VATIC_STACK_HOME}/usecases/<case>/feast/...``; Feast expands environment variables in that file, so a
process that opens the repository with Feast's own loader needs ``VATIC_STACK_HOME`` set
(:func:`export_home` sets it to the stack's home when it is not). :func:`feast_config_text` substitutes it
explicitly instead.

Imports only the standard library, PyYAML and the stack settings (pydantic): usable in both environments.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import yaml

from vatic.cli.stack.settings import StackSettings
from vatic.schemas.errors import ConfigError

Case = Literal["fraud_detection", "product_categorization"]
CASES: tuple[Case, ...] = ("fraud_detection", "product_categorization")
HOME_VARIABLE = "VATIC_STACK_HOME"
SOURCE = Path(__file__).resolve().parent


def stack_home() -> Path:
    """The local stack's home (``$VATIC_STACK_HOME`` or the default), absolute."""
    return StackSettings().home.expanduser().resolve()


def case_home(case: Case, home: Path | None = None) -> Path:
    """Generated state of one use case: ``<home>/usecases/<case>``."""
    return (home or stack_home()) / "usecases" / case


def registry_root(home: Path | None = None) -> Path:
    """The local model registry written by ``prepare``: ``<home>/model-registry`` for an explicit ``home``;
    otherwise the stack settings' model registry (``$VATIC_STACK_MODEL_REGISTRY``, default
    ``<stack home>/model-registry``)."""
    if home is not None:
        return home / "model-registry"
    return StackSettings().model_registry_root.expanduser().resolve()


def service_dir(case: Case) -> Path:
    """The service config folder of a use case (``service.yaml`` and its overlays)."""
    return SOURCE / case / "service"


def feature_repo_dir(case: Case) -> Path:
    """The Feast feature repository of a use case (``feature_store.yaml`` and ``definitions.py``)."""
    return SOURCE / case / "features"


def feast_config_text(case: Case, home: Path | None = None) -> str:
    """The use case's ``feature_store.yaml`` with ``${VATIC_STACK_HOME}`` replaced by ``home``."""
    text = (feature_repo_dir(case) / "feature_store.yaml").read_text(encoding="utf-8")
    return text.replace("${" + HOME_VARIABLE + "}", str(home or stack_home()))


def export_home(home: Path | None = None) -> Path:
    """Set ``VATIC_STACK_HOME`` for Feast's loader of ``feature_store.yaml`` unless it is set; return its value."""
    value = os.environ.get(HOME_VARIABLE)
    if not value:
        value = str(home or stack_home())
        os.environ[HOME_VARIABLE] = value
    return Path(value)


def feast_config(case: Case, home: Path | None = None, redis_url: str | None = None) -> dict[str, Any]:
    """The parsed ``feature_store.yaml`` for ``home``; with ``redis_url``, its online store is that Redis."""
    raw: dict[str, Any] = yaml.safe_load(feast_config_text(case, home))
    if redis_url is not None:
        raw["online_store"] = {"type": "redis", "connection_string": redis_connection_string(redis_url)}
    return raw


def redis_connection_string(url: str) -> str:
    """Feast's Redis connection string (``host:port,db=N[,ssl=true]``) of a ``redis://`` URL. A URL with a
    password is refused (the password would be copied into Feast's configuration, which Feast prints): credentials
    come from ``VATIC_REDIS_PASSWORD`` / ``VATIC_REDIS_USERNAME``."""
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss") or not parsed.hostname:
        raise ValueError(f"not a redis:// URL: {parsed.scheme}://{parsed.hostname}...")
    if parsed.password or parsed.username:
        raise ConfigError(
            f"the Redis URL for {parsed.hostname}:{parsed.port or 6379} carries credentials: leave them out of the "
            "URL and set VATIC_REDIS_PASSWORD (and VATIC_REDIS_USERNAME)"
        )
    parts = [f"{parsed.hostname}:{parsed.port or 6379}", f"db={parsed.path.strip('/') or '0'}"]
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)
