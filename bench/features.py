"""Comparison 3: vatic's FeatureClient vs Feast's own ``get_online_features``, in process, SQLite and Redis.

The same 14 features of two views (customer and merchant aggregates) for 1 and 100 entities. Each cell is timed
call by call for a fixed time budget; vatic and Feast alternate within each repeat; the figure is the median
over repeats of each run's median call latency. For Redis, the use case's features are first materialized into
the stack's Redis (what ``vatic usecases prepare --redis`` does).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from bench.common import BenchError, Options, median, percentile, say, start_profile, summarize_profile
from bench.stack import BenchStack
from bench.workload import events, feature_refs

CASE: Final = "fraud_detection"


def _time_calls(call: Callable[[], Any], budget_s: float) -> list[float]:
    """Latencies (µs) of back-to-back calls for ``budget_s`` seconds (after 20 warm-up calls)."""
    for _ in range(20):
        call()
    latencies: list[float] = []
    end = time.perf_counter() + budget_s
    while True:
        start = time.perf_counter()
        call()
        stop = time.perf_counter()
        latencies.append((stop - start) * 1e6)
        if stop > end:
            return latencies


def _materialize_redis(stack: BenchStack) -> Any:
    """The Redis ``RepoConfig`` of the fraud features, materialized into the stack's Redis."""
    from vatic.examples import feast_repo, layout

    home = stack.settings.home
    state = json.loads((layout.case_home(CASE, home) / "prepare.json").read_text())
    anchor = datetime.fromtimestamp(int(state["data"]["anchor_ms"]) / 1000, UTC)
    config = feast_repo.repo_config(CASE, home=home, redis_url=stack.settings.redis_url)
    say(f"materializing the fraud features into Redis {stack.settings.redis_url}")
    feast_repo.apply_and_materialize(CASE, [config], layout.case_home(CASE, home) / "data", anchor, fresh=False)
    return config


def features(options: Options, stack: BenchStack) -> dict[str, Any]:
    """Measure; returns the cells and the four target rows (1 entity and per-entity at 100, per store)."""
    from vatic.connectors.features import FeatureClient
    from vatic.examples import feast_repo

    stack.need("redis")
    refs = feature_refs()
    sample = events(100, seed=23)
    entities = {
        n: [{"customer_id": e["customer_id"], "merchant_id": e["merchant_id"]} for e in sample[:n]] for n in (1, 100)
    }
    budget = 0.4 if options.quick else 1.5
    configs = {"sqlite": feast_repo.repo_config(CASE, home=stack.settings.home)}
    try:
        configs["redis"] = _materialize_redis(stack)
    except Exception as exc:
        raise BenchError(f"materializing features into Redis {stack.settings.redis_url} failed: {exc}") from exc
    cells: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    profiles: dict[str, Any] = {}
    for store_name, config in configs.items():
        client = FeatureClient(config, deadline_s=5.0)
        feast = feast_repo.store_for(config)
        got = client.get_sync(entities[1], refs)
        if not got or store_name not in client.source:
            raise BenchError(f"vatic's feature client read nothing from {store_name} (source {client.source})")
        for n in (1, 100):
            batch = entities[n]

            def vatic_call(batch: list[dict[str, Any]] = batch, client: Any = client) -> Any:
                return client.get_sync(batch, refs)

            def feast_call(batch: list[dict[str, Any]] = batch, feast: Any = feast) -> Any:
                return feast.get_online_features(features=refs, entity_rows=batch, full_feature_names=True).to_dict()

            runs: dict[str, list[list[float]]] = {"vatic": [], "feast": []}
            for repeat in range(options.repeats):
                for name, call in (("feast", feast_call), ("vatic", vatic_call)):
                    runs[name].append(_time_calls(call, budget))
                say(
                    f"features {store_name} n={n:<3} {repeat + 1}/{options.repeats}: vatic p50 "
                    f"{median(runs['vatic'][-1]):8.1f} us, feast p50 {median(runs['feast'][-1]):8.1f} us"
                )
            cell = {
                name: {
                    "p50_us": median(median(r) for r in measured),
                    "p99_us": median(percentile(r, 0.99) for r in measured),
                    "calls": sum(len(r) for r in measured),
                }
                for name, measured in runs.items()
            }
            cells[f"{store_name}_{n}"] = cell
            vatic_us, feast_us = cell["vatic"]["p50_us"], cell["feast"]["p50_us"]
            if n == 1:
                rows.append(
                    {
                        "id": f"features_1_{store_name}",
                        "comparison": "features",
                        "metric": f"p50 latency, 1 entity x {len(refs)} features, {store_name}: vatic vs Feast SDK",
                        "unit": "us",
                        "vatic": vatic_us,
                        "baseline": feast_us,
                        "ratio": vatic_us / feast_us,
                        "target": "<= 0.5x",
                        "met": vatic_us / feast_us <= 0.5,
                    }
                )
            else:
                rows.append(
                    {
                        "id": f"features_100_{store_name}",
                        "comparison": "features",
                        "metric": f"p50 per entity in batches of 100, {store_name}: vatic (target <= 25 us) vs Feast",
                        "unit": "us/entity",
                        "vatic": vatic_us / n,
                        "baseline": feast_us / n,
                        "ratio": vatic_us / feast_us,
                        "target": "<= 25 us/entity",
                        "met": vatic_us / n <= 25.0,
                    }
                )
                if options.profile and vatic_us / n > 25.0:
                    say(f"profiling vatic's feature client, {store_name}, 100 entities, with py-spy")
                    proc = start_profile(os.getpid(), 2.0, options.tmp / f"profile-features-{store_name}.txt")
                    _time_calls(vatic_call, 2.5)
                    if proc is not None:
                        proc.wait(timeout=60)
                    profiles[store_name] = summarize_profile(options.tmp / f"profile-features-{store_name}.txt")
        client.close()
    return {"cells": cells, "rows": rows, "budget_s": budget, "profiles": profiles}
