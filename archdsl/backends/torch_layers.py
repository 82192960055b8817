"""The few layers torch.nn lacks, as small ``nn.Module`` classes (ConvNeXt's).

The in-memory backend builds these classes; the generated source holds their
text (:data:`SOURCES`, read from this file, so both forms run the same code),
and only when it uses them, so the file still imports nothing but torch.

* ``LayerNorm2d``: ``nn.LayerNorm`` over dimension 1 of (N, C, ...), as torchvision's
  ConvNeXt: y = (x - mean_c) / sqrt(var_c + eps) * weight + bias, the mean and (biased)
  variance over the channels; its state-dict keys are ``weight`` and ``bias``.
* ``Permute``: ``torch.permute`` as a module (torchvision.ops.Permute).
* ``StochasticDepth``: torchvision.ops.StochasticDepth, with the same random draws: in
  training, ``noise = empty([N, 1, ...] or [1, ...]).bernoulli_(1 - p)``, divided by 1 - p
  when that is above 0, times x; the identity in inference.
* ``StridedMaxPool2d`` and ``StridedAvgPool2d``: ``nn.MaxPool2d`` and ``nn.AvgPool2d``,
  computed on the CPU, in inference, for NCHW float tensors from strided views of the
  input (padded with -inf, or 0), because PyTorch's NCHW pooling kernels are 2 to 10 times
  slower than elementwise passes over those views (and than its own channels-last kernels).
  The max pool takes two passes of maxima, along the width and then the height: a max over
  a k x k window is the max over its rows of the max over each row, so the result is the
  same, NaN included (both propagate it). The average pool adds the window's k x k views
  in PyTorch's order (row by row) and divides by PyTorch's divisor, so it is the same too.
  Anywhere else (autograd, CUDA, channels-last, dilation, half precision for the average,
  torch.compile and torch.export) they are ``F.max_pool2d`` and ``F.avg_pool2d``.
  ``PoolWindows`` holds what the two share.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LayerNorm2d(nn.LayerNorm):
    """``nn.LayerNorm`` over dimension 1 (the channels), as torchvision's ConvNeXt."""

    def forward(self, x: Tensor) -> Tensor:
        x = x.movedim(1, -1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.movedim(-1, 1)


class Permute(nn.Module):
    """``torch.permute`` as a module."""

    def __init__(self, dims: tuple) -> None:
        super().__init__()
        self.dims = tuple(dims)

    def forward(self, x: Tensor) -> Tensor:
        return torch.permute(x, self.dims)


class StochasticDepth(nn.Module):
    """Stochastic depth, as ``torchvision.ops.StochasticDepth`` (the same random draws)."""

    def __init__(self, p: float, mode: str = "row") -> None:
        super().__init__()
        self.p = p
        self.mode = mode

    def forward(self, x: Tensor) -> Tensor:
        return StochasticDepth.drop(x, self.p, self.mode, self.training)

    @staticmethod
    def drop(x: Tensor, p: float, mode: str, training: bool) -> Tensor:
        if not training or p == 0.0:
            return x
        survival = 1.0 - p
        size = [x.shape[0]] + [1] * (x.ndim - 1) if mode == "row" else [1] * x.ndim
        noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival)
        if survival > 0.0:
            noise.div_(survival)
        return x * noise


class PoolWindows:
    """What the strided pools share: when they apply, the output size, the padding, and one pass."""

    @staticmethod
    def pair(v) -> tuple:
        return (v, v) if isinstance(v, int) else tuple(v)

    @staticmethod
    def applies(x: Tensor) -> bool:
        """CPU inference on an NCHW float tensor, outside torch.compile and torch.export."""
        return (x.device.type == "cpu" and x.dim() == 4 and x.is_floating_point() and x.is_contiguous()
                and not (torch.is_grad_enabled() and x.requires_grad)
                and not torch.compiler.is_compiling() and not torch.compiler.is_exporting())

    @staticmethod
    def length(n: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
        """PyTorch's output length: with ceil_mode, the last window must start inside the input or the
        left padding."""
        span = n + 2 * p - k
        out = (-(-span // s) if ceil_mode else span // s) + 1
        return out - 1 if ceil_mode and (out - 1) * s >= n + p else out

    @staticmethod
    def padded(x: Tensor, k: tuple, s: tuple, p: tuple, ceil_mode: bool, value: float) -> tuple:
        """``(x padded with value so that every window lies inside, (out height, out width))``."""
        (h, w), (kh, kw), (sh, sw), (ph, pw) = x.shape[2:], k, s, p
        ho, wo = PoolWindows.length(h, kh, sh, ph, ceil_mode), PoolWindows.length(w, kw, sw, pw, ceil_mode)
        right, bottom = max(0, (wo - 1) * sw + kw - w - pw), max(0, (ho - 1) * sh + kh - h - ph)
        if pw or ph or right or bottom:
            x = F.pad(x, (pw, right, ph, bottom), value=value)
        return x, (ho, wo)

    @staticmethod
    def strided(x: Tensor, dim: int, j: int, s: int, n: int) -> Tensor:
        """The view ``x[..., j : j + (n - 1) s + 1 : s]`` along ``dim``: the ``j``-th element of ``n`` windows."""
        return x.narrow(dim, j, (n - 1) * s + 1)[(slice(None),) * dim + (slice(None, None, s),)]

    @staticmethod
    def max_along(x: Tensor, dim: int, k: int, s: int, n: int) -> Tensor:
        """The elementwise max of the ``k`` views ``strided(x, dim, j, s, n)``."""
        out = PoolWindows.strided(x, dim, 0, s, n)
        for j in range(1, k):
            view = PoolWindows.strided(x, dim, j, s, n)
            out = torch.maximum(out, view) if j == 1 else torch.maximum(out, view, out=out)
        return out if k > 1 else out.contiguous()


class StridedMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d``; in CPU inference on NCHW floats, two passes of elementwise maxima (same result)."""

    def forward(self, x: Tensor) -> Tensor:
        return StridedMaxPool2d.pool(x, self.kernel_size, self.stride, self.padding, self.dilation,
                                     self.ceil_mode)

    @staticmethod
    def pool(x: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False) -> Tensor:
        pair = PoolWindows.pair
        k, s, p, d = pair(kernel_size), pair(stride or kernel_size), pair(padding), pair(dilation)
        if d != (1, 1) or not PoolWindows.applies(x):
            return F.max_pool2d(x, k, s, p, d, ceil_mode)
        x, (ho, wo) = PoolWindows.padded(x, k, s, p, ceil_mode, float("-inf"))
        rows = PoolWindows.max_along(x, 3, k[1], s[1], wo)
        return PoolWindows.max_along(rows, 2, k[0], s[0], ho)


class StridedAvgPool2d(nn.AvgPool2d):
    """``nn.AvgPool2d``; in CPU inference on NCHW float32/float64, sums of strided views (same result)."""

    def forward(self, x: Tensor) -> Tensor:
        return StridedAvgPool2d.pool(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                                     self.count_include_pad, self.divisor_override)

    @staticmethod
    def pool(x: Tensor, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
             count_include_pad: bool = True, divisor_override=None) -> Tensor:
        pair = PoolWindows.pair
        k, s, p = pair(kernel_size), pair(stride or kernel_size), pair(padding)
        # k x k additions are k x k operators: on several threads each wakes the pool, and PyTorch's
        # parallel kernel is faster; on one, the additions are 2 to 3 times faster than its kernel
        if (x.dtype not in (torch.float32, torch.float64) or torch.get_num_threads() > 1
                or not PoolWindows.applies(x)):
            return F.avg_pool2d(x, k, s, p, ceil_mode, count_include_pad, divisor_override)
        n = x.shape[2:]
        x, out = PoolWindows.padded(x, k, s, p, ceil_mode, 0.0)
        sums = None                      # PyTorch's order: the window's elements row by row
        for a in range(k[0]):
            rows = PoolWindows.strided(x, 2, a, s[0], out[0])
            for b in range(k[1]):
                view = PoolWindows.strided(rows, 3, b, s[1], out[1])
                sums = view.clone() if sums is None else sums.add_(view)
        if divisor_override:
            return sums / divisor_override

        def counts(i: int) -> list:
            # PyTorch's divisor along one dimension: the window clipped to the padded input, and with
            # count_include_pad=False to the input itself
            starts = [o * s[i] - p[i] for o in range(out[i])]
            ends = [min(a + k[i], n[i] + p[i]) for a in starts]
            if not count_include_pad:
                starts, ends = [max(a, 0) for a in starts], [min(e, n[i]) for e in ends]
            return [e - a for a, e in zip(starts, ends)]

        rows, cols = counts(0), counts(1)
        if len(set(rows)) == 1 and len(set(cols)) == 1:
            return sums / (rows[0] * cols[0])
        return sums / (torch.tensor(rows, dtype=sums.dtype)[:, None] * torch.tensor(cols, dtype=sums.dtype))


CLASSES = {cls.__name__: cls for cls in (LayerNorm2d, Permute, StochasticDepth, PoolWindows, StridedMaxPool2d,
                                             StridedAvgPool2d)}
SOURCES = {name: inspect.getsource(cls).rstrip("\n") for name, cls in CLASSES.items()}
