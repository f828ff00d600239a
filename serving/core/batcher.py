"""Adaptive micro-batching of single-event requests (the REST door's answer to Triton's dynamic batching).

No timer window: a request that arrives while no batch is in flight is sent at once (an idle server adds no
latency), and requests that arrive while ``max_in_flight`` batches are busy queue up and leave together in the
next batch (up to ``max_batch``). Under load the batch size grows by itself; at concurrency 1 it stays 1.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from vatic.serving.core.predictor import BatchResult, Failure, Predictor, now_ms


class Rejected(Exception):
    """The event could not be predicted: ``failure`` carries the data error (raised from :meth:`submit`)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.error.message)
        self.failure = failure


class MicroBatcher:
    """Coalesces concurrent :meth:`submit` calls into :meth:`Predictor.predict` batches.

    Contract of :meth:`submit`: returns the event's prediction event, raises :class:`Rejected` for a data
    error of that event, or raises the batch's transient/config error (``Retryable``/``ConfigError``) - the
    same outcome it would have had alone. Batch sizes are reported to ``on_batch`` (metrics).
    """

    def __init__(
        self,
        predictor: Predictor,
        *,
        max_batch: int = 64,
        max_in_flight: int = 2,
        origin: str = "REST",
        on_batch: Any = None,
    ) -> None:
        self.predictor = predictor
        self.max_batch = max_batch
        self.origin = origin
        self.on_batch = on_batch
        self._queue: asyncio.Queue[tuple[Mapping[str, Any], int, asyncio.Future[dict[str, Any]]]] = asyncio.Queue()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, event: Mapping[str, Any]) -> dict[str, Any]:
        if self._task is None:
            self._task = asyncio.create_task(self._dispatch())
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        await self._queue.put((event, now_ms(), future))
        return await future

    async def _dispatch(self) -> None:
        while True:
            first = await self._queue.get()
            await self._slots.acquire()
            batch = [first]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            task = asyncio.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[tuple[Mapping[str, Any], int, asyncio.Future[dict[str, Any]]]]) -> None:
        try:
            if self.on_batch is not None:
                self.on_batch(len(batch))
            try:
                result: BatchResult = await self.predictor.predict(
                    [event for event, _, _ in batch], origin=self.origin, received_ms=min(t for _, t, _ in batch)
                )
            except Exception as exc:  # the batch's outcome is every member's outcome
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
            for index, prediction in result.predictions:
                future = batch[index][2]
                if not future.done():
                    future.set_result(prediction)
            for failure in result.failures:
                future = batch[failure.index][2]
                if not future.done():
                    future.set_exception(Rejected(failure))
        finally:
            self._slots.release()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._running):
            with contextlib.suppress(Exception):
                await task
