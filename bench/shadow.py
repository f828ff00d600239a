"""Comparison 11: what a shadow model costs the serving path, on both doors.

The fraud service as it ships against the same service with a shadow (``shadow: {version: <the serving
version>}``: every batch is answered a second time by the same model, the cost of any shadow of that size). The
two alternate within each repeat, same model server, same feature store:

* stream: max events/s of the job at parallelism 1, draining a pre-loaded topic (bounded run), the shadow's answers
  written to a shadow topic of the run;
* REST: two gateways started the same way (``vatic gateway`` over a copy of the service folder, with and without
  the shadow; REST waits for no shadow answer by default), closed loop at c=16: req/s and p99.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from bench.common import BenchError, LoadResult, Options, await_ready, run_load, say, two_door_result
from bench.stack import BenchStack
from bench.streaming import vatic_max
from bench.workload import FEATURE_REPO, MODEL, SERVICE_DIR

SERVICE = "fraud-detection"


def serving_version(stack: BenchStack) -> str:
    """The version the fraud model server serves now (its rollout pointer's current)."""
    from vatic.cli.commands.promote import pointer

    versions = pointer(stack.url("fraud-model"), MODEL)
    if not versions:
        raise BenchError("the fraud model server names no serving version (its rollout pointer is empty)")
    return versions[0]


def _folder(options: Options, name: str, sections: dict[str, Any]) -> Path:
    config = yaml.safe_load((SERVICE_DIR / "service.yaml").read_text(encoding="utf-8"))
    config["features"]["repo"] = str(FEATURE_REPO)
    config.update(sections)
    folder = options.tmp / "shadow" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "service.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return folder


def _gateway(options: Options, stack: BenchStack, folder: Path, port: int) -> tuple[subprocess.Popen[bytes], str]:
    """``vatic gateway`` over ``folder`` as the local stack starts it (``vatic.cli.stack.gateway``)."""
    vatic = Path(sys.executable).parent / "vatic"
    log = folder.parent / f"{folder.name}-gateway.log"
    argv = [str(vatic), "gateway", "--host", "127.0.0.1", "--port", str(port), "--service", str(folder),
            "--endpoint", f"{SERVICE}={stack.url('fraud-model')}"]  # fmt: skip
    if stack.settings.gateway_redis:
        argv += ["--redis-url", stack.settings.redis_url]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    url = f"http://127.0.0.1:{port}"
    await_ready(proc, f"{url}/v2/health/ready", log, "a shadow-comparison gateway")
    return proc, url


def shadow(options: Options, stack: BenchStack, loadgen: Path, bodies: dict[str, Path]) -> dict[str, Any]:
    """Comparison 11 (module docstring). Returns the runs and the two target rows."""
    stack.need("kafka", "redis", "fraud-model")
    with_shadow = {"shadow": {"version": serving_version(stack)}}
    n = 6_000 if options.quick else 20_000
    stream: dict[str, list[float]] = {"without": [], "with": []}
    for repeat in range(options.repeats):
        for label, sections in (("without", {}), ("with", with_shadow)):
            eps = vatic_max(options, stack, n, parallelism=1, sections=sections)["eps"]
            stream[label].append(eps)
            say(f"shadow {repeat + 1}/{options.repeats} stream {label:<7} shadow: {eps:8.0f} events/s")

    gateways = []
    try:
        for offset, (label, sections) in enumerate((("without", {}), ("with", with_shadow))):
            proc, url = _gateway(options, stack, _folder(options, label, sections), options.base_port + 8 + offset)
            gateways.append((label, proc, url))
        rest: dict[str, list[LoadResult]] = {"without": [], "with": []}
        for repeat in range(options.repeats):
            for label, _, url in gateways:
                result = run_load(
                    loadgen, f"{url}/v1/services/{SERVICE}/predict", bodies=bodies["gateway"], concurrency=16,
                    duration_s=options.duration_s, warmup_s=options.warmup_s,
                )  # fmt: skip
                rest[label].append(result)
                say(f"shadow {repeat + 1}/{options.repeats} REST c=16 {label:<7} shadow: {result.rps:8.0f} req/s  "
                    f"p99 {result.p99:6.2f} ms  errors {result.errors}")  # fmt: skip
    finally:
        for _, proc, _ in gateways:
            proc.terminate()
            proc.wait(timeout=30)

    return two_door_result(
        "shadow", stream, rest, vatic="with", baseline="without",
        what=("max events/s of the job (p=1) with a shadow model vs without",
              "gateway p99 at c=16 with a shadow model vs without (REST waits for no shadow answer)"),
        targets=(0.6, 1.5), notes=("a second model call per batch", ""), events=n,
    )  # fmt: skip
