"""vatic.connectors.dedupe: the consumer-side dedupe of at-least-once outputs (pure: a hand-driven clock)."""

from __future__ import annotations

import pytest

from vatic.connectors.dedupe import SeenKeys, attempt, identity
from vatic.schemas.errors import ConfigError


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_key_is_first_once_and_a_duplicate_afterwards() -> None:
    seen = SeenKeys(capacity=10)
    assert [seen.first(k) for k in (b"a", b"b", b"a", b"a", b"c")] == [True, True, False, False, True]
    assert seen.duplicates == 2
    assert len(seen) == 3


def test_capacity_forgets_the_least_recently_offered_key_first() -> None:
    seen = SeenKeys(capacity=2)
    assert seen.first(b"a")
    assert seen.first(b"b")
    assert not seen.first(b"a")  # refreshed: b is now the oldest
    assert seen.first(b"c")  # over capacity: b is forgotten
    assert len(seen) == 2
    assert b"a" in seen
    assert b"b" not in seen
    assert seen.first(b"b")  # forgotten, so new again


def test_a_window_forgets_keys_older_than_it() -> None:
    clock = Clock()
    seen = SeenKeys(capacity=100, window_s=10, clock=clock)
    assert seen.first(b"a")
    clock.now = 5
    assert seen.first(b"b")
    clock.now = 10
    assert not seen.first(b"a")  # exactly 10 s: still inside (and refreshed to 10)
    clock.now = 15.5
    assert b"b" not in seen  # 10.5 s since its offer
    assert seen.first(b"x")
    assert len(seen) == 2  # b aged out when x was offered; a (refreshed at 10) stays
    clock.now = 21
    assert seen.first(b"a")  # 11 s since its last offer: new again


def test_identity_of_predictions_dead_letters_and_plain_records() -> None:
    prediction = [("vatic-event-id", b"5b0c"), ("vatic-attempt", b"1796582400123")]
    dead = {"vatic-stage": b"decode", "vatic-source": b"t.in/2/41", "vatic-attempt": "17"}
    assert identity(prediction, b"5b0c") == b"P:5b0c"
    assert identity(dead, b"customer-7") == b"D:t.in/2/41"
    assert identity([], b"k") == b"K:k"
    assert identity(None, None) is None
    assert attempt(prediction) == 1796582400123
    assert attempt(dead) == 17  # a str header value (confluent-kafka may give either) is read the same
    assert attempt([("vatic-attempt", b"x1")]) is None
    assert attempt([]) is None


def test_a_prediction_and_a_dead_letter_never_share_an_identity() -> None:
    seen = SeenKeys()
    assert seen.first(identity({"vatic-event-id": b"t.in/0/1"}) or b"")
    assert seen.first(identity({"vatic-source": b"t.in/0/1"}) or b"")


@pytest.mark.parametrize(("capacity", "window"), [(0, None), (10, 0.0), (10, -1.0)])
def test_bounds_that_remember_nothing_are_refused(capacity: int, window: float | None) -> None:
    with pytest.raises(ConfigError):
        SeenKeys(capacity=capacity, window_s=window)
