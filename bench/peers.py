"""Comparison 7: vatic's job vs the peers users would write instead of Flink, each exactly-once, 2 processes.

* **batched consumer** (``bench/peer.py``): a confluent-kafka loop, ``consume(64)`` -> vatic's own
  ``BatchProcessor`` (one feature read, one V2 call per batch) -> transactional produce with the offsets in the
  transaction; one process per core, 2 in one group on the 2-partition topic.
* **Quix Streams** (``bench/quix_app.py``): a Quix Streams application, ``processing_guarantee="exactly-once"``,
  the same ``BatchProcessor`` per message; in its own environment (``bench/quixenv.py``). Where that cannot be
  built or run here, the comparison is recorded as skipped with the reason (the run goes on).

Measured like vatic's job (``bench/streaming.py``): max events/s from a pre-loaded topic (output append times),
then processed and visible (``read_committed``) latency at 50% of each one's own max. vatic's figures (max at
parallelism 2, latency at 50% of its max) come from this run's streaming comparison when it ran, else they are
measured here (a stored result of an earlier run, another load, is not compared with peers measured now).
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import PIPELINE_PY, ROOT, BenchError, Options, median, say, start_profile, summarize_profile
from bench.stack import BenchStack
from bench.streaming import (
    STALL_S,
    Topics,
    Watcher,
    _await_output,
    _rate,
    _service,
    _stop,
    _tail,
    _warm,
    latency_steps,
    prediction_decoder,
    vatic_latency,
    vatic_max,
)

MEMBERS = 2  # processes per peer: one per core of the 2-core reference machine, as vatic's parallelism 2
#: what each peer was run with (recorded in the results)
SETTINGS: dict[str, dict[str, Any]] = {
    "batched": {"consume": "streaming.batch_size (64)", "commit_interval_ms": 100},
    "quix": {"commit_interval_s": 5.0, "per_message": True},
}
PEERS = {"batched": "batched consumer (confluent-kafka, transactional)", "quix": "Quix Streams app (exactly-once)"}


class Group:
    """The processes of one peer (one consumer group)."""

    def __init__(self, procs: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
        self.procs, self.logs = procs, logs

    def check(self, what: str) -> None:
        for proc, log in zip(self.procs, self.logs, strict=True):
            if proc.poll() not in (None, 0):
                raise BenchError(f"{what} exited ({proc.returncode}): {_tail(log)} (log {log})")

    def wait(self, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        for proc, log in zip(self.procs, self.logs, strict=True):
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stop()
                raise BenchError(f"{what} did not finish in {timeout_s:.0f} s (log {log})") from None
        self.check(what)

    def stop(self) -> None:
        for proc in self.procs:
            _stop(proc)


def start_peer(
    options: Options, stack: BenchStack, topics: Topics, kind: str, *, idle_exit_s: float, python: Path | None = None,
    members: int = MEMBERS,
) -> Group:  # fmt: skip
    """Start ``members`` processes of the ``batched`` or ``quix`` peer on ``topics`` (one consumer group)."""
    folder = _service(options, topics, None)
    group = f"bench-{kind}-{uuid.uuid4().hex[:6]}"
    procs, logs = [], []
    for member in range(members):
        if kind == "batched":
            argv = [
                str(PIPELINE_PY), "-m", "bench.peer", "--member", str(member), "--members", str(members),
            ]  # fmt: skip
        else:
            assert python is not None
            argv = [str(python), "-m", "bench.quix_app"]
        argv += [
            "--service-dir", str(folder), "--model-url", stack.url("fraud-model"), "--bootstrap", topics.bootstrap,
            "--group", group, "--idle-exit-s", str(idle_exit_s), "--schema-store", str(stack.settings.home / "schemas"),
        ]  # fmt: skip
        if topics.registry:
            argv += ["--schema-registry-url", topics.registry]
        log = folder.parent / f"{kind}-{member}.log"
        procs.append(
            subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("wb"), start_new_session=True)
        )
        logs.append(log)
    return Group(procs, logs)


def peer_max(
    options: Options, stack: BenchStack, kind: str, n: int, python: Path | None = None, profile: Path | None = None
) -> dict[str, Any]:
    """Drain ``n`` pre-loaded events with the peer's processes; events/s from the outputs' append times."""
    what = PEERS[kind]
    topics = Topics(stack, kind)
    topics.preload(n)
    group = start_peer(options, stack, topics, kind, idle_exit_s=5.0, python=python)
    profiler = None
    try:
        _await_output(topics, group.procs[0], group.logs[0], what, STALL_S)
        group.check(what)
        if profile is not None:
            profiler = start_profile(group.procs[0].pid, 3.0, profile)
        group.wait(600, what)
    finally:
        group.stop()
        topics.close()
        if profiler is not None:
            profiler.wait(timeout=60)
    stamps, _, dead = topics.read_outputs(n, 60)
    if len(stamps) + dead < n:
        raise BenchError(f"the {what} wrote {len(stamps)} predictions + {dead} dead letters for {n} events")
    return {"events": n, "outputs": len(stamps), "dead": dead, "eps": _rate(stamps), "processes": MEMBERS}


def peer_latency(
    options: Options, stack: BenchStack, kind: str, rate: float, seconds: float, python: Path | None = None
) -> dict[str, Any]:
    """Processed and visible latency of the running peer at ``rate`` (open loop, a read_committed watcher)."""
    what = PEERS[kind]
    topics = Topics(stack, f"{kind}-lat")
    group = start_peer(options, stack, topics, kind, idle_exit_s=0.0, python=python)
    try:
        _warm(topics, group.procs[0], group.logs[0], what)
        group.check(what)
        with Watcher(topics, prediction_decoder(topics)) as watcher:
            (point,) = latency_steps(topics, watcher, [rate], seconds, kind)
        group.check(what)
    finally:
        group.stop()
        topics.close()
    return point


def _vatic_reference(options: Options, stack: BenchStack, results: dict[str, Any]) -> dict[str, Any]:
    """vatic's max at parallelism 2 and its latency at 50% of it: from this run's streaming comparison when it ran
    (a stored one from an earlier run, another day's load, is not compared with peers measured now)."""
    streaming = (results.get("streaming") if options.wants("streaming") else None) or {}
    by_p = streaming.get("by_parallelism") or {}
    n = 6_000 if options.quick else 30_000
    if "2" in by_p:
        eps = float(by_p["2"])
    else:
        say("peers: measuring vatic's job at parallelism 2 (the streaming comparison did not)")
        eps = vatic_max(options, stack, n, parallelism=2)["eps"]
    latency = (streaming.get("latency") or {}).get("vatic")
    if not latency or "visible" not in latency or streaming.get("best_parallelism") != 2:
        seconds = 3.0 if options.quick else 10.0
        latency = vatic_latency(options, stack, max(1.0, eps * 0.5), seconds, 2)
    return {"eps": eps, "latency": latency}


def _measure(options: Options, stack: BenchStack, kind: str, python: Path | None) -> dict[str, Any]:
    # Quix: ~100 events/s on 2 cores (one V2 call per event)
    n = {"quix": (1_000, 3_000)}.get(kind, (3_000, 20_000))[0 if options.quick else 1]
    repeats = 1 if options.quick else options.repeats
    runs = []
    for repeat in range(repeats):
        result = peer_max(options, stack, kind, n, python)
        runs.append(result)
        say(f"peers {repeat + 1}/{repeats} {kind}: {result['eps']:8.0f} events/s ({n} events, {MEMBERS} processes)")
    eps = median(r["eps"] for r in runs)
    seconds = 3.0 if options.quick else 10.0
    latency = peer_latency(options, stack, kind, max(1.0, eps * 0.5), seconds, python)
    return {"runs": runs, "eps": eps, "latency": latency}


def _rows(kind: str, vatic: dict[str, Any], peer: dict[str, Any] | None, skipped: str | None) -> list[dict[str, Any]]:
    """The target rows against one peer: max events/s (1.0x, floor 0.75x), processed and visible p99."""
    nan = float("nan")
    name = PEERS[kind]

    def row(ident: str, metric: str, unit: str, v: float, b: float, target: str, met: bool) -> dict[str, Any]:
        if peer is None:
            return {"id": ident, "comparison": "peers", "metric": metric, "unit": unit, "vatic": v, "baseline": nan,
                    "ratio": nan, "target": target, "met": None, "skipped": skipped}  # fmt: skip
        ratio = v / b if b else nan
        return {"id": ident, "comparison": "peers", "metric": metric, "unit": unit, "vatic": v, "baseline": b,
                "ratio": ratio, "target": target, "met": met}  # fmt: skip

    v_eps, v_lat = vatic["eps"], vatic["latency"]
    p_eps = peer["eps"] if peer else nan
    p_lat: dict[str, Any] = peer["latency"] if peer else {"p99_ms": nan, "visible": {"p99_ms": nan}}
    ratio = v_eps / p_eps if peer and p_eps else nan
    return [
        row(f"peer_{kind}_max", f"max events/s, vatic job (parallelism 2) vs {name}, {MEMBERS} processes",
            "events/s", v_eps, p_eps, ">= 1.0x", ratio >= 1.0),
        row(f"peer_{kind}_max_floor", f"max events/s, vatic job vs {name}: the floor", "events/s", v_eps, p_eps,
            ">= 0.75x", ratio >= 0.75),
        row(f"peer_{kind}_p99", f"processed p99 (append time) at 50% of each one's own max: vatic vs {name}", "ms",
            v_lat["p99_ms"], p_lat["p99_ms"], "<= 1.0x", v_lat["p99_ms"] <= p_lat["p99_ms"]),
        row(f"peer_{kind}_visible_p99", f"visible p99 (read_committed) at 50% of each one's own max: vatic vs {name}",
            "ms", v_lat["visible"]["p99_ms"], p_lat["visible"]["p99_ms"], "<= 1.0x",
            v_lat["visible"]["p99_ms"] <= p_lat["visible"]["p99_ms"]),
    ]  # fmt: skip


def peers(options: Options, stack: BenchStack, results: dict[str, Any]) -> dict[str, Any]:
    """Comparison 7 (see the module docstring). Returns measurements, skip reasons and the target rows."""
    from bench.quixenv import QUIX_VERSION, QuixUnavailable, quix_python

    stack.need("kafka", "redis", "fraud-model")
    vatic = _vatic_reference(options, stack, results)
    say(f"peers: vatic's job {vatic['eps']:,.0f} events/s at parallelism 2")
    measured: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    measured["batched"] = _measure(options, stack, "batched", None)
    try:
        python = quix_python()
    except QuixUnavailable as exc:
        skipped["quix"] = f"Quix Streams {QUIX_VERSION} unavailable here: {exc}"
    else:
        try:
            measured["quix"] = _measure(options, stack, "quix", python)
        except BenchError as exc:
            skipped["quix"] = f"the Quix Streams app did not run: {exc}"
    for kind, reason in skipped.items():
        say(f"peers: {kind} skipped ({reason})")
    rows = [row for kind in PEERS for row in _rows(kind, vatic, measured.get(kind), skipped.get(kind))]
    profiles: dict[str, Any] = {}
    behind = [r for r in rows if r["met"] is False]
    if options.profile and behind:
        say("profiling vatic's job at parallelism 2 (behind a peer), with py-spy, and the batched consumer")
        out = options.tmp / "profile-peers-vatic.txt"
        vatic_max(options, stack, 6_000 if options.quick else 30_000, parallelism=2, profile=out)
        profiles["vatic-job"] = summarize_profile(out)
        out = options.tmp / "profile-peers-batched.txt"
        peer_max(options, stack, "batched", 20_000, profile=out)
        profiles["batched-consumer"] = summarize_profile(out)
    return {
        "vatic": {"eps": vatic["eps"], "latency": {k: v for k, v in vatic["latency"].items() if k != "cdf"}},
        **measured,
        "skipped_peers": skipped,
        "members": MEMBERS,
        "settings": SETTINGS | {"quix": {**SETTINGS["quix"], "version": QUIX_VERSION}},
        "rows": rows,
        "profiles": profiles,
    }
