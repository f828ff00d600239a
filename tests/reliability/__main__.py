"""``python -m tests.reliability [CASE ...]``: run the reliability cases on a private stack, print the table.

Exit status 0 when every case held (the oracle, and recovery within the case's bound). ``--keep`` keeps the
temporary folder (job logs, checkpoints, stack logs) for inspection; its path is printed either way.
``--runs N`` runs the selection N times in a row, each on a fresh private stack with a seed of its own;
``--seed S`` fixes the (first) run's seed, which is printed: a failed case is replayed with
``python -m tests.reliability --seed S CASE``. ``--secure`` runs the same cases on the secured broker (SASL_SSL with
SCRAM, a private CA, ACLs: the job as ``vatic-job`` with exactly its case's grants; see :mod:`.stack`).
``--guarantee at_least_once`` runs the job with ``streaming.guarantee: at_least_once``: duplicates are then a
reported figure after a fault and a failure without one; lost and misrouted records fail as always (see
:mod:`.oracle`).
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import time
from pathlib import Path

from tests.reliability.cases import BY_NAME, CASES
from tests.reliability.harness import Case, CaseResult, run_case
from tests.reliability.oracle import GUARANTEES
from tests.reliability.stack import PrivateStack


def table(results: list[CaseResult]) -> str:
    head = f"{'case':<20} {'events in':>9} {'predictions':>11} {'dead-lettered':>13} {'lost':>5} {'duplicates':>10} " \
        f"{'recovery':>9} {'bound':>6} {'wall':>6}  verdict"  # fmt: skip
    lines = [head, "-" * len(head)]
    for r in results:
        v = r.verdict
        rec = "-" if r.recovery_s is None else ("never" if r.recovery_s == float("inf") else f"{r.recovery_s:.1f}s")
        bound = "-" if r.bound_s is None else f"{r.bound_s:.0f}s"
        lines.append(
            f"{r.case:<20} {v.events_in:>9} {v.predictions:>11} {v.dead_lettered:>13} {v.lost:>5} "
            f"{v.duplicates:>10} {rec:>9} {bound:>6} {r.wall_s:>5.0f}s  {'held' if r.held else 'FAILED'}"
        )
    return "\n".join(lines)


def summary(results: list[CaseResult], guarantee: str = "exactly_once") -> str:
    held = sum(r.held for r in results)
    lost = sum(r.verdict.lost for r in results)
    line = f"reliability: {held}/{len(results)} cases held, {lost} events lost"
    if guarantee == "at_least_once":
        line += f", {sum(r.verdict.duplicates for r in results)} duplicates (at-least-once: reported, after faults)"
    return line


def run_suite(cases: list[Case], *, seed: int, keep: bool, secure: bool = False) -> list[CaseResult]:
    """One run of ``cases``, in order, on a fresh private stack (with the secured broker if ``secure``); prints
    each case as it ends."""
    stack = PrivateStack(keep=keep, secure=secure)
    kafka = f"secured kafka {stack.bootstrap} (SASL_SSL, SCRAM-SHA-512, ACLs)" if secure else f"kafka {stack.bootstrap}"
    print(f"reliability: seed {seed}; private stack under {stack.root} ({kafka}, redis "
          f"{stack.settings.redis_port}, registry {stack.registry_url}, model {stack.model_url})",
          flush=True)  # fmt: skip
    results: list[CaseResult] = []
    stack.start()
    try:
        for case in cases:
            print(f"-- {case.name}: {case.title}", flush=True)
            result = run_case(stack, case, Path(stack.root) / "cases", seed=seed)
            results.append(result)
            v = result.verdict
            print(f"   {'held' if result.held else 'FAILED'}: {v.events_in} in, {v.predictions} predictions, "
                  f"{v.dead_lettered} dead letters, {v.lost} lost, {v.duplicates} duplicates, recovery "
                  f"{'-' if result.recovery_s is None else f'{result.recovery_s:.1f}s'}, {result.wall_s:.0f}s "
                  f"(case seed {result.seed}; replay: --seed {seed} {case.name})",
                  flush=True)  # fmt: skip
            for line in [*v.problems, *result.notes]:
                print(f"   {line}", flush=True)
            if not result.held:
                print(f"   job log {result.log}", flush=True)
    finally:
        stack.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability", description=__doc__)
    parser.add_argument("cases", nargs="*", help=f"cases to run (default: all {len(CASES)}): {', '.join(BY_NAME)}")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--n", type=int, default=None, help="events per case (default 10,000)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the (first) run (default: random)")
    parser.add_argument("--runs", type=int, default=1, help="run the selection this many times (default 1)")
    parser.add_argument(
        "--secure",
        action="store_true",
        help="run on the secured broker (SASL_SSL, SCRAM, private CA, ACLs) instead of the plain one",
    )
    parser.add_argument(
        "--guarantee",
        choices=GUARANTEES,
        default="exactly_once",
        help="the job's streaming.guarantee (default exactly_once); at_least_once reports duplicates after a fault",
    )
    args = parser.parse_args(argv)
    unknown = [c for c in args.cases if c not in BY_NAME]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; known: {', '.join(BY_NAME)}")
    cases = [BY_NAME[c] for c in args.cases] if args.cases else CASES
    for case in cases:
        case.guarantee = args.guarantee
        if args.n:
            case.n = args.n

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # a killed `make test-reliability` still stops the private stack

    signal.signal(signal.SIGTERM, interrupted)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    at_least_once = args.guarantee == "at_least_once"
    runs: list[tuple[int, list[CaseResult]]] = []
    t0 = time.monotonic()
    for k in range(args.runs):
        run_seed = seed + k
        if args.runs > 1:
            print(f"== run {k + 1} of {args.runs}, seed {run_seed}", flush=True)
        runs.append((run_seed, run_suite(cases, seed=run_seed, keep=args.keep, secure=args.secure)))
    print()
    for run_seed, results in runs:
        flags = (("secured broker", args.secure), ("at-least-once", at_least_once))
        labels = ", ".join(label for label, on in flags if on)
        print(f"seed {run_seed}{f' ({labels})' if labels else ''}:")
        print(table(results))
        print(summary(results, args.guarantee))
        print()
    print(f"(total {time.monotonic() - t0:.0f}s)")
    everything = [r for _, results in runs for r in results]
    if args.runs > 1:
        print(f"{args.runs} runs: {sum(all(r.held for r in results) for _, results in runs)} of {args.runs} "
              f"held every case")  # fmt: skip
    total = summary(everything, args.guarantee)
    print(total if args.runs == 1 else f"over all runs: {total}")
    return 0 if all(r.held for r in everything) else 1


if __name__ == "__main__":
    sys.exit(main())
