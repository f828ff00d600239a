"""``make bench``: vatic against what users would run instead, side by side on this machine.

Usage (from the checkout root)::

    .venv/pipeline/bin/python -m bench.run [--quick] [--only streaming,rest,features,batching,gpu]
                                           [--repeats N] [--duration S] [--base-port P] [--no-profile]

Comparisons: ``streaming`` (vatic's Flink job vs a naive per-event pipeline), ``peers`` (the job vs a batched
confluent-kafka consumer and a Quix Streams app, each exactly-once), ``visible`` (the job's read_committed latency
by delivery profile), ``rest`` (vatic's model
server and gateway vs stock MLServer 1.7.1 with default settings), ``features`` (vatic's FeatureClient vs
Feast), ``batching`` (MLServer adaptive batching on/off), ``doors`` (the gateway's V2 JSON vs binary vs gRPC),
``gpu`` (skipped without a GPU), ``memory`` (RSS of vatic's job and model server at the job's max rate),
``shadow`` (the serving path's events/s and REST p99 with a shadow model vs without), ``monitor`` (the job's events/s
with its drift monitor running beside it vs alone), ``graph`` (a two-model graph vs one combined model), ``capacity``
(the job on the three-node Kafka cluster and the Flink session cluster at parallelism 1, 2, 4: events/s per slot and
CPU per event).

It brings up what each comparison needs with vatic's stack code (ports and state folder from ``VATIC_STACK_*``;
the extra servers on ``--base-port`` .. +5), prints a progress line per measurement, and stops what it started.
Results: ``bench/results/summary.json``, ``bench/results/report.md`` and PNG plots, rewritten by every run
(``--only`` keeps the other comparisons' previous results in the summary). Exit status 0 when every
comparison ran (missed targets are results, not failures), 2 with one line when a component is missing or fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # `python bench/run.py`: make the checkout importable as `bench`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, ROOT, BenchError, Options, build_loadgen, say

if TYPE_CHECKING:
    from bench.stack import BenchStack

COMPARISONS = (
    "streaming", "peers", "visible", "rest", "features", "batching", "doors", "gpu", "memory", "shadow", "monitor",
    "graph", "capacity",
)  # fmt: skip


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="bench", description="vatic's side-by-side benchmarks")
    parser.add_argument("--quick", action="store_true", help="short runs, one repeat (a few minutes per comparison)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(COMPARISONS)}")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per cell (default 3; --quick: 1)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per load run (default 5; quick 1.5)")
    parser.add_argument("--base-port", type=int, default=8210, help="first of 6 ports for the extra servers")
    parser.add_argument("--results", type=Path, default=RESULTS, help="output folder (default bench/results)")
    parser.add_argument(
        "--stream-mode", choices=("vectorized", "async"), default=None, help="vatic job mode (default: service's)"
    )
    parser.add_argument(
        "--report-only", action="store_true", help="re-render report.md and plots from the summary.json's results"
    )
    parser.add_argument(
        "--no-profile", action="store_true", help="skip py-spy profiles of missed targets (--quick never profiles)"
    )
    args = parser.parse_args(argv)
    only = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in only if c not in COMPARISONS]
    if unknown:
        parser.error(f"unknown comparison(s) {unknown}; choose from {', '.join(COMPARISONS)}")
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    if repeats < 1:
        parser.error("--repeats must be >= 1")
    duration = args.duration if args.duration is not None else (1.5 if args.quick else 5.0)
    if duration <= 0:
        parser.error("--duration must be positive")
    return Options(
        quick=args.quick, only=only, repeats=repeats, duration_s=duration,
        warmup_s=0.5 if args.quick else 1.0, base_port=args.base_port, results=args.results.resolve(),
        profile=not (args.no_profile or args.quick), stream_mode=args.stream_mode,  # quick: no profiles
        report_only=args.report_only,
    )  # fmt: skip


#: the servers each comparison needs (its own ``stack.need`` call names the same ones)
NEEDS = {
    "rest": ("kafka", "redis", "fraud-model", "gateway", "stock"),
    "batching": ("fraud-model", "batched"),
    "features": ("redis",),
    "streaming": ("kafka", "redis", "fraud-model", "stock"),
    "memory": ("kafka", "redis", "fraud-model"),
    "peers": ("kafka", "redis", "fraud-model"),
    "visible": ("kafka", "redis", "fraud-model"),
    "shadow": ("kafka", "redis", "fraud-model"),
    "monitor": ("kafka", "redis", "fraud-model"),
    "graph": ("kafka",),
    "capacity": ("redis", "fraud-model"),
}


def needed(options: Options) -> list[str]:
    """The union of :data:`NEEDS` over the selected comparisons, in a stable order."""
    return list(dict.fromkeys(n for c, names in NEEDS.items() if options.wants(c) for n in names))


def rerender(options: Options, summary_path: Path) -> dict[str, Any]:
    """Rewrite report.md, the plots and summary.json from the results stored in ``summary_path``."""
    from bench import report

    try:
        stored = json.loads(summary_path.read_text())
        raw, mode = stored["raw"], stored["mode"]
    except (OSError, ValueError, KeyError) as exc:
        raise BenchError(f"no results to re-render in {summary_path} ({exc}): run the benchmarks first") from None
    options.quick, options.repeats = mode == "quick", int(stored.get("repeats", options.repeats))
    measured = stored if all(k in stored for k in ("finished", "machine", "versions")) else None
    return report.write(raw, options, datetime.fromisoformat(stored["date"]), options.results, measured)


def measure(options: Options, stack: BenchStack, loadgen: Path | None, results: dict[str, Any]) -> None:
    """Run the selected comparisons in order (REST first, on a quiet box; streaming last), into ``results``
    (``peers`` and ``visible`` read vatic's max events/s from ``results["streaming"]`` when it is there)."""
    if any(options.wants(c) for c in ("rest", "batching", "shadow")):
        from bench.workload import write_bodies

        bodies = write_bodies(options.tmp / "bodies")
    if options.wants("rest"):
        from bench.rest import rest

        say("== 2. REST: vatic's model server and gateway vs stock MLServer")
        assert loadgen is not None
        results["rest"] = rest(options, stack, loadgen, bodies)
    if options.wants("batching"):
        from bench.rest import batching

        say("== 4. adaptive batching on vs off")
        assert loadgen is not None
        results["batching"] = batching(options, stack, loadgen, bodies)
    if options.wants("doors"):
        from bench.doors import doors

        say("== 6. the gateway's doors: REST JSON vs REST binary vs gRPC")
        results["doors"] = doors(options, stack)
    if options.wants("features"):
        from bench.features import features

        say("== 3. features: vatic's FeatureClient vs Feast")
        results["features"] = features(options, stack)
    _streams(options, stack, results)
    if options.wants("shadow"):
        _shadow(options, stack, loadgen, bodies, results)
    if options.wants("monitor"):
        _monitor(options, stack, results)
    if options.wants("graph"):
        from bench.graph import graph

        stack.stop("gateway")
        say("== 13. graph: the two-model product graph vs the combined model, stream and REST")
        assert loadgen is not None
        results["graph"] = graph(options, stack, loadgen)
    if options.wants("capacity"):
        from bench.capacity import capacity

        stack.stop("gateway")
        say("== 14. capacity: the job on both clusters at parallelism 1, 2 and 4")
        results["capacity"] = capacity(options, stack)
    if options.wants("gpu"):
        from bench.gpu import gpu

        say("== 5. GPU")
        results["gpu"] = gpu(options)


def _streams(options: Options, stack: BenchStack, results: dict[str, Any]) -> None:
    """The streaming comparisons, in order: the job's max rate first (the others read it)."""
    if options.wants("streaming"):
        from bench.streaming import streaming

        stack.stop("gateway")  # frees a core's worth of memory and CPU for the job
        say("== 1. streaming: vatic's job vs the naive pipeline")
        results["streaming"] = streaming(options, stack)
    if options.wants("peers"):
        from bench.peers import peers

        stack.stop("gateway")
        say("== 7. streaming peers: vatic's job vs a batched consumer and a Quix Streams app (exactly-once)")
        results["peers"] = peers(options, stack, results)
    if options.wants("visible"):
        from bench.visible import visible

        stack.stop("gateway")
        say("== 8. visible latency: vatic's job by delivery profile (read_committed consumer)")
        results["visible"] = visible(options, stack, results)
    if options.wants("memory"):
        from bench.memory import memory

        stack.stop("gateway")
        say("== 9. memory: RSS of vatic's job and model server at the job's max rate")
        best = results.get("streaming", {}).get("best_parallelism", 1)
        results["memory"] = memory(options, stack, parallelism=int(best))


def _monitor(options: Options, stack: BenchStack, results: dict[str, Any]) -> None:
    from bench.monitor import monitor

    say("== 12. monitor: the job's max events/s with its drift monitor beside it vs alone")
    results["monitor"] = monitor(options, stack)


def _shadow(
    options: Options, stack: BenchStack, loadgen: Path | None, bodies: dict[str, Path], results: dict[str, Any]
) -> None:
    from bench.shadow import shadow

    stack.stop("gateway")
    say("== 11. shadow: the serving path with and without a shadow model, stream and REST")
    assert loadgen is not None
    results["shadow"] = shadow(options, stack, loadgen, bodies)


def run(options: Options) -> dict[str, Any]:
    """Run the selected comparisons; returns the summary written."""
    from bench import report
    from bench.stack import BenchStack

    started = datetime.now(UTC)
    options.tmp.mkdir(parents=True, exist_ok=True)
    summary_path = options.results / "summary.json"
    if options.report_only:
        return rerender(options, summary_path)
    previous = report.stored_results(options.results) if options.only else {}
    results: dict[str, Any] = {k: v for k, v in previous.items() if k not in options.only}
    loadgen = build_loadgen() if any(options.wants(c) for c in ("rest", "batching", "shadow", "graph")) else None
    stack = BenchStack(options)
    stack.preflight()
    try:
        # every server the selected comparisons use starts up front, concurrently (each comparison's own
        # need() then finds them running); an idle server costs no CPU worth measuring
        stack.need(*needed(options))
        measure(options, stack, loadgen, results)
    finally:
        stack.close()
    # the measurements first: a report that fails to render loses no measured run
    (options.tmp / "raw.json").write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    return report.write(results, options, started, options.results)


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    os.chdir(ROOT)
    from vatic.cli.stack.settings import export_home

    export_home()
    began = time.monotonic()
    try:
        summary = run(options)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted (started components were stopped)", file=sys.stderr)
        return 130
    say(
        f"done in {time.monotonic() - began:.0f}s: {summary['targets_met']} targets met; "
        f"report {options.results / 'report.md'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
