"""``python -m tests.reliability [CASE ...]``: run the reliability cases on a private stack, print the table.

Exit status 0 when every case held. ``--keep`` keeps the temporary folder (job logs, checkpoints, stack logs)
for inspection; its path is printed either way.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from tests.reliability.cases import BY_NAME, CASES
from tests.reliability.harness import CaseResult, run_case
from tests.reliability.stack import PrivateStack


def table(results: list[CaseResult]) -> str:
    head = f"{'case':<20} {'events in':>9} {'predictions':>11} {'dead-lettered':>13} {'lost':>5} {'duplicates':>10} " \
        f"{'recovery':>9} {'wall':>6}  verdict"  # fmt: skip
    lines = [head, "-" * len(head)]
    for r in results:
        v = r.verdict
        rec = "-" if r.recovery_s is None else ("never" if r.recovery_s == float("inf") else f"{r.recovery_s:.1f}s")
        lines.append(
            f"{r.case:<20} {v.events_in:>9} {v.predictions:>11} {v.dead_lettered:>13} {v.lost:>5} "
            f"{v.duplicates:>10} {rec:>9} {r.wall_s:>5.0f}s  {'held' if r.held else 'FAILED'}"
        )
    return "\n".join(lines)


def summary(results: list[CaseResult]) -> str:
    held = sum(r.held for r in results)
    lost = sum(r.verdict.lost for r in results)
    return f"reliability: {held}/{len(results)} cases held, {lost} events lost"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability", description=__doc__)
    parser.add_argument("cases", nargs="*", help=f"cases to run (default: the 15): {', '.join(BY_NAME)}")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--n", type=int, default=None, help="events per case (default 10,000)")
    args = parser.parse_args(argv)
    unknown = [c for c in args.cases if c not in BY_NAME]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; known: {', '.join(BY_NAME)}")
    cases = [BY_NAME[c] for c in args.cases] if args.cases else CASES

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # a killed `make test-reliability` still stops the private stack

    signal.signal(signal.SIGTERM, interrupted)
    stack = PrivateStack(keep=args.keep)
    print(f"reliability: private stack under {stack.root} (kafka {stack.bootstrap}, redis "
          f"{stack.settings.redis_port}, model {stack.model_url})", flush=True)  # fmt: skip
    results: list[CaseResult] = []
    t0 = time.monotonic()
    stack.start()
    try:
        for case in cases:
            if args.n:
                case.n = args.n
            print(f"-- {case.name}: {case.title}", flush=True)
            result = run_case(stack, case, Path(stack.root) / "cases")
            results.append(result)
            v = result.verdict
            print(f"   {'held' if result.held else 'FAILED'}: {v.events_in} in, {v.predictions} predictions, "
                  f"{v.dead_lettered} dead letters, {v.lost} lost, {v.duplicates} duplicates, "
                  f"{result.wall_s:.0f}s", flush=True)  # fmt: skip
            for line in [*v.problems, *result.notes]:
                print(f"   {line}", flush=True)
    finally:
        stack.stop()
    print()
    print(table(results))
    print(f"(total {time.monotonic() - t0:.0f}s)")
    print(summary(results))
    return 0 if all(r.held for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
