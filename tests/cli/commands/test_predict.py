"""``vatic predict`` errors that need no server: one line, exit code 2 (the happy path runs against real
workspaces in test_init_workspace.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

VATIC = str(Path(sys.executable).parent / "vatic")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_gateway_is_one_line():
    url = f"http://127.0.0.1:{_closed_port()}"
    done = subprocess.run([VATIC, "predict", "nope", "--data", "{}", "--url", url], capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith(f"vatic: cannot reach the gateway at {url}")
    assert "vatic workspace up" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_data_must_be_a_json_object(tmp_path):
    for data, message in (("{nope", "--data is not JSON"), ("[1, 2]", "--data must be a JSON object")):
        done = subprocess.run([VATIC, "predict", "x", "--data", data, "--url", "http://127.0.0.1:9"],
                              capture_output=True, text=True, check=False)  # fmt: skip
        assert done.returncode == 2
        assert message in done.stderr


def test_data_from_a_file_and_the_url_from_the_environment(tmp_path):
    body = tmp_path / "event.json"
    body.write_text('{"f0": 1}', encoding="utf-8")
    url = f"http://127.0.0.1:{_closed_port()}"
    done = subprocess.run([VATIC, "predict", "x", "--data", f"@{body}"], capture_output=True, text=True, check=False,
                          env={"PATH": "/usr/bin:/bin", "VATIC_GATEWAY_URL": url})  # fmt: skip
    assert done.returncode == 2
    assert f"cannot reach the gateway at {url}" in done.stderr
