"""``fold-bn``: fold inference-mode batch normalisation into an adjacent conv or linear layer.

In inference a BN is a per-channel affine map built from its running statistics:

    bn(x)_c = gamma_c (x_c - mu_c) / sqrt(var_c + eps) + beta_c = s_c x_c + t_c,
    s_c = gamma_c / sqrt(var_c + eps),     t_c = beta_c - s_c mu_c

(gamma = 1 and beta = 0 for ``bn(affine=false)``). Arithmetic is done in float64
and stored in the parameters' dtype.

**Backward** (conv -> bn, linear -> bn). The layer computes
``z_o = sum_{i,k} W[o,i,k] x[i,k] + b_o``, so

    s_o z_o + t_o = sum_{i,k} (s_o W[o,i,k]) x[i,k] + (s_o b_o + t_o)
    W'[o,...] = s_o W[o,...],   b'_o = s_o b_o + t_o

with ``b = 0`` for a layer without bias (it gains one). The scale acts per output
channel, so this is exact for every stride, padding, dilation and group count.
It needs the BN to be the only user of the layer's output (otherwise the
unnormalised output is still needed) and the layer's output not to be a model
output. A linear qualifies when its output is 2-D ``(N, F)``, where the BN's
channels are the linear's output features.

**Forward** (bn -> conv, bn -> linear, also through channel concatenation).
If channel ``c`` of the BN output reaches input channel ``c`` of a conv whose
group ``g`` holds it at position ``j = c - g C_g`` (``C_g`` input channels per group),

    z_o = sum_{j,k} W[o,j,k] (s_c x[c,k] + t_c) + b_o
        = sum_{j,k} (W[o,j,k] s_c) x[c,k] + (b_o + sum_{j,k} W[o,j,k] t_c)
    W'[o,j,k] = W[o,j,k] s_c,   b'_o = b_o + sum_{j,k} W[o,j,k] t_c

for the output channels ``o`` of group ``g``. This holds wherever every tap reads
real input. Zero padding breaks it at the border: the original pads the BN's
*output* with zeros (a padded tap adds 0), the folded layer pads its *input*
(the folded bias still adds ``W[o,j,k] t_c`` for the padded tap). So a padded
conv is folded into only when ``t_c = 0`` for every channel the BN feeds it,
where both agree exactly; otherwise the BN is left alone and the report says so.
For a linear on a 2-D input, ``W'[o,i] = W[o,i] s_i`` and ``b'_o = b_o + sum_i W[o,i] t_i``.
A concat along channels passes BN channel ``c`` to channel ``off + c`` of its
result unchanged, so the rule applies to every conv or linear that reads the
concat, on that channel slice. Every user must qualify, since the BN is removed.

**Refused** (reported with the reason): a BN whose output passes through a
nonlinearity, pooling, an add or any other op before a conv (pre-activation BN
such as DenseNet's BN-ReLU-conv; BN into a residual add that is not fed by a
conv), a BN that is a model output, padded convs with a non-zero shift, a
linear -> BN over a non-feature dimension.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import ops
from ..ir.graph import Graph, Node
from ..ir.params import Param
from .base import Pass, PassReport, node_label, register
from .context import PassContext

LAYERS = ("conv", "linear")


def bn_affine(bn: Node) -> tuple[np.ndarray, np.ndarray]:
    """The BN's inference map ``x -> s x + t`` per channel, in float64."""
    mean = bn.param("running_mean").value.astype(np.float64)
    var = bn.param("running_var").value.astype(np.float64)
    s = 1.0 / np.sqrt(var + bn.attrs["eps"])
    t = -s * mean
    if bn.attrs["affine"]:
        gamma = bn.param("weight").value.astype(np.float64)
        beta = bn.param("bias").value.astype(np.float64)
        s, t = gamma * s, gamma * t + beta
    return s, t


@register
@dataclass
class FoldBatchNorm(Pass):
    """Folds inference-mode batch norm into the conv or linear layer before (or, where exact, after) it."""

    name = "fold-bn"

    def rewrite(self, graph: Graph, report: PassReport, ctx: PassContext) -> bool:
        return _Folder(graph, report).run()


class _Folder:
    """The state of one fold-bn run over one graph."""

    def __init__(self, graph: Graph, report: PassReport):
        self.graph, self.report = graph, report

    def at(self, node: Node) -> str:
        return "@" + node_label(self.graph, node.id)

    def run(self) -> bool:
        graph, report = self.graph, self.report
        modified = False
        for nid in [n.id for n in graph.nodes() if n.op == "bn"]:
            bn = graph.node(nid)
            back = self.check_backward(bn)
            if back is None:
                self._fold_backward(bn)
                modified = True
                continue
            targets, fwd = self.check_forward(bn)
            if fwd is None:
                self._fold_forward(bn, targets)
                modified = True
                continue
            report.refuse(graph, nid, f"It cannot be folded backward ({back}) nor forward ({fwd}).")
        return modified

    # ---- checks: why a fold is refused (None when it is possible)
    def _layer_refusal(self, layer: Node) -> str | None:
        if "bias" not in layer.params and f"{layer.scope}.bias" in self.graph.params:
            return f"{layer.op} {self.at(layer)} has no bias, and the name {layer.scope}.bias is taken"
        return None

    def check_backward(self, bn: Node) -> str | None:
        g = self.graph
        layer = g.node(bn.inputs[0])
        if layer.op not in LAYERS:
            return f"its input comes from '{layer.op}' ({self.at(layer)}), not from a conv or linear layer"
        others = [u for u in g.users(layer.id) if u != bn.id]
        if others:
            o = g.node(others[0])
            return (f"the output of {layer.op} {self.at(layer)} is also used by {o.op} {self.at(o)}, "
                    "which needs it unnormalised")
        if layer.id in g.outputs:
            return f"the output of {layer.op} {self.at(layer)} is also a model output"
        if layer.op == "linear" and len(layer.shape) != 2:
            return (f"linear {self.at(layer)} has a {len(layer.shape)}-D output, so the BN normalises "
                    "dimension 1, not the linear's output features")
        return self._layer_refusal(layer)

    def check_forward(self, bn: Node):
        """``([(layer id, channel offset)], None)`` for every layer the BN reaches, or ``(None, reason)``."""
        g = self.graph
        targets: list[tuple[int, int]] = []
        stack = [(bn.id, 0)]
        while stack:
            src, off = stack.pop()
            if src in g.outputs:
                what = "its output" if src == bn.id else f"the concat {self.at(g.node(src))} it feeds"
                return None, f"{what} is a model output"
            for uid in g.users(src):
                u = g.node(uid)
                positions = [k for k, i in enumerate(u.inputs) if i == src]
                if u.op in LAYERS:
                    if u.op == "linear" and len(bn.shape) != 2:
                        return None, (f"linear {self.at(u)} mixes the last dimension of a {len(bn.shape)}-D "
                                      "input, while the BN scales dimension 1")
                    targets.append((uid, off))
                elif ops.get(u.op).channels.kind == "concat" and u.attrs["dim"] % len(u.shape) == 1:
                    starts = ops.concat_offsets(u.attrs, [g.data(i)["shape"] for i in u.inputs])
                    for k in positions:
                        stack.append((uid, off + starts[k]))
                else:
                    cat = ops.get(u.op).category if ops.get(u.op) else ""
                    if cat == "activation":
                        return None, (f"it is a pre-activation BN: its output passes through the nonlinearity "
                                      f"'{u.op}' ({self.at(u)}) before any conv, and a per-channel affine map "
                                      "does not commute with a nonlinearity")
                    return None, f"its output feeds '{u.op}' ({self.at(u)}), which a BN cannot be moved past"
        if not targets:
            return None, "its output is not used"
        s, t = bn_affine(bn)
        for uid, off in targets:
            u = g.node(uid)
            reason = self._layer_refusal(u)
            if reason:
                return None, reason
            if u.op == "conv" and tuple(u.attrs["padding"]) != (0, 0) and np.any(t != 0.0):
                return None, (f"conv {self.at(u)} zero-pads its input (padding={tuple(u.attrs['padding'])}) and "
                              "the BN's shift beta - gamma * mean / sqrt(var + eps) is non-zero, so the folded "
                              "bias would be wrong at the border")
        return targets, None

    # ---- rewrites
    def _set_weights(self, layer: Node, weight: np.ndarray, bias: np.ndarray) -> None:
        g = self.graph
        wp = layer.param("weight")
        wp.value = weight.astype(wp.dtype)
        if "bias" in layer.params:
            bp = layer.param("bias")
            bp.value = bias.astype(bp.dtype)
        else:
            bp = Param(f"{layer.scope}.bias", (weight.shape[0],), "zeros", wp.fan_in, wp.fan_out, True,
                       wp.dtype, wp.seed)
            bp.value = bias.astype(wp.dtype)
            g.add_param(bp)
            g.update(layer.id, attrs={**layer.attrs, "bias": True}, params={**layer.params, "bias": bp.name})
        self.report.touched(layer.id)

    def _weights(self, layer: Node) -> tuple[np.ndarray, np.ndarray]:
        w = layer.param("weight").value.astype(np.float64)
        b = layer.param("bias").value.astype(np.float64) if "bias" in layer.params else np.zeros(w.shape[0])
        return w, b

    def _fold_backward(self, bn: Node) -> None:
        g = self.graph
        layer = g.node(bn.inputs[0])
        s, t = bn_affine(bn)
        w, b = self._weights(layer)
        self._set_weights(layer, w * s.reshape((-1,) + (1,) * (w.ndim - 1)), s * b + t)
        label = self.at(bn)
        g.replace_all_uses(bn.id, layer.id)
        g.remove_node(bn.id)
        self.report.did(f"folded bn {label} into {layer.op} {self.at(layer)} (backward)")

    def _fold_forward(self, bn: Node, targets: list[tuple[int, int]]) -> None:
        g = self.graph
        s, t = bn_affine(bn)
        c = len(s)
        per_layer: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for uid, off in targets:
            cin = g.data(g.node(uid).inputs[0])["shape"][1]
            scale, shift = per_layer.setdefault(uid, (np.ones(cin), np.zeros(cin)))
            scale[off:off + c] = s
            shift[off:off + c] = t
        for uid, (scale, shift) in sorted(per_layer.items()):
            layer = g.node(uid)
            w, b = self._weights(layer)
            if layer.op == "linear":
                b = b + w @ shift
                w = w * scale[None, :]
            else:
                groups = layer.attrs["groups"]
                og, cg = w.shape[0] // groups, w.shape[1]
                b = b.copy()
                for k in range(groups):
                    rows = slice(k * og, (k + 1) * og)
                    sk, tk = scale[k * cg:(k + 1) * cg], shift[k * cg:(k + 1) * cg]
                    b[rows] += np.einsum("ojhw,j->o", w[rows], tk)
                    w[rows] = w[rows] * sk[None, :, None, None]
            self._set_weights(layer, w, b)
        label, names = self.at(bn), ", ".join(f"{g.node(u).op} {self.at(g.node(u))}" for u in sorted(per_layer))
        g.replace_all_uses(bn.id, bn.inputs[0])
        g.remove_node(bn.id)
        self.report.did(f"folded bn {label} into {names} (forward)")
