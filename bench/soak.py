"""``make bench-soak``: vatic's streaming job unbounded at half its max rate for a long while - does anything grow?

Usage (from the checkout root)::

    .venv/pipeline/bin/python -m bench.soak [--minutes M] [--rate R] [--interval S] [--parallelism P]

* The rate: ``--rate``, else half of the max events/s of a short bounded drain (6,000 events) measured first.
* vatic's job (``vatic stream run --no-bounded``, the fraud service on fresh topics) runs for ``--minutes``
  (default ``SOAK_MINUTES`` from the environment, else 30) while an open-loop producer sends at the rate
  (each event's ``event_time`` is its scheduled send time, so a late producer does not hide queueing) and a
  ``read_committed`` consumer reads the predictions and dead letters.
* Every ``--interval`` seconds (default 10) one line is printed and kept as a sample: the RSS of the job's
  process tree and of the ``fraud-model`` server's (by kind, see :mod:`bench.memory`), the consumer lag (end
  offsets of the input topic minus the offsets the job's group committed - Flink commits them on checkpoint),
  the outputs' backlog (sent minus read back) and the latency (prediction append time minus scheduled send
  time) p50/p99 of the predictions read in that window.
* After the producer stops, the job gets up to 120 s to drain; every sent event must come back as exactly one
  prediction or dead letter.

Verdicts (see :func:`analyze`; slopes are least squares over the second half of the samples, after warm-up):

* RSS: no growth = a slope below :data:`RSS_GROWTH_PCT_PER_HOUR` % of the tree's mean RSS per hour, per group
  (``job``, ``fraud-model``); the slope per kind is reported too.
* lag: flat = its slope below :data:`LAG_GROWTH_SHARE` of the input rate (the job keeps up within 1%).
* loss: 0 events without a prediction or dead letter.
* latency: the worst window's p99 over the second half (the first windows hold the job's start-up backlog).

The lag is read from the offsets Flink commits on checkpoint, so it moves in steps of one checkpoint interval's
events (``checkpoint_interval_s``, 5 s by default): a flat lag of about rate x interval is a job that keeps up.

Writes ``bench/results/soak.json`` and merges the soak's target rows into ``bench/results/summary.json``
(keeping the other comparisons' results, as ``bench.run --only`` does). Exit 0 when the soak ran (missed
targets are results), 2 with one line when a component is missing or fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/soak.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, ROOT, BenchError, Options, percentile, say
from bench.memory import MB, RssSampler, snapshot

#: RSS "no growth": slope (second half) below this share of the mean RSS, in percent per hour
RSS_GROWTH_PCT_PER_HOUR = 1.0
#: lag "flat": slope (events/s of lag growth, second half) below this share of the input rate
LAG_GROWTH_SHARE = 0.01
#: the latency target of a window's p99 (ms; the streaming comparison's p99 target)
P99_TARGET_MS = 50.0
DRAIN_S = 120.0
GROUPS = ("job", "fraud-model")


# --- the analysis (pure: tested on hand-built samples) ----------------------------------------------------


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``(x, y)`` points; NaN for fewer than two distinct x."""
    if len(points) < 2:
        return float("nan")
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return float("nan")
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def second_half(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The samples of the second half of the run (by time; at least the last two samples)."""
    if len(samples) < 4:
        return samples[-2:]
    middle = (samples[0]["t"] + samples[-1]["t"]) / 2
    return [s for s in samples if s["t"] >= middle]


def _rss_trend(half: list[dict[str, Any]], group: str) -> dict[str, Any]:
    present = [s for s in half if s.get(group, {}).get("processes")]
    totals = [(s["t"] / 3600, s[group]["total"] / MB) for s in present]
    mean = sum(y for _, y in totals) / len(totals) if totals else float("nan")
    per_hour = slope(totals)
    kinds = sorted({k for s in present for k in s[group]["kinds"]})
    return {
        "mean_mb": mean,
        "slope_mb_per_h": per_hour,
        "slope_pct_per_h": 100 * per_hour / mean if mean else float("nan"),
        "kinds": {
            kind: {
                "mean_mb": sum(s[group]["kinds"].get(kind, 0) for s in present) / MB / len(present),
                "slope_mb_per_h": slope([(s["t"] / 3600, s[group]["kinds"].get(kind, 0) / MB) for s in present]),
            }
            for kind in kinds
        },
    }


def analyze(samples: list[dict[str, Any]], rate: float, sent: int, accounted: int) -> dict[str, Any]:
    """Trends and verdicts of a soak from its samples (``{"t": s, "job": tree, "fraud-model": tree, "lag": n |
    None, "p99_ms": ms | NaN, ...}``), the input rate, and the events sent / accounted for (distinct
    predictions + dead letters)."""
    half = second_half(samples)
    rss = {group: _rss_trend(half, group) for group in GROUPS}
    lags = [(s["t"], float(s["lag"])) for s in samples if s.get("lag") is not None]
    lag_half = [(s["t"], float(s["lag"])) for s in half if s.get("lag") is not None]
    lag_slope = slope(lag_half)
    windows = [s["p99_ms"] for s in samples if not math.isnan(s.get("p99_ms", float("nan")))]
    late = [s["p99_ms"] for s in half if not math.isnan(s.get("p99_ms", float("nan")))]
    return {
        "rate": rate,
        "samples": len(samples),
        "seconds": samples[-1]["t"] if samples else 0.0,
        "rss": rss,
        "rss_growth": {
            group: trend["slope_pct_per_h"] < RSS_GROWTH_PCT_PER_HOUR
            if not math.isnan(trend["slope_pct_per_h"])
            else None
            for group, trend in rss.items()
        },
        "lag": {
            "start": lags[0][1] if lags else None,
            "end": lags[-1][1] if lags else None,
            "slope_per_s": lag_slope,
            "flat": None if math.isnan(lag_slope) else lag_slope < LAG_GROWTH_SHARE * rate,
        },
        "p99_windows_ms": windows,
        "worst_p99_ms": max(late) if late else float("nan"),
        "sent": sent,
        "accounted": accounted,
        "lost": sent - accounted,
    }


def _count(value: float | None) -> str:
    return "unknown (no commit yet)" if value is None else f"{value:,.0f}"


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The soak's target rows (comparison ``soak``)."""
    minutes = result["seconds"] / 60
    out: list[dict[str, Any]] = []
    for group in GROUPS:
        trend = result["rss"][group]
        pct = trend["slope_pct_per_h"]
        out.append(
            {
                "id": f"soak_rss_growth_{group.replace('-', '_')}",
                "comparison": "soak",
                "metric": f"RSS slope of {'vatic job' if group == 'job' else group} over the second half of a "
                f"{minutes:.0f}-minute soak at {result['rate']:,.0f} events/s ({trend['slope_mb_per_h']:+.1f} MB/h "
                f"on {trend['mean_mb']:.0f} MB)",
                "unit": "%/h",
                "vatic": pct,
                "baseline": RSS_GROWTH_PCT_PER_HOUR,
                "ratio": pct / RSS_GROWTH_PCT_PER_HOUR,
                "target": f"<= {RSS_GROWTH_PCT_PER_HOUR:g} %/h",
                "met": result["rss_growth"][group],
            }
        )
    lag = result["lag"]
    bound = LAG_GROWTH_SHARE * result["rate"]
    out.append(
        {
            "id": "soak_lag_growth",
            "comparison": "soak",
            "metric": f"consumer lag slope, second half (lag {_count(lag['start'])} at start, "
            f"{_count(lag['end'])} at end)",
            "unit": "events/s",
            "vatic": lag["slope_per_s"],
            "baseline": bound,
            "ratio": lag["slope_per_s"] / bound if bound else float("nan"),
            "target": f"<= {bound:,.2f} events/s (1% of the rate)",
            "met": lag["flat"],
        }
    )
    out.append(
        {
            "id": "soak_lost",
            "comparison": "soak",
            "metric": f"events without a prediction or dead letter ({result['accounted']:,} of {result['sent']:,} "
            "accounted for)",
            "unit": "events",
            "vatic": float(result["lost"]),
            "baseline": 0.0,
            "ratio": float("nan"),
            "target": "0 lost",
            "met": result["lost"] == 0,
        }
    )
    worst = result["worst_p99_ms"]
    out.append(
        {
            "id": "soak_worst_window_p99",
            "comparison": "soak",
            "metric": "worst window's event-to-prediction p99 over the second half of the soak (all windows in the "
            "details)",
            "unit": "ms",
            "vatic": worst,
            "baseline": P99_TARGET_MS,
            "ratio": worst / P99_TARGET_MS,
            "target": f"<= {P99_TARGET_MS:g} ms",
            "met": None if math.isnan(worst) else worst <= P99_TARGET_MS,
        }
    )
    return out


# --- the run ------------------------------------------------------------------------------------------------


def event_uuid(prefix: int, index: int) -> str:
    """The event_id of the soak's ``index``-th event: a UUID whose high 64 bits are the run's ``prefix``."""
    return str(uuid.UUID(int=(prefix << 64) | index))


def event_index(prefix: int, event_id: str | None) -> int | None:
    """The index of a soak event_id of this run (:func:`event_uuid`); None for any other id."""
    try:
        value = uuid.UUID(str(event_id)).int
    except ValueError:
        return None
    return value & ((1 << 64) - 1) if value >> 64 == prefix else None


@dataclass
class Producer:
    """Open-loop producer thread: ``rate`` events/s until stopped, event_time = scheduled send time."""

    topics: Any
    rate: float
    prefix: int
    sent: int = 0
    behind_s: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        from bench.workload import events

        producer = self.topics.producer()
        sample = events(5000, seed=31)
        start = time.time()
        i = 0
        while not self.stop.is_set():
            scheduled = start + i / self.rate
            delay = scheduled - time.time()
            if delay > 0.0005:
                time.sleep(min(delay, 0.5))
                continue
            self.behind_s = max(self.behind_s, -delay)
            event = dict(sample[i % len(sample)])
            event["event_id"] = event_uuid(self.prefix, i)
            event["event_time"] = int(scheduled * 1000)
            producer.produce(self.topics.input, self.topics.codec.encode(event), event["customer_id"].encode())
            i += 1
            self.sent = i
            if i % 50 == 0:
                producer.poll(0)
        producer.flush(60)


@dataclass
class Reader:
    """Reads predictions and dead letters (read_committed) in a thread: distinct soak events seen, latencies of
    the current window, duplicates."""

    topics: Any
    prefix: int
    seen: bytearray = field(default_factory=bytearray)
    accounted: int = 0
    duplicates: int = 0
    dead: int = 0
    window: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def _mark(self, index: int | None) -> None:
        if index is None:
            return
        if index >= len(self.seen):
            self.seen.extend(bytes(max(index + 1 - len(self.seen), 65536)))
        if self.seen[index]:
            self.duplicates += 1
        else:
            self.seen[index] = 1
            self.accounted += 1

    def run(self) -> None:
        from confluent_kafka import Consumer

        from vatic.schemas import AvroCodec, load_schema, topic_subject

        t = self.topics
        predictions = AvroCodec(t.store, topic_subject(t.output), load_schema("prediction"))
        dead_letters = AvroCodec(t.store, topic_subject(t.dead), load_schema("dead_letter"))
        consumer = Consumer(
            {
                **t.conf, "group.id": f"bench-soak-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest",
                "isolation.level": "read_committed", "enable.auto.commit": False, "log_level": 3,
            }
        )  # fmt: skip
        consumer.subscribe([t.output, t.dead])
        try:
            while not self.stop.is_set():
                for msg in consumer.consume(2000, 0.5):
                    if msg.error():
                        continue
                    payload = msg.value() or b""
                    with self.lock:
                        if msg.topic() == t.dead:
                            self.dead += 1
                            self._mark(event_index(self.prefix, dead_letters.decode(payload).get("event_id")))
                            continue
                        record = predictions.decode(payload)
                        index = event_index(self.prefix, str(record["event_id"]))
                        self._mark(index)
                        if index is not None:
                            event_time = record["timings"]["event_time"]
                            ms = event_time.timestamp() * 1000 if hasattr(event_time, "timestamp") else event_time
                            self.window.append(msg.timestamp()[1] - float(ms))
        finally:
            consumer.close()

    def take_window(self) -> list[float]:
        with self.lock:
            window, self.window = self.window, []
        return window


def committed_lag(topics: Any, group: str) -> int | None:
    """End offsets of the input topic minus the offsets ``group`` committed (None before its first commit)."""
    from confluent_kafka import Consumer, TopicPartition

    from bench.streaming import PARTITIONS

    consumer = Consumer({**topics.conf, "group.id": group, "enable.auto.commit": False, "log_level": 3})
    try:
        parts = [TopicPartition(topics.input, p) for p in range(PARTITIONS)]
        committed = consumer.committed(parts, timeout=5)
        if all(c.offset < 0 for c in committed):
            return None
        lag = 0
        for c in committed:
            _, high = consumer.get_watermark_offsets(TopicPartition(topics.input, c.partition), timeout=5)
            lag += high - max(c.offset, 0)
        return lag
    finally:
        consumer.close()


def _line(sample: dict[str, Any]) -> str:
    def tree(group: str) -> str:
        data = sample[group]
        kinds = " ".join(f"{k} {v / MB:.0f}" for k, v in data["kinds"].items())
        return f"{group} {data['total'] / MB:.0f} MB ({kinds})"

    lag = "-" if sample["lag"] is None else f"{sample['lag']:,}"
    p99 = "-" if math.isnan(sample["p99_ms"]) else f"{sample['p50_ms']:.0f}/{sample['p99_ms']:.0f} ms"
    return (
        f"soak t={sample['t']:6.0f}s | {tree('job')} | {tree('fraud-model')} | lag {lag} | "
        f"backlog {sample['backlog']:,} | p50/p99 {p99} (n={sample['n']}) | sent {sample['sent']:,}"
    )


def _sample(
    sampler: RssSampler, producer: Producer, reader: Reader, topics: Any, group: str, proc: Any, log: Path, end: float
) -> list[dict[str, Any]]:
    """Every ``sampler.interval_s`` until ``end`` (monotonic): one sample and one printed line."""
    from bench import streaming as s

    samples: list[dict[str, Any]] = []
    next_tick = sampler.started + sampler.interval_s
    while time.monotonic() < end:
        time.sleep(max(0.0, min(next_tick, end) - time.monotonic()))
        next_tick += sampler.interval_s
        if proc.poll() is not None:
            raise BenchError(f"vatic's streaming job exited ({proc.returncode}) during the soak: {s._tail(log)}")
        sample = sampler.sample()
        window = reader.take_window()
        sample.update(
            lag=committed_lag(topics, group), sent=producer.sent, backlog=producer.sent - reader.accounted,
            n=len(window), p50_ms=percentile(window, 0.5), p99_ms=percentile(window, 0.99),
        )  # fmt: skip
        samples.append(sample)
        say(_line(sample))
    return samples


def soak(
    options: Options, stack: Any, minutes: float, rate: float | None, interval_s: float, parallelism: int
) -> dict[str, Any]:
    """Run the soak (see the module docstring); returns the analysis with its target rows."""
    from bench import streaming as s
    from vatic.serving.config.loader import load_service

    stack.need("kafka", "redis", "fraud-model")
    server_pid = stack.pid("fraud-model")
    if server_pid is None:
        raise BenchError("fraud-model is not running: its process id is unknown (start it with `vatic stack up`)")
    snapshot()  # /proc is readable (one line otherwise) before anything starts
    if rate is None:
        say("soak: measuring the job's max rate first (bounded drain of 6,000 events)")
        max_eps = s.vatic_max(options, stack, 6_000, parallelism=parallelism)["eps"]
        rate = max(1.0, max_eps * 0.5)
        say(f"soak: max {max_eps:,.0f} events/s; soaking at {rate:,.0f} events/s for {minutes:g} min")
    topics = s.Topics(stack, "soak")
    proc, log = s._start_job(options, stack, topics, parallelism=parallelism, batch_size=None, bounded=False)
    group = load_service(log.parent / "service" / "service.yaml").consumer_group
    prefix = uuid.uuid4().int >> 64
    producer, reader = Producer(topics, rate, prefix), Reader(topics, prefix)
    threads = [threading.Thread(target=producer.run, daemon=True), threading.Thread(target=reader.run, daemon=True)]
    sampler = RssSampler({"job": proc.pid, "fraud-model": server_pid}, interval_s=interval_s)
    samples: list[dict[str, Any]] = []
    try:
        s._warm(topics, proc, log, "vatic's streaming job")
        reader_thread = threads[1]
        reader_thread.start()
        sampler.started = time.monotonic()
        threads[0].start()
        samples = _sample(sampler, producer, reader, topics, group, proc, log, sampler.started + minutes * 60)
        producer.stop.set()
        threads[0].join(timeout=90)
        say(f"soak: producer stopped after {producer.sent:,} events; draining (up to {DRAIN_S:.0f} s)")
        deadline = time.monotonic() + DRAIN_S
        while reader.accounted < producer.sent and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(1.0)
    finally:
        producer.stop.set()
        reader.stop.set()
        s._stop(proc)
        for thread in threads:
            if thread.is_alive():
                thread.join(timeout=30)
    if not samples:
        raise BenchError("the soak took no sample: run it for at least one --interval")
    result = analyze(samples, rate, producer.sent, reader.accounted)
    result.update(
        parallelism=parallelism, interval_s=interval_s, duplicates=reader.duplicates, dead=reader.dead,
        producer_max_behind_s=producer.behind_s, series=samples,
    )  # fmt: skip
    result["rows"] = rows(result)
    return result


def merge_into_summary(result: dict[str, Any], options: Options, started: datetime) -> None:
    """Write soak.json and rewrite summary.json/report.md with the soak's rows, keeping the other results."""
    from bench import report

    options.results.mkdir(parents=True, exist_ok=True)
    (options.results / "soak.json").write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    report.merge("soak", {k: v for k, v in result.items() if k != "series"}, options, started)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.soak", description="vatic's streaming job at half its max, for long")
    default_minutes = float(os.environ.get("SOAK_MINUTES") or 30)
    parser.add_argument(
        "--minutes", type=float, default=default_minutes, help="soak length (default SOAK_MINUTES or 30)"
    )
    parser.add_argument("--rate", type=float, default=None, help="events/s (default: half the measured max)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples (default 10)")
    parser.add_argument("--parallelism", type=int, default=1, help="the job's parallelism (default 1)")
    parser.add_argument("--base-port", type=int, default=8210, help="first of 6 ports for extra servers")
    parser.add_argument("--results", type=Path, default=RESULTS, help="output folder (default bench/results)")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.interval <= 0 or (args.rate is not None and args.rate <= 0) or args.parallelism < 1:
        parser.error("--minutes, --interval, --rate and --parallelism must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.chdir(ROOT)
    from vatic.cli.stack.settings import export_home

    export_home()
    from bench.stack import BenchStack

    options = Options(only=["soak"], repeats=1, base_port=args.base_port, results=args.results.resolve())
    options.tmp.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    stack = BenchStack(options)
    try:
        stack.preflight()
        result = soak(options, stack, args.minutes, args.rate, args.interval, args.parallelism)
    except BenchError as exc:
        print(f"bench.soak: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench.soak: interrupted (started components were stopped)", file=sys.stderr)
        return 130
    finally:
        stack.close()
    merge_into_summary(result, options, started)
    for row in result["rows"]:
        met = "skipped" if row["met"] is None else "met" if row["met"] else "MISSED"
        say(f"{row['id']}: {row['vatic']:.2f} {row['unit']} (target {row['target']}): {met}")
    say(f"soak results: {options.results / 'soak.json'}; summary {options.results / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
