"""Value types: every node's result has a shape, an element type and, when quantised, its affine map.

A quantised tensor ``q`` of dtype int8, uint8 or int32 stands for the real
values ``r = scale * (q - zero_point)``, per tensor (one scale and zero point)
or per channel along ``axis`` (one of each per index of that dimension), as
ONNX's QuantizeLinear/DequantizeLinear and TVM Relay's QNN types define it.
No framework imports: backends map these names onto their own dtypes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DTYPES = ("float32", "float16", "bfloat16", "int8", "uint8", "int32", "int64", "bool")
FLOAT_DTYPES = frozenset({"float32", "float16", "bfloat16"})
QUANT_DTYPES = frozenset({"int8", "uint8", "int32"})
INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int32": (-2 ** 31, 2 ** 31 - 1),
              "int64": (-2 ** 63, 2 ** 63 - 1), "bool": (0, 1)}


@dataclass(frozen=True)
class QuantParams:
    """The affine map of a quantised tensor: ``real = scale * (q - zero_point)``.

    Per tensor: ``axis`` is None and both tuples have one entry. Per channel:
    ``axis`` names the dimension (counting the batch as 0) and both tuples have
    one entry per index of it.
    """
    scale: tuple
    zero_point: tuple
    axis: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "scale", tuple(float(s) for s in self.scale))
        object.__setattr__(self, "zero_point", tuple(int(z) for z in self.zero_point))

    @property
    def per_channel(self) -> bool:
        return self.axis is not None

    def problem(self, dtype: str, shape: tuple) -> str | None:
        """Why these parameters do not fit a tensor of ``dtype`` and ``shape`` (None when they do)."""
        if dtype not in QUANT_DTYPES:
            return f"only int8, uint8 and int32 tensors are quantised, not {dtype}"
        if len(self.scale) != len(self.zero_point) or not self.scale:
            return (f"it has {len(self.scale)} scales and {len(self.zero_point)} zero points; they must be "
                    "equally many, and at least one")
        if self.axis is None:
            if len(self.scale) != 1:
                return f"a per-tensor quantisation has one scale, not {len(self.scale)}; give an axis for per-channel"
        else:
            if not -len(shape) <= self.axis < len(shape):
                return f"its axis {self.axis} is not a dimension of a {len(shape)}-D tensor"
            size = shape[self.axis]
            if size != "N" and size != len(self.scale):
                return f"it has {len(self.scale)} scales but dimension {self.axis} has {size} entries"
        if not all(math.isfinite(s) and s > 0 for s in self.scale):
            return "every scale must be a positive finite number"
        lo, hi = INT_RANGES[dtype]
        if not all(lo <= z <= hi for z in self.zero_point):
            return f"every zero point must lie in the range of {dtype}, {lo} to {hi}"
        return None

    def to_json(self) -> dict:
        return {"scale": list(self.scale), "zero_point": list(self.zero_point), "axis": self.axis}

    @staticmethod
    def from_json(data) -> "QuantParams | None":
        if data is None:
            return None
        return QuantParams(tuple(data["scale"]), tuple(data["zero_point"]), data.get("axis"))

    def __str__(self) -> str:
        def short(values):
            vals = [repr(v) for v in values[:4]]
            more = f", ... {len(values)} values" if len(values) > 4 else ""
            return vals[0] if len(values) == 1 else "(" + ", ".join(vals) + more + ")"
        axis = f"axis={self.axis}, " if self.axis is not None else ""
        return f"q[{axis}scale={short(self.scale)}, zero_point={short(self.zero_point)}]"


@dataclass(frozen=True)
class TensorType:
    """A node's result: its shape (batch ``"N"`` first), element type and quantisation."""
    shape: tuple
    dtype: str = "float32"
    quant: QuantParams | None = None

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    def __str__(self) -> str:
        text = "(" + ", ".join(str(d) for d in self.shape) + ")"
        if self.dtype != "float32":
            text += f" {self.dtype}"
        if self.quant is not None:
            text += f" {self.quant}"
        return text


def check_dtype(dtype) -> str | None:
    """Why ``dtype`` is not an IR dtype (None when it is)."""
    if dtype in DTYPES:
        return None
    return f"'{dtype}' is not an IR dtype; the dtypes are {', '.join(DTYPES)}"


def numpy_dtype(dtype: str) -> np.dtype:
    """The NumPy dtype of an IR dtype (bfloat16 comes from ml_dtypes, which onnx installs)."""
    if dtype == "bfloat16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype("bool" if dtype == "bool" else dtype)
