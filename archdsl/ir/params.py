"""Parameters and buffers owned by the IR, materialised lazily as numpy arrays.

Initialisation follows PyTorch's defaults for the same layer unless the spec
asks otherwise: conv and linear weights and biases are uniform in
``±1/sqrt(fan_in)`` (``kaiming_uniform_(a=sqrt(5))``), batch-norm weight 1,
bias 0, running mean 0, running variance 1. Initialiser calls of the spec
(``normal(0.01)``, ``trunc_normal(0.02)``, ``kaiming_normal("fan_in")``...) are
:class:`archdsl.ir.inits.Initialiser` values, which draw their own samples. Each
tensor draws from its own generator seeded by its name, so the same spec always
gives the same weights.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from .inits import Initialiser
from .types import QuantParams, numpy_dtype

INITS = ("default", "zeros", "ones", "kaiming_normal", "kaiming_uniform", "xavier_uniform",
         "xavier_normal")


@dataclass(eq=False)
class Param:
    name: str
    shape: tuple
    init: object = "default"     # one of INITS, an Initialiser, or a list of values
    fan_in: int = 1
    fan_out: int = 1
    trainable: bool = True       # False for buffers (running statistics)
    dtype: str = "float32"
    seed: int = 0
    quant: QuantParams | None = None     # for int8/uint8/int32 values: their affine map
    _value: np.ndarray | None = field(default=None, repr=False)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def value(self) -> np.ndarray:
        if self._value is None:
            self._value = np.asarray(self._initialise(), dtype=numpy_dtype(self.dtype))
        return self._value

    @value.setter
    def value(self, array) -> None:
        array = np.asarray(array, dtype=numpy_dtype(self.dtype))
        if tuple(array.shape) != tuple(self.shape):
            raise ValueError(f"{self.name}: shape {array.shape} does not match {self.shape}")
        self._value = array

    @property
    def materialised(self) -> bool:
        return self._value is not None

    def copy(self) -> "Param":
        """A copy sharing the values copy-on-write: the array becomes read-only, and either side
        that wants other values assigns a new array (``p.value = ...``), leaving the other alone."""
        p = Param(self.name, self.shape, self.init, self.fan_in, self.fan_out, self.trainable,
                  self.dtype, self.seed, self.quant)
        if self._value is not None:
            self._value.flags.writeable = False
            p._value = self._value
        return p

    def resized(self, array: np.ndarray) -> "Param":
        """A new Param of the same name and kind holding ``array`` (whatever its shape)."""
        p = Param(self.name, tuple(array.shape), self.init, self.fan_in, self.fan_out, self.trainable,
                  self.dtype, self.seed, self.quant)
        p._value = np.ascontiguousarray(array, dtype=numpy_dtype(self.dtype))
        return p

    def _rng(self) -> np.random.Generator:
        digest = hashlib.blake2b(f"{self.seed}:{self.name}".encode(), digest_size=8).digest()
        return np.random.default_rng(int.from_bytes(digest, "little"))

    def _initialise(self) -> np.ndarray:
        init, shape = self.init, self.shape
        if isinstance(init, (list, tuple)):
            return np.asarray(init, dtype=numpy_dtype(self.dtype)).reshape(shape)
        if init == "zeros":
            return np.zeros(shape, numpy_dtype(self.dtype))
        if init == "ones":
            return np.ones(shape, numpy_dtype(self.dtype))
        rng = self._rng()
        if isinstance(init, Initialiser):
            return init.sample(rng, shape, self.fan_in, self.fan_out)
        if init == "default":
            return self._uniform(rng, 1.0 / math.sqrt(self.fan_in) if self.fan_in > 0 else 0.0)
        if init == "kaiming_normal":        # torchvision's choice: mode="fan_out", relu gain
            return self._normal(rng, math.sqrt(2.0 / max(self.fan_out, 1)))
        if init == "kaiming_uniform":
            return self._uniform(rng, math.sqrt(6.0 / max(self.fan_in, 1)))
        if init == "xavier_uniform":
            return self._uniform(rng, math.sqrt(6.0 / max(self.fan_in + self.fan_out, 1)))
        if init == "xavier_normal":
            return self._normal(rng, math.sqrt(2.0 / max(self.fan_in + self.fan_out, 1)))
        raise ValueError(f"unknown initialiser {init!r}")

    def _uniform(self, rng: np.random.Generator, bound: float) -> np.ndarray:
        """U(-bound, bound), drawn directly in float32 (no float64 intermediate)."""
        out = rng.random(self.shape, dtype=np.float32)
        out *= np.float32(2 * bound)
        out -= np.float32(bound)
        return out

    def _normal(self, rng: np.random.Generator, std: float) -> np.ndarray:
        out = rng.standard_normal(self.shape, dtype=np.float32)
        out *= np.float32(std)
        return out
