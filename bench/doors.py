"""Comparison 6: the gateway's V2 doors and wire formats, side by side on one model.

One ``[64, 384]`` FP32 tensor (a batch of MiniLM-sized embeddings) to an echo model (``bench/models``, MLServer
answers it back) through a gateway of its own (``vatic gateway --grpc-port``), three ways, alternating, each a
closed loop of ``CONCURRENCY`` asyncio clients in this process:

* **REST JSON** - the V2 JSON body (what any V2 client can send);
* **REST binary** - the binary tensor data extension both ways (what tritonclient.http sends by default);
* **gRPC** - ``ModelInfer`` with ``raw_input_contents`` (what tritonclient.grpc sends).

The model server behind the gateway speaks JSON in all three: what differs is the client <-> gateway leg and
the gateway's conversions. Every call encodes its request from a NumPy array and decodes the answer back into one,
as a client does (tritonclient's work per call), so each door is charged its own encoding. Req/s and p50 per
door; targets: binary >= 1.5x JSON req/s, gRPC >= 1.0x REST JSON.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import orjson

from bench.common import ROOT, BenchError, Options, await_ready, median, percentile, say
from bench.stack import BenchStack
from vatic.cli.stack.mlserver import ModelServer
from vatic.connectors.v2 import grpc as wire

SHAPE = (64, 384)
CONCURRENCY = 8
MODEL = "echo"


def _repository(options: Options) -> Path:
    repo = options.tmp / "echo-repository"
    shutil.rmtree(repo, ignore_errors=True)
    (repo / MODEL).mkdir(parents=True)
    shutil.copy2(ROOT / "bench" / "models" / "echo_runtime.py", repo / MODEL / "echo_runtime.py")
    settings = {"name": MODEL, "implementation": "echo_runtime.EchoModel"}
    (repo / MODEL / "model-settings.json").write_text(json.dumps(settings) + "\n", encoding="utf-8")
    return repo


def _service(options: Options) -> Path:
    folder = options.tmp / "echo-service"
    folder.mkdir(parents=True, exist_ok=True)
    # the V2 door checks requests against the model server's own metadata; this declaration serves /v1 only
    config = {"project": "bench", "service": "echo",
              "model": {"name": MODEL, "inputs": [{"name": "x", "datatype": "FP32", "columns": ["x"]}],
                        "outputs": [{"name": "x"}]}}  # fmt: skip
    (folder / "service.yaml").write_text(json.dumps(config), encoding="utf-8")
    return folder


def _gateway(options: Options, model_url: str) -> tuple[subprocess.Popen[bytes], str, str]:
    port, grpc_port = options.base_port + 6, options.base_port + 7
    vatic = Path(sys.executable).parent / "vatic"
    log = options.tmp / "doors-gateway.log"
    argv = [str(vatic), "gateway", "--port", str(port), "--grpc-port", str(grpc_port), "--service",
            str(_service(options)), "--endpoint", f"echo={model_url}"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    url = f"http://127.0.0.1:{port}"
    await_ready(proc, f"{url}/v2/health/ready", log, "the doors' gateway")
    return proc, url, f"127.0.0.1:{grpc_port}"


async def _closed_loop(call: Callable[[], Awaitable[None]], seconds: float, warmup: float) -> dict[str, float]:
    latencies: list[float] = []
    stop = time.monotonic() + warmup + seconds
    measure_from = time.monotonic() + warmup

    async def worker() -> None:
        while time.monotonic() < stop:
            started = time.monotonic()
            await call()
            if started >= measure_from:
                latencies.append((time.monotonic() - started) * 1000)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return {
        "rps": len(latencies) / seconds,
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
    }


def _tensor() -> np.ndarray:
    return np.random.default_rng(7).standard_normal(SHAPE).astype("<f4")


def _json_call(http: httpx.AsyncClient, infer: str, data: np.ndarray) -> Callable[[], Awaitable[None]]:
    """V2 JSON, as any V2 client does it: the array's values into the body, the answer's back into an array."""

    async def call() -> None:
        body = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": list(SHAPE),
                                         "data": data.ravel().tolist()}]})  # fmt: skip
        response = await http.post(infer, content=body, headers={"content-type": "application/json"})
        _check(response, "json")
        out = orjson.loads(response.content)["outputs"][0]
        np.asarray(out["data"], dtype="<f4").reshape(out["shape"])

    return call


def _binary_call(http: httpx.AsyncClient, infer: str, data: np.ndarray) -> Callable[[], Awaitable[None]]:
    """The binary tensor data extension both ways, as tritonclient.http does it by default."""

    async def call() -> None:
        raw = data.tobytes()
        header = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": list(SHAPE),
                                           "parameters": {"binary_data_size": len(raw)}}],
                               "parameters": {"binary_data_output": True}})  # fmt: skip
        headers = {"content-type": "application/octet-stream", "inference-header-content-length": str(len(header))}
        response = await http.post(infer, content=header + raw, headers=headers)
        _check(response, "binary")
        length = int(response.headers["inference-header-content-length"])
        out = orjson.loads(response.content[:length])["outputs"][0]
        np.frombuffer(response.content[length:], dtype="<f4").reshape(out["shape"])

    return call


def _check(response: httpx.Response, door: str) -> None:
    if response.status_code != 200:
        raise BenchError(f"{door}: the gateway answered {response.status_code}: {response.text[:200]}")


async def _door(door: str, url: str, target: str, options: Options) -> dict[str, float]:
    """One closed loop through one door; every call encodes its request and decodes the answer into an array."""
    data = _tensor()
    infer = f"{url}/v2/models/{MODEL}/infer"
    if door == "grpc":
        request_cls, response_cls = wire.methods(wire.INFERENCE_SERVICE)["ModelInfer"]
        async with grpc.aio.insecure_channel(target, options=[("grpc.max_receive_message_length", 1 << 26)]) as ch:
            rpc = ch.unary_unary(f"/{wire.INFERENCE_SERVICE}/ModelInfer",
                                 request_serializer=request_cls.SerializeToString,
                                 response_deserializer=response_cls.FromString)  # fmt: skip

            async def grpc_call() -> None:  # raw contents both ways, as tritonclient.grpc does it
                request = request_cls(model_name=MODEL)
                request.inputs.add(name="x", datatype="FP32", shape=list(SHAPE))
                request.raw_input_contents.append(data.tobytes())
                answer = await rpc(request, timeout=30)
                np.frombuffer(answer.raw_output_contents[0], dtype="<f4").reshape(list(answer.outputs[0].shape))

            return await _closed_loop(grpc_call, options.duration_s, options.warmup_s)
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=CONCURRENCY)) as http:
        call = (_binary_call if door == "binary" else _json_call)(http, infer, data)
        return await _closed_loop(call, options.duration_s, options.warmup_s)


def doors(options: Options, stack: BenchStack) -> dict[str, Any]:
    """Comparison 6: REST JSON vs REST binary vs gRPC through the gateway; returns cells and two target rows."""
    server = ModelServer(
        stack.settings.model_copy(update={"start_timeout_s": 180.0}), name="bench-echo-mlserver",
        model_repository=_repository(options), http_port=options.base_port + 8, grpc_port=options.base_port + 9,
        metrics_port=options.base_port + 10, parallel_workers=0,
    )  # fmt: skip
    say("starting bench-echo-mlserver")
    server.start()
    gateway = None
    try:
        gateway, url, target = _gateway(options, str(server.url))
        cells: dict[str, list[dict[str, float]]] = {"json": [], "binary": [], "grpc": []}
        for repeat in range(options.repeats):
            order = ["json", "binary", "grpc"] if repeat % 2 == 0 else ["grpc", "binary", "json"]
            for door in order:
                result = asyncio.run(_door(door, url, target, options))
                cells[door].append(result)
                say(f"doors {door:<6} {result['rps']:8.1f} req/s  p50 {result['p50_ms']:7.2f} ms")
    finally:
        if gateway is not None:
            gateway.terminate()
            gateway.wait(timeout=30)
        server.stop()
    med = {door: {k: median(c[k] for c in runs) for k in ("rps", "p50_ms", "p99_ms")} for door, runs in cells.items()}
    json_p50 = med["json"]["p50_ms"]
    rows = [
        _row("doors_binary_vs_json", med, "binary", 1.5,
             f"binary tensor data extension vs V2 JSON (p50 {med['binary']['p50_ms']:.1f} vs {json_p50:.1f} ms)"),
        _row("doors_grpc_vs_rest", med, "grpc", 1.0,
             f"gRPC (raw contents) vs REST V2 JSON (p50 {med['grpc']['p50_ms']:.1f} vs {json_p50:.1f} ms; "
             f"REST binary {med['binary']['rps']:.0f} req/s)"),
    ]  # fmt: skip
    return {"cells": cells, "medians": med, "shape": list(SHAPE), "concurrency": CONCURRENCY, "rows": rows}


def _row(row_id: str, med: dict[str, dict[str, float]], door: str, target: float, what: str) -> dict[str, Any]:
    """A target row: ``door``'s req/s against REST V2 JSON's, met at ``target`` x or more."""
    ratio = med[door]["rps"] / med["json"]["rps"]
    return {
        "id": row_id,
        "comparison": "doors",
        "metric": f"req/s at c={CONCURRENCY}, one [64, 384] FP32 tensor: {what}",
        "unit": "req/s",
        "vatic": med[door]["rps"],
        "baseline": med["json"]["rps"],
        "ratio": ratio,
        "target": f">= {target}x",
        "met": ratio >= target,
    }
