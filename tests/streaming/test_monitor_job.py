"""The drift monitor on real processes: Kafka, the schema registry, PyFlink (``vatic monitor run``) and a local
model registry holding the reference profiles.

Predictions are written to the predictions topic as the pipeline writes them (vatic's Avro codec, the stack's
registry), with event times on a 10 s window grid: version 1 unshifted for four windows then with ``amount``
tripled, version 2 (a canary) shifted from the start, version 3 without a profile; late predictions inside and
beyond the lateness bound; and bytes that are no prediction. The drift topic must say exactly that.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tests.streaming.test_job import VATIC
from vatic.connectors.kafka import KafkaSettings, Producer, ensure_topics, scan
from vatic.connectors.schema_registry import ConfluentSchemaRegistry
from vatic.schemas import AvroCodec, load_schema, topic_subject
from vatic.serving.core.drift import build_profile

WINDOW_MS = 10_000
LATENESS_MS = 4_000
#: the first window: a multiple of the window size, an hour ago (every record is inside its topic's retention)
T0 = (time.time_ns() // 1_000_000 - 3_600_000) // WINDOW_MS * WINDOW_MS
CHANNELS = ["ONLINE", "POS", "ATM"]


def _values(rng: np.random.Generator, n: int, shift: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    return rng.lognormal(3.5, 1.0, n) * shift, rng.choice(CHANNELS, n, p=[0.6, 0.3, 0.1])


def _service(folder: Path, registry: Path, topic: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "project": "test",
        "service": "drifty",
        "model": {
            "name": "drifty",
            "inputs": [
                {
                    "name": "input-0",
                    "datatype": "FP32",
                    "columns": ["amount", "channel"],
                    "encodings": {"channel": {c: i for i, c in enumerate(CHANNELS)}},
                }
            ],
            "outputs": [{"name": "predict", "rename": "score"}],
        },
        "registry": {"backend": "local", "uri": str(registry)},
        "streaming": {
            "input_topic": f"{topic}.in",
            "output_topic": topic,
            "dead_letter_topic": f"{topic}.dlq",
            "input_schema": "transaction",
            "checkpoint_interval_s": 2,
        },
        "monitoring": {
            "topic": f"{topic}.drift",
            "window_s": WINDOW_MS / 1000,
            "lateness_s": LATENESS_MS / 1000,
            "min_count": 100,
            "batch_size": 50,
        },
    }
    (folder / "service.yaml").write_text(yaml.safe_dump(config))
    return folder


def _register(root: Path, version: str) -> None:
    rng = np.random.default_rng(1)
    amount, channel = _values(rng, 5000)
    profile = build_profile("drifty", version, {"amount": amount, "channel": channel}, {"score": amount / 1000})
    folder = root / "drifty" / version
    folder.mkdir(parents=True)
    profile.write(folder)


def _prediction(version: str, event_time: int, amount: float, channel: str) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()), "service": "drifty", "origin": "STREAM", "entity_keys": {},
        "model_name": "drifty", "model_version": version, "outputs": {"score": float(amount) / 1000},
        "features": {}, "inputs": {"amount": float(amount), "channel": str(channel)},
        "timings": {"event_time": event_time, "received_time": event_time, "enrich_ms": None, "infer_ms": 1.0,
                    "emit_time": event_time},
    }  # fmt: skip


def _window(rng, version: str, window: int, n: int, *, shift: float = 1.0, start_ms: int = 0, span_ms: int = 0):
    """``n`` predictions of ``version`` in ``window``, event times spread over ``[start_ms, start_ms + span_ms)``
    of it (default: the whole window), in event-time order."""
    amount, channel = _values(rng, n, shift)
    span = span_ms or WINDOW_MS - start_ms
    times = sorted(int(t) for t in rng.integers(0, span, n))
    base = T0 + window * WINDOW_MS + start_ms
    return [_prediction(version, base + t, a, c) for t, a, c in zip(times, amount, channel, strict=True)]


def test_drift_is_found_per_version_and_window_and_late_predictions_count_where_they_belong(
    kafka_bootstrap, registry_url, tmp_path
):
    topic = f"monitor-{uuid.uuid4().hex[:8]}.predictions"
    registry = tmp_path / "registry"
    for version in ("1", "2"):
        _register(registry, version)
    (registry / "drifty" / "3").mkdir()  # a version without a profile
    folder = _service(tmp_path / "service", registry, topic)
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    ensure_topics([topic], partitions=1, settings=settings)  # one partition: the order below is the read order
    store = ConfluentSchemaRegistry(registry_url)
    codec = AvroCodec(store, topic_subject(topic), load_schema("prediction"))
    rng = np.random.default_rng(7)

    records: list[dict[str, Any]] = []
    expected: dict[tuple[str, int], int] = {}
    for window in range(7):
        shift = 3.0 if window >= 4 else 1.0
        if window == 5:
            # window 5 opens: its first 3 s (the watermark stays inside window 4's lateness bound) ...
            records += _window(rng, "1", 5, 150, shift=shift, span_ms=3000)
            # ... then late predictions of window 4, still inside the bound: they count in window 4
            records += _window(rng, "1", 4, 60, shift=shift)
            records += _window(rng, "1", 5, 250, shift=shift, start_ms=3000)
            expected["1", 4] += 60
            expected["1", 5] = 400
        else:
            records += _window(rng, "1", window, 400, shift=shift)
            expected["1", window] = 400
        if window < 4:
            records += _window(rng, "2", window, 200, shift=3.0)
            expected["2", window] = 200
    records += _window(rng, "3", 6, 150)
    expected["3", 6] = 150
    # beyond the bound: window 2 closed long ago (these come after more than a batch of later predictions)
    too_late = _window(rng, "1", 2, 40)

    producer = Producer(settings)
    for record in records:
        producer.produce(topic, codec.encode(record), record["model_version"].encode())
    producer.produce(topic, b"not a prediction", b"junk")
    for record in too_late:
        producer.produce(topic, codec.encode(record), b"1")
    producer.produce(topic, codec.encode(_window(rng, "1", 9, 1)[0]), b"1")  # moves the watermark past window 6
    expected["1", 9] = 1
    producer.flush()

    log = tmp_path / "monitor.log"
    argv = [
        str(VATIC), "monitor", "run", str(folder), "--bounded", "--schema-registry-url", registry_url,
        "--checkpoint-dir", str(tmp_path / "checkpoints"), "--metrics-port", "0",
    ]  # fmt: skip
    job = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log.open("wb"), start_new_session=True,
                           env={**os.environ, "VATIC_STREAM_BOOTSTRAP_SERVERS": kafka_bootstrap})  # fmt: skip
    try:
        assert job.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()

    drift_codec = AvroCodec(store, topic_subject(f"{topic}.drift"), load_schema("drift"))
    found = [drift_codec.decode(r.value or b"") for r in scan(f"{topic}.drift", settings)]
    by_window = {(r["model_version"], (r["window_start"] - T0) // WINDOW_MS): r for r in found}
    assert len(by_window) == len(found)  # one record per window and version

    # every prediction in its window: the late ones inside the bound too; the ones beyond it nowhere
    assert {key: r["predictions"] for key, r in by_window.items()} == expected
    for record in by_window.values():
        assert record["window_end"] - record["window_start"] == WINDOW_MS
        assert record["service"] == "drifty"
        assert record["model_name"] == "drifty"

    # version 1: no alarm before the shift, drift in the first shifted window, on amount and the score only
    assert [by_window["1", w]["drifted"] for w in range(4)] == [False] * 4
    for window in (4, 5):
        assert by_window["1", window]["drifted"]
        assert set(by_window["1", window]["drifted_columns"]) == {"amount", "score"}
        columns = {c["name"]: c for c in by_window["1", window]["columns"]}
        assert columns["amount"]["psi"] >= 0.2
        assert columns["channel"]["psi"] < 0.1
        assert columns["score"]["wasserstein"] > 0
    # version 2 (the canary) is judged on its own: drifted from its first window, never mixed with version 1
    assert all(by_window["2", w]["drifted"] for w in range(4))
    # version 3 has no profile: counted, not judged; a window under min_count is not judged either
    assert (by_window["3", 6]["profiled"], by_window["3", 6]["drifted"]) == (False, False)
    assert (by_window["1", 9]["judged"], by_window["1", 9]["drifted"]) == (False, False)
    assert all(r["psi_threshold"] == 0.2 for r in found)
