"""``quantize``: int8 static post-training quantisation, calibrated on the context's data.

**Fixed point.** A quantised tensor ``q`` of an 8-bit type stands for ``r = s (q - z)`` (scale ``s``,
zero point ``z``, docs/ir.md). Activations are quantised per tensor and asymmetrically: a calibrated
range ``[lo, hi]`` (widened to contain 0) maps onto the whole type,

    s = (hi - lo) / (qmax - qmin),   z = round(qmin - lo / s),   q = saturate(round(x / s) + z),

so 0 is exact and a tensor that is never negative (a ReLU's output) gets ``z = qmin``. Weights are
symmetric int8 per output channel (``per_channel``, axis 0; else per tensor), ``s_w = max|W_o| / 127``,
``z_w = 0``, and the bias is int32 at the product of the scales, ``b_q = round(b / (s_x s_w))``. A conv
then accumulates in int32,

    acc_o = sum_{c,k} (q_x - z_x) W_q[o,c,k] + b_q[o],      y_o = s_x s_w[o] acc_o,

and the next quantisation requantises ``y`` to 8 bits: ``q_y = saturate(round(y / s_y) + z_y)``. In
the IR (and in ONNX's QDQ form) this is ``quantize -> dequantize -> qconv -> quantize``, where
``qconv`` holds the int8 weight and int32 bias and computes ``conv(x, dequantize(W)) +
dequantize(b)``: the float reading of the integer arithmetic, which runtimes (onnxruntime) fuse
into one integer convolution. A ReLU between a layer and its quantisation is kept: with ``z_y =
qmin`` it is the saturation itself, and onnxruntime drops it.

**Where tensors are quantised.** Every input of a quantised layer, and every input and output of
an op that runs on integers (pooling, add, concat, flatten and reshape, dropout, mul, the per-channel
clamp below), so the network stays in integers from its input to its last layer; a ReLU is looked
through (its producer's result is quantised after it). Ops that only move or select values (max
pooling, flatten, reshape, slice, dropout) give their output their input's quantisation; a concat's
inputs and output share one quantisation where their ranges are within a factor 4 of each other
(then the concat copies integers); a residual add requantises its two inputs to its own output
scale (QLinearAdd). A dequantize directly followed by a quantize with the same parameters is removed.

**Folding.** The quantised graph is for inference: dropout and identity go first (they are the
identity there, as ``drop-inference-noops`` says), then conv+BN(+ReLU) is folded (``fold-bn``). A
pre-activation BN whose only user is a ReLU (DenseNet's BN-ReLU before each 1x1 conv, its transitions
and ``norm5``), ``relu(a x + b)`` per channel, is rewritten exactly as

    relu(a x + b) = a (max(x, -b/a) + b/a)   (a > 0),     a (min(x, -b/a) + b/a)   (a < 0)

and the factor ``a`` and the shift ``b/a`` move into the following layers (``W'[o,c] = a_c W[o,c]``,
``b'_o = b_o + sum_{c,k} W'[o,c,k] b_c / a_c``), which is exact when every path from the ReLU reaches
a conv without padding or a linear layer through ops that are linear per channel (average pooling
without padding, flatten). What remains is a per-channel ``clamp``, which on the quantised tensor is
an integer ``qclamp`` (``Max``/``Min`` of uint8 in ONNX) with its bound rounded to the grid (and the
consumers' biases adjusted by ``sum W' (b'/a' - b/a)`` for the rounded bound), instead of a float
island of DequantizeLinear, BatchNormalization, Relu and QuantizeLinear.

**Calibration** (``calibration``): ``minmax``, ``percentile`` (``percentile=99.99``), ``entropy`` (KL,
TensorRT's) or ``mse``, on at most ``ctx.calib_samples`` samples of ``ctx.data`` (512 by default),
run through the PyTorch backend (see :mod:`.calibrate`). **Activations** are ``u8`` or ``s8``; ``auto``
takes what onnxruntime runs fastest here: u8 (U8S8) on x86, s8 elsewhere; on x86 without VNNI the
weights use 7 bits (``|W_q| <= 63``), so u8 x s8 products summed in pairs cannot saturate int16
(as onnxruntime's ``reduce_range``).

**Sensitivity** (``sensitivity=true`` or ``max_error``): each layer is run once quantised alone
(its input quantised as calibrated, its weights as above) on the calibration data against the float
layer; the report gives per layer ``sqnr_db`` (10 log10 of signal over error power) and ``cosine``.
Layers whose ``1 - cosine`` exceeds ``max_error`` stay in float (mixed precision).

**Format** (``format``): ``qdq`` or ``qoperator`` is recorded in ``graph.meta["quantize"]`` and read by
the ONNX backend; the IR is the same.
"""
from __future__ import annotations

import math
import platform
from dataclasses import dataclass, field

import numpy as np

from .. import cpu
from ..diagnostics import ArchError
from ..ir.graph import Graph
from ..ir.params import Param
from ..ir.types import INT_RANGES, QuantParams
from .base import (OptionError, Pass, PassReport, in_scopes, listing, note_unmatched, register, replace_node,
                   scope_patterns)
from .calibrate import METHODS, RangeObserver, affine_params, run_graph
from .context import PassContext
from .fold_bn import _Folder, bn_affine

DEFAULT_SAMPLES = 512
BATCH = 32
ACTIVATIONS = {"u8": "uint8", "s8": "int8"}
FORMATS = ("qdq", "qoperator")
LAYERS = {"conv": "qconv", "linear": "qlinear"}
# ops that only move or select values: their output keeps their input's quantisation
PASS_OPS = {"maxpool", "adaptive_maxpool", "flatten", "reshape", "identity", "dropout", "dropout2d", "slice",
            "transpose", "clamp"}
# ops that run on integers with their own output quantisation (QLinearAdd, QLinearAveragePool, ...)
CALIB_OPS = {"add", "avgpool", "adaptive_avgpool", "concat", "mul"}
INFERENCE_NOOPS = ("identity", "dropout", "dropout2d", "drop_path")
ABSORBED = {"relu"}               # a producer's result is quantised after these
CONCAT_SPREAD = 4.0               # concat inputs share a quantisation when their ranges are this close


def target() -> dict:
    """What onnxruntime's integer kernels run fastest here: the activation type and the weights' range."""
    if cpu.is_x86():
        flags = cpu.flags()
        vnni = any(f in flags for f in cpu.VNNI) or not flags
        return {"activations": "u8", "weight_max": 127 if vnni else 63,
                "isa": ", ".join(f for f in ("avx2", "avx512f") + cpu.VNNI if f in flags) or "x86"}
    return {"activations": "s8", "weight_max": 127, "isa": platform.machine().lower()}


def quantize_weights(w: np.ndarray, per_channel: bool = True, top: int = 127):
    """``(int8 array, QuantParams)``: ``s = max|W| / top`` per output channel (axis 0, zero points 0) or per
    tensor, ``q = clip(round_half_even(W / s), -top, top)``; an all-zero channel gets scale 1."""
    w = np.asarray(w, np.float32)
    flat = w.reshape(w.shape[0], -1)
    m = np.maximum(flat.max(axis=1), -flat.min(axis=1)) if flat.size else np.zeros(w.shape[0], np.float32)
    if not per_channel:
        m = np.array([m.max() if m.size else 0.0], np.float32)
    scale = (m.astype(np.float64) / top).astype(np.float32)
    scale[~(scale > 0)] = 1.0
    rows = scale if per_channel else np.full(w.shape[0], scale[0], np.float32)
    q = np.empty(flat.shape, np.int8)
    step = max(1, (1 << 22) // max(1, flat.shape[1]))
    for start in range(0, flat.shape[0], step):
        block = flat[start:start + step] / rows[start:start + step, None]
        np.clip(np.rint(block, out=block), -top, top, out=block)
        q[start:start + step] = block
    quant = (QuantParams(tuple(scale.tolist()), (0,) * len(scale), 0) if per_channel
             else QuantParams((float(scale[0]),), (0,)))
    return q.reshape(w.shape), quant


@register
@dataclass
class Quantize(Pass):
    """Int8 static post-training quantisation: calibrated activations, per-channel int8 weights, int32 accumulation."""

    name = "quantize"
    verify_metric = "cosine"
    calibration: str = field(default="minmax", metadata={"doc": "minmax, percentile, entropy (KL) or mse"})
    percentile: float = field(default=99.99, metadata={"doc": "with calibration=percentile: the percentile kept"})
    per_channel: bool = field(default=True, metadata={"doc": "one weight scale per output channel (else per tensor)"})
    activations: str = field(default="auto", metadata={
        "doc": "u8, s8, or auto: the faster on this CPU (u8 on x86, s8 elsewhere)"})
    format: str = field(default="qdq", metadata={
        "doc": "ONNX form: qdq (QuantizeLinear/DequantizeLinear pairs) or qoperator (QLinearConv...)"})
    skip: str | None = field(default=None, metadata={"doc": "comma-separated scope patterns left in float"})
    sensitivity: bool = field(default=False, metadata={
        "doc": "report each layer's SQNR and cosine when it alone is quantised"})
    max_error: float | None = field(default=None, metadata={
        "doc": "layers whose 1 - cosine exceeds this stay in float (mixed precision)"})
    weight_bits: int | None = field(default=None, metadata={
        "doc": "7 or 8; by default 7 on x86 without VNNI with activations=auto (so u8 x s8 pairs cannot "
               "saturate int16), else 8"})

    def expected_error(self) -> float:
        """1 - cosine of the outputs. Measured on the zoo at the tests' sizes, with batch norms calibrated
        on data and 8 calibration samples, 8-bit weights: 1e-4 (ResNet-18) to 1e-2 (DenseNet-121),
        Inception-v3 at 80x80 3e-2; so 0.05, or four times ``max_error`` where that is more. 7-bit weights
        (x86 without VNNI) moved the outputs 1.5 to 4.5 times as far (Inception-v3 6.6e-2): twice that."""
        bound = 0.05 if self.max_error is None else max(0.05, 4 * self.max_error)
        return bound if self.weight_max() == 127 else 2 * bound

    def rewrite(self, graph: Graph, report: PassReport, ctx: PassContext) -> bool:
        done = next((n for n in graph.nodes() if n.op in ("quantize", "qconv", "qlinear")), None)
        if done is not None:
            report.refuse(graph, done.id, "The graph is quantised already; quantize leaves it as it is.")
            return False
        half = next((n for n in graph.nodes() if n.dtype in ("float16", "bfloat16")), None)
        if half is not None:
            raise ArchError(f"Pass 'quantize' quantises float32 graphs, but @{half.scope or half.attrs.get('name')} "
                            f"computes in {half.dtype}; quantise the float32 model (the int8 model needs no half "
                            "precision).", half.span)
        ctx.require_data(self.name, "calibration")
        return _Quantizer(self, graph, report, ctx).run()

    def __post_init__(self):
        super().__post_init__()
        if self.calibration not in METHODS:
            raise OptionError(f"calibration must be one of {listing(METHODS, 'or')}, but it is '{self.calibration}'.",
                              "calibration")
        if self.activations not in ("auto", *ACTIVATIONS):
            raise OptionError(f"activations must be u8, s8 or auto, but it is '{self.activations}'.", "activations")
        if self.format not in FORMATS:
            raise OptionError(f"format must be qdq or qoperator, but it is '{self.format}'.", "format")
        if not 50.0 < self.percentile <= 100.0:
            raise OptionError(f"percentile must be above 50 and at most 100, but it is {self.percentile:g}.",
                              "percentile")
        if self.max_error is not None and not self.max_error >= 0:
            raise OptionError(f"max_error must be at least 0, but it is {self.max_error:g}.", "max_error")
        if self.weight_bits not in (None, 7, 8):
            raise OptionError(f"weight_bits must be 7 or 8, but it is {self.weight_bits}; leave it out to take "
                              "what onnxruntime runs exactly on this CPU.", "weight_bits")

    def weight_max(self) -> int:
        """The weights' symmetric integer range ``|W_q| <= weight_max``: 63 for 7 bits, 127 for 8; unset,
        :func:`target`'s for ``activations=auto`` (63 on x86 without VNNI), else 127."""
        if self.weight_bits is not None:
            return 127 if self.weight_bits == 8 else 63
        return target()["weight_max"] if self.activations == "auto" else 127


# ---- preparation: folding (exact in float) -----------------------------------------------------------

def fold_for_quantization(graph: Graph, report: PassReport) -> dict:
    """Drop the ops that are the identity in inference (dropout, identity), fold conv+BN, then rewrite
    pre-activation BN-ReLU into a per-channel clamp whose scale and shift move into the following layers.
    Returns ``{clamp id: (shift, scale, consumers)}`` for the bias adjustment when the clamp's bound is
    rounded to the quantisation grid."""
    for nid in [n.id for n in graph.nodes() if n.op in INFERENCE_NOOPS]:
        label = graph.data(nid)["scope"]
        graph.replace_all_uses(nid, graph.data(nid)["inputs"][0])
        graph.remove_node(nid)
        report.did(f"removed {label}, the identity in inference")
    scratch = PassReport("fold-bn")
    _Folder(graph, scratch).run()
    report.actions.extend(scratch.actions)
    preact = {}
    for nid in [n.id for n in graph.nodes() if n.op == "bn"]:
        reason, plan = _preact_plan(graph, nid)
        if reason is not None:
            report.refuse(graph, nid, f"It stays a float batch norm: {reason}.")
            continue
        preact.update(_rewrite_preact(graph, nid, plan, report))
    return preact


def _preact_plan(graph: Graph, bn: int):
    """``(None, [(layer id, channels per feature)])`` when BN-ReLU can become a clamp, else ``(reason, None)``."""
    users = graph.users(bn)
    if bn in graph.outputs or len(users) != 1 or graph.data(users[0])["op"] != "relu":
        return "it is not a pre-activation BN (its only use is not a ReLU)", None
    relu = users[0]
    if relu in graph.outputs:
        return "its ReLU is a model output", None
    plan = []
    stack = [(u, 1) for u in graph.users(relu)]
    while stack:
        nid, per = stack.pop()
        u = graph.data(nid)
        if u["op"] == "conv":
            if tuple(u["attrs"]["padding"]) != (0, 0):
                return f"conv @{u['scope']} zero-pads its input, so the BN's shift cannot move into its bias", None
            plan.append((nid, per))
        elif u["op"] == "linear" and len(u["shape"]) == 2:
            plan.append((nid, per))
        elif u["op"] in ("adaptive_avgpool", "avgpool", "flatten", "dropout", "identity") and nid not in graph.outputs:
            if u["op"] == "avgpool" and tuple(u["attrs"]["padding"]) != (0, 0):
                return f"avgpool @{u['scope']} pads its input", None
            if u["op"] == "flatten":
                rank = len(graph.data(u["inputs"][0])["shape"])
                if u["attrs"]["start_dim"] != 1 or u["attrs"]["end_dim"] not in (-1, rank - 1):
                    return f"flatten @{u['scope']} does not flatten every dimension after the channels", None
                shape = graph.data(u["inputs"][0])["shape"]
                per = per * math.prod(shape[2:])
            stack.extend((w, per) for w in graph.users(nid))
        else:
            return (f"its ReLU reaches '{u['op']}' (@{u['scope']}), not a conv without padding or a linear layer "
                    "through per-channel linear ops"), None
    if not plan:
        return "its ReLU is not used", None
    return None, plan


def _layer_weights(graph: Graph, nid: int):
    d = graph.data(nid)
    w = graph.params[d["params"]["weight"]].value.astype(np.float64)
    b = graph.params[d["params"]["bias"]].value.astype(np.float64) if "bias" in d["params"] else np.zeros(w.shape[0])
    return w, b


def _set_layer(graph: Graph, nid: int, w: np.ndarray, b: np.ndarray) -> None:
    d = graph.data(nid)
    wp = graph.params[d["params"]["weight"]]
    wp.value = w.astype(np.float32)
    if "bias" in d["params"]:
        graph.params[d["params"]["bias"]].value = b.astype(np.float32)
    else:
        bp = Param(f"{d['scope']}.bias", (w.shape[0],), "zeros", wp.fan_in, wp.fan_out, True, wp.dtype, wp.seed)
        bp.value = b.astype(np.float32)
        graph.add_param(bp)
        graph.update(nid, attrs={**d["attrs"], "bias": True}, params={**d["params"], "bias": bp.name})


def _fold_into(graph: Graph, nid: int, per: int, scale: np.ndarray, shift: np.ndarray, const: np.ndarray) -> None:
    """Layer ``nid`` reads ``scale_c (m_c + shift_c) + const_c`` (``per`` features per channel) instead of ``m``."""
    w, b = _layer_weights(graph, nid)
    d = graph.data(nid)
    sc, sh, co = (np.repeat(v, per) for v in (scale, shift, const))
    if d["op"] == "linear":
        b = b + w @ (sc * sh + co)
        w = w * sc[None, :]
    else:
        groups = d["attrs"]["groups"]
        og, cg = w.shape[0] // groups, w.shape[1]
        b = b.copy()
        for k in range(groups):
            rows, cols = slice(k * og, (k + 1) * og), slice(k * cg, (k + 1) * cg)
            b[rows] += np.einsum("ojhw,j->o", w[rows], sc[cols] * sh[cols] + co[cols])
            w[rows] = w[rows] * sc[cols][None, :, None, None]
    _set_layer(graph, nid, w, b)


def _rewrite_preact(graph: Graph, bn: int, plan, report: PassReport) -> dict:
    node = graph.node(bn)
    a, t = bn_affine(node)
    relu = graph.users(bn)[0]
    live = a != 0
    shift = np.where(live, t / np.where(live, a, 1.0), 0.0)           # relu(a x + t) = a (clamp(x) + t / a)
    const = np.where(live, 0.0, np.maximum(t, 0.0))                   # a = 0: the constant relu(t)
    low = np.where(a > 0, -shift, -np.inf)
    high = np.where(a < 0, -shift, np.inf)
    for nid, per in plan:
        _fold_into(graph, nid, per, a, shift, const)
        report.touched(nid)
    label = node.scope
    clamp = replace_node(graph, bn, "clamp", attrs={"low": tuple(float(v) for v in low),
                                                     "high": tuple(float(v) for v in high)},
                         params={}, meta={})
    graph.replace_all_uses(relu, clamp)
    graph.remove_node(relu)
    report.did(f"rewrote pre-activation bn @{label} and its relu as a per-channel clamp, its scale and shift "
               f"folded into {', '.join('@' + graph.data(n)['scope'] for n, _ in plan)}")
    return {clamp: (shift * live, a, plan)}


# ---- the quantiser -----------------------------------------------------------------------------------

class _Union:
    def __init__(self):
        self.parent = {}

    def find(self, x):
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def join(self, a, b):
        self.parent[self.find(a)] = self.find(b)


class _Quantizer:
    def __init__(self, opts: Quantize, graph: Graph, report: PassReport, ctx: PassContext):
        self.o, self.g, self.report, self.ctx = opts, graph, report, ctx
        tgt = target()
        self.act = ACTIVATIONS[tgt["activations"] if opts.activations == "auto" else opts.activations]
        self.weight_max = opts.weight_max()
        self.isa = tgt["isa"]

    # ---- which tensors are quantised
    def layers(self) -> list[int]:
        patterns = scope_patterns(self.o.skip)
        note_unmatched(self.g, patterns, "skip", self.report)
        out = []
        for n in self.g.nodes():
            if n.op in LAYERS:
                if in_scopes(n.scope, patterns):
                    self.report.refuse(self.g, n.id, "It matches 'skip', so it stays in float.")
                    continue
                out.append(n.id)
        return out

    def quant_points(self, layers: set) -> tuple[list[int], dict]:
        """The float tensors to quantise (topological order) and the tie edges ``{nid: input id}``."""
        g = self.g
        order = g.node_ids()
        qp, eo = {}, {}
        for nid in reversed(order):
            d = g.data(nid)
            users = g.users(nid)
            wants = [self._wants_int(u, layers, eo) for u in users]
            qp[nid] = d["dtype"] == "float32" and any(wants)
            only = users[0] if len(users) == 1 else None
            eo[nid] = qp[nid] or (only is not None and g.data(only)["op"] in ABSORBED and qp.get(only, False)
                                  and nid not in g.outputs)
        points = [nid for nid in order if qp[nid]]
        ties = {}
        for nid in points:
            d = g.data(nid)
            if d["op"] in PASS_OPS and d["inputs"] and qp.get(d["inputs"][0]):
                ties[nid] = [d["inputs"][0]]
            elif d["op"] == "concat" and all(qp.get(i) for i in d["inputs"]):
                ties[nid] = list(d["inputs"])
        self._eo = eo
        return points, ties

    def _wants_int(self, u: int, layers: set, eo: dict) -> bool:
        d = self.g.data(u)
        if u in layers:
            return True
        return (d["op"] in PASS_OPS or d["op"] in CALIB_OPS) and eo.get(u, False)

    # ---- calibration
    def calibrate(self, points: list[int], layers: list[int]) -> RangeObserver:
        ctx = self.ctx
        limit = ctx.calib_samples if getattr(ctx, "calib_samples", None) else DEFAULT_SAMPLES
        batches = list(ctx.batches(BATCH, limit))
        if not batches:
            raise ArchError("Pass 'quantize' needs at least one calibration sample, but the data holds none.")
        obs = RangeObserver(self.o.calibration, self.o.percentile)
        track = (lambda items, total: ctx.track(items, total, "quantize: calibrating")) if ctx.progress else None
        run_graph(self.g, batches, points, lambda nid, x, _: obs.observe_minmax(nid, x), ctx.device, track)
        if obs.needs_histograms:
            track2 = (lambda items, total: ctx.track(items, total, "quantize: histograms")) if ctx.progress else None
            run_graph(self.g, batches, points, lambda nid, x, _: obs.observe_histogram(nid, x), ctx.device, track2)
        self.batches = batches
        return obs

    def params_of(self, points, ties, obs) -> dict:
        """``{nid: (scale, zero_point)}``: each tensor's range, tied tensors sharing the union of theirs."""
        ranges = {nid: obs.range(nid) for nid in points}
        for nid in points:            # a clamp runs on its input's integer grid: its float range does not count
            if self.g.data(nid)["op"] == "clamp" and nid in ties:
                ranges[nid] = ranges[ties[nid][0]]
        union = _Union()
        for nid, ins in ties.items():
            if self.g.data(nid)["op"] == "concat":
                # inputs whose range is close to the output's (and of the same sign) share its quantisation;
                # the others are requantised by the concat (a never-negative input keeps its zero point at
                # the bottom, where a ReLU before it is the saturation)
                lo, hi = ranges[nid]
                ins = [i for i in ins if (ranges[i][0] < 0) == (lo < 0)
                       and (ranges[i][1] - ranges[i][0]) * CONCAT_SPREAD >= hi - lo > 0]
            for i in ins:
                union.join(nid, i)
        groups = {}
        for nid in points:
            groups.setdefault(union.find(nid), []).append(nid)
        out = {}
        for members in groups.values():
            lo = min(ranges[m][0] for m in members)
            hi = max(ranges[m][1] for m in members)
            sz = affine_params(lo, hi, self.act)
            for m in members:
                out[m] = sz
        return out

    # ---- weights
    def weight_quant(self, w: np.ndarray):
        """``(int8 values, QuantParams)``: symmetric, per output channel (axis 0) or per tensor; computed in
        float32 by blocks of rows (a VGG classifier holds 100M weights)."""
        return quantize_weights(w, self.o.per_channel, self.weight_max)

    def bias_quant(self, b: np.ndarray, sx: float, wq: QuantParams):
        scale = (np.float32(sx) * np.asarray(wq.scale, np.float32)).astype(np.float32)
        scale[~(scale > 0)] = np.float32(np.finfo(np.float32).tiny)
        lo, hi = INT_RANGES["int32"]
        q = np.clip(np.rint(b.astype(np.float64) / scale.astype(np.float64)), lo, hi).astype(np.int32)
        axis = 0 if wq.axis is not None else None
        return q, QuantParams(tuple(scale.tolist()), (0,) * len(scale), axis)

    # ---- sensitivity: each layer quantised alone
    def sensitivity(self, layers: list[int], params: dict) -> dict:
        import torch
        import torch.nn.functional as F
        g = self.g
        sums = {nid: np.zeros(4) for nid in layers}      # <y, yq>, |y|^2, |yq|^2, |y - yq|^2
        prepared = {}
        for nid in layers:
            d = g.data(nid)
            w = g.params[d["params"]["weight"]].value
            b = (g.params[d["params"]["bias"]].value.astype(np.float64) if "bias" in d["params"]
                 else np.zeros(w.shape[0]))
            sx, zx = params[d["inputs"][0]]
            wq, wquant = self.weight_quant(w)
            bq, bquant = self.bias_quant(b, sx, wquant)
            ws = np.asarray(wquant.scale, np.float32)
            ws = ws.reshape((-1,) + (1,) * (w.ndim - 1)) if wquant.axis is not None else ws[0]
            wd = torch.from_numpy(wq.astype(np.float32) * ws)
            bd = torch.from_numpy(bq.astype(np.float32) * np.asarray(bquant.scale, np.float32))
            prepared[nid] = (wd, bd, sx, zx)
        lo, hi = INT_RANGES[self.act]

        def on_node(nid, y, operands):
            wd, bd, sx, zx = prepared[nid]
            x = operands[0]
            xq = (torch.clamp(torch.round(x / x.new_tensor(sx)) + zx, lo, hi) - zx) * sx
            a = g.data(nid)["attrs"]
            if g.data(nid)["op"] == "conv":
                yq = F.conv2d(xq, wd, bd, a["stride"], a["padding"], a["dilation"], a["groups"])
            else:
                yq = F.linear(xq, wd, bd)
            y64, q64 = y.double(), yq.double()
            sums[nid] += np.array([float((y64 * q64).sum()), float((y64 * y64).sum()), float((q64 * q64).sum()),
                                   float(((y64 - q64) ** 2).sum())])
        run_graph(g, self.batches, layers, on_node, self.ctx.device)
        out = {}
        for nid, (dot, yy, qq, ee) in sums.items():
            cos = dot / math.sqrt(yy * qq) if yy > 0 and qq > 0 else (1.0 if ee == 0 else 0.0)
            sqnr = 10 * math.log10(yy / ee) if ee > 0 and yy > 0 else math.inf
            out[nid] = (cos, sqnr)
        return out

    # ---- the rewrite
    def run(self) -> bool:
        g, report = self.g, self.report
        self.preact = fold_for_quantization(g, report)
        layers = self.layers()
        points, ties = self.quant_points(set(layers))
        obs = self.calibrate(points, layers)
        params = self.params_of(points, ties, obs)
        errors = {}
        if self.o.sensitivity or self.o.max_error is not None:
            errors = self.sensitivity(layers, params)
            if self.o.max_error is not None:
                kept = [nid for nid in layers if 1.0 - errors[nid][0] > self.o.max_error]
                for nid in kept:
                    report.refuse(g, nid, f"Quantised alone its output's 1 - cosine is {1.0 - errors[nid][0]:.3g}, "
                                          f"above max_error={self.o.max_error:g}, so it stays in float.")
                if kept:
                    layers = [nid for nid in layers if nid not in kept]
                    points, ties = self.quant_points(set(layers))
                    params = self.params_of(points, ties, obs)
        self.rewrite(points, params, set(layers), errors)
        g.meta["quantize"] = {"format": self.o.format, "activations": self.act, "calibration": self.o.calibration,
                              "per_channel": self.o.per_channel, "weight_max": self.weight_max, "isa": self.isa}
        return True

    def rewrite(self, points: list[int], params: dict, layers: set, errors: dict) -> None:
        g, report = self.g, self.report
        qof = {}                                   # float tensor -> its quantize (or qclamp) node
        for nid in points:
            scale, zero = params[nid]
            d = g.data(nid)
            if d["op"] == "clamp":
                src = self._quantized_source(d["inputs"][0])
                if src is not None:
                    qof[nid] = self._qclamp(nid, src)
                    continue
            qof[nid] = self._quantize_tensor(nid, scale, zero)
        order = {nid: k for k, nid in enumerate(g.node_ids())}
        for nid in sorted(layers, key=order.__getitem__):
            self._quantize_layer(nid, qof, errors.get(nid))
        for nid in [n for n in g.node_ids() if g.data(n)["op"] in LAYERS]:
            d = g.data(nid)
            report.layer(d["scope"], op=d["op"], quantized=False,
                         **({"cosine": errors[nid][0], "sqnr_db": errors[nid][1]} if nid in errors else {}))
        self._drop_requantize_pairs()
        self._drop_dead()

    def _quantized_source(self, nid: int) -> int | None:
        """The quantize (or qclamp) node whose dequantisation ``nid`` is, if it is one."""
        d = self.g.data(nid)
        if d["op"] == "dequantize" and self.g.data(d["inputs"][0])["dtype"] == self.act:
            return d["inputs"][0]
        return None

    def _quantize_tensor(self, nid: int, scale: float, zero: int) -> int:
        g = self.g
        d = g.data(nid)
        base = d["scope"] or d["attrs"].get("name") or f"t{nid}"
        outputs = list(g.outputs)
        q = g.insert_after(nid, "quantize", {"dtype": self.act, "scale": (scale,), "zero_point": (zero,)},
                           name=f"{base}_quantize")
        g.insert_after(q, "dequantize", name=f"{base}_dequantize")
        g.outputs = outputs                 # the model's outputs stay the float tensors
        return q

    def _qclamp(self, clamp: int, q: int) -> int:
        """The clamp of a quantised tensor as integer bounds on its grid; the consumers' biases follow the
        rounded bounds."""
        g = self.g
        d = g.data(clamp)
        quant = g.data(q)["quant"]
        s, z = quant.scale[0], quant.zero_point[0]
        qmin, qmax = INT_RANGES[self.act]
        low, high, shift_q = [], [], []
        shift, a, plan = self.preact.get(clamp, (None, None, None))
        for c, (lo, hi) in enumerate(zip(d["attrs"]["low"], d["attrs"]["high"])):
            ql, qh = qmin, qmax
            new_shift = None if shift is None else shift[c]
            if math.isfinite(lo):
                r = round(lo / s) + z
                if r > qmin:
                    ql = min(r, qmax)
                    new_shift = -s * (ql - z)
            if math.isfinite(hi):
                r = round(hi / s) + z
                if r < qmax:
                    qh = max(r, qmin)
                    new_shift = -s * (qh - z)
            low.append(int(ql))
            high.append(int(qh))
            shift_q.append(new_shift)
        if shift is not None:
            delta = np.array([0.0 if n is None else n - o for n, o in zip(shift_q, shift)])
            delta = np.where(a != 0, delta, 0.0)
            for nid, per in plan:
                _fold_into(g, nid, per, np.ones_like(delta), delta, np.zeros_like(delta))
        new = g.add_node("qclamp", (q,), attrs={"low": tuple(low), "high": tuple(high)}, shape=d["shape"],
                         dtype=self.act, quant=quant, span=d["span"], scope=g.fresh_scope(d["scope"] + "_q"),
                         params={}, meta={})
        # the clamp's users read the dequantised integers; the float clamp goes
        users = g.users(clamp)
        deq = g.insert_after(new, "dequantize", name=d["scope"] + "_dequantize")
        for u in users:
            g.set_inputs(u, tuple(deq if i == clamp else i for i in g.data(u)["inputs"]))
        outputs = [deq if o == clamp else o for o in g.outputs]
        g.outputs = outputs
        g.remove_node(clamp)
        return new

    def _quantize_layer(self, nid: int, qof: dict, error) -> None:
        g = self.g
        d = g.data(nid)
        src = d["inputs"][0]
        qsrc = g.data(src)["inputs"][0] if g.data(src)["op"] == "dequantize" else None
        if qsrc is None:
            self.report.refuse(g, nid, "Its input is not quantised, so it stays in float.")
            return
        sx = g.data(qsrc)["quant"].scale[0]
        w = g.params[d["params"]["weight"]].value
        b = (g.params[d["params"]["bias"]].value.astype(np.float64) if "bias" in d["params"]
             else np.zeros(w.shape[0]))
        wq, wquant = self.weight_quant(w)
        bq, bquant = self.bias_quant(b, sx, wquant)
        a = d["attrs"]
        if d["op"] == "conv":
            attrs = {k: a[k] for k in ("out_channels", "kernel_size", "stride", "padding", "dilation", "groups")}
        else:
            attrs = {"out_features": a["out_features"]}
        scope = d["scope"]
        old = {local: g.params[p] for local, p in d["params"].items()}
        wp = Param(f"{scope}.weight", wq.shape, "zeros", old["weight"].fan_in, old["weight"].fan_out, True, "int8",
                   old["weight"].seed, wquant)
        wp.value = wq
        bp = Param(f"{scope}.bias", bq.shape, "zeros", old["weight"].fan_in, old["weight"].fan_out, True, "int32",
                   old["weight"].seed, bquant)
        bp.value = bq
        new = replace_node(g, nid, LAYERS[d["op"]], attrs=attrs,
                           params={"weight": wp.name, "bias": bp.name})
        g.params[wp.name] = wp
        g.params[bp.name] = bp
        details = {"op": LAYERS[d["op"]], "quantized": True, "input_scale": sx,
                   "input_zero_point": g.data(qsrc)["quant"].zero_point[0],
                   "weight_scale_min": min(wquant.scale), "weight_scale_max": max(wquant.scale)}
        if error is not None:
            details.update(cosine=error[0], sqnr_db=error[1])
        self.report.layer(scope, **details)
        self.report.did(f"quantised {d['op']} @{scope} to {LAYERS[d['op']]} (int8 weights, int32 bias)")
        return new

    def _drop_dead(self) -> None:
        """The quantize and dequantize nodes this pass made that nothing reads any more."""
        g = self.g
        for nid in reversed(g.node_ids()):
            d = g.data(nid)
            if d["op"] in ("quantize", "dequantize") and not g.users(nid) and nid not in g.outputs:
                g.remove_node(nid)

    def _drop_requantize_pairs(self) -> None:
        """A quantize reading a dequantize with the same parameters is the identity on the integers."""
        g = self.g
        for nid in list(g.node_ids()):
            if nid not in g:
                continue
            d = g.data(nid)
            if d["op"] != "quantize":
                continue
            src = g.data(d["inputs"][0])
            if src["op"] != "dequantize":
                continue
            inner = src["inputs"][0]
            t = g.data(inner)
            if t["dtype"] == d["dtype"] and t["quant"] == d["quant"]:
                dq = d["inputs"][0]
                g.replace_all_uses(nid, inner)
                g.remove_node(nid)
                if not g.users(dq) and dq not in g.outputs:
                    g.remove_node(dq)

