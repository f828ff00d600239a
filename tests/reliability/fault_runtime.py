"""MLServer runtime of the reliability suite: an echo model with fault switches (imported only by MLServer).

Copied into the model folder by :mod:`tests.reliability.stack`; runs in the server environment. Behaviour:

* no marker: echoes every input (same name, datatype, shape, data).
* ``vatic:reject`` in a ``BYTES`` input: ``InferenceError`` (MLServer answers 400) - a model-rejected event.
* ``vatic:crash``: a ``RuntimeError`` (500) on every call - a poison event.
* ``vatic:big``: the ``tag`` output becomes a string of ``parameters.extra.big_bytes`` bytes (default 2 MB) -
  an oversized model response.
* while the file ``parameters.extra.fault_file`` exists and contains ``503``: every call answers 503
  (the server is up but failing for a while).
"""

from __future__ import annotations

import os
from typing import Any

from mlserver import MLModel
from mlserver.errors import InferenceError, MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput

REJECT = "vatic:reject"
CRASH = "vatic:crash"
BIG = "vatic:big"


class FaultModel(MLModel):
    async def load(self) -> bool:
        extra = (self.settings.parameters.extra if self.settings.parameters else None) or {}
        self._fault_file = str(extra.get("fault_file") or "")
        self._big = int(extra.get("big_bytes") or 2_000_000)
        return True

    def _failing(self) -> bool:
        if not self._fault_file or not os.path.exists(self._fault_file):
            return False
        try:
            with open(self._fault_file, encoding="utf-8") as handle:
                return "503" in handle.read()
        except OSError:
            return False

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        if self._failing():
            raise MLServerError("injected outage: 503 while the fault file exists", status_code=503)
        markers = _markers(payload)
        if REJECT in markers:
            raise InferenceError(f"input carries {REJECT}")
        if CRASH in markers:
            raise RuntimeError(f"input carries {CRASH}")
        outputs = []
        for tensor in payload.inputs:
            data: Any = tensor.data
            if BIG in markers and tensor.name == "tag":
                data = [("x" * self._big) if _has(item, BIG) else item for item in _flat(tensor.data.root)]
            outputs.append(ResponseOutput(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape, data=data))
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=outputs)


def _flat(data: Any) -> list[Any]:
    if isinstance(data, (list, tuple)):
        return [leaf for item in data for leaf in _flat(item)]
    return [data]


def _has(item: Any, marker: str) -> bool:
    text = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
    return marker in text


def _markers(payload: InferenceRequest) -> set[str]:
    found: set[str] = set()
    for tensor in payload.inputs:
        if str(getattr(tensor.datatype, "value", tensor.datatype)) == "BYTES":
            for item in _flat(tensor.data.root):
                text = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
                found.update(m for m in (REJECT, CRASH, BIG) if m in text)
    return found
