"""Canary and shadow in the core, against a real MLServer serving the versions the repository writer put beside
each other (a local registry of the echo model), and a real Feast repository.

The canary answers exactly its share of the entities, the same entity in every batch; the shadow answers every
event beside the serving model and never changes what the serving path answers: a shadow that fails or is slow
leaves every serving outcome the same as with no shadow at all.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures import feast_repo
from tests.fixtures.model_server import model_server
from tests.fixtures.rollout import MODEL, register, stage
from tests.serving.gateway.test_gateway import echo_service, transaction
from vatic.cli.stack.mlserver import ModelServer
from vatic.connectors.registry import LocalFolderRegistry
from vatic.schemas.errors import ArtifactsMissing
from vatic.serving.config import ServiceConfig, load_service
from vatic.serving.core import BatchResult, Predictor
from vatic.serving.core.experiments import ShadowBatch, canary_share
from vatic.serving.runtimes.repository import materialize_model, side_config, side_spec, write_repository

WEIGHT = 0.3


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, ModelServer, dict[str, Any]]]:
    """Versions 1 (production), 2 (canary), 3 (shadow: +0.5), 4 (fails every request), 5 (answers after 1 s) on
    one server; the repository is written for canary 2 + shadow 3, and versions 4 and 5 are added beside them
    the same way."""
    tmp = tmp_path_factory.mktemp("experiments")
    root = tmp / "registry"
    register(root, "1")
    register(root, "2")
    register(root, "3", add="0.5")
    register(root, "4", fail_every="1")
    register(root, "5", sleep_s="1")
    stage(root, "1")
    folder = echo_service(tmp / "echo", feast_repo.build_repo(tmp / "feast"), name="echo")
    body = yaml.safe_load((folder / "service.yaml").read_text())
    body["serving"] = {"tier": "low-code", "implementation": "faulty_runtime.FaultyModel"}
    body["registry"] = {"backend": "local", "uri": str(root), "stages": ["production"]}
    body["canary"] = {"version": "2", "weight": WEIGHT}
    body["shadow"] = {"version": "3"}
    (folder / "service.yaml").write_text(yaml.safe_dump(body))
    config = load_service(folder)
    repository = tmp / "models"
    written = write_repository(config, repository, service_dir=folder)
    assert written.summary()["models"][0]["version"] == "1"
    registry = LocalFolderRegistry(root)
    for version in ("4", "5"):
        materialize_model(
            side_config(config, MODEL), repository / f"{MODEL}@{version}", registry=registry, service_dir=folder,
            spec=side_spec(config, MODEL, version),
        )  # fmt: skip
    server = model_server(tmp / "home", repository, name="experiments-mlserver", parallel_workers=0)
    server.start()
    try:
        yield folder, server, body
    finally:
        server.stop()


def service(body: dict[str, Any], **changes: Any) -> ServiceConfig:
    updated = {k: v for k, v in (body | changes).items() if v is not None}
    return ServiceConfig.model_validate(updated)


def events(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        transaction(i) | {"event_id": str(uuid.uuid4()), "event_time": 1_780_000_000_000 + i}
        for i in range(start, start + n)
    ]


def predict(
    folder: Path, server: ModelServer, config: ServiceConfig, batches: list[list[dict[str, Any]]], *,
    wait_s: float | None = None, linger_s: float = 0.0, shadow_events: bool = True,
) -> tuple[list[BatchResult], list[ShadowBatch]]:  # fmt: skip
    """Each batch through one predictor of ``config``; every shadow outcome it reports (``linger_s`` more
    seconds of the loop after the last batch, for late ones)."""
    seen: list[ShadowBatch] = []

    async def main() -> list[BatchResult]:
        predictor = Predictor.from_config(config, service_dir=folder, model_url=server.url)
        predictor.on_shadow = seen.append
        predictor.shadow_events = shadow_events
        if wait_s is not None:
            predictor.shadow_wait_s = wait_s
        try:
            results = [await predictor.predict(batch) for batch in batches]
            await asyncio.sleep(linger_s)
            return results
        finally:
            await predictor.aclose()

    return asyncio.run(main()), seen


def serving(result: BatchResult, batch: list[dict[str, Any]]) -> dict[str, Any]:
    """What the serving path answered, per event id: outputs and version, or the failure."""
    answers: dict[str, Any] = {p["event_id"]: (p["model_version"], p["outputs"]) for _, p in result.predictions}
    for failure in result.failures:
        answers[batch[failure.index]["event_id"]] = (failure.stage, failure.error.error_class)
    return answers


def test_the_repository_holds_the_serving_version_its_canary_its_shadow_and_a_pointer(setup):
    _, server, _ = setup
    repository = server.model_repository
    assert sorted(p.name for p in repository.iterdir() if p.is_dir()) == [
        MODEL, f"{MODEL}.rollout", f"{MODEL}@2", f"{MODEL}@3", f"{MODEL}@4", f"{MODEL}@5",
    ]  # fmt: skip
    pointer = json.loads((repository / f"{MODEL}.rollout" / "model-settings.json").read_text())
    assert pointer["versions"] == ["1"]
    for version in ("2", "3"):
        settings = json.loads((repository / f"{MODEL}@{version}" / "model-settings.json").read_text())
        assert (settings["name"], settings["parameters"]["version"]) == (MODEL, version)


def test_a_side_version_missing_from_the_registry_stops_the_writer_with_one_line(setup, tmp_path):
    folder, _, body = setup
    config = service(body, shadow={"version": "9"})
    with pytest.raises(ArtifactsMissing, match="canary or shadow version faulty:9"):
        write_repository(config, tmp_path / "models", service_dir=folder)
    assert not any((tmp_path / "models").glob(f"{MODEL}*"))


def test_the_canary_answers_its_share_of_the_entities_in_every_batch(setup):
    folder, server, body = setup
    config = service(body, shadow=None)
    batch = events(200)
    (whole,), _ = predict(folder, server, config, [batch])
    # the same events again, one at a time and in reverse: every entity keeps its version
    singles, _ = predict(folder, server, config, [[e] for e in reversed(batch)])
    expected = {e["event_id"]: "2" if canary_share("echo", [e["customer_id"]]) < WEIGHT else "1" for e in batch}
    assert {k: v for k, (v, _) in serving(whole, batch).items()} == expected
    again = {p["event_id"]: p["model_version"] for r in singles for _, p in r.predictions}
    assert again == expected
    assert 40 < sum(v == "2" for v in expected.values()) < 80  # 30% of 200, give or take
    # one request per version: the batch is split in two, not per event
    assert whole.model_calls == 2


def test_the_shadow_answers_every_event_beside_the_serving_model(setup):
    folder, server, body = setup
    batch = events(64, start=1000)
    (result,), seen = predict(folder, server, service(body), [batch])
    assert len(result.predictions) == 64
    assert result.shadow is not None
    assert result.shadow.state == "answered"
    main = {p["event_id"]: p for _, p in result.predictions}
    shadows = {p["event_id"]: p for _, p in result.shadows}
    assert shadows.keys() == main.keys()
    for event_id, shadow in shadows.items():
        assert (shadow["model_name"], shadow["model_version"]) == (MODEL, "3")
        assert shadow["outputs"]["tag"] == main[event_id]["outputs"]["tag"]
        assert shadow["outputs"]["inputs_seen"] == pytest.approx(
            [x + 0.5 for x in main[event_id]["outputs"]["inputs_seen"]], nan_ok=True
        )
    # every event compared; none agrees (0.5 apart, tolerance 0.01)
    assert [(b.state, b.compared, b.agreed) for b in seen] == [("answered", 64, 0)]
    # with a tolerance above the shift they agree
    (_, seen_loose) = predict(folder, server, service(body, shadow={"version": "3", "tolerance": 0.6}), [batch])
    assert [(b.compared, b.agreed) for b in seen_loose] == [(64, 64)]


def test_a_failing_shadow_changes_nothing_on_the_serving_path(setup):
    folder, server, body = setup
    refused = events(1, start=5000)[0] | {"merchant_category": "vatic:reject"}
    batches = [events(50, start=2000), [*events(50, start=3000), refused]]
    without, _ = predict(folder, server, service(body, shadow=None), batches)
    failing, seen = predict(folder, server, service(body, shadow={"version": "4"}), batches)
    for before, after, batch in zip(without, failing, batches, strict=True):
        assert serving(after, batch) == serving(before, batch)
        assert after.shadows == []
    assert [b.state for b in seen] == ["failed", "failed"]
    assert all("503" in (b.error or "") for b in seen)
    # the refused event was dead-lettered by the serving path, as without a shadow
    assert [f.error.error_class for f in failing[1].failures] == [f.error.error_class for f in without[1].failures]
    assert len(failing[1].failures) == 1


def test_a_slow_shadow_is_waited_for_only_as_long_as_the_door_says(setup):
    folder, server, body = setup
    batch = events(20, start=4000)
    (result,), seen = predict(
        folder, server, service(body, shadow={"version": "5"}), [batch], wait_s=0.05, linger_s=2.0
    )
    assert len(result.predictions) == 20
    assert result.shadow is not None
    assert result.shadow.state == "late"
    assert result.shadows == []
    # its answers still reach the metrics when they come
    assert [(b.state, len(b.predictions), b.answered, b.compared) for b in seen] == [("late", 20, 20, 20)]

    # with no wait at all (REST's default) the answer is not late by definition: it is counted as answered; the
    # gateway asks for counts only, no prediction events
    (result,), seen = predict(
        folder, server, service(body, shadow={"version": "5"}), [batch], wait_s=0, linger_s=2.0, shadow_events=False
    )
    assert result.shadows == []
    assert [(b.state, len(b.predictions), b.answered, b.compared) for b in seen] == [("answered", 0, 20, 20)]
