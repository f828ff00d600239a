"""Direct reads of Feast's SQLite online store.

Feast's SQLite layout (``feast.infra.online_stores.sqlite``): one table ``<project>_<view>`` per feature view
with one row per (``entity_key``, ``feature_name``): ``entity_key`` is ``serialize_entity_key(key)`` (no
project suffix), ``value`` a serialized ``Value`` proto, ``event_ts`` the event time in whole Unix seconds.

The reader opens the file read-only, one connection per thread. Blocking reads run in the caller's thread.
SQLite has no async API (and Feast's ``online_read_async`` raises ``NotImplementedError`` for SQLite), so async
reads of more than ``inline_max_keys`` distinct keys run in a small thread pool of the reader; smaller ones
run inline on the event loop, because handing a read of a few keys (tens of microseconds, mostly Python work
holding the GIL) to a thread costs more than the read. Either way a query still running at the deadline is
interrupted through SQLite's progress handler: an inline read cannot hold the loop past the deadline, and an
abandoned pooled read does not keep its thread busy.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vatic.connectors.features.codec import KeyEncoder
from vatic.connectors.features.plan import LookupPlan
from vatic.connectors.features.reader import Keys, OnlineReader, RawRow, RawRows, RawValue

__all__ = ["SqliteReader"]

#: entity keys per ``IN (...)`` query, well under SQLite's limit on bound parameters
_CHUNK = 500
#: SQLite VM instructions between two deadline checks
_PROGRESS_STEPS = 1000


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _event_seconds(value: Any) -> float:
    """``event_ts`` as Unix seconds: Feast 0.67 stores an integer; older writers stored ISO text (UTC)."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, bytes):
        value = value.decode()
    parsed = datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


class SqliteReader(OnlineReader):
    """Reads Feast's SQLite online store file directly (read-only)."""

    source = "sqlite"
    service = "sqlite"

    def __init__(
        self,
        db_path: str | Path,
        *,
        project: str,
        key_version: int,
        max_threads: int = 4,
        inline_max_keys: int = 8,
    ) -> None:
        self._uri = Path(db_path).resolve().as_uri() + "?mode=ro"
        self._project = project
        self._key_version = key_version
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._max_threads = max_threads
        self._inline_max_keys = inline_max_keys
        self._executor: ThreadPoolExecutor | None = None

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # check_same_thread=False only so that close() may close every thread's connection; each
            # connection is used by the thread that opened it.
            conn = sqlite3.connect(self._uri, uri=True, check_same_thread=False)
            with self._lock:
                self._connections.append(conn)
            self._local.conn = conn
        return conn

    def read(self, plan: LookupPlan, keys: Keys, deadline: float) -> RawRows:
        conn = self._conn()
        monotonic = time.monotonic
        # wait for a writer's lock (a materialization committing) no longer than the deadline ...
        conn.execute(f"PRAGMA busy_timeout = {max(1, math.ceil((deadline - monotonic()) * 1000))}")
        # ... and stop a running query at the deadline
        conn.set_progress_handler(lambda: monotonic() > deadline, _PROGRESS_STEPS)
        try:
            # an interrupted query raises sqlite3.OperationalError; the client sees the deadline has passed
            return self._read(conn, plan, keys)
        finally:
            conn.set_progress_handler(None, 0)

    def _read(self, conn: sqlite3.Connection, plan: LookupPlan, keys: Keys) -> RawRows:
        rows: RawRows = [[] for _ in plan.views]
        for g, join_keys in enumerate(plan.groups):
            encoder = KeyEncoder(join_keys, tuple(plan.key_types[k] for k in join_keys), self._key_version)
            key_bytes = [encoder.encode(values) for values in keys[g]]
            for v in plan.group_views[g]:
                view = plan.views[v]
                position = {f: i for i, f in enumerate(view.features)}
                found: dict[bytes, tuple[float, list[RawValue]]] = {}
                width = len(view.features)
                # most of the view requested: one index range per key, unrequested features skipped here
                # (half the SQLite time of probing every (key, feature) pair through the primary key)
                whole_rows = 2 * width >= view.declared
                feature_filter = "" if whole_rows else f" AND feature_name IN ({','.join('?' * width)})"
                table = _quote(f"{self._project}_{view.name}")
                for start in range(0, len(key_bytes), _CHUNK):
                    chunk = key_bytes[start : start + _CHUNK]
                    cursor = conn.execute(
                        f"SELECT entity_key, feature_name, value, event_ts FROM {table} "  # noqa: S608 - quoted
                        f"WHERE entity_key IN ({','.join('?' * len(chunk))}){feature_filter}",
                        chunk if whole_rows else (*chunk, *view.features),
                    )
                    last: bytes | None = None
                    slots: list[RawValue] = []
                    for key, feature, value, event_ts in cursor:  # a key's rows come together (index order)
                        at = position.get(feature)
                        if at is None:
                            continue
                        if key != last:
                            entry = found.get(key)
                            if entry is None:
                                entry = found[key] = (_event_seconds(event_ts), [None] * width)
                            last, slots = key, entry[1]
                        slots[at] = value  # a serialized Value, decoded by the client
                out: list[RawRow] = [found.get(key) for key in key_bytes]
                rows[v] = out
        return rows

    async def read_async(self, plan: LookupPlan, keys: Keys, deadline: float) -> RawRows:
        if sum(len(k) for k in keys) <= self._inline_max_keys:
            return self.read(plan, keys, deadline)
        if self._executor is None:
            with self._lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(self._max_threads, thread_name_prefix="vatic-sqlite")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.read, plan, keys, deadline)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()
