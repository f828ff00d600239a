"""A demo service in a workspace: the fraud detection model from the local model registry (written by
``vatic usecases prepare``), enriched with its Feast features, beside - never instead of - the local stack's own
servers. Skipped (with the reason) when the use case has not been prepared on this machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vatic.cli.deploy.workspace import Workspace, load_state
from vatic.cli.stack.settings import StackSettings
from vatic.examples.fraud_detection.events import make_world, transactions
from vatic.examples.layout import case_home, service_dir

VATIC = str(Path(sys.executable).parent / "vatic")
REGISTRY = StackSettings().model_registry_root


@pytest.mark.skipif(
    not (REGISTRY / "fraud-detector").is_dir()
    or not (case_home("fraud_detection") / "feast" / "registry.db").is_file(),
    reason="fraud detection is not prepared here: run `vatic usecases prepare`",
)
def test_the_fraud_service_in_a_workspace_predicts_with_features(tmp_path):
    home = tmp_path / "workspaces"
    env = {**os.environ, "VATIC_WORKSPACE_HOME": str(home)}
    run = lambda *a: subprocess.run([VATIC, *a], capture_output=True, text=True, check=False, env=env)  # noqa: E731
    # exactly as the README says: no --registry-root (a local registry without a uri is the stack's registry)
    up = run("workspace", "up", str(service_dir("fraud_detection")))
    try:
        assert up.returncode == 0, up.stderr
        state = load_state(home, "fraud-detection")
        assert state is not None
        assert state.gateway_port != StackSettings().gateway_port  # a free port, not the stack's gateway
        event, _ = next(iter(transactions(make_world(), 1)))
        done = run("predict", "fraud-detection", "--data", json.dumps(event))
        assert done.returncode == 0, done.stdout + done.stderr
        answer = json.loads(done.stdout)
        assert 0.0 <= answer["outputs"]["fraud_probability"] <= 1.0
        assert set(answer["features"]) >= {"customer_stats:txn_count_7d", "merchant_stats:txn_count_7d"}
        status = run("workspace", "status")
        assert status.returncode == 0
        assert "fraud-detection" in status.stdout
        # the fraud service follows its registry's production stage: its rollout controller runs beside the server
        assert "rollout" in Workspace(home, "fraud-detection").running()
    finally:
        down = run("workspace", "down", str(service_dir("fraud_detection")))
    assert "stopped rollout, gateway, model" in down.stdout
    assert Workspace(home, "fraud-detection").running() == []
