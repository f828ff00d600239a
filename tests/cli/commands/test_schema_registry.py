"""``vatic schema register | check``: a producer's CI gates a schema change against the registry before it ships."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

VATIC = Path(__file__).resolve().parents[3] / ".venv" / "pipeline" / "bin" / "vatic"

V1 = {"type": "record", "name": "Order", "namespace": "ci.test", "fields": [{"name": "id", "type": "string"}]}
#: adds a field with a default: every older record can be read with it
V2 = {**V1, "fields": [*V1["fields"], {"name": "note", "type": "string", "default": ""}]}
#: changes a type: records written with v1 cannot be read with it
BAD = {**V1, "fields": [{"name": "id", "type": "long"}]}


def _vatic(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VATIC), "schema", *args], capture_output=True, text=True, check=False, env={**os.environ, **(env or {})}
    )


def _file(tmp_path: Path, name: str, schema: dict[str, Any]) -> str:
    path = tmp_path / f"{name}.avsc"
    path.write_text(json.dumps(schema), encoding="utf-8")
    return str(path)


def test_register_then_check_gates_an_incompatible_change(registry_url: str, tmp_path: Path) -> None:
    subject = f"ci-{uuid.uuid4().hex[:8]}-value"
    url = ["--schema-registry-url", registry_url]
    first = _vatic("register", _file(tmp_path, "v1", V1), "--subject", subject, *url)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().startswith(f"{subject}: version 1, id ")
    assert first.stdout.strip().endswith("BACKWARD_TRANSITIVE")
    assert f"schemas: schema registry {registry_url}" in first.stderr

    refused = _vatic("check", _file(tmp_path, "bad", BAD), "--subject", subject, *url)
    assert refused.returncode == 1
    assert f"{subject}: INCOMPATIBLE under BACKWARD_TRANSITIVE" in refused.stdout
    accepted = _vatic("check", _file(tmp_path, "v2", V2), "--subject", subject, *url)
    assert accepted.returncode == 0, accepted.stdout
    assert f"{subject}: compatible under BACKWARD_TRANSITIVE" in accepted.stdout

    # check registered nothing; register does, as version 2
    second = _vatic("register", _file(tmp_path, "v2", V2), "--subject", subject, *url)
    assert second.stdout.strip().startswith(f"{subject}: version 2, id ")
    # the environment variable names the registry too (what a CI job sets once)
    again = _vatic(
        "check", _file(tmp_path, "bad", BAD), "--subject", subject, env={"VATIC_SCHEMA_REGISTRY_URL": registry_url}
    )
    assert again.returncode == 1


def test_without_a_registry_the_embedded_store_is_used_and_said(tmp_path: Path) -> None:
    home = {"VATIC_STACK_HOME": str(tmp_path / "home"), "VATIC_SCHEMA_REGISTRY_URL": ""}
    done = _vatic("register", _file(tmp_path, "v1", V1), "--subject", "orders-value", env=home)
    assert done.returncode == 0, done.stderr
    assert "embedded schema store" in done.stderr
    assert done.stdout.strip().startswith(f"orders-value: version 1, id {2**30}")


def test_a_file_without_a_subject_is_one_clear_line(tmp_path: Path) -> None:
    done = _vatic("check", _file(tmp_path, "v1", V1))
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == f"vatic: {tmp_path / 'v1.avsc'}: an .avsc file needs --subject (e.g. --subject my.topic-value)"
    )
