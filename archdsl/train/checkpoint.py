"""Checkpoints of ``archc train`` and ``distill``, and loading weights with some layers reset.

A checkpoint is a dict that ``torch.load(..., weights_only=True)`` reads and
that ``--weights`` accepts (:func:`archdsl.backends.weights.load_weights` takes
its ``state_dict``)::

    {"state_dict": {IR parameter name: tensor},      # what --weights loads
     "optimizer": ..., "scheduler": ..., "epoch": 3, "history": [...],
     "torch_rng": ByteTensor, "meta": {"model", "spec", "defines", "passes", "seed", "config", ...}}
"""
from __future__ import annotations

import types
from pathlib import Path

from ..diagnostics import ArchError, Span
from ..passes.base import in_scopes


def save_checkpoint(path, module, result=None, meta: dict | None = None) -> Path:
    import torch
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    data = {"state_dict": state, "meta": dict(meta or {})}
    if result is not None:
        data.update({"optimizer": result.optimizer.state_dict() if result.optimizer is not None else None,
                     "scheduler": result.scheduler.state_dict() if result.scheduler is not None else None,
                     "epoch": result.epochs, "history": result.history, "torch_rng": torch.get_rng_state()})
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    return path


def read_checkpoint(path) -> dict:
    """A checkpoint written by ``archc train``, for ``--resume``; ArchError naming the file otherwise."""
    import torch
    from ..backends.weights import NPZ, SAFETENSORS, read_state_dict
    path = Path(path)
    state = read_state_dict(path)               # the file's errors, worded as for --weights
    data = None if path.suffix in (SAFETENSORS, NPZ) else torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or not isinstance(data.get("optimizer"), dict) or "epoch" not in data:
        raise ArchError("This file holds weights but no training state (optimizer, schedule, epoch), so training "
                        "cannot resume from it; resume from a checkpoint written by archc train, or start from "
                        "these weights with --weights.", Span.of_file(path))
    data["state_dict"] = state
    return data


def split_patterns(items) -> list:
    return [p.strip() for item in items or [] for p in item.split(",") if p.strip()]


def param_scope(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else name


def load_weights_except(graph, path, reset) -> list:
    """Load a state_dict file into ``graph`` by name, except the parameters of the scopes ``reset``.

    The reset layers keep their initial weights, and the file's tensors for them are
    ignored (whatever their shape, e.g. a classifier for another number of classes);
    every other name must match exactly. Returns the reset parameter names."""
    from ..backends.weights import _assign, check_names, read_state_dict
    patterns = split_patterns(reset)
    state = read_state_dict(Path(path))
    skipped = [n for n in graph.params if in_scopes(param_scope(n), patterns)]
    unused = [p for p in patterns if not any(in_scopes(param_scope(n), [p]) for n in graph.params)]
    if unused:
        from ..diagnostics import did_you_mean
        scopes = {graph.data(n.id)["scope"] for n in graph.nodes() if n.params}
        hint = did_you_mean(unused[0], scopes)
        raise ArchError(f"--reset '{unused[0]}' names no layer with parameters of model '{graph.name}'{hint or '.'} "
                        "Give a layer scope or a pattern such as 'layer4.*'.")
    kept = {k: v for k, v in state.items() if not in_scopes(param_scope(k), patterns)}
    shim = types.SimpleNamespace(name=graph.name,
                                 params={n: p for n, p in graph.params.items() if n not in set(skipped)})
    check_names(shim, kept, f"The weights in '{Path(path)}'", "the file")
    _assign(graph, kept)
    return skipped


def update_params(graph, state: dict):
    """A copy of ``graph`` where the parameters named in ``state`` take its values (the others stay)."""
    from ..backends.torch_tensors import to_array
    out = graph.copy()
    for name, p in out.params.items():
        if name in state:
            p.value = to_array(state[name], p.dtype)
    return out
