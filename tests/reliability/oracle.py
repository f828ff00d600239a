"""The oracle: compare what went in with what came out (read_committed), record by record.

Accounting key: a dead letter names its source record (topic/partition/offset); a prediction names its event
id. Each input record must be answered exactly once: by a dead letter at its own position, or by one of the
predictions of its event id (an id sent twice - an upstream duplicate - must get two answers).

Checks (each failure is one line in :attr:`Verdict.problems`):

* lost: an input record with no answer; duplicates: answers beyond one per record (a second prediction of an
  id, a second dead letter of a position, a prediction of an id never sent);
* dead letters hold exactly the expected bad records: a good record dead-lettered, or a bad one predicted,
  is ``misrouted``; each dead letter carries the original bytes (an oversized input: a prefix of them, marked
  "truncated" in the message), the source topic/partition/offset, the expected stage and an error class the
  kind allows;
* offsets: a committed group offset never covers a record whose answer was not yet visible (see
  :func:`offset_violations`);
* keys and attempts (when the reader recorded them: :data:`KAFKA_KEY` and :data:`ATTEMPT` in an answer): a
  prediction is keyed by its event id under at-least-once and by its input record's key under exactly-once, a
  dead letter by its input record's key; every answer carries an integer ``vatic-attempt``, and one attempt (one
  worker incarnation) never answers a record twice: a second answer must come from a later incarnation (a
  replay), and an event id sent k times is answered at most k times per attempt.

The delivery guarantee changes one rule. Under ``exactly_once`` a duplicate is a failure. Under
``at_least_once`` duplicates are a reported figure (:attr:`Verdict.notes`) after a fault (a restart replays
what was read since the last checkpoint), a failure in a run without one (nothing replays then); lost and
misrouted records fail in both.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from tests.reliability.events import EXPECTED, InputRecord

#: keys an answer's dict may carry besides its decoded fields: the Kafka record key and its ``vatic-attempt``
KAFKA_KEY = "__kafka_key"
ATTEMPT = "__attempt"
GUARANTEES = ("exactly_once", "at_least_once")


@dataclass
class Verdict:
    events_in: int = 0
    predictions: int = 0
    dead_lettered: int = 0
    lost: int = 0
    duplicates: int = 0
    misrouted: int = 0
    offset_violations: int = 0
    key_problems: int = 0
    attempt_problems: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # reported figures that do not fail the run

    @property
    def held(self) -> bool:
        return not self.problems


def check(
    records: list[InputRecord], input_topic: str, predictions: list[dict[str, Any]], dead: list[dict[str, Any]],
    *, guarantee: str = "exactly_once", faulted: bool = True,
) -> Verdict:  # fmt: skip
    """The verdict for one run; see the module docstring. ``faulted``: whether the run had a fault (under
    at-least-once, duplicates are allowed only then)."""
    if guarantee not in GUARANTEES:
        raise ValueError(f"unknown guarantee {guarantee!r}: one of {GUARANTEES}")
    verdict = Verdict(events_in=len(records), predictions=len(predictions), dead_lettered=len(dead))
    by_position = {(r.partition, r.offset): r for r in records}
    unplaced = [r for r in records if r.partition < 0]
    if unplaced:
        verdict.problems.append(f"{len(unplaced)} input records were never confirmed by the broker")
    dead_at: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    foreign_dead = 0
    for d in dead:
        position = (int(d["partition"]), int(d["offset"]))
        if d["topic"] != input_topic or position not in by_position:
            foreign_dead += 1
            continue
        dead_at[position].append(d)
    predicted = Counter(str(p["event_id"]) for p in predictions)
    sent_ids = {r.event_id for r in records if r.event_id is not None}
    lost: list[InputRecord] = []
    wrong_dead: list[str] = []
    misrouted_examples: list[str] = []
    for r in records:
        answers = dead_at.get((r.partition, r.offset), [])
        if answers:
            verdict.duplicates += len(answers) - 1
            d = answers[0]
            if r.route != "D":
                verdict.misrouted += 1
                misrouted_examples.append(f"{r.kind} dead-lettered ({d['stage']} {d['error_class']})")
            else:
                wrong_dead.extend(_dead_letter_problems(r, d))
            continue
        if r.event_id is not None and predicted[r.event_id] > 0:
            predicted[r.event_id] -= 1
            if r.route != "P":
                verdict.misrouted += 1
                misrouted_examples.append(f"{r.kind} predicted (expected a dead letter at {r.stage})")
            continue
        lost.append(r)
    leftover = sum(predicted.values())
    unknown = sum(c for i, c in predicted.items() if i not in sent_ids)
    verdict.duplicates += leftover + foreign_dead
    verdict.lost = len(lost)
    if lost:
        kinds = Counter(r.kind for r in lost)
        verdict.problems.append(f"{len(lost)} records lost ({dict(kinds)}), e.g. {_where(lost[0])}")
    if verdict.duplicates:
        line = (
            f"{verdict.duplicates} duplicate answers ({leftover} extra predictions, {unknown} of ids never sent; "
            f"{foreign_dead} dead letters of unknown positions)"
        )
        if guarantee == "at_least_once" and faulted and not unknown and not foreign_dead:
            verdict.notes.append(f"at-least-once: {line}, replayed after the fault")
        elif guarantee == "at_least_once" and not faulted:
            verdict.problems.append(f"{line} in a run without a fault (at-least-once replays only after one)")
        else:
            verdict.problems.append(line)
    elif guarantee == "at_least_once":
        verdict.notes.append(f"at-least-once: no duplicates{' after the fault' if faulted else ''}")
    _check_keys_and_attempts(verdict, records, input_topic, predictions, dead, guarantee)
    if verdict.misrouted:
        examples = Counter(misrouted_examples).most_common(3)
        verdict.problems.append(f"{verdict.misrouted} records misrouted: {examples}")
    if wrong_dead:
        verdict.problems.append(f"{len(wrong_dead)} dead-letter content problems, e.g. {wrong_dead[:3]}")
    return verdict


def _check_keys_and_attempts(
    verdict: Verdict, records: list[InputRecord], input_topic: str, predictions: list[dict[str, Any]],
    dead: list[dict[str, Any]], guarantee: str,
) -> None:  # fmt: skip
    """Keys and ``vatic-attempt`` headers of the answers that carry them (see the module docstring)."""
    keys_of_id: dict[str, set[bytes]] = defaultdict(set)
    sent = Counter(r.event_id for r in records if r.event_id is not None)
    for r in records:
        if r.event_id is not None:
            keys_of_id[r.event_id].add(r.key)
    key_at = {(r.partition, r.offset): r.key for r in records}
    wrong_keys: list[str] = []
    per_attempt: Counter[tuple[str, Any, int]] = Counter()
    no_attempt = 0
    for p in predictions:
        event_id = str(p["event_id"])
        if KAFKA_KEY in p:
            key = p[KAFKA_KEY]
            if guarantee == "at_least_once" and key != event_id.encode():
                wrong_keys.append(f"prediction of {event_id} keyed {key!r} (expected its event id)")
            elif guarantee == "exactly_once" and event_id in keys_of_id and key not in keys_of_id[event_id]:
                wrong_keys.append(f"prediction of {event_id} keyed {key!r} (expected its input key)")
        if ATTEMPT in p:
            if p[ATTEMPT] is None:
                no_attempt += 1
            else:
                per_attempt[("P", event_id, p[ATTEMPT])] += 1
    for d in dead:
        position = (int(d["partition"]), int(d["offset"]))
        if KAFKA_KEY in d and d["topic"] == input_topic and position in key_at and d[KAFKA_KEY] != key_at[position]:
            wrong_keys.append(f"dead letter of {position} keyed {d[KAFKA_KEY]!r} (expected its input key)")
        if ATTEMPT in d:
            if d[ATTEMPT] is None:
                no_attempt += 1
            else:
                per_attempt[("D", position, d[ATTEMPT])] += 1
    twice = [
        (kind, what, attempt)
        for (kind, what, attempt), n in per_attempt.items()
        if n > (max(1, sent.get(what, 0)) if kind == "P" else 1)  # an id never sent: already a duplicate
    ]
    verdict.key_problems = len(wrong_keys)
    verdict.attempt_problems = no_attempt + len(twice)
    if wrong_keys:
        verdict.problems.append(f"{len(wrong_keys)} answers with a wrong Kafka key, e.g. {wrong_keys[:3]}")
    if no_attempt:
        verdict.problems.append(f"{no_attempt} answers without an integer vatic-attempt header")
    if twice:
        verdict.problems.append(
            f"{len(twice)} records answered twice by one worker incarnation (a duplicate that is no replay), "
            f"e.g. {twice[:3]}"
        )


def _where(r: InputRecord) -> str:
    return f"{r.kind} #{r.index} at {r.partition}/{r.offset} id {r.event_id}"


def _dead_letter_problems(r: InputRecord, d: dict[str, Any]) -> list[str]:
    out = []
    _, stage, classes = EXPECTED[r.kind]
    value = d["value"] or b""
    if r.kind == "oversized_input":
        # an oversized original is kept as a prefix, the message says so (the dead letter must stay deliverable)
        if not (0 < len(value) < len(r.value) and r.value.startswith(value) and "truncated" in d["error_message"]):
            out.append(f"{_where(r)}: value is not a marked prefix of the original ({len(value)} bytes)")
    elif value != r.value:
        out.append(f"{_where(r)}: value is not the original bytes ({len(d['value'] or b'')} vs {len(r.value)})")
    if d["stage"] != stage:
        out.append(f"{_where(r)}: stage {d['stage']} (expected {stage})")
    if classes and d["error_class"] not in classes:
        out.append(f"{_where(r)}: error class {d['error_class']} (expected one of {sorted(classes)})")
    if not d["error_message"]:
        out.append(f"{_where(r)}: empty error message")
    if r.event_id is not None and d["event_id"] not in (None, r.event_id):
        out.append(f"{_where(r)}: event_id {d['event_id']}")
    return out


def offset_violations(
    records: list[InputRecord],
    samples: list[tuple[float, dict[int, int]]],
    first_seen: dict[tuple[int, int], float],
    grace_s: float,
) -> tuple[int, str]:
    """How many (sample, record) pairs show a committed group offset covering a record whose answer was not
    visible (read_committed) within ``grace_s`` of the sample (the sink's transaction and the source's offset
    commit both happen when a checkpoint completes, in no fixed order; the tail consumer lags a little).

    ``samples``: (time, {partition: committed offset}) of the job's consumer group; ``first_seen``: for each
    input position, when its answer was first read by the tail consumer.
    """
    by_partition: dict[int, list[InputRecord]] = defaultdict(list)
    for r in records:
        by_partition[r.partition].append(r)
    for rs in by_partition.values():
        rs.sort(key=lambda r: r.offset)
    bad: set[tuple[int, int]] = set()
    example = ""
    for when, committed in samples:
        for partition, offset in committed.items():
            for r in by_partition.get(partition, []):
                if r.offset >= offset:
                    break
                seen = first_seen.get((r.partition, r.offset))
                if seen is None or seen > when + grace_s:
                    if (r.partition, r.offset) not in bad and not example:
                        late = "never" if seen is None else f"{seen - when:.1f}s later"
                        example = f"offset {offset} committed on partition {partition} but {_where(r)} answered {late}"
                    bad.add((r.partition, r.offset))
    return len(bad), example
