"""verify() enforces every invariant of docs/ir.md with a typed, located IRError (never a networkx error)."""
from __future__ import annotations

import numpy as np
import pytest

import archdsl
from archdsl import ArchError
from archdsl.diagnostics import IRError
from archdsl.ir import serialize
from archdsl.ir.params import Param
from archdsl.ir.printer import print_graph
from archdsl.ir.types import QuantParams
from archdsl.ir.verify import verify

SPEC = """
model m() {
    input x: [3, 8, 8]
    output x -> c1: conv(4, 3, padding=1) -> b1: bn -> relu -> c2: conv(4, 1) -> flatten -> fc: linear(5)
}
"""


def small():
    return archdsl.load(SPEC)


def check(g, message):
    with pytest.raises(IRError) as info:
        verify(g)
    assert info.value.message == message
    assert isinstance(info.value, ArchError)
    return info.value


def test_a_loaded_model_verifies():
    verify(small())


def test_a_cycle_is_a_typed_error_naming_it():
    g = small()
    c1, c2 = g.by_scope("c1"), g.by_scope("c2")
    g.set_inputs(c1, [c2])
    err = check(g, "The graph has a cycle (@c1 -> @b1 -> @2 -> @c2 -> @c1); a dataflow graph must be acyclic.")
    assert err.span is not None
    with pytest.raises(IRError):          # every traversal reports it, not only verify
        list(g.nodes())


def test_duplicate_scopes_are_refused():
    g = small()
    g.update(g.by_scope("c2"), scope="c1", params={"weight": "c1.weight", "bias": "c1.bias"})
    check(g, "Two nodes are named @c1 (a conv and a conv); scopes must be unique, so give the new node a fresh one "
             "(Graph.fresh_scope).")


def test_a_node_inside_another_nodes_scope_is_refused():
    g = small()
    relu = g.users(g.by_scope("b1"))[0]
    g.update(relu, scope="b1.act")
    check(g, "Node @b1 is also the scope around node @b1.act; a scope names either one op or the scope that "
             "contains others, so rename one of them.")


def test_parameters_are_named_by_scope_and_owned_by_one_node():
    g = small()
    c2 = g.by_scope("c2")
    g.update(c2, scope="c3")
    check(g, "Node @c3 (conv) names its parameter 'weight' c2.weight; it must be c3.weight, the node's scope and "
             "the local name.")
    g = small()
    g.add_param(Param("stray.weight", (2,)))
    check(g, "Parameter stray.weight belongs to no node; remove it or give it to the node it belongs to.")


def test_attributes_are_complete_and_typed():
    g = small()
    c1 = g.by_scope("c1")
    g.update(c1, attrs={**g.data(c1)["attrs"], "groups": 1.0})
    check(g, "Node @c1 (conv) has attribute groups=1.0, which is not int.")
    g = small()
    attrs = dict(g.data(c1)["attrs"])
    del attrs["dilation"]
    g.update(c1, attrs=attrs)
    err = check(g, "Node @c1 (conv) cannot be typed: its attributes are malformed (KeyError: 'dilation').")
    assert err.span.line == 4
    g = small()
    g.update(c1, attrs={**g.data(c1)["attrs"], "colour": "red"})
    check(g, "Node @c1 (conv) has the attribute 'colour', which 'conv' does not take.")


def test_recorded_types_must_match_the_rules():
    g = small()
    c1 = g.by_scope("c1")
    g.update(c1, dtype="float16")
    check(g, "Node @c1 (conv) records type (N, 4, 8, 8) float16 but its inputs give (N, 4, 8, 8).")
    g = small()
    g.update(c1, dtype="complex64")
    check(g, "Node @c1 (conv) records a bad dtype: 'complex64' is not an IR dtype; the dtypes are float32, "
             "float16, bfloat16, int8, uint8, int32, int64, bool.")
    g = small()
    g.update(c1, shape=("N", 5, 8, 8))
    check(g, "Node @c1 (conv) records shape (N, 5, 8, 8) but its inputs give (N, 4, 8, 8).")


def test_quantisation_parameters_are_checked():
    g = small()
    c1 = g.by_scope("c1")
    with pytest.raises(IRError) as info:
        g.insert_after(c1, "quantize", {"dtype": "int8", "scale": (0.1, 0.2), "zero_point": (0, 0), "axis": 1})
    assert info.value.message == ("'quantize' to int8 has unusable parameters: it has 2 scales but dimension 1 has "
                                  "4 entries.")
    with pytest.raises(IRError) as info:
        g.insert_after(c1, "quantize", {"dtype": "uint8", "scale": (0.1,), "zero_point": (300,)})
    assert info.value.message == ("'quantize' to uint8 has unusable parameters: every zero point must lie in the "
                                  "range of uint8, 0 to 255.")
    q = g.insert_after(c1, "quantize", {"dtype": "uint8", "scale": (0.1,), "zero_point": (3,)})
    g.insert_after(q, "dequantize")
    verify(g)
    g.update(q, quant=QuantParams((0.1,), (4,)))
    check(g, "Node @c1_quantize (quantize) records type (N, 4, 8, 8) uint8 q[scale=0.1, zero_point=4] but its "
             "inputs give (N, 4, 8, 8) uint8 q[scale=0.1, zero_point=3].")


def test_parameter_shapes_and_dtypes_are_checked():
    g = small()
    g.params["c1.bias"] = Param("c1.bias", (5,))
    check(g, "Parameter c1.bias has shape (5); the op needs (4).")
    g = small()
    g.params["c1.bias"] = Param("c1.bias", (4,), dtype="float16")
    check(g, "Parameter c1.bias is float16; 'conv' needs float32.")


def test_inputs_and_outputs_are_checked():
    g = small()
    g.outputs = []
    check(g, "The graph has no outputs.")
    g = small()
    g.outputs = [999]
    check(g, "The graph names node %999 as an output, but it does not exist.")


def test_edits_that_break_edges_raise_typed_errors():
    g = small()
    with pytest.raises(IRError, match="Cannot make node %1 read node %999, which does not exist."):
        g.set_inputs(1, [999])
    with pytest.raises(IRError, match=r"Cannot remove node @c1: it is still used by @b1."):
        g.remove_node(g.by_scope("c1"))
    with pytest.raises(IRError, match="Use set_inputs to change a node's operands"):
        g.update(g.by_scope("c1"), inputs=())


# ---- dtypes survive save and load ------------------------------------------------------------

def test_types_round_trip_through_save_and_load(tmp_path):
    g = small()
    c1 = g.by_scope("c1")
    q = g.insert_after(c1, "quantize", {"dtype": "int8", "scale": (0.1, 0.2, 0.3, 0.4), "zero_point": (0, 0, 0, 0),
                                        "axis": 1})
    d = g.insert_after(q, "dequantize")
    h = g.insert_after(d, "cast", {"dtype": "float16"})
    g.insert_after(h, "cast", {"dtype": "float32"})
    g.params["fc.bias"] = g.params["fc.bias"].resized(np.arange(5, dtype=np.float32))
    serialize.save(g, tmp_path / "g.json")
    back = serialize.load(tmp_path / "g.json")
    verify(back)
    assert print_graph(back) == print_graph(g)
    assert back.type_of(q) == g.type_of(q) and back.type_of(q).quant.axis == 1
    assert back.type_of(h).dtype == "float16"
    assert np.array_equal(back.params["fc.bias"].value, np.arange(5, dtype=np.float32))


def test_bfloat16_and_quantised_parameters_round_trip(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    g = small()
    bf = Param("extra", (3,), dtype="bfloat16")
    bf.value = np.array([1.5, -2.0, 3.25], dtype=ml_dtypes.bfloat16)
    q = Param("q", (4,), dtype="int8", quant=QuantParams((0.5,), (0,)))
    q.value = np.array([1, -2, 3, 127], dtype=np.int8)
    g.add_param(bf)
    g.add_param(q)
    serialize.save(g, tmp_path / "g.json")             # .npz has no bfloat16: stored as its uint16 bits
    back = serialize.load(tmp_path / "g.json")
    assert back.params["extra"].value.dtype == ml_dtypes.bfloat16
    assert np.array_equal(back.params["extra"].value.astype(np.float32), [1.5, -2.0, 3.25])
    assert back.params["q"].quant == QuantParams((0.5,), (0,)) and back.params["q"].value.dtype == np.int8
    assert np.array_equal(back.params["q"].value, [1, -2, 3, 127])
