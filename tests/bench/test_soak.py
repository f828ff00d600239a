"""The soak's analysis (bench/soak.py) on hand-built samples: RSS slopes over the second half, the lag verdict,
loss accounting, and the event ids that let the reader count each sent event once."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench.soak import Reader, analyze, event_index, event_uuid, rows, second_half, slope

MB = 1024 * 1024


def _samples(
    n: int, *, job_mb: Any, server_mb: float = 150.0, lag: Any = lambda t: 100, p99: float = 20.0
) -> list[dict[str, Any]]:
    """``n`` samples 10 s apart; ``job_mb(t)`` the job's RSS (jvm 2/3, workers 1/3), ``lag(t)`` the lag."""
    out = []
    for i in range(n):
        t = 10.0 * i
        job = job_mb(t)
        kinds = {"jvm": int(job * 2 / 3 * MB), "python-worker": int(job / 3 * MB)}
        out.append(
            {
                "t": t,
                "job": {"total": sum(kinds.values()), "processes": 3, "kinds": kinds},
                "fraud-model": {
                    "total": int(server_mb * MB),
                    "processes": 1,
                    "kinds": {"model-server": int(server_mb * MB)},
                },
                "lag": lag(t),
                "p99_ms": p99 + i,
            }
        )
    return out


def test_slope_is_least_squares() -> None:
    assert slope([(0, 1), (1, 3), (2, 5)]) == pytest.approx(2.0)
    assert slope([(0, 1), (1, 0), (2, 1)]) == pytest.approx(0.0)
    assert math.isnan(slope([(1, 1)]))
    assert math.isnan(slope([(1, 1), (1, 2)]))


def test_second_half_by_time() -> None:
    samples = [{"t": float(t)} for t in range(0, 100, 10)]  # 0..90: the middle is 45
    assert [s["t"] for s in second_half(samples)] == [50, 60, 70, 80, 90]
    assert [s["t"] for s in second_half(samples[:3])] == [10, 20]


def test_a_flat_run_meets_every_target() -> None:
    # warm-up growth in the first half only: the second half is flat
    samples = _samples(40, job_mb=lambda t: 800 + min(t, 150))
    samples[0]["p99_ms"] = 5000.0  # the start-up backlog's window: not in the verdict (second half only)
    result = analyze(samples, rate=1000.0, sent=5000, accounted=5000)
    assert result["rss"]["job"]["slope_mb_per_h"] == pytest.approx(0.0, abs=1e-6)
    assert result["rss"]["job"]["mean_mb"] == pytest.approx(950, rel=1e-3)
    assert result["rss_growth"] == {"job": True, "fraud-model": True}
    assert result["lag"] == {"start": 100.0, "end": 100.0, "slope_per_s": pytest.approx(0.0), "flat": True}
    assert result["lost"] == 0
    assert result["worst_p99_ms"] == 20.0 + 39
    assert result["p99_windows_ms"][0] == 5000.0
    by_id = {r["id"]: r for r in rows(result)}
    assert set(by_id) == {
        "soak_rss_growth_job", "soak_rss_growth_fraud_model", "soak_lag_growth", "soak_lost", "soak_worst_window_p99",
    }  # fmt: skip
    assert by_id["soak_rss_growth_job"]["met"] is True
    assert by_id["soak_lag_growth"]["met"] is True
    assert by_id["soak_lost"]["met"] is True
    assert by_id["soak_worst_window_p99"]["met"] is False  # 59 ms > 50 ms
    for row in by_id.values():
        assert set(row) >= {"id", "comparison", "metric", "unit", "vatic", "baseline", "ratio", "target", "met"}
        assert row["comparison"] == "soak"


def test_growth_lag_and_loss_are_caught() -> None:
    # the job grows 36 MB per hour (0.01 MB/s) on ~1000 MB: 3.6 %/h; the lag grows 50 events/s (5% of the rate)
    samples = _samples(60, job_mb=lambda t: 1000 + 0.01 * t, lag=lambda t: int(50 * t))
    result = analyze(samples, rate=1000.0, sent=10_000, accounted=9_990)
    assert result["rss"]["job"]["slope_mb_per_h"] == pytest.approx(36.0, rel=1e-3)
    assert result["rss"]["job"]["slope_pct_per_h"] == pytest.approx(3.6, rel=0.01)
    assert result["rss"]["job"]["kinds"]["jvm"]["slope_mb_per_h"] == pytest.approx(24.0, rel=1e-3)
    assert result["rss_growth"]["job"] is False
    assert result["rss_growth"]["fraud-model"] is True
    assert result["lag"]["slope_per_s"] == pytest.approx(50.0)
    assert result["lag"]["flat"] is False
    assert result["lag"]["start"] == 0
    assert result["lost"] == 10
    met = {r["id"]: r["met"] for r in rows(result)}
    assert met["soak_rss_growth_job"] is False
    assert met["soak_lag_growth"] is False
    assert met["soak_lost"] is False


def test_no_commit_yet_and_no_latency_windows_are_unknown_not_met() -> None:
    samples = _samples(6, job_mb=lambda t: 900, lag=lambda t: None, p99=float("nan"))
    result = analyze(samples, rate=100.0, sent=0, accounted=0)
    assert result["lag"]["flat"] is None
    assert result["lag"]["start"] is None
    met = {r["id"]: r["met"] for r in rows(result)}
    assert met["soak_lag_growth"] is None
    assert met["soak_worst_window_p99"] is None


def test_event_ids_round_trip_and_the_reader_counts_each_event_once() -> None:
    prefix = 0x1234_5678_9ABC_DEF0
    event_id = event_uuid(prefix, 42)
    assert len(event_id) == 36
    assert event_index(prefix, event_id) == 42
    assert event_index(prefix + 1, event_id) is None  # another run's event
    assert event_index(prefix, "not-a-uuid") is None
    assert event_index(prefix, None) is None
    reader = Reader(topics=None, prefix=prefix)
    for index in (0, 5, 5, 100_000, None):
        reader._mark(index)
    assert reader.accounted == 3
    assert reader.duplicates == 1
