"""``make bench-gpu`` without a GPU: one skip line, exit 0, and the skipped rows in summary.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import ROOT
from bench.gpu import no_gpu, request_body


def test_without_a_gpu_the_service_benchmark_skips_with_one_line(tmp_path: Path) -> None:
    if any(Path("/dev").glob("nvidia[0-9]*")):
        pytest.skip("this machine has an NVIDIA device: the skip path does not apply")
    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--service", "--results", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("bench.gpu: skipped - no GPU: no /dev/nvidia* device on this machine")
    stored = json.loads((tmp_path / "summary.json").read_text())
    targets = {t["id"]: t for t in stored["targets"]}
    assert targets["gpu_service_throughput"]["met"] is None
    assert "SKIPPED: no GPU" in targets["gpu_service_throughput"]["metric"]
    assert targets["gpu_batch256"]["met"] is None
    assert json.loads((tmp_path / "gpu.json").read_text())["skipped"] == no_gpu()
    assert "Skipped: no GPU" in (tmp_path / "report.md").read_text()


def test_the_request_is_a_v2_body_of_the_product_model_s_inputs() -> None:
    body = request_body(3)
    text, mix = body["inputs"]
    assert (text["name"], text["datatype"], text["shape"], len(text["data"])) == ("text", "BYTES", [3, 2], 6)
    assert (mix["name"], mix["datatype"], mix["shape"], len(mix["data"])) == ("seller_mix", "FP32", [3, 10], 30)
