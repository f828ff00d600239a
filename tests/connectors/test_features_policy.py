"""MissingFeaturePolicy on hand-made rows (the store-backed cases are in test_features.py)."""

from __future__ import annotations

import pytest

from vatic.connectors.features import EntityFeatures, FeatureStatus, MissingFeaturePolicy
from vatic.schemas.errors import ConfigError, DataError, MissingFeatures

REFS = ("v:a", "v:b", "w:c")


def _row(**statuses: FeatureStatus) -> EntityFeatures:
    full = {ref: statuses.get(ref.split(":")[1], FeatureStatus.PRESENT) for ref in REFS}
    values = {ref: (1.5 if status is FeatureStatus.PRESENT else None) for ref, status in full.items()}
    missing = {ref: status for ref, status in full.items() if status is not FeatureStatus.PRESENT}
    return EntityFeatures(values=values, statuses=full, missing=missing, event_times={"v": 1.0, "w": None})


def test_complete_rows_pass_through_unchanged() -> None:
    row = _row()
    assert row.complete
    assert MissingFeaturePolicy(action="reject").apply(row) is row


def test_default_fills_values_and_keeps_the_missing_flag() -> None:
    row = _row(b=FeatureStatus.NOT_FOUND, c=FeatureStatus.OUTSIDE_MAX_AGE)
    filled = MissingFeaturePolicy(defaults={"v:b": 0.0}).apply(row)
    assert filled.values == {"v:a": 1.5, "v:b": 0.0, "w:c": None}
    assert filled.missing == {"v:b": FeatureStatus.NOT_FOUND, "w:c": FeatureStatus.OUTSIDE_MAX_AGE}
    assert filled.statuses is row.statuses
    assert not filled.complete
    assert row.values["v:b"] is None  # the shared row is not modified


def test_reject_raises_missing_features_with_every_miss() -> None:
    row = _row(a=FeatureStatus.NULL_VALUE, c=FeatureStatus.NOT_FOUND)
    policy = MissingFeaturePolicy(per_feature={"v:a": "reject"})
    with pytest.raises(MissingFeatures) as info:
        policy.apply(row)
    err = info.value
    assert isinstance(err, DataError)
    assert err.stage == "enrich"
    assert err.missing == {"v:a": "NULL_VALUE", "w:c": "NOT_FOUND"}
    assert "v:a (NULL_VALUE)" in err.message
    assert "w:c" not in err.message  # only the rejected feature is named as the cause

    # per-feature "default" overrides a rejecting policy
    lenient = MissingFeaturePolicy(action="reject", per_feature={"v:a": "default", "w:c": "default"})
    assert lenient.apply(row).values["v:a"] is None


def test_apply_all_keeps_batch_positions() -> None:
    rows = [_row(), _row(b=FeatureStatus.NOT_FOUND), _row()]
    out = MissingFeaturePolicy(action="reject").apply_all(rows)
    assert out[0] is rows[0]
    assert isinstance(out[1], MissingFeatures)
    assert out[2] is rows[2]


@pytest.mark.parametrize("kwargs", [{"action": "drop"}, {"per_feature": {"v:a": "ignore"}}, {"action": "Reject"}])
def test_unknown_actions_are_config_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        MissingFeaturePolicy(**kwargs)  # type: ignore[arg-type]
