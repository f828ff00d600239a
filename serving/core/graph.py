"""Running an inference graph (``graph:`` of the service config) over one micro-batch or request.

Contract of :meth:`GraphRun.run`, over the inputs still alive after enrichment:

* Each step runs once per batch, as one V2 request over every event that reaches it (refused inputs are isolated
  by splitting, as for a single model); steps that do not wait for each other run concurrently.
* A switch splits its events into one sub-batch per branch; the branches' answers are merged back by event.
* An event a step cannot answer (its data error) fails at that step - the failure names the step and its model -
  and no later step sees it; every other event goes on. Every input ends exactly once: answered by the output
  step (``_Work.answers``, with the steps that answered it in ``_Work.steps``) or failed.
* An outage of any step (retried inside the retry budget), a step's deadline or the graph's ``timeout_s`` is
  raised for the whole batch: the error names the step (``VaticError.step``) when one is to blame.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from vatic.connectors.inference import ModelClient
from vatic.connectors.v2.types import Datatype, InferenceRequest, Tensor, flatten
from vatic.schemas.errors import DataError, DeadlineExceeded, InputProblem, OutputProblem
from vatic.serving.config.graph import GraphSpec, StepSpec
from vatic.serving.config.model import ModelSpec
from vatic.serving.core.predictor import Call, Failure, gather_all
from vatic.serving.core.tensors import EncodingProblem, build_inputs, column_value

if TYPE_CHECKING:
    from vatic.serving.core.predictor import Predictor, _Work

#: outputs of one step per input index
Values = dict[int, dict[str, Any]]


class StepCall(Call):
    """The :class:`~vatic.serving.core.predictor.Call` of one model step: its inputs from columns and earlier
    steps' outputs, its answers kept for the steps after it."""

    def __init__(self, run: GraphRun, step: StepSpec, model: ModelSpec, client: ModelClient, deadline_s: float) -> None:
        super().__init__(client, model, step.version, deadline_s, step=step.name)
        self.run = run
        self.spec = step
        self.values: Values = {}
        self.versions: dict[int, str | None] = {}

    def request(self, work: _Work, indexes: list[int]) -> tuple[InferenceRequest | None, list[int], dict[int, str]]:
        problems: dict[int, str] = {}
        built: list[Tensor] = []
        if self.model.inputs:
            built, problems = build_inputs(self.model, *work.columns(indexes))
        clean = [i for j, i in enumerate(indexes) if j not in problems]
        if not clean:
            return None, clean, problems
        by_name = {t.name: t for t in built}
        produced = self.run.produced
        tensors = []
        for spec in self.spec.inputs:
            if spec.columns is not None:
                tensors.append(by_name[spec.name])
                continue
            step, name = spec.producer
            datatype, shape = produced[step][name]
            upstream = self.run.values[step]
            data = [v for i in clean for v in _flat(upstream[i][name])]
            tensors.append(Tensor(spec.name, Datatype(datatype), (len(clean), *shape), data, _content(spec)))
        outputs = tuple(o.name for o in self.spec.outputs)
        return InferenceRequest(inputs=tuple(tensors), outputs=outputs), clean, problems

    def answered(self, work: _Work, i: int, outputs: dict[str, Any], version: str | None) -> None:
        self.values[i] = outputs
        self.versions[i] = version

    def failed(self, work: _Work, failure: Failure) -> None:
        self.run.fail(failure)


class GraphRun:
    """One batch through the graph; see the module docstring."""

    def __init__(self, predictor: Predictor, work: _Work, alive: list[int]) -> None:
        graph = predictor.config.graph
        assert graph is not None
        self.predictor = predictor
        self.graph: GraphSpec = graph
        self.work = work
        self.alive = alive
        self.produced = predictor.graph_outputs
        self.values: dict[str, Values] = {}
        self.routes: dict[str, asyncio.Future[dict[str, list[int]]]] = {}
        self.failures: dict[int, Failure] = {}
        self.order = {step.name: n for n, step in enumerate(graph.steps)}
        self.branch_of = {branch: s.name for s in graph.steps for branch in s.branches}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def fail(self, failure: Failure) -> None:
        """The first failure of an input counts (concurrent steps may both refuse it)."""
        self.failures.setdefault(failure.index, failure)

    async def run(self) -> None:
        timeout = self.graph.timeout_s
        try:
            async with asyncio.timeout(timeout):
                await self._steps()
        except TimeoutError as exc:
            raise DeadlineExceeded(
                f"service {self.predictor.config.service!r}: the graph did not answer within its timeout_s of "
                f"{timeout:g} s",
                deadline_s=timeout or 0.0,
            ) from exc
        work = self.work
        out = self.graph.output_step.name
        for failure in self.failures.values():
            work.result.failures.append(failure)
        for i in self.alive:
            if i in self.failures:
                continue
            outputs = self.values[out].get(i)
            if outputs is None:  # the graph's contract: never reached, every input has an outcome
                work.result.failures.append(_failure(i, OutputProblem("the graph produced no answer"), out, None))
                continue
            trace = sorted(work.steps.get(i, []), key=lambda s: self.order[s["name"]])
            work.steps[i] = trace
            work.answers[i] = (outputs, "+".join(str(s["model_version"]) for s in trace))

    async def _steps(self) -> None:
        for step in self.graph.steps:
            if step.kind == "switch":
                self.routes[step.name] = asyncio.get_running_loop().create_future()
        for step in self.graph.steps:
            self.tasks[step.name] = asyncio.ensure_future(self._step(step))
        try:
            await gather_all(list(self.tasks.values()))
        except BaseException:
            for future in self.routes.values():
                future.cancel()
            raise

    async def _step(self, step: StepSpec) -> None:
        deps = [d for d in self.graph.dependencies(step) if d not in step.branches]
        if deps:
            await asyncio.gather(*(self.tasks[d] for d in deps))
        rows = [i for i in self.alive if i not in self.failures and all(i in self.values[d] for d in deps)]
        if step.name in self.branch_of:
            routed = set((await self.routes[self.branch_of[step.name]])[step.name])
            rows = [i for i in rows if i in routed]
        if step.kind == "switch":
            await self._switch(step, rows)
        elif step.calls_model:
            await self._model(step, rows)
        else:
            self._combine(step, rows)

    async def _model(self, step: StepSpec, rows: list[int]) -> None:
        predictor = self.predictor
        client = predictor.servers[step.server] if step.server else predictor.inference
        call = StepCall(
            self, step, predictor.step_models[step.name], client, step.timeout_s or predictor.config.timeout_s
        )
        started = time.perf_counter()
        await predictor._infer(self.work, rows, call)  # the core's isolation of refused inputs
        ms = (time.perf_counter() - started) * 1000
        self.values[step.name] = call.values
        for i in call.values:
            self.work.steps.setdefault(i, []).append(
                {"name": step.name, "model_name": step.model, "model_version": call.versions[i] or "", "infer_ms": ms}
            )

    def _combine(self, step: StepSpec, rows: list[int]) -> None:
        """An ensemble's mean, weighted mean or vote of its members' outputs, per input."""
        names = list(self.produced[step.name])
        weights = step.weights if step.combine == "weighted_mean" else [1.0] * len(step.members)
        combined: Values = {}
        for i in rows:
            try:
                combined[i] = {
                    name: (_vote if step.combine == "vote" else _mean)(
                        [self.values[m][i][name] for m in step.members], weights
                    )
                    for name in names
                }
            except (TypeError, ValueError) as exc:
                self.fail(_failure(i, OutputProblem(f"{step.combine} of the members' answers: {exc}"), step.name))
        self.values[step.name] = combined

    async def _switch(self, step: StepSpec, rows: list[int]) -> None:
        """Route ``rows`` to the branches (their steps wait for this), then merge what the branches answered."""
        routed: dict[str, list[int]] = {branch: [] for branch in step.branches}
        for i in rows:
            try:
                value = self._value(step, i)
                branch = next((case.to for case in step.cases if case.when.holds(value)), step.default)
            except (EncodingProblem, TypeError) as exc:
                self.fail(_failure(i, InputProblem(f"switch {step.name!r} on {step.value}: {exc}"), step.name))
                continue
            if branch is None:
                problem = InputProblem(f"no case of switch {step.name!r} holds for {step.value}={value!r}, and it has "
                                       "no default")  # fmt: skip
                self.fail(_failure(i, problem, step.name))
                continue
            routed[branch].append(i)
        self.routes[step.name].set_result(routed)
        await asyncio.gather(*(self.tasks[b] for b in step.branches))
        merged: Values = {}
        for branch in step.branches:
            merged.update(self.values[branch])
        self.values[step.name] = merged

    def _value(self, step: StepSpec, i: int) -> Any:
        assert step.value is not None
        if step.value_step is not None:
            producer, name = step.value_step
            return self.values[producer][i][name]
        work = self.work
        return column_value(step.value, work.events[i], work.values[i], work.missing[i])


def _failure(index: int, error: DataError, step: str, model: str | None = None) -> Failure:
    error.step = step
    return Failure(index, error, model_name=model, step=step)


def _flat(value: Any) -> list[Any]:
    return flatten(value) if isinstance(value, list) else [value]


def _content(spec: Any) -> Mapping[str, Any] | None:
    return {"content_type": spec.content_type} if spec.content_type else None


def _mean(values: list[Any], weights: list[float]) -> Any:
    """The weighted mean of numbers, or of equally shaped lists of numbers (element by element)."""
    if isinstance(values[0], list):
        columns = list(zip(*values, strict=True))
        return [_mean(list(column), weights) for column in columns]
    total = sum(weights)
    numbers = [math.nan if v is None else float(v) for v in values]
    return math.fsum(w * v for w, v in zip(weights, numbers, strict=True)) / total


def _vote(values: list[Any], weights: list[float]) -> Any:
    """The most frequent value; a tie goes to the value of the earliest member among the tied."""
    keys = [repr(v) for v in values]
    counts = Counter(keys)
    best = max(counts.values())
    return next(v for v, k in zip(values, keys, strict=True) if counts[k] == best)
