"""PyTorch ``state_dict`` values into the IR's parameters, by name: from a file, or from a module.

``load_weights`` reads a file with ``torch.load(..., weights_only=True)``, which
refuses arbitrary pickled objects, so a weights file cannot run code. It may hold
the state_dict itself or a checkpoint dict ``{"state_dict": ...}``. A ``.safetensors``
file (``safetensors.torch.save_file``) or an ``.npz`` archive of arrays by parameter
name (``numpy.savez``; no pickles) is read as well.
``update_from_state_dict`` (``archdsl.from_torch``) takes a module or a state_dict
in memory, such as a trained generated module's, and returns a new graph.

Either way every name must match: missing, unexpected or wrong-shaped tensors
are refused as a whole with an :class:`ArchError` that lists a few of each and
counts the rest (batch-norm ``num_batches_tracked`` counters may be absent, as
PyTorch allows). Values are converted to each parameter's IR dtype.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from ..diagnostics import ArchError, Note
from ..ir.graph import Graph
from .torch_tensors import to_array

SHOWN = 5


SAFETENSORS = ".safetensors"
NPZ = ".npz"
KINDS = ("a .pt file written by torch.save or archc train, a .safetensors file, or an .npz archive of arrays "
         "by parameter name")


def read_state_dict(path) -> dict:
    """The tensors of a weights file, refusing anything but plain tensors and containers."""
    path = Path(path)
    if path.is_dir():
        raise ArchError(f"Cannot read the weights file '{path}': it is a directory; give {KINDS}.")
    if not path.is_file():
        raise ArchError(f"Cannot read the weights file '{path}': there is no such file.")
    if path.suffix == SAFETENSORS:
        return _checked_state(path, _read_safetensors(path))
    if path.suffix == NPZ:
        return _checked_state(path, _read_npz(path))
    if why := _not_torch_file(path):
        raise ArchError(f"Cannot read the weights file '{path}' as a PyTorch state_dict: {why}; give a .pt file "
                        "written by torch.save (a dict from parameter names to tensors) or archc train, a "
                        ".safetensors file, or an .npz archive.")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ArchError(f"Cannot read the weights file '{path}' as a PyTorch state_dict: it holds Python objects "
                        "other than tensors, which archdsl does not load (torch.load with weights_only=True).") \
            from None
    except Exception as err:  # noqa: BLE001 - torch raises many types for corrupt files
        lines = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip().splitlines()
        reason = lines[0] if lines else type(err).__name__
        raise ArchError(f"Cannot read the weights file '{path}' as a PyTorch state_dict: {reason}") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    return _checked_state(path, data)


def _read_safetensors(path: Path) -> dict:
    """The tensors of a safetensors file (no pickles: a JSON header and raw little-endian data)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ArchError(f"Cannot read the weights file '{path}' as safetensors: {reason}; write it with "
                        "safetensors.torch.save_file.") from None


def _read_npz(path: Path) -> dict:
    """The arrays of an ``.npz`` archive as tensors by name (no pickles; numbers only)."""
    import numpy as np

    from ..data import read_npz
    arrays = read_npz(path, "--weights", KINDS)
    for name, value in arrays.items():
        if value.dtype.kind not in "biufc":
            raise ArchError(f"The weights file '{path}' holds {value.dtype} values in '{name}'; weights are "
                            "numbers.")
    return {name: torch.from_numpy(np.array(value, dtype=value.dtype.newbyteorder("="), order="C"))
            for name, value in arrays.items()}


def _checked_state(path: Path, data) -> dict:
    """``data`` if it is a state_dict of real tensors; an ArchError naming ``path`` otherwise."""
    if not isinstance(data, dict):
        raise ArchError(f"The weights file '{path}' holds {type(data).__name__}, not a state_dict (a dict from "
                        "parameter names to tensors, or {\"state_dict\": ...}).")
    bad = [k for k, v in data.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ArchError(f"The weights file '{path}' is not a state_dict: the entry {bad[0]!r} is not a tensor.")
    odd = [k for k, v in data.items() if v.is_complex()]
    if odd:
        raise ArchError(f"The weights file '{path}' holds complex values in '{odd[0]}' ({data[odd[0]].dtype}); "
                        "weights are real numbers, and archdsl does not drop an imaginary part.")
    return data


def _not_torch_file(path: Path) -> str | None:
    """Why ``path`` cannot be a file of ``torch.save`` (a zip archive with ``data.pkl``, or a legacy pickle
    starting with protocol byte 0x80), or None where it may be one."""
    import zipfile
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "the file is empty"
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return "it is a damaged or truncated zip archive"
        if names and all(n.endswith(".npy") for n in names):
            return "it is a NumPy .npz archive, which is read by name only when the file name ends in .npz"
        if not any(n.endswith("data.pkl") for n in names):
            return "it is a zip archive without the data.pkl that torch.save writes"
        return None
    if head[0] != 0x80:
        return "it is neither the zip archive nor the pickle that torch.save writes"
    return None


def _listing(names: list) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def _shape(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def check_names(graph: Graph, state: dict, what: str, where: str) -> None:
    """ArchError unless ``state`` has exactly the graph's parameter names and shapes.

    ``what`` starts the message (``"The weights in 'x.pt'"``), ``where`` names the
    state in the notes (``"the file"``)."""
    params = graph.params
    missing = [n for n in params if n not in state and not n.endswith(".num_batches_tracked")]
    unexpected = [n for n in state if n not in params]
    wrong = [n for n in params if n in state and tuple(state[n].shape) != tuple(params[n].shape)]
    if missing or unexpected or wrong:
        counts = [f"{len(missing)} missing", f"{len(unexpected)} unexpected", f"{len(wrong)} wrong-shaped"]
        notes = []
        if missing:
            notes.append(Note(f"missing from {where}: {_listing(missing)}"))
        if unexpected:
            notes.append(Note(f"not in the model: {_listing(unexpected)}"))
        if wrong:
            shown = [f"{n} is {_shape(state[n].shape)} in {where} but {_shape(params[n].shape)} in the model"
                     for n in wrong]
            notes.append(Note("wrong shape: " + "; ".join(shown[:SHOWN])
                              + (f"; and {len(wrong) - SHOWN} more" if len(wrong) > SHOWN else "")))
        raise ArchError(f"{what} do not match model '{graph.name}' ({', '.join(counts)} names).", None, notes)


def _assign(graph: Graph, state: dict) -> None:
    """Each parameter named in ``state`` takes its values, converted to the parameter's dtype."""
    for name, p in graph.params.items():
        if name in state:
            p.value = to_array(state[name], p.dtype)


def load_weights(graph: Graph, path) -> None:
    """Replace the values of ``graph.params`` with the tensors of a state_dict file."""
    state = read_state_dict(path)
    check_names(graph, state, f"The weights in '{Path(path)}'", "the file")
    _assign(graph, state)


def update_from_state_dict(graph: Graph, state_dict_or_module) -> Graph:
    """A copy of ``graph`` whose parameter values are the tensors of a state_dict (or a module's), by name.

    The graph itself is not changed. Names and shapes must match exactly (as for
    ``load_weights``); values are converted to each parameter's IR dtype.
    """
    state = state_dict_or_module
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    if not isinstance(state, dict):
        raise ArchError(f"from_torch takes a torch.nn.Module or its state_dict, not {type(state).__name__}; "
                        "pass the module itself or module.state_dict().")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ArchError(f"The state_dict given to from_torch maps {bad[0]!r} to "
                        f"{type(state[bad[0]]).__name__}, not a tensor; pass module.state_dict().")
    check_names(graph, state, "The tensors of the state_dict", "the state_dict")
    out = graph.copy()
    _assign(out, state)
    return out


def save_weights(graph: Graph, path, rename=None) -> Path:
    """Write the graph's parameters and buffers as a state_dict: a ``.safetensors`` file where ``path``
    ends so (``safetensors.torch.load_file`` reads it), else a ``torch.save`` file
    (``torch.load(..., weights_only=True)`` reads it); ``rename`` maps IR names to the names to store
    (a written spec's). The same graph gives the same bytes either way."""
    from .torch_tensors import ir_state
    path = Path(path)
    state = ir_state(graph, torch.device("cpu"))
    if rename is not None:
        state = {rename(k): v for k, v in state.items()}
    if path.suffix == SAFETENSORS:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"format": "pt"})
    else:
        torch.save(state, path)
    return path
