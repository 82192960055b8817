"""How much each channel of a channel group matters: the criteria of the ``prune`` pass.

A group's units (channels) each own slices of several parameters: producers'
filters and biases, batch-norm entries (role ``out``), consumers' in-slices
(role ``in``). Every criterion scores a unit by aggregating over all of them:

* ``l1``:  s_i = sum over slices of sum |w|   (the filter, its BN entries and every in-slice);
* ``l2``:  s_i = sum over slices of sum w^2;
* ``bn-scale``: s_i = sum |gamma| over the batch norms among the slices (network slimming,
  Liu et al. 2017); a group without a batch norm falls back to ``l2``;
* ``taylor``: s_i = sum over slices of sum |w * g|, with g = dL/dw averaged over the
  context's data (first-order Taylor expansion of the loss, Molchanov et al. 2019);
* ``obd``: s_i = sum over slices of sum h w^2 / 2, the saliency of Optimal Brain Damage
  (LeCun et al. 1989), with the Hessian's diagonal h estimated by the Fisher information
  E[g^2] over the data's batches;
* ``random``: uniform scores from the context's seeded generator (the baseline).

The loss of ``taylor`` and ``obd`` is the cross-entropy of the first model output with
the data's labels ``y`` or, without labels, with the model's own predictions.
"""
from __future__ import annotations

import numpy as np

from ..diagnostics import ArchError
from ..ir.channels import ChannelGroup
from ..ir.graph import Graph
from .context import PassContext

CRITERIA = ("l1", "l2", "bn-scale", "taylor", "obd", "random")


def _reduced(array: np.ndarray, axis: int, fn) -> np.ndarray:
    """``fn(array)`` summed over every axis but ``axis``: one value per index of ``axis`` (accumulated in
    float64, without a float64 copy of the array)."""
    rows = np.moveaxis(np.asarray(array), axis, 0).reshape(array.shape[axis], -1)
    return fn(rows).sum(axis=1, dtype=np.float64)


def _aggregate(group: ChannelGroup, tensors: dict, fn, only=None) -> np.ndarray:
    """Per unit, the sum over the group's slices of ``fn(tensor)`` over each slice's indices."""
    score = np.zeros(group.size)
    cache: dict = {}
    for (pname, axis), rows in group.slices.items():
        if pname not in tensors or (only is not None and pname not in only):
            continue
        key = (pname, axis)
        if key not in cache:
            cache[key] = _reduced(tensors[pname], axis, fn)
        score += cache[key][rows].sum(axis=1)
    return score


def _gradients(graph: Graph, ctx: PassContext, samples: int) -> tuple[dict, dict]:
    """Mean gradient and mean squared gradient of every trainable parameter over the data's batches."""
    import torch
    import torch.nn.functional as F
    from ..backends.torch_module import to_torch
    ctx.require_data("prune", "the taylor and obd criteria (gradients of the loss)")
    module = to_torch(graph).eval()
    params = dict(module.named_parameters())
    gsum = {k: torch.zeros_like(p) for k, p in params.items()}
    g2sum = {k: torch.zeros_like(p) for k, p in params.items()}
    n = 0
    batches = list(ctx.batches(16, samples))
    if not batches:
        raise ArchError("Pass 'prune' got no samples in its data for the taylor and obd criteria.")
    torch.manual_seed(ctx.seed)
    for batch in ctx.track(batches, total=len(batches), desc="prune: gradients"):
        xs = [torch.from_numpy(np.ascontiguousarray(x, np.float32)) for x in batch.x]
        module.zero_grad(set_to_none=False)
        out = module(*xs)
        out = out[0] if isinstance(out, tuple) else out
        logits = out.reshape(out.shape[0], -1)
        target = (torch.from_numpy(batch.y) if batch.y is not None else logits.argmax(1)).long()
        if int(target.max()) >= logits.shape[1] or int(target.min()) < 0:
            raise ArchError(f"The labels in the data lie outside the model's {logits.shape[1]} outputs.")
        F.cross_entropy(logits, target).backward()
        for k, p in params.items():
            if p.grad is not None:
                gsum[k] += p.grad
                g2sum[k] += p.grad * p.grad
        n += 1
    mean = {k: (v / n).detach().numpy() for k, v in gsum.items()}
    fisher = {k: (v / n).detach().numpy() for k, v in g2sum.items()}
    return mean, fisher


def scores(graph: Graph, groups: list[ChannelGroup], criterion: str, ctx: PassContext,
           samples: int = 64) -> tuple[list[np.ndarray], list[str]]:
    """One score vector per group (higher: more important), and the criterion each group used."""
    if criterion not in CRITERIA:
        raise ArchError(f"Pass 'prune' has no criterion '{criterion}'; the criteria are {', '.join(CRITERIA)}.")
    values = {name: p.value for name, p in graph.params.items()}
    bn_gammas = {d["params"]["weight"] for _, d in graph._g.nodes(data=True)
                 if d["op"] == "bn" and "weight" in d["params"]}
    if criterion in ("taylor", "obd"):
        mean, fisher = _gradients(graph, ctx, samples)
        if criterion == "taylor":
            derived = {k: np.abs(values[k] * mean[k]) for k in mean}
        else:
            derived = {k: 0.5 * fisher[k] * values[k].astype(np.float64) ** 2 for k in fisher}
    out, used = [], []
    for group in groups:
        how = criterion
        if criterion == "l1":
            s = _aggregate(group, values, np.abs)
        elif criterion == "l2":
            s = _aggregate(group, values, np.square)
        elif criterion == "bn-scale":
            mine = {p for p, _ in group.slices} & bn_gammas
            if mine:
                s = _aggregate(group, values, np.abs, only=mine)
            else:
                s, how = _aggregate(group, values, np.square), "l2 (no batch norm)"
        elif criterion == "random":
            s = ctx.rng(f"prune:{group.index}").random(group.size)
        else:
            s = _aggregate(group, derived, lambda a: a)
        out.append(s)
        used.append(how)
    return out, used
