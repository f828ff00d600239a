"""Comparison 5: the product categorization runtime's encoder (MiniLM) on GPU vs CPU, batch 1 / 32 / 256.

Runs only where the model-server environment sees a GPU (``torch.cuda.is_available()``); elsewhere the
comparison is recorded as skipped with the reason. The timing itself runs in the server environment
(``python -m bench.gpu --worker``), where torch and the runtime's embedding helper live.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, SERVER_PY, BenchError, Options, say

BATCHES = (1, 32, 256)


def gpu(options: Options) -> dict[str, Any]:
    """Measure on GPU and CPU, or return ``{"skipped": reason, "rows": [...]}``."""
    if options.quick and not any(Path("/dev").glob("nvidia[0-9]*")):
        # no NVIDIA device node: no CUDA device either (saves importing torch, ~5 s, in --quick)
        reason = "no GPU: no /dev/nvidia* device on this machine"
        say(f"gpu: skipped ({reason})")
        return {"skipped": reason, "rows": [_row(None, None, reason)]}
    probe = subprocess.run(
        [str(SERVER_PY), "-c", "import torch, json; print(json.dumps([torch.cuda.is_available(), torch.__version__]))"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if probe.returncode != 0:
        raise BenchError(f"torch is not importable in {SERVER_PY}: run `make setup`")
    available, torch_version = json.loads(probe.stdout)
    if not available:
        reason = f"no GPU: torch {torch_version}.cuda.is_available() is False in the model-server environment"
        say(f"gpu: skipped ({reason})")
        return {"skipped": reason, "rows": [_row(None, None, reason)]}
    seconds = 1.0 if options.quick else 3.0
    done = subprocess.run(
        [str(SERVER_PY), "-m", "bench.gpu", "--worker", str(seconds)],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise BenchError(f"gpu benchmark failed: {done.stderr.strip().splitlines()[-1:]}")
    cells: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    by = {(c["device"], c["batch"]): c for c in cells}
    gpu256, cpu256 = by[("cuda", 256)]["rows_per_s"], by[("cpu", 256)]["rows_per_s"]
    for cell in cells:
        say(f"gpu {cell['device']} batch {cell['batch']}: {cell['rows_per_s']:,.0f} rows/s")
    return {"cells": cells, "rows": [_row(gpu256, cpu256, None)]}


def _row(gpu_rps: float | None, cpu_rps: float | None, skipped: str | None) -> dict[str, Any]:
    ratio = gpu_rps / cpu_rps if gpu_rps and cpu_rps else float("nan")
    return {
        "id": "gpu_batch256",
        "comparison": "gpu",
        "metric": "product runtime encoder rows/s at batch 256, GPU vs CPU"
        + (f" - SKIPPED: {skipped}" if skipped else ""),
        "unit": "rows/s",
        "vatic": gpu_rps if gpu_rps is not None else float("nan"),
        "baseline": cpu_rps if cpu_rps is not None else float("nan"),
        "ratio": ratio,
        "target": "GPU vs CPU (no target in the issue)",
        "met": None if skipped else True,
        "skipped": skipped,
    }


def _worker(seconds: float) -> None:  # runs in the server environment
    from vatic.examples.product_categorization.embedding import embed, load_encoder

    texts = [f"stainless steel water bottle {i} with insulated lid, 750 ml" for i in range(256)]
    cells = []
    for device in ("cuda", "cpu"):
        encoder = load_encoder(device)
        for batch in BATCHES:
            chunk = texts[:batch]
            embed(encoder, chunk, batch_size=batch)
            times: list[float] = []
            end = time.perf_counter() + seconds
            while time.perf_counter() < end or len(times) < 3:
                start = time.perf_counter()
                embed(encoder, chunk, batch_size=batch)
                times.append(time.perf_counter() - start)
            times.sort()
            p50 = times[len(times) // 2]
            cells.append({"device": device, "batch": batch, "p50_ms": p50 * 1000, "rows_per_s": batch / p50})
    print(json.dumps(cells))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker(float(sys.argv[2]))
    else:
        sys.exit("usage: python -m bench.gpu --worker SECONDS (the harness runs it)")
