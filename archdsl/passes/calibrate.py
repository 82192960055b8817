"""Calibration for post-training quantisation: the value ranges of a float graph's tensors on sample data.

:func:`run_graph` runs a float graph through the PyTorch backend (eval mode, no gradients) batch by
batch and hands each wanted node's result to a callback as soon as it is computed, so no more than
the usual live tensors are kept. :class:`RangeObserver` collects, per tensor, the minimum and maximum
(first pass) and then a histogram over a fixed range (second pass, for the histogram methods), and
:meth:`RangeObserver.range` turns them into the real interval ``[lo, hi]`` a quantised tensor covers:

* ``minmax``: the observed minimum and maximum;
* ``percentile``: the ``p``-th percentile of the values for ``hi`` and the ``(100 - p)``-th for ``lo``
  (``lo`` stays the minimum for a tensor that is never negative);
* ``entropy``: TensorRT's calibration. On the histogram of ``|x|`` (2048 bins over ``[0, max |x|]``,
  exact zeros left out: they are exact at any threshold, and a ReLU's spike of them would dominate),
  for each candidate threshold ``T`` (a bin edge), ``P`` is the histogram clipped at ``T`` (the
  outliers added to the last bin) and ``Q`` is ``P`` merged into as many levels as the integer type
  has for that side (256 for a tensor that is never negative, 128 per side otherwise) and spread back
  uniformly over the bins that were non-zero; the threshold minimising ``KL(P || Q)`` wins, and the
  range is ``[max(min, -T), min(max, T)]``;
* ``mse``: the range ``alpha [lo, hi]`` (``alpha`` from 1 down to 0.05 in 96 steps) whose quantisation
  of the histogram's bin centres has the least squared error, clipping included.

Every range is then widened to contain 0 (the zero of a quantised tensor must be exact: padding and
ReLU produce it), so a tensor that is never negative gets the zero point at the bottom of its type.
PyTorch is imported inside the functions only (passes must not import it at module level).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

METHODS = ("minmax", "percentile", "entropy", "mse")
BINS = 2048


def run_graph(graph, batches, want, on_node, device: str = "cpu", track=None):
    """Run ``graph`` on every batch; call ``on_node(nid, value, operands)`` for each node of ``want``
    (ids; ``input`` nodes included) right after it is computed (torch tensors, before any later op
    can overwrite them in place)."""
    import torch
    module = float_module(graph, device)
    want = set(want)
    batches = list(batches)
    items = track(batches, len(batches)) if track else batches
    with torch.no_grad():
        for batch in items:
            env = {}
            for nid, x in zip(module._inputs, batch.x):
                env[nid] = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
                if nid in want:
                    on_node(nid, env[nid], ())
            for nid, fn, ins, free in module._program:
                operands = [env[i] for i in ins]
                env[nid] = fn(*operands)
                if nid in want:
                    on_node(nid, env[nid], operands)
                del operands
                for i in free:
                    del env[i]


def float_module(graph, device: str = "cpu"):
    """``to_torch(graph)`` in eval mode whose parameters share the IR's arrays instead of copying them (for
    runs without gradients that change no weight: a VGG's classifier is 400 MB)."""
    import warnings
    import torch
    from ..backends.torch_module import ArchModule
    from ..backends.torch_tensors import to_tensor
    with torch.device("meta"):
        module = ArchModule(graph, load_weights=False)
    state = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)          # the arrays are read-only (copy-on-write)
        for name, p in graph.params.items():
            v = p.value
            t = (torch.from_numpy(v) if v.dtype.isnative and v.flags.c_contiguous and p.dtype != "bfloat16"
                 else to_tensor(v, p.dtype))
            state[name] = t if torch.device(device).type == "cpu" else t.to(device)
    module.load_state_dict(state, strict=True, assign=True)
    return module.eval()


@dataclass
class TensorStats:
    lo: float = math.inf
    hi: float = -math.inf
    hist: np.ndarray | None = None
    edge: float = 0.0              # the histogram covers [-edge, edge] (signed) or [0, edge]
    count: int = 0
    zeros: float = 0.0             # exact zeros (a ReLU's), in the histogram's bin at 0

    @property
    def signed(self) -> bool:
        return self.lo < 0


@dataclass
class RangeObserver:
    """Ranges of many tensors by one calibration method (see the module docstring)."""
    method: str = "minmax"
    percentile: float = 99.99
    stats: dict = field(default_factory=dict)

    @property
    def needs_histograms(self) -> bool:
        return self.method != "minmax"

    def observe_minmax(self, nid, x) -> None:
        import torch
        s = self.stats.setdefault(nid, TensorStats())
        lo, hi = torch.aminmax(x.detach().float())
        s.lo, s.hi = min(s.lo, float(lo)), max(s.hi, float(hi))
        s.count += x.numel()

    def observe_histogram(self, nid, x) -> None:
        import torch
        s = self.stats[nid]
        edge = max(abs(s.lo), abs(s.hi))
        if not edge > 0:
            return
        s.edge = edge
        bins, low = (2 * BINS, -edge) if s.signed else (BINS, 0.0)
        x = x.detach().float()
        h = torch.histc(x, bins=bins, min=low, max=edge).double().cpu().numpy()
        s.hist = h if s.hist is None else s.hist + h
        s.zeros += float((x == 0).sum())

    def range(self, nid) -> tuple[float, float]:
        """The real interval the tensor's quantisation covers (0 included)."""
        s = self.stats[nid]
        lo, hi = s.lo, s.hi
        if self.method != "minmax" and s.hist is not None and s.hist.sum() > 0:
            lo, hi = {"percentile": self._percentile, "entropy": self._entropy, "mse": self._mse}[self.method](s)
        return min(lo, 0.0), max(hi, 0.0)

    # ---- the histogram methods
    @staticmethod
    def _centres(s: TensorStats) -> np.ndarray:
        n = len(s.hist)
        low = -s.edge if s.signed else 0.0
        width = (s.edge - low) / n
        return low + (np.arange(n) + 0.5) * width, width

    def _percentile(self, s: TensorStats):
        centres, width = self._centres(s)
        cdf = np.cumsum(s.hist) / s.hist.sum()
        p = self.percentile / 100.0
        hi = min(s.hi, centres[min(np.searchsorted(cdf, p), len(cdf) - 1)] + width / 2)
        lo = s.lo
        if s.signed:
            lo = max(s.lo, centres[min(np.searchsorted(cdf, 1.0 - p), len(cdf) - 1)] - width / 2)
        return lo, hi

    def _entropy(self, s: TensorStats):
        hist = s.hist
        if s.signed:
            half = len(hist) // 2
            mag = hist[half:] + hist[:half][::-1]
            levels = 128
        else:
            mag, levels = hist.copy(), 256
        # exact zeros are exactly representable whatever the threshold: left in, a ReLU's spike at 0
        # dominates the divergence and drags the threshold down
        mag[0] = max(mag[0] - s.zeros, 0.0)
        threshold = _kl_threshold(mag, levels) * s.edge / len(mag)
        return (max(s.lo, -threshold) if s.signed else s.lo), min(s.hi, threshold)

    def _mse(self, s: TensorStats):
        centres, _ = self._centres(s)
        counts = s.hist
        keep = counts > 0
        centres, counts = centres[keep], counts[keep]
        best, best_err = (s.lo, s.hi), math.inf
        for alpha in np.linspace(1.0, 0.05, 96):
            lo, hi = min(alpha * s.lo, 0.0), max(alpha * s.hi, 0.0)
            if hi - lo <= 0:
                continue
            scale = (hi - lo) / 255.0
            zero = round(-lo / scale)
            q = np.clip(np.rint(centres / scale) + zero, 0, 255)
            err = float(np.dot(counts, ((q - zero) * scale - centres) ** 2))
            if err < best_err:
                best, best_err = (lo, hi), err
        return best


def _kl_threshold(hist: np.ndarray, levels: int) -> int:
    """The number of bins (from 0) to keep that minimises KL(P || Q), TensorRT's entropy calibration."""
    n = len(hist)
    if n <= levels:
        return n
    candidates = np.unique(np.linspace(levels, n, min(n - levels + 1, 256)).astype(int))
    best, best_kl = n, math.inf
    total_tail = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])      # total_tail[i] = sum(hist[i:])
    for i in candidates:
        p = hist[:i].astype(np.float64).copy()
        p[i - 1] += total_tail[i]
        nonzero = hist[:i] > 0
        # merge the i bins into `levels` chunks, spread each chunk's mass over its non-zero bins
        chunk = (np.arange(i) * levels) // i
        mass = np.bincount(chunk, weights=hist[:i], minlength=levels)
        support = np.bincount(chunk, weights=nonzero.astype(np.float64), minlength=levels)
        q = np.where(nonzero, mass[chunk] / np.maximum(support[chunk], 1.0), 0.0)
        ps, qs = p.sum(), q.sum()
        if ps <= 0 or qs <= 0:
            continue
        p, q = p / ps, q / qs
        mask = p > 0
        if np.any(mask & (q <= 0)):
            kl = math.inf
        else:
            kl = float(np.sum(p[mask] * np.log(p[mask] / q[mask])))
        if kl < best_kl:
            best, best_kl = int(i), kl
    return best


def affine_params(lo: float, hi: float, dtype: str) -> tuple[float, int]:
    """``(scale, zero_point)`` mapping ``[lo, hi]`` (0 inside) onto the whole range of ``dtype``;
    the scale is a float32 value, and 0 is exactly representable."""
    qmin, qmax = (0, 255) if dtype == "uint8" else (-128, 127)
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if not hi - lo > 0 or not math.isfinite(hi - lo):
        return 1.0, qmin if lo == 0.0 else 0
    scale = float(np.float32((hi - lo) / (qmax - qmin)))
    if not scale > 0:
        scale = float(np.finfo(np.float32).tiny)
    zero = int(np.clip(round(qmin - lo / scale), qmin, qmax))
    return scale, zero
