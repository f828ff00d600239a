"""``vatic graph show``: the steps in the order they run, where every input comes from, and a Mermaid flowchart
whose edges are the graph's own (through the real ``vatic`` command)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.serving.config.test_graph import GRAPH

VATIC = str(Path(sys.executable).parent / "vatic")


def show(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VATIC, "graph", "show", str(folder), *args], capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip


def test_the_text_lists_each_step_after_what_it_waits_for(tmp_path):
    (tmp_path / "service.yaml").write_text(GRAPH, encoding="utf-8")
    done = show(tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "graph of ranker (ranker): 7 steps, answer from 'route', whole graph within 2 s"
    heads = [line.split(":")[0].strip() for line in lines[1:] if not line.startswith("      ")]
    assert heads == ["embed", "lgbm", "linear", "both", "route", "heavy", "light"]
    assert "  embed: model minilm @ embedder (http://embedder:8080)" in lines
    assert "      in  x <- embed.embedding" in lines
    assert "      out embedding FP32 [384]" in lines
    assert "  both: ensemble, weighted_mean of lgbm, linear (weights 2, 1)" in lines
    assert "  route: switch on amount: > 500.0 -> heavy; otherwise -> light" in lines
    assert "      within 1.5 s per call" in lines


def test_the_mermaid_file_draws_every_edge(tmp_path):
    (tmp_path / "service.yaml").write_text(GRAPH, encoding="utf-8")
    out = tmp_path / "graph.mmd"
    done = show(tmp_path, "--mermaid", str(out))
    assert done.returncode == 0, done.stderr
    chart = out.read_text(encoding="utf-8").splitlines()
    assert chart[0] == "flowchart LR"
    edges = {line.strip() for line in chart if "-->" in line or "-.->" in line}
    assert edges == {
        "event --> embed", "event --> lgbm", "event --> route",
        "embed -->|embedding| lgbm", "embed -->|embedding| linear",
        "lgbm --> both", "linear --> both",
        "both -->|score| heavy", "both -->|score| light",
        'route -.->|"> 500.0"| heavy', "route -.->|otherwise| light",
        "heavy --> route_merged((route))", "light --> route_merged((route))",
        "route_merged --> prediction([prediction])",
    }  # fmt: skip


def test_a_service_without_graph_says_so(tmp_path):
    text = GRAPH.split("graph:")[0].replace("model:\n  name: ranker\n", "model:\n  name: ranker\n  inputs:\n"
                                           "    - {name: x, columns: [a]}\n")  # fmt: skip
    (tmp_path / "service.yaml").write_text(text, encoding="utf-8")
    done = show(tmp_path, "--mermaid", str(tmp_path / "g.mmd"))
    assert done.stdout.strip() == "ranker: no graph; one model, ranker"
    assert done.returncode == 1
    assert "has no graph: nothing to draw" in done.stderr
