"""``graph:`` - an inference graph: several models answer one event, on both paths.

A graph is a list of named steps; the prediction is the outputs of its ``output`` step (the last one listed by
default), read by ``model.outputs`` as a single model's would be.

* ``kind: model`` (the default): one V2 call to ``model`` (``version``) on a model server: the service's own, or one
  named in ``servers``. Its ``inputs`` are built from event fields and features (``columns``, as ``model.inputs``)
  or taken from an earlier step's output (``from: <step>.<tensor>``, renamed to the input's ``name``: Seldon's
  tensorMap). Steps that do not read each other run concurrently.
* ``kind: ensemble``: its ``members`` (model steps) answer the same events; the tensors they all output are
  combined per event by ``mean``, ``weighted_mean`` (``weights``) or ``vote`` (the most frequent value, ties to the
  earlier member), or by a combiner model (``combine: model``: the step is then also a model step whose inputs
  read the members' outputs).
* ``kind: switch``: each event goes to exactly one branch: the first of ``cases`` whose condition holds for the
  value ``value`` names (an event field, a feature or ``<step>.<tensor>``), else ``default``. Branches are model steps
  with the same outputs; the switch outputs them, merged back in event order. An event no branch takes is a data
  error of the switch.

``timeout_s`` of a step bounds each of its calls; ``timeout_s`` of the graph bounds a whole micro-batch (or
request). Both are outages when exceeded (retried, then raised), never a dead letter.

Every reference is checked when the config is loaded; a problem names the step's line (see
:func:`vatic.serving.config.base.at`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from vatic.connectors.v2.types import Datatype
from vatic.serving.config.base import Section, TensorSpec, at

STEP_NAME = r"^[A-Za-z0-9_-]+$"
NUMERIC = frozenset({"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "BOOL"})


class StepInput(Section):
    """One V2 input of a step: built from ``columns`` (as ``model.inputs``) or taken ``from`` an earlier step."""

    model_config = {**Section.model_config, "populate_by_name": True}

    name: str = Field(description="the V2 input name the step's model expects")
    columns: list[str] | None = Field(
        None, min_length=1, description="event fields, feature refs or '<ref>#missing' flags (as model.inputs)"
    )
    source: str | None = Field(
        None,
        alias="from",
        pattern=r"^[A-Za-z0-9_-]+\.[^.]+$",
        description="'<step>.<tensor>': an earlier step's output, passed under this input's name",
    )
    datatype: Datatype | None = Field(
        None, description="V2 datatype (columns: default FP32; from: must equal the producer's, which is the default)"
    )
    shape: list[int] | None = Field(
        None, description="from: the per-event shape expected of the producer's output (checked at load)"
    )
    squeeze: bool = Field(False, description="columns: shape [N] instead of [N, 1] for a single column")
    content_type: str | None = Field(None, description="MLServer content type parameter (e.g. 'str', 'np')")
    encodings: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="columns: categorical event fields to numbers (as model.inputs)"
    )

    @model_validator(mode="after")
    def _one_source(self) -> StepInput:
        if (self.columns is None) == (self.source is None):
            raise ValueError("a step input has either columns (event fields, features) or from: <step>.<tensor>")
        if self.source is not None and (self.squeeze or self.encodings):
            raise ValueError("squeeze and encodings apply to columns, not to a tensor taken from another step")
        if self.columns is not None and self.shape is not None:
            raise ValueError("shape applies to a tensor taken from another step; columns make [N, len(columns)]")
        if self.columns is not None:
            self.tensor()  # TensorSpec's own checks (squeeze, encodings)
        return self

    def tensor(self) -> TensorSpec:
        """This input as a :class:`TensorSpec` (``columns`` inputs only)."""
        assert self.columns is not None
        return TensorSpec(
            name=self.name,
            datatype=self.datatype or Datatype.FP32,
            columns=self.columns,
            squeeze=self.squeeze,
            content_type=self.content_type,
            encodings=self.encodings,
        )

    @property
    def producer(self) -> tuple[str, str]:
        """``(step, tensor)`` of a ``from`` input."""
        assert self.source is not None
        step, tensor = self.source.split(".", 1)
        return step, tensor


class StepOutput(Section):
    """One V2 output of a step, per event: ``datatype`` and ``shape`` (``[]`` a scalar, ``[384]`` a vector)."""

    name: str = Field(description="the V2 output name the step's model answers")
    datatype: Datatype = Field(Datatype.FP32, description="V2 datatype of the output")
    shape: list[int] = Field(default_factory=list, description="per-event shape ([] for one value per event)")


class Condition(Section):
    """One comparison of a switch case: exactly one of the operators."""

    model_config = {**Section.model_config, "populate_by_name": True}

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    eq: float | str | bool | None = None
    ne: float | str | bool | None = None
    within: list[float | str | bool] | None = Field(None, alias="in", description="one of these values")

    @model_validator(mode="after")
    def _one_operator(self) -> Condition:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("a condition has exactly one of gt, ge, lt, le, eq, ne, in (e.g. when: {gt: 500})")
        return self

    def holds(self, value: Any) -> bool:
        """Whether ``value`` satisfies the comparison; ``TypeError`` when it cannot be compared."""
        if self.within is not None:
            return value in self.within
        if self.eq is not None:
            return bool(value == self.eq)
        if self.ne is not None:
            return bool(value != self.ne)
        if value is None or isinstance(value, str | bytes | list | dict):
            raise TypeError(f"{value!r} is not a number")
        number = float(value)
        if self.gt is not None:
            return number > self.gt
        if self.ge is not None:
            return number >= self.ge
        if self.lt is not None:
            return number < self.lt
        assert self.le is not None
        return number <= self.le


class Case(Section):
    when: Condition = Field(description="the condition on the switch's value, e.g. {gt: 500}")
    to: str = Field(pattern=STEP_NAME, description="the branch step that answers the events it holds for")


class StepSpec(Section):
    """One step of the graph; see the module docstring for the kinds."""

    name: str = Field(pattern=STEP_NAME, description="step name (letters, digits, '-', '_'), unique in the graph")
    kind: Literal["model", "ensemble", "switch"] = "model"
    model: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$", description="model name on its V2 server")
    version: str | None = Field(None, description="model version (None: the server's default)")
    server: str | None = Field(None, description="a name of graph.servers (default: the service's model server)")
    library: Literal["sklearn", "xgboost", "lightgbm"] | None = Field(
        None, description="on the service's model server: MLServer's no-code runtime of this library"
    )
    implementation: str | None = Field(
        None, description="on the service's model server: a low-code runtime 'module.Class' (default: serving's)"
    )
    registry_model: str | None = Field(
        None,
        description="on the service's model server: the registry model of its artifact (default: model); the "
        "version is the step's version, else what the service's registry section names",
    )
    inputs: list[StepInput] = Field(default_factory=list, description="the V2 inputs of the step's model")
    outputs: list[StepOutput] = Field(
        default_factory=list, description="model: the outputs it answers; ensemble: the tensors to combine"
    )
    timeout_s: float | None = Field(None, gt=0, le=600, description="deadline of each call of this step")
    members: list[str] = Field(default_factory=list, description="ensemble: the model steps that answer together")
    combine: Literal["mean", "weighted_mean", "vote", "model"] | None = Field(
        None, description="ensemble: how the members' outputs become one"
    )
    weights: list[float] = Field(default_factory=list, description="ensemble weighted_mean: one weight per member")
    value: str | None = Field(
        None, description="switch: what the cases test: an event field, a feature ref or '<step>.<tensor>'"
    )
    cases: list[Case] = Field(default_factory=list, description="switch: conditions and their branch steps, in order")
    default: str | None = Field(None, pattern=STEP_NAME, description="switch: the branch when no case holds")

    @model_validator(mode="after")
    def _kind_fields(self) -> StepSpec:
        calls = self.kind == "model" or self.combine == "model"
        if calls:
            if not self.model:
                raise ValueError(f"step {self.name!r} calls a model: add model: <name on the model server>")
            if not self.inputs or not self.outputs:
                raise ValueError(f"step {self.name!r} calls a model: list its inputs and outputs")
            if self.library and self.implementation:
                raise ValueError(f"step {self.name!r}: library (no-code) or implementation (low-code), not both")
            if self.server and (self.library or self.implementation or self.registry_model):
                raise ValueError(
                    f"step {self.name!r} runs on server {self.server!r}, which serves its own models: remove library, "
                    "implementation and registry_model"
                )
        elif self.model or self.inputs or self.version or self.server or self.library or self.implementation:
            raise ValueError(f"a {self.kind} step has no model of its own: remove model, version, server and inputs")
        if self.kind != "ensemble" and (self.members or self.combine or self.weights):
            raise ValueError("members, combine and weights belong to an ensemble step (kind: ensemble)")
        if self.kind != "switch" and (self.value or self.cases or self.default):
            raise ValueError("value, cases and default belong to a switch step (kind: switch)")
        if self.kind == "ensemble":
            if len(self.members) < 2:
                raise ValueError("an ensemble needs at least two members (model steps)")
            if len(set(self.members)) != len(self.members):
                raise ValueError("an ensemble lists each member once")
            if self.combine is None:
                raise ValueError("an ensemble needs combine: mean, weighted_mean, vote or model")
            if self.combine == "weighted_mean":
                if len(self.weights) != len(self.members) or sum(self.weights) <= 0 or min(self.weights) < 0:
                    raise ValueError("weighted_mean needs one weight >= 0 per member, in members order, not all 0")
            elif self.weights:
                raise ValueError("weights apply to combine: weighted_mean")
        if self.kind == "switch":
            if not self.value or not self.cases:
                raise ValueError("a switch needs value: <what the cases test> and at least one case")
            if self.timeout_s is not None:
                raise ValueError("a switch calls no model: put timeout_s on its branches")
        return self

    @property
    def branches(self) -> list[str]:
        """A switch's branch steps, cases first, without repeats."""
        names = [case.to for case in self.cases] + ([self.default] if self.default else [])
        return list(dict.fromkeys(names))

    @property
    def value_step(self) -> tuple[str, str] | None:
        """``(step, tensor)`` when a switch tests an earlier step's output (``value: <step>.<tensor>``)."""
        if self.value is None or ":" in self.value or "." not in self.value:
            return None
        step, tensor = self.value.split(".", 1)
        return step, tensor

    @property
    def calls_model(self) -> bool:
        return self.kind == "model" or self.combine == "model"


class ServerSpec(Section):
    """A V2 model server some steps call (beside the service's own)."""

    url: str = Field(
        pattern=r"^(https?://[^\s/]+|grpc://[^\s/:]+:[0-9]+/?$)",
        description="its V2 REST root (http://embedder:8080) or gRPC address (grpc://embedder:8081: raw tensors)",
    )


class GraphSpec(Section):
    """The steps, which one answers, the servers beyond the service's own, and the whole graph's deadline."""

    steps: list[StepSpec] = Field(min_length=1, description="the steps, each named once")
    output: str | None = Field(None, description="the step whose outputs model.outputs read (default: the last)")
    timeout_s: float | None = Field(
        None, gt=0, le=600, description="deadline of the whole graph per micro-batch or request (default: none)"
    )
    servers: dict[str, ServerSpec] = Field(default_factory=dict, description="other model servers, by name")

    @model_validator(mode="after")
    def _references(self) -> GraphSpec:
        index: dict[str, int] = {}
        for i, step in enumerate(self.steps):
            if step.name in index:
                raise at(f"steps.{i}.name", f"step {step.name!r} is already step {index[step.name]}: rename one")
            index[step.name] = i
        if self.output is not None and self.output not in index:
            raise at("output", f"unknown step {self.output!r}; steps: {', '.join(index)}")
        owner: dict[str, str] = {}  # branch step -> its switch
        for i, step in enumerate(self.steps):
            self._check_step(i, step, index, owner)
        produced = self._produced(index)
        for i, step in enumerate(self.steps):
            for j, tensor in enumerate(step.inputs):
                if tensor.source is not None:
                    self._check_from(f"steps.{i}.inputs.{j}", tensor, produced, owner, step.name)
            if step.value_step is not None:
                producer, name = step.value_step
                if producer not in index:
                    raise at(f"steps.{i}.value", f"unknown step {producer!r}; steps: {', '.join(index)}")
                if name not in produced[producer]:
                    raise at(f"steps.{i}.value", _not_produced(producer, name, produced))
        self._check_cycles(index)
        self._check_reach(index)
        return self

    def _check_step(self, i: int, step: StepSpec, index: dict[str, int], owner: dict[str, str]) -> None:
        steps = ", ".join(index)
        if step.server is not None and step.server not in self.servers:
            known = ", ".join(self.servers) or "none declared"
            raise at(f"steps.{i}.server", f"unknown server {step.server!r} (graph.servers: {known})")
        if step.timeout_s is not None and self.timeout_s is not None and step.timeout_s > self.timeout_s:
            raise at(f"steps.{i}.timeout_s", f"{step.timeout_s:g} s is longer than the graph's {self.timeout_s:g} s")
        for field, names in (("members", step.members), ("cases", step.branches)):
            for name in names:
                if name not in index:
                    raise at(f"steps.{i}.{field}", f"unknown step {name!r}; steps: {steps}")
                if name == step.name:
                    raise at(f"steps.{i}.{field}", f"step {name!r} cannot be its own {field[:-1]}")
                if self.steps[index[name]].kind != "model":
                    raise at(f"steps.{i}.{field}", f"{name!r} is a {self.steps[index[name]].kind} step: only model "
                             "steps answer here")  # fmt: skip
        for name in step.branches:
            if name in owner:
                raise at(f"steps.{i}.cases", f"step {name!r} is already a branch of switch {owner[name]!r}")
            owner[name] = step.name

    def _produced(self, index: dict[str, int]) -> dict[str, dict[str, tuple[str, list[int]]]]:
        """Every step's outputs: ``{step: {tensor: (datatype, shape)}}``; checks ensembles and switches agree."""
        produced: dict[str, dict[str, tuple[str, list[int]]]] = {}
        for step in self.steps:  # model steps first: ensembles and switches read theirs
            if step.kind == "model":
                produced[step.name] = {o.name: (o.datatype.value, o.shape) for o in step.outputs}
        for i, step in enumerate(self.steps):
            if step.kind == "ensemble" and step.combine == "model":
                produced[step.name] = {o.name: (o.datatype.value, o.shape) for o in step.outputs}
            elif step.kind == "ensemble":
                produced[step.name] = self._combined(i, step, produced)
            elif step.kind == "switch":
                produced[step.name] = self._merged(i, step, produced)
        return produced

    def _combined(
        self, i: int, step: StepSpec, produced: dict[str, dict[str, tuple[str, list[int]]]]
    ) -> dict[str, tuple[str, list[int]]]:
        first = produced[step.members[0]]
        names = [o.name for o in step.outputs] or [n for n in first if all(n in produced[m] for m in step.members)]
        if not names:
            raise at(f"steps.{i}.members", f"the members of {step.name!r} have no output in common to combine")
        out: dict[str, tuple[str, list[int]]] = {}
        for name in names:
            kinds = {m: produced[m].get(name) for m in step.members}
            absent = [m for m, kind in kinds.items() if kind is None]
            if absent:
                raise at(f"steps.{i}.outputs", f"member(s) {absent} output no {name!r}")
            averaged = step.combine != "vote"
            if len({(None if averaged else k[0], tuple(k[1])) for k in kinds.values() if k}) != 1:
                what = "shape" if averaged else "datatype or shape"
                raise at(f"steps.{i}.members", f"the members' {name!r} outputs differ in {what}: {kinds}")
            kind = first[name]
            if averaged and any(k[0] not in NUMERIC for k in kinds.values() if k):
                raise at(f"steps.{i}.combine", f"{step.combine} of {name!r} ({kind[0]}): only numbers average; "
                         "use combine: vote")  # fmt: skip
            if averaged and len({k[0] for k in kinds.values() if k}) > 1:
                kind = ("FP64", kind[1])  # numbers of several datatypes average to FP64
            declared = next((o for o in step.outputs if o.name == name), None)
            if (
                declared is not None
                and (declared.datatype.value, declared.shape) != kind
                and "shape" in (declared.model_fields_set)
            ):
                raise at(f"steps.{i}.outputs", f"{name!r} is {kind} in the members, declared {declared.datatype}, "
                         f"{declared.shape}")  # fmt: skip
            out[name] = kind
        return out

    def _merged(
        self, i: int, step: StepSpec, produced: dict[str, dict[str, tuple[str, list[int]]]]
    ) -> dict[str, tuple[str, list[int]]]:
        branches = step.branches
        first = produced[branches[0]]
        for other in branches[1:]:
            if produced[other] != first:
                raise at(f"steps.{i}.cases", f"branches {branches[0]!r} and {other!r} output different tensors "
                         f"({first} vs {produced[other]}): a switch merges branches of one shape")  # fmt: skip
        return dict(first)

    def _check_from(
        self,
        where: str,
        tensor: StepInput,
        produced: dict[str, dict[str, tuple[str, list[int]]]],
        owner: dict[str, str],
        reader: str,
    ) -> None:
        step, name = tensor.producer
        if step not in produced:
            raise at(f"{where}.from", f"unknown step {step!r}; steps: {', '.join(produced)}")
        if step in owner and owner[step] != reader:
            raise at(f"{where}.from", f"step {step!r} answers only the events switch {owner[step]!r} routes to it: "
                     f"read {owner[step]}.{name}")  # fmt: skip
        if name not in produced[step]:
            raise at(f"{where}.from", _not_produced(step, name, produced))
        datatype, shape = produced[step][name]
        if tensor.datatype is not None and tensor.datatype.value != datatype:
            raise at(f"{where}.datatype", f"{tensor.datatype} but {step}.{name} is {datatype}: make them agree")
        if tensor.shape is not None and tensor.shape != shape:
            raise at(f"{where}.shape", f"{tensor.shape} per event but {step}.{name} has {shape}: make them agree")

    def dependencies(self, step: StepSpec) -> list[str]:
        """The steps ``step`` waits for: the producers of its ``from`` inputs and of its ``value``, its members and
        branches."""
        deps = [t.producer[0] for t in step.inputs if t.source is not None]
        if step.value_step is not None:
            deps.append(step.value_step[0])
        return list(dict.fromkeys([*deps, *step.members, *step.branches]))

    def _check_cycles(self, index: dict[str, int]) -> None:
        state: dict[str, int] = {}  # 1 visiting, 2 done
        path: list[str] = []

        def visit(name: str) -> None:
            state[name] = 1
            path.append(name)
            for dep in self.dependencies(self.steps[index[name]]):
                if state.get(dep) == 1:
                    cycle = [*path[path.index(dep) :], dep]
                    raise at(f"steps.{index[dep]}", f"steps {' -> '.join(cycle)} form a cycle: a step cannot wait "
                             "for itself")  # fmt: skip
                if dep not in state:
                    visit(dep)
            path.pop()
            state[name] = 2

        for step in self.steps:
            if step.name not in state:
                visit(step.name)

    def _check_reach(self, index: dict[str, int]) -> None:
        seen: set[str] = set()
        todo = [self.output_step.name]
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(self.dependencies(self.steps[index[name]]))
        for i, step in enumerate(self.steps):
            if step.name not in seen:
                raise at(f"steps.{i}.name", f"step {step.name!r} feeds nothing the output step "
                         f"{self.output_step.name!r} reads: remove it or read its outputs")  # fmt: skip

    @property
    def output_step(self) -> StepSpec:
        name = self.output or self.steps[-1].name
        return next(step for step in self.steps if step.name == name)

    def step(self, name: str) -> StepSpec:
        return next(step for step in self.steps if step.name == name)

    def produced(self) -> dict[str, dict[str, tuple[str, list[int]]]]:
        """Every step's outputs, ``{step: {tensor: (datatype, per-event shape)}}``."""
        return self._produced({step.name: i for i, step in enumerate(self.steps)})

    def columns(self) -> list[str]:
        """Every column (event field, feature ref, missing flag) a step input reads, and the switches' values
        that are not step outputs, in first-use order."""
        out: dict[str, None] = {}
        for step in self.steps:
            for tensor in step.inputs:
                for column in tensor.columns or ():
                    out[column] = None
            if step.value is not None and step.value_step is None:
                out[step.value] = None
        return list(out)


def _not_produced(step: str, name: str, produced: dict[str, dict[str, tuple[str, list[int]]]]) -> str:
    return f"step {step!r} produces no tensor {name!r}; it produces: {', '.join(produced[step]) or 'nothing'}"
