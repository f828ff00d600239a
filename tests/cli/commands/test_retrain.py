"""`vatic retrain`: what it refuses in one line, and when drift starts a retraining (--watch).

The retraining itself (Feast's offline store, the trainer, the gate) runs in tests/examples/test_prepare.py on a
prepared home, and end to end in the demo's drift act (tests/cli/commands/test_demo.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from vatic.cli.commands.retrain import DriftStreak

VATIC = Path(__file__).resolve().parents[3] / ".venv" / "pipeline" / "bin" / "vatic"
ROOT = Path(__file__).resolve().parents[3]


def _window(version: str, *, drifted: bool, judged: bool = True) -> dict:
    return {"model_version": version, "drifted": drifted, "judged": judged, "drifted_columns": ["amount"] * drifted}


def test_a_retrain_starts_after_the_configured_drifted_windows_in_a_row_of_one_version():
    streak = DriftStreak(2)
    assert not streak.observe(_window("1", drifted=True))
    assert not streak.observe(_window("1", drifted=False))  # the streak breaks
    assert not streak.observe(_window("1", drifted=True))
    assert not streak.observe(_window("2", drifted=True))  # another version's windows count on their own
    assert not streak.observe(_window("1", drifted=True, judged=False))  # too small to judge: neither way
    assert streak.observe(_window("1", drifted=True))
    assert not streak.observe(_window("2", drifted=True))  # counting starts again after a retrain
    assert streak.observe(_window("2", drifted=True))


def test_watching_is_refused_unless_the_service_turns_drift_retraining_on():
    done = subprocess.run([VATIC, "retrain", str(ROOT / "examples" / "fraud_detection" / "service"), "--watch"],
                          capture_output=True, text=True, check=False, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "vatic: drift-triggered retraining is off for fraud-detection: set monitoring.retrain.on_drift: true"
    )


def test_a_service_vatic_has_no_trainer_for_is_told_what_to_run(tmp_path):
    folder = tmp_path / "service"
    folder.mkdir()
    config = {"project": "p", "service": "own", "model": {"name": "own", "inputs": [
        {"name": "x", "datatype": "FP32", "columns": ["a"]}], "outputs": [{"name": "y"}]}}  # fmt: skip
    (folder / "service.yaml").write_text(yaml.safe_dump(config))
    done = subprocess.run([VATIC, "retrain", str(folder)], capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 2
    line = done.stderr.strip().splitlines()[-1]
    assert "python -m <package>.train" in line
    assert "vatic promote" in line
