"""Retrying transient errors with exponential backoff and jitter inside a time budget."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from vatic.schemas.errors import Retryable
from vatic.serving.config.model import RetrySpec

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Retry :class:`Retryable` errors until ``budget_s`` is spent, then re-raise the last one.

    Backoff doubles from ``initial_backoff_s`` up to ``max_backoff_s`` with full jitter; a server's
    ``Retry-After`` is honoured when it is longer. ``budget_s=0`` means one attempt (REST callers that must
    answer quickly pass a small budget; the streaming job passes the service's retry budget).
    """

    budget_s: float = 60.0
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 5.0

    @classmethod
    def from_spec(cls, spec: RetrySpec) -> RetryPolicy:
        return cls(spec.budget_s, spec.initial_backoff_ms / 1000, spec.max_backoff_ms / 1000)

    async def run(
        self,
        call: Callable[[], Awaitable[T]],
        *,
        on_retry: Callable[[Retryable, int], None] | None = None,
    ) -> tuple[T, int]:
        """Run ``call`` until it succeeds; return its result and the number of attempts made."""
        deadline = time.monotonic() + self.budget_s
        backoff = self.initial_backoff_s
        attempt = 0
        while True:
            attempt += 1
            try:
                return await call(), attempt
            except Retryable as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise
                wait = random.uniform(0, backoff)  # noqa: S311 - jitter, not cryptography
                if exc.retry_after:
                    wait = max(wait, exc.retry_after)
                if wait > remaining:
                    raise
                if on_retry is not None:
                    on_retry(exc, attempt)
                await asyncio.sleep(wait)
                backoff = min(self.max_backoff_s, backoff * 2)
