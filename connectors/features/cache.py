"""A short-lived in-process cache of raw online-store rows, in front of any reader.

Online features are materialized in batch (daily aggregates here), while one customer or merchant shows up in
many events a second: reading the same rows again within a second buys nothing but latency and store load.
:class:`CachingReader` answers keys read less than ``ttl_s`` ago from memory and reads only the misses.

Contract: a cached row is at most ``ttl_s`` older than a fresh read would be; statuses (``NOT_FOUND``,
``OUTSIDE_MAX_AGE``) are computed from the row's own event time by the client as usual, so a cached row that
has aged past its view's TTL is still reported stale. Misses are cached too (an unknown entity stays unknown
for ``ttl_s``). The cache holds at most ``max_keys`` entries per plan group and is cleared when full.
"""

from __future__ import annotations

import time
from typing import Any

from vatic.connectors.features.plan import LookupPlan
from vatic.connectors.features.reader import Keys, OnlineReader, RawRow, RawRows
from vatic.schemas.errors import VaticError


class CachingReader(OnlineReader):
    """Serve recently read rows from memory; delegate the rest to ``inner``."""

    def __init__(self, inner: OnlineReader, ttl_s: float, *, max_keys: int = 100_000) -> None:
        self.inner = inner
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self.source = inner.source
        self.service = inner.service
        # (plan identity, group index) -> key -> (expires at, rows of the group's views)
        self._entries: dict[tuple[int, int], dict[tuple[Any, ...], tuple[float, list[RawRow]]]] = {}
        self.hits = 0
        self.misses = 0

    def _split(self, plan: LookupPlan, keys: Keys) -> tuple[Keys, list[dict[tuple[Any, ...], list[RawRow]]]]:
        now = time.monotonic()
        missing: list[list[tuple[Any, ...]]] = []
        cached: list[dict[tuple[Any, ...], list[RawRow]]] = []
        for g, group_keys in enumerate(keys):
            entries = self._entries.get((id(plan), g), {})
            found: dict[tuple[Any, ...], list[RawRow]] = {}
            absent = []
            for key in group_keys:
                entry = entries.get(key)
                if entry is not None and entry[0] > now:
                    found[key] = entry[1]
                else:
                    absent.append(key)
            self.hits += len(found)
            self.misses += len(absent)
            missing.append(absent)
            cached.append(found)
        return tuple(missing), cached

    def _merge(
        self, plan: LookupPlan, keys: Keys, missing: Keys, cached: list[dict[tuple[Any, ...], list[RawRow]]],
        raw: RawRows | None,
    ) -> RawRows:  # fmt: skip
        expires = time.monotonic() + self.ttl_s
        out: RawRows = [[] for _ in plan.views]
        for g, group_keys in enumerate(keys):
            views = plan.group_views[g]
            if missing[g] and raw is not None:
                entries = self._entries.setdefault((id(plan), g), {})
                if len(entries) + len(missing[g]) > self.max_keys:
                    entries.clear()
                for position, key in enumerate(missing[g]):
                    rows = [raw[v][position] for v in views]
                    entries[key] = (expires, rows)
                    cached[g][key] = rows
            for key in group_keys:
                rows = cached[g][key]
                for slot, v in enumerate(views):
                    out[v].append(rows[slot])
        return out

    def read(self, plan: LookupPlan, keys: Keys, deadline: float) -> RawRows:
        missing, cached = self._split(plan, keys)
        raw = self.inner.read(plan, missing, deadline) if any(missing) else None
        return self._merge(plan, keys, missing, cached, raw)

    async def read_async(self, plan: LookupPlan, keys: Keys, deadline: float) -> RawRows:
        missing, cached = self._split(plan, keys)
        raw = await self.inner.read_async(plan, missing, deadline) if any(missing) else None
        return self._merge(plan, keys, missing, cached, raw)

    def close(self) -> None:
        self._entries.clear()
        self.inner.close()

    async def aclose(self) -> None:
        self._entries.clear()
        await self.inner.aclose()

    def explain(self, exc: BaseException) -> VaticError | None:
        return self.inner.explain(exc)
