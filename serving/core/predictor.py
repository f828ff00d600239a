"""The transport-free prediction core: events -> enrich -> one V2 request -> prediction events.

Both doors call :meth:`Predictor.predict`: the streaming job with a micro-batch of decoded events, the REST
gateway with one event. Nothing here imports PyFlink, FastAPI, confluent_kafka or MLServer.

Contract of :meth:`Predictor.predict` for a batch of N events:

* Every event comes back exactly once, either as a prediction event (``BatchResult.predictions``, a dict
  shaped like ``schemas/avro/prediction.avsc``) or as a :class:`Failure` carrying a :class:`DataError`
  (``BatchResult.failures``) - never both, never neither.
* Data errors are per event: a missing entity key, a rejected missing feature, a value that cannot be
  encoded, an input the model refuses (4xx; found by splitting the batch), an input the model keeps failing on
  with a 5xx while the server is healthy (a poison input, after ``poison_attempts`` tries).
* Transient errors (feature store or model server down, timeouts, model not ready) are retried with backoff
  inside the retry budget; when the budget is spent the last :class:`Retryable` is RAISED for the whole batch.
  An outage is never turned into failures: the caller backs off (stream: the task fails and Flink restarts
  from its checkpoint; REST: 503/504).
* Configuration errors (unknown model, unknown feature view) are raised at once.
* One model version answers a whole batch: the version is read once, before anything else (for a service that
  follows its registry: from the model server's rollout pointer, :mod:`vatic.serving.core.versions`) and every
  request of the batch names it. A server that does not have that version (yet) is retried as not ready, never
  sent to another version.
* A canary (``canary`` in the service config) answers the events of its share of the entities
  (:mod:`vatic.serving.core.experiments`): the batch goes to the model as one request per version, in
  parallel, and every prediction names the version that answered it.
* A shadow (``shadow``) answers every event that reaches the model, in parallel with the serving call. Its
  prediction events are in ``BatchResult.shadows`` when they came within ``shadow_wait_s`` after the serving
  answer; whatever happens to it (down, refusing, slow) the serving outcome of every event is the same as
  without a shadow. Every shadow outcome, early or late, is handed to ``on_shadow`` (the doors' metrics).
* With an inference graph (``graph`` in the service config) the model call is the graph's
  (:mod:`vatic.serving.core.graph`): every step one V2 request over the events still alive at it; a step's data
  error fails only the events it concerns (``Failure.step`` names the step, ``Failure.model_name`` its model); an
  outage or deadline of any step is raised for the batch, naming the step (``VaticError.step``). Prediction events
  list the steps that answered them (``steps``).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vatic.connectors.inference import ModelClient, model_client
from vatic.connectors.v2.types import InferenceRequest, InferenceResponse
from vatic.schemas.errors import (
    DataError,
    InputProblem,
    MissingEntityKey,
    ModelFailedOnInput,
    ModelNotFound,
    ModelNotReady,
    ModelRejected,
    ModelServerUnavailable,
    OutputProblem,
    Retryable,
    VaticError,
)
from vatic.serving.config.model import ModelSpec, ServiceConfig, step_model
from vatic.serving.core.experiments import CanaryRouter, ShadowBatch, agrees
from vatic.serving.core.retry import RetryPolicy
from vatic.serving.core.tensors import build_inputs, output_value
from vatic.serving.core.versions import FOLLOW_S, VersionFollower

#: shadow calls still running after their batch was answered; more are not started (counted as late)
MAX_LATE_SHADOWS = 64

#: 5xx answers that say the server (or what is behind it) is unavailable, whatever the input: retried as an
#: outage and never counted towards a poison verdict (an overloaded or degraded server is often still "ready")
OUTAGE_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True, slots=True)
class Failure:
    """One event that could not be predicted, and why. ``index`` is its position in the input batch."""

    index: int
    error: DataError
    attempts: int = 1
    model_response: bytes | None = None
    #: the model that was called and, in a graph, the step that called it (None: the service's model)
    model_name: str | None = None
    step: str | None = None

    @property
    def stage(self) -> str:
        return self.error.stage or "unknown"


@dataclass(slots=True)
class BatchResult:
    """Per-event outcome of one batch: every input index appears in exactly one of the two lists."""

    predictions: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    #: measurements of this batch (ms) for metrics and lineage
    enrich_ms: float | None = None
    infer_ms: float = 0.0
    model_calls: int = 0
    #: V2 requests repeated after a failed attempt (an outage answer, a timeout, a reset, a suspicious 5xx)
    model_retries: int = 0
    #: the shadow's outcome for this batch (None: no shadow, or no event reached the model)
    shadow: ShadowBatch | None = None

    @property
    def shadows(self) -> list[tuple[int, dict[str, Any]]]:
        """The shadow's prediction events (input index, event) that came within the wait; never the caller's."""
        return self.shadow.predictions if self.shadow is not None else []


@dataclass(slots=True)
class _Work:
    """One batch in flight: its events, their feature values and missing flags (by input index), where its
    outcome goes, and the serving answers so far (input index -> outputs, the version that answered)."""

    events: Sequence[Mapping[str, Any]]
    values: dict[int, dict[str, Any]]
    missing: dict[int, dict[str, str]]
    result: BatchResult
    origin: str
    received: int
    answers: dict[int, tuple[dict[str, Any], str | None]] = field(default_factory=dict)
    #: a graph's steps that answered each input (index -> [{name, model_name, model_version, infer_ms}])
    steps: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def columns(self, indexes: Sequence[int]) -> tuple[list[Mapping[str, Any]], list[Any], list[Any]]:
        """Events, feature values and missing flags of ``indexes``, as :func:`build_inputs` takes them."""
        return [self.events[i] for i in indexes], [self.values[i] for i in indexes], [self.missing[i] for i in indexes]


class Call:
    """Who answers a V2 request and where its answers go: the service's model (this class), or a graph step
    (:class:`vatic.serving.core.graph.StepCall`). ``deadline_s`` bounds each attempt."""

    def __init__(
        self, client: ModelClient, model: ModelSpec, version: str | None, deadline_s: float, step: str | None = None
    ) -> None:
        self.client = client
        self.name = model.name
        self.model = model
        self.version = version
        self.deadline_s = deadline_s
        self.step = step

    def request(self, work: _Work, indexes: list[int]) -> tuple[InferenceRequest | None, list[int], dict[int, str]]:
        """The V2 request of ``indexes`` (None when no event encodes), the indexes it carries, and the encoding
        problem of each other one (by position in ``indexes``)."""
        model = self.model
        tensors, problems = build_inputs(model, *work.columns(indexes))
        clean = [i for j, i in enumerate(indexes) if j not in problems]
        if not clean:
            return None, clean, problems
        return InferenceRequest(inputs=tuple(tensors), outputs=tuple(o.name for o in model.outputs)), clean, problems

    def answered(self, work: _Work, i: int, outputs: dict[str, Any], version: str | None) -> None:
        """Input ``i`` was answered ``outputs`` by ``version``."""
        work.answers[i] = (outputs, version)

    def failed(self, work: _Work, failure: Failure) -> None:
        """Input ``failure.index`` cannot be answered."""
        work.result.failures.append(failure)


class FeatureReader(Protocol):
    """What the core needs of a feature client (:class:`vatic.serving.core.enrich.Enricher` is one)."""

    async def lookup(
        self, events: Sequence[Mapping[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, str]], dict[int, DataError]]: ...

    async def aclose(self) -> None: ...


async def gather_all(tasks: Sequence[asyncio.Future[Any]]) -> None:
    """Wait for every task; when one fails, cancel the others, wait until they are done, then raise its error."""
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Predictor:
    """Turns events into prediction events for one service.

    ``features`` may be None for a service without Feast features. ``retry`` bounds how long transient
    errors are retried inside one :meth:`predict` call. ``poison_attempts`` is how many 5xx answers one single
    event may get, while the server answers its health check, before it is dead-lettered.
    """

    def __init__(
        self,
        config: ServiceConfig,
        *,
        inference: ModelClient,
        features: FeatureReader | None = None,
        retry: RetryPolicy | None = None,
        poison_attempts: int = 3,
        versions: VersionFollower | None = None,
        shadow_wait_s: float | None = None,
        on_shadow: Callable[[ShadowBatch], None] | None = None,
        servers: Mapping[str, ModelClient] | None = None,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        """``shadow_wait_s``: how long a batch waits for the shadow after the serving answer (default: the
        config's ``shadow.stream_wait_ms``); ``on_shadow`` receives every shadow outcome (also late ones).
        ``servers``: clients of a graph's other model servers by name (default: built from ``graph.servers``,
        an ``https://`` one verified with ``verify``); the predictor closes them."""
        if config.features is not None and features is None:
            raise ValueError(f"service {config.service} declares features: pass a feature reader")
        self.config = config
        self.inference = inference
        self.features = features
        self.retry = retry or RetryPolicy()
        self.poison_attempts = poison_attempts
        self.versions = versions
        self._entity_fields = list(config.features.entities.items()) if config.features else []
        #: event fields the model reads: carried in prediction events (``inputs``) for the drift monitor
        self._input_fields = config.event_fields()
        self.router = CanaryRouter.for_config(config)
        #: a canary named by the config (a service that follows its registry reads it from the pointer instead)
        self.canary: tuple[str, float] | None = None
        if config.canary is not None and config.canary.version is not None:
            self.canary = (config.canary.version, config.canary.weight)
        self.shadow = config.shadow
        self.shadow_name = (config.shadow.model or config.model.name) if config.shadow is not None else None
        if shadow_wait_s is None:
            shadow_wait_s = config.shadow.stream_wait_ms / 1000 if config.shadow is not None else 0.0
        self.shadow_wait_s = shadow_wait_s
        self.on_shadow = on_shadow
        #: whether the shadow's answers become prediction events (the stream writes them; REST only counts them)
        self.shadow_events = True
        self._late_shadows: set[asyncio.Task[ShadowBatch]] = set()
        #: with a graph: the clients of its other model servers, and every step's outputs (datatype, shape)
        self.servers: dict[str, ModelClient] = {}
        self.graph_outputs: dict[str, dict[str, tuple[str, list[int]]]] = {}
        #: the V2 model each model step calls (built once: every batch's requests start from it)
        self.step_models: dict[str, ModelSpec] = {}
        if config.graph is not None:
            self.graph_outputs = config.graph.produced()
            self.step_models = {step.name: step_model(step) for step in config.graph.steps if step.calls_model}
            self.servers = {
                name: servers[name] if servers and name in servers else model_client(
                    spec.url, deadline_s=config.timeout_s, verify=verify
                )
                for name, spec in config.graph.servers.items()
            }  # fmt: skip

    @classmethod
    def from_config(
        cls,
        config: ServiceConfig,
        *,
        service_dir: Path,
        model_url: str,
        redis_url: str | None = None,
        retry: RetryPolicy | None = None,
        verify: ssl.SSLContext | None = None,
    ) -> Predictor:
        """The core of one service, built the same way for every door (the streaming job, the gateway): a V2
        client of ``model_url`` (``grpc://host:port``: gRPC with raw tensors, else REST) with the service's
        deadline, the reader of the service's Feast features (its repository is found from ``service_dir``;
        ``redis_url`` replaces the repository's online store) and ``retry``; an ``https://`` model server is
        verified with ``verify`` (else the system's CAs). The predictor
        owns both clients: release them with :meth:`aclose`."""
        from vatic.serving.core.enrich import Enricher  # Feast: imported only by a service that reads features

        client = model_client(model_url, deadline_s=config.timeout_s, verify=verify)
        features = None
        if config.features is not None:
            features = Enricher.from_spec(config.features, service_dir, redis_url=redis_url)
        versions = None
        if config.uses_pointer:
            refresh = min(config.registry.refresh_s, FOLLOW_S) if config.registry.follows else FOLLOW_S
            versions = VersionFollower(client, config.model.name, refresh_s=refresh)
        return cls(config, inference=client, features=features, retry=retry, versions=versions, verify=verify)

    async def ready(self, deadline_s: float = 1.0) -> bool:
        """Whether the service can answer: its model (with a graph: every step's model, on its server) answers its
        readiness probe. An unreachable server is not ready; an unknown model raises :class:`ModelNotFound`."""
        graph = self.config.graph
        if graph is None:
            calls = [(self.inference, self.config.model.name, self.config.model.version)]
        else:
            calls = [
                (self.servers[step.server] if step.server else self.inference, step.model, step.version)
                for step in graph.steps
                if step.model is not None
            ]

        async def probe(client: ModelClient, model: str, version: str | None) -> bool:
            try:
                return await client.ready(model, version=version, deadline_s=deadline_s)
            except Retryable:
                return False

        return all(await asyncio.gather(*(probe(*call) for call in calls)))

    async def aclose(self) -> None:
        """Cancel shadow calls still running; close the model client and the feature reader."""
        for task in list(self._late_shadows):
            task.cancel()
        if self._late_shadows:
            await asyncio.gather(*self._late_shadows, return_exceptions=True)
        await self.inference.close()
        for server in self.servers.values():
            await server.close()
        if self.features is not None:
            await self.features.aclose()

    async def predict(
        self, events: Sequence[Mapping[str, Any]], *, origin: str = "STREAM", received_ms: int | None = None
    ) -> BatchResult:
        """Predict a batch; see the module docstring for the contract."""
        received = received_ms if received_ms is not None else now_ms()
        # one version per batch, read before anything else: no batch is split across versions
        version = self.config.model.version
        canary = self.canary
        if self.versions is not None:
            version = await self._pointer_version()
            if self.config.registry.follows:
                canary = self.versions.canary  # read with the version: one consistent pointer per batch
        result = BatchResult()
        alive = list(range(len(events)))

        # 1. entity keys present
        if self._entity_fields:
            for i in list(alive):
                absent = [f for _, f in self._entity_fields if events[i].get(f) in (None, "")]
                if absent:
                    result.failures.append(Failure(i, MissingEntityKey(f"entity key field(s) {absent} absent")))
                    alive.remove(i)

        # 2. enrich (one batched lookup; retried on outages)
        work = _Work(events, {i: {} for i in alive}, {i: {} for i in alive}, result, origin, received)
        alive = await self._enrich(work, alive)

        # 3. encode + 4. infer (bisecting to isolate inputs the model refuses), per version; the shadow beside
        started = time.perf_counter()
        shadow = self._start_shadow(work, alive) if alive else None
        try:
            if self.config.graph is not None:
                from vatic.serving.core.graph import GraphRun  # builds on this module's classes

                await GraphRun(self, work, alive).run()
            else:
                await self._infer_versions(work, alive, version, canary)
        except BaseException:
            if shadow is not None:
                shadow.cancel()
            raise
        result.infer_ms = (time.perf_counter() - started) * 1000

        # 5. prediction events
        for i in sorted(work.answers):
            outputs, version = work.answers[i]
            try:
                shaped = self._shaped(outputs)
            except ValueError as exc:
                result.failures.append(Failure(i, OutputProblem(str(exc))))
                continue
            result.predictions.append((i, self._prediction(work, i, shaped, version, result.infer_ms)))
        result.failures.sort(key=lambda f: f.index)
        if shadow is not None:
            await self._finish_shadow(shadow, work)
        return result

    async def _enrich(self, work: _Work, alive: list[int]) -> list[int]:
        """Read the features of ``alive`` into ``work``; returns the inputs still alive (a per-event feature
        error is that event's failure)."""
        if self.features is None or not alive:
            return alive
        started = time.perf_counter()
        batch = [work.events[i] for i in alive]
        reader = self.features
        (rows, flags, errors), _ = await self.retry.run(lambda: reader.lookup(batch))
        work.result.enrich_ms = (time.perf_counter() - started) * 1000
        survivors = []
        for j, i in enumerate(alive):
            if j in errors:
                work.result.failures.append(Failure(i, errors[j]))
            else:
                work.values[i], work.missing[i] = rows[j], flags[j]
                survivors.append(i)
        return survivors

    async def _pointer_version(self) -> str:
        """The serving version named by the rollout pointer. A pointer not read yet is "not ready" (retried):
        the server's default version would be the newest it holds, which may be a canary, a shadow or a version
        being rolled out."""
        assert self.versions is not None
        follower = self.versions

        async def read() -> str:
            version = await follower.version()
            if version is None:
                raise ModelNotReady(
                    f"model {self.config.model.name!r}: its rollout pointer has not been read yet", model=follower.model
                )
            return version

        version, _ = await self.retry.run(read)
        return version

    async def _infer_versions(
        self, work: _Work, alive: list[int], version: str | None, canary: tuple[str, float] | None
    ) -> None:
        """One request per version: the canary's share of the entities to the canary, the rest to ``version``."""
        router = self.router
        picked = []
        if canary is not None and router is not None and canary[0] != version:
            picked = [i for i in alive if router.picks(work.events[i], canary[1])]
        if not picked or canary is None:
            await self._infer(work, alive, self._model_call(version))
            return
        chosen = set(picked)
        rest = [i for i in alive if i not in chosen]
        tasks = [asyncio.ensure_future(self._infer(work, picked, self._model_call(canary[0])))]
        if rest:
            tasks.append(asyncio.ensure_future(self._infer(work, rest, self._model_call(version))))
        await gather_all(tasks)

    # -- the shadow ------------------------------------------------------------------------------------------

    def _start_shadow(self, work: _Work, alive: list[int]) -> asyncio.Task[ShadowBatch] | None:
        if self.shadow is None:
            return None
        if len(self._late_shadows) >= MAX_LATE_SHADOWS:
            if self.on_shadow is not None:
                self.on_shadow(ShadowBatch("late", error=f"{MAX_LATE_SHADOWS} shadow calls still running: skipped"))
            return None
        return asyncio.ensure_future(self._shadow_call(work, list(alive)))

    async def _shadow_call(self, work: _Work, indexes: list[int]) -> ShadowBatch:
        """One V2 call to the shadow, no retries; every error becomes the batch's ``failed`` state. The
        predictions are outputs here (``(index, outputs)``): :meth:`_shadow_events` makes them events."""
        assert self.shadow is not None
        assert self.shadow_name is not None
        started = time.perf_counter()
        try:
            request, clean, _ = self._model_call(self.shadow.version).request(work, indexes)
            if request is None:
                return ShadowBatch()
            response = await self.inference.infer(
                self.shadow_name, request, version=self.shadow.version, deadline_s=self.config.timeout_s
            )
            rows = response.split(len(clean), squeeze=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the shadow's trouble is data about the shadow, never the serving path's
            return ShadowBatch("failed", error=f"{type(exc).__name__}: {exc}")
        batch = ShadowBatch()
        for i, row in zip(clean, rows, strict=True):
            try:
                shaped = self._shaped(row)
            except ValueError:
                continue  # an answer outside the contract: not a shadow prediction
            batch.predictions.append((i, shaped))
        batch.infer_ms = (time.perf_counter() - started) * 1000
        return batch

    async def _finish_shadow(self, task: asyncio.Task[ShadowBatch], work: _Work) -> None:
        """Wait at most ``shadow_wait_s`` for the shadow; compare, build its events, report it."""
        result = work.result
        main = {i: prediction["outputs"] for i, prediction in result.predictions}
        if not task.done() and self.shadow_wait_s > 0:
            await asyncio.wait({task}, timeout=self.shadow_wait_s)
        if task.done():
            batch = self._shadow_events(task.result(), main, work)
            result.shadow = batch
            if self.on_shadow is not None:
                self.on_shadow(batch)
            return
        result.shadow = ShadowBatch("late")
        self._late_shadows.add(task)

        def late(done: asyncio.Task[ShadowBatch]) -> None:
            self._late_shadows.discard(done)
            if done.cancelled() or self.on_shadow is None:
                return
            batch = self._shadow_events(done.result(), main, work)
            if batch.state == "answered" and self.shadow_wait_s > 0:  # with no wait at all, nothing is late
                batch.state = "late"
            self.on_shadow(batch)

        task.add_done_callback(late)

    def _shadow_events(self, batch: ShadowBatch, main: Mapping[int, Mapping[str, Any]], work: _Work) -> ShadowBatch:
        if batch.state != "answered":
            return batch
        assert self.shadow is not None
        built = []
        batch.answered = len(batch.predictions)
        for i, outputs in batch.predictions:
            if i in main:
                batch.compared += 1
                batch.agreed += agrees(main[i], outputs, self.shadow.tolerance)
            if not self.shadow_events:
                continue
            built.append(
                (
                    i,
                    self._prediction(
                        work, i, outputs, self.shadow.version, batch.infer_ms, model_name=self.shadow_name
                    ),
                )
            )  # fmt: skip
        batch.predictions = built
        return batch

    # -- inference with isolation of bad inputs --------------------------------------------------------------

    def _model_call(self, version: str | None) -> Call:
        """The call of the service's model at ``version``."""
        return Call(self.inference, self.config.model, version, self.config.timeout_s)

    def _shaped(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        """One answer's outputs as the prediction event carries them; ``ValueError`` outside the contract."""
        return {spec.field: output_value(spec, outputs.get(spec.name)) for spec in self.config.model.outputs}

    async def _infer(self, work: _Work, indexes: list[int], call: Call) -> None:
        """Answer ``indexes`` with one request to ``call``; a request the model refuses is split in halves until
        the refused inputs stand alone (each then fails by itself)."""
        if not indexes:
            return
        result = work.result
        request, clean, problems = call.request(work, indexes)
        for j, problem in problems.items():
            call.failed(work, self._failure(call, indexes[j], InputProblem(problem)))
        if request is None:
            return
        try:
            response, attempts = await self._call(request, call, single=len(clean) == 1)
        except (ModelRejected, ModelFailedOnInput) as exc:
            result.model_retries += max(0, getattr(exc, "attempts", 1) - 1)
            if len(clean) == 1:
                body = getattr(exc, "body", None)
                response_body = body.encode() if isinstance(body, str) else None
                failure = self._failure(call, clean[0], exc, getattr(exc, "attempts", 1), response_body)
                call.failed(work, failure)
                return
            half = len(clean) // 2
            await self._infer(work, clean[:half], call)
            await self._infer(work, clean[half:], call)
            return
        result.model_calls += attempts
        result.model_retries += attempts - 1
        try:
            rows = response.split(len(clean), squeeze=True)
        except ValueError as exc:
            from vatic.schemas.errors import UnexpectedModelResponse

            error = UnexpectedModelResponse(str(exc), status=200, body="")
            error.step = call.step
            raise error from exc
        answered = response.model_version or call.version
        for i, row in zip(clean, rows, strict=True):
            call.answered(work, i, row, answered)

    @staticmethod
    def _failure(call: Call, index: int, error: DataError, attempts: int = 1, response: bytes | None = None) -> Failure:
        error.step = call.step
        return Failure(index, error, attempts, response, model_name=call.name, step=call.step)

    async def _call(self, request: InferenceRequest, call: Call, *, single: bool) -> tuple[InferenceResponse, int]:
        """One V2 call with retries. A 5xx answered to a request while the server is healthy is suspicious:
        after ``poison_attempts`` such answers the request is treated as bad data (the caller splits it, and a
        single event is dead-lettered). An error raised names the graph step of ``call``."""
        suspicious = 0
        model, version = call.name, call.version

        async def attempt() -> InferenceResponse:
            nonlocal suspicious
            try:
                return await call.client.infer(model, request, version=version, deadline_s=call.deadline_s)
            except ModelNotFound as exc:
                if self.versions is None or version is None:
                    raise
                # a rollout in progress: a replica behind the same address may not have loaded it yet
                raise ModelNotReady(
                    f"model {model!r} version {version!r} is not loaded here yet: {exc}", model=model
                ) from exc
            except ModelServerUnavailable as exc:
                if exc.status is None or exc.status < 500 or exc.status in OUTAGE_STATUSES:
                    raise  # unreachable, overloaded or answering "unavailable": an outage, never poison
                if not await self._server_healthy(call):
                    raise
                suspicious += 1
                if suspicious >= self.poison_attempts or not single:
                    raise ModelFailedOnInput(
                        f"model {model!r} answered {exc.status} {suspicious} time(s) while healthy: {exc.body}",
                        attempts=suspicious,
                        status=exc.status,
                        body=exc.body,
                    ) from exc
                raise

        try:
            return await self.retry.run(attempt)
        except VaticError as exc:
            exc.step = call.step
            if call.step is not None and not isinstance(exc, DataError):
                exc.message = f"step {call.step!r}: {exc.message}"
            raise

    async def _server_healthy(self, call: Call) -> bool:
        try:
            return await call.client.ready(call.name, version=call.version, deadline_s=1.0)
        except Retryable:
            return False

    # -- prediction event ------------------------------------------------------------------------------------

    def _prediction(
        self,
        work: _Work,
        i: int,
        outputs: dict[str, Any],
        version: str | None,
        infer_ms: float,
        *,
        model_name: str | None = None,
    ) -> dict[str, Any]:
        """The prediction event of input ``i`` of ``work`` answered ``outputs`` by ``version`` of ``model_name``
        (default: the service's model)."""
        event, values, missing, received = work.events[i], work.values[i], work.missing[i], work.received
        features = {}
        if self.config.features is not None:
            for ref in self.config.features.refs:
                value = values.get(ref)
                if type(value) not in _SCALARS:
                    value = _feature_value(value)
                features[ref] = {"value": value, "missing": ref in missing}
        event_time = event.get("event_time")
        return {
            "event_id": str(event.get("event_id", "")),
            "service": self.config.service,
            "origin": work.origin,
            "entity_keys": {key: str(event.get(f)) for key, f in self._entity_fields},
            "model_name": model_name or self.config.model.name,
            "model_version": version or "",
            "outputs": outputs,
            "features": features,
            "inputs": {f: _input_value(event.get(f)) for f in self._input_fields},
            "steps": work.steps.get(i, []) if model_name is None else [],
            "timings": {
                "event_time": int(event_time) if isinstance(event_time, int | float) else received,
                "received_time": received,
                "enrich_ms": work.result.enrich_ms,
                "infer_ms": infer_ms,
                "emit_time": now_ms(),
            },
        }


#: feature values that go into prediction events as they are (exact types: the per-feature fast path)
_SCALARS = frozenset({type(None), bool, int, float, str})


def _input_value(value: Any) -> Any:
    """An event field as the prediction schema's ``inputs`` carries it: a scalar, or ``None`` for anything else."""
    if type(value) in _SCALARS:
        return value
    if hasattr(value, "item"):  # NumPy scalar
        return value.item()
    return None


def _feature_value(value: Any) -> Any:
    """A feature value as the prediction schema carries it: scalars as they are, sequences as floats."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [float(v) for v in value]
    if hasattr(value, "item"):  # NumPy scalar
        return value.item()
    return str(value)
