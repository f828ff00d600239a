"""``FeatureClient``: batched online feature lookups over Feast, with deadlines and vatic's error taxonomy."""

from __future__ import annotations

import asyncio
import os
import re
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Literal, Self

from feast import FeatureStore, RepoConfig
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig, RedisType
from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import load_repo_config

from vatic.connectors.features.codec import NULL, decode_value, python_value
from vatic.connectors.features.feast_sdk import FeastSdkReader
from vatic.connectors.features.model import EntityFeatures, FeatureLookup, FeatureStatus
from vatic.connectors.features.plan import KeyedBatch, LookupPlan, ViewPlan, build_plan, key_entities, parse_refs
from vatic.connectors.features.reader import (
    OnlineReader,
    RawRow,
    RawRows,
    deadline_exceeded,
    translate_error,
)
from vatic.connectors.features.redis_direct import RedisReader
from vatic.connectors.features.redis_security import (
    RedisConnection,
    RedisSecurity,
    redis_connection,
    secure_feature_store,
)
from vatic.connectors.features.sqlite_direct import SqliteReader
from vatic.schemas.errors import ConfigError

__all__ = ["FeatureClient", "ReadPath"]

ReadPath = Literal["auto", "direct", "feast"]

_PRESENT = FeatureStatus.PRESENT
_NOT_FOUND = FeatureStatus.NOT_FOUND
_STALE = FeatureStatus.OUTSIDE_MAX_AGE
_NULL = FeatureStatus.NULL_VALUE
_MAX_PLANS = 256


_NONE_MISSING: Mapping[str, FeatureStatus] = MappingProxyType({})
#: the misses of a complete row (shared, never written to)
_NO_MISSES: dict[str, FeatureStatus] = {}
#: one stored row of a view, classified: (values aligned with the view's refs, {ref: status} of the misses,
#: the row's event time or None)
_Cell = tuple[list[Any], dict[str, FeatureStatus], float | None]


def _view_cells(view: ViewPlan, rows: list[RawRow], now: float) -> list[_Cell]:
    """Classify and convert the raw rows of one view (one per distinct key of its group)."""
    width = len(view.features)
    refs, types = view.refs, view.value_types
    not_found: _Cell = ([None] * width, dict.fromkeys(refs, _NOT_FOUND), None)
    ttl = view.ttl_s
    out: list[_Cell] = []
    for row in rows:
        if row is None:
            out.append(not_found)
            continue
        event_time, stored = row
        if ttl is not None and now - event_time > ttl:  # stale: every stored value is withheld
            out.append(
                (
                    [None] * width,
                    {ref: _NOT_FOUND if item is None else _STALE for ref, item in zip(refs, stored, strict=True)},
                    event_time,
                )
            )
            continue
        values: list[Any] = []
        missing: dict[str, FeatureStatus] = _NO_MISSES
        for ref, item, vtype in zip(refs, stored, types, strict=True):
            if type(item) is bytes:
                kind, value = decode_value(item, vtype)
            elif item is None:
                kind, value = None, None
            else:  # a parsed proto (Feast's SDK reader)
                proto: ValueProto = item  # type: ignore[assignment]
                kind = proto.WhichOneof("val") or NULL
                value = python_value(proto, kind, vtype) if kind else None
            values.append(value)
            if not kind:  # None: not stored; NULL: a stored null
                if missing is _NO_MISSES:
                    missing = {}
                missing[ref] = _NOT_FOUND if kind is None else _NULL
        out.append((values, missing, event_time))
    return out


def _with_store_timeouts(config: RepoConfig, timeout_s: float) -> RepoConfig:
    """A copy of ``config`` whose Redis connection string sets socket and connect timeouts if it does not.

    Feast's Redis store has no socket timeout by default: a hung server would block a read forever.
    """
    config = config.model_copy(deep=True)
    online = config.online_store
    if isinstance(online, RedisOnlineStoreConfig):
        _, params = RedisOnlineStore._parse_connection_string(online.connection_string)
        extra = [f"{name}={timeout_s:g}" for name in ("socket_timeout", "socket_connect_timeout") if name not in params]
        if extra:
            online.connection_string = ",".join([online.connection_string, *extra])
    return config


def redis_config(config: RepoConfig, redis_url: str) -> RepoConfig:
    """``config`` with its online store replaced by the Redis at ``redis_url`` (``redis[s]://host:port/db``).

    ``rediss://`` turns TLS on. A URL that carries a password is refused (``ConfigError``, which never quotes the
    URL): the password comes from ``VATIC_REDIS_PASSWORD`` only, so it is never in a URL that a
    command line, a log or a printed configuration shows.
    """
    from urllib.parse import urlparse

    try:
        parsed = urlparse(redis_url)
        port = parsed.port
    except ValueError:
        parsed, port = None, None
    if parsed is None or parsed.scheme not in ("redis", "rediss") or not parsed.hostname:
        shown = redis_url if "@" not in redis_url else "(a URL with credentials, not shown)"
        raise ConfigError(f"not a Redis URL: {shown!r} (expected redis://host:port/db)", stage="enrich")
    if parsed.password or parsed.username:
        endpoint = f"{parsed.hostname}:{port or 6379}"
        message = (
            f"the Redis URL of {endpoint} carries credentials: take them out of the URL and set "
            "VATIC_REDIS_PASSWORD (and VATIC_REDIS_USERNAME for an ACL user)"
        )
        raise ConfigError(message, stage="enrich")
    db = (parsed.path or "/0").lstrip("/") or "0"
    parts = [f"{parsed.hostname}:{port or 6379}", f"db={db}"]
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    online = RedisOnlineStoreConfig(connection_string=",".join(parts))
    # RepoConfig keeps the raw section in ``online_config`` and builds ``online_store`` from it lazily
    replaced = config.model_copy(deep=True)
    replaced.online_config = online
    replaced._online_store = online  # type: ignore[assignment] # declared None, set lazily by Feast
    return replaced


class FeatureClient:
    """Batched online feature lookups from a Feast feature repo (Feast 0.67), SQLite or Redis online store.

    Configuration is Feast's: a ``RepoConfig`` built in code, or a feature repo's ``feature_store.yaml``
    (:meth:`from_repo`). The client never writes to the store; ``feast apply``/``materialize`` fill it.

    Contract of :meth:`get` / :meth:`get_sync`:

    * input: entity dicts (join key -> value; keys not needed are ignored) and feature references
      ``"view:feature"``; output: a :class:`FeatureLookup` with one :class:`EntityFeatures` per entity, in order.
    * Each distinct entity key is read once per batch, whatever the repeats.
    * A miss is a status, never an error: ``NOT_FOUND`` (nothing stored), ``OUTSIDE_MAX_AGE`` (stored row older
      than the view's TTL; its value is withheld), ``NULL_VALUE`` (a stored null). Feast 0.67's SDK itself only
      reports ``PRESENT``/``NOT_FOUND`` (and ``PRESENT`` for unknown entities on Redis); the client classifies
      every read path the same way, from the stored rows' event times and values.
    * Errors: ``InvalidEntityKey`` (``DataError``) for bad join keys, ``ConfigError`` for unknown feature views
      or features or an unset store, ``FeatureStoreUnavailable`` (``Retryable``) for outages and store
      timeouts, ``DeadlineExceeded`` (``Retryable``) when the deadline passes.

    Read paths (``read_path``): ``"direct"`` reads the Redis or SQLite bytes Feast stores with Feast's own key
    serialization (fast path); ``"feast"`` calls Feast's SDK (any online store); ``"auto"`` (default) takes the
    direct path when the store supports it (SQLite; single-server Redis; no feature view versioning) and the
    SDK otherwise. Async reads use ``redis.asyncio`` (direct) or ``get_online_features_async`` (SDK) on Redis.
    SQLite has no async API and Feast's async read raises ``NotImplementedError`` for it: the direct reader
    reads batches of up to 8 distinct keys inline (cheaper than a thread hop; SQLite interrupts the query at the
    deadline) and larger ones in a small thread pool; the SDK path runs Feast's blocking call in a thread.

    ``deadline_s`` is the default deadline of one lookup. ``store_timeout_s`` (default: ``deadline_s``) sets
    Redis' ``socket_timeout``/``socket_connect_timeout`` unless the connection string sets them; it bounds
    blocking reads, which cannot be cancelled otherwise. Feature view definitions are cached per feature list:
    call :meth:`refresh` after ``feast apply`` changed them.

    The client is safe to share between threads and event loops; close it when done (:meth:`close`, or
    :meth:`aclose` from each event loop that used it).
    """

    def __init__(
        self,
        config: RepoConfig,
        *,
        read_path: ReadPath = "auto",
        deadline_s: float = 0.5,
        store_timeout_s: float | None = None,
        cache_ttl_s: float = 0.0,
        redis_security: RedisSecurity | None = None,
    ) -> None:
        if deadline_s <= 0:
            raise ConfigError(f"deadline_s must be positive, got {deadline_s}", stage="enrich")
        if read_path not in ("auto", "direct", "feast"):
            raise ConfigError(f"read_path must be 'auto', 'direct' or 'feast', got {read_path!r}", stage="enrich")
        self._deadline_s = deadline_s
        self._config = _with_store_timeouts(config, store_timeout_s or deadline_s)
        # relative registry paths resolve against the repo path (Feast's default is the working directory)
        repo_path = self._config.repo_path
        self._store = FeatureStore(repo_path=str(repo_path) if repo_path else None, config=self._config)
        self._redis = self._redis_connection(redis_security)
        self._plans: dict[tuple[str, ...], LookupPlan] = {}
        self._shared: weakref.WeakKeyDictionary[LookupPlan, Mapping[str, FeatureStatus]] = weakref.WeakKeyDictionary()
        self._reader = self._make_reader(read_path)
        if cache_ttl_s > 0:
            from vatic.connectors.features.cache import CachingReader

            self._reader = CachingReader(self._reader, cache_ttl_s)

    @classmethod
    def from_repo(
        cls,
        repo_path: str | Path,
        *,
        fs_yaml_file: str | Path | None = None,
        redis_url: str | None = None,
        **options: Any,
    ) -> Self:
        """A client for the feature repo at ``repo_path`` (its ``feature_store.yaml``, or ``fs_yaml_file``).

        ``redis_url`` (``redis://host:port/db``) replaces the repo's online store with that Redis - the same
        keys as ``feast materialize`` into that Redis writes. ``options`` are those of the constructor. A
        missing or invalid file raises ``ConfigError``.
        """
        repo = Path(repo_path)
        yaml_file = Path(fs_yaml_file) if fs_yaml_file is not None else repo / "feature_store.yaml"
        if not yaml_file.is_file():
            raise ConfigError(f"Feast config {yaml_file} not found", stage="enrich")
        unset = sorted(set(re.findall(r"\$\{(\w+)\}", yaml_file.read_text(encoding="utf-8"))) - set(os.environ))
        if unset:  # Feast expands ${VAR} when it reads the file; an unset one would become a wrong path
            message = f"Feast config {yaml_file} uses ${{{unset[0]}}}, which is not set: export it"
            raise ConfigError(message, stage="enrich")
        try:
            config = load_repo_config(repo, yaml_file)
        except Exception as exc:  # Feast raises pydantic, YAML and its own errors here
            raise ConfigError(f"invalid Feast config {yaml_file}: {exc}", stage="enrich") from exc
        if redis_url:
            config = redis_config(config, redis_url)
        return cls(config, **options)

    def _redis_connection(self, security: RedisSecurity | None) -> RedisConnection | None:
        """The Redis connection (credentials, TLS) of a single-server Redis store; ``None`` for other stores.

        Also hands it to ``self._store``, so that Feast's SDK reads and writes through it too.
        """
        online = self._config.online_store
        if not isinstance(online, RedisOnlineStoreConfig):
            return None
        security = security if security is not None else RedisSecurity()
        if online.redis_type != RedisType.redis:
            if security.configured:
                raise ConfigError(
                    f"VATIC_REDIS_* settings support redis_type 'redis' only, not {online.redis_type.value!r}",
                    stage="enrich",
                )
            return None
        connection = redis_connection(online, security)
        secure_feature_store(self._store, connection)
        return connection

    def _make_reader(self, read_path: ReadPath) -> OnlineReader:
        config = self._config
        online = config.online_store
        if read_path != "feast":
            reason: str
            if config.registry.enable_online_feature_view_versioning:
                reason = "online feature view versioning is enabled"
            elif isinstance(online, RedisOnlineStoreConfig):
                if self._redis is None:
                    reason = f"direct Redis reads support redis_type 'redis' only, not {online.redis_type.value!r}"
                else:
                    return RedisReader(
                        online,
                        project=config.project,
                        key_version=config.entity_key_serialization_version,
                        connection=self._redis,
                    )
            elif isinstance(online, SqliteOnlineStoreConfig):
                return SqliteReader(
                    SqliteOnlineStore._get_db_path(config),
                    project=config.project,
                    key_version=config.entity_key_serialization_version,
                )
            else:
                reason = f"online store type {online.type!r} has no direct reader"
            if read_path == "direct":
                raise ConfigError(f"read_path 'direct' is not available: {reason}", stage="enrich")
        return FeastSdkReader(self._store, connection=self._redis)

    # --- properties -------------------------------------------------------------------------------------

    @property
    def source(self) -> str:
        """The read path in use: ``redis``, ``sqlite`` (direct) or ``feast-sdk``."""
        return self._reader.source

    @property
    def project(self) -> str:
        """The Feast project read."""
        return str(self._config.project)

    @property
    def feature_store(self) -> FeatureStore:
        """The Feast ``FeatureStore`` of this client (its config carries the store timeouts)."""
        return self._store

    @property
    def deadline_s(self) -> float:
        """The default deadline of one lookup, in seconds."""
        return self._deadline_s

    # --- lookups ----------------------------------------------------------------------------------------

    def _plan(self, features: Sequence[str]) -> LookupPlan:
        cache_key = tuple(features)
        plan = self._plans.get(cache_key)
        if plan is None:
            plan = build_plan(self._store.registry, self._config.project, parse_refs(features))
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()
            self._plans[cache_key] = plan
        return plan

    def _budget(self, deadline_s: float | None) -> float:
        budget = self._deadline_s if deadline_s is None else deadline_s
        if budget <= 0:
            raise ConfigError(f"deadline_s must be positive, got {budget}", stage="enrich")
        return budget

    def prepare(self, features: Sequence[str]) -> tuple[str, ...]:
        """Resolve ``features`` now (fail fast on a bad service config); returns the references as looked up."""
        return self._plan(features).refs

    async def get(
        self,
        entities: Sequence[Mapping[str, Any]],
        features: Sequence[str],
        *,
        deadline_s: float | None = None,
    ) -> FeatureLookup:
        """Look ``features`` up for every entity without blocking the event loop; see the class contract.

        The whole lookup (store round trip included) is bounded by ``deadline_s`` (default: the client's).
        """
        budget = self._budget(deadline_s)
        plan = self._plan(features)
        batch = key_entities(plan, entities)
        if not batch.slots:
            return self._empty(plan)
        deadline = time.monotonic() + budget
        timeout = asyncio.timeout(budget)
        try:
            async with timeout:
                raw = await self._reader.read_async(plan, batch.keys, deadline)
        except Exception as exc:
            # a read that blocks the loop (small SQLite reads) is stopped by the store, not by asyncio.timeout
            expired = timeout.expired() or time.monotonic() > deadline
            err = translate_error(
                exc, service=self._reader.service, deadline_s=budget, expired=expired, reader=self._reader
            )
            if err is None or err is exc:
                raise
            raise err from exc
        return self._assemble(plan, batch, raw)

    def get_sync(
        self,
        entities: Sequence[Mapping[str, Any]],
        features: Sequence[str],
        *,
        deadline_s: float | None = None,
    ) -> FeatureLookup:
        """Blocking :meth:`get` for callers without an event loop.

        The deadline is enforced by the store's timeouts (Redis socket timeouts, SQLite interrupts) and
        checked when the read returns: a lookup that ends late raises ``DeadlineExceeded`` too.
        """
        budget = self._budget(deadline_s)
        plan = self._plan(features)
        batch = key_entities(plan, entities)
        if not batch.slots:
            return self._empty(plan)
        deadline = time.monotonic() + budget
        try:
            raw = self._reader.read(plan, batch.keys, deadline)
        except Exception as exc:
            expired = time.monotonic() > deadline
            err = translate_error(
                exc, service=self._reader.service, deadline_s=budget, expired=expired, reader=self._reader
            )
            if err is None or err is exc:
                raise
            raise err from exc
        if time.monotonic() > deadline:
            raise deadline_exceeded(budget)
        return self._assemble(plan, batch, raw)

    def _empty(self, plan: LookupPlan) -> FeatureLookup:
        return FeatureLookup([], features=plan.refs, unique_entities=0, source=self._reader.source)

    def _assemble(self, plan: LookupPlan, batch: KeyedBatch, raw: RawRows) -> FeatureLookup:
        """Classify raw rows (statuses, TTL, nulls), convert values, and fan out to the requested entities.

        Entities with every feature present share one read-only ``statuses`` mapping and one empty ``missing``
        mapping per plan (the common case costs one dict of values per distinct entity).
        """
        now = time.time()
        cells = [_view_cells(view, raw[v], now) for v, view in enumerate(plan.views)]
        shared = self._shared.get(plan)
        if shared is None:
            shared = self._shared[plan] = MappingProxyType(dict.fromkeys(plan.refs, _PRESENT))
        all_present = shared
        views = tuple(enumerate(plan.views))
        distinct: list[EntityFeatures] = []
        for combo in batch.combos:
            values_by_ref: dict[str, Any] = {}
            event_times: dict[str, float | None] = {}
            missing: dict[str, FeatureStatus] | None = None
            for v, view in views:
                vals, view_missing, row_time = cells[v][combo[view.group]]
                event_times[view.name] = row_time
                values_by_ref.update(zip(view.refs, vals, strict=True))
                if view_missing:
                    if missing is None:
                        missing = {}
                    missing.update(view_missing)
            if missing is None:
                distinct.append(EntityFeatures(values_by_ref, all_present, _NONE_MISSING, event_times))
            else:
                statuses = dict(all_present)
                statuses.update(missing)
                distinct.append(EntityFeatures(values_by_ref, statuses, missing, event_times))
        return FeatureLookup(
            [distinct[c] for c in batch.slots],
            features=plan.refs,
            unique_entities=batch.unique_keys,
            source=self._reader.source,
        )

    # --- lifecycle --------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Reload Feast's registry and forget resolved feature lists (after ``feast apply``)."""
        self._store.refresh_registry()  # type: ignore[no-untyped-call]
        self._plans.clear()

    def close(self) -> None:
        """Release connections and threads."""
        self._reader.close()

    async def aclose(self) -> None:
        """Release the running event loop's connections, then everything :meth:`close` releases."""
        await self._reader.aclose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
