"""DOT text for a view: expanded scopes as nested clusters, the others as one box each.

A scope is drawn when its parent is drawn expanded (the model always is): as a
cluster ``cluster_PATH`` holding its items if it is in ``expanded``, else as a
single box ``b:PATH``. A node is drawn when its scope is drawn expanded. Each
IR edge u -> v is drawn between the drawn representatives of u and v (the node
itself or its outermost collapsed scope); it vanishes inside a box, and the
edges that land on the same pair merge into one, whose kind is the first of
flow, shortcut, dense among them and whose label lists their shapes. An edge
that enters clusters passes through their entry points, beside their titles
(:func:`routed`), so that Graphviz never draws it across a title.

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


def clusters_of(view: dict, drawn: str) -> list[str]:
    """The clusters around a drawn node or box, outermost first."""
    s = view["scopes"][drawn[2:]]["parent"] if drawn.startswith("b:") else view["owner"][drawn]
    chain = []
    while s:
        chain.append(s)
        s = view["scopes"][s]["parent"]
    return chain[::-1]


def routed(view: dict, expanded) -> tuple[dict, list[list]]:
    """The entry points of the clusters and the drawn edges routed through them.

    A drawn edge t -> h that enters the clusters C_1 ⊃ ... ⊃ C_k (those around h
    but not around t) is drawn as the path t -> e(C_1, t) -> ... -> e(C_k, t) -> h,
    where e(C, t) = ``e:C/t`` is a small point in C on the rank of C's
    title, to the title's right. So an edge crosses the top of a cluster beside
    its title, never through it, and stays inside the clusters it enters.
    Segments shared by several drawn edges (a tensor entering a block once and
    read by two layers in it) are drawn once, with the first kind among them;
    the shape label stays on the first segment. Returns ({cluster: [entry
    points]}, [[tail, head, kind, label]]), both in drawing order.
    """
    rank, entries, segments = view["edge_kinds"], {}, {}
    for t, h, kind, label in drawn_edges(view, expanded):
        around_t = set(clusters_of(view, t))
        entered = [c for c in clusters_of(view, h) if c not in around_t]
        path = [t] + [f"e:{c}/{t}" for c in entered] + [h]
        for c, point in zip(entered, path[1:]):
            entries.setdefault(c, {})[point] = None
        for i, (a, b) in enumerate(zip(path, path[1:])):
            seg = segments.setdefault((a, b), [a, b, kind, []])
            if rank.index(kind) < rank.index(seg[2]):
                seg[2] = kind
            if i == 0 and label and label not in seg[3]:
                seg[3].append(label)
    out = [[a, b, kind, ", ".join(labels[:2]) + (", …" if len(labels) > 2 else "")]
           for a, b, kind, labels in segments.values()]
    return {c: list(points) for c, points in entries.items()}, out


def emit(view: dict, expanded) -> str:
    """The DOT text of ``view`` with the scopes in ``expanded`` drawn as clusters.

    A cluster's title is a node ``t:PATH`` (not the cluster's own label, which
    Graphviz lets edges run through) on the cluster's top rank, kept left of the
    cluster's entry points by invisible flat edges; a cluster that no edge
    enters keeps its title above its first item by an invisible edge.
    """
    expanded = set(expanded)
    entries, segments = routed(view, expanded)
    lines = [f"digraph {_quote(view['name'])} {{",
             f"  graph {_attrs(view['graph'])};",
             f"  node {_attrs(view['node'])};",
             f"  edge {_attrs(view['edge'])};"]
    keep = []                                          # invisible edges that place the titles

    def items(path: str, indent: str) -> None:
        for kind, key in view["scopes"][path]["items"]:
            if kind == "n":
                lines.append(f"{indent}{_quote(key)} {_attrs(view['nodes'][key])};")
            elif key in expanded:
                title, points = "t:" + key, entries.get(key, [])
                lines.append(f"{indent}subgraph {_quote('cluster_' + key)} {{")
                lines.append(f"{indent}  graph {_attrs(view['scopes'][key]['cluster'])};")
                lines.append(f"{indent}  {_quote(title)} {_attrs(view['scopes'][key]['title'])};")
                for point in points:
                    lines.append(f"{indent}  {_quote(point)} {_attrs(dict(view['entry'], id=point))};")
                if points:
                    lines.append(f"{indent}  {{rank=same; {'; '.join(_quote(x) for x in [title] + points)};}}")
                    keep.extend((title, point) for point in points)
                else:
                    first_kind, first = view["scopes"][key]["items"][0]
                    keep.append((title, first if first_kind == "n" else
                                 ("t:" if first in expanded else "b:") + first))
                items(key, indent + "  ")
                lines.append(f"{indent}}}")
            else:
                lines.append(f"{indent}{_quote('b:' + key)} {_attrs(view['scopes'][key]['box'])};")

    items("", "  ")
    for t, h, kind, label in segments:
        attrs = dict(view["edge_styles"][kind])
        if label:
            attrs["label"] = label
        if h.startswith("e:"):                         # the path goes on: no arrow, no gap at the point
            attrs.update(arrowhead="none", headclip="false")
        if t.startswith("e:"):
            attrs["tailclip"] = "false"
        lines.append(f"  {_quote(t)} -> {_quote(h)} {_attrs(attrs)};")
    for t, h in keep:
        lines.append(f"  {_quote(t)} -> {_quote(h)} [style=\"invis\"];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_dot(graph: Graph, depth: int | None = None) -> str:
    """The DOT text of ``graph`` with blocks deeper than ``depth`` collapsed (None: fully expanded)."""
    view = build_view(graph)
    return emit(view, expanded_at(view, depth))
