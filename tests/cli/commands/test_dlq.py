"""``vatic dlq list|replay`` as an operator runs them, on a real broker and registry: counts first, a dry run that
writes nothing, ``--apply`` that writes each selected dead letter's original record once, clear one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.serving.gateway.test_gateway import echo_service
from vatic.connectors.dlq import REPLAY_OF, REPLAYS
from vatic.connectors.kafka import KafkaSettings, Producer, scan
from vatic.connectors.schema_registry import ConfluentSchemaRegistry
from vatic.schemas import AvroCodec, load_schema, topic_subject
from vatic.serving.core import SourceRecord, dead_letter

VATIC = Path(__file__).resolve().parents[3] / ".venv" / "pipeline" / "bin" / "vatic"


def _dlq(folder: Path, registry_url: str, kafka_bootstrap: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(VATIC), "dlq", *args[:1], str(folder), "--schema-registry-url", registry_url, *args[1:]]
    env = {**os.environ, "VATIC_STREAM_BOOTSTRAP_SERVERS": kafka_bootstrap}
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, env=env)


@pytest.fixture
def service(kafka_bootstrap: str, registry_url: str, new_topic: Callable[..., str], tmp_path: Path):
    """An echo service on fresh topics whose dead-letter topic holds 4 decode and 3 enrich failures."""
    source, dlq = new_topic("cli-dlq-in", partitions=1), new_topic("cli-dlq", partitions=1)
    folder = echo_service(tmp_path / "service", tmp_path, name="echo")
    text = (folder / "service.yaml").read_text().replace("t.dlq", dlq).replace("t.in", source)
    (folder / "service.yaml").write_text(text)
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    with ConfluentSchemaRegistry(registry_url) as registry:
        codec = AvroCodec(registry, topic_subject(dlq), load_schema("dead_letter"))
        producer = Producer(settings)
        for offset in range(7):
            stage, error = ("decode", "DecodeError") if offset < 4 else ("enrich", "MissingFeatures")
            record = SourceRecord(source, 0, offset, f"c{offset}".encode(), f"bytes {offset}".encode())
            value = dead_letter(service="echo", stage=stage, error_class=error, message="no good", attempts=1,
                                source=record)  # fmt: skip
            producer.produce(dlq, codec.encode(value), record.key)
        producer.flush()
    return folder, source, dlq, settings


def test_list_counts_dead_letters_by_stage_and_error_class(service, registry_url, kafka_bootstrap):
    folder, _, dlq, _ = service
    table = _dlq(folder, registry_url, kafka_bootstrap, "list", "--show", "2")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == f"{dlq}: 7 dead letter(s) selected"
    rows = {tuple(line.split()[:4]) for line in lines[2:4]}
    assert rows == {("decode", "DecodeError", "4", "0"), ("enrich", "MissingFeatures", "3", "0")}
    shown = [json.loads(line) for line in lines[4:]]
    assert [s["position"] for s in shown] == [f"{dlq}/0/0", f"{dlq}/0/1"]

    only = _dlq(folder, registry_url, kafka_bootstrap, "list", "--json", "--stage", "enrich", "--since", "1h")
    assert only.returncode == 0, only.stderr
    summary = json.loads(only.stdout)
    assert summary["selected"] == 3
    assert [(g["stage"], g["count"]) for g in summary["groups"]] == [("enrich", 3)]
    none = _dlq(folder, registry_url, kafka_bootstrap, "list", "--json", "--until", "2020-01-01T00:00:00")
    assert json.loads(none.stdout)["selected"] == 0


def test_replay_is_a_dry_run_until_apply_then_writes_each_selected_record_once(service, registry_url, kafka_bootstrap):
    folder, source, _, settings = service
    dry = _dlq(folder, registry_url, kafka_bootstrap, "replay", "--error-class", "MissingFeatures")
    assert dry.returncode == 0, dry.stderr
    assert "3 dead letter(s) selected" in dry.stdout
    assert "to replay: 3;" in dry.stdout
    assert "dry run: nothing written" in dry.stdout
    assert list(scan(source, settings)) == []

    applied = _dlq(folder, registry_url, kafka_bootstrap, "replay", "--error-class", "MissingFeatures", "--apply")
    assert applied.returncode == 0, applied.stderr
    assert f"replayed 3 record(s) into {source}" in applied.stdout
    replayed = list(scan(source, settings))
    assert sorted(r.value for r in replayed) == [b"bytes 4", b"bytes 5", b"bytes 6"]
    assert all(dict(r.headers)[REPLAYS] == b"1" and REPLAY_OF in dict(r.headers) for r in replayed)

    again = _dlq(folder, registry_url, kafka_bootstrap, "replay", "--apply")  # every dead letter this time
    assert again.returncode == 0, again.stderr
    assert "to replay: 4; skipped: 3 replayed before" in again.stdout
    assert len(list(scan(source, settings))) == 7  # the 3 once, the 4 others once
    listed = json.loads(_dlq(folder, registry_url, kafka_bootstrap, "list", "--json").stdout)
    assert {g["stage"]: g["replayed"] for g in listed["groups"]} == {"decode": 4, "enrich": 3}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["list", "--since", "yesterday-ish"], "--since 'yesterday-ish': give an ISO 8601 time"),
        (["replay", "--stage", "enrichment"], "--stage enrichment: the stages are decode, enrich, infer"),
        (["list", "--from-offset", "5", "--to-offset", "2"], "--from-offset 5 is after --to-offset 2"),
    ],
)
def test_a_bad_selection_is_one_line_and_exit_2(registry_url, kafka_bootstrap, tmp_path, args, message):
    folder = echo_service(tmp_path / "service", tmp_path, name="echo")
    result = _dlq(folder, registry_url, kafka_bootstrap, *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"vatic: {message}")
