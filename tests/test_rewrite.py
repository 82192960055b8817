"""The graph's rewrite API: insert after/before, replace by a chain or subgraph, resize, replace-all-uses."""
from __future__ import annotations

import numpy as np
import pytest

import archdsl
from archdsl.diagnostics import IRError
from archdsl.ir.graph import NewNode, Operand
from archdsl.ir.printer import print_graph
from archdsl.ir.types import QuantParams
from archdsl.ir.verify import verify

SPEC = """
model m() {
    input x: [3, 8, 8]
    h = x -> c1: conv(4, 3, padding=1) -> b1: bn -> relu
    g = h -> c2: conv(4, 1)
    output (h, g) -> add -> flatten -> fc: linear(5)
}
"""


def small():
    return archdsl.load(SPEC)


def node(g, scope):
    return g.node(g.by_scope(scope))


def ops_in_order(g):
    return [n.op for n in g.nodes()]


def forward(g, x):
    torch = pytest.importorskip("torch")
    with torch.no_grad():
        return archdsl.to_torch(g).eval()(torch.from_numpy(x)).numpy()


X = np.random.default_rng(0).standard_normal((2, 3, 8, 8), dtype=np.float32)


# ---- replace_all_uses -------------------------------------------------------------------------

def test_replace_all_uses_leaves_the_new_node_alone():
    g = small()
    c1 = g.by_scope("c1")
    new = g.add_node("relu", [c1], shape=g.data(c1)["shape"], span=g.data(c1)["span"], scope="c1_relu")
    g.replace_all_uses(c1, new)                       # used to rewire `new` to itself
    assert g.data(new)["inputs"] == (c1,)
    assert g.users(c1) == [new]
    assert g.data(g.by_scope("b1"))["inputs"] == (new,)
    verify(g)


def test_replace_all_uses_moves_model_outputs_and_spares_kept_nodes():
    g = small()
    fc, c2 = g.by_scope("fc"), g.by_scope("c2")
    b1 = g.by_scope("b1")
    relu = g.users(b1)[0]
    g.replace_all_uses(relu, b1, keep=[c2])
    assert g.data(c2)["inputs"] == (relu,)
    assert g.data(g.users(c2)[0])["inputs"][0] == b1
    ident = g.add_node("identity", [fc], shape=g.data(fc)["shape"], span=g.data(fc)["span"], scope="out")
    g.replace_all_uses(fc, ident)
    assert g.outputs == [ident]


# ---- insert_after / insert_before ---------------------------------------------------------------

def test_insert_after_takes_over_every_use_and_is_typed():
    g = small()
    c1 = g.by_scope("c1")
    t = g.insert_after(c1, "tanh")
    n = g.node(t)
    assert (n.scope, n.span, n.shape, n.dtype, n.inputs) == ("c1_tanh", g.data(c1)["span"], ("N", 4, 8, 8),
                                                              "float32", (c1,))
    assert g.users(c1) == [t] and g.users(t) == [g.by_scope("b1")]
    verify(g)
    assert ops_in_order(g)[:4] == ["input", "conv", "tanh", "bn"]


def test_insert_after_a_model_output_moves_the_output():
    g = small()
    fc = g.by_scope("fc")
    s = g.insert_after(fc, "softmax")
    assert g.outputs == [s] and g.node(s).scope == "fc_softmax"
    verify(g)


def test_insert_after_finds_a_free_scope():
    g = small()
    c1 = g.by_scope("c1")
    first = g.insert_after(c1, "tanh")
    second = g.insert_after(c1, "tanh")
    assert (g.node(first).scope, g.node(second).scope) == ("c1_tanh", "c1_tanh_1")
    verify(g)


def test_insert_after_with_parameters_names_them_by_scope():
    g = small()
    relu = g.users(g.by_scope("b1"))[0]
    w = np.full((4, 4, 1, 1), 0.5, np.float32)
    conv = g.insert_after(relu, "conv", {"out_channels": 4, "kernel_size": 1, "bias": False}, name="mix",
                          params={"weight": w})
    n = g.node(conv)
    assert n.params == {"weight": "mix.weight"} and n.attrs["kernel_size"] == (1, 1)
    assert np.array_equal(g.params["mix.weight"].value, w)
    verify(g)


def test_insert_before_rewires_one_operand_only():
    g = small()
    add = next(n for n in g.nodes() if n.op == "add")
    a, b = add.inputs
    s = g.insert_before(add.id, "sigmoid", operand=1)
    assert g.data(add.id)["inputs"] == (a, s) and g.data(s)["inputs"] == (b,)
    assert g.node(s).scope == f"{add.scope}_sigmoid"
    verify(g)


def test_insert_with_a_wrong_type_is_a_typed_error_and_changes_nothing():
    g = small()
    before = print_graph(g)
    fc = g.by_scope("fc")
    with pytest.raises(IRError) as info:
        g.insert_after(fc, "conv", {"out_channels": 2, "kernel_size": 1})
    assert info.value.message == "'conv' expects a 4-D input (N, C, H, W) but got a 2-D tensor of shape (N, 5)."
    assert info.value.span == g.data(fc)["span"]
    with pytest.raises(IRError) as info:
        g.insert_after(fc, "relu", {"inplace": True})
    assert info.value.message == "'relu' has no attribute 'inplace'; its attributes are none."
    assert print_graph(g) == before


def test_quantize_and_dequantize_carry_types():
    g = small()
    c1 = g.by_scope("c1")
    q = g.insert_after(c1, "quantize", {"dtype": "uint8", "scale": (0.05,), "zero_point": (128,)})
    d = g.insert_after(q, "dequantize")
    assert g.type_of(q).dtype == "uint8" and g.type_of(q).quant == QuantParams((0.05,), (128,))
    assert g.type_of(d).dtype == "float32" and g.type_of(d).quant is None
    verify(g)
    assert "uint8 q[scale=0.05, zero_point=128]" in print_graph(g)
    with pytest.raises(IRError, match="'bn' computes in floating point, but its input is uint8; dequantize it"):
        g.insert_after(q, "bn")


# ---- replace_with: chains and subgraphs ----------------------------------------------------------

def test_replace_by_a_chain_derives_scopes_and_keeps_the_span():
    g = small()
    c1 = node(g, "c1")
    span = c1.span
    new = g.replace_with(c1.id, [NewNode("conv", {"out_channels": 2, "kernel_size": 1, "bias": False}),
                                 NewNode("conv", {"out_channels": 4, "kernel_size": 3, "padding": 1})])
    assert [g.node(i).scope for i in new] == ["c1.0", "c1.1"]
    assert all(g.node(i).span == span for i in new)
    assert "c1.weight" not in g.params and "c1.1.bias" in g.params
    assert g.scopes["c1"].kind == "seq"
    verify(g)
    assert g.data(g.by_scope("b1"))["inputs"] == (new[1],)
    out = forward(g, X)
    assert out.shape == (2, 5)


def test_replace_by_a_subgraph_with_operands():
    g = small()
    add = next(n for n in g.nodes() if n.op == "add")
    a, b = add.inputs
    # a + b  ->  relu(a) + b, as a two-node subgraph
    new = g.replace_with(add.id, [NewNode("relu", inputs=(Operand(0),), name="r"),
                                  NewNode("add", inputs=(0, Operand(1)), name="sum")])
    assert g.data(new[1])["inputs"] == (new[0], b) and g.data(new[0])["inputs"] == (a,)
    verify(g)


def test_replace_by_one_unnamed_node_keeps_the_scope_and_parameter_names():
    g = small()
    c2 = node(g, "c2")
    w = np.ones((4, 4, 1, 1), np.float32)
    (new,) = g.replace_with(c2.id, [NewNode("conv", {"out_channels": 4, "kernel_size": 1},
                                            params={"weight": w})])
    assert g.node(new).scope == "c2" and g.node(new).params == {"weight": "c2.weight", "bias": "c2.bias"}
    assert np.array_equal(g.params["c2.weight"].value, w)
    verify(g)


def test_a_failed_replacement_leaves_the_graph_as_it_was():
    g = small()
    before = print_graph(g)
    names = sorted(g.params)
    c1 = g.by_scope("c1")
    with pytest.raises(IRError) as info:
        g.replace_with(c1, [NewNode("conv", {"out_channels": 2, "kernel_size": 1}),
                            NewNode("add", inputs=(0, Operand(0)))])
    assert info.value.message.startswith("'add' needs inputs of the same shape, but the channel count differs")
    assert print_graph(g) == before and sorted(g.params) == names
    verify(g)


def test_replacement_reads_only_operands_and_earlier_nodes():
    g = small()
    with pytest.raises(IRError) as info:
        g.replace_with(g.by_scope("c2"), [NewNode("relu", inputs=(1,))])
    assert info.value.message == ("Replacement node 0 of @c2 reads 1; it may read an Operand of the replaced node "
                                  "or an earlier replacement node.")


def test_a_low_rank_chain_is_exact_at_full_rank():
    """Replace a 1x1 conv W by U (rank r) then V: at r = min(in, out), V U = W exactly."""
    g = small()
    c2 = node(g, "c2")
    w = c2.param("weight").value[:, :, 0, 0].astype(np.float64)
    bias = c2.param("bias").value
    u, s, vt = np.linalg.svd(w)
    first = (np.diag(s) @ vt).astype(np.float32)[:, :, None, None]
    second = u.astype(np.float32)[:, :, None, None]
    ref = forward(g, X)
    g.replace_with(c2.id, [NewNode("conv", {"out_channels": 4, "kernel_size": 1, "bias": False},
                                   params={"weight": first}),
                           NewNode("conv", {"out_channels": 4, "kernel_size": 1}, params={"weight": second,
                                                                                          "bias": bias})])
    verify(g)
    assert np.allclose(forward(g, X), ref, atol=1e-5)


# ---- resize_param -----------------------------------------------------------------------------

def test_resize_slices_the_current_values_even_when_lazy():
    g = small()
    p = g.params["c1.weight"]
    assert not p.materialised
    full = archdsl.load(SPEC).params["c1.weight"].value
    new = g.resize_param("c1.weight", 0, [3, 1])
    assert new.shape == (2, 3, 3, 3)
    assert np.array_equal(new.value, full[[3, 1]])      # sliced, not re-drawn at the new shape


def test_resize_then_retype_prunes_channels_exactly():
    """Remove channels 1 and 2 of the residual stream: c1's filters, b1's entries, c2's filters and
    in-slices (the add couples c2's output with c1's stream) and fc's column blocks. The result equals
    the original with those channels masked (producers' filters and biases, bn's weight and bias zeroed)."""
    from archdsl.ir.verify import infer_types
    g = small()
    keep, drop = [0, 3], [1, 2]
    masked = g.copy()
    for name in ("c1.weight", "c1.bias", "b1.weight", "b1.bias", "c2.weight", "c2.bias"):
        v = masked.params[name].value.copy()
        v[drop] = 0
        masked.params[name].value = v
    for name, axis in [("c1.weight", 0), ("c1.bias", 0), ("b1.weight", 0), ("b1.bias", 0),
                       ("b1.running_mean", 0), ("b1.running_var", 0), ("c2.weight", 0), ("c2.weight", 1),
                       ("c2.bias", 0)]:
        g.resize_param(name, axis, keep)
    columns = np.arange(4 * 64).reshape(4, 64)[keep].reshape(-1)      # flatten: channel c is block c
    g.resize_param("fc.weight", 1, columns)
    for scope in ("c1", "c2"):
        nid = g.by_scope(scope)
        g.update(nid, attrs={**g.data(nid)["attrs"], "out_channels": 2})
    infer_types(g, update=True)
    verify(g)
    assert g.param_count() < masked.param_count()
    assert np.allclose(forward(g, X), forward(masked, X), atol=1e-5)


def test_resize_errors_are_typed():
    g = small()
    with pytest.raises(IRError, match="There is no parameter c9.weight to resize."):
        g.resize_param("c9.weight", 0, [0])
    with pytest.raises(IRError, match="Parameter c1.weight has 4 dimensions; it has no axis 4."):
        g.resize_param("c1.weight", 4, [0])
    with pytest.raises(IRError, match="Cannot keep indices 0..7 of axis 0 of c1.weight, which has 4 entries."):
        g.resize_param("c1.weight", 0, [0, 7])


# ---- copies -----------------------------------------------------------------------------------

def test_copy_shares_arrays_copy_on_write():
    g = small()
    v = g.params["c1.weight"].value
    c = g.copy()
    assert c.params["c1.weight"].value is v                 # no array copied
    with pytest.raises(ValueError):
        c.params["c1.weight"].value[0] = 1.0                 # shared arrays are read-only
    c.params["c1.weight"].value = np.zeros_like(v)           # assigning replaces the copy's only
    assert not np.any(c.params["c1.weight"].value) and np.array_equal(g.params["c1.weight"].value, v)


def test_copy_shares_no_nested_attribute_or_meta():
    g = archdsl.load("model m() { input x: [8]\n output x -> r: reshape([2, 4]) }")
    g.update(g.by_scope("r"), meta={"notes": ["a"], "d": {"k": [1]}})
    c = g.copy()
    c.data(c.by_scope("r"))["meta"]["notes"].append("b")
    c.data(c.by_scope("r"))["meta"]["d"]["k"].append(2)
    assert g.data(g.by_scope("r"))["meta"] == {"notes": ["a"], "d": {"k": [1]}}


def test_a_pass_that_changes_nothing_copies_no_array():
    from archdsl.passes import run_pipeline
    g = archdsl.load("zoo_specs/resnet.arch", "resnet18", size=32)
    before = {k: p.value for k, p in g.params.items()}
    out = run_pipeline(g, "dce,drop-inference-noops").graph
    assert all(out.params[k].value is before[k] for k in before)
