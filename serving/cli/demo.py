"""``vatic demo``: Avro events of both use cases round-tripped through the real local Kafka broker.

What it shows: events are produced in the Confluent wire format (schemas registered in the local schema store),
consumed back with read_committed, decoded and counted by event id; a few deliberately malformed records are
caught as typed decode errors carrying their raw bytes (what the streaming job dead-letters). The last line is
``demo: <in> events in, <out> round-tripped, <dlq> dead-lettered, <lost> lost``.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from vatic.connectors.errors import DecodeError
from vatic.connectors.kafka import AvroSerde, Consumer, KafkaSettings, Producer, check_topics, ensure_topics
from vatic.connectors.local.settings import StackSettings
from vatic.schemas import AvroCodec, LocalSchemaStore, load_schema, topic_subject
from vatic.serving.usecases.fraud_detection.events import make_world, transactions
from vatic.serving.usecases.product_categorization.events import products

TOPICS = {"transaction": "vatic-demo.transactions", "product_created": "vatic-demo.products"}


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def demo(
    events: Annotated[int, typer.Option(help="events per use case", min=1)] = 2000,
    bad: Annotated[int, typer.Option(help="malformed records to inject", min=0)] = 3,
) -> None:
    """Round-trip sample Avro events of both use cases through the local Kafka broker."""
    console = Console(soft_wrap=True)
    settings = KafkaSettings(bootstrap_servers=StackSettings().kafka_bootstrap)
    ensure_topics(TOPICS.values(), partitions=2, settings=settings)
    check_topics(TOPICS.values(), settings=settings)
    store = LocalSchemaStore(StackSettings().home / "schemas")
    serdes = {
        name: AvroSerde(AvroCodec(store, topic_subject(topic), load_schema(name))) for name, topic in TOPICS.items()
    }
    run = uuid.uuid4().hex[:8]
    console.print(f"[bold]vatic demo[/] run {run}: {events} transactions + {events} products -> Kafka -> back")
    sent, produced_s = _produce(console, settings, serdes, run, events, bad)
    total_in = len(sent) + bad
    received, dead = _consume(console, settings, serdes, run, total_in)

    intact = sum(1 for event_id, event in received.items() if sent.get(event_id) == event)
    for error in dead:
        console.print(f"  dead-letter: stage={error.stage} {error.error_class}: {error.message} raw={error.raw[:40]!r}")
    console.print(
        f"  produced {len(sent)} events in {produced_s:.2f}s ({len(sent) / produced_s:,.0f}/s); "
        f"{intact}/{len(received)} decoded records equal what was sent"
    )
    lost = total_in - len(received) - len(dead)
    typer.echo(f"demo: {total_in} events in, {len(received)} round-tripped, {len(dead)} dead-lettered, {lost} lost")
    if lost or intact != len(received):
        raise typer.Exit(1)


def _produce(
    console: Console, settings: KafkaSettings, serdes: dict[str, AvroSerde], run: str, events: int, bad: int
) -> tuple[dict[str, dict[str, Any]], float]:
    """Produce ``events`` of each use case plus ``bad`` malformed records; return the events by id."""
    sources: dict[str, Any] = {
        "transaction": (e for e, _ in transactions(make_world(), events)),
        "product_created": (e for e, _ in products(events, seed=len(run))),
    }
    sent: dict[str, dict[str, Any]] = {}
    producer = Producer(settings)
    started = time.perf_counter()
    with _progress(console) as progress:
        for name, generator in sources.items():
            task = progress.add_task(f"produce {TOPICS[name]}", total=events)
            for event in generator:
                event["event_id"] = f"{run}-{event['event_id'][9:]}"
                sent[event["event_id"]] = event
                key = str(event.get("customer_id") or event.get("product_id")).encode()
                producer.produce(TOPICS[name], serdes[name].serialize(event), key)
                progress.advance(task)
        for i in range(bad):
            producer.produce(TOPICS["transaction"], f"{run} malformed #{i}: not Avro".encode(), b"bad")
        producer.flush()
    return sent, time.perf_counter() - started


def _consume(
    console: Console, settings: KafkaSettings, serdes: dict[str, AvroSerde], run: str, total_in: int
) -> tuple[dict[str, dict[str, Any]], list[DecodeError]]:
    """Read this run's records back (a new group reads from the start; other runs' records are skipped)."""
    received: dict[str, dict[str, Any]] = {}
    dead: list[DecodeError] = []
    consumer = Consumer(list(TOPICS.values()), f"vatic-demo-{run}", settings)
    names = {topic: name for name, topic in TOPICS.items()}
    deadline = time.monotonic() + 60
    with _progress(console) as progress:
        task = progress.add_task("consume + decode", total=total_in)
        while len(received) + len(dead) < total_in and time.monotonic() < deadline:
            records = consumer.poll_batch(1000, timeout=0.5)
            for record in records:
                try:
                    event = serdes[names[record.topic]].deserialize(record.value)
                except DecodeError as exc:
                    if record.value and record.value.startswith(run.encode()):
                        dead.append(exc)
                        progress.advance(task)
                    continue
                if str(event["event_id"]).startswith(run):
                    received[str(event["event_id"])] = event
                    progress.advance(task)
            consumer.confirm(records)
    consumer.close()
    return received, dead
