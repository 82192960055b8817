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


CLASSES = {cls.__name__: cls for cls in (LayerNorm2d, Permute, StochasticDepth)}
SOURCES = {name: inspect.getsource(cls).rstrip("\n") for name, cls in CLASSES.items()}
