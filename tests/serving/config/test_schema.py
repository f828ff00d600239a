"""The committed JSON Schema (``serving/config/service.schema.json``) is the one the model generates today, and it
accepts the demo configs and rejects what the model rejects."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from vatic.cli.commands.schema import SCHEMA_FILE, schema_text
from vatic.examples.layout import CASES, service_dir

VATIC = str(Path(sys.executable).parent / "vatic")


def test_the_committed_schema_is_up_to_date():
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), "run `vatic schema` and commit the file"


def test_vatic_schema_check_agrees(tmp_path):
    done = subprocess.run([VATIC, "schema", "--check"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    stale = tmp_path / "schema.json"
    stale.write_text("{}\n", encoding="utf-8")
    done = subprocess.run([VATIC, "schema", "--check", "-o", str(stale)], capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert "not up to date" in done.stderr
    done = subprocess.run([VATIC, "schema", "-o", str(stale)], capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert json.loads(stale.read_text(encoding="utf-8")) == json.loads(schema_text())


@pytest.mark.parametrize("case", CASES)
def test_the_demo_configs_validate_against_the_schema(case):
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    config = yaml.safe_load((service_dir(case) / "service.yaml").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema).validate(config)


def test_the_schema_rejects_an_unknown_key():
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    config = yaml.safe_load((service_dir("fraud_detection") / "service.yaml").read_text(encoding="utf-8"))
    config["colour"] = "red"
    with pytest.raises(jsonschema.ValidationError, match="colour"):
        jsonschema.Draft202012Validator(schema).validate(config)
