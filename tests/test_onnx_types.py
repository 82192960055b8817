"""Typed values in the ONNX backend: dtypes, quantisation, casts and value_info.

* ``quantize`` / ``dequantize`` graphs (per-tensor uint8 and int8, per-channel int8 along
  axis 1, and int32, which ONNX's QuantizeLinear cannot produce and is spelled out) pass the
  full checker at opsets 13, 20 and 21, and onnxruntime gives exactly the integers of
  a NumPy reference of q = saturate(round_half_to_even(x / s) + z), the floats of
  x = (q - z) * s, and the ONNX outputs have the IR's dtypes. The inputs are chosen so that
  rounding ties and saturation at both ends occur (asserted, so the reference is exercised).
* Those graphs survive ``archdsl.ir.serialize`` (JSON + npz): the same printed IR and the same
  ONNX bytes.
* float16 graphs (made with ``cast``) check and run: every tensor is float16, the lowerings'
  constants too, float32 parameters are cast; bfloat16 checks where ONNX defines the operators
  and is refused, at the node, where it does not.
* Every zoo model declares ``value_info`` for every IR tensor that is neither an input nor an
  output, with the IR's shape and dtype, which ONNX shape inference (strict) reproduces.
"""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import archdsl  # noqa: E402
from archdsl import ArchError  # noqa: E402
from archdsl.backends.onnx_export import DEFAULT_OPSET, _skeleton, onnx_bytes, to_onnx  # noqa: E402
from archdsl.backends.onnx_ops import onnx_dtype  # noqa: E402
from archdsl.ir import serialize  # noqa: E402
from archdsl.ir.printer import print_graph  # noqa: E402
from archdsl.ir.types import DTYPES, INT_RANGES  # noqa: E402
from archdsl.ir.verify import infer_types, verify  # noqa: E402
from onnx import TensorProto  # noqa: E402
from zoo import ZOO, load_small, zoo_models  # noqa: E402

SPEC = "model m() { input x: [3, 8, 8]\n output x -> c: conv(4, 3, padding=1) -> relu }"
OPS = ZOO.parent / "tests" / "specs" / "onnx_ops.arch"
OPSETS = [13, DEFAULT_OPSET, 21]      # 21: QuantizeLinear/DequantizeLinear revised (onnxruntime 1.32 runs to 25)


def run(model, *xs) -> list:
    """onnxruntime on the CPU, one thread, graph optimisations off (no QDQ fusion in the way)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = model if isinstance(model, bytes) else model.SerializeToString()
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), xs)})


def test_onnx_dtype_covers_every_ir_dtype():
    want = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16,
            "int8": TensorProto.INT8, "uint8": TensorProto.UINT8, "int32": TensorProto.INT32,
            "int64": TensorProto.INT64, "bool": TensorProto.BOOL}
    assert {d: onnx_dtype(d) for d in DTYPES} == want


# ---- NumPy references --------------------------------------------------------------------

def _along(values, axis, ndim, dtype):
    shape = [1] * ndim
    if axis is not None:
        shape[axis] = -1
    return np.asarray(values, dtype).reshape(shape)


def quantize_ref(x, scale, zero, axis, dtype):
    """q = saturate(round_half_to_even(x / s) + z), s in float32, per channel along ``axis``."""
    s, z = _along(scale, axis, x.ndim, np.float32), _along(zero, axis, x.ndim, np.float64)
    lo, hi = INT_RANGES[dtype]
    return np.clip(np.rint(x / s).astype(np.float64) + z, lo, hi).astype(dtype)


def dequantize_ref(q, scale, zero, axis):
    """x = float32(q - z) * s."""
    s, z = _along(scale, axis, q.ndim, np.float32), _along(zero, axis, q.ndim, np.int64)
    return (q.astype(np.int64) - z).astype(np.float32) * s


def conv_ref(x, w, b, pad):
    """Cross-correlation with zero padding, in float64."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(xp, w.shape[2:], axis=(2, 3))
    return np.einsum("nchwij,ocij->nohw", win, w.astype(np.float64)) + b[:, None, None]


# ---- quantise -> dequantise --------------------------------------------------------------

# (dtype, (scale, zero_point, axis) on the input x, the same on the conv's result c)
CASES = {
    "uint8": ("uint8", ((0.5,), (128,), None), ((0.02,), (100,), None)),
    "int8": ("int8", ((0.25,), (-3,), None), ((0.01,), (0,), None)),
    "int8_per_channel": ("int8", ((0.5, 0.25, 0.125), (0, -5, 7), 1),
                         ((0.01, 0.02, 0.03, 0.005), (1, -2, 3, 0), -3)),
    "int32_per_channel": ("int32", ((0.5, 1e-7, 0.125), (3, 0, -2), 1), ((1e-4,), (-7,), None)),
}


def quant_graph(case: str):
    """x -> quantize -> dequantize -> c: conv -> quantize -> dequantize -> relu, with the two
    integer tensors and the conv's result as extra outputs (output, q_x, c, q_c)."""
    dtype, on_x, on_c = CASES[case]
    g = archdsl.load(SPEC)
    c = g.by_scope("c")
    q_x = g.insert_after(g.inputs[0], "quantize", dict(zip(("scale", "zero_point", "axis"), on_x), dtype=dtype))
    g.insert_after(q_x, "dequantize")
    q_c = g.insert_after(c, "quantize", dict(zip(("scale", "zero_point", "axis"), on_c), dtype=dtype))
    g.insert_after(q_c, "dequantize")
    g.outputs += [q_x, c, q_c]
    verify(g)
    return g


def crafted_input() -> np.ndarray:
    """Multiples of 1/16 (so x / s hits halves for s = 1/8, 1/4, 1/2) and +-1000 (saturation)."""
    x = np.random.default_rng(0).integers(-48, 49, (2, 3, 8, 8)).astype(np.float32) / 16
    x[0, :, 0, :2], x[1, :, 0, :2] = 1000.0, -1000.0
    return x


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("case", list(CASES))
def test_quantize_dequantize_matches_numpy(case, opset):
    dtype, on_x, on_c = CASES[case]
    g = quant_graph(case)
    data = onnx_bytes(g, opset=opset)
    onnx.checker.check_model(data, full_check=True)
    model = onnx.load_from_string(data)
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == \
        [TensorProto.FLOAT, onnx_dtype(dtype), TensorProto.FLOAT, onnx_dtype(dtype)]
    ops = {n.op_type for n in model.graph.node}
    assert ("QuantizeLinear" in ops) == (dtype != "int32") and "DequantizeLinear" in ops

    x = crafted_input()
    out, q_x, c, q_c = run(data, x)
    assert q_x.dtype == q_c.dtype == np.dtype(dtype)
    want_q_x = quantize_ref(x, *on_x, dtype)
    ratio = x / _along(on_x[0], on_x[2], 4, np.float32)
    lo, hi = INT_RANGES[dtype]
    assert np.any(ratio % 1 == 0.5) and (want_q_x == lo).any() and (want_q_x == hi).any()   # ties, saturation
    np.testing.assert_array_equal(q_x, want_q_x)

    w, b = (g.params[f"c.{k}"].value for k in ("weight", "bias"))
    np.testing.assert_allclose(c, conv_ref(dequantize_ref(want_q_x, *on_x), w, b, 1), rtol=1e-5, atol=1e-4)
    want_q_c = quantize_ref(c, *on_c, dtype)
    np.testing.assert_array_equal(q_c, want_q_c)
    np.testing.assert_allclose(out, np.maximum(dequantize_ref(want_q_c, *on_c), 0), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", list(CASES))
def test_quantised_graphs_survive_serialisation(case, tmp_path):
    g = quant_graph(case)
    serialize.save(g, tmp_path / "g.json")
    back = serialize.load(tmp_path / "g.json")
    verify(back)
    assert print_graph(back) == print_graph(g)
    assert "q[" in print_graph(back)
    assert onnx_bytes(back) == onnx_bytes(g)


# ---- float16 and bfloat16 ------------------------------------------------------------------

def test_cast_to_float16_and_back():
    g = archdsl.load(SPEC)
    half = g.insert_after(g.inputs[0], "cast", {"dtype": "float16"})
    g.insert_after(half, "cast", {"dtype": "float32"})
    g.outputs.append(half)
    verify(g)
    model = to_onnx(g)
    onnx.checker.check_model(model, full_check=True)
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [TensorProto.FLOAT, TensorProto.FLOAT16]
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8), dtype=np.float32) * 100
    out, h = run(model, x)
    assert h.dtype == np.float16
    np.testing.assert_array_equal(h, x.astype(np.float16))
    w, b = (g.params[f"c.{k}"].value for k in ("weight", "bias"))
    want = np.maximum(conv_ref(x.astype(np.float16).astype(np.float32), w, b, 1), 0)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-3)


def in_dtype(g, dtype: str):
    """``g`` computing in ``dtype``: a cast after every input, types re-inferred, float32 outputs."""
    for i in list(g.inputs):
        g.insert_after(i, "cast", {"dtype": dtype})
    infer_types(g, update=True)
    for o in list(dict.fromkeys(g.outputs)):
        back = g.insert_after(o, "cast", {"dtype": "float32"})
        for user in g.users(back):          # only the outputs move to the cast
            g.set_inputs(user, [o if i == back else i for i in g.data(user)["inputs"]])
    verify(g)
    return g


FLOAT16_MODELS = [(OPS, m) for m in ("pools", "activations", "shapes", "two_outputs")] + [(SPEC, None)]


@pytest.mark.parametrize("opset", [19, DEFAULT_OPSET])       # 19: gelu spelled out with constants
@pytest.mark.parametrize("source,model", FLOAT16_MODELS, ids=[m or "conv" for _, m in FLOAT16_MODELS])
def test_float16_graph_checks_and_runs(source, model, opset):
    g32 = archdsl.load(source, model)
    g = in_dtype(archdsl.load(source, model), "float16")
    m = to_onnx(g, opset=opset)
    onnx.checker.check_model(m, full_check=True)
    params = set(g.params)
    inits = {t.name: t.data_type for t in m.graph.initializer}
    assert {inits[p] for p in params if p in inits} == {TensorProto.FLOAT}      # the IR's float32 weights
    consts = {t for n, t in inits.items() if n not in params and t not in (TensorProto.INT64,)}
    assert consts <= {TensorProto.FLOAT16}
    inner = {v.name: v.type.tensor_type.elem_type for v in m.graph.value_info}
    names = _skeleton(g, opset, False)[2]
    halves = [names[n] for n in g.node_ids() if g.data(n)["dtype"] == "float16"]
    assert len(halves) > 2 and {inner[name] for name in halves} == {TensorProto.FLOAT16}
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((2, *g32.data(i)["shape"][1:]), dtype=np.float32) for i in g32.inputs]
    for got, want in zip(run(m, *xs), run(to_onnx(g32, opset=opset), *xs)):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-2 * max(1.0, float(np.abs(want).max())))


BF16_SPEC = "model m() { input x: [3, 8, 8]\n output x -> c: conv(4, 3, padding=1) -> bn(affine=false) -> relu6 }"


def test_bfloat16_checks_where_onnx_has_it_and_is_refused_where_not():
    g = in_dtype(archdsl.load(BF16_SPEC), "bfloat16")
    m = to_onnx(g, opset=22)
    onnx.checker.check_model(m, full_check=True)
    consts = {t.data_type for t in m.graph.initializer if t.name not in g.params}
    assert consts == {TensorProto.BFLOAT16}          # bn's ones and zeros, relu6's bounds
    with pytest.raises(ArchError) as info:
        to_onnx(g, opset=20)
    assert info.value.message == ("'conv' (at 'c') computes in bfloat16, but the ONNX operator Conv of opset 20 "
                                  "takes no bfloat16 input; ask for --opset 22 or newer, or cast it to float32 "
                                  "first.")
    assert info.value.span == g.data(g.by_scope("c"))["span"]


# ---- value_info ------------------------------------------------------------------------------

def shapes_and_types(values) -> dict:
    out = {}
    for v in values:
        t = v.type.tensor_type
        out[v.name] = (tuple(d.dim_param if d.HasField("dim_param") else d.dim_value for d in t.shape.dim),
                       t.elem_type)
    return out


def check_value_info(g, functions: bool = False) -> None:
    """value_info holds exactly the IR tensors of the main graph that are not inputs or outputs, with
    the IR's shapes and dtypes; strict shape inference on the model without them gives the same."""
    model, weights, names = _skeleton(g, None, functions)
    declared = {v.name for v in list(model.graph.input) + list(model.graph.output)}
    want = {name: (tuple(g.data(nid)["shape"]), onnx_dtype(g.data(nid)["dtype"]))
            for nid, name in names.items() if name not in declared}
    got = shapes_and_types(model.graph.value_info)
    assert [v.name for v in model.graph.value_info] == list(dict.fromkeys(v.name for v in model.graph.value_info))
    assert got == want and len(got) > 0
    del model.graph.value_info[:]
    for name, array in weights:         # big weights as typed inputs: same shapes, no copying
        if array.size > 64:
            model.graph.input.append(onnx.helper.make_tensor_value_info(
                name, onnx.helper.np_dtype_to_tensor_dtype(array.dtype), array.shape))
        else:
            model.graph.initializer.append(onnx.numpy_helper.from_array(array, name))
    inferred = shapes_and_types(onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True,
                                                                  data_prop=True).graph.value_info)
    assert {k: inferred[k] for k in want if k in inferred} == want
    assert len(set(want) & set(inferred)) == len(want)


ZOO_MODELS = zoo_models()


@pytest.mark.parametrize("file,model", ZOO_MODELS, ids=[f"{f}::{m}" for f, m in ZOO_MODELS])
def test_zoo_models_declare_value_info(file, model):
    check_value_info(load_small(file, model))


def test_value_info_with_functions_covers_the_main_graph():
    g = load_small("resnet.arch", "resnet18")
    check_value_info(g, functions=True)
    m = to_onnx(g, functions=True)
    assert [v.name for v in m.graph.value_info] == [
        "conv1", "bn1", "2", "maxpool", "layer1.0.6", "layer1.1.6", "layer2.0.7", "layer2.1.6", "layer3.0.7",
        "layer3.1.6", "layer4.0.7", "layer4.1.6", "avgpool", "9"]        # each block's result, not its insides
    assert all(not f.value_info for f in m.functions)


def test_value_info_is_deterministic():
    g = archdsl.load(OPS, "activations")
    assert onnx_bytes(g) == onnx_bytes(archdsl.load(OPS, "activations"))
    assert len(to_onnx(g).graph.value_info) > 10
