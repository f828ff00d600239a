"""A real V2 model server over TLS for tests: the full-custom tier started as it is deployed,
``python -m vatic.serving.runtimes.custom model_app:app`` with ``VATIC_MODEL_TLS_CERT_FILE``/``_KEY_FILE``.

Its one model, ``iris``, takes ``input-0`` (FP64, 4 columns) and answers ``predict`` (INT64): the class 0 for a
row whose first value is below 6, else 2.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.fixtures.model_server import free_port
from tests.fixtures.pki import Pair

MODEL_APP = """
from pathlib import Path

import numpy as np

from vatic.serving.core.contract import Signature, TensorDecl
from vatic.serving.runtimes.custom import ServedModel, create_app


class Threshold:
    offload = False

    def load_artifacts(self, path):
        pass

    def signature(self):
        return Signature((TensorDecl("input-0", "FP64", (-1, 4)),), (TensorDecl("predict", "INT64", (-1,)),))

    def predict_batch(self, inputs):
        return {"predict": np.where(inputs["input-0"][:, 0] < 6, 0, 2).astype(np.int64)}


app = create_app([ServedModel("iris", Threshold(), Path("."))])
"""


class TlsModelServer:
    """The server in a subprocess on a free port; ``pair`` None serves plain HTTP."""

    def __init__(self, folder: Path, pair: Pair | None, ca_file: Path | None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model_app.py").write_text(MODEL_APP, encoding="utf-8")
        self.port = free_port()
        self.scheme = "https" if pair else "http"
        self.url = f"{self.scheme}://127.0.0.1:{self.port}"
        self.log = folder / "model-server.log"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]),
        }
        if pair is not None:
            env |= {"VATIC_MODEL_TLS_CERT_FILE": str(pair.cert), "VATIC_MODEL_TLS_KEY_FILE": str(pair.key)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vatic.serving.runtimes.custom", "model_app:app", "--port", str(self.port),
             "--log-level", "warning"],
            cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=self.log.open("wb"),
        )  # fmt: skip
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file else False
        # (without ca_file the probe does not verify: the test is about a certificate clients will refuse)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"model server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", verify=verify, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"model server did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
