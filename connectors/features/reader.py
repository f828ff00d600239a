"""The reader interface behind :class:`~vatic.connectors.features.FeatureClient`, and what readers share.

Readers: :class:`~vatic.connectors.features.feast_sdk.FeastSdkReader` (Feast's SDK, any online store),
:class:`~vatic.connectors.features.redis_direct.RedisReader` and
:class:`~vatic.connectors.features.sqlite_direct.SqliteReader` (direct reads of the bytes Feast stores, with
Feast's own key serialization, without the SDK's per-call overhead).

A reader returns *raw rows*; the client turns them into statuses and Python values, the same way for every
reader, so that a direct reader and Feast's SDK give identical results for the same stored data.

``RawRows`` is, per view of the plan (plan order), per distinct key of the view's group (``KeyedBatch.keys``
order), either ``None`` (no row stored for that entity in that view) or ``(event_time, values)``:
``event_time`` in Unix seconds, ``values`` aligned with ``ViewPlan.features``, each a Feast ``Value`` -
serialized as stored (direct readers; decoded by :func:`~vatic.connectors.features.codec.decode_value`) or
parsed (the SDK reader) - or ``None`` (this feature is not stored for the entity). An empty ``Value`` is a
stored null.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from typing import Any

import redis.exceptions
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType

from vatic.connectors.features.codec import KeyEncoder
from vatic.connectors.features.plan import LookupPlan
from vatic.schemas.errors import (
    ConfigError,
    DeadlineExceeded,
    FeatureStoreUnavailable,
    VaticError,
)

__all__ = [
    "OnlineReader",
    "RawRow",
    "RawRows",
    "RawValue",
    "deadline_exceeded",
    "entity_key_bytes",
    "translate_error",
]

#: a stored value: its serialized bytes (direct readers) or the parsed proto (Feast's SDK)
RawValue = bytes | ValueProto | None
RawRow = tuple[float, list[RawValue]] | None
RawRows = list[list[RawRow]]
Keys = tuple[list[tuple[Any, ...]], ...]


class OnlineReader(ABC):
    """Reads raw rows for distinct entity keys. Implementations must be safe to share between threads.

    ``deadline`` is an absolute ``time.monotonic()`` instant. The async client enforces it with
    ``asyncio.timeout`` whatever the reader does; readers use it to stop work early where they can (SQLite
    interrupts its query; Redis relies on its socket timeouts). Readers raise the store's own exceptions (or a
    ``VaticError``); the client translates them with :func:`translate_error`.
    """

    #: the read path, as reported in ``FeatureLookup.source``
    source: str
    #: the service named in ``FeatureStoreUnavailable``
    service: str

    @abstractmethod
    def read(self, plan: LookupPlan, keys: Keys, deadline: float) -> RawRows:
        """Blocking read."""

    @abstractmethod
    async def read_async(self, plan: LookupPlan, keys: Keys, deadline: float) -> RawRows:
        """Read without blocking the running event loop."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections, threads and files. The reader must not be used afterwards."""

    async def aclose(self) -> None:
        """Release resources bound to the running event loop, then :meth:`close`."""
        self.close()

    def explain(self, exc: BaseException) -> VaticError | None:
        """A store-specific classification of ``exc`` (credentials, certificates), or ``None`` to leave it to
        :func:`translate_error`'s generic rules."""
        return None


def entity_key_bytes(
    join_keys: tuple[str, ...], values: tuple[Any, ...], types: tuple[ValueType, ...], version: int
) -> bytes:
    """Feast's serialized entity key (``serialize_entity_key``), as stored by its Redis and SQLite stores.

    One-off form of :class:`~vatic.connectors.features.codec.KeyEncoder` (readers keep one per group).
    """
    return KeyEncoder(join_keys, types, version).encode(values)


def deadline_exceeded(deadline_s: float) -> DeadlineExceeded:
    """The ``DeadlineExceeded`` error of a feature lookup."""
    err = DeadlineExceeded(f"feature lookup did not finish within {deadline_s:g}s", deadline_s=deadline_s)
    err.stage = "enrich"
    return err


def translate_error(
    exc: BaseException, *, service: str, deadline_s: float, expired: bool, reader: OnlineReader | None = None
) -> VaticError | None:
    """Map a store exception to vatic's taxonomy; ``None`` for exceptions that are bugs, not store failures.

    * what ``reader.explain`` classifies (Redis: ``CredentialsRejected``, ``UntrustedCertificate``);
    * our deadline passed -> ``DeadlineExceeded``;
    * refused or lost connections, socket timeouts, Redis errors, SQLite I/O and lock errors ->
      ``FeatureStoreUnavailable`` (an outage: retry, never dead-letter);
    * bad credentials, a missing SQLite table or file -> ``ConfigError``.
    """
    if isinstance(exc, VaticError):
        return exc
    if not isinstance(exc, redis.exceptions.RedisError | sqlite3.Error | OSError | TimeoutError):
        return None  # a bug: let it surface as itself
    explained = reader.explain(exc) if reader is not None else None
    if explained is not None:
        return explained
    if expired:
        return deadline_exceeded(deadline_s)
    if isinstance(
        exc,
        redis.exceptions.AuthenticationError | redis.exceptions.AuthorizationError | redis.exceptions.NoPermissionError,
    ):
        return ConfigError(f"{service} online store refused our credentials: {exc}", stage="enrich")
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc)
        if "no such table" in text or "unable to open database" in text:
            return ConfigError(
                f"SQLite online store is not set up for this feature view ({text}): "
                "run `feast apply` and materialize, or fix online_store.path",
                stage="enrich",
            )
    return FeatureStoreUnavailable(f"{service} online store failed: {type(exc).__name__}: {exc}", service=service)
