"""Lowering rules: one IR op to ONNX nodes (standard domain, inference semantics).

Each rule takes a :class:`Body` (where nodes go), the IR node's data, the ONNX
names of its operands and the name its result must get. The maths of the less
direct lowerings:

* ``linear``: y = x W^T + b is ``Gemm(transB=1)`` on 2-D input, else ``MatMul(x, Transpose(W)) + b``.
* ``bn`` (running statistics): y = (x - mean) / sqrt(var + eps) * gamma + beta, ``BatchNormalization``
  with ones and zeros for gamma and beta when the layer is not affine.
* ``relu6`` = ``Clip(x, 0, 6)``; ``hardsigmoid`` = ``HardSigmoid(alpha=1/6, beta=1/2)`` = relu6(x + 3) / 6;
  ``silu`` = x * sigmoid(x); ``gelu`` below opset 20 = x/2 * (1 + erf(x / sqrt 2)).
* ``lrn``: b_c = a_c / (k + alpha/n * sum_{c' in window(c)} a_c'^2)^beta. ONNX's ``LRN`` centres
  the window as PyTorch does only for odd n (PyTorch takes n//2 channels before and (n-1)//2
  after); even n is spelled out as a padded average pool of a^2 over channels.
* ``adaptive_*pool`` to (oh, ow): output cell (i, j) reduces rows floor(i*H/oh)..ceil((i+1)*H/oh)-1
  and the same for columns. A 1x1 output is a global pool; sizes that divide evenly are one
  ordinary pool with kernel = stride = H/oh; otherwise the reduction is separable (rows, then
  columns) and is spelled out as slices, reductions and a concatenation per axis.
* ``flatten`` / ``reshape`` keep the batch dimension symbolic: ``Reshape`` with 0 (copy) in front.
* ``affine_grid`` builds its size argument [N, C, H, W] from the batch of theta at run time.
* Types: every tensor has its IR node's dtype; a lowering's constants take the dtype of the
  node they feed, and a float parameter of a node computing in another float dtype (a
  float32 conv weight in a float16 graph) is ``Cast`` to it first.
* ``quantize`` (QuantizeLinear): q = saturate(round_half_to_even(x / s) + z), with s rounded to
  float32 and x cast to float32 first; per channel, s and z are 1-D along ``axis``. ONNX has no
  int32 output in any opset, so int32 is spelled out: ``Div``, ``Round``, then the zero point
  and the saturation in float64 (exact over the whole int32 range), then ``Cast``.
* ``dequantize`` (DequantizeLinear): x = float32(q - z) * s, with s, z and axis from the input's
  quantisation; ``cast`` is ``Cast``.
* ``layer_norm`` over ``dim``: y = (x - mean) / sqrt(var + eps) * weight + bias, mean and biased
  variance along ``dim``. From opset 17 ``LayerNormalization(axis=-1)``, with a ``Transpose`` moving
  dimension 1 to the end and back when ``dim`` is 1 of a larger rank (ConvNeXt's LayerNorm2d does the
  same permutes); before 17 spelled out as ReduceMean, Sub, Mul, ReduceMean, Add, Sqrt, Div, Mul, Add.
* ``permute`` is ``Transpose``; ``scale`` is ``Mul(p, x)`` (p broadcasts from the right, as in
  PyTorch); ``drop_path`` is ``Identity`` (stochastic depth is the identity in inference).
"""
from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto, helper

from ..ir.types import INT_RANGES, numpy_dtype

# The oldest opset each op's lowering needs; ops not listed work from MIN_OPSET.
OP_MIN_OPSET = {"affine_grid": (20, "AffineGrid"), "grid_sample": (16, "GridSample")}
MIN_OPSET = 13          # single-axis Softmax, Unsqueeze/Squeeze with axes as an input
# QuantizeLinear/DequantizeLinear (per-channel axis included) and Cast need nothing newer:
# every IR dtype is in their opset-13 type lists, and int32 quantisation is spelled out.


def onnx_dtype(dtype: str) -> int:
    """The TensorProto element type of an IR dtype (bfloat16 through ml_dtypes)."""
    return helper.np_dtype_to_tensor_dtype(numpy_dtype(dtype))


def _scalar(n, value) -> np.ndarray:
    """``value`` as a 0-D array of the node's dtype (for a lowering's constants)."""
    return np.array(value, numpy_dtype(n["dtype"]))


def _pads(a) -> list:
    ph, pw = a["padding"]
    return [ph, pw, ph, pw]


def _conv(b, n, ins, out, shapes):
    a = n["attrs"]
    args = [ins[0], b.param(n, "weight")] + ([b.param(n, "bias")] if a["bias"] else [])
    b.node("Conv", args, [out], kernel_shape=list(a["kernel_size"]), strides=list(a["stride"]),
           pads=_pads(a), dilations=list(a["dilation"]), group=a["groups"])


def _linear(b, n, ins, out, shapes):
    a = n["attrs"]
    w = b.param(n, "weight")
    bias = [b.param(n, "bias")] if a["bias"] else []
    if len(shapes[0]) == 2:
        b.node("Gemm", [ins[0], w] + bias, [out], transB=1)
        return
    wt = b.tmp("weight_t")
    b.node("Transpose", [w], [wt], perm=[1, 0], suffix="Transpose")
    if bias:
        mm = b.tmp("matmul")
        b.node("MatMul", [ins[0], wt], [mm], suffix="MatMul")
        b.node("Add", [mm, bias[0]], [out])
    else:
        b.node("MatMul", [ins[0], wt], [out])


def _bn(b, n, ins, out, shapes):
    a = n["attrs"]
    c = shapes[0][1]
    if a["affine"]:
        scale, shift = b.param(n, "weight"), b.param(n, "bias")
    else:
        dt = numpy_dtype(n["dtype"])
        scale, shift = b.const("scale", np.ones(c, dt)), b.const("shift", np.zeros(c, dt))
    extra = {} if a.get("momentum") is None else {"momentum": 1.0 - float(a["momentum"])}   # ONNX keeps 1 - m
    b.node("BatchNormalization", [ins[0], scale, shift, b.param(n, "running_mean"), b.param(n, "running_var")],
           [out], epsilon=float(a["eps"]), **extra)


def _simple(op_type, **fixed):
    def rule(b, n, ins, out, shapes):
        b.node(op_type, list(ins), [out], **{k: (v(n["attrs"]) if callable(v) else v) for k, v in fixed.items()})
    return rule


def _relu6(b, n, ins, out, shapes):
    b.node("Clip", [ins[0], b.const("min", _scalar(n, 0.0)), b.const("max", _scalar(n, 6.0))], [out])


def _silu(b, n, ins, out, shapes):
    s = b.tmp("sigmoid")
    b.node("Sigmoid", [ins[0]], [s], suffix="Sigmoid")
    b.node("Mul", [ins[0], s], [out])


def _gelu(b, n, ins, out, shapes):
    if b.opset >= 20:
        b.node("Gelu", [ins[0]], [out])
        return
    x = ins[0]
    scaled, erf, one_plus, half = b.tmp("scaled"), b.tmp("erf"), b.tmp("one_plus"), b.tmp("half")
    b.node("Div", [x, b.const("sqrt2", _scalar(n, math.sqrt(2.0)))], [scaled], suffix="Div")
    b.node("Erf", [scaled], [erf], suffix="Erf")
    b.node("Add", [erf, b.const("one", _scalar(n, 1.0))], [one_plus], suffix="Add")
    b.node("Mul", [x, b.const("half", _scalar(n, 0.5))], [half], suffix="Mul")
    b.node("Mul", [half, one_plus], [out])


def _hardswish(b, n, ins, out, shapes):
    if b.opset >= 14:
        b.node("HardSwish", [ins[0]], [out])
        return
    gate = b.tmp("gate")
    b.node("HardSigmoid", [ins[0]], [gate], alpha=1.0 / 6.0, beta=0.5, suffix="HardSigmoid")
    b.node("Mul", [ins[0], gate], [out])


def _layer_norm(b, n, ins, out, shapes):
    a, rank = n["attrs"], len(shapes[0])
    d = a["dim"] % rank
    c = shapes[0][d]
    dt = numpy_dtype(n["dtype"])
    if a["affine"]:
        w, bias = b.param(n, "weight"), b.param(n, "bias")
    else:
        w, bias = b.const("ones", np.ones(c, dt)), b.const("zeros", np.zeros(c, dt))
    last = d == rank - 1
    to_end = [k for k in range(rank) if k != d] + [d]
    back = [to_end.index(k) for k in range(rank)]
    x = ins[0]
    if not last:
        x = b.tmp("channels_last")
        b.node("Transpose", [ins[0]], [x], perm=to_end, suffix="Transpose")
    normed = out if last else b.tmp("normalised")
    if b.opset >= 17:
        b.node("LayerNormalization", [x, w, bias], [normed], axis=-1, epsilon=float(a["eps"]),
               suffix=None if last else "LayerNormalization")
    else:
        mean, diff, sq, var, shifted, std, unit, scaled = (b.tmp(t) for t in (
            "mean", "centred", "square", "variance", "variance_eps", "std", "unit", "scaled"))
        _reduce(b, "ReduceMean", x, mean, rank - 1, "Mean")
        b.node("Sub", [x, mean], [diff], suffix="Sub")
        b.node("Mul", [diff, diff], [sq], suffix="Square")
        _reduce(b, "ReduceMean", sq, var, rank - 1, "Variance")
        b.node("Add", [var, b.const("eps", _scalar(n, a["eps"]))], [shifted], suffix="Eps")
        b.node("Sqrt", [shifted], [std], suffix="Sqrt")
        b.node("Div", [diff, std], [unit], suffix="Div")
        b.node("Mul", [unit, w], [scaled], suffix="Weight")
        b.node("Add", [scaled, bias], [normed], suffix=None if last else "Bias")
    if not last:
        b.node("Transpose", [normed], [out], perm=back)


def _permute(b, n, ins, out, shapes):
    rank = len(shapes[0])
    b.node("Transpose", [ins[0]], [out], perm=[k % rank for k in n["attrs"]["dims"]])


def _scale(b, n, ins, out, shapes):
    b.node("Mul", [b.param(n, "weight"), ins[0]], [out])


def _softmax(op_type):
    def rule(b, n, ins, out, shapes):
        b.node(op_type, [ins[0]], [out], axis=n["attrs"]["dim"] % len(shapes[0]))
    return rule


def _lrn(b, n, ins, out, shapes):
    a = n["attrs"]
    size = a["size"]
    if size % 2:
        b.node("LRN", [ins[0]], [out], size=size, alpha=float(a["alpha"]), beta=float(a["beta"]),
               bias=float(a["k"]))
        return
    rank = len(shapes[0])
    x = ins[0]
    sq, sq5, padded, avg, avg4, scaled, biased, den = (b.tmp(s) for s in (
        "square", "square_5d", "padded", "window_mean", "window_mean_4d", "scaled", "biased", "denominator"))
    b.node("Mul", [x, x], [sq], suffix="Square")
    b.node("Unsqueeze", [sq, b.const("axis1", np.array([1], np.int64))], [sq5], suffix="Unsqueeze")
    pads = [0] * (rank + 1) * 2
    pads[2], pads[rank + 1 + 2] = size // 2, (size - 1) // 2
    b.node("Pad", [sq5, b.const("pads", np.array(pads, np.int64))], [padded], suffix="Pad")
    b.node("AveragePool", [padded], [avg], kernel_shape=[size] + [1] * (rank - 2), suffix="AveragePool")
    b.node("Squeeze", [avg, b.const("axis1", np.array([1], np.int64))], [avg4], suffix="Squeeze")
    b.node("Mul", [avg4, b.const("alpha", _scalar(n, a["alpha"]))], [scaled], suffix="Alpha")
    b.node("Add", [scaled, b.const("k", _scalar(n, a["k"]))], [biased], suffix="K")
    b.node("Pow", [biased, b.const("beta", _scalar(n, a["beta"]))], [den], suffix="Pow")
    b.node("Div", [x, den], [out])


def _pool(op_type):
    """PyTorch's ceil mode drops a last window that would start in the right padding; ONNX
    shape inference keeps it. Where every window PyTorch keeps fits the padded input, floor
    mode gives the same windows, so ceil mode is only emitted where a window overhangs, and
    a dropped window (on the other axis) is sliced off."""
    def rule(b, n, ins, out, shapes):
        a = n["attrs"]
        k, s, p = a["kernel_size"], a["stride"] or a["kernel_size"], a["padding"]
        d = a.get("dilation", (1, 1))
        size, want = shapes[0][2:], n["shape"][2:]
        eff = [d[i] * (k[i] - 1) + 1 for i in range(2)]
        floor_out = [(size[i] + 2 * p[i] - eff[i]) // s[i] + 1 for i in range(2)]
        ceil = a["ceil_mode"] and list(want) != floor_out
        kw = dict(kernel_shape=list(k), strides=list(s), pads=_pads(a), ceil_mode=int(ceil))
        if op_type == "MaxPool":
            kw["dilations"] = list(d)
        else:
            kw["count_include_pad"] = int(a["count_include_pad"])
        onnx_out = [-(-(size[i] + 2 * p[i] - eff[i]) // s[i]) + 1 if ceil else floor_out[i] for i in range(2)]
        if onnx_out == list(want):
            b.node(op_type, [ins[0]], [out], **kw)
            return
        pooled = b.tmp("pooled")
        b.node(op_type, [ins[0]], [pooled], suffix=op_type, **kw)
        b.node("Slice", [pooled, b.const("starts", np.array([0, 0], np.int64)),
                         b.const("ends", np.array(want, np.int64)), b.const("axes", np.array([2, 3], np.int64))],
               [out])
    return rule


def _windows(size: int, out: int) -> list:
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


def _reduce(b, op_type, x, out, axis, suffix):
    if b.opset >= 18:
        b.node(op_type, [x, b.const(f"axes{axis}", np.array([axis], np.int64))], [out], keepdims=1, suffix=suffix)
    else:
        b.node(op_type, [x], [out], axes=[axis], keepdims=1, suffix=suffix)


def _adaptive(kind):
    glob, pool, red = {"avg": ("GlobalAveragePool", "AveragePool", "ReduceMean"),
                       "max": ("GlobalMaxPool", "MaxPool", "ReduceMax")}[kind]

    def rule(b, n, ins, out, shapes):
        (_, _, h, w), (oh, ow) = shapes[0], n["attrs"]["output_size"]
        if (oh, ow) == (1, 1):
            b.node(glob, [ins[0]], [out])
        elif h % oh == 0 and w % ow == 0:
            k = [h // oh, w // ow]
            b.node(pool, [ins[0]], [out], kernel_shape=k, strides=k)
        else:
            x = ins[0]
            for axis, size, osize in ((2, h, oh), (3, w, ow)):
                if size == osize:
                    continue
                parts = []
                for i, (s, e) in enumerate(_windows(size, osize)):
                    cut, part = b.tmp(f"axis{axis}_cut{i}"), b.tmp(f"axis{axis}_part{i}")
                    b.node("Slice", [x, b.const(f"start{s}", np.array([s], np.int64)),
                                     b.const(f"end{e}", np.array([e], np.int64)),
                                     b.const(f"axes{axis}", np.array([axis], np.int64))], [cut],
                           suffix=f"Slice{axis}_{i}")
                    _reduce(b, red, cut, part, axis, f"{red}{axis}_{i}")
                    parts.append(part)
                last = axis == 3 or w == ow
                joined = out if last else b.tmp(f"axis{axis}")
                b.node("Concat", parts, [joined], axis=axis, suffix=None if last else f"Concat{axis}")
                x = joined
            if x != out:            # neither axis needed work (cannot happen after the checks above)
                b.node("Identity", [x], [out])
    return rule


def _reshape(b, n, ins, out, shapes):
    a = n["attrs"]
    if n["op"] == "flatten" and a["start_dim"] == 1 and a["end_dim"] in (-1, len(shapes[0]) - 1):
        b.node("Flatten", [ins[0]], [out], axis=1)
        return
    target = np.array([0, *n["shape"][1:]], np.int64)      # 0: copy the (symbolic) batch size
    b.node("Reshape", [ins[0], b.const("shape", target)], [out])


def _transpose(b, n, ins, out, shapes):
    a, rank = n["attrs"], len(shapes[0])
    perm = list(range(rank))
    d0, d1 = a["dim0"] % rank, a["dim1"] % rank
    perm[d0], perm[d1] = perm[d1], perm[d0]
    b.node("Transpose", [ins[0]], [out], perm=perm)


def _slice(b, n, ins, out, shapes):
    a = n["attrs"]
    axis = a["dim"] % len(shapes[0])
    b.node("Slice", [ins[0], b.const("starts", np.array([a["start"]], np.int64)),
                     b.const("ends", np.array([a["end"]], np.int64)),
                     b.const("axes", np.array([axis], np.int64))], [out])


def _fold(op_type):
    """Left fold: ((x0 op x1) op x2) ..., the order PyTorch evaluates ``a + b + c`` in."""
    def rule(b, n, ins, out, shapes):
        if len(ins) == 1:
            b.node("Identity", [ins[0]], [out])
            return
        acc = ins[0]
        for i, x in enumerate(ins[1:], 1):
            last = i == len(ins) - 1
            nxt = out if last else b.tmp(f"partial{i}")
            b.node(op_type, [acc, x], [nxt], suffix=None if last else f"{op_type}{i}")
            acc = nxt
    return rule


def _concat(b, n, ins, out, shapes):
    b.node("Concat", list(ins), [out], axis=n["attrs"]["dim"] % len(shapes[0]))


def _affine_grid(b, n, ins, out, shapes):
    batch, size = b.tmp("batch"), b.tmp("size")
    b.node("Shape", [ins[0]], [batch], start=0, end=1, suffix="Shape")
    b.node("Concat", [batch, b.const("chw", np.array(n["attrs"]["size"], np.int64))], [size], axis=0,
           suffix="Size")
    b.node("AffineGrid", [ins[0], size], [out], align_corners=int(n["attrs"]["align_corners"]))


def _grid_sample(b, n, ins, out, shapes):
    a = n["attrs"]
    mode = a["mode"]
    if mode == "bilinear" and b.opset >= 20:
        mode = "linear"         # opset 20 renamed the modes to cover N-D grids
    b.node("GridSample", list(ins), [out], mode=mode, padding_mode=a["padding_mode"],
           align_corners=int(a["align_corners"]))


def _quant_arrays(quant, dtype: str, rank: int):
    """``(scale, zero_point, attrs)``: float32 and ``dtype`` arrays, 0-D per tensor or 1-D with ``axis``."""
    if quant.axis is None:
        return np.array(quant.scale[0], np.float32), np.array(quant.zero_point[0], numpy_dtype(dtype)), {}
    return (np.array(quant.scale, np.float32), np.array(quant.zero_point, numpy_dtype(dtype)),
            {"axis": quant.axis % rank})


def _quantize(b, n, ins, out, shapes):
    """q = saturate(round_half_to_even(float32(x) / s) + z): QuantizeLinear, or spelled out for int32."""
    x, rank = ins[0], len(shapes[0])
    if b.graph.data(n["inputs"][0])["dtype"] != "float32":
        x = b.tmp("float32")
        b.node("Cast", [ins[0]], [x], to=TensorProto.FLOAT, suffix="Cast")
    scale, zero, axis = _quant_arrays(n["quant"], n["dtype"], rank)
    if n["dtype"] != "int32":
        b.node("QuantizeLinear", [x, b.const("scale", scale), b.const("zero_point", zero)], [out], **axis)
        return
    if axis:                       # broadcast the per-channel values along their axis
        tail = (1,) * (rank - 1 - axis["axis"])
        scale, zero = scale.reshape(-1, *tail), zero.reshape(-1, *tail)
    lo, hi = INT_RANGES["int32"]
    ratio, rounded, wide, shifted, clipped = (b.tmp(t) for t in ("ratio", "rounded", "float64", "shifted",
                                                                 "saturated"))
    b.node("Div", [x, b.const("scale", scale)], [ratio], suffix="Div")
    b.node("Round", [ratio], [rounded], suffix="Round")
    b.node("Cast", [rounded], [wide], to=TensorProto.DOUBLE, suffix="CastFloat64")
    b.node("Add", [wide, b.const("zero_point", zero.astype(np.float64))], [shifted], suffix="ZeroPoint")
    b.node("Clip", [shifted, b.const("min", np.array(lo, np.float64)), b.const("max", np.array(hi, np.float64))],
           [clipped], suffix="Saturate")
    b.node("Cast", [clipped], [out], to=TensorProto.INT32)


def _dequantize(b, n, ins, out, shapes):
    """x = float32(q - z) * s, with the scale, zero point and axis of the input's type."""
    src = b.graph.data(n["inputs"][0])
    scale, zero, axis = _quant_arrays(src["quant"], src["dtype"], len(shapes[0]))
    b.node("DequantizeLinear", [ins[0], b.const("scale", scale), b.const("zero_point", zero)], [out], **axis)


def _cast(b, n, ins, out, shapes):
    b.node("Cast", [ins[0]], [out], to=onnx_dtype(n["attrs"]["dtype"]))


# ---- quantised and weight-shared layers, per-channel bounds ------------------------------------------

def _dq_param(b, n, local: str) -> str:
    """``DequantizeLinear`` of an integer parameter with its own quantisation (``Param.quant``)."""
    p = b.graph.params[n["params"][local]]
    scale, zero, axis = _quant_arrays(p.quant, p.dtype, len(p.shape))
    out = b.tmp(f"{local}_dequantized")
    b.node("DequantizeLinear", [b.param(n, local), b.const(f"{local}_scale", scale),
                                b.const(f"{local}_zero_point", zero)], [out], suffix=f"Dequantize_{local}", **axis)
    return out


def _conv_node(b, a, args, out):
    b.node("Conv", args, [out], kernel_shape=list(a["kernel_size"]), strides=list(a["stride"]),
           pads=_pads(a), dilations=list(a["dilation"]), group=a["groups"])


def _linear_node(b, x, w, bias, out, rank):
    """y = x W^T (+ b): Gemm(transB=1) on 2-D input, else MatMul with the transposed weight (then Add)."""
    if rank == 2:
        b.node("Gemm", [x, w] + ([bias] if bias else []), [out], transB=1)
        return
    wt = b.tmp("weight_t")
    b.node("Transpose", [w], [wt], perm=[1, 0], suffix="Transpose")
    if bias:
        mm = b.tmp("matmul")
        b.node("MatMul", [x, wt], [mm], suffix="MatMul")
        b.node("Add", [mm, bias], [out])
    else:
        b.node("MatMul", [x, wt], [out])


def _qconv(b, n, ins, out, shapes):
    """Conv(x, DequantizeLinear(W_int8), DequantizeLinear(b_int32)): the QDQ form onnxruntime fuses into
    an integer convolution when x is itself dequantised and the result is quantised again."""
    _conv_node(b, n["attrs"], [ins[0], _dq_param(b, n, "weight"), _dq_param(b, n, "bias")], out)


def _qlinear(b, n, ins, out, shapes):
    _linear_node(b, ins[0], _dq_param(b, n, "weight"), _dq_param(b, n, "bias"), out, len(shapes[0]))


def pack_indices(idx: np.ndarray, bits: int) -> tuple[np.ndarray, int]:
    """``(bytes, per)``: ``per = 8 // bits`` indices per byte for 1, 2 and 4 bits (3 bits as 4), index
    ``j = per i + k`` in bits ``k*bits .. (k+1)*bits - 1`` of byte ``i``; ``per = 1`` (unpacked) otherwise."""
    width = {1: 1, 2: 2, 3: 4, 4: 4}.get(bits)
    if width is None:
        return np.ascontiguousarray(idx, np.uint8).ravel(), 1
    per = 8 // width
    flat = np.asarray(idx, np.uint16).ravel()
    flat = np.concatenate([flat, np.zeros(-len(flat) % per, np.uint16)]).reshape(-1, per)
    packed = (flat << (np.arange(per, dtype=np.uint16) * width)).sum(axis=1, dtype=np.uint16).astype(np.uint8)
    return packed, per


def _codebook_weight(b, n) -> str:
    """W = Gather(codebook, indices): constant, so onnxruntime computes it once, at load. Indices of 1, 2, 3
    or 4 bits are stored packed (``pack_indices``) and unpacked by integer Div and Mod."""
    p = b.graph.params[n["params"]["indices"]]
    packed, per = pack_indices(p.value, n["attrs"]["bits"])
    w = b.tmp("weight")
    if per == 1:
        wide = b.tmp("indices_int64")
        b.node("Cast", [b.param(n, "indices")], [wide], to=TensorProto.INT64, suffix="Cast_indices")
    else:
        width = 8 // per
        wide32, column, spread, digits, flat, cut = (b.tmp(t) for t in (
            "packed_int32", "packed_column", "shifted", "indices_packed", "indices_flat", "indices_int32"))
        b.node("Cast", [b.const("indices_packed", packed)], [wide32], to=TensorProto.INT32, suffix="Cast_packed")
        b.node("Reshape", [wide32, b.const("column", np.array([-1, 1], np.int64))], [column], suffix="Column")
        b.node("Div", [column, b.const("shifts", (2 ** (width * np.arange(per))).astype(np.int32))], [spread],
               suffix="Shift")
        b.node("Mod", [spread, b.const("mask", np.array(2 ** width, np.int32))], [digits], suffix="Mask")
        b.node("Reshape", [digits, b.const("flat", np.array([-1], np.int64))], [flat], suffix="Flatten")
        b.node("Slice", [flat, b.const("start", np.array([0], np.int64)),
                         b.const("stop", np.array([p.numel], np.int64))], [cut], suffix="Slice")
        wide = b.tmp("indices")
        b.node("Reshape", [cut, b.const("shape", np.array(p.shape, np.int64))], [wide], suffix="Reshape")
    b.node("Gather", [b.param(n, "codebook"), wide], [w], axis=0, suffix="Gather_codebook")
    return w


def _shared_conv(b, n, ins, out, shapes):
    bias = [b.param(n, "bias")] if n["attrs"]["bias"] else []
    _conv_node(b, n["attrs"], [ins[0], _codebook_weight(b, n)] + bias, out)


def _shared_linear(b, n, ins, out, shapes):
    bias = b.param(n, "bias") if n["attrs"]["bias"] else None
    _linear_node(b, ins[0], _codebook_weight(b, n), bias, out, len(shapes[0]))


def _bounds(b, ins, out, shapes, low, high, dtype, lo_limit, hi_limit):
    """Max with the low bounds and Min with the high ones, each a (1, C, 1, ...) constant; a side on which
    every channel is unbounded is left out."""
    view = (1, -1) + (1,) * (len(shapes[0]) - 2)
    sides = (("Max", low, lo_limit), ("Min", high, hi_limit))
    steps = [(op, np.asarray(v, dtype).reshape(view)) for op, v, limit in sides if any(x != limit for x in v)]
    if not steps:
        b.node("Identity", [ins[0]], [out])
        return
    x = ins[0]
    for k, (op, bound) in enumerate(steps):
        last = k == len(steps) - 1
        nxt = out if last else b.tmp(op.lower())
        b.node(op, [x, b.const("low" if op == "Max" else "high", bound)], [nxt], suffix=None if last else op)
        x = nxt


def _clamp(b, n, ins, out, shapes):
    a = n["attrs"]
    _bounds(b, ins, out, shapes, a["low"], a["high"], numpy_dtype(n["dtype"]), -math.inf, math.inf)


def _qclamp(b, n, ins, out, shapes):
    a = n["attrs"]
    lo, hi = INT_RANGES[n["dtype"]]
    _bounds(b, ins, out, shapes, a["low"], a["high"], numpy_dtype(n["dtype"]), lo, hi)


RULES = {
    "conv": _conv,
    "linear": _linear,
    "bn": _bn,
    "relu": _simple("Relu"),
    "relu6": _relu6,
    "sigmoid": _simple("Sigmoid"),
    "tanh": _simple("Tanh"),
    "gelu": _gelu,
    "silu": _silu,
    "hardswish": _hardswish,
    "hardsigmoid": _simple("HardSigmoid", alpha=1.0 / 6.0, beta=0.5),
    "identity": _simple("Identity"),
    "leaky_relu": _simple("LeakyRelu", alpha=lambda a: float(a["negative_slope"])),
    "elu": _simple("Elu", alpha=lambda a: float(a["alpha"])),
    "softmax": _softmax("Softmax"),
    "log_softmax": _softmax("LogSoftmax"),
    "dropout": _simple("Identity"),      # inference: dropout is the identity
    "dropout2d": _simple("Identity"),
    "lrn": _lrn,
    "maxpool": _pool("MaxPool"),
    "avgpool": _pool("AveragePool"),
    "adaptive_avgpool": _adaptive("avg"),
    "adaptive_maxpool": _adaptive("max"),
    "flatten": _reshape,
    "reshape": _reshape,
    "transpose": _transpose,
    "slice": _slice,
    "concat": _concat,
    "add": _fold("Add"),
    "mul": _fold("Mul"),
    "affine_grid": _affine_grid,
    "grid_sample": _grid_sample,
    "quantize": _quantize,
    "dequantize": _dequantize,
    "cast": _cast,
    "qconv": _qconv,
    "qlinear": _qlinear,
    "shared_conv": _shared_conv,
    "shared_linear": _shared_linear,
    "clamp": _clamp,
    "qclamp": _qclamp,
    "layer_norm": _layer_norm,
    "permute": _permute,
    "scale": _scale,
    "drop_path": _simple("Identity"),      # inference: stochastic depth is the identity
}
