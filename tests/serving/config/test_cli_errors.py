"""Bad service configs through the real ``vatic`` command: each is one line on stderr naming file, line and fix,
and exit code 2 (no traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

VATIC = str(Path(sys.executable).parent / "vatic")

GOOD = """\
project: shop
service: churn
model:
  name: churn
  inputs:
    - name: x
      columns: [a, b]
  outputs:
    - name: predict
streaming:
  input_topic: churn.events
  output_topic: churn.scores
  dead_letter_topic: churn.dead-letter
  input_schema: transaction
"""

CASES = {
    # (text replaced, replacement, file, line, what the message must say)
    "unknown key": ("project: shop\n", "project: shop\ncolour: red\n", "service.yaml", 2,
                    "unknown key 'colour'; allowed keys here: project, service"),
    "replicas below 0": ("service: churn\n", "service: churn\nreplicas: -1\n", "service.yaml", 3,
                         "replicas: Input should be greater than or equal to 0 (got -1); "
                         "fix: set replicas to a value >= 0"),
    "gpu type without count": ("service: churn\n", "service: churn\nresources:\n  gpu:\n    type: nvidia-l4\n",
                               "service.yaml", 5, "gpu.type nvidia-l4 without gpu.count: add gpu.count: 1"),
    "missing topic": ("  output_topic: churn.scores\n", "", "service.yaml", 10,
                      "streaming.output_topic: missing required key 'output_topic' (Kafka topic the prediction events "
                      "are written to); add it"),
}  # fmt: skip


@pytest.mark.parametrize("command", ["render", "plan"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_config_is_one_line_with_file_line_and_fix(tmp_path, case, command):
    old, new, file, line, message = CASES[case]
    folder = tmp_path / "service"
    folder.mkdir()
    assert old in GOOD
    (folder / "service.yaml").write_text(GOOD.replace(old, new, 1), encoding="utf-8")
    (folder / "staging.yaml").write_text("timeout_s: 3\n", encoding="utf-8")
    done = subprocess.run(
        [VATIC, command, str(folder), "--env", "staging", "--out", str(tmp_path / "k8s")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"vatic: {folder / file}:{line}: "), lines[0]
    assert message in lines[0]
    assert not (tmp_path / "k8s").exists()


def test_a_bad_overlay_is_reported_in_the_overlay(tmp_path):
    folder = tmp_path / "service"
    folder.mkdir()
    (folder / "service.yaml").write_text(GOOD, encoding="utf-8")
    (folder / "production.yaml").write_text("replicas: 2\nautoscaling:\n  max_replicas: 0\n", encoding="utf-8")
    done = subprocess.run([VATIC, "render", str(folder), "--env", "production", "--out", str(tmp_path / "k8s")],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith(f"vatic: {folder / 'production.yaml'}:3: autoscaling.max_replicas: ")
    assert "fix: set max_replicas to a value >= 1" in done.stderr


def test_an_unknown_environment_lists_the_known_ones(tmp_path):
    folder = tmp_path / "service"
    folder.mkdir()
    (folder / "service.yaml").write_text(GOOD, encoding="utf-8")
    (folder / "staging.yaml").write_text("replicas: 1\n", encoding="utf-8")
    done = subprocess.run([VATIC, "render", str(folder), "--env", "prod"], capture_output=True, text=True,
                          check=False, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    assert "no such environment file; environments of this service: staging" in done.stderr
