"""``vatic compare`` on a real broker and registry: prediction events of two versions and a shadow, written with
the prediction schema as the job writes them, summarised as a table, JSON and a PNG; and the numbers behind it."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.serving.gateway.test_gateway import echo_service
from vatic.connectors.kafka import KafkaSettings, Producer
from vatic.connectors.schema_registry import ConfluentSchemaRegistry
from vatic.schemas import AvroCodec, load_schema, topic_subject
from vatic.serving.core.experiments import compare

VATIC = Path(__file__).resolve().parents[3] / ".venv" / "pipeline" / "bin" / "vatic"


def prediction(event_id: str, version: str, score: float, label: str, *, model: str = "faulty") -> dict[str, Any]:
    now = time.time_ns() // 1_000_000
    return {
        "event_id": event_id, "service": "echo", "origin": "STREAM", "entity_keys": {}, "model_name": model,
        "model_version": version, "outputs": {"score": score, "label": label}, "features": {},
        "timings": {"event_time": now, "received_time": now, "enrich_ms": None, "infer_ms": 1.0, "emit_time": now},
    }  # fmt: skip


def test_compare_sums_up_versions_and_the_shadow():
    ids = [str(i) for i in range(100)]
    main = [prediction(i, "2" if int(i) < 30 else "1", int(i) / 100, "a") for i in ids]
    # the shadow answers 80 of them: +0.005 on the first 60 (agree within 0.01), +0.5 on the rest
    shadows = [prediction(i, "3", int(i) / 100 + (0.005 if int(i) < 60 else 0.5), "a") for i in ids[:80]]
    shadows.append(shadows[0])  # a duplicate counts once
    shadows.append(prediction("elsewhere", "3", 0.1, "a"))  # an event the serving side has not answered
    result = compare(main, shadows, tolerance=0.01)
    assert result.versions == {"1": 70, "2": 30}
    assert result.by_version["2"]["score"].count == 30
    assert result.by_version["2"]["score"].p50 == pytest.approx(0.145)
    assert result.by_version["1"]["score"].mean == pytest.approx(sum(range(30, 100)) / 70 / 100)
    assert (result.shadow, result.joined, result.agreed) == ("faulty:3", 80, 60)
    assert result.agreement == pytest.approx(0.75)
    assert result.mean_abs_diff["score"] == pytest.approx((60 * 0.005 + 20 * 0.5) / 80)
    assert "label" not in result.by_version["1"]  # not a number: agreement only


@pytest.fixture
def service(kafka_bootstrap: str, registry_url: str, new_topic: Callable[..., str], tmp_path: Path) -> Path:
    out, shadow = new_topic("cmp-out", partitions=2), new_topic("cmp-shadow", partitions=2)
    folder = echo_service(tmp_path / "service", tmp_path, name="echo")
    body = yaml.safe_load((folder / "service.yaml").read_text())
    body["serving"] = {"tier": "low-code", "implementation": "faulty_runtime.FaultyModel"}
    body["streaming"] |= {"output_topic": out, "shadow_topic": shadow}
    body["shadow"] = {"version": "3", "tolerance": 0.01}
    body["canary"] = {"version": "2", "weight": 0.3}
    (folder / "service.yaml").write_text(yaml.safe_dump(body))
    producer = Producer(KafkaSettings(bootstrap_servers=kafka_bootstrap))
    with ConfluentSchemaRegistry(registry_url) as registry:
        codecs = {t: AvroCodec(registry, topic_subject(t), load_schema("prediction")) for t in (out, shadow)}
        for i in range(200):
            event_id = str(uuid.uuid4())
            producer.produce(out, codecs[out].encode(prediction(event_id, "2" if i % 4 == 0 else "1", i / 200, "a")))
            if i % 2 == 0:
                score = i / 200 + (0.0 if i % 4 == 0 else 0.3)
                producer.produce(shadow, codecs[shadow].encode(prediction(event_id, "3", score, "a")))
        producer.flush()
    return folder


def _compare(folder: Path, registry_url: str, kafka_bootstrap: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(VATIC), "compare", str(folder), "--schema-registry-url", registry_url, *args]
    env = {**os.environ, "VATIC_STREAM_BOOTSTRAP_SERVERS": kafka_bootstrap}
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, env=env)


def test_the_command_prints_a_table_json_and_draws_a_png(service, registry_url, kafka_bootstrap, tmp_path):
    png = tmp_path / "compare.png"
    done = _compare(service, registry_url, kafka_bootstrap, "--png", str(png))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "200 prediction(s)" in lines[0]
    assert lines[1] == "answers by version: 1: 150, 2: 50"
    assert "shadow faulty:3: 100 event(s) both answered, 50.0% agree" in done.stdout
    assert any(line.lstrip().startswith("version 2") and " 50 " in line for line in lines)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 5_000  # a drawn figure, not an empty canvas

    as_json = json.loads(_compare(service, registry_url, kafka_bootstrap, "--json").stdout)
    assert as_json["versions"] == {"1": 150, "2": 50}
    assert (as_json["joined"], as_json["agreed"]) == (100, 50)
    assert as_json["mean_abs_diff"]["score"] == pytest.approx(0.15)


def test_a_window_with_nothing_in_it_says_so(service, registry_url, kafka_bootstrap):
    future = str(time.time_ns() // 1_000_000 + 3_600_000)
    done = _compare(service, registry_url, kafka_bootstrap, "--since", future)
    assert done.returncode == 0, done.stderr
    assert "0 prediction(s)" in done.stdout
    assert "shadow: none in the window" in done.stdout
