"""``graph:`` in the service config: a valid graph loads; every broken reference is one line naming the file and
the line of the value at fault (through the loader, as `vatic` reports it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vatic.schemas.errors import ConfigFileError
from vatic.serving.config import load_service

GRAPH = """\
project: shop
service: ranker
model:
  name: ranker
  outputs:
    - name: score
graph:
  timeout_s: 2
  servers:
    embedder: {url: "http://embedder:8080"}
  steps:
    - name: embed
      model: minilm
      server: embedder
      inputs:
        - {name: text, datatype: BYTES, columns: [title]}
      outputs:
        - {name: embedding, datatype: FP32, shape: [384]}
    - name: lgbm
      model: ranker-lgbm
      inputs:
        - {name: x, from: embed.embedding, shape: [384]}
        - {name: amount, columns: [amount]}
      outputs:
        - {name: score}
    - name: linear
      model: ranker-linear
      inputs:
        - {name: x, from: embed.embedding}
      outputs:
        - {name: score}
    - name: both
      kind: ensemble
      members: [lgbm, linear]
      combine: weighted_mean
      weights: [2, 1]
    - name: heavy
      model: ranker-heavy
      timeout_s: 1.5
      inputs:
        - {name: x, from: both.score}
      outputs:
        - {name: score}
    - name: light
      model: ranker-light
      inputs:
        - {name: x, from: both.score}
      outputs:
        - {name: score}
    - name: route
      kind: switch
      value: amount
      cases:
        - {when: {gt: 500}, to: heavy}
      default: light
"""


def load(tmp_path: Path, text: str) -> object:
    (tmp_path / "service.yaml").write_text(text, encoding="utf-8")
    return load_service(tmp_path)


def problem(tmp_path: Path, old: str, new: str) -> str:
    assert old in GRAPH, old
    with pytest.raises(ConfigFileError) as caught:
        load(tmp_path, GRAPH.replace(old, new, 1))
    assert len(caught.value.lines) == 1, caught.value.lines
    return caught.value.lines[0]


def line_of(text: str, needle: str, nth: int = 1) -> int:
    lines = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
    return lines[nth - 1]


def test_a_graph_loads_with_its_dependencies_and_outputs(tmp_path):
    config = load(tmp_path, GRAPH)
    graph = config.graph  # type: ignore[attr-defined]
    assert graph.output_step.name == "route"
    assert graph.dependencies(graph.step("both")) == ["lgbm", "linear"]
    assert graph.dependencies(graph.step("route")) == ["heavy", "light"]
    assert graph.produced()["route"] == {"score": ("FP32", [])}
    assert config.event_fields() == ["title", "amount"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("old", "new", "needle", "says"),
    [
        ("from: embed.embedding, shape", "from: embedd.embedding, shape", "embedd.embedding",
         "graph.steps.1.inputs.0.from: unknown step 'embedd'"),
        ("from: embed.embedding}", "from: embed.vector}", "embed.vector",
         "step 'embed' produces no tensor 'vector'; it produces: embedding"),
        ("from: embed.embedding, shape: [384]", "from: embed.embedding, shape: [256]", "shape: [256]",
         "graph.steps.1.inputs.0.shape: [256] per event but embed.embedding has [384]"),
        ("{name: x, from: embed.embedding}", "{name: x, from: embed.embedding, datatype: FP64}", "datatype: FP64",
         "graph.steps.2.inputs.0.datatype: FP64 but embed.embedding is FP32"),
        ("      members: [lgbm, linear]", "      members: [lgbm, lineal]", "members: [lgbm, lineal]",
         "graph.steps.3.members: unknown step 'lineal'"),
        ("        - {name: x, from: both.score}\n      outputs:\n        - {name: score}\n    - name: light",
         "        - {name: x, from: route.score}\n      outputs:\n        - {name: score}\n    - name: light",
         "name: heavy", "steps heavy -> route -> heavy form a cycle"),
        ("server: embedder", "server: gpu", "server: gpu", "graph.steps.0.server: unknown server 'gpu'"),
        ("timeout_s: 1.5", "timeout_s: 3", "timeout_s: 3", "3 s is longer than the graph's 2 s"),
        ("  outputs:\n    - name: score\ngraph", "  outputs:\n    - name: prob\ngraph", "name: prob",
         "model.outputs.0.name: 'prob' is not an output of the graph's output step 'route'"),
        ("    - name: light\n      model: ranker-light\n      inputs:\n        - {name: x, from: both.score}\n"
         "      outputs:\n        - {name: score}\n",
         "    - name: light\n      model: ranker-light\n      inputs:\n        - {name: x, from: both.score}\n"
         "      outputs:\n        - {name: score, datatype: INT64}\n",
         "to: heavy", "branches 'heavy' and 'light' output different tensors"),
    ],
    ids=["unknown step", "tensor nobody produces", "shape mismatch", "datatype mismatch", "unknown member",
         "cycle", "unknown server", "step timeout over the graph's", "model output not produced",
         "switch branches disagree"],
)  # fmt: skip
def test_a_broken_graph_is_one_line_at_the_value_at_fault(tmp_path, old, new, needle, says):
    text = GRAPH.replace(old, new, 1)
    line = problem(tmp_path, old, new)
    assert says in line, line
    expected = line_of(text, needle)
    assert line.startswith(f"{tmp_path / 'service.yaml'}:{expected}:"), (line, expected)


def test_a_duplicate_step_name_points_at_the_second(tmp_path):
    text = GRAPH.replace("    - name: linear\n", "    - name: lgbm\n", 1)
    line = problem(tmp_path, "    - name: linear\n", "    - name: lgbm\n")
    assert f":{line_of(text, 'name: lgbm', 2)}: graph.steps.2.name: step 'lgbm' is already step 1" in line


def test_a_step_nothing_reads_is_refused(tmp_path):
    extra = "    - name: orphan\n      model: m\n      inputs:\n        - {name: a, columns: [amount]}\n" \
            "      outputs:\n        - {name: y}\n"  # fmt: skip
    line = problem(tmp_path, "    - name: route\n", extra + "    - name: route\n")
    assert "step 'orphan' feeds nothing the output step 'route' reads" in line


def test_a_branch_is_read_only_through_its_switch(tmp_path):
    line = problem(tmp_path, "  timeout_s: 2\n", "  timeout_s: 2\n  output: late\n")
    assert "graph.output: unknown step 'late'" in line
    line = problem(
        tmp_path,
        "      default: light\n",
        "      default: light\n    - name: after\n      model: m\n"
        "      inputs:\n        - {name: a, from: heavy.score}\n      outputs:\n        - {name: score}\n",
    )
    assert "step 'heavy' answers only the events switch 'route' routes to it: read route.score" in line


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        ("  outputs:\n    - name: score\ngraph",
         "  inputs:\n    - {name: x, columns: [a]}\n  outputs:\n    - name: score\ngraph",
         "with a graph, its steps declare the inputs: remove model.inputs"),
        ("project: shop\n", "project: shop\ncanary: {version: '2', key: [title]}\n", "canary with a graph"),
        ("      combine: weighted_mean\n      weights: [2, 1]\n", "      combine: weighted_mean\n",
         "weighted_mean needs one weight >= 0 per member"),
        ("      value: amount\n", "      value: customer:score\n", "feature 'customer:score' is not in features.refs"),
        ("      combine: weighted_mean\n      weights: [2, 1]\n", "      combine: mean\n      model: x\n",
         "a ensemble step has no model of its own"),
        ("        - {when: {gt: 500}, to: heavy}", "        - {when: {gt: 500, lt: 9}, to: heavy}",
         "a condition has exactly one of gt, ge, lt, le, eq, ne, in"),
    ],
    ids=["model inputs beside a graph", "canary", "weights", "unknown feature", "model on an ensemble",
         "two operators"],
)  # fmt: skip
def test_what_a_graph_cannot_be_combined_with_is_refused(tmp_path, old, new, says):
    assert says in problem(tmp_path, old, new)


def test_a_service_without_graph_still_needs_model_inputs(tmp_path):
    text = GRAPH.split("graph:", maxsplit=1)[0]
    with pytest.raises(ConfigFileError) as caught:
        load(tmp_path, text)
    assert "model.inputs: no input tensors" in caught.value.lines[0]
