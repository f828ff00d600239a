"""Reads through Feast's SDK (``FeatureStore.get_online_features``): works for every Feast online store.

One SDK call per entity-key group, with the group's distinct keys only. Async: Feast's
``get_online_features_async`` on Redis (one ``FeatureStore`` per event loop, because Feast caches a
loop-bound async Redis client in its online store); other stores raise ``NotImplementedError`` there, so their
blocking SDK call runs in a one-thread pool of the reader.

Feast 0.67 reports only ``PRESENT``/``NOT_FOUND``, and on Redis an unknown entity as ``PRESENT`` with an
empty value and event time 0: such cells are turned back into "not found" here, and staleness and nulls are
classified by the client like for every reader.

On Redis, ``connection`` (:class:`~vatic.connectors.features.redis_security.RedisConnection`) replaces the clients
Feast would build from its connection string alone, so that the SDK authenticates and verifies TLS exactly like
the direct reader (see :func:`~vatic.connectors.features.redis_security.secure_feature_store`).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from feast import FeatureStore, RepoConfig
from feast.online_response import OnlineResponse
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

from vatic.connectors.features.plan import LookupPlan
from vatic.connectors.features.reader import Keys, OnlineReader, RawRow, RawRows, RawValue
from vatic.connectors.features.redis_security import RedisConnection, secure_feature_store
from vatic.schemas.errors import VaticError

__all__ = ["FeastSdkReader"]

_NOT_FOUND = FieldStatus.NOT_FOUND


class FeastSdkReader(OnlineReader):
    """Reads with Feast's ``get_online_features`` / ``get_online_features_async``."""

    source = "feast-sdk"

    def __init__(self, store: FeatureStore, *, connection: RedisConnection | None = None) -> None:
        self._store = store
        self._connection = connection
        if connection is not None:
            secure_feature_store(store, connection)
        self._config: RepoConfig = store.config
        store_type = str(self._config.online_store.type)
        self.service = store_type.rsplit(".", 1)[-1].removesuffix("OnlineStore").lower() or store_type
        self._native_async = store_type == "redis"
        self._lock = threading.Lock()
        self._loop_stores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FeatureStore] = (
            weakref.WeakKeyDictionary()
        )
        self._executor: ThreadPoolExecutor | None = None

    @staticmethod
    def _request(plan: LookupPlan, keys: Keys, g: int) -> tuple[list[str], dict[str, list[Any]]]:
        features = [ref for v in plan.group_views[g] for ref in plan.views[v].refs]
        join_keys = plan.groups[g]
        rows = {key: [values[j] for values in keys[g]] for j, key in enumerate(join_keys)}
        return features, rows

    @staticmethod
    def _collect(plan: LookupPlan, g: int, n: int, response: OnlineResponse, out: RawRows) -> None:
        proto = response.proto
        column = {name: i for i, name in enumerate(proto.metadata.feature_names.val)}
        for v in plan.group_views[g]:
            view = plan.views[v]
            vectors = [proto.results[column[f"{view.name}__{f}"]] for f in view.features]
            rows: list[RawRow] = []
            for u in range(n):
                event_time: float | None = None
                values: list[RawValue] = []
                for vector in vectors:
                    value = vector.values[u]
                    ts = vector.event_timestamps[u]
                    if vector.statuses[u] == _NOT_FOUND or (
                        value.WhichOneof("val") is None and ts.seconds == 0 and ts.nanos == 0
                    ):
                        values.append(None)
                        continue
                    event_time = ts.seconds + ts.nanos / 1e9
                    values.append(value)
                rows.append(None if event_time is None else (event_time, values))
            out[v] = rows

    def read(self, plan: LookupPlan, keys: Keys, deadline: float) -> RawRows:
        out: RawRows = [[] for _ in plan.views]
        for g in range(len(plan.groups)):
            if not keys[g]:
                continue
            features, rows = self._request(plan, keys, g)
            response = self._store.get_online_features(features=features, entity_rows=rows, full_feature_names=True)
            self._collect(plan, g, len(keys[g]), response, out)
        return out

    def _loop_store(self) -> FeatureStore:
        loop = asyncio.get_running_loop()
        store = self._loop_stores.get(loop)
        if store is None:
            repo_path = self._config.repo_path
            store = FeatureStore(repo_path=str(repo_path) if repo_path else None, config=self._config)
            if self._connection is not None:
                secure_feature_store(store, self._connection, sync=False, asynchronous=True)
            self._loop_stores[loop] = store
        return store

    async def read_async(self, plan: LookupPlan, keys: Keys, deadline: float) -> RawRows:
        if not self._native_async:
            if self._executor is None:
                with self._lock:
                    if self._executor is None:
                        self._executor = ThreadPoolExecutor(1, thread_name_prefix="vatic-feast")
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self.read, plan, keys, deadline)
        store = self._loop_store()
        groups = [g for g in range(len(plan.groups)) if keys[g]]
        requests = [self._request(plan, keys, g) for g in groups]
        responses = await asyncio.gather(
            *(
                store.get_online_features_async(features=features, entity_rows=rows, full_feature_names=True)
                for features, rows in requests
            )
        )
        out: RawRows = [[] for _ in plan.views]
        for g, response in zip(groups, responses, strict=True):
            self._collect(plan, g, len(keys[g]), response, out)
        return out

    def explain(self, exc: BaseException) -> VaticError | None:
        return self._connection.explain(exc) if self._connection is not None else None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    async def aclose(self) -> None:
        store = self._loop_stores.pop(asyncio.get_running_loop(), None)
        if store is not None:
            await store.close()
        self.close()
