"""Loading a PyTorch ``state_dict`` into the IR's parameters, by name.

The file is read with ``torch.load(..., weights_only=True)``, which refuses
arbitrary pickled objects, so a weights file cannot run code. It may hold the
state_dict itself or a checkpoint dict ``{"state_dict": ...}``. Every name must
match: a file with missing, unexpected or wrong-shaped tensors is refused as a
whole with an :class:`ArchError` that lists a few of each and counts the rest
(batch-norm ``num_batches_tracked`` counters may be absent, as PyTorch allows).
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import torch

from ..diagnostics import ArchError, Note
from ..ir.graph import Graph

SHOWN = 5


def read_state_dict(path) -> dict:
    """The tensors of a weights file, refusing anything but plain tensors and containers."""
    path = Path(path)
    if not path.is_file():
        raise ArchError(f"Cannot read the weights file '{path}': there is no such file.")
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
    if not isinstance(data, dict):
        raise ArchError(f"The weights file '{path}' holds {type(data).__name__}, not a state_dict (a dict from "
                        "parameter names to tensors, or {\"state_dict\": ...}).")
    bad = [k for k, v in data.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ArchError(f"The weights file '{path}' is not a state_dict: the entry {bad[0]!r} is not a tensor.")
    return data


def _listing(names: list) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def _shape(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def load_weights(graph: Graph, path) -> None:
    """Replace the values of ``graph.params`` with the tensors of a state_dict file."""
    state = read_state_dict(path)
    params = graph.params
    missing = [n for n in params if n not in state and not n.endswith(".num_batches_tracked")]
    unexpected = [n for n in state if n not in params]
    wrong = [n for n in params if n in state and tuple(state[n].shape) != tuple(params[n].shape)]
    if missing or unexpected or wrong:
        counts = [f"{len(missing)} missing", f"{len(unexpected)} unexpected", f"{len(wrong)} wrong-shaped"]
        notes = []
        if missing:
            notes.append(Note(f"missing from the file: {_listing(missing)}"))
        if unexpected:
            notes.append(Note(f"not in the model: {_listing(unexpected)}"))
        if wrong:
            shown = [f"{n} is {_shape(state[n].shape)} in the file but {_shape(params[n].shape)} in the model"
                     for n in wrong]
            notes.append(Note("wrong shape: " + "; ".join(shown[:SHOWN])
                              + (f"; and {len(wrong) - SHOWN} more" if len(wrong) > SHOWN else "")))
        raise ArchError(f"The weights in '{Path(path)}' do not match model '{graph.name}' "
                        f"({', '.join(counts)} names).", None, notes)
    for name, p in params.items():
        if name not in state:
            continue
        t = state[name].detach()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()
        p.value = np.array(t.numpy(), dtype=p.dtype, copy=True)
