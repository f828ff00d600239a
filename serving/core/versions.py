"""Which model version answers: the rollout pointer a model server carries, its followers, and the contract probe.

A service whose registry section follows a stage (``registry.refresh_s`` > 0) is rolled forward and back by the
model server's rollout controller (:mod:`vatic.serving.runtimes.rollout`). The controller is the one source of
truth for the version clients call: beside the model's versions it keeps a model named ``<model>.rollout``
whose metadata ``versions`` list is ``[current, previous...]``. It moves that pointer only after the new
version is loaded and has answered :func:`probe_request` as :func:`check_probe` requires, so a client that
calls the pointer's ``current`` never reaches a version that failed to load or to keep the service's contract.

:class:`VersionFollower` is the client side, the same in the streaming job and the gateway: it reads the pointer
at most every ``refresh_s`` seconds, and :meth:`Predictor.predict` asks it once per batch, so that no batch is
split across versions and a partition's batches, started in order, switch once. The pointer also names the
canary a following service serves beside its current version (the registry's canary stage), read in the same
call. An unreachable pointer never fails a batch: the last version read is kept (before the first read the
predictor waits, as for a model that is not ready: the server's default version would be the newest it holds,
not the current one).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from vatic.connectors.inference import ModelClient
from vatic.connectors.v2.types import Datatype, InferenceRequest, InferenceResponse, Tensor
from vatic.schemas.errors import VaticError
from vatic.serving.config.base import TensorSpec
from vatic.serving.config.model import ModelSpec
from vatic.serving.core.tensors import output_value

__all__ = [
    "FOLLOW_S",
    "POINTER_SUFFIX",
    "VersionFollower",
    "check_probe",
    "pointer_canary",
    "pointer_name",
    "probe_request",
]

log = logging.getLogger(__name__)

#: the rollout pointer of model ``m`` is the model ``m.rollout`` on the same server
POINTER_SUFFIX = ".rollout"
#: rows of the contract probe
PROBE_ROWS = 2
#: the longest a client follows a stale pointer: it reads the pointer at least this often (when it has batches)
FOLLOW_S = 1.0


def pointer_name(model: str) -> str:
    """The name of the rollout pointer of ``model``."""
    return model + POINTER_SUFFIX


def _probe_value(spec: TensorSpec) -> Any:
    if spec.datatype == Datatype.BYTES:
        return "probe"
    if spec.datatype == Datatype.BOOL:
        return False
    return 0.0 if spec.datatype.value.startswith("FP") else 0


def probe_request(model: ModelSpec) -> InferenceRequest:
    """A request of :data:`PROBE_ROWS` rows shaped as the service builds them (every declared input, its declared
    datatype and width, neutral values), asking for every declared output."""
    inputs = []
    for spec in model.inputs:
        shape = (PROBE_ROWS,) if spec.squeeze else (PROBE_ROWS, len(spec.columns))
        count = PROBE_ROWS * (1 if spec.squeeze else len(spec.columns))
        parameters = {"content_type": spec.content_type} if spec.content_type else None
        inputs.append(Tensor(spec.name, spec.datatype, shape, [_probe_value(spec)] * count, parameters))
    return InferenceRequest(inputs=tuple(inputs), outputs=tuple(o.name for o in model.outputs))


def check_probe(
    model: ModelSpec, response: InferenceResponse, *, like: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Check the answer to :func:`probe_request`: every declared output is there with one row per probe row, and
    every row shapes into the prediction event as the service config says (``index``, ``labels``). With ``like``
    (the kinds the current version answered), every output must also be of the same kind. Returns the kinds
    (``{output: "float" | "int" | "str" | "bool" | "list" | "map" | "null"}``); raises ``ValueError`` saying
    what breaks the contract."""
    present = {tensor.name for tensor in response.outputs}
    absent = [spec.name for spec in model.outputs if spec.name not in present]
    if absent:
        raise ValueError(f"the answer has no output {absent} (it has {sorted(present)})")
    rows = response.split(PROBE_ROWS, squeeze=True)
    kinds: dict[str, str] = {}
    for spec in model.outputs:
        shaped = [output_value(spec, row.get(spec.name)) for row in rows]
        kinds[spec.field] = _kind(shaped[0])
    if like:
        changed = {name: f"{like[name]} -> {kind}" for name, kind in kinds.items() if like.get(name, kind) != kind}
        if changed:
            raise ValueError(f"outputs change kind from the current version: {changed}")
    return kinds


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, dict):
        return "map"
    return "list"


class VersionFollower:
    """The current version of ``model`` on the server ``client`` talks to, read from its rollout pointer at most
    every ``refresh_s`` seconds (see the module docstring). ``switches`` counts the changes seen."""

    def __init__(self, client: ModelClient, model: str, *, refresh_s: float, deadline_s: float = 2.0) -> None:
        self.client = client
        self.model = model
        self.pointer = pointer_name(model)
        self.refresh_s = refresh_s
        self.deadline_s = deadline_s
        self.current: str | None = None
        #: the canary the pointer names (version, share of the entities), None without one
        self.canary: tuple[str, float] | None = None
        self.switches = 0
        self._read_at = -float("inf")
        self._reading: asyncio.Task[None] | None = None
        self._complained = False

    async def version(self) -> str | None:
        """The version to call now: ``None`` only until the pointer has been read once."""
        if time.monotonic() - self._read_at >= self.refresh_s:
            if self._reading is None or self._reading.done():
                self._reading = asyncio.ensure_future(self._read())
            # every batch that starts while a read is in flight waits for it: batches keep their start order
            await asyncio.shield(self._reading)
        return self.current

    async def _read(self) -> None:
        try:
            metadata = await self.client.metadata(self.pointer, deadline_s=self.deadline_s)
        except (VaticError, OSError) as exc:
            if not self._complained:
                log.warning(
                    "model %s: cannot read its rollout pointer %s (%s); calling version %s until it answers",
                    self.model,
                    self.pointer,
                    exc,
                    self.current or "(none yet: waiting)",
                )
                self._complained = True
            self._read_at = time.monotonic()
            return
        self._complained = False
        self._read_at = time.monotonic()
        self.canary = pointer_canary(metadata.parameters)
        if metadata.versions and metadata.versions[0] != self.current:
            if self.current is not None:
                self.switches += 1
                log.info("model %s: switching from version %s to %s", self.model, self.current, metadata.versions[0])
            self.current = metadata.versions[0]


def pointer_canary(parameters: Mapping[str, Any] | None) -> tuple[str, float] | None:
    """The pointer's canary from its metadata parameters; None when it names none (or not in a usable form)."""
    if not parameters:
        return None
    version, weight = parameters.get("canary_version"), parameters.get("canary_weight")
    if not isinstance(version, str) or not version or not isinstance(weight, int | float):
        return None
    return (version, float(weight)) if 0 < weight < 1 else None
