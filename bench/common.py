"""Shared pieces of the benchmark harness: options, progress lines, failures, statistics, the Go load generator,
py-spy profiles.

Contract: every step that cannot run raises :class:`BenchError` with one line saying what is missing and how to
get it; :mod:`bench.run` prints that line and exits 2 after stopping what it started.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PIPELINE_PY = ROOT / ".venv" / "pipeline" / "bin" / "python"
SERVER_PY = ROOT / ".venv" / "server" / "bin" / "python"
RESULTS = ROOT / "bench" / "results"
_STARTED = time.monotonic()


class BenchError(RuntimeError):
    """A component is missing or failing: the message is the one line the harness prints."""


@dataclass
class Options:
    """What one run measures and how long (``quick`` shortens everything, ``only`` selects comparisons)."""

    quick: bool = False
    only: list[str] = field(default_factory=list)
    repeats: int = 3
    duration_s: float = 5.0
    warmup_s: float = 1.0
    base_port: int = 8210
    results: Path = RESULTS
    profile: bool = True
    #: streaming.mode of vatic's job (None: the service config's, i.e. vectorized)
    stream_mode: str | None = None
    report_only: bool = False

    @property
    def tmp(self) -> Path:
        return self.results / "tmp"

    def wants(self, name: str) -> bool:
        return not self.only or name in self.only


def say(message: str) -> None:
    """One progress line on stderr, prefixed with the elapsed time."""
    elapsed = time.monotonic() - _STARTED
    print(f"[bench {elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)


def median(values: Iterable[float]) -> float:
    data = [v for v in values if v is not None]
    return float(statistics.median(data)) if data else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(-(-q * len(ordered) // 1)) - 1))
    return float(ordered[index])


def cdf_points(values: Sequence[float]) -> list[list[float]]:
    """[[value, fraction], ...] at fixed quantiles, for latency CDF plots."""
    quantiles = [0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0]
    return [[percentile(values, q), q] for q in quantiles] if values else []


# --- the Go load generator ------------------------------------------------------------------------------


def build_loadgen(cache: Path | None = None) -> Path:
    """Build bench/loadgen (Go, stdlib only) into ``.cache/bench/loadgen``; rebuilt when a source is newer."""
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").is_file() else None)
    if go is None:
        raise BenchError("go not found: install Go >= 1.22 (https://go.dev/dl/) - the load generator is written in Go")
    source = ROOT / "bench" / "loadgen"
    target = (cache or ROOT / ".cache") / "bench" / "loadgen"
    newest = max(p.stat().st_mtime for p in source.iterdir())
    if target.is_file() and target.stat().st_mtime >= newest:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    done = subprocess.run(
        [go, "build", "-o", str(target), "."], cwd=source, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"building the load generator failed: {done.stderr.strip().splitlines()[-1:]}")
    return target


@dataclass
class LoadResult:
    """One load generator run (fields of its JSON)."""

    raw: dict[str, Any]

    @property
    def rps(self) -> float:
        return float(self.raw["rps"])

    @property
    def p50(self) -> float:
        return float(self.raw["p50_ms"])

    @property
    def p99(self) -> float:
        return float(self.raw["p99_ms"])

    @property
    def errors(self) -> int:
        return int(self.raw["errors"])


def run_load(
    loadgen: Path,
    url: str,
    *,
    bodies: Path,
    concurrency: int = 1,
    rate: float = 0.0,
    duration_s: float = 5.0,
    warmup_s: float = 1.0,
    headers: Sequence[str] = (),
) -> LoadResult:
    """Run the load generator once; BenchError when every request failed."""
    argv = [
        str(loadgen), "-url", url, "-bodies", str(bodies), "-c", str(concurrency), "-rate", str(rate),
        "-d", f"{duration_s}s", "-warmup", f"{warmup_s}s",
    ]  # fmt: skip
    for header in headers:
        argv += ["-H", header]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + warmup_s + 60, check=False)
    if done.returncode != 0:
        raise BenchError(f"load generator failed on {url}: {done.stderr.strip()}")
    result = LoadResult(json.loads(done.stdout))
    if result.raw["count"] == 0:
        raise BenchError(f"every request to {url} failed: {result.raw.get('first_error') or result.raw['statuses']}")
    return result


def await_ready(proc: subprocess.Popen[bytes], url: str, log: Path, what: str, timeout_s: float = 90) -> None:
    """Wait until ``url`` answers 200 while ``proc`` runs; a one-line BenchError naming ``what`` and its log when it
    exits or stays unready for ``timeout_s`` (then it is killed)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited ({proc.returncode}); log {log}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise BenchError(f"{what} did not become ready in {timeout_s:.0f} s; log {log}")
        time.sleep(0.2)


# --- py-spy ---------------------------------------------------------------------------------------------


def pyspy_executable() -> Path | None:
    candidate = PIPELINE_PY.parent / "py-spy"
    return candidate if candidate.is_file() else None


def start_profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """Start ``py-spy record`` (raw collapsed stacks, subprocesses included) on ``pid``; None without py-spy."""
    pyspy = pyspy_executable()
    if pyspy is None:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        str(pyspy), "record", "-p", str(pid), "-d", str(max(1, round(seconds))), "-r", "100", "-f", "raw",
        "-o", str(out), "--subprocesses", "--nonblocking",
    ]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize_profile(path: Path, top: int = 8) -> dict[str, Any]:
    """Top frames of a collapsed-stack file: by own samples (leaf) and by inclusive samples."""
    if not path.is_file():
        return {"samples": 0, "self": [], "inclusive": [], "note": f"no profile at {path}"}
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            continue
        frames = [_short(f) for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if total == 0:
        return {"samples": 0, "self": [], "inclusive": []}

    waiting = sum(n for frame, n in own.items() if frame.split(" ")[0].rsplit(".", 1)[-1] in _WAITING)
    own = Counter({frame: n for frame, n in own.items() if frame.split(" ")[0].rsplit(".", 1)[-1] not in _WAITING})

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [[name, round(100 * n / total, 1)] for name, n in counter.most_common(top)]

    # frames on (nearly) every stack are entry points and framework loops (typer, uvicorn, runpy): not informative
    inner = Counter({k: v for k, v in inclusive.items() if v < 0.6 * total and not k.startswith("<module>")})
    return {
        "samples": total,
        "waiting_pct": round(100 * waiting / total, 1),
        "self": share(own),
        "inclusive": share(inner),
    }


#: leaf frames that are a thread waiting (locks, queues, sockets), not work
_WAITING = frozenset({"wait", "channel_spin", "select", "poll", "epoll", "sleep", "acquire", "_wait_for_tstate_lock"})


def _short(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (file.py)``."""
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(file).parts
    keep = "/".join(parts[-2:]) if parts else file
    return f"{name} ({keep})"


def profile_pid(pid: int, seconds: float, out: Path) -> dict[str, Any]:
    """Profile ``pid`` for ``seconds`` (blocking) and summarize."""
    proc = start_profile(pid, seconds, out)
    if proc is None:
        return {"samples": 0, "self": [], "inclusive": [], "note": "py-spy not installed in .venv/pipeline"}
    try:
        proc.wait(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
    return summarize_profile(out)


def machine() -> dict[str, Any]:
    """Cores, CPU model and memory of this machine."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cores": os.cpu_count(), "cpu_model": model, "memory_gb": memory_gb, "load_avg_1m_at_start": load}


def two_door_result(
    comparison: str,
    stream: dict[str, list[float]],
    rest: dict[str, list[LoadResult]],
    *,
    vatic: str,
    baseline: str,
    what: tuple[str, str],
    targets: tuple[float, float],
    notes: tuple[str, str],
    events: int,
) -> dict[str, Any]:
    """The result of a comparison of two setups on both doors: medians of the stream's max events/s and of the
    REST runs, and two target rows (``vatic``/``baseline`` name the setups; ``what``: the two rows' metric texts;
    ``targets``: the least stream ratio and the most REST p99 ratio; ``notes``: the targets' reasons)."""
    eps = {label: median(runs) for label, runs in stream.items()}
    rps = {label: median(r.rps for r in runs) for label, runs in rest.items()}
    p99 = {label: median(r.p99 for r in runs) for label, runs in rest.items()}
    errors = sum(r.errors for runs in rest.values() for r in runs)
    stream_ratio, p99_ratio = eps[vatic] / eps[baseline], p99[vatic] / p99[baseline]
    rows = [
        {"id": f"{comparison}_stream_eps", "comparison": comparison, "metric": what[0], "unit": "events/s",
         "vatic": eps[vatic], "baseline": eps[baseline], "ratio": stream_ratio,
         "target": f">= {targets[0]:g}x{f' ({notes[0]})' if notes[0] else ''}", "met": stream_ratio >= targets[0]},
        {"id": f"{comparison}_rest_p99", "comparison": comparison, "metric": what[1], "unit": "ms",
         "vatic": p99[vatic], "baseline": p99[baseline], "ratio": p99_ratio,
         "target": f"<= {targets[1]:g}x{f' ({notes[1]})' if notes[1] else ''}",
         "met": p99_ratio <= targets[1] and errors == 0},
    ]  # fmt: skip
    return {
        "stream_eps": stream,
        "rest": {
            label: [{"rps": r.rps, "p50_ms": r.p50, "p99_ms": r.p99} for r in runs] for label, runs in rest.items()
        },
        "rest_rps": rps,
        "rest_p99_ms": p99,
        "rest_errors": errors,
        "events": events,
        "rows": rows,
    }
