"""Semantics of the language: naming, constructs, loops, expressions, imports."""
import pytest

import archdsl
from archdsl import ArchError


def ops_and_scopes(g):
    return [(n.op, n.scope) for n in g.nodes() if n.op != "input"]


def load(text, **kw):
    return archdsl.load(text, **kw)


def test_chain_labels_and_positions_follow_nn_sequential():
    g = load("""
model m() {
    input x: [3, 8, 8]
    output x -> features: [conv(4, 3) -> relu -> conv(4, 3, padding=1) -> maxpool(2)] -> head: linear(5)
}""")
    assert ops_and_scopes(g) == [("conv", "features.0"), ("relu", "features.1"), ("conv", "features.2"),
                                 ("maxpool", "features.3"), ("linear", "head")]
    assert g.data(g.outputs[0])["shape"] == ("N", 4, 3, 5)
    assert set(g.params) == {"features.0.weight", "features.0.bias", "features.2.weight", "features.2.bias",
                             "head.weight", "head.bias"}


def test_computed_labels_loops_and_comprehensions():
    g = load("""
block unit(c: int, stride: int = 1) {
    input x
    output x -> conv1: conv(c, 3, stride=stride, padding=1) -> relu
}
model m() {
    input x: [3, 16, 16]
    h = x
    for i, (c, n) in enumerate([(4, 2), (8, 1)]) {
        h = h -> stage{i + 1}: [unit(c, 2 if j == 0 else 1) for j in range(n)]
    }
    output h
}""")
    convs = [(n.scope, n.shape) for n in g.nodes() if n.op == "conv"]
    assert convs == [("stage1.0.conv1", ("N", 4, 8, 8)), ("stage1.1.conv1", ("N", 4, 8, 8)),
                     ("stage2.0.conv1", ("N", 8, 4, 4))]
    assert g.scopes["stage1.0"].kind == "block" and g.scopes["stage1.0"].name == "unit"
    assert g.scopes["stage1.0"].args == {"c": 4, "stride": 2}
    assert g.scopes["stage1"].kind == "seq"


def test_parallel_concatenates_branches_in_order():
    g = load("""
model m() {
    input x: [8, 10, 10]
    output x -> parallel {
        b1: conv(2, 1)
        b2: [conv(3, 1) -> conv(4, 3, padding=1)]
        b3: maxpool(3, stride=1, padding=1) -> conv(5, 1)
    }
}""")
    out = g.node(g.outputs[0])
    assert out.op == "concat" and out.shape == ("N", 11, 10, 10)
    assert [g.data(i)["scope"] for i in out.inputs] == ["b1", "b2.1", "3"]


def test_dense_block_feeds_every_layer_all_earlier_outputs():
    g = load("""
model m() {
    input x: [6, 4, 4]
    output x -> db: dense(growth=2) { layer{j + 1}: conv(2, 3, padding=1) for j in range(3) }
}""")
    convs = [n for n in g.nodes() if n.op == "conv"]
    assert [c.scope for c in convs] == ["db.layer1", "db.layer2", "db.layer3"]
    # layer l sees k0 + (l-1)k channels: 6, 8, 10
    assert [g.data(c.inputs[0])["shape"][1] for c in convs] == [6, 8, 10]
    out = g.node(g.outputs[0])
    assert out.op == "concat" and out.shape == ("N", 12, 4, 4) and len(out.inputs) == 4


def test_dense_growth_is_checked():
    with pytest.raises(ArchError, match="gives 3 channels, but the block's growth rate is 2"):
        load("model m() { input x: [6, 4, 4]\n output x -> dense(growth=2) { conv(3, 1) } }")


def test_residual_projection_only_when_asked():
    text = """
block b(c: int) {
    input x
    output x -> residual { conv(c, 3, padding=1) } shortcut if channels(x) != c { proj: conv(c, 1) }
}
model m(c: int = 4) { input x: [4, 5, 5]
 output x -> b(c) }"""
    same = load(text)
    assert [n.op for n in same.nodes()] == ["input", "conv", "add"]
    proj = load(text, c=6)
    assert "0.proj.weight" in proj.params and proj.data(proj.outputs[0])["shape"] == ("N", 6, 5, 5)


def test_stn_starts_at_identity_and_builds_sampler():
    g = load("""
model m() {
    input x: [1, 12, 12]
    output x -> stn { loc: [conv(4, 5) -> relu -> flatten -> linear(16) -> relu -> linear(6)] }
}""")
    ops = [n.op for n in g.nodes()]
    assert ops[-3:] == ["reshape", "affine_grid", "grid_sample"]
    assert g.data(g.outputs[0])["shape"] == ("N", 1, 12, 12)
    assert (g.params["loc.5.weight"].value == 0).all()
    assert g.params["loc.5.bias"].value.tolist() == [1, 0, 0, 0, 1, 0]


def test_layers_as_values_and_configured_layers():
    g = load("""
block act_block(act: layer) { input x
 output x -> a: act }
model m() { input x: [3, 4, 4]
 output x -> act_block(leaky_relu(0.2)) }""")
    (node,) = [n for n in g.nodes() if n.op == "leaky_relu"]
    assert node.attrs == {"negative_slope": 0.2} and node.scope == "0.a"


def test_model_alias_and_overrides():
    text = """
model net(width: int, num_classes: int = 10) { input x: [3, 8, 8]
 output x -> conv(width, 3) -> flatten -> fc: linear(num_classes) }
model small = net(width=2)
model big = net(16, num_classes=3)"""
    assert load(text, model="small").data(load(text, model="small").outputs[0])["shape"] == ("N", 10)
    g = load(text, model="big", num_classes=7)
    assert g.params["fc.weight"].shape == (7, 16 * 6 * 6)
    g = archdsl.load(text, "small", defines={"num_classes": "2 * 4"})
    assert g.params["fc.weight"].shape == (8, 2 * 6 * 6)


def test_expressions_follow_python():
    g = load("""
V = [1, 2, 3]
model m(a: int = 7) {
    input x: [3, 4, 4]
    assert a // 2 == 3 and a % 2 == 1 and 2 ** 3 == 8 and -a < 0
    assert [v * 2 for v in V] == [2, 4, 6] if false else sum([v * 2 for v in V]) == 12
    assert (1 if a > 5 else 2) == 1 and not (a in V) and 3 in V and "ab" + "c" == "abc"
    assert max(V) == 3 and min(3, 1) == 1 and len(zip(V, V)) == 3 and int(7 / 2) == 3
    output x -> conv(max(V), 1)
}""")
    assert g.data(g.outputs[0])["shape"] == ("N", 3, 4, 4)


def test_statement_if_on_its_own_line_after_an_expression():
    g = load("""
model m(flag: bool = true) {
    input x: [3, 4, 4]
    c = 4 if flag else 2
    if flag { c = c * 2 } elif c > 100 { c = 0 } else { c = 1 }
    output x -> conv(c, 1)
}""")
    assert g.data(g.outputs[0])["shape"] == ("N", 8, 4, 4)


def test_multiple_inputs_and_outputs():
    g = load("""
block two(c: int) { input a
 input b
 s = (a, b) -> add
 output s, s -> conv(c, 1) }
model m() {
    input x: [3, 4, 4]
    input y: [3, 4, 4]
    p, q = (x, y) -> two(5)
    output p, q
}""")
    assert len(g.inputs) == 2 and [g.data(o)["shape"] for o in g.outputs] == [("N", 3, 4, 4), ("N", 5, 4, 4)]


def test_imports_relative_and_namespaced(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "blocks.arch").write_text("block cbr(c: int) { input x\n output x -> conv(c, 3, padding=1) -> bn -> relu }\n")
    main = tmp_path / "main.arch"
    main.write_text('import "lib/blocks.arch" as b\nimport std.layers\n'
                    "model m() { input x: [3, 8, 8]\n output x -> b.cbr(4) -> squeeze_excite(reduction=2) }\n")
    g = archdsl.load(main)
    assert g.data(g.outputs[0])["shape"] == ("N", 4, 8, 8)
    assert {n.op for n in g.nodes()} >= {"conv", "bn", "relu", "adaptive_avgpool", "sigmoid", "mul"}


def test_same_spec_gives_same_weights_and_seed_changes_them():
    text = "model m() { input x: [3, 4, 4]\n output x -> conv(4, 3) }"
    a, b = load(text), load(text)
    assert (a.params["0.weight"].value == b.params["0.weight"].value).all()
    c = archdsl.load(text, seed=1)
    assert not (a.params["0.weight"].value == c.params["0.weight"].value).all()


def test_default_init_matches_pytorch_bounds():
    g = load("model m() { input x: [16, 4, 4]\n output x -> conv(32, 3, groups=2) }")
    w = g.params["0.weight"].value
    bound = 1 / (8 * 9) ** 0.5          # fan_in = in/groups * kh * kw
    assert w.shape == (32, 8, 3, 3) and abs(w).max() <= bound and abs(w).max() > 0.9 * bound
