"""Smoke tests of the benchmark harness itself (bench/): the Go load generator against a tiny local HTTP server,
profile summaries, option parsing, and summary/report writing from a small result set. No timed assertions:
the numbers are whatever this machine gives; only their shape and consistency are checked.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.common import BenchError, Options, build_loadgen, run_load, summarize_profile
from bench.run import parse

GO = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").is_file() else None)


class _Handler(BaseHTTPRequestHandler):
    """POST /ok answers the body's length as JSON; any other path answers 500."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        status = 200 if self.path == "/ok" else 500
        payload = json.dumps({"received": len(body)}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if GO is None:
        pytest.skip("Go is not installed: the load generator cannot be built")
    return build_loadgen(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def bodies(tmp_path: Path) -> Path:
    path = tmp_path / "bodies.jsonl"
    path.write_text('{"a": 1}\n{"b": 2}\n')
    return path


def _consistent(raw: dict[str, Any]) -> None:
    assert raw["count"] > 0
    assert raw["errors"] == 0
    assert 0 < raw["p50_ms"] <= raw["p90_ms"] <= raw["p99_ms"] <= raw["max_ms"]
    fractions = [q for _, q in raw["cdf"]]
    values = [v for v, _ in raw["cdf"]]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1
    assert values == sorted(values)
    assert values[-1] == raw["max_ms"]
    assert raw["statuses"] == {"200": raw["count"]}


def test_closed_loop(loadgen: Path, server: str, bodies: Path) -> None:
    result = run_load(loadgen, server + "/ok", bodies=bodies, concurrency=4, duration_s=0.5, warmup_s=0.1)
    assert result.raw["mode"] == "closed"
    assert result.raw["concurrency"] == 4
    _consistent(result.raw)
    assert result.rps == pytest.approx(result.raw["count"] / 0.5)


def test_open_loop_sends_at_the_rate(loadgen: Path, server: str, bodies: Path) -> None:
    result = run_load(loadgen, server + "/ok", bodies=bodies, rate=200, duration_s=0.5, warmup_s=0.1)
    assert result.raw["mode"] == "open"
    assert result.raw["target_rate"] == 200
    _consistent(result.raw)
    # open loop: exactly the scheduled requests of the measured window are counted
    assert result.raw["count"] == 100


def test_errors_are_counted_and_a_dead_target_is_one_line(loadgen: Path, server: str, bodies: Path) -> None:
    with pytest.raises(BenchError, match=r"every request to .*/fail failed: HTTP 500"):
        run_load(loadgen, server + "/fail", bodies=bodies, concurrency=1, duration_s=0.3, warmup_s=0.1)


def test_profile_summary(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(
        "process 1:main;<module> (a/run.py:1);work (pkg/mod.py:10);parse (pkg/json.py:3) 30\n"
        "process 1:main;<module> (a/run.py:1);work (pkg/mod.py:10) 10\n"
        "process 1:main;<module> (a/run.py:1);idle (pkg/loop.py:5) 60\n"
    )
    summary = summarize_profile(raw)
    assert summary["samples"] == 100
    assert summary["self"][0] == ["idle (pkg/loop.py)", 60.0]
    assert ["work (pkg/mod.py)", 40.0] in summary["inclusive"]
    assert summarize_profile(tmp_path / "absent.txt")["samples"] == 0


def test_options() -> None:
    quick = parse(["--quick", "--only", "rest,features"])
    assert quick.quick
    assert quick.repeats == 1
    assert quick.only == ["rest", "features"]
    assert quick.wants("rest")
    assert not quick.wants("streaming")
    assert parse([]).repeats == 3
    with pytest.raises(SystemExit):
        parse(["--only", "nonsense"])


def _row(comparison: str, ident: str, vatic: float, baseline: float, target: str, met: bool) -> dict[str, Any]:
    return {
        "id": ident, "comparison": comparison, "metric": ident, "unit": "x", "vatic": vatic,
        "baseline": baseline, "ratio": vatic / baseline, "target": target, "met": met,
    }  # fmt: skip


def test_summary_and_report(tmp_path: Path) -> None:
    cell = {"rps": 100.0, "p50_ms": 1.0, "p99_ms": 2.0, "errors": 0}
    cdf = [[0.5, 0.1], [1.0, 0.5], [2.0, 1.0]]
    results = {
        "rest": {
            "closed": {"stock": {"1": cell, "16": cell}, "vatic": {"1": cell, "16": {**cell, "rps": 300.0}}},
            "open": {"stock": {"rate": 50, "p50_ms": 1, "p99_ms": 2, "cdf": cdf}},
            "rows": [_row("rest", "rest_c16_throughput", 300.0, 100.0, ">= 2.5x", True)],
            "profiles": {},
        },
        "streaming": {
            "vatic_runs": {"1": [{"eps": 4000.0}]},
            "naive_runs": [{"eps": 500.0}],
            "by_parallelism": {"1": 4000.0},
            "best_parallelism": 1,
            "batch_sweep": {"1": 900.0, "64": 4000.0},
            "latency": {
                n: {"rate": 10, "p50_ms": 5, "p99_ms": 9, "max_ms": 9, "received": 3, "sent": 3, "cdf": cdf}
                for n in ("vatic", "naive")
            },
            "rows": [_row("streaming", "streaming_vs_naive", 4000.0, 500.0, ">= 10x", False)],
            "profiles": {"vatic-job": {"samples": 10, "self": [["f (a.py)", 60.0]], "inclusive": [["g (b.py)", 90.0]]}},
        },
        "gpu": {"skipped": "no GPU", "rows": []},
    }
    options = Options(quick=True, repeats=1, results=tmp_path)
    summary = report.write(results, options, datetime.now(UTC), tmp_path)
    stored = json.loads((tmp_path / "summary.json").read_text())
    assert stored["targets"] == json.loads(json.dumps(summary["targets"]))
    assert {t["id"]: t["met"] for t in stored["targets"]} == {"rest_c16_throughput": True, "streaming_vs_naive": False}
    assert {t["id"]: t["ratio"] for t in stored["targets"]} == {"rest_c16_throughput": 3.0, "streaming_vs_naive": 8.0}
    assert stored["machine"]["cores"]
    assert "mlserver" in stored["versions"]
    text = (tmp_path / "report.md").read_text()
    assert "| streaming | streaming_vs_naive (x) | 4,000 | 500 | 8.00x | >= 10x | **no**: short by 1.25x" in text
    assert "`f (a.py)`" in text
    assert "Skipped: no GPU" in text
    for image in ("rest_throughput.png", "latency_cdf.png", "batch_size.png"):
        assert (tmp_path / image).read_bytes()[:4] == b"\x89PNG"
        assert f"]({image})" in text


def test_servers_needed_up_front_follow_the_selected_comparisons() -> None:
    from bench.run import needed

    assert needed(parse(["--only", "features"])) == ["redis"]
    assert needed(parse(["--only", "batching,features"])) == ["fraud-model", "batched", "redis"]
    everything = needed(parse([]))
    assert sorted(everything) == sorted(["kafka", "redis", "fraud-model", "gateway", "stock", "batched"])
    assert len(everything) == len(set(everything))


def test_dependent_servers_start_in_a_second_wave(tmp_path: Path) -> None:
    """``gateway`` and ``batched`` start only after what they read from runs; the others start together."""
    from bench.stack import BenchStack

    stack = BenchStack(parse(["--results", str(tmp_path)]))
    waves: list[list[str]] = []
    stack._missing = lambda name: True  # type: ignore[method-assign]  # nothing runs: every name starts
    stack._start_all = lambda names: waves.append(list(names))  # type: ignore[method-assign]
    stack.need("gateway", "stock", "batched")
    assert waves == [["stock", "fraud-model", "redis"], ["gateway", "batched"]]


def test_report_only_keeps_the_measuring_run_s_machine_and_times(tmp_path: Path) -> None:
    from bench.run import rerender

    results = {"gpu": {"skipped": "no GPU", "rows": []}}
    options = Options(quick=True, repeats=1, results=tmp_path)
    report.write(results, options, datetime(2026, 1, 2, tzinfo=UTC), tmp_path)
    stored = json.loads((tmp_path / "summary.json").read_text())
    stored["raw"] = results
    stored["finished"] = "2026-01-02T00:10:00+00:00"
    stored["machine"] = {**stored["machine"], "cpu_model": "the measuring box", "load_avg_1m_at_start": 1.5}
    stored["versions"] = {**stored["versions"], "mlserver": "1.7.1-measured"}
    (tmp_path / "summary.json").write_text(json.dumps(stored))
    again = rerender(Options(results=tmp_path, report_only=True), tmp_path / "summary.json")
    for key in ("date", "finished", "machine", "versions"):
        assert again[key] == stored[key]
    assert "the measuring box" in (tmp_path / "report.md").read_text()


def test_the_batched_peer_drains_a_topic_exactly_once_with_two_processes(
    kafka_bootstrap: str, new_topic: Any, tmp_path: Path
) -> None:
    """bench/peer.py, 2 processes in one group, against the real broker: 200 undecodable inputs (dead-lettered in
    the decode stage, before any model call: no model server needed) come out as exactly 200 committed dead
    letters, one per input offset - none lost, none twice - and nothing else."""
    import subprocess
    import sys
    import uuid

    import yaml
    from confluent_kafka import Consumer, Producer, TopicPartition

    from tests.fixtures import feast_repo
    from tests.serving.gateway.test_gateway import echo_service

    source, output, dead = new_topic("peer-in", 2), new_topic("peer-out", 2), new_topic("peer-dlq", 2)
    folder = echo_service(tmp_path / "service", feast_repo.build_repo(tmp_path / "feast"), name="echo")
    config = yaml.safe_load((folder / "service.yaml").read_text())
    config["streaming"].update({"input_topic": source, "output_topic": output, "dead_letter_topic": dead})
    (folder / "service.yaml").write_text(yaml.safe_dump(config))
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(200):
        producer.produce(source, f"not avro {i}".encode(), key=f"k{i}".encode())
    producer.flush(30)
    group = f"peer-test-{uuid.uuid4().hex[:6]}"
    argv = [
        sys.executable, "-m", "bench.peer", "--service-dir", str(folder), "--model-url", "http://127.0.0.1:9",
        "--bootstrap", kafka_bootstrap, "--schema-store", str(tmp_path / "schemas"), "--group", group,
        "--members", "2", "--idle-exit-s", "3", "--commit-interval-ms", "0",
    ]  # fmt: skip
    root = Path(__file__).resolve().parents[2]
    procs = [
        subprocess.Popen([*argv, "--member", str(m)], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for m in range(2)
    ]
    done = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err.decode()[-2000:] for _, err in done]
    processed = [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in done]
    assert sum(p["processed"] for p in processed) == 200
    assert all(p["transactions"] >= 1 for p in processed if p["processed"])

    reader = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"peer-read-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    reader.subscribe([output, dead])
    sources: list[str] = []
    outputs = 0
    for _ in range(60):
        for msg in reader.consume(500, 0.5):
            if msg.error():
                continue
            if msg.topic() == output:
                outputs += 1
            else:
                source_header = dict(msg.headers() or [])["vatic-source"]
                assert isinstance(source_header, bytes)
                sources.append(source_header.decode())
        if len(sources) >= 200:
            break
    expected = set()
    for partition in range(2):
        low, high = reader.get_watermark_offsets(TopicPartition(source, partition), timeout=10)
        expected |= {f"{source}/{partition}/{offset}" for offset in range(low, high)}
    reader.close()
    assert outputs == 0
    assert len(expected) == 200
    assert sorted(sources) == sorted(expected)  # every input once: none lost, none twice


def test_peer_and_visible_rows_and_report_sections(tmp_path: Path) -> None:
    """The peers' target rows (a peer that could not run is a skipped row with its reason, never a failure) and
    the report sections of comparisons 7 and 8."""
    from bench.peers import _rows as peer_rows
    from bench.visible import PROFILES, _row

    def lat(rate: float, p99: float, visible_p99: float) -> dict[str, Any]:
        seen = {"received": 10, "p50_ms": visible_p99 / 2, "p99_ms": visible_p99, "max_ms": visible_p99}
        return {
            "rate": rate,
            "sent": 10,
            "received": 10,
            "p50_ms": p99 / 2,
            "p99_ms": p99,
            "max_ms": p99,
            "visible": seen,
        }

    vatic = {"eps": 4000.0, "latency": lat(2000, 40, 5200)}
    batched = {"runs": [{"eps": 5000.0}], "eps": 5000.0, "latency": lat(2500, 30, 150)}
    rows = peer_rows("batched", vatic, batched, None) + peer_rows("quix", vatic, None, "Quix Streams unavailable")
    by_id = {r["id"]: r for r in rows}
    assert by_id["peer_batched_max"]["met"] is False  # 0.8x
    assert by_id["peer_batched_max_floor"]["met"] is True  # >= 0.75x
    assert by_id["peer_batched_p99"]["met"] is False  # 40 ms vs 30 ms
    assert by_id["peer_batched_visible_p99"]["met"] is False
    assert all(by_id[f"peer_quix_{m}"]["met"] is None for m in ("max", "max_floor", "p99", "visible_p99"))
    delivery = {name: {**lat(2000, 40, bound * 0.9), "curve": []} for name, (_, bound) in PROFILES.items()}
    visible_rows = [_row(f"visible_{name}_p99", name, delivery[name]["visible"]["p99_ms"], b)
                    for name, (_, b) in PROFILES.items()]  # fmt: skip
    assert all(r["met"] for r in visible_rows)
    assert _row("x", "x", 101.0, 100.0)["met"] is False
    results = {
        "peers": {"vatic": vatic, "batched": batched, "skipped_peers": {"quix": "Quix Streams unavailable"},
                  "members": 2, "rows": rows, "profiles": {}},
        "visible": {"max_eps": 4000.0, "max_eps_1s": 3800.0, "parallelism": 2, "delivery": delivery,
                    "rows": visible_rows},
    }  # fmt: skip
    summary = report.write(results, Options(quick=True, repeats=1, results=tmp_path), datetime.now(UTC), tmp_path)
    assert summary["targets_met"] == "4/7"  # the 4 skipped Quix rows are not counted
    text = (tmp_path / "report.md").read_text()
    assert "| peers | max events/s, vatic job vs Quix Streams app (exactly-once): the floor" in text
    assert "skipped: Quix Streams unavailable |" in text
    assert "| batched consumer | 2 | 5,000 | 2,500/s | 15 / 30 | 75 / 150 |" in text
    assert "| exactly once 1s | 2,000/s | 20 / 40 | 675 / 1350 | 1350 |" in text
    assert "with 1 s 3,800" in text
