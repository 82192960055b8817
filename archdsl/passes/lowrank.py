"""``lowrank``: low-rank factorisation of conv and linear layers into chains of thinner, ordinary layers.

The factors come from the trained weights (:mod:`archdsl.passes.factorize` has
the maths, in float64) and become plain ``conv`` and ``linear`` nodes through
``Graph.replace_with``: layer ``features.10`` becomes ``features.10.0``,
``features.10.1``, ... (a ``seq`` scope; an ``nn.Sequential`` at that path in
PyTorch), so every backend runs them as it runs any conv, and nothing rebuilds a
kernel at run time. The bias stays on the last factor. Only ungrouped float32
layers are factorised: grouped and depthwise convs are left alone, with the reason.

**The factorisations** of a layer with weight ``W`` (``N`` outputs, ``C`` inputs):

* ``svd`` (linear layers, 1x1 convs): ``W ~ U_r (U_r^T W)``, two layers
  ``C -> r`` (no bias; a 1x1 conv keeps its stride and padding here, as a padded
  zero maps to zero) and ``r -> N`` (bias); ``||W - W_r||_F^2 = sum_{i > r} s_i^2``.
* ``tucker2`` (KxK convs): ``W ~ G x_0 U x_1 V`` (HOSVD, optionally HOOI), three
  convs: 1x1 ``C -> r_in`` (``V^T``), KxK ``r_in -> r_out`` (``G``, with the original
  stride, padding and dilation) and 1x1 ``r_out -> N`` (``U`` and the bias). The
  1x1s have stride 1 and no padding; zero padding commutes with the first, which
  has no bias. MACs ``H_in W_in C r_in + H W r_in r_out kh kw + H W r_out N``.
  A mode kept whole (``r_in = C`` or ``r_out = N``) has a square orthogonal factor,
  which is folded into the core exactly (``G x_1 V = W x_0 U U^T``: the truncated
  SVD of the mode-0 unfolding), so that 1x1 layer and its tensor disappear.
* ``cp`` (KxK convs; Lebedev et al. 2015): ``W[n,c,i,j] ~ sum_r A[n,r] B[c,r]
  H[i,r] K[j,r]`` (ALS), four convs: 1x1 ``C -> R`` (``B^T``), depthwise ``kh x 1``
  (``H``; stride ``(sh, 1)``, padding ``(ph, 0)``, dilation ``(dh, 1)``),
  depthwise ``1 x kw`` (``K``; ``(1, sw)``, ``(0, pw)``, ``(1, dw)``) and 1x1
  ``R -> N`` (``A`` and the bias).
* ``auto``: ``svd`` for linear layers and 1x1 convs, ``tucker2`` for KxK convs.

**Ranks**, one rule per pass: ``ratio=q`` keeps ``ceil(q n)`` of each factorised
mode's ``n`` channels (``ceil(q N)`` and ``ceil(q C)`` for Tucker-2,
``ceil(q min(N, C))`` for SVD and CP); ``energy=f`` the smallest rank whose
leading squared singular values of each unfolding hold ``f`` of their sum
(CP: the larger of the two unfoldings' ranks); ``vbmf=true`` the EVBMF rank of
each unfolding (Kim et al. 2016; CP: the larger). ``round_to=k`` rounds each rank
up to a multiple of ``k`` (never past the mode's size). A rank never exceeds
what the unfolding can hold (``r_out <= min(N, C kh kw)``). A layer whose MACs
would not fall by at least ``min_gain`` is left alone, with the reason.

**The MAC target** (``macs=m``) keeps a fraction ``m`` of the *whole* model's
MACs and chooses layers and ranks by a cost model rather than by MACs alone.
Each candidate layer ``l`` has options ``o``: dense, or a factorisation with
ranks on a grid of multiples of ``round_to`` (default 16 here, the vector
blocking of the CPU kernels), for Tucker-2 including keeping either mode whole
(folded, above). An option that saves no modelled time is dropped: dense beats
it on both counts. Each option has the fraction ``d_l(o)`` of the weights'
energy it discards: exact for SVD (the discarded ``s^2``) and for the HOSVD of
Tucker-2 at every rank pair at once (with the full bases, the core at ranks
``(a, b)`` is the leading block of ``G_full = W x_0 U^T x_1 V^T``, so the kept
energy is a 2-D cumulative sum of ``sum_ij G_full[a, b, i, j]^2``); for CP the
HOSVD's at ranks ``(R, R)``, a proxy. Its loss is ``e_l(o) = -ln(1 - d_l(o))``,
the discarded fraction to first order, growing without bound as a layer loses
all its energy (so the loss is spread rather than a few layers wiped out), and
its modelled time ``t_l(o)``. For a Lagrange multiplier ``lambda`` every layer
takes the option minimising

    e_l(o) + lambda t_l(o) / T,        T = the dense layers' modelled time

and ``lambda`` is the smallest (a log-scale scan, then bisection) at which the
model's MACs fall to ``m`` times the original: the allocation that loses the
least for the time it saves, at the MACs asked for. The MACs the multiplier's
last discrete jump overshot are then given back greedily, each step moving one
layer to the less lossy option that buys back the most loss per modelled time
added, while the total stays within the target. With ``cost=macs``, ``t`` is
the MAC count (the MACs-alone allocation, for comparison).

**The cost model** (``cost=roofline``) charges each node at batch ``b`` (option
``batch``) for its arithmetic and its memory traffic:

    t = b MACs / (P a) + 4 (b (in + out) + weights) / B + t_0
    a = (c_in / ceil_16(c_in)) (c_out / ceil_16(c_out))

with ``in``, ``out`` the elements of the node's input and output per sample and
``weights`` its parameter elements (float32, 4 bytes), ``P = 100`` GMAC/s
sustained, ``B = 4.5`` GB/s effective bandwidth, ``t_0 = 20`` us per node, and
``a`` the fraction of the AVX-512 channel blocks (16 floats) doing useful work
(1 for a depthwise conv). The constants (:data:`ROOFLINE`) were fitted to
single-layer latencies measured on the benchmark machine (2 shared cores; see
docs/benchmarks.md): the dense convs of VGG-16 ran at 60 to 105 GMAC/s, 1x1
convs at 224x224 and 112x112 at 5 to 25 (they stream their tensors at 1 to 3
GB/s and compute little), so the terms add rather than overlap, and a width off
the 16-channel grid (40, 100 channels) cost what its padding predicts. A thin
1x1 at high resolution has ``C r / (4 (C + r))`` MACs per byte at batch 1, so the
model charges Tucker-2's extra tensors where they are large; fully connected
layers are dominated by their weights (VGG-16's first: 411 MB, 46 ms at batch
1), which SVD shrinks for few MACs.

**The report** gives one line per factorised layer: ``method``, ``ranks``
(``[r]`` for SVD and CP, ``[r_out, r_in]`` for Tucker-2, the whole mode where
folded), ``macs_before``, ``macs_after``, ``rel_error`` ``= ||W - W_hat||_F /
||W||_F`` of the factorised weights (SVD: from the discarded singular values,
which is exact; Tucker-2: ``sqrt(||W||^2 - ||G||^2) / ||W||``, exact for the
projection HOSVD and HOOI compute; CP: from the reconstructed kernel) and, with
a MAC target, the modelled time before and after (``modelled_ms_*``). Layers
considered and left dense are refused with the reason.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..ir import ops
from ..ir.graph import Graph, NewNode
from ..ir.shape_rules import numel
from . import factorize as fz
from .base import OptionError, Pass, PassReport, in_scopes, listing, note_unmatched, register, scope_patterns
from .context import PassContext

METHODS = ("auto", "tucker2", "cp", "svd")
COSTS = ("roofline", "macs")

MAX_ITERS = 10_000        # ALS / HOOI sweeps, each about as costly as one factorisation


@dataclass(frozen=True)
class Roofline:
    """The cost model's constants: sustained MACs/s, bytes/s, seconds per node, channel block."""
    macs_per_s: float = 100e9
    bytes_per_s: float = 4.5e9
    overhead_s: float = 20e-6
    block: int = 16

    def node_time(self, op: str, attrs: dict, in_shape, out_shape, weights: int, batch: int) -> float:
        macs = ops.macs(op, attrs, [in_shape], out_shape)
        a = 1.0
        if op == "conv" and attrs["groups"] == 1:
            a = _fill(in_shape[1], self.block) * _fill(attrs["out_channels"], self.block)
        elif op == "linear":
            a = _fill(in_shape[-1], self.block) * _fill(attrs["out_features"], self.block)
        compute = batch * macs / (self.macs_per_s * a)
        memory = 4.0 * (batch * (numel(in_shape) + numel(out_shape)) + weights) / self.bytes_per_s
        return compute + memory + self.overhead_s


ROOFLINE = Roofline()


def _fill(c: int, block: int) -> float:
    return c / (block * math.ceil(c / block))


# ---- the layers and their factorisations --------------------------------------------------------

@dataclass
class Layer:
    """A conv or linear layer the pass may factorise."""
    nid: int
    scope: str
    op: str
    attrs: dict
    in_shape: tuple
    out_shape: tuple
    weight: np.ndarray           # float64
    bias: np.ndarray | None
    _spectra: dict = field(default_factory=dict, repr=False)

    @property
    def pointwise(self) -> bool:
        return self.op == "linear" or tuple(self.attrs["kernel_size"]) == (1, 1)

    @property
    def n(self) -> int:
        return self.weight.shape[0]

    @property
    def c(self) -> int:
        return self.weight.shape[1]

    def matrix(self) -> np.ndarray:
        return self.weight.reshape(self.n, -1)

    def spectrum(self, mode: int) -> fz.Spectrum:
        """The mode's unfolding (``matrix()`` for SVD, mode 0 or 1 of the kernel)."""
        if mode not in self._spectra:
            w = self.matrix() if (self.pointwise and mode == 0) else fz.unfold(self.weight, mode)
            self._spectra[mode] = fz.Spectrum(w)
        return self._spectra[mode]

    @property
    def energy(self) -> float:
        if "energy" not in self._spectra:
            self._spectra["energy"] = float(np.sum(self.weight * self.weight))
        return self._spectra["energy"]

    def tucker_kept(self) -> np.ndarray:
        if "kept" not in self._spectra:
            self._spectra["kept"] = fz.tucker2_kept(self.weight, (self.spectrum(0), self.spectrum(1)))
        return self._spectra["kept"]

    def max_rank(self, mode: int) -> int:
        return self.spectrum(mode).rank_max if not self.pointwise else min(self.n, self.c)


@dataclass(frozen=True)
class Plan:
    """One way to factorise a layer: ``ranks`` are ``(r,)`` for svd and cp, ``(r_out, r_in)`` for tucker2
    (a rank equal to the mode's size folds that factor into the core)."""
    method: str
    ranks: tuple


def chain(layer: Layer, plan: Plan) -> list[tuple[str, dict]]:
    """The ``(op, attrs)`` of the nodes replacing ``layer``, in order."""
    a = layer.attrs
    bias = bool(a["bias"])
    if plan.method == "svd":
        (r,) = plan.ranks
        if layer.op == "linear":
            return [("linear", {"out_features": r, "bias": False}),
                    ("linear", {"out_features": layer.n, "bias": bias})]
        return [("conv", {"out_channels": r, "kernel_size": 1, "stride": a["stride"], "padding": a["padding"],
                          "dilation": a["dilation"], "bias": False}),
                ("conv", {"out_channels": layer.n, "kernel_size": 1, "bias": bias})]
    spatial = {"kernel_size": a["kernel_size"], "stride": a["stride"], "padding": a["padding"],
               "dilation": a["dilation"]}
    if plan.method == "tucker2":
        r_out, r_in = plan.ranks
        out = []
        if r_in < layer.c:
            out.append(("conv", {"out_channels": r_in, "kernel_size": 1, "bias": False}))
        last = r_out == layer.n
        out.append(("conv", {"out_channels": r_out, **spatial, "bias": bias and last}))
        if not last:
            out.append(("conv", {"out_channels": layer.n, "kernel_size": 1, "bias": bias}))
        return out
    (r,) = plan.ranks
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = a["kernel_size"], a["stride"], a["padding"], a["dilation"]
    return [("conv", {"out_channels": r, "kernel_size": 1, "bias": False}),
            ("conv", {"out_channels": r, "kernel_size": (kh, 1), "stride": (sh, 1), "padding": (ph, 0),
                      "dilation": (dh, 1), "groups": r, "bias": False}),
            ("conv", {"out_channels": r, "kernel_size": (1, kw), "stride": (1, sw), "padding": (0, pw),
                      "dilation": (1, dw), "groups": r, "bias": False}),
            ("conv", {"out_channels": layer.n, "kernel_size": 1, "bias": bias})]


def chain_shapes(layer: Layer, nodes) -> list[tuple[str, dict, tuple, tuple, int]]:
    """``(op, full attrs, input shape, output shape, weight elements)`` of each node of a chain."""
    out, shape = [], layer.in_shape
    for op, attrs in nodes:
        full = ops.complete_attrs(op, attrs)
        new = ops.infer(op, full, [shape])
        weights = sum(numel(p.shape) for p in ops.param_specs(op, full, [shape]).values())
        out.append((op, full, shape, new, weights))
        shape = new
    return out


def plan_macs(layer: Layer, plan: Plan | None) -> int:
    if plan is None:
        return ops.macs(layer.op, layer.attrs, [layer.in_shape], layer.out_shape)
    return sum(ops.macs(op, a, [i], o) for op, a, i, o, _ in chain_shapes(layer, chain(layer, plan)))


def plan_time(layer: Layer, plan: Plan | None, cost: str, batch: int, model: Roofline = ROOFLINE) -> float:
    if cost == "macs":
        return float(plan_macs(layer, plan))
    if plan is None:
        weights = numel(layer.weight.shape) + (0 if layer.bias is None else layer.n)
        return model.node_time(layer.op, layer.attrs, layer.in_shape, layer.out_shape, weights, batch)
    return sum(model.node_time(op, a, i, o, w, batch) for op, a, i, o, w in chain_shapes(layer, chain(layer, plan)))


def estimated_error(layer: Layer, plan: Plan) -> float:
    """The relative squared error the allocation uses (see the module docstring)."""
    total = layer.energy or 1.0
    if plan.method == "svd":
        return layer.spectrum(0).discarded(plan.ranks[0]) / total
    kept = layer.tucker_kept()
    r_out, r_in = plan.ranks if plan.method == "tucker2" else (plan.ranks[0], plan.ranks[0])
    r_out, r_in = min(r_out, kept.shape[0]), min(r_in, kept.shape[1])
    return max(0.0, total - float(kept[r_out - 1, r_in - 1])) / total


@dataclass
class Factors:
    """The weights of each node of the chain (local name -> array) and the relative error."""
    params: list
    rel_error: float
    detail: dict = field(default_factory=dict)


def factorise(layer: Layer, plan: Plan, iters: int, rng) -> Factors:
    """The factor weights of ``plan`` for ``layer`` (float64), with the exact relative error."""
    total = layer.energy
    rel = (lambda e2: math.sqrt(max(e2, 0.0) / total) if total > 0 else 0.0)
    b = {} if layer.bias is None else {"bias": layer.bias}
    if plan.method == "svd":
        (r,) = plan.ranks
        first, second = layer.spectrum(0).factors(r)
        e2 = layer.spectrum(0).discarded(r)
        if layer.op == "conv":
            first, second = first.reshape(r, layer.c, 1, 1), second.reshape(layer.n, r, 1, 1)
        return Factors([{"weight": first}, {"weight": second, **b}], rel(e2))
    if plan.method == "tucker2":
        r_out, r_in = plan.ranks
        core, u, v, e2 = fz.tucker2(layer.weight, r_out, r_in, iters, (layer.spectrum(0), layer.spectrum(1)))
        nodes = []
        fold_in, fold_out = r_in == layer.c, r_out == layer.n
        if fold_in:
            core = np.einsum("rsij,cs->rcij", core, v)
        else:
            nodes.append({"weight": v.T[:, :, None, None]})
        if fold_out:
            core = np.einsum("rsij,nr->nsij", core, u)
            nodes.append({"weight": core, **b})
        else:
            nodes.append({"weight": core})
            nodes.append({"weight": u[:, :, None, None], **b})
        return Factors(nodes, rel(e2))
    (r,) = plan.ranks
    (a, bb, h, k), e2, sweeps = fz.cp_als(layer.weight, r, iters, rng=rng)
    nodes = [{"weight": bb.T[:, :, None, None]}, {"weight": h.T[:, None, :, None]},
             {"weight": k.T[:, None, None, :]}, {"weight": a[:, :, None, None], **b}]
    return Factors(nodes, rel(e2), {"als_sweeps": sweeps})


# ---- the pass -----------------------------------------------------------------------------------

@register
@dataclass
class LowRank(Pass):
    """Factorises conv and linear layers into thinner ordinary layers (SVD, Tucker-2, CP) from their weights."""

    name = "lowrank"
    method: str = field(default="auto", metadata={
        "doc": "tucker2, cp (KxK convs), svd (linear, 1x1 convs) or auto (svd for linear and 1x1, tucker2 for KxK)"})
    ratio: float | None = field(default=None, metadata={
        "doc": "ranks: each factorised mode keeps ceil(ratio x its channels)"})
    energy: float | None = field(default=None, metadata={
        "doc": "instead: the smallest ranks holding this fraction of each unfolding's squared singular values"})
    vbmf: bool = field(default=False, metadata={"doc": "instead: ranks by variational Bayesian matrix factorisation"})
    macs: float | None = field(default=None, metadata={
        "doc": "instead: fraction of the model's MACs kept, layers and ranks chosen by the cost model"})
    min_gain: float = field(default=1.25, metadata={
        "doc": "leave a layer alone unless its MACs fall by at least this factor"})
    keep: str | None = field(default=None, metadata={"doc": "comma-separated scope patterns never factorised"})
    round_to: int | None = field(default=None, metadata={
        "doc": "ranks rounded up to a multiple of this (none: 1, with macs 16)"})
    iters: int | None = field(default=None, metadata={
        "doc": "refinement sweeps: HOOI for tucker2, ALS for cp (none: 0 for tucker2, 50 for cp)"})
    cost: str = field(default="roofline", metadata={"doc": "with macs: roofline (modelled latency) or macs"})
    batch: int = field(default=1, metadata={"doc": "with macs: the batch size the cost model assumes"})

    def __post_init__(self):
        super().__post_init__()
        if self.method not in METHODS:
            raise OptionError(f"there is no method '{self.method}'; the methods are {listing(METHODS)}.", "method")
        given = [n for n, v in (("ratio", self.ratio), ("energy", self.energy), ("vbmf", self.vbmf or None),
                                ("macs", self.macs)) if v is not None]
        if len(given) != 1:
            raise OptionError("give exactly one rank rule: ratio= (a fraction of each mode's channels), energy= (a "
                              "fraction of the squared singular values), vbmf=true or macs= (a fraction of the "
                              "model's MACs kept), as in lowrank{ratio=0.5}" +
                              (f"; got {' and '.join(given)}." if given else "."))
        for name, value in (("ratio", self.ratio), ("energy", self.energy), ("macs", self.macs)):
            if value is not None and not 0.0 < value <= 1.0:
                raise OptionError(f"{name} must be above 0 and at most 1, but it is {value:g}.", name)
        if self.min_gain < 0:
            raise OptionError(f"min_gain must be at least 0, but it is {self.min_gain:g}.", "min_gain")
        if self.macs is None:
            for name, value, default in (("cost", self.cost, "roofline"), ("batch", self.batch, 1)):
                if value != default:
                    raise OptionError(f"{name} applies to macs=, whose cost model chooses the layers and ranks; "
                                      f"with {given[0]}= it would change nothing, so drop {name} or give macs=.",
                                      name)
        if self.method == "svd" and self.iters:
            raise OptionError("iters refines Tucker-2 and CP factors; an SVD is exact for its rank and has none "
                              "to refine, so drop iters or choose method=tucker2 or cp.", "iters")
        for name, least, value in (("round_to", 1, self.round_to), ("iters", 0, self.iters), ("batch", 1, self.batch)):
            if value is not None and value < least:
                raise OptionError(f"{name} must be at least {least}, but it is {value}.", name)
        if self.iters is not None and self.iters > MAX_ITERS:
            raise OptionError(f"iters must be at most {MAX_ITERS:,}, but it is {self.iters:,}.", "iters")
        if self.cost not in COSTS:
            raise OptionError(f"there is no cost '{self.cost}'; the costs are {listing(COSTS)}.", "cost")

    def expected_error(self) -> float:
        """Lossy by design; exact (to rounding) only at full rank, with SVD or Tucker-2."""
        full = self.ratio == 1.0 or self.energy == 1.0 or self.macs == 1.0
        return 0.0 if full and (self.method != "cp" or self.macs == 1.0) else math.inf

    # ---- which layers
    def _method(self, layer: Layer) -> str | None:
        if self.method == "auto":
            return "svd" if layer.pointwise else "tucker2"
        if self.method == "svd":
            return "svd" if layer.pointwise else None
        return None if layer.pointwise else self.method

    def _candidates(self, graph: Graph, report: PassReport) -> list[Layer]:
        patterns = scope_patterns(self.keep)
        note_unmatched(graph, patterns, "keep", report)
        out = []
        for n in graph.nodes():
            if n.op not in ("conv", "linear") or in_scopes(n.scope, patterns):
                continue
            if n.op == "conv" and n.attrs["groups"] > 1:
                kind = "depthwise" if n.attrs["groups"] == graph.data(n.inputs[0])["shape"][1] else "grouped"
                report.refuse(graph, n.id, f"It is a {kind} conv (groups={n.attrs['groups']}): each group is "
                              "already a thin layer, so it is left alone.")
                continue
            w = n.param("weight")
            if n.dtype != "float32" or w.dtype != "float32":
                report.refuse(graph, n.id, f"Its weights are {w.dtype}; lowrank factorises float32 layers.")
                continue
            bias = n.param("bias").value.astype(np.float64) if n.attrs["bias"] else None
            layer = Layer(n.id, n.scope, n.op, dict(n.attrs), tuple(graph.data(n.inputs[0])["shape"]),
                          tuple(n.shape), w.value.astype(np.float64), bias)
            if self._method(layer) is None:
                what = "linear layer" if layer.op == "linear" else (
                    "1x1 conv" if layer.pointwise else f"{'x'.join(map(str, layer.attrs['kernel_size']))} conv")
                report.refuse(graph, n.id, f"method={self.method} does not apply to a {what} (tucker2 and cp "
                              "factorise KxK convs, svd linear layers and 1x1 convs; auto does both).")
                continue
            out.append(layer)
        return out

    # ---- ranks
    def _round(self, r: int, size: int) -> int:
        k = self.round_to or 1
        return max(1, min(size, k * math.ceil(r / k)))

    def _fixed_plan(self, layer: Layer, method: str) -> Plan:
        def rank(mode: int, channels: int) -> int:
            cap = layer.max_rank(mode)
            if self.ratio is not None:
                r = math.ceil(self.ratio * channels - 1e-9)
            else:
                sp = layer.spectrum(mode)
                r = fz.energy_rank(sp.s2, self.energy) if self.energy is not None else fz.vbmf_rank(sp.s2, sp.shape)
            return self._round(min(r, cap), cap)
        if method == "svd":
            return Plan("svd", (rank(0, min(layer.n, layer.c)),))
        if method == "tucker2":
            return Plan("tucker2", (rank(0, layer.n), rank(1, layer.c)))
        if self.ratio is not None:
            r = max(1, math.ceil(self.ratio * min(layer.n, layer.c) - 1e-9))
            return Plan("cp", (self._round(r, max(r, min(layer.n, layer.c))),))
        return Plan("cp", (max(rank(0, layer.n), rank(1, layer.c)),))

    def _options(self, layer: Layer, method: str) -> list[Plan]:
        step = self.round_to or 16
        if method == "svd":
            cap = min(layer.n, layer.c)
            return [Plan("svd", (r,)) for r in range(step, cap, step)] or [Plan("svd", (max(1, cap // 2),))]
        if method == "cp":
            cap = min(layer.n, layer.c)
            return [Plan("cp", (r,)) for r in range(step, cap, step)]
        c0, c1 = layer.max_rank(0), layer.max_rank(1)
        outs = sorted({*range(step, c0, step), c0})         # c0 == N: the output factor folded
        ins = sorted({*range(step, c1, step), c1})          # c1 == C: the input factor folded
        return [Plan("tucker2", (ro, ri)) for ro in outs for ri in ins if not (ro == layer.n and ri == layer.c)]

    def _allocate(self, layers: list[Layer], others_macs: int, report: PassReport) -> tuple[dict, dict]:
        """``(layer index -> Plan or None, layer index -> (modelled time dense, chosen))`` (see the module
        docstring)."""
        base = [plan_macs(lay, None) for lay in layers]
        total = others_macs + sum(base)
        target = self.macs * total
        table = []
        for lay, m0 in zip(layers, base):
            t0 = plan_time(lay, None, self.cost, self.batch)
            rows = [(None, 0.0, t0, m0)]
            for p in self._options(lay, self._method(lay)):
                m = plan_macs(lay, p)
                if m <= 0 or m0 / m < self.min_gain or m >= m0:
                    continue
                t = plan_time(lay, p, self.cost, self.batch)
                if t >= t0:                  # saves no modelled time: dense is better in every respect
                    continue
                loss = -math.log(max(1.0 - estimated_error(lay, p), 1e-12))
                rows.append((p, loss, t, m))
            table.append(rows)
        t_total = sum(rows[0][2] for rows in table) or 1.0
        errs = [np.array([r[1] for r in rows]) for rows in table]
        times = [np.array([r[2] for r in rows]) / t_total for rows in table]
        macs = [np.array([r[3] for r in rows]) for rows in table]

        def choose(lam: float) -> list[int]:
            return [int(np.argmin(e + lam * t)) for e, t in zip(errs, times)]

        def macs_of(choice) -> int:
            return others_macs + int(sum(m[k] for m, k in zip(macs, choice)))

        lams = np.geomspace(1e-6, 1e6, 241)
        lam = None
        for i, cand in enumerate(lams):
            if macs_of(choose(cand)) <= target:
                lo, hi = (lams[i - 1] if i else 0.0), cand
                for _ in range(40):
                    mid = (lo + hi) / 2
                    if macs_of(choose(mid)) <= target:
                        hi = mid
                    else:
                        lo = mid
                lam = hi
                break
        if lam is None:
            lam = lams[-1]
            report.note(f"The MAC target macs={self.macs:g} is out of reach: the cheapest allocation keeps "
                        f"{macs_of(choose(lam)) / total:.3f} of the MACs.")
        choice = self._fill(choose(lam), errs, times, macs, target - others_macs)
        return ({i: table[i][k][0] for i, k in enumerate(choice)},
                {i: (table[i][0][2], table[i][k][2]) for i, k in enumerate(choice)})

    @staticmethod
    def _fill(choice: list, errs, times, macs, budget: float) -> list:
        """Spend what the multiplier's discrete jump left of the MAC budget: repeatedly move one layer to a
        less lossy option, the one buying back the most loss per modelled time added, while the MACs stay
        within the budget."""
        choice = list(choice)
        while True:
            spare = budget - sum(m[k] for m, k in zip(macs, choice))
            best, pick = 0.0, None
            for i, (e, t, m) in enumerate(zip(errs, times, macs)):
                k = choice[i]
                ok = (e < e[k]) & (m - m[k] <= spare)
                if not ok.any():
                    continue
                value = np.where(ok, (e[k] - e) / np.maximum(t - t[k], 1e-12), -np.inf)
                j = int(np.argmax(value))
                if value[j] > best:
                    best, pick = value[j], (i, j)
            if pick is None:
                return choice
            choice[pick[0]] = pick[1]

    # ---- the rewrite
    def rewrite(self, graph: Graph, report: PassReport, ctx: PassContext) -> bool:
        layers = self._candidates(graph, report)
        if not layers:
            return False
        times: dict = {}
        if self.macs is not None:
            if self.macs == 1.0:
                return False
            ids = {lay.nid for lay in layers}
            others = 0
            for nid in graph.node_ids():
                d = graph.data(nid)
                if nid not in ids and d["op"] != "input":
                    others += ops.macs(d["op"], d["attrs"], [graph.data(i)["shape"] for i in d["inputs"]], d["shape"])
            plans, times = self._allocate(layers, others, report)
        else:
            plans = {i: self._fixed_plan(lay, self._method(lay)) for i, lay in enumerate(layers)}
        changed = False
        for i, lay in enumerate(layers):
            plan = plans.get(i)
            m0 = plan_macs(lay, None)
            if plan is None:
                if self.macs is not None:
                    report.refuse(graph, lay.nid, "The MAC allocation keeps it dense: no factorisation of it "
                                  "saves enough modelled time for the error it costs.")
                continue
            m1 = plan_macs(lay, plan)
            gain = m0 / m1 if m1 else math.inf
            if gain < self.min_gain:
                report.refuse(graph, lay.nid, f"{_describe(plan)} would leave {m1:,} of its {m0:,} MACs (a gain "
                              f"of {gain:.2f}x, below min_gain={self.min_gain:g}), so it is left alone.")
                continue
            iters = self.iters if self.iters is not None else (50 if plan.method == "cp" else 0)
            fac = factorise(lay, plan, iters, ctx.rng(f"lowrank:{lay.scope}"))
            nodes = [NewNode(op, attrs, params={k: v.astype(np.float32) for k, v in p.items()})
                     for (op, attrs), p in zip(chain(lay, plan), fac.params)]
            graph.replace_with(lay.nid, nodes)
            row = {"op": lay.op, "method": plan.method, "ranks": list(plan.ranks), "macs_before": m0,
                   "macs_after": m1, "rel_error": fac.rel_error, **fac.detail}
            if i in times and self.cost == "roofline":
                t0, t1 = times[i]
                row["modelled_ms_before"], row["modelled_ms_after"] = round(t0 * 1e3, 4), round(t1 * 1e3, 4)
            report.layer(lay.scope, **row)
            changed = True
        return changed


def _describe(plan: Plan) -> str:
    name = {"svd": "SVD", "tucker2": "Tucker-2", "cp": "CP"}[plan.method]
    return f"{name} at rank{'s' if len(plan.ranks) > 1 else ''} {', '.join(map(str, plan.ranks))}"
