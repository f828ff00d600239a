"""Canary assignment and answer comparison: pure functions, the same in the stream job and the gateway."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from tests.fixtures import feast_repo
from tests.fixtures.echo import echo_model
from vatic.serving.config import ServiceConfig
from vatic.serving.core.experiments import CanaryRouter, agrees, canary_share


def config(**sections: Any) -> ServiceConfig:
    body: dict[str, Any] = {
        "project": "test",
        "service": "echo",
        "model": echo_model("faulty"),
        "serving": {"tier": "low-code", "implementation": "faulty_runtime.FaultyModel"},
        "features": {"entities": {"customer_id": "customer_id"}, "refs": feast_repo.FEATURES},
    }
    return ServiceConfig.model_validate(body | sections)


def test_a_share_is_fixed_by_service_and_key_and_spread_evenly():
    shares = [canary_share("echo", [f"c{i}"]) for i in range(20_000)]
    assert shares == [canary_share("echo", [f"c{i}"]) for i in range(20_000)]
    assert all(0 <= s < 1 for s in shares)
    # 20,000 uniform draws: the share under 0.1 is within 1.5 points of 10% (binomial sd 0.21 points)
    assert abs(sum(s < 0.1 for s in shares) / len(shares) - 0.1) < 0.015
    # another service splits the same entities independently
    other = [canary_share("payments", [f"c{i}"]) for i in range(20_000)]
    both = sum(a < 0.1 and b < 0.1 for a, b in zip(shares, other, strict=True)) / len(shares)
    assert abs(both - 0.01) < 0.005
    # the key's parts are separated: ("a", "bc") is not ("ab", "c")
    assert canary_share("echo", ["a", "bc"]) != canary_share("echo", ["ab", "c"])


def test_raising_the_weight_only_adds_entities():
    keys = [[f"c{i}"] for i in range(5_000)]
    small = {tuple(k) for k in keys if canary_share("echo", k) < 0.05}
    large = {tuple(k) for k in keys if canary_share("echo", k) < 0.2}
    assert small < large


def test_the_router_keys_by_the_feature_entities_unless_told():
    router = CanaryRouter.for_config(config(canary={"version": "2", "weight": 0.5}))
    assert router is not None
    assert router.fields == ["customer_id"]
    assert router.key({"customer_id": "c1"}) == ["c1"]
    assert router.key({"customer_id": ""}) is None
    assert not router.picks({"amount": 1.0}, 0.5)  # no key: the serving version answers
    picked = [router.picks({"customer_id": f"c{i}"}, 0.5) for i in range(400)]
    assert picked == [canary_share("echo", [f"c{i}"]) < 0.5 for i in range(400)]
    assert 120 < sum(picked) < 280

    told = CanaryRouter.for_config(
        config(canary={"version": "2", "weight": 0.5, "key": ["merchant_id", "customer_id"]})
    )
    assert told is not None
    assert told.key({"customer_id": "c1", "merchant_id": 7}) == ["7", "c1"]
    bare = {"project": "t", "service": "s", "model": {"name": "m", "inputs": [{"name": "x", "columns": ["a"]}],
                                                     "outputs": [{"name": "y"}]}}  # fmt: skip
    assert CanaryRouter.for_config(ServiceConfig.model_validate(bare)) is None


def test_canary_and_shadow_configs_are_checked():
    with pytest.raises(ValidationError, match="canary splits by entity"):
        ServiceConfig.model_validate(
            {
                "project": "t",
                "service": "s",
                "model": echo_model("faulty"),
                "canary": {"version": "2", "weight": 0.1},
            }
        )
    with pytest.raises(ValidationError, match="less than 1"):
        config(canary={"version": "2", "weight": 1})
    with pytest.raises(ValidationError, match=r"canary\.version is missing"):
        config(canary={"weight": 0.2})
    following = {"backend": "local", "stages": ["production"], "refresh_s": 5}
    with pytest.raises(ValidationError, match="takes its canary from the stage 'canary'"):
        config(registry=following, canary={"version": "2"})
    assert config(registry=following, canary={"weight": 0.2}).side_models == []
    with pytest.raises(ValidationError, match=r"is the serving model\.version"):
        config(model=echo_model("faulty") | {"version": "2"}, shadow={"version": "2"})
    with pytest.raises(ValidationError, match="full-custom"):
        config(serving={"tier": "full-custom", "layer": "fastapi", "entrypoint": "app:app"}, shadow={"version": "2"})


def test_side_models_and_the_pointer_follow_the_config():
    plain = config()
    assert plain.side_models == []
    assert not plain.uses_pointer
    both = config(canary={"version": "2", "weight": 0.1}, shadow={"version": "3"})
    assert both.side_models == [("faulty", "faulty", "2"), ("faulty", "faulty", "3")]
    assert both.uses_pointer  # the server's default version would be 3, the newest
    assert not config(model=echo_model("faulty") | {"version": "1"}, shadow={"version": "3"}).uses_pointer
    other = config(shadow={"model": "challenger", "version": "1"})
    assert other.side_models == [("challenger", "challenger", "1")]
    assert not other.uses_pointer  # another model's versions do not move this one's default
    same = config(canary={"version": "2", "weight": 0.1}, shadow={"version": "2"})
    assert same.side_models == [("faulty", "faulty", "2")]


def test_agreement_compares_numbers_within_the_tolerance():
    assert agrees({"p": 0.5, "label": "a"}, {"p": 0.505, "label": "a"}, 0.01)
    assert not agrees({"p": 0.5}, {"p": 0.52}, 0.01)
    assert not agrees({"p": 0.5, "label": "a"}, {"p": 0.5, "label": "b"}, 0.01)
    assert not agrees({"p": 0.5}, {"q": 0.5}, 0.01)
    assert agrees({"v": [1.0, math.nan]}, {"v": [1.0, math.nan]}, 0.0)
    assert not agrees({"v": [1.0, 2.0]}, {"v": [1.0]}, 1.0)
    assert agrees({"m": {"a": 0.1}}, {"m": {"a": 0.1}}, 0.0)
    assert not agrees({"flag": True}, {"flag": 1}, 0.0)
