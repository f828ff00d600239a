"""``vatic demo``: both use cases end to end on the running local stack, on both paths.

1. starts the streaming job (one job, a pipeline per service) against the stack's model servers;
2. produces sample events of both use cases, with a progress bar, plus a few deliberately bad ones
   (undecodable bytes, a schema-incompatible record, unknown category codes the model cannot encode);
3. reports predictions as they arrive (count, event-to-prediction latency p50/p99);
4. rolls a new model version out while the stream runs (the fraud service follows its registry's ``production``
   stage): halfway through its events it registers a new version (a copy of the current one's artifact: the act
   shows the rollout, not a retraining), moves the stage, waits until the model server has switched, then
   counts the predictions each version answered - one line per step;
5. makes a few REST calls to the gateway (same enrichment, same models);
6. shows the dead-letter records and stops the job;
7. the drift act (``--no-drift`` skips it): the last 40% of the fraud events have their amount multiplied by 4; a
   bounded drift monitor (``vatic monitor run``, windows of ``--drift-window-s``) reads this run's predictions and
   one line per window says what it judged; the run's fraud events are recorded with their true labels, ``vatic
   retrain``'s steps train the next version on the data up to now, the gate compares it with the serving version,
   and a version that passed is promoted canary first; then the demo ends with exactly one line::

       demo: <in> events in, <out> predictions, <dlq> dead-lettered, <lost> lost

Latency is reported per use case, twice, as ``make bench`` measures it: *processed* (the prediction record's
Kafka timestamp, when the job's sink wrote it, minus the event's send time) and *visible* (when this
``read_committed`` consumer received it, minus the send time): with EXACTLY_ONCE the predictions become visible
when the job's Kafka transaction commits at the next checkpoint, so *visible* includes up to one checkpoint
interval. The default rate (50 events/s per use case) leaves the job headroom on 2 cores, so the figures are the
job's latency, not a queue.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from vatic.cli.commands.schema import registry_url
from vatic.cli.stack.services import MODEL_SERVERS
from vatic.cli.stack.settings import StackSettings, registry_root_for
from vatic.cli.stack.stack import Stack
from vatic.connectors.kafka import LIBRDKAFKA_LOG, Consumer, KafkaSettings, Producer, ensure_topics
from vatic.connectors.schema_registry import schema_source
from vatic.examples.fraud_detection.events import make_world, transactions
from vatic.examples.product_categorization.events import products
from vatic.schemas import AvroCodec, SchemaSource, load_schema, topic_subject
from vatic.schemas.errors import ConfigError
from vatic.serving.config import ServiceConfig, load_service


@dataclass
class Service:
    """One demo service: its config, folder, model server URL, codecs and what this run sent to it."""

    config: ServiceConfig
    folder: Path
    model_url: str
    sent: dict[str, int] = field(default_factory=dict)  # event_id -> event_time (ms)
    bad_bytes: set[bytes] = field(default_factory=set)  # payloads without a readable event id

    @property
    def topics(self) -> tuple[str, str, str]:
        spec = self.config.streaming
        assert spec is not None
        return spec.input_topic, spec.output_topic, spec.dead_letter_topic


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


def _services(stack: Stack) -> list[Service]:
    services = []
    for name in MODEL_SERVERS:
        component: Any = stack.components[name]
        health = component.health()
        if health.state != "up":
            hint = "run `vatic usecases prepare` then `vatic stack up`" if health.state == "skipped" else ""
            raise ConfigError(f"{name} is {health.state} {health.detail}: start the stack (`vatic stack up`) {hint}")
        folder = component.service_dir
        services.append(Service(load_service(folder), folder, component.url))
    return services


def _start_job(services: list[Service], log: Path, registry: str | None) -> subprocess.Popen[bytes]:
    vatic = str(Path(sys.executable).parent / "vatic")
    argv = [vatic, "stream", "run", *(str(s.folder) for s in services)]
    for service in services:
        argv += ["--model-url", service.model_url]
    if registry:
        argv += ["--schema-registry-url", registry]
    argv += ["--checkpoint-dir", str(log.parent / "checkpoints"), "--no-resume"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log.open("wb"), start_new_session=True)


#: deliberately bad records per service: undecodable bytes, a too-short payload, another schema's record
BAD_PER_SERVICE = 3


def _produce(
    progress: Progress, services: list[Service], store: SchemaSource, events: int, kafka: KafkaSettings, rate: float,
    midway: Callable[[Service], None] | None = None, drift: Drift | None = None,
) -> int:  # fmt: skip
    """Produce ``events`` per service (``rate`` events/s each) plus the bad ones; returns how many records went in.
        Runs while the outputs are read (:func:`_collect`), so that the latencies measured are the job's: an event is
        recorded as sent before it is produced. ``progress`` is the one display both share (rich shows one at a
        time). ``midway`` runs halfway through each service's events, once what was produced is flushed. With ``drift``,
    the last :data:`SHIFTED_SHARE` of the fraud events have their amount multiplied by :data:`SHIFT`, and the fraud
    events are kept with their true labels (the drift act)."""
    producer = Producer(kafka)
    run = uuid.uuid4().hex[:8]
    total = 0
    for service in services:
        input_topic, _, _ = service.topics
        schema = service.config.streaming.input_schema if service.config.streaming else ""
        codec = AvroCodec(store, topic_subject(input_topic), load_schema(schema))
        now = time.time_ns() // 1_000_000
        if schema == "transaction":
            generated: Any = transactions(make_world(), events, start_ms=now)
        else:
            generated = products(events, start_ms=now)
        task = progress.add_task(f"produce {input_topic}", total=events)
        for i, (event, label) in enumerate(generated):
            if midway is not None and i == events // 2:
                producer.flush()
                midway(service)
            # the generators are seeded: ids of their own would repeat those of an earlier run, whose records a
            # restarted job may still replay from its last committed offsets
            event["event_id"] = str(uuid.uuid4())
            event["event_time"] = time.time_ns() // 1_000_000
            if drift is not None and schema == "transaction":
                if i >= events * (1 - SHIFTED_SHARE):
                    event["amount"] = round(float(event["amount"]) * SHIFT, 2)
                    drift.start_ms = drift.start_ms or int(event["event_time"])
                drift.first_ms = drift.first_ms or int(event["event_time"])
                drift.events.append(dict(event))
                drift.labels.append(label)
            if i % 500 == 250 and schema == "transaction":
                event["merchant_category"] = "0000"  # no such category code: the model cannot encode it
            key = str(event.get("customer_id") or event.get("product_id")).encode()
            service.sent[str(event["event_id"])] = int(event["event_time"])
            producer.produce(input_topic, codec.encode(event), key)
            progress.advance(task)
            if i % 50 == 49:
                producer.poll(0)
                time.sleep(50 / rate)  # a stream at a steady rate, not a dump
        # deliberately bad records (unique to this run): undecodable bytes, a payload shorter than the
        # wire-format header, and a record written with another (incompatible) schema
        for payload in (f"demo {run}: not Avro at all".encode(), b"\x00" + run[:3].encode()):
            service.bad_bytes.add(payload)
            producer.produce(input_topic, payload, b"bad")
        other = "product_created" if schema == "transaction" else "transaction"
        foreign = AvroCodec(store, topic_subject(f"{input_topic}.foreign"), load_schema(other))
        sample = next(transactions(make_world(), 1))[0] if other == "transaction" else next(products(1))[0]
        sample["event_id"] = str(uuid.uuid4())
        payload = foreign.encode(sample)
        service.bad_bytes.add(payload)
        producer.produce(input_topic, payload, b"foreign")
        total += len(service.sent) + BAD_PER_SERVICE
    producer.flush()
    return total


def _warm_up(
    console: Console, services: list[Service], store: SchemaSource, consumer: Consumer, kafka: KafkaSettings,
    job: subprocess.Popen[bytes], log: Path,
) -> None:  # fmt: skip
    """One probe event per service, waited for: the job is up (mini-cluster, Python workers, models) when their
    predictions come back. Probes are not counted in the demo's totals."""
    producer = Producer(kafka)
    pending: dict[str, Service] = {}
    for service in services:
        input_topic, _, _ = service.topics
        schema = service.config.streaming.input_schema if service.config.streaming else ""
        codec = AvroCodec(store, topic_subject(input_topic), load_schema(schema))
        event = next(transactions(make_world(), 1))[0] if schema == "transaction" else next(products(1))[0]
        event_id = str(uuid.uuid4())
        event["event_id"], event["event_time"] = event_id, time.time_ns() // 1_000_000
        producer.produce(input_topic, codec.encode(event), b"warm-up")
        pending[event_id] = service
    producer.flush()
    started = time.monotonic()
    with console.status("starting the streaming job (mini-cluster, Python workers, first batches)..."):
        while pending and time.monotonic() - started < 180:
            if job.poll() is not None:
                raise ConfigError(f"the streaming job exited ({job.returncode}); log: {log}")
            for record in consumer.poll_batch(100, timeout=0.5):
                for event_id in list(pending):
                    if event_id.encode() in (record.value or b""):
                        del pending[event_id]
    if pending:
        raise ConfigError(f"the streaming job did not answer within 180 s; log: {log}")
    console.print(f"  job up in {time.monotonic() - started:.1f}s (one probe event per service answered)")


#: per service: milliseconds from an event's send to its prediction (written by the job, or seen by the demo)
Latencies = dict[str, list[float]]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _output_consumer(services: list[Service], kafka: KafkaSettings) -> Consumer:
    """A consumer positioned at the current end of every output topic, before anything of this run is written."""
    topics = [t for service in services for t in service.topics[1:]]
    consumer = Consumer(topics, f"vatic-demo-{uuid.uuid4().hex[:8]}", kafka, config={"auto.offset.reset": "latest"})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not consumer.assignment():
        consumer.poll_batch(1, timeout=0.2)
    return consumer


def _collect(
    progress: Progress, services: list[Service], store: SchemaSource, consumer: Consumer, total: int,
    timeout_s: float, job: subprocess.Popen[bytes], log: Path, producing: Future[int],
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], Latencies, Latencies]:  # fmt: skip
    """Read predictions and dead letters of this run, while ``producing`` writes the inputs, until every input is
    accounted for (or time runs out). Visible latency is measured as a ``read_committed`` consumer sees it: from
    the event's time to the moment the prediction is read here."""
    codecs, owner = {}, {}
    for service in services:
        _, output, dead = service.topics
        codecs[output] = AvroCodec(store, topic_subject(output), load_schema("prediction"))
        codecs[dead] = AvroCodec(store, topic_subject(dead), load_schema("dead_letter"))
        owner[output] = owner[dead] = service
    predictions: dict[str, dict[str, Any]] = {}
    dead_letters: list[dict[str, Any]] = []
    dead_sources: set[tuple[Any, ...]] = set()
    processed: Latencies = {s.config.service: [] for s in services}
    visible: Latencies = {s.config.service: [] for s in services}
    deadline = time.monotonic() + timeout_s
    task = progress.add_task("predictions + dead letters", total=total)
    while len(predictions) + len(dead_letters) < total and time.monotonic() < deadline:
        if job.poll() is not None:
            raise ConfigError(f"the streaming job exited ({job.returncode}); log: {log}")
        if producing.done() and producing.exception() is not None:
            raise producing.exception()  # type: ignore[misc]
        for record in consumer.poll_batch(1000, timeout=0.5):
            service = owner[record.topic]
            value = codecs[record.topic].decode(record.value or b"")
            if record.topic == service.topics[1]:
                event_id = value["event_id"]
                if event_id in service.sent and event_id not in predictions:
                    predictions[event_id] = value
                    sent = service.sent[event_id]
                    written = record.timestamp_ms if record.timestamp_ms is not None else value["timings"]["emit_time"]
                    processed[service.config.service].append(written - sent)
                    visible[service.config.service].append(time.time_ns() / 1e6 - sent)
                    progress.advance(task)
            elif value["event_id"] in service.sent or value["value"] in service.bad_bytes:
                source = (value["topic"], value["partition"], value["offset"])
                if source not in dead_sources:  # a record replayed after a restart is dead-lettered again
                    dead_sources.add(source)
                    dead_letters.append(value)
                    progress.advance(task)
    consumer.close()
    return predictions, dead_letters, processed, visible


@dataclass
class Rollout:
    """The rollout act of one run: which service, from which version to which (see the module docstring)."""

    service: str = ""
    before: str = ""
    after: str = ""
    seconds: float = 0.0


def _rollout_act(console: Console, settings: StackSettings, act: Rollout) -> Callable[[Service], None]:
    """The ``midway`` step of :func:`_produce`: for a service that follows its registry's stage, register a new
    version, move the stage and wait until the service's model server has switched to it."""
    from vatic.cli.commands.promote import wait_for
    from vatic.connectors.registry import LocalFolderRegistry
    from vatic.examples.prepare import stamp_profile
    from vatic.serving.core.versions import FOLLOW_S

    def midway(service: Service) -> None:
        spec = service.config.registry
        root = registry_root_for(spec, settings=settings)
        if act.service or not spec.follows or not spec.stages or root is None:
            return
        registry = LocalFolderRegistry(root)
        name, stage, who = spec.model or service.config.model.name, spec.stages[0], service.config.service
        current = registry.stages(name).get(stage)
        if current is None:
            return
        numbered = [int(v) for v in registry.versions(name) if v.isdigit()]
        new = str(max(numbered, default=0) + 1)
        shutil.copytree(registry.root / name / current, registry.root / name / new)
        stamp_profile(registry.root / name / new, new)  # the copy's reference profile names its own version
        console.print(f"  rollout {who}: registered {name} v{new} (a copy of v{current}'s artifact)")
        registry.set_stage(name, stage, new)
        console.print(f"  rollout {who}: stage {stage} moved from v{current} to v{new} while the stream runs")
        started = time.monotonic()
        wait_for(service.model_url, service.config, new, timeout_s=120)
        act.service, act.before, act.after, act.seconds = who, current, new, time.monotonic() - started
        console.print(
            f"  rollout {who}: the model server loaded, checked and switched to v{new} in {act.seconds:.1f} s"
        )
        time.sleep(FOLLOW_S + 0.2)  # the job and the gateway read the pointer at least this often

    return midway


#: the drift act: the share of the fraud events (the last ones) whose amount is multiplied by SHIFT
SHIFTED_SHARE = 0.4
SHIFT = 4.0


@dataclass
class Drift:
    """The drift act of one run (module docstring): the monitor's window, and the fraud events with their labels."""

    window_s: float
    first_ms: int = 0  # event time of the run's first fraud event
    start_ms: int = 0  # event time of the first shifted one
    events: list[dict[str, Any]] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)


def _drift_act(
    console: Console, services: list[Service], act: Drift, registry: str | None, workdir: Path, rate: float
) -> None:
    """Monitor the fraud predictions of this run (a bounded monitor job, short windows), show its windows, then
    retrain on the data up to now (these events' labels included), gate, and promote what passes."""
    from vatic.cli.commands.monitor import describe, read_drift
    from vatic.cli.commands.promote import promote
    from vatic.examples.prepare import PrepareError
    from vatic.examples.retrain import record_labels, retrain

    fraud = next((s for s in services if s.config.streaming and s.config.streaming.input_schema == "transaction"), None)
    if fraud is None or not act.start_ms:
        return
    name = fraud.config.service
    min_count = max(20, int(rate * act.window_s / 3))
    console.print(
        f"  drift {name}: amount x{SHIFT:g} for the last {SHIFTED_SHARE:.0%} of the events; the monitor judges "
        f"{act.window_s:g} s windows of at least {min_count} predictions"
    )
    log = workdir / "monitor.log"
    argv = [str(Path(sys.executable).parent / "vatic"), "monitor", "run", str(fraud.folder), "--bounded",
            "--no-resume", "--checkpoint-dir", str(workdir / "monitor"), "--metrics-port", "0",
            "--window-s", f"{act.window_s:g}", "--lateness-s", "1", "--min-count", str(min_count)]  # fmt: skip
    if registry:
        argv += ["--schema-registry-url", registry]
    started = time.monotonic()
    with log.open("wb") as err:
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=err, timeout=600, check=False)
    if done.returncode != 0:
        raise ConfigError(f"the drift monitor failed ({done.returncode}); its log: {log}")
    windows = [r for r in read_drift(fraud.config, act.first_ms, registry) if r["window_end"] > act.first_ms]
    console.print(f"  drift {name}: the monitor read the predictions and wrote {len(windows)} window(s) in "
                  f"{time.monotonic() - started:.1f} s")  # fmt: skip
    for record in windows:
        console.print(f"    {describe(record)}")
    before = [r for r in windows if r["judged"] and r["window_end"] <= act.start_ms]
    after = [r for r in windows if r["judged"] and r["window_start"] >= act.start_ms]
    flagged = [r for r in after if "amount" in r["drifted_columns"]]
    if after and not flagged:
        raise ConfigError(f"the drift monitor flagged none of the {len(after)} shifted window(s): see {log}")
    if flagged:
        psi = next(c["psi"] for c in flagged[0]["columns"] if c["name"] == "amount")
        early = sum("amount" in r["drifted_columns"] for r in before)
        console.print(
            f"  drift {name}: amount flagged in {len(flagged)} of {len(after)} window(s) after the shift (the first "
            f"with PSI {psi:.2f}, v{flagged[0]['model_version']}), in {early} of {len(before)} before it; windows "
            f"before it flagged for any column: {sum(r['drifted'] for r in before)}"
        )
    held = record_labels("fraud_detection", act.events, act.labels)
    console.print(f"  retrain {name}: {len(act.events)} labelled events of this run recorded ({held} in all)")
    try:
        report = retrain("fraud_detection", log=lambda line: None)
    except PrepareError as exc:
        raise ConfigError(str(exc)) from None
    console.print(
        f"  retrain {name}: registered {report.model} v{report.version} from {report.rows:,} point-in-time rows "
        f"({report.recent_rows:,} recent) in {report.seconds:.1f} s"
    )
    console.print(f"  retrain {name}: {report.gate.line()}")
    if report.gate.passed:
        promote(fraud.folder, report.version, model_url=fraud.model_url, canary=True, canary_s=2.0)
    else:
        console.print(f"  retrain {name}: v{report.version} stays registered, unserved")


def _rollout_summary(console: Console, act: Rollout, predictions: dict[str, dict[str, Any]]) -> None:
    if not act.service:
        return
    answered = Counter(p["model_version"] for p in predictions.values() if p["service"] == act.service)
    counts = ", ".join(f"{n} by v{version}" for version, n in sorted(answered.items()))
    console.print(f"  rollout {act.service}: predictions {counts}, one job throughout (no restart)")


def _rest_calls(console: Console, services: list[Service], stack: StackSettings) -> None:
    url = f"http://{stack.host}:{stack.gateway_port}"
    samples = {
        "transaction": [e for e, _ in transactions(make_world(), 2)],
        "product_created": [e for e, _ in products(2)],
    }
    for service in services:
        schema = service.config.streaming.input_schema if service.config.streaming else ""
        for event in samples.get(schema, []):
            body = {k: v for k, v in event.items() if k not in ("event_id", "event_time")}
            started = time.perf_counter()
            response = httpx.post(f"{url}/v1/services/{service.config.service}/predict", json=body, timeout=10)
            took = (time.perf_counter() - started) * 1000
            answer = response.json()
            outputs = answer.get("outputs", answer)
            shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in outputs.items() if k != "scores"}
            console.print(f"  REST {service.config.service}: {response.status_code} in {took:.1f} ms -> {shown}")


def _dead_letter_table(console: Console, dead: list[dict[str, Any]]) -> None:
    table = Table(title="dead-lettered records", show_lines=False)
    for column in ("service", "stage", "error", "message", "source"):
        table.add_column(column)
    for record in dead[:12]:
        table.add_row(
            record["service"],
            record["stage"],
            record["error_class"],
            record["error_message"][:70],
            f"{record['topic']}/{record['partition']}/{record['offset']}",
        )
    console.print(table)


def demo(
    events: Annotated[int, typer.Option(help="events per use case", min=1)] = 1000,
    rate: Annotated[float, typer.Option(help="events per second per use case", min=1)] = 50.0,
    timeout_s: Annotated[float, typer.Option(help="give up waiting for outputs after this long")] = 300.0,
    drift: Annotated[
        bool, typer.Option(help="the drift act: shift the fraud amounts, monitor, retrain, gate, promote")
    ] = True,
    drift_window_s: Annotated[float, typer.Option(min=1, help="the drift act's monitor window")] = 5.0,
) -> None:
    """Both use cases end to end: stream (Kafka -> Flink -> Kafka) and REST, on the running local stack."""
    console = Console(soft_wrap=True)
    settings = StackSettings()
    stack = Stack(settings)
    services = _services(stack)
    kafka = settings.kafka()
    for service in services:
        ensure_topics(service.topics, partitions=2, settings=kafka)
    # one source of schema ids for the producers, the job and the readers: the stack's registry when it runs
    url = registry_url(None)
    store = schema_source(url, settings.home / "schemas")
    workdir = Path(tempfile.mkdtemp(prefix="vatic-demo-", dir=settings.home))
    log = workdir / "job.log"
    # librdkafka's own lines (a broker not up yet, a coordinator loading) go to a file, not into the demo's output
    LIBRDKAFKA_LOG.addHandler(logging.FileHandler(workdir / "kafka-clients.log", encoding="utf-8"))
    LIBRDKAFKA_LOG.propagate = False
    console.print(f"[bold]vatic demo[/]: {', '.join(s.config.service for s in services)}; job log {log}")
    console.print(f"  schemas: {f'schema registry {url}' if url else 'embedded schema store'}")
    consumer = _output_consumer(services, kafka)
    job = _start_job(services, log, url)
    try:
        _warm_up(console, services, store, consumer, kafka, job, log)
        total = (events + BAD_PER_SERVICE) * len(services)
        # produce and read at once: the latencies printed are the job's, not the time the demo took to produce
        with _progress(console) as progress, ThreadPoolExecutor(1, thread_name_prefix="demo-produce") as pool:
            act = Rollout()
            midway = _rollout_act(console, settings, act)
            shift = Drift(drift_window_s) if drift else None
            producing = pool.submit(_produce, progress, services, store, events, kafka, rate, midway, shift)
            predictions, dead, processed, visible = _collect(
                progress, services, store, consumer, total, timeout_s, job, log, producing
            )
            produced = producing.result()
        if produced != total:
            raise ConfigError(f"the demo produced {produced} records, expected {total}")
        console.print(f"  {len(predictions)} predictions")
        for name, times in processed.items():
            seen = visible[name]
            console.print(
                f"  {name}: {len(times)} predictions at {rate:g} events/s: processed p50 {_percentile(times, 0.5):.0f} "
                f"ms, p99 {_percentile(times, 0.99):.0f} ms; visible (read_committed) p50 {_percentile(seen, 0.5):.0f} "
                f"ms, p99 {_percentile(seen, 0.99):.0f} ms"
            )
        _rollout_summary(console, act, predictions)
        _rest_calls(console, services, settings)
        _dead_letter_table(console, dead)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGTERM)
            try:
                job.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(job.pid, signal.SIGKILL)
                job.wait()
    if shift is not None:
        _drift_act(console, services, shift, url, workdir, rate)
    lost = total - len(predictions) - len(dead)
    typer.echo(f"demo: {total} events in, {len(predictions)} predictions, {len(dead)} dead-lettered, {lost} lost")
    if lost:
        raise typer.Exit(1)
