"""``dce``: dead nodes go with their parameters, live ones and the inputs stay, outputs are unchanged."""
from __future__ import annotations

import networkx as nx
import pytest

import archdsl
from archdsl.ir.printer import print_graph
from archdsl.ir.verify import verify
from archdsl.passes import run_pipeline
from archdsl.passes.dce import DeadCodeElimination

from zoo import ZOO, zoo_models  # noqa: E402

DEAD = """model m() {
    input x: [3, 8, 8]
    input unused: [5]
    side = x -> s1: conv(4, 3) -> relu -> s2: conv(2, 1)
    other = (side, side) -> add
    output x -> c: conv(4, 1) -> r: relu
}
"""


def dce(g):
    result = DeadCodeElimination().run(g)
    verify(result.graph)
    return result


def test_dead_nodes_and_their_parameters_are_removed():
    g = archdsl.load(DEAD)
    result = dce(g)
    rep = result.report
    assert result.modified
    assert rep.removed == ["s1", "1", "s2", "3"]
    assert sorted(rep.actions) == sorted(["removed dead conv @s1", "removed dead relu @1", "removed dead conv @s2",
                                          "removed dead add @3"])
    assert rep.added == rep.rewritten == rep.rewired == []
    dead_params = 4 * 3 * 9 + 4 + 2 * 4 + 2
    assert (rep.params_before, rep.params_after) == (g.param_count(), g.param_count() - dead_params)
    assert rep.macs_before - rep.macs_after == 4 * 6 * 6 * 27 + 2 * 6 * 6 * 4
    assert sorted(result.graph.params) == ["c.bias", "c.weight"]
    # the inputs are the model's signature: both stay, even the unused one
    assert [result.graph.data(i)["attrs"]["name"] for i in result.graph.inputs] == ["x", "unused"]


def test_every_remaining_node_reaches_an_output():
    result = dce(archdsl.load(DEAD))
    g = result.graph
    reach = set(g.outputs).union(*(nx.ancestors(g.nx, o) for o in g.outputs))
    assert set(g.node_ids()) - set(g.inputs) <= reach


def test_outputs_are_unchanged():
    torch = pytest.importorskip("torch")
    g = archdsl.load(DEAD)
    result = dce(g)
    xs = [torch.randn(2, 3, 8, 8), torch.randn(2, 5)]
    with torch.no_grad():
        want = archdsl.to_torch(g).eval()(*xs)
        got = archdsl.to_torch(result.graph).eval()(*xs)
    assert torch.equal(want, got)


def test_a_live_graph_is_left_alone():
    g = archdsl.load("model m() { input x: [3, 8, 8]\n output x -> conv(4, 3) -> relu }")
    result = dce(g)
    assert result.modified is False
    assert print_graph(result.graph) == print_graph(g)
    assert result.report.removed == [] and result.report.actions == []


def test_nodes_made_dead_by_an_earlier_pass_are_removed():
    """After rewiring an output past a branch, dce collects the branch."""
    g = archdsl.load("model m() { input x: [3, 8, 8]\n output x -> c: conv(4, 1) -> d: dropout }")
    result = run_pipeline(g, "drop-inference-noops,dce")
    assert result.reports[0].removed == ["d"] and result.reports[1].removed == []
    g2 = g.copy()
    g2.outputs = [g2.inputs[0]]          # a graph whose output no longer needs the conv chain
    rep = dce(g2).report
    assert rep.removed == ["c", "d"]


@pytest.mark.parametrize("file,model", zoo_models(), ids=lambda x: x)
def test_zoo_models_have_no_dead_nodes(file, model):
    g = archdsl.load(ZOO / file, model)
    result = dce(g)
    assert result.modified is False, model
    assert result.report.params_before == result.report.params_after == g.param_count()
