"""``vatic graph show <service>``: a service's inference graph, as text and as a Mermaid flowchart.

The text lists the steps in the order they can run (a step after every step it waits for), each with its model
(and version, and server), where each input comes from, its outputs and its deadline. ``--mermaid FILE`` writes a
Mermaid flowchart (``.mmd``; GitHub and most Markdown viewers draw it): the event and its features feed the steps
that read columns, edges carry the tensor names, ensembles and switches are drawn as such.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vatic.serving.config import GraphSpec, ServiceConfig, StepSpec, load_service

app = typer.Typer(help="Inference graphs: several models behind one service.", no_args_is_help=True)


def order(graph: GraphSpec) -> list[StepSpec]:
    """The steps, each after every step it waits for (listed order otherwise); switches before their branches."""
    done: list[StepSpec] = []
    seen: set[str] = set()

    def visit(step: StepSpec) -> None:
        if step.name in seen:
            return
        seen.add(step.name)
        for dep in graph.dependencies(step):
            if dep not in step.branches:
                visit(graph.step(dep))
        done.append(step)
        for branch in step.branches:
            visit(graph.step(branch))

    for step in graph.steps:
        visit(step)
    return _switches_first(done, graph)


def _switches_first(steps: list[StepSpec], graph: GraphSpec) -> list[StepSpec]:
    """A switch routes before its branches answer: list it before them (its merge follows them)."""
    out = [s for s in steps if s.kind != "switch"]
    for switch in (s for s in steps if s.kind == "switch"):
        first = min((out.index(graph.step(b)) for b in switch.branches), default=len(out))
        out.insert(first, switch)
    return out


def _model(step: StepSpec, graph: GraphSpec) -> str:
    version = f":{step.version}" if step.version else ""
    server = f" @ {step.server} ({graph.servers[step.server].url})" if step.server else ""
    return f"model {step.model}{version}{server}"


def _condition(case_when: dict[str, object]) -> str:
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "eq": "==", "ne": "!=", "within": "in"}
    return " ".join(f"{symbols[k]} {v}" for k, v in case_when.items() if v is not None)


def describe(config: ServiceConfig) -> list[str]:
    """The text of ``vatic graph show``."""
    graph = config.graph
    if graph is None:
        return [f"{config.service}: no graph; one model, {config.model.name}"]
    produced = graph.produced()
    out = graph.output_step.name
    timeout = f", whole graph within {graph.timeout_s:g} s" if graph.timeout_s else ""
    lines = [f"graph of {config.service} ({config.model.name}): {len(graph.steps)} steps, answer from {out!r}{timeout}"]
    for step in order(graph):
        if step.kind == "switch":
            cases = "; ".join(f"{_condition(c.when.model_dump())} -> {c.to}" for c in step.cases)
            default = f"; otherwise -> {step.default}" if step.default else "; otherwise: dead letter"
            lines.append(f"  {step.name}: switch on {step.value}: {cases}{default}")
            continue
        if step.kind == "ensemble":
            how = f"{step.combine} of {', '.join(step.members)}"
            if step.combine == "weighted_mean":
                how += f" (weights {', '.join(f'{w:g}' for w in step.weights)})"
            head = f"  {step.name}: ensemble, {how}"
            if step.calls_model:
                head += f", combined by {_model(step, graph)}"
            lines.append(head)
        else:
            lines.append(f"  {step.name}: {_model(step, graph)}")
        for tensor in step.inputs:
            columns = list(tensor.columns or ())
            shown = columns if len(columns) <= 6 else [*columns[:5], f"... {len(columns)} columns"]
            source = tensor.source if tensor.source else f"[{', '.join(shown)}]"
            lines.append(f"      in  {tensor.name} <- {source}")
        for name, (datatype, shape) in produced[step.name].items():
            lines.append(f"      out {name} {datatype} {shape}")
        if step.timeout_s:
            lines.append(f"      within {step.timeout_s:g} s per call")
    return lines


def mermaid(config: ServiceConfig) -> str:
    """A Mermaid flowchart of the graph."""
    graph = config.graph
    assert graph is not None
    switches = {step.name for step in graph.steps if step.kind == "switch"}

    def node(name: str) -> str:  # what reads a switch's output reads its merge
        return f"{name}_merged" if name in switches else name

    lines = ["flowchart LR", "  event([event + features])"]
    for step in graph.steps:
        label = step.name
        if step.kind == "switch":
            lines.append(f'  {step.name}{{"{label}: switch on {step.value}"}}')
        elif step.kind == "ensemble":
            lines.append(f'  {step.name}{{{{"{label}: {step.combine}"}}}}')
        else:
            version = f":{step.version}" if step.version else ""
            lines.append(f'  {step.name}["{label}<br/>{step.model}{version}"]')
    for step in graph.steps:
        if any(t.columns for t in step.inputs) or (step.value is not None and step.value_step is None):
            lines.append(f"  event --> {step.name}")
        for tensor in step.inputs:
            if tensor.source:
                producer, name = tensor.producer
                lines.append(f"  {node(producer)} -->|{name}| {step.name}")
        for member in step.members:
            lines.append(f"  {member} --> {step.name}")
        if step.value_step is not None:
            lines.append(f"  {node(step.value_step[0])} -->|{step.value_step[1]}| {step.name}")
        for case in step.cases:
            lines.append(f'  {step.name} -.->|"{_condition(case.when.model_dump())}"| {case.to}')
        if step.default:
            lines.append(f"  {step.name} -.->|otherwise| {step.default}")
        for branch in step.branches:
            lines.append(f"  {branch} --> {step.name}_merged(({step.name}))")
    lines.append(f"  {node(graph.output_step.name)} --> prediction([prediction])")
    return "\n".join(lines) + "\n"


@app.command()
def show(
    service: Annotated[Path, typer.Argument(help="the service folder (service.yaml)")],
    env: Annotated[str | None, typer.Option(help="environment overlay (staging, production)")] = None,
    mermaid_file: Annotated[
        Path | None, typer.Option("--mermaid", help="also write the graph as a Mermaid flowchart (.mmd) here")
    ] = None,
) -> None:
    """Print the service's inference graph; --mermaid FILE writes it as a flowchart too."""
    config = load_service(service, env)
    for line in describe(config):
        typer.echo(line)
    if mermaid_file is not None:
        if config.graph is None:
            typer.echo(f"graph: {config.service} has no graph: nothing to draw", err=True)
            raise typer.Exit(1)
        mermaid_file.write_text(mermaid(config), encoding="utf-8")
        typer.echo(f"graph: wrote {mermaid_file}", err=True)
