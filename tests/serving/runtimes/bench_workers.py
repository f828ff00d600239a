"""Measure MLServer's ``parallel_workers`` for light models (not a test: run it by hand, it takes minutes).

    .venv/server/bin/python tests/serving/runtimes/bench_workers.py [--seconds 10] [--workers 0 1 2]

For each model (LightGBM and sklearn, the no-code tier's validating runtimes and, for reference, MLServer's own
runtime) and each ``parallel_workers`` value, a real MLServer serves the repository the settings writer wrote,
and ``wrk`` (Debian package ``wrk``) drives a closed loop of single-row REST requests at 1 and 16 connections.
Prints one row per run: requests/s and latency percentiles as wrk reports them.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.fixtures.model_server import model_server
from tests.serving.runtimes import builders
from vatic.serving.config import load_service
from vatic.serving.runtimes.repository import write_repository

LUA = """wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
"""


def _wrk(url: str, body: str, connections: int, seconds: int, scratch: Path) -> dict[str, float]:
    script = scratch / "post.lua"
    script.write_text(LUA.format(body=body), encoding="utf-8")
    threads = 1 if connections == 1 else 2
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    subprocess.run([*argv[:3], "-d2s", *argv[4:]], capture_output=True, check=True)  # warm-up
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    latency = {p: _ms(re.search(rf"\s{p}%\s+([\d.]+\w+)", out).group(1)) for p in ("50", "99")}
    return {
        "rps": rate,
        "p50_ms": latency["50"],
        "p99_ms": latency["99"],
        "errors": int(errors.group(1)) if errors else 0,
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cases", nargs="+", default=["lightgbm", "sklearn", "sklearn-mlserver"])
    parser.add_argument("--threads", type=int, default=None, help="parameters.extra.threads of the tree models")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    scratch = Path(tempfile.mkdtemp(prefix="vatic-bench-"))
    registry = scratch / "registry"
    expected = {
        "lightgbm": builders.lightgbm_model(registry, "fraud-lgb"),
        "sklearn": builders.sklearn_model(registry, "iris-sk"),
    }
    known = {
        "lightgbm": ("lightgbm", "fraud-lgb", ["predict"], True),
        "lightgbm-mlserver": ("lightgbm", "fraud-lgb", ["predict"], False),
        "sklearn": ("sklearn", "iris-sk", ["predict_proba"], True),
        "sklearn-mlserver": ("sklearn", "iris-sk", ["predict_proba"], False),
    }
    cases = [known[case] for case in args.cases]
    results = []
    try:
        for library, name, outputs, validate in cases:
            row = expected[library]["rows"][0]
            body = json.dumps({"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 5], "data": row}]})
            for workers in args.workers:
                config = builders.tabular_service(name, library, outputs, parallel_workers=workers)
                tag = f"{name}-{'vatic' if validate else 'mlserver'}-pw{workers}"
                pickled = not validate and library == "sklearn"  # MLServer's SKLearnModel loads joblib only
                if pickled:
                    config["registry"]["allow_pickle"] = True
                folder = builders.service_folder(scratch / "services" / tag, config)
                repo = scratch / "repos" / tag
                config_registry = registry
                if pickled:
                    _joblib_copy(registry, scratch / "registry-joblib", name)
                    config_registry = scratch / "registry-joblib"
                    _pin_everything(folder, config_registry / name / "1")
                written = write_repository(
                    load_service(folder),
                    repo,
                    service_dir=folder,
                    registry_root=config_registry,
                    validate_inputs=validate,
                )
                if args.threads is not None:
                    _set_threads(repo / name / "model-settings.json", args.threads)
                server = model_server(scratch / "homes" / tag, repo, name=f"bench-{tag}", parallel_workers=workers)
                server.start()
                try:
                    url = f"{server.url}/v2/models/{name}/infer"
                    check = httpx.post(url, content=body, headers={"content-type": "application/json"}, trust_env=False)
                    check.raise_for_status()
                    for connections in (1, 16):
                        result = _wrk(url, body, connections, args.seconds, scratch)
                        line = {"model": tag, "runtime": written.models[0].implementation, "c": connections, **result}
                        results.append(line)
                        print(json.dumps(line), flush=True)
                finally:
                    server.stop()
                time.sleep(1)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(results))


def _joblib_copy(registry: Path, target: Path, name: str) -> None:
    """The skops model re-saved as joblib (what MLServer's own SKLearnModel loads)."""
    if (target / name / "1" / "model.joblib").is_file():
        return
    import joblib
    import skops.io

    (target / name / "1").mkdir(parents=True)
    joblib.dump(skops.io.load(registry / name / "1" / "model.skops"), target / name / "1" / "model.joblib")


def _set_threads(settings_file: Path, threads: int) -> None:
    settings = json.loads(settings_file.read_text())
    settings["parameters"]["extra"]["threads"] = threads
    settings_file.write_text(json.dumps(settings))


def _pin_everything(service: Path, artifact: Path) -> None:
    import yaml

    from vatic.connectors.registry import file_sha256

    config = yaml.safe_load((service / "service.yaml").read_text())
    config["registry"]["artifacts"] = [
        {"path": p.name, "sha256": file_sha256(p)} for p in sorted(artifact.iterdir()) if p.is_file()
    ]
    (service / "service.yaml").write_text(yaml.safe_dump(config))


if __name__ == "__main__":
    main()
