"""Small HTTP helpers shared by vatic's clients of outside systems (model servers, registries)."""

from __future__ import annotations

import email.utils
import time

__all__ = ["retry_after"]


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
