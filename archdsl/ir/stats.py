"""Per-layer statistics: output shape, parameters and multiply-accumulates (MACs).

MACs count the multiply-accumulates of conv and linear layers for one sample
(batch 1), the convention of the papers and of torchvision's model tables.
Rows can be rolled up by scope depth (:func:`rollup`, ``archc stats --depth``),
and :func:`memory` estimates what a forward pass holds: every layer's output
(torchinfo's "forward pass size"), the peak of the tensors alive at once when
each is freed after its last use, and the parameters split into trainable
ones and buffers (batch-norm running statistics).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import ops
from .graph import Graph
from .types import numpy_dtype


@dataclass(frozen=True)
class LayerStats:
    scope: str
    op: str
    shape: tuple
    params: int
    macs: int


def layer_stats(graph: Graph) -> list[LayerStats]:
    rows = []
    for n in graph.nodes():
        ins = [graph.data(i)["shape"] for i in n.inputs]
        params = sum(graph.params[p].numel for p in n.params.values() if graph.params[p].trainable)
        macs = ops.macs(n.op, n.attrs, ins, n.shape) if n.op != "input" else 0
        rows.append(LayerStats(n.scope or n.attrs.get("name", ""), n.op, n.shape, params, macs))
    return rows


def rollup(graph: Graph, rows: list[LayerStats], depth: int) -> list[LayerStats]:
    """``rows`` summed by the first ``depth`` parts of their scopes, in order of first appearance. A
    group is named by its scope and shows the block it instantiates (or its op, for a single node) and
    the output shape of its last node."""
    groups: dict[str, list[LayerStats]] = {}
    for r in rows:
        key = (".".join(r.scope.split(".")[:depth]) or graph.name) if r.op != "input" else r.scope
        groups.setdefault(key, []).append(r)
    out = []
    for key, members in groups.items():
        info = graph.scopes.get(key)
        what = (info.name if info is not None and len(members) > 1 else "model" if depth == 0 and len(members) > 1
                else members[-1].op)
        out.append(LayerStats(key, what, members[-1].shape, sum(m.params for m in members),
                              sum(m.macs for m in members)))
    return out


def _bytes(shape, dtype: str) -> int:
    n = 1
    for d in shape[1:] if shape and shape[0] == "N" else shape:
        n *= d
    return n * np.dtype(numpy_dtype(dtype)).itemsize


def memory(graph: Graph) -> dict:
    """Bytes per sample of the forward pass: ``activations`` (every node's output but the inputs),
    ``peak`` (the most bytes alive at once in topological order, each tensor freed after its last
    user; model inputs and outputs stay alive), and parameter counts and bytes, trainable or buffer."""
    order = [n.id for n in graph.nodes()]
    position = {nid: k for k, nid in enumerate(order)}
    last_use = {nid: max((position[u] for u in graph.users(nid)), default=len(order)) for nid in order}
    for nid in [*graph.inputs, *graph.outputs]:       # the caller holds both
        last_use[nid] = len(order)
    size = {nid: _bytes(graph.data(nid)["shape"], graph.data(nid)["dtype"]) for nid in order}
    frees: dict[int, list[int]] = {}
    for nid, k in last_use.items():
        frees.setdefault(k, []).append(nid)
    live = peak = sum(size[i] for i in graph.inputs)
    for k, nid in enumerate(order):
        if graph.data(nid)["op"] != "input":
            live += size[nid]
        peak = max(peak, live)
        live -= sum(size[i] for i in frees.get(k, ()))
    trainable = [p for p in graph.params.values() if p.trainable]
    buffers = [p for p in graph.params.values() if not p.trainable]
    pbytes = lambda ps: sum(p.numel * np.dtype(numpy_dtype(p.dtype)).itemsize for p in ps)
    return {"activations": sum(size[i] for i in order if graph.data(i)["op"] != "input"), "peak": peak,
            "trainable": sum(p.numel for p in trainable), "buffers": sum(p.numel for p in buffers),
            "param_bytes": pbytes(trainable) + pbytes(buffers)}


def human_bytes(n: int) -> str:
    """Bytes in binary units: 812 B, 3.17 KiB, 97.70 MiB, 2.01 GiB."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def totals(graph: Graph) -> dict:
    rows = layer_stats(graph)
    return {"params": graph.param_count(), "macs": sum(r.macs for r in rows), "nodes": len(graph),
            "edges": graph.num_edges()}


def stats_json(graph: Graph, depth: int | None = None) -> dict:
    rows = layer_stats(graph)
    if depth is not None:
        rows = rollup(graph, rows, depth)
    return {"model": graph.name, **totals(graph), "memory": memory(graph),
            "inputs": [list(graph.data(i)["shape"]) for i in graph.inputs],
            "outputs": [list(graph.data(o)["shape"]) for o in graph.outputs],
            "layers": [{"scope": r.scope, "op": r.op, "shape": list(r.shape), "params": r.params, "macs": r.macs}
                       for r in rows]}


def human(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def stats_table(graph: Graph, depth: int | None = None, memory_lines: bool = False) -> str:
    """The per-layer table and the totals; with ``memory_lines`` (``archc stats``) also the parameter split
    and the activation memory."""
    rows = layer_stats(graph)
    if depth is not None:
        rows = rollup(graph, rows, depth)
    shape = lambda s: "(" + ", ".join(map(str, s)) + ")"
    table = [("scope", "op", "output shape", "params", "MACs")]
    table += [(r.scope, r.op, shape(r.shape), f"{r.params:,}" if r.params else "-",
               f"{r.macs:,}" if r.macs else "-") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    lines = []
    for k, row in enumerate(table):
        cells = [row[i].ljust(widths[i]) if i < 3 else row[i].rjust(widths[i]) for i in range(5)]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    t = totals(graph)
    lines.append("")
    lines.append(f"{graph.name}: {t['params']:,} parameters ({human(t['params'])}), "
                 f"{t['macs']:,} MACs ({human(t['macs'])}) per sample, {t['nodes']} node{'s' if t['nodes'] != 1 else ''}")
    if not memory_lines:
        return "\n".join(lines)
    m = memory(graph)
    lines.append(f"parameters: {m['trainable']:,} trainable, {m['buffers']:,} in buffers (running statistics); "
                 f"{human_bytes(m['param_bytes'])}")
    lines.append(f"activations per sample: {human_bytes(m['activations'])} in all layer outputs, "
                 f"{human_bytes(m['peak'])} at the inference peak (the input included, "
                 "each tensor freed after its last use)")
    return "\n".join(lines)
