"""Comparison 8: visible latency of vatic's job by delivery profile - what a downstream ``read_committed`` consumer
waits, next to the processed latency (the output's broker append time).

Three profiles of the job (``streaming`` keys of the service config), each one job at parallelism 2 measured at
20 events/s, 25% and 50% of the default profile's max events/s (lowest first, in the same job):

* ``exactly_once_5s``: the default (exactly-once, checkpoints every 5 s): outputs are appended at once but are
  visible to a ``read_committed`` reader when the checkpoint commits the transaction;
* ``exactly_once_1s``: ``checkpoint_interval_s: 1`` (``transaction_timeout_s`` must stay >= 3 x interval + 60 s:
  the default 900 s does); its max events/s is measured too (its cost vs 5 s);
* ``at_least_once``: ``guarantee: at_least_once`` (no transactions: visible at the append time).

Targets: exactly-once visible p99 <= checkpoint interval + 0.5 s (5 s and 1 s), at-least-once visible p99
<= 100 ms, at 50% of max. vatic's max events/s at parallelism 2 comes from this run's streaming (or peers)
comparison, else it is measured here.
"""

from __future__ import annotations

from typing import Any

from bench.common import Options, say
from bench.stack import BenchStack
from bench.streaming import vatic_latency, vatic_max

PARALLELISM = 2
#: profile name -> (streaming overrides, visible p99 bound in ms at 50% of max)
PROFILES: dict[str, tuple[dict[str, Any], float]] = {
    "exactly_once_5s": ({"guarantee": "exactly_once", "checkpoint_interval_s": 5}, 5_500.0),
    "exactly_once_1s": ({"guarantee": "exactly_once", "checkpoint_interval_s": 1}, 1_500.0),
    "at_least_once": ({"guarantee": "at_least_once"}, 100.0),
}


def _max_eps(options: Options, stack: BenchStack, results: dict[str, Any], n: int) -> float:
    """vatic's max at parallelism 2 measured in this run (streaming or peers comparison), else measured now."""
    by_p = ((results.get("streaming") if options.wants("streaming") else None) or {}).get("by_parallelism") or {}
    if str(PARALLELISM) in by_p:
        return float(by_p[str(PARALLELISM)])
    if options.wants("peers") and (results.get("peers") or {}).get("vatic"):
        return float(results["peers"]["vatic"]["eps"])
    say(f"visible: measuring vatic's job at parallelism {PARALLELISM} (the streaming comparison did not)")
    return float(vatic_max(options, stack, n, parallelism=PARALLELISM)["eps"])


def _row(ident: str, metric: str, value: float, bound: float, unit: str = "ms") -> dict[str, Any]:
    return {
        "id": ident, "comparison": "visible", "metric": metric, "unit": unit, "vatic": value, "baseline": bound,
        "ratio": value / bound, "target": f"<= {bound:,.0f} {unit}", "met": value <= bound,
    }  # fmt: skip


def visible(options: Options, stack: BenchStack, results: dict[str, Any]) -> dict[str, Any]:
    """Comparison 8 (see the module docstring). Returns measurements and the target rows."""
    stack.need("kafka", "redis", "fraud-model")
    n = 6_000 if options.quick else 30_000
    eps = _max_eps(options, stack, results, n)
    seconds = 3.0 if options.quick else 10.0
    # --quick: the 50% point only (one job per profile); full runs: 20 events/s and 25% first, in the same job
    curve = () if options.quick else (20.0, round(eps * 0.25))
    delivery: dict[str, Any] = {}
    for name, (overrides, _) in PROFILES.items():
        say(f"visible: vatic's job, {name} ({overrides}), parallelism {PARALLELISM}")
        delivery[name] = vatic_latency(
            options, stack, max(1.0, eps * 0.5), seconds, PARALLELISM, curve, overrides=overrides, who=name
        )
    fast = vatic_max(options, stack, n, parallelism=PARALLELISM, overrides=PROFILES["exactly_once_1s"][0])
    say(f"visible: max events/s with 1 s checkpoints {fast['eps']:,.0f} (5 s: {eps:,.0f})")
    rows = [
        _row(f"visible_{name}_p99", f"visible p99 (read_committed) at 50% of max, {name.replace('_', ' ')}",
             delivery[name]["visible"]["p99_ms"], bound)
        for name, (_, bound) in PROFILES.items()
    ]  # fmt: skip
    rows.append(
        {
            "id": "visible_exactly_once_1s_max",
            "comparison": "visible",
            "metric": "max events/s with 1 s checkpoints vs 5 s (parallelism 2): the cost of fresher outputs",
            "unit": "events/s",
            "vatic": fast["eps"],
            "baseline": eps,
            "ratio": fast["eps"] / eps,
            "target": ">= 0.9x",
            "met": fast["eps"] / eps >= 0.9,
        }
    )
    return {"max_eps": eps, "max_eps_1s": fast["eps"], "parallelism": PARALLELISM, "delivery": delivery, "rows": rows}
