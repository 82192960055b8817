"""The QOperator form of a quantised graph (``quantize{format=qoperator}``): integer operators end to end.

The IR of a quantised graph is QDQ: ``quantize -> dequantize -> op -> quantize``. In QOperator form each
such group is one operator on the integers, its scales and zero points as inputs
(``x`` integer, ``d = dequantize(x)``, ``q`` the closing quantize):

* ``q(relu?(qconv(d)))``: ``QLinearConv(x, s_x, z_x, W, s_w, 0, s_q, z_q, b)``;
* ``q(relu?(qlinear(d)))``, and an unquantised ``qlinear(d)`` (the classifier): ``QGemm`` (transB; float
  output without ``s_q``);
* ``q(relu?(add(d1, d2)))``: ``QLinearAdd``; ``q(concat(d1, ..., dn))``: ``QLinearConcat``;
* ``q(avgpool(d))`` (also an evenly dividing adaptive one): ``QLinearAveragePool``;
  ``q(adaptive_avgpool[1](d))``: ``QLinearGlobalAveragePool``;
* ``q(maxpool(d))``, flatten, reshape, slice, transpose with ``q``'s quantisation equal to ``x``'s: the op
  itself on the integers.

A ReLU inside a group is the saturation when ``z_q`` is the bottom of the type (it is, for every
ReLU the quantize pass calibrates), and is then dropped; otherwise the group is not fused. The
``QLinear*`` operators other than ``QLinearConv`` and the ``QGemm`` are onnxruntime's contrib
operators (domain ``com.microsoft``). Everything not in a group keeps its QDQ lowering (the input's
``QuantizeLinear``, ``qclamp``'s integer ``Max``/``Min``, float islands), and a ``dequantize`` is
emitted only where something outside the groups still reads it. Only flat exports are fused
(``functions=True`` keeps QDQ).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir.types import INT_RANGES, numpy_dtype

MS = "com.microsoft"
SKIP = "skip"
PASS_OPS = ("maxpool", "adaptive_maxpool", "flatten", "reshape", "slice", "transpose")


def _scalars(b, hint: str, quant, dtype: str):
    scale = np.array(quant.scale[0], np.float32)
    zero = np.array(quant.zero_point[0], numpy_dtype(dtype))
    return b.const(f"{hint}_scale", scale), b.const(f"{hint}_zero_point", zero)


def _weight_quant(b, graph, p, hint: str):
    """Scale and (zero) zero point of an int8 parameter: 1-D per channel, 0-D per tensor."""
    q = p.quant
    if q.axis is None:
        return (b.const(f"{hint}_scale", np.array(q.scale[0], np.float32)),
                b.const(f"{hint}_zero_point", np.array(q.zero_point[0], numpy_dtype(p.dtype))))
    return (b.const(f"{hint}_scale", np.array(q.scale, np.float32)),
            b.const(f"{hint}_zero_point", np.array(q.zero_point, numpy_dtype(p.dtype))))


@dataclass(frozen=True)
class Group:
    """IR nodes that run as one integer operator: ``kind`` (``conv``, ``gemm``, ``add``, ``concat``,
    ``avgpool``, ``global_avgpool``, ``pass``), the main node, the ReLU it absorbs (or None), the integer
    tensors it reads and the quantize node whose result it produces (None: a float result, the classifier)."""
    kind: str
    main: int
    relu: int | None
    ins: tuple
    q: int | None


class _Planner:
    def __init__(self, graph):
        self.g = graph
        self.groups: dict = {}           # anchor (the node whose result the group produces) -> Group
        self.skip: set = set()           # nodes inside groups, and dequantizes only groups read
        self.outputs = set(graph.outputs)

    def integer_of(self, nid: int):
        """The integer tensor a ``dequantize`` node reads (None for anything else)."""
        d = self.g.data(nid)
        return d["inputs"][0] if d["op"] == "dequantize" else None

    def sole_user(self, nid: int, user: int) -> bool:
        return self.g.users(nid) == [user] and nid not in self.outputs

    def run(self):
        g = self.g
        for nid in g.node_ids():
            d = g.data(nid)
            if d["op"] == "quantize" and d["dtype"] in ("uint8", "int8"):
                self.group(nid)
            elif d["op"] == "qlinear" and len(d["shape"]) == 2 and nid not in self.skip and not any(
                    g.data(u)["op"] in ("quantize", "relu") for u in g.users(nid)):
                x = self.integer_of(d["inputs"][0])
                if x is not None:
                    self.groups[nid] = Group("gemm", nid, None, (x,), None)
        anchors = set(self.groups)
        # a dequantize read only by groups is not needed any more
        for nid in g.node_ids():
            if g.data(nid)["op"] == "dequantize" and nid not in self.outputs and g.users(nid) and \
                    all(u in self.skip or (u in anchors and g.data(u)["op"] == "qlinear") for u in g.users(nid)):
                self.skip.add(nid)
        return self.groups, self.skip

    def group(self, q: int) -> None:
        g = self.g
        qd = g.data(q)
        p = qd["inputs"][0]
        relu = None
        if g.data(p)["op"] == "relu" and self.sole_user(p, q):
            relu, p = p, g.data(p)["inputs"][0]
        if not self.sole_user(p, relu if relu is not None else q) or p in self.skip:
            return
        pd = g.data(p)
        ins = tuple(self.integer_of(i) for i in pd["inputs"])
        if any(i is None for i in ins):
            return
        qmin = INT_RANGES[qd["dtype"]][0]
        if relu is not None and qd["quant"].zero_point[0] != qmin:
            return
        op = pd["op"]
        kind = None
        if op == "qconv":
            kind = "conv"
        elif op == "qlinear" and len(pd["shape"]) == 2:
            kind = "gemm"
        elif op == "add" and len(ins) == 2:
            kind = "add"
        elif relu is not None:
            return
        elif op == "concat":
            kind = "concat"
        elif op == "avgpool" and not pd["attrs"]["ceil_mode"]:
            kind = "avgpool"
        elif op == "adaptive_avgpool" and tuple(pd["attrs"]["output_size"]) == (1, 1):
            kind = "global_avgpool"
        elif op == "adaptive_avgpool" and all(h % o == 0 for h, o in zip(g.data(pd["inputs"][0])["shape"][2:],
                                                                          pd["attrs"]["output_size"])):
            kind = "avgpool"
        elif op in PASS_OPS and g.data(ins[0])["quant"] == qd["quant"] and g.data(ins[0])["dtype"] == qd["dtype"]:
            kind = "pass"
        if kind is None:
            return
        self.groups[q] = Group(kind, p, relu, ins, q)
        self.skip.add(p)
        if relu is not None:
            self.skip.add(relu)

    def emitter(self, grp: Group):
        if grp.kind == "conv":
            return self.qlinearconv(grp.main, grp.ins[0], grp.q)
        if grp.kind == "gemm":
            return self.qgemm(grp.main, grp.ins[0], grp.q)
        if grp.kind == "add":
            return self.qlinearadd(grp.ins, grp.q)
        if grp.kind == "concat":
            return self.qlinearconcat(grp.main, grp.ins, grp.q)
        if grp.kind == "avgpool":
            return self.qlinearavgpool(grp.main, grp.ins[0], grp.q)
        if grp.kind == "global_avgpool":
            return self.qlinearglobalpool(grp.ins[0], grp.q)
        return self.passthrough(grp.main, grp.ins[0])

    # ---- emitters: fn(body, tensor_of, out)
    def qlinearconv(self, conv: int, x: int, q: int):
        g = self.g

        def emit(b, tensor_of, out):
            from .onnx_ops import _pads
            cd = g.data(conv)
            a = cd["attrs"]
            xs, xz = _scalars(b, "x", g.data(x)["quant"], g.data(x)["dtype"])
            ws, wz = _weight_quant(b, g, g.params[cd["params"]["weight"]], "w")
            ys, yz = _scalars(b, "y", g.data(q)["quant"], g.data(q)["dtype"])
            b.node("QLinearConv", [tensor_of[x], xs, xz, b.param(cd, "weight"), ws, wz, ys, yz, b.param(cd, "bias")],
                   [out], kernel_shape=list(a["kernel_size"]), strides=list(a["stride"]), pads=_pads(a),
                   dilations=list(a["dilation"]), group=a["groups"])
        return emit

    def qgemm(self, lin: int, x: int, q):
        g = self.g

        def emit(b, tensor_of, out):
            ld = g.data(lin)
            xs, xz = _scalars(b, "x", g.data(x)["quant"], g.data(x)["dtype"])
            ws, wz = _weight_quant(b, g, g.params[ld["params"]["weight"]], "w")
            args = [tensor_of[x], xs, xz, b.param(ld, "weight"), ws, wz, b.param(ld, "bias")]
            if q is not None:
                args += list(_scalars(b, "y", g.data(q)["quant"], g.data(q)["dtype"]))
            b.node("QGemm", args, [out], domain=MS, transB=1, alpha=1.0)
        return emit

    def qlinearadd(self, ins, q: int):
        g = self.g

        def emit(b, tensor_of, out):
            args = []
            for k, x in enumerate(ins):
                args += [tensor_of[x], *_scalars(b, f"x{k}", g.data(x)["quant"], g.data(x)["dtype"])]
            args += list(_scalars(b, "y", g.data(q)["quant"], g.data(q)["dtype"]))
            b.node("QLinearAdd", args, [out], domain=MS)
        return emit

    def qlinearconcat(self, cat: int, ins, q: int):
        g = self.g

        def emit(b, tensor_of, out):
            args = list(_scalars(b, "y", g.data(q)["quant"], g.data(q)["dtype"]))
            for k, x in enumerate(ins):
                args += [tensor_of[x], *_scalars(b, f"x{k}", g.data(x)["quant"], g.data(x)["dtype"])]
            axis = g.data(cat)["attrs"]["dim"] % len(g.data(cat)["shape"])
            b.node("QLinearConcat", args, [out], domain=MS, axis=axis)
        return emit

    def qlinearavgpool(self, pool: int, x: int, q: int):
        g = self.g

        def emit(b, tensor_of, out):
            from .onnx_ops import _pads
            pd = g.data(pool)
            a = pd["attrs"]
            if pd["op"] == "adaptive_avgpool":        # evenly dividing: one window of H / oh by W / ow
                k = tuple(h // o for h, o in zip(g.data(x)["shape"][2:], a["output_size"]))
                a = {"kernel_size": k, "stride": k, "padding": (0, 0), "count_include_pad": True}
            xs, xz = _scalars(b, "x", g.data(x)["quant"], g.data(x)["dtype"])
            ys, yz = _scalars(b, "y", g.data(q)["quant"], g.data(q)["dtype"])
            b.node("QLinearAveragePool", [tensor_of[x], xs, xz, ys, yz], [out], domain=MS,
                   kernel_shape=list(a["kernel_size"]), strides=list(a["stride"]), pads=_pads(a),
                   count_include_pad=int(a["count_include_pad"]), channels_last=0)
        return emit

    def qlinearglobalpool(self, x: int, q: int):
        g = self.g

        def emit(b, tensor_of, out):
            xs, xz = _scalars(b, "x", g.data(x)["quant"], g.data(x)["dtype"])
            ys, yz = _scalars(b, "y", g.data(q)["quant"], g.data(q)["dtype"])
            b.node("QLinearGlobalAveragePool", [tensor_of[x], xs, xz, ys, yz], [out], domain=MS, channels_last=0)
        return emit

    def passthrough(self, op: int, x: int):
        g = self.g

        def emit(b, tensor_of, out):
            from .onnx_ops import RULES
            d = g.data(op)
            RULES[d["op"]](b, d, [tensor_of[x]], out, [g.data(x)["shape"]])
        return emit


def groups(graph) -> tuple[dict, set]:
    """``({anchor: Group}, skipped node ids)``: the integer operators of a quantised graph (module docstring)."""
    return _Planner(graph).run()


def plan(graph) -> dict:
    """``{node id: SKIP or emit(body, tensor_of, out)}``: what the QOperator form emits instead of each IR
    node's own lowering (see the module docstring)."""
    planner = _Planner(graph)
    found, skip = planner.run()
    out = {nid: SKIP for nid in skip}
    out.update({anchor: planner.emitter(grp) for anchor, grp in found.items()})
    return out


def wanted(graph, functions: bool) -> bool:
    return not functions and graph.meta.get("quantize", {}).get("format") == "qoperator"
