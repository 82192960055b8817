"""Per-layer statistics: output shape, parameters and multiply-accumulates (MACs).

MACs count the multiply-accumulates of conv and linear layers for one sample
(batch 1), the convention of the papers and of torchvision's model tables.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import ops
from .graph import Graph


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


def totals(graph: Graph) -> dict:
    rows = layer_stats(graph)
    return {"params": graph.param_count(), "macs": sum(r.macs for r in rows), "nodes": len(graph),
            "edges": graph.num_edges()}


def stats_json(graph: Graph) -> dict:
    rows = layer_stats(graph)
    return {"model": graph.name, **totals(graph),
            "inputs": [list(graph.data(i)["shape"]) for i in graph.inputs],
            "outputs": [list(graph.data(o)["shape"]) for o in graph.outputs],
            "layers": [{"scope": r.scope, "op": r.op, "shape": list(r.shape), "params": r.params, "macs": r.macs}
                       for r in rows]}


def human(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def stats_table(graph: Graph) -> str:
    rows = layer_stats(graph)
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
    return "\n".join(lines)
