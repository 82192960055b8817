"""IR dtypes as torch dtypes, and the IR's arrays as tensors and back.

Every IR dtype has a torch dtype of the same name (``torch.bfloat16`` for
``bfloat16``). NumPy has no bfloat16 of its own (the IR's bfloat16 arrays are
``ml_dtypes.bfloat16``) and ``torch.from_numpy`` does not know that type, so
bfloat16 values cross between the two as their 16 bits (``int16``), unchanged.
"""
from __future__ import annotations

import numpy as np
import torch

from ..diagnostics import ArchError
from ..ir.graph import Graph
from ..ir.types import numpy_dtype

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                "int8": torch.int8, "uint8": torch.uint8, "int32": torch.int32, "int64": torch.int64,
                "bool": torch.bool}


def torch_dtype(dtype: str) -> torch.dtype:
    return TORCH_DTYPES[dtype]


def dtype_source(dtype: str) -> str:
    """``torch.float16``: the dtype as generated source writes it."""
    return f"torch.{dtype}"


def to_tensor(array, dtype: str) -> torch.Tensor:
    """A CPU tensor of the IR dtype holding a C-contiguous copy of ``array`` (nothing is shared)."""
    values = np.array(array, dtype=numpy_dtype(dtype), copy=True, order="C")
    if dtype == "bfloat16":
        return torch.from_numpy(values.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(values)


def to_array(tensor: torch.Tensor, dtype: str) -> np.ndarray:
    """A NumPy copy of ``tensor`` converted to the IR dtype (the tensor may live on any real device)."""
    t = tensor.detach()
    if t.is_meta:
        raise ArchError("A tensor on the meta device holds no values to read; build the module with its "
                        "weights (to_torch(graph)) or move it to a real device first.")
    t = t.cpu()
    if t.dtype == torch.bfloat16:
        if dtype == "bfloat16":
            return t.contiguous().view(torch.int16).numpy().view(numpy_dtype("bfloat16")).copy()
        t = t.float()
    return np.array(t.numpy(), dtype=numpy_dtype(dtype), copy=True)


def resolve_device(device) -> torch.device:
    """``device`` as a ``torch.device``; ArchError for a name torch does not know or a device that is absent."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ArchError(f"'{device}' is not a PyTorch device ({str(err).strip()}); use 'cpu', 'cuda' or "
                        "'cuda:0'.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ArchError(f"Cannot build the module on '{device}': PyTorch sees no CUDA device here; use "
                        "device='cpu'.")
    return dev


def ir_state(graph: Graph, device=None) -> dict[str, torch.Tensor]:
    """The graph's parameters and buffers as fresh tensors of their IR dtypes, by name, on ``device``."""
    state = {name: to_tensor(p.value, p.dtype) for name, p in graph.params.items()}
    if device is not None and torch.device(device).type != "cpu":
        state = {name: t.to(device) for name, t in state.items()}
    return state
