"""The oracle's accounting on hand-built inputs (pure: no stack): exactly-once vs at-least-once duplicates, keys
and ``vatic-attempt`` headers."""

from __future__ import annotations

from typing import Any

import pytest

from tests.reliability.events import InputRecord
from tests.reliability.oracle import ATTEMPT, KAFKA_KEY, check

TOPIC = "t.in"
FIRST, LATER = 1_700_000_000_000, 1_700_000_005_000  # two worker incarnations (epoch ms)


def records() -> list[InputRecord]:
    """Three good events (one of them sent twice upstream) and one undecodable record, placed on partition 0."""
    out = [
        InputRecord(0, "good", b"v-a", b"c1", "id-a"),
        InputRecord(1, "good", b"v-b", b"c2", "id-b"),
        InputRecord(2, "garbage", b"not avro", b"garbage", None),
        InputRecord(3, "duplicate", b"v-a", b"c1", "id-a"),
        InputRecord(4, "good", b"v-c", b"c3", "id-c"),
    ]
    for offset, r in enumerate(out):
        r.partition, r.offset = 0, offset
    return out


def prediction(event_id: str, key: bytes, attempt: int | None = FIRST) -> dict[str, Any]:
    return {"event_id": event_id, KAFKA_KEY: key, ATTEMPT: attempt}


def dead_letter(offset: int, key: bytes = b"garbage", attempt: int | None = FIRST) -> dict[str, Any]:
    return {
        "topic": TOPIC, "partition": 0, "offset": offset, "stage": "decode", "error_class": "MalformedRecord",
        "error_message": "not Avro", "value": b"not avro", "event_id": None, KAFKA_KEY: key, ATTEMPT: attempt,
    }  # fmt: skip


def answers_at_least_once(attempt: int = FIRST) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every record answered once, keyed as at-least-once keys them (the upstream resend answered twice)."""
    ids = ["id-a", "id-b", "id-a", "id-c"]
    return [prediction(i, i.encode(), attempt) for i in ids], [dead_letter(2, attempt=attempt)]


def test_a_complete_run_holds_under_both_guarantees() -> None:
    predictions, dead = answers_at_least_once()
    verdict = check(records(), TOPIC, predictions, dead, guarantee="at_least_once", faulted=False)
    assert verdict.problems == []
    assert (verdict.lost, verdict.duplicates, verdict.misrouted) == (0, 0, 0)
    assert verdict.notes == ["at-least-once: no duplicates"]
    keyed_by_input = [prediction(i, k) for i, k in (("id-a", b"c1"), ("id-b", b"c2"), ("id-a", b"c1"), ("id-c", b"c3"))]
    assert check(records(), TOPIC, keyed_by_input, dead, guarantee="exactly_once").problems == []


def test_replays_after_a_fault_are_a_figure_under_at_least_once_and_a_failure_under_exactly_once() -> None:
    predictions, dead = answers_at_least_once()
    # a restart replayed id-b and the dead letter at offset 2: a later incarnation wrote them again
    predictions.append(prediction("id-b", b"id-b", LATER))
    dead.append(dead_letter(2, attempt=LATER))
    verdict = check(records(), TOPIC, predictions, dead, guarantee="at_least_once", faulted=True)
    assert verdict.problems == []
    assert verdict.duplicates == 2
    assert verdict.notes == [
        "at-least-once: 2 duplicate answers (1 extra predictions, 0 of ids never sent; 0 dead letters of unknown "
        "positions), replayed after the fault"
    ]
    # the same answers under exactly-once (keys not recorded: only the duplicates are in question)
    strict = check(records(), TOPIC, [{"event_id": p["event_id"]} for p in predictions], dead)
    assert strict.duplicates == 2
    assert strict.problems == [
        "2 duplicate answers (1 extra predictions, 0 of ids never sent; 0 dead letters of unknown positions)"
    ]


def test_duplicates_in_a_run_without_a_fault_fail_under_at_least_once() -> None:
    predictions, dead = answers_at_least_once()
    predictions.append(prediction("id-c", b"id-c", LATER))
    verdict = check(records(), TOPIC, predictions, dead, guarantee="at_least_once", faulted=False)
    assert verdict.duplicates == 1
    assert len(verdict.problems) == 1
    assert "in a run without a fault" in verdict.problems[0]


def test_a_lost_or_misrouted_record_fails_under_at_least_once_even_after_a_fault() -> None:
    predictions, dead = answers_at_least_once()
    lost = check(records(), TOPIC, predictions[:-1], dead, guarantee="at_least_once", faulted=True)
    assert lost.lost == 1
    assert any("1 records lost" in line for line in lost.problems)
    # the good record id-c dead-lettered instead of predicted
    misrouted_dead = [*dead, {**dead_letter(4, key=b"c3"), "value": b"v-c", "event_id": "id-c"}]
    misrouted = check(records(), TOPIC, predictions[:-1], misrouted_dead, guarantee="at_least_once", faulted=True)
    assert (misrouted.lost, misrouted.misrouted) == (0, 1)
    assert any("misrouted" in line for line in misrouted.problems)


def test_a_prediction_of_an_id_never_sent_is_a_failure_even_after_a_fault() -> None:
    predictions, dead = answers_at_least_once()
    predictions.append(prediction("id-zzz", b"id-zzz", LATER))
    verdict = check(records(), TOPIC, predictions, dead, guarantee="at_least_once", faulted=True)
    assert any("1 of ids never sent" in line for line in verdict.problems)


def test_wrong_keys_are_found_for_each_guarantee() -> None:
    predictions, dead = answers_at_least_once()
    # at-least-once: the input key instead of the event id
    predictions[1] = prediction("id-b", b"c2")
    verdict = check(records(), TOPIC, predictions, dead, guarantee="at_least_once", faulted=False)
    assert verdict.key_problems == 1
    assert "keyed b'c2' (expected its event id)" in verdict.problems[0]
    # exactly-once: the event id instead of the input key; and a dead letter keyed by something else
    predictions, dead = answers_at_least_once()
    dead[0][KAFKA_KEY] = b"2"
    verdict = check(records(), TOPIC, predictions, dead, guarantee="exactly_once")
    assert verdict.key_problems == 5
    assert "expected its input key" in verdict.problems[0]


def test_one_incarnation_answering_a_record_twice_is_no_replay() -> None:
    predictions, dead = answers_at_least_once()
    predictions.append(prediction("id-b", b"id-b", FIRST))  # same attempt as its first answer
    dead.append(dead_letter(2, attempt=FIRST))
    verdict = check(records(), TOPIC, predictions, dead, guarantee="at_least_once", faulted=True)
    assert verdict.attempt_problems == 2
    assert any("answered twice by one worker incarnation" in line for line in verdict.problems)
    # the upstream resend of id-a answered twice by one incarnation is right: it was sent twice
    assert not any("'id-a'" in line for line in verdict.problems)


def test_an_answer_without_an_integer_attempt_fails() -> None:
    predictions, dead = answers_at_least_once()
    predictions[0][ATTEMPT] = None
    verdict = check(records(), TOPIC, predictions, dead, guarantee="at_least_once", faulted=False)
    assert verdict.attempt_problems == 1
    assert verdict.problems == ["1 answers without an integer vatic-attempt header"]


def test_answers_without_key_or_attempt_metadata_are_not_checked_for_them() -> None:
    predictions = [{"event_id": i} for i in ("id-a", "id-b", "id-a", "id-c")]
    dead = [{k: v for k, v in dead_letter(2).items() if k not in (KAFKA_KEY, ATTEMPT)}]
    verdict = check(records(), TOPIC, predictions, dead)
    assert verdict.problems == []
    assert (verdict.key_problems, verdict.attempt_problems) == (0, 0)


def test_an_unknown_guarantee_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown guarantee"):
        check(records(), TOPIC, [], [], guarantee="at_most_once")
