"""The ``comet`` registry backend, through the real ``comet_ml`` client, against RECORDED HTTP exchanges.

This is a recorded-HTTP fake, because Comet's cloud cannot be reached from where these tests run. A small HTTP
server on 127.0.0.1 replays ``tests/fixtures/comet/exchanges.json`` (see the README there) and the real comet_ml
client is pointed at it through its own setting (``COMET_URL_OVERRIDE``, given as the backend's ``url``).

What it proves: the backend drives comet_ml's public ``API().get_model`` / ``Model`` calls correctly; the exact
requests comet_ml 3.58.8 sends for them are the recorded ones (an unrecorded request fails the test); resolution
by version, by status, by tag and "latest" picks the right version; files land through comet_ml's real download
path (threads, streaming) and the shared ``fetch`` verifies sha256 pins on them; 401, unknown model/version/stage,
503 (after comet_ml's own retries), a refused connection and a failed file download map onto the error taxonomy;
hostile asset names are refused before anything is written; the API key never appears in messages or logs.

What it does not prove: that comet.com answers exactly like these hand-written responses (field names follow
comet_ml's source and docstrings, error status codes and messages are assumptions), S3/GCS direct downloads,
or behaviour of Comet versions other than the recorded one.

Needs the model-server environment (comet-ml is not installed in the pipeline one).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from vatic.connectors.registry import ArtifactPin, CometRegistry, fetch_from_spec, open_registry, registry_from_spec
from vatic.connectors.registry.comet import IMPORT_DEFAULTS
from vatic.schemas.errors import ArtifactRejected, ConfigError, ModelNotFound, Retryable, ServiceUnavailable
from vatic.serving.config.model import RegistrySpec

# As the backend does before comet_ml's first import, and this module imports it first (at collection): without
# them comet_ml would install its auto-logging import hooks, and the MLflow tests' runs would become Comet
# experiments written to ./.cometml-runs.
for _name, _value in IMPORT_DEFAULTS.items():
    os.environ.setdefault(_name, _value)
pytest.importorskip("comet_ml", reason="comet-ml is installed only in the model-server environment (.venv/server)")

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "comet"
RECORDING: dict[str, Any] = json.loads((FIXTURES / "exchanges.json").read_text())
API_KEY: str = RECORDING["api_key"]
WORKSPACE: str = RECORDING["workspace"]
ASSETS = FIXTURES / "assets" / "fraud-detector"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class RecordedComet(ThreadingHTTPServer):
    """Replays the recorded exchanges; remembers every request and every unrecorded one."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.exchanges = RECORDING["exchanges"]
        self.seen: list[tuple[str, dict[str, str], int]] = []
        self.unmatched: list[str] = []
        #: path prefix -> name of a canned failure (``outage``) answered instead of the recording
        self.failing: dict[str, str] = {}
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/clientlib/"

    def count(self, path: str) -> int:
        with self.lock:
            return sum(1 for seen_path, _, _ in self.seen if seen_path == path)

    def answer(self, method: str, path: str, query: dict[str, str], key: str | None) -> dict[str, Any]:
        for prefix, failure in self.failing.items():
            if path.startswith(prefix):
                return RECORDING[failure]
        if path.startswith("/api/rest/") and key != API_KEY:
            return RECORDING["unauthorized"]
        for exchange in self.exchanges:
            request = exchange["request"]
            if request["method"] == method and request["path"] == path and request["query"] == query:
                return exchange["response"]
        with self.lock:
            self.unmatched.append(f"{method} {path} {query}")
        return {"status": 404, "json": {"msg": "no recorded exchange", "code": 404}}


class _Handler(BaseHTTPRequestHandler):
    server: RecordedComet
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        raw = parse_qs(parts.query, keep_blank_values=True)
        query = {name: values[0] if len(values) == 1 else values for name, values in raw.items()}
        response = self.server.answer("GET", parts.path, query, self.headers.get("Authorization"))
        with self.server.lock:
            self.server.seen.append((parts.path, query, response["status"]))
        if "file" in response:
            body = (FIXTURES / response["file"]).read_bytes()
        elif "json" in response:
            body = json.dumps(response["json"]).encode()
        else:
            body = response["text"].encode()
        headers = {"Content-Type": "application/json", **response.get("headers", {})}
        self.send_response(response["status"])
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def comet(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordedComet]:
    """The replaying server; comet_ml retries without sleeping, and no local Comet config is read."""
    monkeypatch.setenv("COMET_API_KEY", API_KEY)
    monkeypatch.setenv("COMET_HTTP_SESSION_RETRY_TOTAL", "2")
    monkeypatch.setenv("COMET_HTTP_SESSION_RETRY_BACKOFF_FACTOR", "0")
    monkeypatch.delenv("COMET_URL_OVERRIDE", raising=False)
    server = RecordedComet()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert server.unmatched == [], "comet_ml sent requests that are not in the recording"


@pytest.fixture
def registry(comet: RecordedComet) -> CometRegistry:
    return CometRegistry(WORKSPACE, url=comet.url)


def test_open_registry_by_name(comet: RecordedComet) -> None:
    registry = open_registry("comet", workspace=WORKSPACE, url=comet.url)
    assert isinstance(registry, CometRegistry)
    assert registry.backend == "comet"
    assert API_KEY not in repr(registry)


def test_resolve_by_version(registry: CometRegistry) -> None:
    model = registry.resolve("fraud-detector:1.9.0")
    assert (model.name, model.version, model.stage) == ("fraud-detector", "1.9.0", None)
    assert model.location == f"comet://{WORKSPACE}/fraud-detector/1.9.0"


def test_resolve_by_status_takes_the_newest_version_in_it(registry: CometRegistry) -> None:
    # 1.0.0 and 1.9.0 are both Production; 1.9.0 is newer (and 1.10.0 newer still, but Staging)
    model = registry.resolve("fraud-detector@Production")
    assert (model.version, model.stage) == ("1.9.0", "Production")
    assert registry.resolve("fraud-detector@Staging").version == "1.10.0"


def test_resolve_by_tag(registry: CometRegistry) -> None:
    assert registry.resolve("fraud-detector@canary").version == "1.10.0"
    assert registry.resolve("fraud-detector@baseline").version == "1.0.0"


def test_latest_and_versions_use_semantic_order(registry: CometRegistry) -> None:
    assert registry.versions("fraud-detector") == ["0.0.1-evil", "0.9.0", "1.0.0", "1.9.0", "1.10.0", "2.0.0-rc1"]
    assert registry.resolve("fraud-detector").version == "2.0.0-rc1"


def test_fetch_downloads_the_files_and_checks_pins(registry: CometRegistry, tmp_path: Path) -> None:
    pins = [
        ArtifactPin(_sha(ASSETS / "1.9.0" / "model.txt"), "model.txt"),
        ArtifactPin(_sha(ASSETS / "1.9.0" / "model-settings.json"), "model-settings.json"),
    ]
    model = registry.fetch("fraud-detector@Production", tmp_path / "served", pins=pins)
    assert (model.version, model.stage) == ("1.9.0", "Production")
    assert sorted(model.files) == ["model-settings.json", "model.txt"]
    for name in model.files:
        assert (model.path / name).read_bytes() == (ASSETS / "1.9.0" / name).read_bytes()

    lightgbm = pytest.importorskip("lightgbm")
    booster = lightgbm.Booster(model_file=str(model.path / "model.txt"))
    assert booster.num_trees() == 3


def test_fetch_keeps_nested_asset_paths(registry: CometRegistry, tmp_path: Path) -> None:
    model = registry.fetch("fraud-detector@canary", tmp_path / "served")
    assert sorted(model.files) == ["model-settings.json", "model.txt", "thresholds/fraud.json"]
    assert model.files["thresholds/fraud.json"] == _sha(ASSETS / "1.10.0" / "thresholds" / "fraud.json")


def test_a_wrong_pin_leaves_nothing_at_the_destination(registry: CometRegistry, tmp_path: Path) -> None:
    with pytest.raises(ArtifactRejected) as info:
        registry.fetch("fraud-detector:1.9.0", tmp_path / "served", pins=[ArtifactPin("0" * 64, "model.txt")])
    assert info.value.reason == "digest_mismatch"
    assert info.value.actual == _sha(ASSETS / "1.9.0" / "model.txt")
    assert list(tmp_path.iterdir()) == []


def test_unknown_model_version_and_stage_are_config_errors(registry: CometRegistry) -> None:
    with pytest.raises(ModelNotFound, match="no-such-model") as info:
        registry.resolve("no-such-model")
    assert isinstance(info.value, ConfigError)
    assert "was not found in workspace" in str(info.value)
    with pytest.raises(ModelNotFound, match=r"9\.9\.9"):
        registry.resolve("fraud-detector:9.9.9")
    with pytest.raises(ModelNotFound, match="no version with status or tag 'Archived'"):
        registry.resolve("fraud-detector@Archived")


def test_a_refused_api_key_is_a_config_error_that_never_shows_the_key(
    comet: RecordedComet, caplog: pytest.LogCaptureFixture
) -> None:
    wrong_key = "wRoNgKeYwRoNgKeYwRoNgKeY1"
    registry = CometRegistry(WORKSPACE, url=comet.url, api_key=wrong_key)
    with caplog.at_level(logging.DEBUG), pytest.raises(ConfigError) as info:
        registry.resolve("fraud-detector:1.9.0")
    assert not isinstance(info.value, Retryable)
    assert "HTTP 401" in str(info.value)
    assert "COMET_API_KEY" in str(info.value)
    assert info.value.__cause__ is None  # the client's exception (it carries the key) is not chained
    for text in [str(info.value), repr(registry), caplog.text]:
        assert wrong_key not in text
        assert API_KEY not in text
    assert comet.count("/api/rest/v2/registry-model/compact-details") == 1  # 401 is not retried


def test_503_is_retryable_after_comet_ml_retried(comet: RecordedComet, registry: CometRegistry) -> None:
    comet.failing["/api/rest/"] = "outage"
    with pytest.raises(ServiceUnavailable, match="HTTP 503") as info:
        registry.resolve("fraud-detector@Production")
    assert isinstance(info.value, Retryable)
    assert info.value.service == "comet"
    # COMET_HTTP_SESSION_RETRY_TOTAL=2: the first try and two retries
    assert comet.count("/api/rest/v2/registry-model/compact-details") == 3
    comet.failing.clear()
    assert registry.resolve("fraud-detector@Production").version == "1.9.0"  # the same registry recovers


def test_a_failed_file_download_is_retryable_and_leaves_nothing(
    comet: RecordedComet, registry: CometRegistry, tmp_path: Path
) -> None:
    comet.failing["/api/rest/v2/experiment/asset/get-asset"] = "outage"
    with pytest.raises(ServiceUnavailable, match="HTTP 503"):
        registry.fetch("fraud-detector:1.9.0", tmp_path / "served")
    assert list(tmp_path.iterdir()) == []
    comet.failing.clear()
    assert registry.fetch("fraud-detector:1.9.0", tmp_path / "served").version == "1.9.0"


def test_nobody_listening_is_retryable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COMET_API_KEY", API_KEY)
    monkeypatch.setenv("COMET_HTTP_SESSION_RETRY_TOTAL", "0")
    with socket.socket() as sock:  # a port that was free a moment ago, with nothing listening now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    registry = CometRegistry(WORKSPACE, url=f"http://127.0.0.1:{port}/clientlib/")
    with pytest.raises(ServiceUnavailable, match="version check") as info:
        registry.fetch("fraud-detector:1.9.0", tmp_path / "served")
    assert isinstance(info.value, Retryable)
    assert list(tmp_path.iterdir()) == []


def test_a_hostile_asset_name_is_refused_before_downloading(
    comet: RecordedComet, registry: CometRegistry, tmp_path: Path
) -> None:
    with pytest.raises(ArtifactRejected) as info:
        registry.fetch("fraud-detector:0.0.1-evil", tmp_path / "deep" / "served")
    assert info.value.reason == "path_escape"
    assert comet.count("/api/rest/v2/experiment/asset/get-asset") == 0
    assert not (tmp_path / "escaped.txt").exists()
    assert list((tmp_path / "deep").iterdir()) == []


def test_an_asset_comet_ml_skips_makes_the_fetch_fail(registry: CometRegistry, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"did not download \['weights.bin'\]"):
        registry.fetch("fraud-detector:0.9.0", tmp_path / "served")
    assert list(tmp_path.iterdir()) == []


def test_the_url_override_is_scoped_to_the_backend_calls(comet: RecordedComet, registry: CometRegistry) -> None:
    registry.resolve("fraud-detector:1.9.0")
    assert "COMET_URL_OVERRIDE" not in os.environ


def test_the_backend_imports_comet_ml_without_auto_logging_or_error_tracking() -> None:
    script = (
        "import os, sys\n"
        "from vatic.connectors.registry import comet\n"
        "comet._comet_ml()\n"
        "from comet_ml.error_tracking import api\n"
        "finders = [type(f).__name__ for f in sys.meta_path]\n"
        "assert 'CometModuleFinder' not in finders, finders\n"
        "assert not api.enabled_in_config()\n"
        "print(os.environ['COMET_DISABLE_AUTO_LOGGING'], os.environ['COMET_ERROR_TRACKING_ENABLE'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in IMPORT_DEFAULTS}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "false"]


def test_from_the_service_config(comet: RecordedComet, tmp_path: Path) -> None:
    spec = RegistrySpec(
        backend="comet",
        uri=comet.url,
        workspace=WORKSPACE,
        model="fraud-detector",
        stages=["Staging", "Production"],  # the newest of both: 1.10.0 (Staging)
        artifacts=[{"path": "model.txt", "sha256": _sha(ASSETS / "1.10.0" / "model.txt")}],
    )
    registry = registry_from_spec(spec, service_dir=tmp_path)
    assert isinstance(registry, CometRegistry)
    model = fetch_from_spec(spec, tmp_path / "models" / "fraud", service_dir=tmp_path, default_name="fraud")
    assert (model.version, model.stage) == ("1.10.0", "Staging")
    assert model.path == tmp_path / "models" / "fraud"
    assert (model.path / "thresholds" / "fraud.json").is_file()
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["fraud"]
