"""``drop-inference-noops``: dropout and identity removed; eval-mode outputs bit-for-bit unchanged."""
from __future__ import annotations


import numpy as np
import pytest

import archdsl
from archdsl.ir.verify import verify
from archdsl.passes.drop_noops import DropInferenceNoops

torch = pytest.importorskip("torch")

from zoo import load_small, zoo_models  # noqa: E402
NUMERIC_MAX_PARAMS = 20_000_000     # larger zoo models are checked by counts only (their outputs are
                                    # unchanged by construction: the rewrite only rewires edges)

NOOPS = """model m() {
    input x: [3, 8, 8]
    h = x -> c: conv(4, 3, padding=1) -> i1: identity -> d2: dropout2d(0.2) -> relu
    a = h -> flatten -> f: linear(6) -> d: dropout(0.5) -> z: dropout(0.0)
    output a -> i2: identity
}
"""
from archdsl.backends.torch_layers import StochasticDepth  # noqa: E402
NOOP_MODULES = (torch.nn.Dropout, torch.nn.Dropout2d, torch.nn.Identity, StochasticDepth)



def run(g, **options):
    result = DropInferenceNoops(**options).run(g)
    verify(result.graph)
    return result


def outputs(g, xs):
    with torch.no_grad():
        out = archdsl.to_torch(g).eval()(*xs)
    return out if isinstance(out, tuple) else (out,)


def noop_modules(g) -> list[str]:
    """Independent count: the no-op modules of the PyTorch model (built on the meta device)."""
    with torch.device("meta"):
        module = archdsl.to_torch(g, load_weights=False)
    return [name for name, m in module.named_modules() if isinstance(m, NOOP_MODULES)]


def test_every_noop_goes_and_outputs_are_identical():
    g = archdsl.load(NOOPS)
    result = run(g)
    rep = result.report
    assert result.modified
    assert rep.removed == noop_modules(g) == ["i1", "d2", "d", "z", "i2"]
    assert noop_modules(result.graph) == []
    assert rep.actions == ["removed identity @i1", "removed dropout2d @d2", "removed dropout @d",
                           "removed dropout @z", "removed identity @i2"]
    assert rep.added == rep.rewritten == [] and rep.refused == []
    assert rep.rewired == ["3"]                      # the relu now reads the conv; the output is f
    assert rep.params_before == rep.params_after and rep.macs_before == rep.macs_after
    assert [result.graph.data(o)["scope"] for o in result.graph.outputs] == ["f"]
    xs = [torch.randn(2, 3, 8, 8)]
    assert all(torch.equal(a, b) for a, b in zip(outputs(g, xs), outputs(result.graph, xs)))


def test_training_mode_keeps_real_dropout():
    g = archdsl.load(NOOPS)
    result = run(g, training=True)
    rep = result.report
    assert rep.removed == ["i1", "z", "i2"]
    assert [(r.node, r.op, r.reason) for r in rep.refused] == [
        ("d2", "dropout2d", "It drops with p = 0.2 in training, and the pass runs with training=true."),
        ("d", "dropout", "It drops with p = 0.5 in training, and the pass runs with training=true.")]
    ops = [n.op for n in result.graph.nodes()]
    assert ops.count("dropout") == ops.count("dropout2d") == 1 and "identity" not in ops


DROP_PATH = """model m() {
    input x: [4, 6, 6]
    h = x -> c: conv(4, 3, padding=1)
    d = h -> s: drop_path(0.3) -> b: drop_path(0.2, mode="batch") -> z: drop_path(0.0)
    output (h, d) -> add -> relu
}
"""


def test_drop_path_is_removed_in_inference_and_kept_for_training():
    g = archdsl.load(DROP_PATH)
    result = run(g)
    assert result.report.removed == noop_modules(g) == ["s", "b", "z"]
    assert result.report.actions == ["removed drop_path @s", "removed drop_path @b", "removed drop_path @z"]
    assert [n.op for n in result.graph.nodes()] == ["input", "conv", "add", "relu"]
    add = next(n for n in result.graph.nodes() if n.op == "add")
    conv = next(n for n in result.graph.nodes() if n.op == "conv")
    assert list(add.inputs) == [conv.id, conv.id]
    xs = [torch.randn(3, 4, 6, 6)]
    assert all(torch.equal(a, b) for a, b in zip(outputs(g, xs), outputs(result.graph, xs)))
    kept = run(g, training=True)
    assert kept.report.removed == ["z"]
    assert [(r.node, r.op, r.reason) for r in kept.report.refused] == [
        ("s", "drop_path", "It drops with p = 0.3 in training, and the pass runs with training=true."),
        ("b", "drop_path", "It drops with p = 0.2 in training, and the pass runs with training=true.")]
    assert [n.op for n in kept.graph.nodes()].count("drop_path") == 2


def test_a_graph_without_noops_is_left_alone():
    g = archdsl.load("model m() { input x: [3, 8, 8]\n output x -> conv(4, 3) -> relu }")
    result = run(g)
    assert result.modified is False and result.report.removed == []


def test_an_output_that_is_a_noop_of_the_input():
    g = archdsl.load("model m() { input x: [3, 8, 8]\n output x -> identity }")
    result = run(g)
    assert result.graph.outputs == result.graph.inputs
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(outputs(result.graph, [x])[0], x)


def test_option_is_typed_in_pipelines():
    from archdsl.passes import parse_pipeline
    assert parse_pipeline("drop-inference-noops{training=true}") == [DropInferenceNoops(training=True)]


MODELS = zoo_models()


@pytest.mark.parametrize("file,model", MODELS, ids=[m for _, m in MODELS])
def test_zoo_model(file, model):
    g = load_small(file, model)
    result = run(g)
    expected = noop_modules(g)
    assert result.report.removed == expected
    assert result.modified == bool(expected)
    assert noop_modules(result.graph) == []
    assert result.report.params_after == result.report.params_before == g.param_count()
    if expected and g.param_count() <= NUMERIC_MAX_PARAMS:
        rng = np.random.default_rng(0)
        xs = [torch.from_numpy(rng.standard_normal((2, *g.data(i)["shape"][1:]), dtype=np.float32))
              for i in g.inputs]
        assert all(torch.equal(a, b) for a, b in zip(outputs(g, xs), outputs(result.graph, xs)))
