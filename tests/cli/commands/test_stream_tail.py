"""``vatic stream tail --dedupe``: a replayed output (at-least-once) is printed once, on a real broker and registry."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.serving.gateway.test_gateway import echo_service
from vatic.connectors.kafka import KafkaSettings, Producer
from vatic.connectors.schema_registry import ConfluentSchemaRegistry
from vatic.schemas import AvroCodec, load_schema, topic_subject
from vatic.serving.core import SourceRecord, dead_letter

VATIC = Path(__file__).resolve().parents[3] / ".venv" / "pipeline" / "bin" / "vatic"


def _tail(folder: Path, registry_url: str, kafka_bootstrap: str, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [
        str(VATIC), "stream", "tail", str(folder), "--dead-letters", "--from-beginning", "--timeout-s", "5",
        "--schema-registry-url", registry_url, *extra,
    ]  # fmt: skip
    env = {**os.environ, "VATIC_STREAM_BOOTSTRAP_SERVERS": kafka_bootstrap}
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, env=env)


def test_tail_dedupe_prints_a_replayed_dead_letter_once(
    kafka_bootstrap: str, registry_url: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    dlq = new_topic("tail-dlq", partitions=1)
    folder = echo_service(tmp_path / "service", tmp_path, name="echo")
    text = (folder / "service.yaml").read_text().replace("t.dlq", dlq)
    (folder / "service.yaml").write_text(text)
    with ConfluentSchemaRegistry(registry_url) as registry:
        codec = AvroCodec(registry, topic_subject(dlq), load_schema("dead_letter"))
        producer = Producer(KafkaSettings(bootstrap_servers=kafka_bootstrap))
        # the dead letters of input offsets 7 and 8, then offset 7 again: a replay by a later worker incarnation
        for offset, attempt in ((7, b"1000"), (8, b"1000"), (7, b"2000")):
            source = SourceRecord("t.in", 0, offset, b"c1", f"garbage {offset}".encode())
            value = dead_letter(service="echo", stage="decode", error_class="MalformedRecord", message="not Avro",
                                attempts=1, source=source)  # fmt: skip
            headers = [("vatic-source", f"t.in/0/{offset}".encode()), ("vatic-attempt", attempt)]
            producer.produce(dlq, codec.encode(value), b"c1", headers)
        producer.flush()

    plain = _tail(folder, registry_url, kafka_bootstrap)
    assert plain.returncode == 0, plain.stderr
    assert [json.loads(line)["offset"] for line in plain.stdout.splitlines()] == [7, 8, 7]
    assert "--dedupe" not in plain.stderr

    deduped = _tail(folder, registry_url, kafka_bootstrap, "--dedupe")
    assert deduped.returncode == 0, deduped.stderr
    assert [json.loads(line)["offset"] for line in deduped.stdout.splitlines()] == [7, 8]
    assert "--dedupe: 1 duplicate(s) skipped" in deduped.stderr
