"""The shared HTTP helpers of the connectors."""

from __future__ import annotations

import time

from vatic.connectors.http import retry_after


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    assert retry_after("3") == 3.0
    assert retry_after("-1") == 0.0
    assert retry_after(None) is None
    assert retry_after("soon") is None
    in_a_minute = retry_after(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60)))
    assert in_a_minute is not None
    assert 0 < in_a_minute <= 61
