"""Per-op shape arithmetic shared by the op registry (no framework imports)."""
from __future__ import annotations

import math


class ShapeError(Exception):
    """An op cannot be applied to the shapes it was given; the message is a full sentence."""


def fmt(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def expect_rank(op: str, shape, ranks, what: str = "") -> None:
    if len(shape) not in ranks:
        want = " or ".join(f"{r}-D" for r in ranks)
        raise ShapeError(f"'{op}' expects a {want} input{what} but got a {len(shape)}-D tensor "
                         f"of shape {fmt(shape)}.")


def window_out(op: str, size: int, k: int, s: int, p: int, d: int = 1, ceil_mode: bool = False,
               axis: str = "height") -> int:
    if k < 1 or s < 1 or d < 1 or p < 0:
        raise ShapeError(f"'{op}' needs a kernel size, stride and dilation of at least 1 and a padding of at "
                         f"least 0, but got kernel {k}, stride {s}, dilation {d} and padding {p}.")
    eff = d * (k - 1) + 1
    span = size + 2 * p - eff
    # with ceil_mode a window may hang over the end (PyTorch: ceil((size + 2p - eff) / s) + 1 windows,
    # so a 3x3 window with stride 2 still fits once on a 2x2 input)
    if span < 0 and not (ceil_mode and span + s - 1 >= 0):
        raise ShapeError(f"'{op}' shrinks the {axis} to zero or below: a window of {eff} (kernel {k}, "
                         f"dilation {d}) does not fit in the {axis} of {size} plus padding {p} on each side; use a smaller "
                         "kernel or more padding, or a larger input.")
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    if out <= 0:
        raise ShapeError(f"'{op}' shrinks the {axis} from {size} to {out}.")
    return out


def norm_dim(op: str, dim: int, rank: int) -> int:
    d = dim + rank if dim < 0 else dim
    if not 0 <= d < rank:
        raise ShapeError(f"'{op}' names dimension {dim}, but its input has only {rank} dimensions.")
    return d


def broadcast(op: str, shapes) -> tuple:
    """NumPy broadcasting of the inputs of an element-wise op. Every tensor carries the batch first, so
    the inputs must have one rank: aligned from the right, a batch of a lower-rank input would meet
    another input's channel or spatial dimension (``(N, C, 1, 1) * (N, F)`` broadcasts to
    ``(N, C, N, F)``, which is a shape check's success and a run-time failure)."""
    if len({len(s) for s in shapes}) > 1:
        raise ShapeError(f"'{op}' combines tensors element by element, which needs them to have the same "
                         "number of dimensions so that their batch dimensions line up, but got shapes "
                         + " and ".join(fmt(s) for s in shapes) + "; reshape or flatten one of them first.")
    rank = max(len(s) for s in shapes)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in shapes]
    out = []
    for dims in zip(*padded):
        sizes = {d for d in dims if d != 1}
        if len(sizes) > 1:
            raise ShapeError(f"'{op}' cannot broadcast shapes "
                             + " and ".join(fmt(s) for s in shapes) + ".")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def numel(shape) -> int:
    return math.prod(d for d in shape if d != "N")
