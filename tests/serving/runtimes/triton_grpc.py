"""tritonclient's gRPC client, run in a process of its own.

tritonclient.grpc and MLServer both register the V2 protobuf package ``inference`` in protobuf's default
descriptor pool, so the two cannot be imported into one process ("duplicate symbol
'inference.ServerLiveRequest'"). Tests that import MLServer (the runtimes) call this module's :func:`call`,
which runs :func:`main` under the server environment's interpreter and exchanges JSON.

Request: ``{"target": "host:port", "action": "infer" | "metadata", "model": ..., "inputs": [{"name", "datatype",
"data" (nested list)}], "outputs": [names] | null}``. Answer: ``{"outputs": {name: {"datatype", "shape",
"data"}}}``, ``{"metadata": {"inputs": [...], "outputs": [...]}}`` or ``{"error": {"status", "message"}}``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def call(request: dict[str, Any]) -> dict[str, Any]:
    """Run one tritonclient.grpc call in a child process (the current interpreter) and return its answer."""
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve())],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"tritonclient.grpc call failed: {done.stderr[-2000:]}")
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def _run(request: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url=request["target"])
    try:
        if request["action"] == "metadata":
            meta = client.get_model_metadata(request["model"], as_json=True)
            return {"metadata": {k: meta.get(k, []) for k in ("inputs", "outputs")}, "ready": True}
        tensors = []
        for spec in request["inputs"]:
            dtype = (
                object if spec["datatype"] == "BYTES" else {"FP32": np.float32, "FP64": np.float64}[spec["datatype"]]
            )
            array = np.asarray(spec["data"], dtype=dtype)
            tensor = grpcclient.InferInput(spec["name"], list(array.shape), spec["datatype"])
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        wanted = [grpcclient.InferRequestedOutput(n) for n in request["outputs"]] if request.get("outputs") else None
        result = client.infer(request["model"], tensors, outputs=wanted)
    except InferenceServerException as exc:
        return {"error": {"status": exc.status(), "message": exc.message()}}
    outputs = {}
    for output in result.get_response(as_json=True)["outputs"]:
        array = result.as_numpy(output["name"])
        data = [v.decode() if isinstance(v, bytes) else v for v in array.ravel().tolist()]
        outputs[output["name"]] = {"datatype": output["datatype"], "shape": list(array.shape), "data": data}
    return {"outputs": outputs}


def main() -> None:
    print(json.dumps(_run(json.loads(sys.stdin.read()))))


if __name__ == "__main__":
    main()
