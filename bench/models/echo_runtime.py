"""An MLServer runtime that answers every input back as an output of the same name, datatype and shape: the
model of the wire-format benchmark (``bench/doors.py``), where only the doors' encodings differ."""

from __future__ import annotations

from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput


class EchoModel(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        outputs = [ResponseOutput(name=t.name, datatype=t.datatype, shape=t.shape, data=t.data) for t in payload.inputs]
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=outputs)
