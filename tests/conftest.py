"""Session fixtures: the real local stack.

A fixture starts a component only if it is not already running (``vatic stack up`` before pytest is fine) and
stops at the end of the session only what it started itself. Tests never mock Kafka, Redis or the registry.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from vatic.cli.stack.settings import StackSettings, export_home
from vatic.cli.stack.stack import Stack

export_home()  # as the `vatic` command does


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """The local stack; components are started on demand by the fixtures below."""
    the_stack = Stack(StackSettings())
    started: list[str] = []
    the_stack._started_by_tests = started  # type: ignore[attr-defined]
    yield the_stack
    the_stack.down(started)


def _ensure(stack: Stack, name: str) -> None:
    started: list[str] = stack._started_by_tests  # type: ignore[attr-defined]
    if stack.up([name]):
        started.append(name)


@pytest.fixture(scope="session")
def kafka_bootstrap(stack: Stack) -> str:
    """``host:port`` of a running real Kafka broker (KRaft)."""
    _ensure(stack, "kafka")
    return stack.settings.kafka_bootstrap


@pytest.fixture(scope="session")
def redis_url(stack: Stack) -> str:
    """URL of a running real redis-server."""
    _ensure(stack, "redis")
    return stack.settings.redis_url


@pytest.fixture(scope="session")
def registry_url(stack: Stack) -> str:
    """Base URL of a running Confluent-compatible schema registry (Apicurio, ccompat v7)."""
    _ensure(stack, "registry")
    return stack.settings.registry_url


@pytest.fixture(scope="session")
def full_stack(stack: Stack) -> Stack:
    """Every component of the local stack up, the demo services' models trained (``vatic usecases prepare`` runs
    first when they are not; it is idempotent and fast when they are)."""
    import subprocess
    import sys
    from pathlib import Path

    vatic = Path(sys.executable).parent / "vatic"
    subprocess.run([str(vatic), "usecases", "prepare"], check=True, capture_output=True, timeout=1200)
    for name in stack.components:
        _ensure(stack, name)
    states = {h.name: h.state for h in stack.status()}
    assert set(states.values()) == {"up"}, states
    return stack


@pytest.fixture
def new_topic(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """Create uniquely named topics on the real broker; they are deleted after the test."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created: list[str] = []

    def make(prefix: str = "t", partitions: int = 1, **config: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        futures = admin.create_topics([NewTopic(name, partitions, 1, config=config)], operation_timeout=10)
        futures[name].result(timeout=15)
        created.append(name)
        return name

    yield make
    if created:
        for future in admin.delete_topics(created, operation_timeout=10).values():
            future.result(timeout=15)
