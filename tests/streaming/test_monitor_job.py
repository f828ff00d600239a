"""The drift monitor on real processes: Kafka, the schema registry, PyFlink (``vatic monitor run``) and a local
model registry holding the reference profiles.

Predictions are written to the predictions topic as the pipeline writes them (vatic's Avro codec, the stack's
registry), with event times on a 10 s window grid: version 1 unshifted for four windows then with ``amount``
tripled, version 2 (a canary) shifted from the start, version 3 without a profile, version 4 unshifted for 20
windows (the false-alarm rate); late predictions inside and beyond the lateness bound; and bytes that are no
prediction. The drift topic must say exactly that.
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
FALSE_ALARM_WINDOWS = 20


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


def _window(rng, version: str, window: int, n: int, *, shift: float = 1.0) -> list[dict[str, Any]]:
    """``n`` predictions of ``version`` spread over ``window``, in event-time order."""
    amount, channel = _values(rng, n, shift)
    times = sorted(int(t) for t in rng.integers(0, WINDOW_MS, n))
    base = T0 + window * WINDOW_MS
    return [_prediction(version, base + t, a, c) for t, a, c in zip(times, amount, channel, strict=True)]


def test_drift_is_found_per_version_and_window_and_late_predictions_count_where_they_belong(
    kafka_bootstrap, registry_url, tmp_path
):
    topic = f"monitor-{uuid.uuid4().hex[:8]}.predictions"
    registry = tmp_path / "registry"
    for version in ("1", "2", "4"):
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
    for window in range(FALSE_ALARM_WINDOWS):
        # version 4: never shifted, 20 windows: the false-alarm rate of the whole job, not of the statistics alone
        records += _window(rng, "4", window, 250)
        expected["4", window] = 250
    for window in range(7):
        records += _window(rng, "1", window, 400, shift=3.0 if window >= 4 else 1.0)
        expected["1", window] = 400
    for window in range(4):
        records += _window(rng, "2", window, 200, shift=3.0)  # the canary, shifted from the start
        expected["2", window] = 200
    records += _window(rng, "3", 6, 150)
    expected["3", 6] = 150
    records += _window(rng, "1", 9, 1)  # under min_count: reported, not judged
    expected["1", 9] = 1
    records.sort(key=lambda r: r["timings"]["event_time"])  # in event-time order, but for the late ones below
    # late predictions of window 4 arriving 3 s into window 5: the watermark (newest event time - 4 s) has not
    # passed window 4's end, so they count in window 4
    cut = T0 + 5 * WINDOW_MS + 3000
    at = next(i for i, r in enumerate(records) if r["timings"]["event_time"] >= cut)
    records[at:at] = _window(rng, "1", 4, 60, shift=3.0)
    expected["1", 4] += 60
    # beyond the bound: window 2 closed long ago (these come after more than a batch of later predictions)
    too_late = _window(rng, "1", 2, 40)

    producer = Producer(settings)
    for record in records:
        producer.produce(topic, codec.encode(record), record["model_version"].encode())
    producer.produce(topic, b"not a prediction", b"junk")
    for record in too_late:
        producer.produce(topic, codec.encode(record), b"1")
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
    # the false-alarm rate over 20 windows of an unshifted version (seeded data: the same windows every run)
    alarms = [w for w in range(FALSE_ALARM_WINDOWS) if by_window["4", w]["drifted"]]
    assert alarms == [], f"false alarms in windows {alarms} of {FALSE_ALARM_WINDOWS}"
    assert max(c["psi"] for w in range(FALSE_ALARM_WINDOWS) for c in by_window["4", w]["columns"]) < 0.2
