"""The canonical text form of the IR, for tests, debugging and ``--print-ir-after``.

One line per node in topological order::

    %4 = conv[kernel_size=(3, 3), out_channels=64, ...](%3) : (N, 64, 56, 56)  @layer1.0.conv1  # resnet.arch:9:16

The type after ``:`` is the shape, then the dtype unless it is float32, then
the quantisation if any: ``(N, 64, 56, 56) uint8 q[scale=0.02, zero_point=128]``.
"""
from __future__ import annotations

from .graph import Graph


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v + '"'
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(_value(x) for x in v) + ")"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def print_graph(graph: Graph, locations: bool = True) -> str:
    ids = {nid: i for i, nid in enumerate(graph.node_ids())}
    ins = ", ".join(f"%{ids[i]}: {graph.type_of(i)}" for i in graph.inputs)
    lines = [f"graph {graph.name}({ins}) {{"]
    for n in graph.nodes():
        if n.op == "input":
            continue
        attrs = ", ".join(f"{k}={_value(v)}" for k, v in sorted(n.attrs.items()))
        args = ", ".join(f"%{ids[i]}" for i in n.inputs)
        line = f"  %{ids[n.id]} = {n.op}" + (f"[{attrs}]" if attrs else "") + f"({args}) : {n.type}"
        line += f"  @{n.scope}"
        if locations and n.span is not None:
            line += f"  # {n.span}"
        lines.append(line)
    lines.append("  return " + ", ".join(f"%{ids[o]}" for o in graph.outputs))
    lines.append("}")
    return "\n".join(lines)
