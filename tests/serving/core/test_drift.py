"""Reference profiles, window cells and the drift judgement (vatic.serving.core.drift)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from vatic.serving.core.drift import COUNT_CELL, Profile, build_profile, judge, merge, psi

CHANNELS = ["ONLINE", "POS", "ATM", "MOBILE_APP"]


def _training(rng: np.random.Generator, n: int) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    amount = rng.lognormal(3.5, 1.0, n)
    channel = rng.choice(CHANNELS, n, p=[0.5, 0.3, 0.1, 0.1])
    txn = rng.poisson(4, n).astype(float)
    txn_missing = rng.random(n) < 0.05
    score = 1 / (1 + np.exp(-(np.log(amount) - 5)))
    inputs = {
        "amount": amount.tolist(),
        "channel": channel.tolist(),
        "card_present": (rng.random(n) < 0.4).tolist(),
        "customer_stats:txn_count_7d": [None if m else v for v, m in zip(txn, txn_missing, strict=True)],
        "title": [f"listing {i}" for i in range(n)],  # free text: left out of the profile
    }
    return inputs, {"fraud_probability": score.tolist()}


@pytest.fixture(scope="module")
def profile() -> Profile:
    inputs, outputs = _training(np.random.default_rng(1), 20_000)
    return build_profile("fraud-detector", "1", inputs, outputs)


def _predictions(seed: int, n: int, *, shift: float = 1.0, missing: float = 0.05, version: str = "1") -> list[dict]:
    rng = np.random.default_rng(seed)
    inputs, _outputs = _training(rng, n)
    events = []
    for i in range(n):
        amount = inputs["amount"][i] * shift
        txn = inputs["customer_stats:txn_count_7d"][i]
        if rng.random() < missing - 0.05:
            txn = None
        events.append({
            "model_version": version,
            "inputs": {"amount": amount, "channel": inputs["channel"][i], "card_present": inputs["card_present"][i]},
            "features": {"customer_stats:txn_count_7d": {"value": 0 if txn is None else txn, "missing": txn is None}},
            "outputs": {"fraud_probability": 1 / (1 + np.exp(-(np.log(amount) - 5)))},
        })  # fmt: skip
    return events


def _counts(profile: Profile, events: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in events:
        for cell in profile.cells(event):
            counts[cell] = counts.get(cell, 0) + 1
    return counts


def _judge(profile: Profile, counts: dict[str, int], **kwargs: Any):
    return judge(profile, counts, service="fraud-detection", model_name="fraud-detector", model_version="1",
                 window=(0, 300_000), **kwargs)  # fmt: skip


def test_profile_bins_numbers_by_training_quantiles_and_keeps_categories(profile: Profile) -> None:
    amount = profile.column("input", "amount")
    assert amount is not None
    assert amount.kind == "numeric"
    assert len(amount.counts) == len(amount.edges) + 1 == 10
    assert list(amount.edges) == sorted(amount.edges)
    # quantile bins: every bin holds about a tenth of the training values
    assert all(abs(n / amount.rows - 0.1) < 0.01 for n in amount.counts)
    channel = profile.column("input", "channel")
    assert channel is not None
    assert channel.kind == "categorical"
    assert channel.categories[0] == "ONLINE"
    assert channel.counts[-1] == 0
    assert profile.column("input", "card_present").categories == ("false", "true")  # type: ignore[union-attr]
    txn = profile.column("input", "customer_stats:txn_count_7d")
    assert txn is not None
    assert 0.04 < txn.missing_rate < 0.06
    assert profile.column("input", "title") is None  # free text
    assert profile.column("output", "fraud_probability") is not None


def test_profile_round_trips_through_its_file(profile: Profile, tmp_path: Path) -> None:
    path = profile.write(tmp_path)
    assert path.name == "profile.json"
    assert Profile.read(path) == profile


def test_cells_count_every_profiled_column_of_a_prediction(profile: Profile) -> None:
    event = _predictions(3, 1)[0]
    event["inputs"]["channel"] = "CRYPTO"  # a category training never saw: the "other" bin
    cells = profile.cells(event)
    assert cells[0] == COUNT_CELL
    channel = profile.column("input", "channel")
    assert f"input|channel|{len(channel.categories)}" in cells  # type: ignore[union-attr]
    assert any(c.startswith("output|fraud_probability|") for c in cells)
    missing = {**event, "features": {"customer_stats:txn_count_7d": {"value": 0, "missing": True}}}
    assert "input|customer_stats:txn_count_7d|-1" in profile.cells(missing)


def test_unshifted_windows_rarely_alarm_and_shifted_ones_always_do(profile: Profile) -> None:
    alarms = [_judge(profile, _counts(profile, _predictions(100 + s, 1000))).drifted for s in range(20)]
    shifted = [_judge(profile, _counts(profile, _predictions(200 + s, 1000, shift=2.0))) for s in range(5)]
    assert sum(alarms) <= 1  # false-alarm rate over 20 seeded windows of 1,000 predictions
    for window in shifted:
        assert window.drifted
        assert "amount" in window.drifted_columns
        assert "channel" not in window.drifted_columns  # only what moved
        amount = next(c for c in window.columns if c.name == "amount")
        assert amount.psi is not None
        assert amount.psi >= 0.2


def test_missing_rate_rise_is_drift(profile: Profile) -> None:
    window = _judge(profile, _counts(profile, _predictions(5, 1000, missing=0.4)))
    txn = next(c for c in window.columns if c.name == "customer_stats:txn_count_7d")
    assert window.drifted
    assert txn.drifted
    assert txn.missing_rate > 0.3
    assert abs(txn.reference_missing_rate - 0.05) < 0.01


def test_small_windows_are_reported_not_judged(profile: Profile) -> None:
    window = _judge(profile, _counts(profile, _predictions(6, 50, shift=3.0)), min_count=200)
    assert window.predictions == 50
    assert not window.judged
    assert not window.drifted
    assert next(c for c in window.columns if c.name == "amount").psi > 0.2  # type: ignore[operator]


def test_a_version_without_profile_is_counted_only() -> None:
    window = judge(None, {COUNT_CELL: 12}, service="s", model_name="m", model_version="9", window=(0, 1))
    assert (window.predictions, window.profiled, window.drifted, window.columns) == (12, False, False, ())
    assert window.record(5)["model_version"] == "9"


def test_partial_counts_merge_in_any_order(profile: Profile) -> None:
    events = _predictions(7, 600, shift=1.3)
    whole = _judge(profile, _counts(profile, events))
    parts = [_counts(profile, events[i : i + 64]) for i in range(0, 600, 64)]
    random.Random(3).shuffle(parts)
    assert _judge(profile, merge(parts)) == whole


def test_psi_is_the_textbook_formula_and_wasserstein_follows_scipy(profile: Profile) -> None:
    reference, observed = [100, 200, 300, 400], [150, 150, 350, 350]
    r = np.array(reference) / 1000
    o = np.array(observed) / 1000
    assert psi(reference, observed) == pytest.approx(float(np.sum((o - r) * np.log(o / r))))
    assert psi(reference, reference) == 0.0
    events = _predictions(8, 2000, shift=2.0)
    window = _judge(profile, _counts(profile, events))
    score = next(c for c in window.columns if c.name == "fraud_probability")
    raw = wasserstein_distance(
        _training(np.random.default_rng(1), 20_000)[1]["fraud_probability"],
        [e["outputs"]["fraud_probability"] for e in events],
    )
    assert score.wasserstein == pytest.approx(raw, rel=0.25)  # over the bins' medians: close, not exact
