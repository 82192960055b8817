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
* ``SeparableMaxPool2d``: ``nn.MaxPool2d``, computed on the CPU, in inference, for NCHW
  float tensors as two passes of elementwise maxima over strided views (along the width,
  then the height) of the input padded with -inf. A max over a k x k window is the max over
  its rows of the max over each row, so the result is the same, NaN included (both
  propagate it); PyTorch's NCHW max-pool kernel is 3 to 10 times slower than these passes
  (and than its own channels-last kernel). Anywhere else (autograd, CUDA, channels-last,
  dilation, torch.compile and torch.export) it is ``F.max_pool2d``.
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


class SeparableMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d``; in CPU inference on NCHW floats, two passes of elementwise maxima (same result)."""

    def forward(self, x: Tensor) -> Tensor:
        return SeparableMaxPool2d.pool(x, self.kernel_size, self.stride, self.padding, self.dilation,
                                       self.ceil_mode)

    @staticmethod
    def pool(x: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False) -> Tensor:
        def pair(v):
            return (v, v) if isinstance(v, int) else tuple(v)

        k, s, p, d = pair(kernel_size), pair(stride or kernel_size), pair(padding), pair(dilation)
        if (x.device.type != "cpu" or x.dim() != 4 or not x.is_floating_point() or d != (1, 1)
                or not x.is_contiguous() or (torch.is_grad_enabled() and x.requires_grad)
                or torch.compiler.is_compiling() or torch.compiler.is_exporting()):
            return F.max_pool2d(x, k, s, p, d, ceil_mode)

        def length(n: int, k: int, s: int, p: int) -> int:
            span = n + 2 * p - k
            out = (-(-span // s) if ceil_mode else span // s) + 1
            return out - 1 if ceil_mode and (out - 1) * s >= n + p else out

        (h, w), (kh, kw), (sh, sw), (ph, pw) = x.shape[2:], k, s, p
        ho, wo = length(h, kh, sh, ph), length(w, kw, sw, pw)
        right, bottom = max(0, (wo - 1) * sw + kw - w - pw), max(0, (ho - 1) * sh + kh - h - ph)
        if pw or ph or right or bottom:
            x = F.pad(x, (pw, right, ph, bottom), value=float("-inf"))
        rows = SeparableMaxPool2d.along(x, 3, kw, sw, wo)
        return SeparableMaxPool2d.along(rows, 2, kh, sh, ho)

    @staticmethod
    def along(x: Tensor, dim: int, k: int, s: int, n: int) -> Tensor:
        """The max of the ``k`` views ``x[..., j : j + (n - 1) s + 1 : s, ...]`` along ``dim``."""
        out = x.narrow(dim, 0, (n - 1) * s + 1)[(slice(None),) * dim + (slice(None, None, s),)]
        for j in range(1, k):
            view = x.narrow(dim, j, (n - 1) * s + 1)[(slice(None),) * dim + (slice(None, None, s),)]
            out = torch.maximum(out, view) if j == 1 else torch.maximum(out, view, out=out)
        return out if k > 1 else out.contiguous()


CLASSES = {cls.__name__: cls for cls in (LayerNorm2d, Permute, StochasticDepth, SeparableMaxPool2d)}
SOURCES = {name: inspect.getsource(cls).rstrip("\n") for name, cls in CLASSES.items()}
