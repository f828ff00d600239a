"""The rollout pointer as an MLServer model: ``<model>.rollout``, whose metadata ``versions`` list says which
version of ``<model>`` clients call (``[current, previous...]``, see :mod:`vatic.serving.core.versions`), and
whose metadata ``parameters`` name the canary, when there is one (``canary_version``, ``canary_weight``).

It has no artifact and answers no inference: MLServer serves it so that the pointer lives where the versions
live, is read with the V2 metadata call every client already makes, and moves atomically when the rollout
controller rewrites its ``model-settings.json`` and reloads it through the repository API.

Server environment only (imports ``mlserver``).
"""

from __future__ import annotations

from mlserver import MLModel
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse, MetadataModelResponse, Parameters

from vatic.serving.runtimes.repository import canary_of

__all__ = ["RolloutPointer"]


class RolloutPointer(MLModel):  # type: ignore[misc]  # MLModel is untyped where mypy runs (pipeline env)
    """Loads instantly; refuses inference with a 400 naming the model to call instead."""

    async def load(self) -> bool:
        return True

    async def metadata(self) -> MetadataModelResponse:
        metadata = await super().metadata()
        canary = canary_of(self.settings.parameters.extra if self.settings.parameters else None)
        if canary is not None:
            metadata.parameters = Parameters(canary_version=canary[0], canary_weight=canary[1])
        return metadata

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        versions = list(self.settings.versions or [])
        model = self.name.removesuffix(".rollout")
        raise InferenceError(
            f"{self.name} is the rollout pointer of {model}: call {model} version {versions[0] if versions else '?'}"
        )
