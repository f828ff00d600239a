"""Comparison 5: the product categorization model on GPU vs CPU.

* ``bench.run --only gpu``: the runtime's encoder (MiniLM) alone, batch 1 / 32 / 256, in the server environment
  (``python -m bench.gpu --worker``, where torch and the runtime's embedding helper live).
* ``make bench-gpu`` (``python -m bench.gpu --service``, under ``timeout 480``): *the same service* - the
  product categorization model server the stack runs (its service folder, copied with only ``serving.device``
  set: ``cuda``, then ``cpu``) - driven over V2 REST by an httpx client at a fixed concurrency with the same
  requests (``--rows`` products per request, ``--concurrency`` in flight, ``--seconds`` after a warm-up), while
  ``nvidia-smi`` samples GPU utilisation and memory every 0.5 s during the CUDA run. Prints the throughput ratio
  and the utilisation, then runs the encoder micro-benchmark; merges the rows into ``bench/results/summary.json``
  (the other comparisons' results are kept) and writes ``bench/results/gpu.json``.

Both run only where the model-server environment sees a GPU (a ``/dev/nvidia*`` device node and
``torch.cuda.is_available()``); elsewhere the comparison is recorded as skipped with the reason, and
``--service`` prints one ``bench.gpu: skipped - ...`` line and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/gpu.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, ROOT, SERVER_PY, BenchError, Options, percentile, say

BATCHES = (1, 32, 256)


def no_gpu(quick: bool = True) -> str | None:
    """Why there is no usable GPU (None when the server environment's torch sees one).

    Without an NVIDIA device node there is none (answered without importing torch, which takes seconds);
    ``quick=False`` asks torch even then (a GPU exposed another way)."""
    if quick and not any(Path("/dev").glob("nvidia[0-9]*")):
        return "no GPU: no /dev/nvidia* device on this machine"
    probe = subprocess.run(
        [str(SERVER_PY), "-c", "import torch, json; print(json.dumps([torch.cuda.is_available(), torch.__version__]))"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if probe.returncode != 0:
        raise BenchError(f"torch is not importable in {SERVER_PY}: run `make setup`")
    available, torch_version = json.loads(probe.stdout)
    if not available:
        return f"no GPU: torch {torch_version}.cuda.is_available() is False in the model-server environment"
    return None


def gpu(options: Options) -> dict[str, Any]:
    """Measure on GPU and CPU, or return ``{"skipped": reason, "rows": [...]}``."""
    reason = no_gpu(quick=options.quick)
    if reason is not None:
        say(f"gpu: skipped ({reason})")
        return {"skipped": reason, "rows": [_row(None, None, reason)]}
    return encoder_cells(1.0 if options.quick else 3.0)


def encoder_cells(seconds: float) -> dict[str, Any]:
    """The encoder micro-benchmark (GPU present): cells and the batch-256 row."""
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


# --- the service on CUDA vs CPU (make bench-gpu) -------------------------------------------------------------

PRODUCT_MODEL = "product-categorizer"


def service_folder(device: str, tmp: Path) -> Path:
    """A copy of the product categorization service folder with ``serving.device`` = ``device`` (and the feature
    repository's path made absolute); nothing else differs."""
    import yaml

    from bench.workload import SERVICE_DIR

    source = SERVICE_DIR.parent.parent / "product_categorization" / "service"
    config = yaml.safe_load((source / "service.yaml").read_text(encoding="utf-8"))
    config["serving"]["device"] = device
    if config.get("features", {}).get("repo"):
        config["features"]["repo"] = str((source / config["features"]["repo"]).resolve())
    folder = tmp / "gpu" / f"service-{device}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "service.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return folder


def request_body(rows: int, seller_features: int = 10) -> dict[str, Any]:
    """One V2 request of ``rows`` products (title + description, and a seller mix), the same for both devices."""
    titles = ["stainless steel water bottle", "wireless noise cancelling headphones", "hardcover cookbook",
              "wooden puzzle for toddlers", "merino wool running socks", "leather hiking boots"]  # fmt: skip
    texts = [[f"{titles[i % len(titles)]} {i}", "ships in two days; free returns within 30 days"] for i in range(rows)]
    mix = [[1.0 / seller_features] * seller_features for _ in range(rows)]
    return {
        "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [rows, 2], "data": [v for row in texts for v in row]},
            {"name": "seller_mix", "datatype": "FP32", "shape": [rows, seller_features],
             "data": [v for row in mix for v in row]},
        ]
    }  # fmt: skip


async def _drive(url: str, body: dict[str, Any], concurrency: int, seconds: float, warmup_s: float) -> dict[str, Any]:
    """Closed loop: ``concurrency`` clients send ``body`` back to back; counts after ``warmup_s``."""
    import httpx

    infer = f"{url}/v2/models/{PRODUCT_MODEL}/infer"
    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()
    measure_from, end = start + warmup_s, start + warmup_s + seconds

    async def client(http: httpx.AsyncClient) -> None:
        while (now := time.perf_counter()) < end:
            response = await http.post(infer, json=body)
            done = time.perf_counter()
            if response.status_code != 200:
                errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                if len(errors) > 20:
                    return
            elif now >= measure_from:
                latencies.append((done - now) * 1000)

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    if not latencies:
        raise BenchError(f"no request to {infer} succeeded: {errors[:1] or 'none finished in time'}")
    return {
        "requests": len(latencies),
        "rps": len(latencies) / seconds,
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "errors": len(errors),
    }


class GpuMonitor:
    """``nvidia-smi`` every 0.5 s (utilisation %, memory used MiB of one GPU) in a thread, while entered."""

    def __init__(self, interval_ms: int = 500) -> None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
        self.argv = [
            "nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
            f"-lms={interval_ms}", f"--id={visible or '0'}",
        ]  # fmt: skip
        self.samples: list[tuple[float, float]] = []
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def _read(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            parts = [p.strip() for p in line.split(",")]
            try:
                self.samples.append((float(parts[0]), float(parts[1])))
            except (ValueError, IndexError):
                continue

    def __enter__(self) -> GpuMonitor:
        if shutil.which("nvidia-smi") is None:
            return self
        self._proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {"samples": 0, "note": "nvidia-smi not found or printed nothing"}
        util = [u for u, _ in self.samples]
        return {
            "samples": len(util),
            "util_mean_pct": sum(util) / len(util),
            "util_max_pct": max(util),
            "memory_max_mib": max(m for _, m in self.samples),
        }


def measure_service(options: Options, device: str, *, rows: int, concurrency: int, seconds: float) -> dict[str, Any]:
    """Start the product model server on ``device`` (ports ``--base-port`` .. +2), drive it, stop it."""
    from vatic.cli.stack.services import ProductModelServer
    from vatic.cli.stack.settings import StackSettings

    folder = service_folder(device, options.tmp)
    port = options.base_port
    server = ProductModelServer(StackSettings(), name=f"bench-product-{device}", service_dir=folder,
                                ports=(port, port + 1, port + 2))  # fmt: skip
    say(f"gpu service: starting the product model server on {device} (port {port})")
    began = time.monotonic()
    try:
        if not server.start() and server.skipped():
            raise BenchError(f"the product model server did not start: {server.skipped()}")
    except BenchError:
        raise
    except Exception as exc:
        raise BenchError(f"the product model server on {device} failed to start: {str(exc).splitlines()[0]}") from exc
    load_s = time.monotonic() - began
    try:
        body = request_body(rows)
        with GpuMonitor() if device.startswith("cuda") else _Nothing() as monitor:
            cell = asyncio.run(_drive(server.url, body, concurrency, seconds, warmup_s=min(5.0, seconds / 3)))
    finally:
        server.stop()
    cell.update(device=device, rows=rows, concurrency=concurrency, rows_per_s=cell["rps"] * rows, start_s=load_s)
    if isinstance(monitor, GpuMonitor):
        cell["gpu"] = monitor.summary()
    say(f"gpu service {device}: {cell['rps']:,.1f} req/s = {cell['rows_per_s']:,.0f} products/s, p50 "
        f"{cell['p50_ms']:.0f} ms, p99 {cell['p99_ms']:.0f} ms (c={concurrency}, {rows} rows/request)")  # fmt: skip
    return cell


class _Nothing:
    def __enter__(self) -> _Nothing:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _service_row(cuda: dict[str, Any] | None, cpu: dict[str, Any] | None, skipped: str | None) -> dict[str, Any]:
    gpu_rps = cuda["rows_per_s"] if cuda else float("nan")
    cpu_rps = cpu["rows_per_s"] if cpu else float("nan")
    util = (cuda or {}).get("gpu", {}).get("util_mean_pct")
    shape = f", c={cuda['concurrency']}, {cuda['rows']} rows/request" if cuda else ""
    return {
        "id": "gpu_service_throughput",
        "comparison": "gpu",
        "metric": "product categorization model server (same service, V2 REST) products/s, CUDA vs CPU"
        + shape
        + (f", GPU utilisation mean {util:.0f}%" if util is not None else "")
        + (f" - SKIPPED: {skipped}" if skipped else ""),
        "unit": "products/s",
        "vatic": gpu_rps,
        "baseline": cpu_rps,
        "ratio": gpu_rps / cpu_rps if cuda and cpu and cpu_rps else float("nan"),
        "target": "GPU vs CPU (no target in the issue)",
        "met": None if skipped else True,
        "skipped": skipped,
    }


def service(options: Options, *, rows: int, concurrency: int, seconds: float, encoder: bool) -> dict[str, Any]:
    """The service comparison (skipped without a GPU); with ``encoder``, the micro-benchmark too."""
    reason = no_gpu()
    if reason is not None:
        return {"skipped": reason, "rows": [_service_row(None, None, reason), _row(None, None, reason)]}
    from vatic.cli.stack.settings import export_home

    export_home()
    cuda = measure_service(options, "cuda", rows=rows, concurrency=concurrency, seconds=seconds)
    cpu = measure_service(options, "cpu", rows=rows, concurrency=concurrency, seconds=seconds)
    result: dict[str, Any] = {"service": {"cuda": cuda, "cpu": cpu}, "rows": [_service_row(cuda, cpu, None)]}
    if encoder:
        micro = encoder_cells(1.0)
        result["cells"] = micro["cells"]
        result["rows"] += micro["rows"]
    return result


def merge(result: dict[str, Any], options: Options, started: datetime) -> None:
    """Write gpu.json and put ``result`` as the ``gpu`` comparison into summary.json/report.md (others kept)."""
    from bench import report

    options.results.mkdir(parents=True, exist_ok=True)
    (options.results / "gpu.json").write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    report.merge("gpu", result, options, started)


def main(argv: list[str] | None = None) -> int:
    """``--service`` (make bench-gpu): exit 0 when measured or skipped, 2 with one line when something fails."""
    parser = argparse.ArgumentParser(prog="bench.gpu", description="the product model server on CUDA vs CPU")
    parser.add_argument("--service", action="store_true", required=True, help="run the service comparison")
    parser.add_argument("--rows", type=int, default=32, help="products per request (default 32)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per device (default 30)")
    parser.add_argument("--no-encoder", action="store_true", help="skip the encoder micro-benchmark")
    parser.add_argument("--base-port", type=int, default=8210, help="http/grpc/metrics ports of the server: P..P+2")
    parser.add_argument("--results", type=Path, default=RESULTS, help="output folder (default bench/results)")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.concurrency < 1 or args.seconds <= 0:
        parser.error("--rows, --concurrency and --seconds must be positive")
    os.chdir(ROOT)
    options = Options(only=["gpu"], repeats=1, base_port=args.base_port, results=args.results.resolve())
    options.tmp.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    try:
        result = service(options, rows=args.rows, concurrency=args.concurrency, seconds=args.seconds,
                         encoder=not args.no_encoder)  # fmt: skip
    except BenchError as exc:
        print(f"bench.gpu: {exc}", file=sys.stderr)
        return 2
    merge(result, options, started)
    if result.get("skipped"):
        print(f"bench.gpu: skipped - {result['skipped']} (row recorded in {options.results / 'summary.json'})")
        return 0
    cuda, cpu = result["service"]["cuda"], result["service"]["cpu"]
    stats = {k: cuda.get("gpu", {}).get(k, float("nan")) for k in ("util_mean_pct", "util_max_pct", "memory_max_mib")}
    print(
        f"bench.gpu: CUDA {cuda['rows_per_s']:,.0f} vs CPU {cpu['rows_per_s']:,.0f} products/s = "
        f"{cuda['rows_per_s'] / cpu['rows_per_s']:.1f}x; GPU utilisation mean "
        f"{stats['util_mean_pct']:.0f}% (max {stats['util_max_pct']:.0f}%), "
        f"memory max {stats['memory_max_mib']:,.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker(float(sys.argv[2]))
    elif "--service" in sys.argv[1:]:
        raise SystemExit(main())
    else:
        sys.exit(
            "usage: python -m bench.gpu --service [--rows N --concurrency C --seconds S] (make bench-gpu), or "
            "--worker SECONDS (the harness runs it)"
        )
