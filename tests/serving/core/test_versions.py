"""The contract probe a new model version must answer before clients switch to it, and the follower's behaviour
when the rollout pointer cannot be read (the switch itself, against a real MLServer: tests/serving/runtimes/
test_rollout.py)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from tests.fixtures.model_server import free_ports
from vatic.connectors.inference import InferenceClient
from vatic.connectors.v2.types import InferenceResponse
from vatic.examples.layout import service_dir
from vatic.serving.config import ServiceConfig, load_service
from vatic.serving.core.versions import PROBE_ROWS, VersionFollower, check_probe, pointer_name, probe_request


def _product() -> ServiceConfig:
    return load_service(service_dir("product_categorization"))


def _response(outputs: list[dict[str, Any]]) -> InferenceResponse:
    return InferenceResponse.from_json(json.dumps({"model_name": "m", "outputs": outputs}).encode())


def test_the_probe_carries_every_declared_input_with_its_datatype_and_width() -> None:
    config = _product()
    request = probe_request(config.model)
    assert [t.name for t in request.inputs] == [spec.name for spec in config.model.inputs]
    for tensor, spec in zip(request.inputs, config.model.inputs, strict=True):
        assert tensor.datatype == spec.datatype
        width = 1 if spec.squeeze else len(spec.columns)
        assert tensor.shape == ((PROBE_ROWS,) if spec.squeeze else (PROBE_ROWS, width))
        assert len(tensor.data) == PROBE_ROWS * width
    assert request.outputs == tuple(o.name for o in config.model.outputs)


def test_an_answer_that_breaks_the_contract_is_named() -> None:
    config = load_service(service_dir("fraud_detection"))
    (output,) = config.model.outputs
    good = _response([{"name": output.name, "shape": [2], "datatype": "FP64", "data": [0.1, 0.9]}])
    assert check_probe(config.model, good) == {output.field: "float"}
    with pytest.raises(ValueError, match="has no output"):
        check_probe(config.model, _response([{"name": "other", "shape": [2], "datatype": "FP64", "data": [0, 1]}]))
    with pytest.raises(ValueError, match="no batch dimension of 2 rows"):
        check_probe(config.model, _response([{"name": output.name, "shape": [1], "datatype": "FP64", "data": [0.1]}]))
    labels = _response([{"name": output.name, "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}])
    with pytest.raises(ValueError, match="change kind from the current version"):
        check_probe(config.model, labels, like={output.field: "float"})


def test_an_unreachable_pointer_is_read_once_for_all_callers_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """Before any read the follower names no version (None: the predictor waits, as for a model that is not
    ready); every caller shares one read; the complaint is logged once, not once per batch."""
    (port,) = free_ports(1)

    async def run() -> list[str | None]:
        async with InferenceClient(f"http://127.0.0.1:{port}", deadline_s=1) as client:
            follower = VersionFollower(client, "m", refresh_s=0)
            assert follower.pointer == pointer_name("m") == "m.rollout"
            first = await asyncio.gather(*(follower.version() for _ in range(5)))
            return [*first, await follower.version()]

    with caplog.at_level(logging.WARNING, logger="vatic.serving.core.versions"):
        assert asyncio.run(run()) == [None] * 6
    assert len([r for r in caplog.records if "cannot read its rollout pointer" in r.message]) == 1


def test_a_batch_before_the_first_pointer_read_waits_as_not_ready_and_is_never_sent_to_a_default_version() -> None:
    """The server's default version would be the newest it holds (a canary, a shadow, a version being checked):
    the core retries "not ready" within its budget, then raises the outage for the whole batch."""
    from vatic.schemas.errors import ModelNotReady, Retryable
    from vatic.serving.core import Predictor, RetryPolicy

    (port,) = free_ports(1)
    config = load_service(service_dir("fraud_detection"))
    assert config.uses_pointer
    events = [{"event_id": "e1", "customer_id": "c1", "merchant_id": "m1"}]

    async def run() -> None:
        async with InferenceClient(f"http://127.0.0.1:{port}", deadline_s=0.5) as client:
            follower = VersionFollower(client, config.model.name, refresh_s=0)
            config_without_features = config.model_copy(update={"features": None})
            predictor = Predictor(
                config_without_features, inference=client, versions=follower, retry=RetryPolicy(budget_s=0.3)
            )
            await predictor.predict(events)

    with pytest.raises(ModelNotReady) as info:
        asyncio.run(run())
    assert isinstance(info.value, Retryable)
    assert "rollout pointer has not been read yet" in str(info.value)
