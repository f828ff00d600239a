"""Consumer-side deduplication of a vatic job's outputs (at-least-once delivery).

Under ``streaming.guarantee: at_least_once`` an output becomes visible as soon as the sink flushes it (~100 ms),
and a restart from a checkpoint replays the records read since that checkpoint: their answers are written a
second time. Nothing is lost and nothing is duplicated without a fault; after one, a consumer drops the
replays by identity:

* a prediction's identity is its event id: the record key under at-least-once, and the ``vatic-event-id``
  header in both modes;
* a dead letter's identity is its input record's position, the ``vatic-source`` header
  (``topic/partition/offset``).

:func:`identity` reads it from a record's headers (and key); :class:`SeenKeys` remembers the identities seen
lately, bounded by count (least recently seen forgotten first) and optionally by age. A replay arrives within
the replay window: what the job read between its last completed checkpoint and its failure, plus its restart
(seconds to minutes), so a window of a few hundred thousand identities or ten minutes covers it with room to
spare. Every output also carries ``vatic-attempt`` (the worker incarnation that wrote it, an integer): a replay
has a larger attempt than the answer it repeats.

Usage::

    seen = SeenKeys(capacity=200_000, window_s=600)
    for record in consumer.poll_batch(500):
        if seen.first(identity(record.headers, record.key)):
            handle(record)
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

from vatic.schemas.errors import ConfigError

EVENT_ID_HEADER = "vatic-event-id"
SOURCE_HEADER = "vatic-source"
ATTEMPT_HEADER = "vatic-attempt"

#: a record's headers as confluent-kafka gives them (a list of pairs) or as a mapping
Headers = Iterable[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None


def _header(headers: Headers, name: str) -> bytes | None:
    items = headers.items() if isinstance(headers, Mapping) else (headers or ())
    for key, value in items:
        if key == name:
            return value.encode() if isinstance(value, str) else value
    return None


def identity(headers: Headers, key: bytes | None = None) -> bytes | None:
    """The identity of one output record: ``P:<event id>`` for a prediction, ``D:<topic/partition/offset>`` for a
    dead letter, else ``K:<key>``; None when the record carries none of them (it cannot be deduplicated)."""
    source = _header(headers, SOURCE_HEADER)
    if source is not None:
        return b"D:" + source
    event_id = _header(headers, EVENT_ID_HEADER)
    if event_id is not None:
        return b"P:" + event_id
    return None if key is None else b"K:" + key


def attempt(headers: Headers) -> int | None:
    """The ``vatic-attempt`` of a record (the worker incarnation that wrote it), or None when absent or not an
    integer (a record written by an older job)."""
    value = _header(headers, ATTEMPT_HEADER)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class SeenKeys:
    """A bounded set of recently seen identities: :meth:`first` is True the first time a key is offered.

    At most ``capacity`` keys are remembered; the least recently offered is forgotten first. With ``window_s``,
    a key offered more than ``window_s`` seconds after its last offer counts as new (and memory is freed as keys
    age out). Offering a key again refreshes it. Not thread-safe: one per consumer loop.
    """

    def __init__(
        self, capacity: int = 200_000, window_s: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if capacity < 1:
            raise ConfigError(f"dedupe capacity must be at least 1 (got {capacity})")
        if window_s is not None and window_s <= 0:
            raise ConfigError(f"dedupe window must be positive seconds (got {window_s})")
        self.capacity = capacity
        self.window_s = window_s
        self._clock = clock
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self.duplicates = 0  # how many offers were not the first (within the bounds)

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, key: bytes) -> bool:
        when = self._seen.get(key)
        return when is not None and not self._expired(when, self._clock())

    def first(self, key: bytes) -> bool:
        """True when ``key`` was not seen within the bounds (and remember it now); False for a duplicate."""
        now = self._clock()
        self._evict(now)
        when = self._seen.pop(key, None)
        self._seen[key] = now
        if when is not None and not self._expired(when, now):
            self.duplicates += 1
            return False
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return True

    def _expired(self, when: float, now: float) -> bool:
        return self.window_s is not None and now - when > self.window_s

    def _evict(self, now: float) -> None:
        if self.window_s is None:
            return
        while self._seen:
            oldest = next(iter(self._seen.values()))
            if not self._expired(oldest, now):
                break
            self._seen.popitem(last=False)
