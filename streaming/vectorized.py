"""The job's ``vectorized`` topology: batched inference as a vectorized (Arrow) Table-API function.

PyFlink moves records between the JVM and Python workers one by one for DataStream operators; a vectorized
("pandas") scalar function receives them as Arrow batches instead. :class:`VectorizedInference` is called
once per batch of up to ``python.fn-execution.arrow.batch.size`` records (the service's ``batch_size``), cut
at latest every ``python.fn-execution.bundle.time`` ms (``batch_wait_ms``), and returns exactly one
``(kind, key, value, headers, shadow)`` row per record through :class:`~vatic.streaming.batch.BatchProcessor`
(decode, one feature lookup, one V2 request, encode). Two SQL inserts then route ``kind`` to the
predictions and dead-letter sinks, and a third one (a service with a shadow) the shadow column to its topic.
The job's default topology (why: docs/decisions/0004-vectorized-default.md).

Each subtask processes one batch at a time (the function blocks on its batch's model call), which is the
backpressure; parallelism adds batches in flight. Checkpoints stay consistent because a bundle is finished
(every record in it answered) before a checkpoint barrier passes the operator.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pandas as pd  # type: ignore[import-untyped]
from pyflink.table import DataTypes
from pyflink.table.udf import FunctionContext, ScalarFunction

from vatic.streaming.batch import BatchProcessor, source_record
from vatic.streaming.metrics import JobMetrics
from vatic.streaming.settings import JobSettings

#: the function's result: which sink, the record key and value, and the record headers (keys, values)
RESULT_TYPE = DataTypes.ROW(
    [
        DataTypes.FIELD("kind", DataTypes.STRING()),
        DataTypes.FIELD("k", DataTypes.BYTES()),
        DataTypes.FIELD("v", DataTypes.BYTES()),
        # headers as parallel key/value arrays: PyFlink's Arrow bridge cannot carry MAP columns (the planner drops
        # a cast to a non-null key type, and maps out of a pandas function fail); SQL rebuilds the map
        DataTypes.FIELD("hk", DataTypes.ARRAY(DataTypes.STRING())),
        DataTypes.FIELD("hv", DataTypes.ARRAY(DataTypes.BYTES())),
        # the shadow's prediction of the record (null without one): a third insert writes it to the shadow topic
        DataTypes.FIELD("s", DataTypes.BYTES()),
    ]
)


class VectorizedInference(ScalarFunction):  # type: ignore[misc]
    """A reusable vectorized inference function: raw Kafka columns in, one output row per record out."""

    def __init__(self, settings: JobSettings) -> None:
        self.settings = settings

    def is_deterministic(self) -> bool:
        # it calls a model server: the planner must call it once per record, not once per sink it feeds
        return False

    def open(self, function_context: FunctionContext) -> None:
        self.loop = asyncio.new_event_loop()
        self.processor = BatchProcessor(self.settings, JobMetrics(function_context.get_metric_group()))
        self.processor.open()

    def eval(
        self, k: pd.Series, v: pd.Series, topic: pd.Series, partition: pd.Series, offset: pd.Series,
        ts: pd.Series, header_keys: pd.Series, header_values: pd.Series,
    ) -> pd.DataFrame:  # fmt: skip
        records = [
            source_record(key, value, tp, part, off, None if pd.isna(when) else when, _headers(hk, hv))
            for key, value, tp, part, off, when, hk, hv in zip(
                k, v, topic, partition, offset, ts, header_keys, header_values, strict=True
            )
        ]
        outputs = self.loop.run_until_complete(self.processor.process(records))
        return pd.DataFrame(
            {
                "kind": [o.kind for o in outputs],
                "k": [o.key for o in outputs],
                "v": [o.value for o in outputs],
                "hk": [list(o.headers) for o in outputs],
                "hv": [list(o.headers.values()) for o in outputs],
                "s": [o.shadow for o in outputs],
            }
        )

    def close(self) -> None:
        """Close the model client and the feature reader."""
        loop: Any = getattr(self, "loop", None)
        if loop is not None:
            loop.run_until_complete(self.processor.aclose())
            loop.close()


def _headers(keys: Any, values: Any) -> dict[str, bytes | None]:
    """A record's headers from the MAP_KEYS / MAP_VALUES arrays of the source's ``headers`` column."""
    if keys is None or values is None:
        return {}
    return dict(zip(keys, values, strict=True))
