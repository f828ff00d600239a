"""Comparisons 2 (REST: vatic's model server and gateway vs stock MLServer) and 4 (adaptive batching on/off).

Closed loop at concurrency 1, 16 and 64 with the Go load generator, the two servers alternating within each
repeat; then an open-loop run at a constant arrival rate (half of stock MLServer's c=16 throughput) for tail
latency without coordinated omission, whose CDFs are plotted.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.common import LoadResult, Options, median, profile_pid, run_load, say
from bench.stack import BATCH_SIZE, BATCH_TIME_S, BenchStack
from bench.workload import MODEL

CONCURRENCY = (1, 16, 64)


def _cells(results: list[LoadResult]) -> dict[str, Any]:
    return {
        "rps": median(r.rps for r in results),
        "p50_ms": median(r.p50 for r in results),
        "p99_ms": median(r.p99 for r in results),
        "errors": sum(r.errors for r in results),
        "runs": [{"rps": r.rps, "p50_ms": r.p50, "p99_ms": r.p99} for r in results],
    }


def _measure(
    options: Options,
    loadgen: Path,
    targets: dict[str, tuple[str, Path]],
    concurrencies: tuple[int, ...],
    label: str,
) -> dict[str, dict[int, dict[str, Any]]]:
    """Closed-loop runs: for each repeat, each concurrency, each target in turn (alternating)."""
    raw: dict[str, dict[int, list[LoadResult]]] = defaultdict(lambda: defaultdict(list))
    for repeat in range(options.repeats):
        for c in concurrencies:
            for name, (url, bodies) in targets.items():
                result = run_load(
                    loadgen, url, bodies=bodies, concurrency=c, duration_s=options.duration_s,
                    warmup_s=options.warmup_s,
                )  # fmt: skip
                raw[name][c].append(result)
                say(
                    f"{label} {repeat + 1}/{options.repeats} c={c:<3} {name:<8} {result.rps:8.0f} req/s  "
                    f"p50 {result.p50:6.2f} ms  p99 {result.p99:6.2f} ms  errors {result.errors}"
                )
    return {name: {c: _cells(runs) for c, runs in cells.items()} for name, cells in raw.items()}


def rest(options: Options, stack: BenchStack, loadgen: Path, bodies: dict[str, Path]) -> dict[str, Any]:
    """Comparison 2. Returns the measured cells, open-loop CDFs and the three target rows."""
    stack.need("kafka", "redis", "fraud-model", "gateway", "stock")
    infer = f"/v2/models/{MODEL}/infer"
    targets = {
        "stock": (stack.url("stock") + infer, bodies["v2"]),
        "vatic": (stack.url("fraud-model") + infer, bodies["v2"]),
        "gateway": (stack.url("gateway") + "/v1/services/fraud-detection/predict", bodies["gateway"]),
    }
    closed = _measure(options, loadgen, targets, CONCURRENCY, "rest")
    rate = max(50.0, round(closed["stock"][16]["rps"] * 0.5, -1))
    open_loop: dict[str, Any] = {}
    for name, (url, body) in targets.items():
        result = run_load(
            loadgen, url, bodies=body, rate=rate, duration_s=options.duration_s, warmup_s=options.warmup_s
        )
        open_loop[name] = {"rate": rate, "p50_ms": result.p50, "p99_ms": result.p99, "cdf": result.raw.get("cdf")}
        say(f"rest open loop {rate:.0f}/s {name:<8} p50 {result.p50:6.2f} ms  p99 {result.p99:6.2f} ms")
    stock16, vatic16, gate16 = closed["stock"][16], closed["vatic"][16], closed["gateway"][16]
    stock1, vatic1 = closed["stock"][1], closed["vatic"][1]
    rows = [
        {
            "id": "rest_c16_throughput",
            "comparison": "rest",
            "metric": "req/s at c=16, vatic model server vs stock MLServer 1.7.1 (default settings)",
            "unit": "req/s",
            "vatic": vatic16["rps"],
            "baseline": stock16["rps"],
            "ratio": vatic16["rps"] / stock16["rps"],
            "target": ">= 2.5x",
            "met": vatic16["rps"] / stock16["rps"] >= 2.5,
            "profile_pid": "fraud-model",
        },
        {
            "id": "rest_c1_p99",
            "comparison": "rest",
            "metric": "p99 latency at c=1, vatic model server vs stock MLServer",
            "unit": "ms",
            "vatic": vatic1["p99_ms"],
            "baseline": stock1["p99_ms"],
            "ratio": vatic1["p99_ms"] / stock1["p99_ms"],
            "target": "<= 0.25x",
            "met": vatic1["p99_ms"] / stock1["p99_ms"] <= 0.25,
            "profile_pid": "fraud-model",
        },
        {
            "id": "rest_gateway_enriched",
            "comparison": "rest",
            "metric": "req/s at c=16, gateway WITH Feast enrichment vs stock MLServer WITHOUT enrichment",
            "unit": "req/s",
            "vatic": gate16["rps"],
            "baseline": stock16["rps"],
            "ratio": gate16["rps"] / stock16["rps"],
            "target": ">= 1.0x",
            "met": gate16["rps"] / stock16["rps"] >= 1.0,
            "profile_pid": "gateway",
        },
    ]
    profiles = _profiles(
        options, stack, loadgen, rows, {"fraud-model": targets["vatic"], "gateway": targets["gateway"]}
    )
    return {
        "closed": {n: {str(c): v for c, v in cells.items()} for n, cells in closed.items()},
        "open": open_loop,
        "settings": {"stock": stack.defaults},
        "rows": rows,
        "profiles": profiles,
    }


def _profiles(
    options: Options,
    stack: BenchStack,
    loadgen: Path,
    rows: list[dict[str, Any]],
    loads: dict[str, tuple[str, Path]],
    concurrency: int = 16,
) -> dict[str, Any]:
    """py-spy on the process behind each missed target (``profile_pid``: a key of ``loads``, the URL and bodies
    that load it), under closed-loop load; not part of the measurements."""
    if not options.profile:
        return {}
    import threading

    out: dict[str, Any] = {}
    for process in dict.fromkeys(r["profile_pid"] for r in rows if not r["met"]):
        pid = stack.pid(process)
        if pid is None:
            continue
        url, body = loads[process]
        say(f"profiling {process} (pid {pid}) under c={concurrency} load with py-spy")
        thread = threading.Thread(
            target=run_load,
            args=(loadgen, url),
            kwargs={"bodies": body, "concurrency": concurrency, "duration_s": 5.0, "warmup_s": 0.5},
        )
        thread.start()
        time.sleep(0.5)
        out[process] = profile_pid(pid, 4.0, options.tmp / f"profile-{process}.txt")
        thread.join()
    return out


def batching(options: Options, stack: BenchStack, loadgen: Path, bodies: dict[str, Path]) -> dict[str, Any]:
    """Comparison 4: vatic's server with MLServer adaptive batching on vs off, c=1 and c=64."""
    stack.need("fraud-model", "batched")
    infer = f"/v2/models/{MODEL}/infer"
    targets = {
        "off": (stack.url("fraud-model") + infer, bodies["v2"]),
        "on": (stack.url("batched") + infer, bodies["v2"]),
    }
    closed = _measure(options, loadgen, targets, (1, 64), "batching")
    off1, on1, off64, on64 = closed["off"][1], closed["on"][1], closed["off"][64], closed["on"][64]
    rows = [
        {
            "id": "batching_c1_p50",
            "comparison": "batching",
            "metric": f"p50 at c=1, adaptive batching on ({BATCH_SIZE} / {BATCH_TIME_S * 1000:g} ms) vs off",
            "unit": "ms",
            "vatic": on1["p50_ms"],
            "baseline": off1["p50_ms"],
            "ratio": on1["p50_ms"] / off1["p50_ms"],
            "target": "<= 1.2x",
            "met": on1["p50_ms"] / off1["p50_ms"] <= 1.2,
        },
        {
            "id": "batching_c64_throughput",
            "comparison": "batching",
            "metric": "req/s at c=64, adaptive batching on vs off",
            "unit": "req/s",
            "vatic": on64["rps"],
            "baseline": off64["rps"],
            "ratio": on64["rps"] / off64["rps"],
            "target": ">= 1.3x",
            "met": on64["rps"] / off64["rps"] >= 1.3,
        },
    ]
    for row in rows:
        row["profile_pid"] = "batched"
    profiles = _profiles(options, stack, loadgen, rows, {"batched": targets["on"]}, concurrency=64)
    stack.stop("batched")
    return {
        "profiles": profiles,
        "closed": {n: {str(c): v for c, v in cells.items()} for n, cells in closed.items()},
        "settings": {"max_batch_size": BATCH_SIZE, "max_batch_time_s": BATCH_TIME_S},
        "rows": rows,
    }
