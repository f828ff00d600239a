"""``vatic compare SERVICE_DIR``: how the versions answering a service compare, over a window of its predictions.

Reads the service's predictions topic and, with a shadow, its shadow topic (read_committed, from the earliest
offset up to the ends at the start; events emitted within ``--since``), then prints:

* per serving version (the canary and the rest, or the versions of a rollout): answers, and per numeric output
  its mean and 10/50/90th percentiles;
* against the shadow, joined by event id: the events both answered, the share that agree (numbers within
  ``shadow.tolerance``, everything else equal) and per numeric output both distributions and the mean absolute
  difference.

``--png FILE`` also draws each numeric output's distributions (one histogram per version and the shadow);
``--json`` prints the numbers as one JSON object instead of the table.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vatic.cli.commands.dlq import moment_ms
from vatic.cli.commands.schema import RegistryUrl, open_source
from vatic.cli.commands.stream import Env, ServiceDir, tool_kafka
from vatic.schemas.errors import ConfigError
from vatic.serving.config import load_service

if TYPE_CHECKING:
    from vatic.connectors.kafka import KafkaSettings
    from vatic.schemas import SchemaSource
    from vatic.serving.core.experiments import Comparison, Distribution


def _read(topic: str, source: SchemaSource, settings: KafkaSettings, since_ms: int) -> list[dict[str, Any]]:
    from vatic.connectors.kafka import scan
    from vatic.schemas import AvroCodec, load_schema, topic_subject

    codec = AvroCodec(source, topic_subject(topic), load_schema("prediction"))
    events = []
    for record in scan(topic, settings):
        if record.value is None:
            continue
        event = codec.decode(record.value)
        if event["timings"]["emit_time"] >= since_ms:
            events.append(event)
    return events


def _row(label: str, d: Distribution | None, extra: str = "") -> str:
    if d is None:
        return f"  {label:<22} {'-':>8}"
    return f"  {label:<22} {d.count:>8} {d.mean:>10.4g} {d.p10:>10.4g} {d.p50:>10.4g} {d.p90:>10.4g}{extra}"


def _table(comparison: Comparison, topics: list[str]) -> list[str]:
    lines = [f"{', '.join(topics)}: {sum(comparison.versions.values())} prediction(s)"]
    lines.append("answers by version: " + ", ".join(f"{v or '?'}: {n}" for v, n in comparison.versions.items()))
    outputs = sorted({name for found in comparison.by_version.values() for name in found})
    header = f"  {'':<22} {'count':>8} {'mean':>10} {'p10':>10} {'p50':>10} {'p90':>10}"
    for name in outputs:
        lines += [f"output {name}:", header]
        for version, found in comparison.by_version.items():
            lines.append(_row(f"version {version}", found.get(name)))
    if comparison.shadow is None:
        lines.append("shadow: none in the window")
        return lines
    agreement = comparison.agreement
    share = f"{agreement:.1%}" if agreement is not None else "-"
    lines.append(f"shadow {comparison.shadow}: {comparison.joined} event(s) both answered, {share} agree")
    for name, serving in comparison.serving_joined.items():
        lines += [f"output {name} (joined):", header]
        lines.append(_row("serving", serving))
        diff = comparison.mean_abs_diff.get(name)
        lines.append(_row("shadow", comparison.shadow_joined.get(name), f"   mean |diff| {diff:.4g}" if diff else ""))
    return lines


def _plot(comparison: Comparison, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outputs = sorted({name for _, name in comparison.values})
    if not outputs:
        raise ConfigError("no numeric output in the window: nothing to plot")
    figure, axes = plt.subplots(len(outputs), 1, figsize=(8, 3.2 * len(outputs)), squeeze=False)
    for axis, name in zip(axes[:, 0], outputs, strict=True):
        series = {
            label: finite
            for (label, output), numbers in sorted(comparison.values.items())
            if output == name and (finite := [v for v in numbers if not math.isnan(v)])
        }
        if not series:  # every value missing (NaN)
            continue
        low = min(min(v) for v in series.values())
        high = max(max(v) for v in series.values())
        edges = [low + (high - low) * i / 40 for i in range(41)] if high > low else 1  # the same bins for every series
        for label, finite in series.items():
            axis.hist(finite, bins=edges, histtype="step", density=True, label=f"{label} ({len(finite)})")
        axis.set_title(name)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def compare(
    service_dir: ServiceDir,
    env: Env = "local",
    since: Annotated[
        str, typer.Option(help="predictions emitted at or after: ISO 8601 time, epoch ms, or an age (30m, 2h)")
    ] = "1h",
    png: Annotated[Path | None, typer.Option(help="also draw the distributions into this PNG file")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the numbers as one JSON object")] = False,
    schema_registry_url: RegistryUrl = None,
) -> None:
    """Compare the versions answering a service (canary, rollout) and its shadow, over a window of predictions."""
    from vatic.serving.core.experiments import compare as compare_events

    config = load_service(service_dir, env)
    if config.streaming is None:
        raise ConfigError(f"service {config.service} has no streaming section: it has no predictions topic")
    since_ms = moment_ms(since, "--since") or 0
    source, _ = open_source(schema_registry_url)
    settings = tool_kafka()
    topics = [config.streaming.output_topic]
    started = time.monotonic()
    predictions = _read(config.streaming.output_topic, source, settings, since_ms)
    shadows: list[dict[str, Any]] = []
    if config.shadow_topic is not None:
        topics.append(config.shadow_topic)
        shadows = _read(config.shadow_topic, source, settings, since_ms)
    tolerance = config.shadow.tolerance if config.shadow is not None else 0.01
    comparison = compare_events(predictions, shadows, tolerance=tolerance)
    if png is not None:
        _plot(comparison, png)
    if as_json:
        typer.echo(json.dumps(_as_json(comparison)))
    else:
        for line in _table(comparison, topics):
            typer.echo(line)
        typer.echo(f"read in {time.monotonic() - started:.1f} s" + (f"; plot: {png}" if png else ""), err=True)


def _as_json(comparison: Comparison) -> dict[str, Any]:
    def dist(d: Distribution) -> dict[str, float]:
        return {"count": d.count, "mean": d.mean, "p10": d.p10, "p50": d.p50, "p90": d.p90}

    return {
        "versions": comparison.versions,
        "by_version": {v: {n: dist(d) for n, d in found.items()} for v, found in comparison.by_version.items()},
        "shadow": comparison.shadow,
        "joined": comparison.joined,
        "agreed": comparison.agreed,
        "agreement": comparison.agreement,
        "serving_joined": {n: dist(d) for n, d in comparison.serving_joined.items()},
        "shadow_joined": {n: dist(d) for n, d in comparison.shadow_joined.items()},
        "mean_abs_diff": comparison.mean_abs_diff,
    }
