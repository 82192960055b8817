"""DOT text for a view: expanded scopes as nested clusters, the others as one box each.

A scope is drawn when its parent is drawn expanded (the model always is): as a
cluster ``cluster_PATH`` holding its items if it is in ``expanded``, else as a
single box ``b:PATH``. A node is drawn when its scope is drawn expanded. Each
IR edge u -> v is drawn between the drawn representatives of u and v (the node
itself or its outermost collapsed scope); it vanishes inside a box, and the
edges that land on the same pair merge into one, whose kind is the first of
flow, shortcut, dense among them and whose label lists their shapes.

``archdsl/viz/viewer.js`` implements the same function for the interactive
page; the test suite checks that the two give identical text. Output is
deterministic: items follow the topological order, attributes are sorted.
"""
from __future__ import annotations

from ..ir.graph import Graph
from .model import build_view


def expanded_at(view: dict, depth: int | None) -> list[str]:
    """The scopes drawn as clusters when everything deeper than ``depth`` is collapsed (None: all)."""
    return [p for p, s in view["scopes"].items() if p and (depth is None or s["depth"] <= depth)]


def _quote(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _attrs(attrs: dict) -> str:
    parts = []
    for k in sorted(attrs):
        v = attrs[k]
        parts.append(f"{k}=<{v}>" if k == "label" else f"{k}={_quote(v)}")
    return "[" + ", ".join(parts) + "]"


def representative(view: dict, node: str, expanded) -> str:
    """The drawn id standing for ``node``: itself, or the box of its outermost collapsed scope."""
    chain, s = [], view["owner"][node]
    while s:
        chain.append(s)
        s = view["scopes"][s]["parent"]
    for s in reversed(chain):
        if s not in expanded:
            return f"b:{s}"
    return node


def drawn_edges(view: dict, expanded) -> list[list]:
    """[tail, head, kind, label] for every drawn edge, in drawing order.

    A producer's shape labels only the first drawn edge that carries it: a tensor
    that fans out (into Inception branches, or into a block and its shortcut) is
    labelled once.
    """
    merged: dict = {}
    rank = view["edge_kinds"]
    for u, v, kind, label, producer in view["edges"]:
        t, h = representative(view, u, expanded), representative(view, v, expanded)
        if t == h:
            continue
        key = (t, h)
        if key not in merged:
            merged[key] = [t, h, kind, []]
        e = merged[key]
        if rank.index(kind) < rank.index(e[2]):
            e[2] = kind
        if label:
            e[3].append((producer, label))
    out, labelled = [], set()
    for t, h, kind, contributions in merged.values():
        labels = []
        for producer, label in contributions:
            if producer not in labelled:
                labelled.add(producer)
                if label not in labels:
                    labels.append(label)
        out.append([t, h, kind, ", ".join(labels[:2]) + (", …" if len(labels) > 2 else "")])
    return out


def emit(view: dict, expanded) -> str:
    """The DOT text of ``view`` with the scopes in ``expanded`` drawn as clusters."""
    expanded = set(expanded)
    lines = [f"digraph {_quote(view['name'])} {{",
             f"  graph {_attrs(view['graph'])};",
             f"  node {_attrs(view['node'])};",
             f"  edge {_attrs(view['edge'])};"]

    def items(path: str, indent: str) -> None:
        for kind, key in view["scopes"][path]["items"]:
            if kind == "n":
                lines.append(f"{indent}{_quote(key)} {_attrs(view['nodes'][key])};")
            elif key in expanded:
                lines.append(f"{indent}subgraph {_quote('cluster_' + key)} {{")
                lines.append(f"{indent}  graph {_attrs(view['scopes'][key]['cluster'])};")
                items(key, indent + "  ")
                lines.append(f"{indent}}}")
            else:
                lines.append(f"{indent}{_quote('b:' + key)} {_attrs(view['scopes'][key]['box'])};")

    items("", "  ")
    for t, h, kind, label in drawn_edges(view, expanded):
        attrs = dict(view["edge_styles"][kind])
        if label:
            attrs["label"] = label
        lines.append(f"  {_quote(t)} -> {_quote(h)} {_attrs(attrs)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_dot(graph: Graph, depth: int | None = None) -> str:
    """The DOT text of ``graph`` with blocks deeper than ``depth`` collapsed (None: fully expanded)."""
    view = build_view(graph)
    return emit(view, expanded_at(view, depth))
