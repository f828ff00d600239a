"""Small helpers shared by vatic's clients of outside systems (model servers, registries, stores)."""

from __future__ import annotations

import email.utils
import time
from typing import TypeVar

_E = TypeVar("_E", bound=BaseException)

__all__ = ["cause_of", "retry_after"]


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header value (delta-seconds or an HTTP date, RFC 9110 10.2.3);
    None when absent or unreadable. Never negative: a date in the past means "now"."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def cause_of(exc: BaseException, kind: type[_E]) -> _E | None:
    """The first exception of ``kind`` in ``exc``'s chain (itself, then its ``__cause__`` or ``__context__``, and
    so on; a cycle ends the walk), or None: what a client library's wrapper (an httpx or redis-py connection
    error) hides, e.g. an ``ssl.SSLCertVerificationError``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
