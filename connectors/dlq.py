"""A service's dead letters: select them by what failed, when and where, and replay their original records into
the service's input topic, each at most once.

Replay contract (what a consumer of the input topic, the job and an operator can rely on):

* A replayed record is the dead letter's original key, value and headers, byte for byte, plus two headers:
  :data:`REPLAY_OF` (the dead letter's own position, ``<topic>/<partition>/<offset>``) and :data:`REPLAYS` (how
  many times this input has now been replayed, ``1`` the first time). The job keeps an input's headers in its dead
  letter, so an input that fails again carries its count into its new dead letter.
* Once per dead letter: a replayed record and the ledger entry naming its dead letter are written in one Kafka
  transaction, to the input topic and to the ledger :func:`ledger_topic` (compacted, keyed by the dead letter's
  position). A replayer first takes the transactional id of its dead-letter topic (:func:`transactional_id`),
  which fences an earlier replayer still running and aborts its open transaction, and only then reads the ledger:
  what an earlier replay committed is skipped, what it left uncommitted was never visible.
* Never in a loop: a dead letter whose input has been replayed ``max_replays`` times already is exhausted and not
  replayed again.
* Never a guess: a dead letter whose value the job truncated, or that has no value, is not replayed.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from vatic.connectors.kafka import Headers, KafkaSettings, Producer, Record, ensure_topics, scan
from vatic.schemas.errors import ConfigError, TopicNotFound

#: header of a replayed record: the position of the dead letter it was replayed from
REPLAY_OF = "vatic-replay-of"
#: header of a replayed record: how many times its input has been replayed, this time included (ASCII integer)
REPLAYS = "vatic-replays"
#: how many times one input is replayed at most, by default
MAX_REPLAYS = 3
#: the prefix the job writes before the message of a dead letter whose value it truncated
_TRUNCATED = "[original value of "


class Decoder(Protocol):
    def decode(self, data: bytes) -> dict[str, Any]: ...


def ledger_topic(dead_letter_topic: str) -> str:
    """The compacted topic that names every dead letter of ``dead_letter_topic`` replayed so far."""
    return f"{dead_letter_topic}.replayed"


def transactional_id(dead_letter_topic: str) -> str:
    """The transactional id of every replayer of ``dead_letter_topic``: one at a time, the last one wins."""
    return f"vatic-dlq-replay-{dead_letter_topic}"


@dataclass(frozen=True)
class DeadLetter:
    """One dead-letter record: where it sits and its decoded ``DeadLetter`` value."""

    topic: str
    partition: int
    offset: int
    value: dict[str, Any]

    @property
    def position(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def stage(self) -> str:
        return str(self.value["stage"])

    @property
    def error_class(self) -> str:
        return str(self.value["error_class"])

    @property
    def failure_ms(self) -> int:
        return _epoch_ms(self.value["failure_time"])

    @property
    def replays(self) -> int:
        """How many times its input had been replayed when it failed (0: the input as first produced)."""
        for header in reversed(self.value.get("headers") or []):
            if header["key"] == REPLAYS and header["value"] is not None:
                try:
                    return int(bytes(header["value"]).decode("ascii"))
                except (UnicodeDecodeError, ValueError):
                    return 0
        return 0

    @property
    def truncated(self) -> bool:
        return str(self.value.get("error_message", "")).startswith(_TRUNCATED)

    @property
    def complete(self) -> bool:
        """Whether it holds its input's whole value (not a tombstone, not truncated by the job)."""
        return self.value.get("value") is not None and not self.truncated

    def replay_record(self) -> tuple[bytes | None, bytes, Headers]:
        """Key, value and headers of its replay: the original ones plus :data:`REPLAY_OF` and :data:`REPLAYS`
        (an earlier replay's two headers replaced)."""
        if not self.complete:
            raise ConfigError(f"dead letter {self.position} has no complete original value to replay")
        headers: Headers = [
            (h["key"], h["value"]) for h in self.value.get("headers") or [] if h["key"] not in (REPLAY_OF, REPLAYS)
        ]
        headers += [(REPLAY_OF, self.position.encode()), (REPLAYS, str(self.replays + 1).encode())]
        key = self.value.get("key")
        return (bytes(key) if key is not None else None), bytes(self.value["value"]), headers


@dataclass(frozen=True)
class Selection:
    """Which dead letters to list or replay: every given criterion must hold (an empty one holds for all).

    ``since_ms`` / ``until_ms`` bound the failure time (inclusive), ``from_offset`` / ``to_offset`` the dead
    letter's offset in its partition (inclusive)."""

    stages: frozenset[str] = frozenset()
    error_classes: frozenset[str] = frozenset()
    since_ms: int | None = None
    until_ms: int | None = None
    partitions: frozenset[int] = frozenset()
    from_offset: int | None = None
    to_offset: int | None = None

    def __post_init__(self) -> None:
        if self.since_ms is not None and self.until_ms is not None and self.since_ms > self.until_ms:
            raise ConfigError("the selection's start time is after its end time")
        if self.from_offset is not None and self.to_offset is not None and self.from_offset > self.to_offset:
            raise ConfigError(f"--from-offset {self.from_offset} is after --to-offset {self.to_offset}")

    def matches(self, letter: DeadLetter) -> bool:
        return (
            (not self.stages or letter.stage in self.stages)
            and (not self.error_classes or letter.error_class in self.error_classes)
            and (self.since_ms is None or letter.failure_ms >= self.since_ms)
            and (self.until_ms is None or letter.failure_ms <= self.until_ms)
            and (not self.partitions or letter.partition in self.partitions)
            and (self.from_offset is None or letter.offset >= self.from_offset)
            and (self.to_offset is None or letter.offset <= self.to_offset)
        )


def read(
    topic: str, codec: Decoder, settings: KafkaSettings, selection: Selection | None = None
) -> Iterator[DeadLetter]:
    """The dead letters of ``topic`` up to its end when the read began, those the selection matches."""
    selection = selection or Selection()
    for record in scan(topic, settings, start=selection.from_offset, partitions=selection.partitions or None):
        if selection.to_offset is not None and record.offset > selection.to_offset:
            continue
        letter = _decode(record, codec)
        if selection.matches(letter):
            yield letter


def _decode(record: Record, codec: Decoder) -> DeadLetter:
    if record.value is None:
        raise ConfigError(f"{record.topic}/{record.partition}/{record.offset} is a tombstone, not a dead letter")
    return DeadLetter(record.topic, record.partition, record.offset, codec.decode(record.value))


def replayed(dead_letter_topic: str, settings: KafkaSettings) -> set[str]:
    """Positions of the dead letters of ``dead_letter_topic`` whose replay was committed (none without a ledger)."""
    try:
        return {bytes(r.key).decode() for r in scan(ledger_topic(dead_letter_topic), settings) if r.key is not None}
    except TopicNotFound:
        return set()


@dataclass
class Plan:
    """What a replay of the selected dead letters does, counted before anything is written."""

    selected: int = 0
    replay: list[DeadLetter] = field(default_factory=list)
    already_replayed: int = 0  # named in the ledger: a replay of them was committed before
    exhausted: int = 0  # their input was replayed ``max_replays`` times already
    not_replayable: int = 0  # no value, or a value the job truncated
    by_error: Counter[tuple[str, str]] = field(default_factory=Counter)

    def lines(self) -> list[str]:
        out = [f"{self.selected} dead letter(s) selected"]
        for (stage, error_class), count in sorted(self.by_error.items()):
            out.append(f"  {stage:<8} {error_class:<28} {count:>8}")
        out.append(
            f"to replay: {len(self.replay)}; skipped: {self.already_replayed} replayed before, "
            f"{self.exhausted} exhausted, {self.not_replayable} without a complete value"
        )
        return out


def plan(letters: Iterable[DeadLetter], done: set[str], max_replays: int = MAX_REPLAYS) -> Plan:
    """Sort the selected dead letters into replay and skip, by the ledger's ``done`` positions."""
    if max_replays < 1:
        raise ConfigError(f"max replays must be at least 1, not {max_replays}")
    result = Plan()
    for letter in letters:
        result.selected += 1
        result.by_error[(letter.stage, letter.error_class)] += 1
        if letter.position in done:
            result.already_replayed += 1
        elif not letter.complete:
            result.not_replayable += 1
        elif letter.replays >= max_replays:
            result.exhausted += 1
        else:
            result.replay.append(letter)
    return result


@dataclass(frozen=True)
class Replayer:
    """Replays one service's dead letters into its input topic (the module's contract)."""

    dead_letter_topic: str
    input_topic: str
    codec: Decoder
    settings: KafkaSettings
    #: dead letters per transaction: a crash loses at most one uncommitted chunk, which the next replay redoes
    chunk: int = 500

    def plan(self, selection: Selection | None = None, max_replays: int = MAX_REPLAYS) -> Plan:
        """The dry run: what :meth:`replay` would do now (reads only)."""
        letters = read(self.dead_letter_topic, self.codec, self.settings, selection)
        return plan(letters, replayed(self.dead_letter_topic, self.settings), max_replays)

    def replay(
        self,
        selection: Selection | None = None,
        max_replays: int = MAX_REPLAYS,
        *,
        on_plan: Callable[[Plan], None] | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> Plan:
        """Replay the selection: fence earlier replayers, read the ledger, then write each chunk of replays and
        its ledger entries in one transaction. Returns the plan it carried out (``on_plan`` sees it first,
        ``on_progress`` the number replayed after each committed chunk)."""
        ledger = ledger_topic(self.dead_letter_topic)
        producer = Producer(self.settings, transactional_id=transactional_id(self.dead_letter_topic))
        ensure_topics([ledger], config={"cleanup.policy": "compact"}, settings=self.settings)
        done_plan = self.plan(selection, max_replays)  # after the fence: the ledger holds every committed replay
        if on_plan is not None:
            on_plan(done_plan)
        for begin in range(0, len(done_plan.replay), self.chunk):
            letters = done_plan.replay[begin : begin + self.chunk]
            producer.begin()
            try:
                for letter in letters:
                    key, value, headers = letter.replay_record()
                    producer.produce(self.input_topic, value, key, headers)
                    entry = {"replayed_to": self.input_topic, "replays": letter.replays + 1,
                             "time": time.time_ns() // 1_000_000}  # fmt: skip
                    producer.produce(ledger, json.dumps(entry).encode(), letter.position.encode())
                producer.commit()
            except BaseException:
                producer.abort()
                raise
            if on_progress is not None:
                on_progress(begin + len(letters))
        return done_plan


def _epoch_ms(value: Any) -> int:
    """A ``timestamp-millis`` field as fastavro decodes it (an aware ``datetime``) or as written (an int)."""
    if isinstance(value, int):
        return value
    return int(value.timestamp() * 1000)
