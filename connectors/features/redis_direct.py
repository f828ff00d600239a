"""Direct reads of Feast's Redis online store: one pipelined ``HMGET`` per distinct entity key.

Requests are packed once per read (one RESP buffer of ``HMGET`` commands, the fields part precomputed per
entity-key group) and written on one pooled connection, like redis-py's non-transactional pipeline but
without its per-command bookkeeping; a connection that fails or is cancelled mid-read is closed, never reused.

Feast's Redis layout (``feast.infra.online_stores.redis``): one hash per entity key, named
``serialize_entity_key(key) + project``, shared by every feature view keyed by the same entities. A feature
is the hash field ``mmh3("view:feature")`` (Feast's ``_mmh3``) holding a serialized ``Value`` proto; the
field ``_ts:view`` holds the view's event time as a ``Timestamp`` proto. Keys and field names come from
Feast's own functions, so the bytes are those Feast writes.

Unlike Feast's SDK (which reports an unknown entity as ``PRESENT`` with an empty value), a hash without the
view's ``_ts`` field is reported as not found.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
from feast.infra.online_stores.helpers import _mmh3
from feast.infra.online_stores.redis import RedisOnlineStoreConfig
from google.protobuf.timestamp_pb2 import Timestamp

from vatic.connectors.features.codec import KeyEncoder
from vatic.connectors.features.plan import LookupPlan
from vatic.connectors.features.reader import Keys, OnlineReader, RawRow, RawRows
from vatic.connectors.features.redis_security import RedisConnection, redis_connection
from vatic.schemas.errors import VaticError

__all__ = ["RedisReader"]


def _bulk(value: bytes | str) -> bytes:
    """A RESP bulk string."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    return b"$%d\r\n%s\r\n" % (len(data), data)


@dataclass(frozen=True, slots=True)
class _GroupLayout:
    """The HMGET of one entity-key group: the fields to read and where each view's fields are."""

    join_keys: tuple[str, ...]
    key_types: tuple[Any, ...]
    fields: tuple[bytes | str, ...]
    encoder: KeyEncoder
    #: the RESP encoding of ``HMGET``'s arguments after the key (the same for every key of the group)
    resp_fields: bytes
    #: ``*<argc>\r\n$5\r\nHMGET\r\n``
    resp_head: bytes
    #: per view of the group: (view index in the plan, offset of its first feature, number of features)
    views: tuple[tuple[int, int, int], ...]


class RedisReader(OnlineReader):
    """Reads Feast's Redis online store directly, sync (redis-py) or async (``redis.asyncio``).

    One async client is kept per event loop (redis-py's asyncio connections belong to the loop that opened
    them), so the reader can be shared by several loops (e.g. a gateway and a test).

    ``connection`` (default: from ``config``'s connection string and the ``VATIC_REDIS_*`` environment, see
    :mod:`~vatic.connectors.features.redis_security`) carries the credentials and TLS settings.
    """

    source = "redis"
    service = "redis"

    def __init__(
        self,
        config: RedisOnlineStoreConfig,
        *,
        project: str,
        key_version: int,
        connection: RedisConnection | None = None,
    ) -> None:
        self._connection = connection if connection is not None else redis_connection(config)
        self._project = project.encode("utf-8")
        self._key_version = key_version
        self._layouts: weakref.WeakKeyDictionary[LookupPlan, tuple[_GroupLayout, ...]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._sync: redis.Redis | None = None
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = (
            weakref.WeakKeyDictionary()
        )

    # --- plumbing ---------------------------------------------------------------------------------------

    def _layout(self, plan: LookupPlan) -> tuple[_GroupLayout, ...]:
        layouts = self._layouts.get(plan)
        if layouts is None:
            built = []
            for g, join_keys in enumerate(plan.groups):
                fields: list[bytes | str] = []
                views = []
                for v in plan.group_views[g]:
                    view = plan.views[v]
                    views.append((v, len(fields), len(view.features)))
                    fields.extend(_mmh3(f"{view.name}:{f}") for f in view.features)
                    fields.append(f"_ts:{view.name}")
                key_types = tuple(plan.key_types[k] for k in join_keys)
                built.append(
                    _GroupLayout(
                        join_keys=join_keys,
                        key_types=key_types,
                        fields=tuple(fields),
                        encoder=KeyEncoder(join_keys, key_types, self._key_version),
                        resp_fields=b"".join(_bulk(f) for f in fields),
                        resp_head=b"*%d\r\n" % (len(fields) + 2) + _bulk(b"HMGET"),
                        views=tuple(views),
                    )
                )
            layouts = tuple(built)
            with self._lock:
                self._layouts[plan] = layouts
        return layouts

    def _commands(self, plan: LookupPlan, keys: Keys) -> tuple[tuple[_GroupLayout, ...], list[list[bytes]]]:
        layouts = self._layout(plan)
        project = self._project
        redis_keys = [
            [layout.encoder.encode(values) + project for values in keys[g]] for g, layout in enumerate(layouts)
        ]
        return layouts, redis_keys

    @staticmethod
    def _packed(layouts: tuple[_GroupLayout, ...], redis_keys: list[list[bytes]]) -> bytes:
        """One RESP request holding an ``HMGET key fields...`` per key (what redis-py's pipeline would send)."""
        parts: list[bytes] = []
        for g, layout in enumerate(layouts):
            head, tail = layout.resp_head, layout.resp_fields
            for key in redis_keys[g]:
                parts.append(head + b"$%d\r\n" % len(key) + key + b"\r\n" + tail)
        return b"".join(parts)

    @staticmethod
    def _parse(
        plan: LookupPlan, layouts: tuple[_GroupLayout, ...], redis_keys: list[list[bytes]], replies: list[Any]
    ) -> RawRows:
        rows: RawRows = [[] for _ in plan.views]
        at = 0
        for g, layout in enumerate(layouts):
            n = len(redis_keys[g])
            for reply in replies[at : at + n]:
                for v, offset, count in layout.views:
                    ts_bytes = reply[offset + count]
                    row: RawRow = None
                    if ts_bytes is not None:
                        ts = Timestamp.FromString(ts_bytes)
                        row = (
                            ts.seconds + ts.nanos / 1e9,
                            reply[offset : offset + count],  # serialized Values, decoded by the client
                        )
                    rows[v].append(row)
            at += n
        return rows

    def _client(self) -> redis.Redis:
        if self._sync is None:
            with self._lock:
                if self._sync is None:
                    self._sync = self._connection.sync_client()
        return self._sync

    def _async_client(self) -> redis.asyncio.Redis:
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            client = self._async[loop] = self._connection.async_client()
        return client

    def explain(self, exc: BaseException) -> VaticError | None:
        return self._connection.explain(exc)

    # --- reads ------------------------------------------------------------------------------------------

    def read(self, plan: LookupPlan, keys: Keys, deadline: float) -> RawRows:
        layouts, redis_keys = self._commands(plan, keys)
        count = sum(len(k) for k in redis_keys)
        pool = self._client().connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command([self._packed(layouts, redis_keys)])
            replies = [connection.read_response() for _ in range(count)]
        except BaseException:
            connection.disconnect()  # replies may be left unread on it: never reuse it
            raise
        finally:
            pool.release(connection)
        return self._parse(plan, layouts, redis_keys, replies)

    async def read_async(self, plan: LookupPlan, keys: Keys, deadline: float) -> RawRows:
        layouts, redis_keys = self._commands(plan, keys)
        count = sum(len(k) for k in redis_keys)
        pool = self._async_client().connection_pool
        connection = await pool.get_connection()
        try:
            await connection.send_packed_command([self._packed(layouts, redis_keys)])
            replies = [await connection.read_response() for _ in range(count)]
        except BaseException:  # cancellation (the deadline) included: replies may be left unread
            await connection.disconnect()
            raise
        finally:
            await pool.release(connection)
        return self._parse(plan, layouts, redis_keys, replies)

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def aclose(self) -> None:
        client = self._async.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()
        self.close()
