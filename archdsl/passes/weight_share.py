"""``weight-share``: k-means weight sharing (Deep Compression, Han et al. 2016), per layer.

The weights ``w_1 .. w_n`` of each conv and linear layer are clustered into ``k = 2^bits`` centroids
``c_1 .. c_k`` minimising ``sum_i min_j (w_i - c_j)^2`` (one-dimensional k-means, Lloyd's algorithm).
The layer then stores an index per weight (uint8) and the codebook (``k`` float32 values): the
``shared_conv`` / ``shared_linear`` ops, whose weight is ``codebook[indices]``; biases stay float.
Storage per layer goes from ``32 n`` bits to ``8 n + 32 k`` (and to ``bits * n + 32 k`` where the ONNX
backend packs ``8 / bits`` indices per byte, for 1, 2 and 4 bits).

**Deterministic.** ``init=linear`` (the default, which Deep Compression found best: it keeps the
large weights, which matter most, represented) spaces the initial centroids evenly over
``[min w, max w]``; ``init=density`` places them at the quantiles of the weights; ``init=kmeans++``
draws them by k-means++ from a generator seeded by ``--seed`` and the layer's name. Lloyd's iterations
(at most ``iterations``, until no bin changes cluster) run on a histogram of the weights (65536 bins
over ``[min, max]``: assignment of a bin centre to its nearest centroid is a ``searchsorted`` on the
midpoints between sorted centroids, the update a count-weighted mean), then on the weights
themselves: up to 4 steps that assign every weight exactly to its nearest centroid and move each
centroid to the exact mean of its weights, stopping early when no weight moves (small layers reach
that fixed point; on large ones a fraction of a percent of the weights would still move). Each
step is linear in ``n``.
Unused centroids (an empty cluster) keep their place. A layer with at most ``k`` distinct weights is
represented exactly.

Combined with ``prune`` (``prune{...},weight-share{bits=5}``) this is Deep Compression's pruning
plus sharing; ``archc bench-quant --share`` reports the file size ratios.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..ir.graph import Graph
from ..ir.params import Param
from .base import (OptionError, Pass, PassReport, in_scopes, listing, note_unmatched, register, replace_node,
                   scope_patterns)
from .context import PassContext

BINS = 1 << 16
INITS = ("linear", "density", "kmeans++")
LAYERS = {"conv": "shared_conv", "linear": "shared_linear"}


def _nearest(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index (into the sorted ``centroids``) of the nearest centroid of each value."""
    mids = (centroids[1:] + centroids[:-1]) / 2
    return np.searchsorted(mids, values)


BLOCK = 1 << 22
EXACT_STEPS = 4


def _assign(flat: np.ndarray, c: np.ndarray, lo: float, width: float):
    """``(indices, count, sum, sum of squares)`` per centroid for the exact nearest-centroid assignment,
    in O(n): a weight's histogram bin gives its centroid through a table, except in the few bins that
    hold a midpoint between two centroids, which are resolved by comparison. Done in blocks."""
    k = len(c)
    mids = (c[1:] + c[:-1]) / 2
    edges = lo + width * np.arange(BINS + 1)
    table = _nearest(edges[:-1], c)
    split = np.zeros(BINS + 1, bool)
    split[:-1] = table != _nearest(edges[1:], c)              # a midpoint inside the bin
    idx = np.empty(flat.shape, np.uint8)
    count, total, square = np.zeros(k), np.zeros(k), np.zeros(k)
    for start in range(0, len(flat), BLOCK):
        v = flat[start:start + BLOCK]
        b = np.clip(((v - lo) / width).astype(np.int64), 0, BINS - 1)
        a = table[b]
        hard = split[b]
        if hard.any():
            a[hard] = np.searchsorted(mids, v[hard].astype(np.float64))
        idx[start:start + BLOCK] = a
        v64 = v.astype(np.float64)
        count += np.bincount(a, minlength=k)
        total += np.bincount(a, weights=v64, minlength=k)
        square += np.bincount(a, weights=v64 * v64, minlength=k)
    return idx, count, total, square


def kmeans_1d(w: np.ndarray, k: int, init: str = "linear", iterations: int = 300, rng=None):
    """``(codebook float32 (k,), indices uint8 of w's shape, squared error)``: deterministic 1-D k-means
    (see the module docstring)."""
    flat = np.ascontiguousarray(w, np.float32).ravel()
    lo, hi = float(flat.min()), float(flat.max())
    distinct = np.unique(flat) if flat.size <= 4 * k else None
    if distinct is not None and len(distinct) <= k:            # exact: one centroid per value
        cb = np.concatenate([distinct, np.full(k - len(distinct), distinct[-1], np.float32)]).astype(np.float32)
        return cb, np.searchsorted(distinct, flat).astype(np.uint8).reshape(w.shape), 0.0
    if hi == lo:                       # one value (a zero-initialised layer): exact, and no bins of width 0
        return np.full(k, lo, np.float32), np.zeros(w.shape, np.uint8), 0.0
    width = (hi - lo) / BINS
    counts = np.zeros(BINS)
    for start in range(0, len(flat), BLOCK):
        v = flat[start:start + BLOCK]
        counts += np.bincount(np.clip(((v - lo) / width).astype(np.int64), 0, BINS - 1), minlength=BINS)
    centres = lo + width * (np.arange(BINS) + 0.5)
    keep = counts > 0
    centres, counts = centres[keep], counts[keep]
    if init == "linear":
        c = np.linspace(lo, hi, k)
    elif init == "density":
        cdf = np.cumsum(counts) / counts.sum()
        c = centres[np.minimum(np.searchsorted(cdf, (np.arange(k) + 0.5) / k), len(centres) - 1)]
    else:                                                      # k-means++ on the histogram, seeded
        rng = rng or np.random.default_rng(0)
        c = [centres[rng.choice(len(centres), p=counts / counts.sum())]]
        d2 = (centres - c[0]) ** 2
        for _ in range(k - 1):
            p = counts * d2
            c.append(centres[rng.choice(len(centres), p=p / p.sum())] if p.sum() > 0 else c[-1])
            d2 = np.minimum(d2, (centres - c[-1]) ** 2)
        c = np.array(c)
    c = np.sort(np.asarray(c, np.float64))
    last = None
    for _ in range(iterations):                  # Lloyd on the histogram, until no bin changes cluster
        a = _nearest(centres, c)
        if last is not None and np.array_equal(a, last):
            break
        last = a
        mass = np.bincount(a, weights=counts, minlength=k)
        total = np.bincount(a, weights=counts * centres, minlength=k)
        c = np.sort(np.where(mass > 0, total / np.maximum(mass, 1e-300), c))
    idx = None
    for _ in range(EXACT_STEPS):                 # then on the weights themselves, until no weight moves
        new, count, total, square = _assign(flat, c, lo, width)
        c = np.where(count > 0, total / np.maximum(count, 1), c)
        stable = idx is not None and np.array_equal(new, idx)
        idx = new
        if stable:
            break
    cb = c.astype(np.float32)                    # the exact means (still sorted: clusters are intervals)
    error = float(np.sum(square - 2 * c * total + count * c ** 2))
    return cb, idx.reshape(w.shape), max(error, 0.0)


@register
@dataclass
class WeightShare(Pass):
    """k-means weight sharing: each layer's weights become uint8 indices into 2^bits float centroids."""

    name = "weight-share"
    verify_metric = "cosine"
    bits: int = field(default=8, metadata={"doc": "1 to 8: 2^bits centroids per layer"})
    init: str = field(default="linear", metadata={"doc": "linear (over [min, max]), density (quantiles) or kmeans++"})
    iterations: int = field(default=300, metadata={"doc": "at most this many Lloyd iterations (on a histogram)"})
    skip: str | None = field(default=None, metadata={"doc": "comma-separated scope patterns left as they are"})

    def expected_error(self) -> float:
        """1 - cosine of the outputs: each layer's shared weights add their own small error, so the budget
        is that of a deep network, 1e-2 at 8 bits, and ten times as much for every two bits fewer. Measured
        on the zoo at the tests' sizes, with batch norms calibrated on data: at most 3e-3, 4e-2 and 0.16 at
        8, 6 and 4 bits (Inception-v3 at 80x80, whose stem amplifies weight errors, about ten times more,
        and needs ``--tolerance``)."""
        return min(1.0, 1e-2 * 10.0 ** ((8 - self.bits) / 2))

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.bits <= 8:
            raise OptionError(f"bits must be 1 to 8 (indices are stored in a byte), but it is {self.bits}.", "bits")
        if not 1 <= self.iterations <= 100_000:
            raise OptionError(f"iterations must be 1 to 100,000, but it is {self.iterations}.", "iterations")
        if self.init not in INITS:
            raise OptionError(f"init must be one of {listing(INITS, 'or')}, but it is '{self.init}'.", "init")

    def rewrite(self, graph: Graph, report: PassReport, ctx: PassContext) -> bool:
        patterns = scope_patterns(self.skip)
        note_unmatched(graph, patterns, "skip", report)
        layers = [n.id for n in graph.nodes() if n.op in LAYERS]
        todo = [nid for nid in layers if not in_scopes(graph.data(nid)["scope"], patterns)]
        for nid in layers:
            if nid not in todo:
                report.refuse(graph, nid, "It matches 'skip', so its weights stay as they are.")
        k = 2 ** self.bits
        for nid in ctx.track(todo, len(todo), "weight-share"):
            self._share(graph, nid, k, report, ctx)
        return bool(todo)

    def _share(self, graph: Graph, nid: int, k: int, report: PassReport, ctx: PassContext) -> None:
        d = graph.data(nid)
        scope = d["scope"]
        wp = graph.params[d["params"]["weight"]]
        w = wp.value
        cb, idx, noise = kmeans_1d(w, k, self.init, self.iterations, ctx.rng(f"weight-share:{scope}"))
        a = d["attrs"]
        if d["op"] == "conv":
            attrs = {key: a[key] for key in ("out_channels", "kernel_size", "stride", "padding", "dilation",
                                             "groups", "bias")}
        else:
            attrs = {"out_features": a["out_features"], "bias": a["bias"]}
        attrs["bits"] = self.bits
        ip = Param(f"{scope}.indices", idx.shape, "zeros", wp.fan_in, wp.fan_out, False, "uint8", wp.seed)
        ip.value = idx
        cp = Param(f"{scope}.codebook", (k,), "zeros", wp.fan_in, wp.fan_out, True, "float32", wp.seed)
        cp.value = cb
        params = {"indices": ip.name, "codebook": cp.name}
        if "bias" in d["params"]:
            params["bias"] = d["params"]["bias"]
        replace_node(graph, nid, LAYERS[d["op"]], attrs=attrs, params=params)
        graph.params.pop(wp.name, None)
        graph.add_param(ip)
        graph.add_param(cp)
        power = float(np.einsum("i,i->", w.ravel(), w.ravel(), dtype=np.float64))
        report.layer(scope, op=LAYERS[d["op"]], weights=int(w.size), centroids=int(len(np.unique(idx))),
                     sqnr_db=10 * math.log10(power / noise) if noise > 0 and power > 0 else math.inf)
        report.did(f"shared the {w.size} weights of {d['op']} @{scope} among {k} centroids")
