"""The DataStream operators of the job's ``async`` topology (see :mod:`vatic.streaming.job` for both topologies).

* :class:`MicroBatchFunction` - keyed: groups raw records into micro-batches of up to ``size`` records or
  ``wait_ms`` milliseconds (processing-time timer), whichever comes first. The buffer is keyed state, so
  buffered records are part of every checkpoint (nothing in a half-built batch is lost on failure).
* :class:`BatchedInferenceFunction` - a reusable PyFlink ``AsyncFunction`` over whole micro-batches: each batch
  goes through :class:`~vatic.streaming.batch.BatchProcessor` (decode, ONE feature lookup, ONE V2 request,
  encode), several batches in flight up to the operator's capacity.
* :class:`RouteFunction` - predictions to the main output, dead-letter records to a side output.

One async call per micro-batch, never per record (why: docs/decisions/0004-vectorized-default.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
from collections.abc import Iterator
from typing import Any

from pyflink.common import Row
from pyflink.common.typeinfo import Types
from pyflink.datastream import OutputTag
from pyflink.datastream.functions import AsyncFunction, KeyedProcessFunction, ProcessFunction, RuntimeContext
from pyflink.datastream.state import ListStateDescriptor, ValueStateDescriptor

from vatic.serving.core import SourceRecord
from vatic.streaming.batch import PREDICTION, BatchProcessor, source_record
from vatic.streaming.metrics import JobMetrics
from vatic.streaming.settings import JobSettings

#: the Kafka sink row: key bytes, value bytes, headers
SINK_ROW = Types.ROW_NAMED(
    ["k", "v", "headers"],
    [
        Types.PRIMITIVE_ARRAY(Types.BYTE()),
        Types.PRIMITIVE_ARRAY(Types.BYTE()),
        Types.MAP(Types.STRING(), Types.PRIMITIVE_ARRAY(Types.BYTE())),
    ],
)
DEAD_LETTERS = OutputTag("dead-letters", SINK_ROW)
SHADOWS = OutputTag("shadow-predictions", SINK_ROW)
PICKLED = Types.PICKLED_BYTE_ARRAY()


#: event time of the final watermark of a bounded input: a timer there fires once every record has been read
END_OF_INPUT = 2**63 - 2


class MicroBatchFunction(KeyedProcessFunction):  # type: ignore[misc]
    """Keyed micro-batching: emit the buffered records when ``size`` are buffered or ``wait_ms`` after the
    first one arrived. Input: the source table's rows; output: one pickled list of ``SourceRecord`` per batch.

    Flink does not fire pending processing-time timers when a bounded input ends, so an event-time timer at
    :data:`END_OF_INPUT` (reached only by the final watermark) flushes the last partial batch of a bounded run.
    """

    def __init__(self, size: int, wait_ms: int) -> None:
        self.size = size
        self.wait_ms = wait_ms

    def open(self, runtime_context: RuntimeContext) -> None:
        self.buffer = runtime_context.get_list_state(ListStateDescriptor("buffer", PICKLED))
        self.count = runtime_context.get_state(ValueStateDescriptor("count", Types.INT()))
        self.timer = runtime_context.get_state(ValueStateDescriptor("timer", Types.LONG()))

    def process_element(self, value: Row, ctx: KeyedProcessFunction.Context) -> Iterator[bytes]:
        record = source_record(value.k, value.v, value.topic, value.partition, value.offset, value.ts, value.headers)
        self.buffer.add(pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL))
        count = (self.count.value() or 0) + 1
        if count >= self.size:
            yield from self._flush(ctx)
            return
        self.count.update(count)
        if self.timer.value() is None:
            at = ctx.timer_service().current_processing_time() + self.wait_ms
            ctx.timer_service().register_processing_time_timer(at)
            ctx.timer_service().register_event_time_timer(END_OF_INPUT)  # same timestamp: registered once
            self.timer.update(at)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[bytes]:
        if timestamp == END_OF_INPUT or self.timer.value() == timestamp:
            yield from self._flush(ctx)

    def _flush(self, ctx: Any) -> Iterator[bytes]:
        records = [pickle.loads(item) for item in self.buffer.get()]  # noqa: S301 - our own records
        pending = self.timer.value()
        if pending is not None:
            ctx.timer_service().delete_processing_time_timer(pending)
        self.buffer.clear()
        self.count.clear()
        self.timer.clear()
        if records:
            yield pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL)


class BatchedInferenceFunction(AsyncFunction):  # type: ignore[misc]
    """One feature lookup + one V2 call per micro-batch, through :class:`~vatic.streaming.batch.BatchProcessor`.

    Input: a pickled list of :class:`~vatic.serving.core.SourceRecord`. Output: one pickled ``(kind, Row)`` per
    record - an encoded prediction row or a dead-letter row.
    """

    def __init__(self, settings: JobSettings) -> None:
        self.settings = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        self.processor = BatchProcessor(self.settings, JobMetrics(runtime_context.get_metrics_group()))
        self.processor.open()

    async def async_invoke(self, value: bytes) -> list[bytes]:
        records: list[SourceRecord] = pickle.loads(value)  # noqa: S301 - our own records
        outputs = await self.processor.process(records)
        return [pickle.dumps((o.kind, Row(o.key, o.value, o.headers), o.shadow)) for o in outputs]

    def timeout(self, value: bytes) -> list[bytes]:
        # The core bounds its own retries; an operator timeout means the whole batch hung: fail the task so
        # Flink restarts from the checkpoint (never dead-letter an outage).
        raise TimeoutError("a micro-batch exceeded the async operator timeout; restarting from the checkpoint")

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            asyncio.run(self.processor.aclose())


class RouteFunction(ProcessFunction):  # type: ignore[misc]
    """Predictions to the main output, dead-letter rows to :data:`DEAD_LETTERS`, shadow predictions to
    :data:`SHADOWS`."""

    def process_element(self, value: bytes, ctx: ProcessFunction.Context) -> Iterator[Any]:
        kind, row, shadow = pickle.loads(value)  # noqa: S301 - our own records
        if kind == PREDICTION:
            yield row
            if shadow is not None:
                yield SHADOWS, Row(row[0], shadow, row[2])
        else:
            yield DEAD_LETTERS, row
