"""bench/results/summary.json and bench/results/report.md (with PNG plots), rewritten by every run."""

from __future__ import annotations

import json
import math
import re
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import PIPELINE_PY, SERVER_PY, machine

TITLES = {
    "streaming": "1. Streaming: vatic's Flink job vs a naive per-event pipeline",
    "rest": "2. REST: vatic's model server and gateway vs stock MLServer",
    "features": "3. Features: vatic's FeatureClient vs Feast get_online_features",
    "batching": "4. Adaptive batching on vs off (vatic's model server)",
    "gpu": "5. GPU: product categorization runtime, GPU vs CPU",
    "doors": "6. The gateway's doors: V2 JSON vs the binary tensor data extension vs gRPC",
    "memory": "9. Memory: RSS of vatic's job and model server at the job's max rate",
    "soak": "10. Soak (`make bench-soak`): vatic's job at half its max for a long while",
    "peers": "7. Streaming peers: vatic's job vs a batched confluent-kafka consumer and a Quix Streams app",
    "visible": "8. Visible latency: vatic's job by delivery profile, as a read_committed consumer sees it",
    "shadow": "11. Shadow: the serving path with a shadow model vs without (stream events/s, REST p99)",
    "monitor": "12. Drift monitor: the job's max events/s with its drift monitor beside it vs alone",
    "graph": "13. Inference graph: the two-model product graph vs the combined model (stream events/s, REST p99)",
    "capacity": "14. Capacity: the job on a 3-node Kafka cluster and 2 Flink TaskManagers at parallelism 1, 2, 4",
}


METHOD = [
    "How it was measured (details in the docstrings of `bench/*.py`):",
    "",
    "- **REST**: one-row V2 JSON requests (`[1, 21]` FP32, real feature values) from a Go load generator "
    "(`bench/loadgen`), closed loop at c=1/16/64, then open loop (constant arrival rate, latency from the scheduled "
    "send time) at half of stock MLServer's c=16 throughput. *Stock*: MLServer 1.7.1 with its default settings "
    "(`parallel_workers` and `debug` as `mlserver.settings.Settings()` has them) and its own `mlserver_lightgbm` "
    "runtime on the same `model.txt`. *vatic*: the repository vatic's settings writer produces, as `vatic stack` "
    "serves it. *Gateway*: the raw payment event, enriched from Feast (SQLite) by the gateway, then the model.",
    "- **Streaming**: pre-loaded topic drained; events/s from the first to the last output record's broker append "
    "time (start-up excluded). Latency at half of each pipeline's own max with an open-loop producer: output append "
    "time minus the input's scheduled send time. The naive pipeline commits offsets asynchronously after each produce. "
    "vatic's job writes in Kafka transactions (exactly-once): a `read_committed` consumer sees a prediction when the "
    "next checkpoint commits (up to `checkpoint_interval_s`, 5 s by default); `guarantee: at_least_once` or a "
    "`read_uncommitted` consumer sees it at the append time measured here.",
    "- **Visible latency** (comparisons 7 and 8): a `read_committed` consumer runs while the open-loop producer "
    "produces and stamps each prediction with its own receive wall-clock; visible = receive time minus scheduled "
    "send time, processed = append time minus scheduled send time.",
    "- **Peers**: the batched consumer (`bench/peer.py`: `consume(64)`, vatic's `BatchProcessor`, a Kafka "
    "transaction every 100 ms with the offsets in it) and the Quix Streams app (`bench/quix_app.py`, "
    "`processing_guarantee=exactly-once`, its default 5 s commit interval, one message at a time) run as 2 "
    "processes in one group; max events/s and latency at half their own max, as vatic's job.",
    "- **Features**: in-process, call after call for a fixed time; 14 features of two views (customer, merchant).",
    "- **Batching**: vatic's repository with `max_batch_size`/`max_batch_time` added, vs the same without.",
    "- Ratios are vatic / baseline of the medians. Missed targets were profiled with py-spy (`--nonblocking`, "
    "subprocesses included) under the same load for a few seconds, outside the measurements.",
    "",
]


def _version(python: Path, *packages: str) -> dict[str, str]:
    code = (
        "import json, sys, importlib.metadata as m\n"
        "out = {}\n"
        "for p in sys.argv[1:]:\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: out[p] = 'absent'\n"
        "print(json.dumps(out))"
    )
    try:
        done = subprocess.run(
            [str(python), "-c", code, *packages], capture_output=True, text=True, timeout=60, check=False
        )
        result: dict[str, str] = json.loads(done.stdout)
        return result
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return dict.fromkeys(packages, "unknown")


def versions() -> dict[str, str]:
    """Versions of what was measured."""
    out: dict[str, str] = {"python": sys.version.split()[0]}
    out.update(_version(SERVER_PY, "mlserver", "mlserver-lightgbm", "lightgbm"))
    pipeline = _version(PIPELINE_PY, "apache-flink", "feast", "confluent-kafka")
    out.update({"flink (apache-flink)": pipeline["apache-flink"], "feast": pipeline["feast"]})
    out["confluent-kafka"] = pipeline["confluent-kafka"]
    try:
        from vatic.cli.stack import artifacts

        kafka = next((str(getattr(artifacts, n)) for n in dir(artifacts) if n.upper().startswith("KAFKA_VERSION")), "")
        out["kafka"] = kafka or "4.1.1"
    except ImportError:
        out["kafka"] = "unknown"
    try:
        go = subprocess.run(["go", "version"], capture_output=True, text=True, timeout=10, check=False).stdout.split()
        out["go (load generator)"] = go[2] if len(go) > 2 else "unknown"
    except OSError:
        out["go (load generator)"] = "absent"
    return out


def shortfall(row: dict[str, Any]) -> str:
    """How far a missed target is from being met, in words."""
    target, ratio, vatic = str(row["target"]), float(row["ratio"]), float(row["vatic"])
    match = re.match(r"([<>]=)\s*([\d,.]+)\s*(x(?![A-Za-z])|[^(]*)", target)  # a note in (...) may follow
    if not match:
        return ""
    op, number, unit = match.group(1), float(match.group(2).replace(",", "")), match.group(3).strip()
    value = ratio if unit == "x" else vatic
    need = f"{number:g}x" if unit == "x" else f"{number:,g} {unit}"
    got = _fmt(float(value)) + ("x" if unit == "x" else f" {unit}")
    if op == ">=":
        return f"short by {number / value:.2f}x (needs >= {need}, got {got})"
    return f"over by {value / number:.2f}x (needs <= {need}, got {got})"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}" if abs(value) >= 0.01 else f"{value:.3g}"
    return str(value)


def plots(results: dict[str, Any], folder: Path) -> list[str]:  # noqa: PLR0915 - one block per figure
    """The PNG plots; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[str] = []
    rest = results.get("rest")
    batching = results.get("batching")
    if rest:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for name, cells in rest["closed"].items():
            xs = sorted(int(c) for c in cells)
            ax.plot(xs, [cells[str(c)]["rps"] for c in xs], marker="o", label=name)
        if batching:
            cells = batching["closed"]["on"]
            xs = sorted(int(c) for c in cells)
            ax.plot(xs, [cells[str(c)]["rps"] for c in xs], marker="s", linestyle="--", label="vatic, batching on")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency (closed loop)")
        ax.set_ylabel("req/s (median of repeats)")
        ax.set_title("REST throughput vs concurrency")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "rest_throughput.png", dpi=110)
        plt.close(fig)
        made.append("rest_throughput.png")
    streaming = results.get("streaming")
    if rest or streaming:
        panels = [p for p in ("rest", "streaming") if results.get(p)]
        fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4), squeeze=False)
        for ax, panel in zip(axes[0], panels, strict=True):
            if panel == "rest":
                curves = {n: v["cdf"] for n, v in rest["open"].items() if v.get("cdf")}  # type: ignore[index]
                rate = next(iter(rest["open"].values()))["rate"]  # type: ignore[index]
                ax.set_title(f"REST latency CDF, open loop at {rate:.0f} req/s")
            else:
                curves = {n: v["cdf"] for n, v in streaming["latency"].items()}  # type: ignore[index]
                ax.set_title("Event-to-prediction latency CDF at 50% of max")
            for name, points in curves.items():
                ax.plot([max(p[0], 0.01) for p in points], [p[1] for p in points], marker=".", label=name)
            ax.set_xscale("log")
            ax.set_xlabel("latency (ms)")
            ax.set_ylabel("fraction of requests")
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "latency_cdf.png", dpi=110)
        plt.close(fig)
        made.append("latency_cdf.png")
    if streaming and streaming.get("batch_sweep"):
        sweep = streaming["batch_sweep"]
        xs = sorted(int(s) for s in sweep)
        fig, ax = plt.subplots(figsize=(6.5, 4))
        ax.plot(xs, [sweep[str(x)] for x in xs], marker="o", label=f"vatic job (p={streaming['best_parallelism']})")
        naive = [r["eps"] for r in streaming["naive_runs"]]
        ax.axhline(sorted(naive)[len(naive) // 2], color="gray", linestyle="--", label="naive per-event pipeline")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("streaming.batch_size (events per V2 call)")
        ax.set_ylabel("events/s")
        ax.set_title("Streaming throughput vs micro-batch size")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "batch_size.png", dpi=110)
        plt.close(fig)
        made.append("batch_size.png")
    return made


def _profile_lines(name: str, profile: dict[str, Any]) -> list[str]:
    if not profile.get("samples"):
        return [f"- `{name}`: no samples ({profile.get('note', 'py-spy saw no Python frames')})"]
    waiting = f", {profile['waiting_pct']}% of them threads waiting" if profile.get("waiting_pct") else ""
    lines = [f"- `{name}` ({profile['samples']} samples{waiting}). Own time (not waiting), top frames:"]
    lines += [f"    - {share:5.1f}% `{frame}`" for frame, share in profile["self"][:6]]
    lines.append("  Inclusive (where the time goes):")
    lines += [f"    - {share:5.1f}% `{frame}`" for frame, share in profile["inclusive"][:6]]
    return lines


def stored_results(folder: Path) -> dict[str, Any]:
    """The raw results stored in ``folder``/summary.json by the last run ({} when there are none)."""
    path = folder / "summary.json"
    if not path.is_file():
        return {}
    try:
        raw: dict[str, Any] = json.loads(path.read_text()).get("raw", {})
    except ValueError:
        return {}
    return raw


def merge(name: str, result: dict[str, Any], options: Any, started: datetime) -> dict[str, Any]:
    """Put ``result`` as comparison ``name`` into the stored results of ``options.results`` (the others kept)
    and rewrite summary.json, report.md and the plots; returns the summary."""
    raw = stored_results(options.results)
    raw[name] = result
    return write(raw, options, started, options.results)


def write(
    results: dict[str, Any], options: Any, started: datetime, folder: Path, measured: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write summary.json (with ``results`` as its ``raw``, what ``--report-only`` and :func:`merge` read back),
    report.md and the plots into ``folder``; returns the summary.

    ``measured``: a stored summary being re-rendered (``--report-only``); its finish time, machine and versions
    are kept, since they describe the run that measured the results, not the machine that re-renders them.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    rows = [row for name in TITLES for row in results.get(name, {}).get("rows", [])]
    summary = {
        "date": started.isoformat(timespec="seconds"),
        "finished": measured["finished"] if measured else datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if options.quick else "full",
        "repeats": options.repeats,
        "machine": measured["machine"] if measured else machine(),
        "versions": measured["versions"] if measured else versions(),
        "targets": [{k: v for k, v in r.items() if k != "profile_pid"} for r in rows],
        "targets_met": f"{sum(1 for r in rows if r['met'])}/{sum(1 for r in rows if r['met'] is not None)}",
        "comparisons": {
            name: {
                "targets": [
                    {k: r[k] for k in ("id", "metric", "unit", "vatic", "baseline", "ratio", "target", "met")}
                    for r in results[name].get("rows", [])
                ],
                "details": {k: v for k, v in results[name].items() if k != "rows"},
            }
            for name in TITLES
            if name in results
        },
        "raw": results,
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    images = plots(results, folder)
    m = summary["machine"]
    lines = [
        "# vatic benchmarks",
        "",
        f"Generated by `make bench{'-quick' if options.quick else ''}` on {summary['date']} "
        f"({summary['mode']} run, {options.repeats} repeat(s), baseline and vatic alternating; medians).",
        f"Machine: {m['cores']} cores, {m['cpu_model']}, {m['memory_gb']} GB; load average at start "
        f"{m['load_avg_1m_at_start']}. Other processes shared the CPU unless the load average says otherwise.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in summary["versions"].items()) + ".",
        *(
            [
                f"Measured in this run: {', '.join(options.only)} (`--only`); the other comparisons are kept from an "
                "earlier run on this machine, whose date and load this header no longer shows."
            ]
            if options.only
            else []
        ),
        "",
        "| comparison | metric | vatic | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        met = (
            f"skipped: {r['skipped']}"
            if r["met"] is None and r.get("skipped")
            else "skipped"
            if r["met"] is None
            else "yes"
            if r["met"]
            else "**no**: " + shortfall(r)
        )
        lines.append(
            f"| {r['comparison']} | {r['metric']} ({r['unit']}) | {_fmt(r['vatic'])} | {_fmt(r['baseline'])} | "
            f"{_fmt(r['ratio'])}{'' if math.isnan(r['ratio']) else 'x'} | {r['target']} | {met} |"
        )
    lines += ["", *METHOD]
    for image in images:
        lines += [f"![{image}]({image})", ""]
    for name, title in TITLES.items():
        if name not in results:
            continue
        data = results[name]
        lines += [f"## {title}", ""]
        if data.get("skipped"):
            lines += [f"Skipped: {data['skipped']}", ""]
        lines += _details(name, data)
        profiles = data.get("profiles") or {}
        missed = [r for r in data.get("rows", []) if r["met"] is False]
        if missed:
            lines += ["", "Missed targets: " + "; ".join(f"`{r['id']}` {shortfall(r)}" for r in missed) + "."]
            if profiles:
                lines += ["", "What the profile (py-spy, a few seconds under load) shows:", ""]
                for pname, profile in profiles.items():
                    lines += _profile_lines(pname, profile)
        lines.append("")
    (folder / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return summary


def _details(name: str, data: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if name in ("rest", "batching") and data.get("closed"):
        lines += ["| server | c | req/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|"]
        for server, cells in data["closed"].items():
            for c in sorted(cells, key=int):
                cell = cells[c]
                lines.append(
                    f"| {server} | {c} | {cell['rps']:,.0f} | {cell['p50_ms']:.2f} | {cell['p99_ms']:.2f} | "
                    f"{cell['errors']} |"
                )
        if data.get("open"):
            lines += ["", "Open loop (constant arrival rate, latency from the scheduled send time):", ""]
            for server, cell in data["open"].items():
                lines.append(
                    f"- {server}: {cell['rate']:.0f} req/s, p50 {cell['p50_ms']:.2f} ms, p99 {cell['p99_ms']:.2f} ms"
                )
        if data.get("settings"):
            lines += ["", f"Settings: `{json.dumps(data['settings'])}`"]
    if name == "doors" and data.get("medians"):
        lines += [f"One {data['shape']} FP32 tensor, echoed, c={data['concurrency']} (medians of the repeats):", "",
                  "| door | req/s | p50 ms | p99 ms |", "|---|---|---|---|"]  # fmt: skip
        for door, cell in data["medians"].items():
            lines.append(f"| {door} | {cell['rps']:,.0f} | {cell['p50_ms']:.2f} | {cell['p99_ms']:.2f} |")
    if name == "features" and data.get("cells"):
        lines += [
            "| store, entities | vatic p50 us | vatic p99 us | Feast p50 us | Feast p99 us |",
            "|---|---|---|---|---|",
        ]
        for cell_name, cell in data["cells"].items():
            lines.append(
                f"| {cell_name} | {cell['vatic']['p50_us']:,.1f} | {cell['vatic']['p99_us']:,.1f} | "
                f"{cell['feast']['p50_us']:,.1f} | {cell['feast']['p99_us']:,.1f} |"
            )
    if name == "streaming" and data.get("by_parallelism"):
        lines.append(f"- vatic job mode: {data.get('mode')}")
        lines += [f"- note: {note}" for note in data.get("notes", [])]
        naive = ", ".join(f"{r['eps']:,.0f}" for r in data["naive_runs"])
        lines.append(f"- naive pipeline events/s per run: {naive}")
        for p, runs in data["vatic_runs"].items():
            lines.append(
                f"- vatic job, parallelism {p}, events/s per run: " + ", ".join(f"{r['eps']:,.0f}" for r in runs)
            )
        if data.get("batch_sweep"):
            lines.append(
                "- events/s by batch size: "
                + ", ".join(f"{size}: {eps:,.0f}" for size, eps in data["batch_sweep"].items())
            )
        for who, lat in data["latency"].items():
            lines.append(
                f"- latency, {who} at {lat['rate']:,.0f} events/s: p50 {lat['p50_ms']:.0f} ms, p99 "
                f"{lat['p99_ms']:.0f} ms, max {lat['max_ms']:.0f} ms ({lat['received']}/{lat['sent']} back)"
                + _visible(lat)
            )
            if lat.get("breakdown"):
                parts = ", ".join(
                    f"{name.replace('_', ' ')} p50 {v['p50_ms']:.0f} / p99 {v['p99_ms']:.0f} ms"
                    for name, v in lat["breakdown"].items()
                )
                lines.append(f"  - where it goes (the predictions' `timings`): {parts}")
            if lat.get("curve"):
                points = "; ".join(
                    f"{c['rate']:,.0f}/s: p50 {c['p50_ms']:.0f} / p99 {c['p99_ms']:.0f} ms" for c in lat["curve"]
                )
                lines.append(f"  - same job at lower rates first (latency vs load): {points}")
        for note in data.get("diagnostics", []):
            lines.append(f"- diagnostic: {note}")
    if name in ("memory", "soak"):
        lines += _memory_details(name, data)
    if name == "peers" and data.get("vatic"):
        lines += _peer_details(data)
    if name == "visible" and data.get("delivery"):
        lines += _visible_details(data)
    if name == "capacity":
        return _capacity_details(data)
    if name in ("shadow", "graph") and data.get("stream_eps"):
        lines += _two_door_details(data)
    if name == "gpu" and data.get("cells"):
        lines += ["| device | batch | rows/s | p50 ms |", "|---|---|---|---|"]
        for cell in data["cells"]:
            lines.append(f"| {cell['device']} | {cell['batch']} | {cell['rows_per_s']:,.0f} | {cell['p50_ms']:.2f} |")
    return lines


def _capacity_details(data: dict[str, Any]) -> list[str]:
    lines = [
        f"{data.get('events')} pre-loaded events per run, 8 partitions (3 replicas, min.insync.replicas 2), "
        f"{data.get('cores')} cores; medians over the repeats. CPU per event over the window from the first to the "
        "last output: the TaskManagers (JVMs and Python workers), the three Kafka nodes, the model server.",
        "",
        "| parallelism | events/s per slot | busy cores | job CPU ms/event | Kafka CPU ms/event | model CPU ms/event |",
        "|---|---|---|---|---|---|",
    ]
    for p, per_slot in data.get("eps_per_slot", {}).items():
        cpu = data.get("cpu_ms_per_event", {}).get(p, {})
        lines.append(
            f"| {p} | {_fmt(per_slot)} | {_fmt(data.get('busy_cores', {}).get(p))} | {_fmt(cpu.get('job'))} | "
            f"{_fmt(cpu.get('kafka'))} | {_fmt(cpu.get('model'))} |"
        )
    return lines


def _two_door_details(data: dict[str, Any]) -> list[str]:
    """Every run of a two-door comparison (the stream's events/s, REST req/s and p99), and the graph's calls."""
    lines = ["| setup | stream events/s per run (median) | REST c=16 req/s, p99 ms per run |", "|---|---|---|"]
    for label, runs in data["stream_eps"].items():
        rest = data.get("rest", {}).get(label, [])
        door = "; ".join(f"{r['rps']:.1f}, {r['p99_ms']:.0f}" for r in rest) or "-"
        stream = ", ".join(f"{eps:.1f}" for eps in runs)
        lines.append(f"| {label} | {stream} ({statistics.median(runs):.1f}) | {door} |")
    if data.get("calls"):
        lines += ["", "The graph's two calls for one micro-batch of 32 (embedder, then head), alternating:", "",
                  "| transport | wall ms | model-server CPU ms |", "|---|---|---|"]  # fmt: skip
        for protocol, took in data["calls"].items():
            lines.append(f"| {protocol} | {took['wall_ms']:.1f} | {took['server_cpu_ms']:.1f} |")
    return lines


def _memory_details(name: str, data: dict[str, Any]) -> list[str]:
    """Per-kind RSS of the memory comparison; trends and samples of the soak."""
    lines: list[str] = []
    if name == "memory" and data.get("draining"):
        lines += [
            f"Drain of {data['events']:,} events at {data['eps']:,.0f} events/s (parallelism {data['parallelism']}), "
            f"RSS sampled every {data['interval_s']} s from the first output to the job's exit:",
            "",
            "| process tree | kind | peak MB | mean MB |",
            "|---|---|---|---|",
        ]
        for group, summary in data["draining"].items():
            lines.append(f"| {group} | all ({summary['processes']} processes) | {summary['peak_mb']:,.0f} | "
                         f"{summary['mean_mb']:,.0f} |")  # fmt: skip
            for kind, cell in summary["kinds"].items():
                lines.append(f"| {group} | {kind} | {cell['peak_mb']:,.0f} | {cell['mean_mb']:,.0f} |")
    if name == "soak" and data.get("rss"):
        lag = data["lag"]
        lines += [
            f"{data['seconds'] / 60:.1f} minutes at {data['rate']:,.0f} events/s, {data['samples']} samples; "
            f"{data['sent']:,} sent, {data['lost']:,} lost, {data.get('duplicates', 0):,} duplicates, "
            f"{data.get('dead', 0):,} dead letters; lag {lag['start'] or 0:,.0f} -> {lag['end'] or 0:,.0f} "
            f"(slope {lag['slope_per_s']:.3g} events/s).",
            "",
            "| process tree | kind | mean MB | slope MB/h (second half) |",
            "|---|---|---|---|",
        ]
        for group, trend in data["rss"].items():
            lines.append(f"| {group} | all | {trend['mean_mb']:,.0f} | {trend['slope_mb_per_h']:+,.1f} |")
            for kind, cell in trend["kinds"].items():
                lines.append(f"| {group} | {kind} | {cell['mean_mb']:,.0f} | {cell['slope_mb_per_h']:+,.1f} |")
        if data.get("p99_windows_ms"):
            lines += ["", "p99 per window (ms): " + ", ".join(f"{v:.0f}" for v in data["p99_windows_ms"])]
    return lines


def _visible(lat: dict[str, Any]) -> str:
    """``; visible (read_committed) p50 .. / p99 ..`` when the run had a watcher."""
    seen = lat.get("visible")
    if not seen:
        return ""
    return f"; visible (read_committed) p50 {seen['p50_ms']:.0f} ms, p99 {seen['p99_ms']:.0f} ms"


def _peer_details(data: dict[str, Any]) -> list[str]:
    vatic = data["vatic"]
    lines = [
        "| pipeline | processes | max events/s (runs) | rate | processed p50 / p99 ms | visible p50 / p99 ms |",
        "|---|---|---|---|---|---|",
    ]

    def line(name: str, processes: str, runs: str, lat: dict[str, Any]) -> str:
        seen = lat.get("visible") or {"p50_ms": float("nan"), "p99_ms": float("nan")}
        return (
            f"| {name} | {processes} | {runs} | {lat['rate']:,.0f}/s | {lat['p50_ms']:.0f} / {lat['p99_ms']:.0f} | "
            f"{seen['p50_ms']:.0f} / {seen['p99_ms']:.0f} |"
        )

    lines.append(line("vatic job (Flink)", "parallelism 2", f"{vatic['eps']:,.0f}", vatic["latency"]))
    for kind, title in (("batched", "batched consumer"), ("quix", "Quix Streams app")):
        peer = data.get(kind)
        if peer:
            runs = ", ".join(f"{r['eps']:,.0f}" for r in peer["runs"])
            lines.append(line(title, str(data.get("members", 2)), runs, peer["latency"]))
    lines.append("")
    for kind, reason in (data.get("skipped_peers") or {}).items():
        lines.append(f"- {kind}: skipped ({reason})")
    if data.get("settings"):
        lines.append(f"- settings: `{json.dumps(data['settings'])}`")
    return lines


def _visible_details(data: dict[str, Any]) -> list[str]:
    lines = [
        f"Parallelism {data['parallelism']}; max events/s with 5 s checkpoints {data['max_eps']:,.0f}, with 1 s "
        f"{data['max_eps_1s']:,.0f}.",
        "",
        "| profile | rate | processed p50 / p99 ms | visible p50 / p99 ms | visible max ms |",
        "|---|---|---|---|---|",
    ]
    for name, lat in data["delivery"].items():
        points = [
            {"rate": c["rate"], "p50_ms": c["p50_ms"], "p99_ms": c["p99_ms"],
             "visible": {k.removeprefix("visible_"): v for k, v in c.items() if k.startswith("visible_")}}
            for c in lat.get("curve", [])
        ]  # fmt: skip
        for point in [*points, lat]:
            seen = point.get("visible") or {}
            lines.append(
                f"| {name.replace('_', ' ')} | {point['rate']:,.0f}/s | {point['p50_ms']:.0f} / "
                f"{point['p99_ms']:.0f} | {seen.get('p50_ms', float('nan')):.0f} / "
                f"{seen.get('p99_ms', float('nan')):.0f} | {seen.get('max_ms', float('nan')):.0f} |"
            )
    return lines
