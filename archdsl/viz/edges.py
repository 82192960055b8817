"""What the IR's edges mean in a picture: residual shortcuts, dense connections and the dense rail.

``classify`` gives every edge that is not plain data flow its kind:

* ``shortcut``: into a residual addition from its shortcut operand, and every
  edge into a node that only the shortcut uses (a projection such as
  ``downsample``). The elaborator marks the addition with
  ``meta["construct"] == "residual"`` (operands: main path, shortcut); without
  the mark, an ``add`` of two tensors the second of which is an ancestor of the
  first is taken for an identity shortcut.
* ``dense``: into a concatenation from an operand that is an ancestor of
  another operand, i.e. an earlier feature map of a dense block.

A dense block of n layers has O(n^2) such edges, which no layout keeps legible.
``rails`` draws them as a rail instead: for the concatenations c_1, ..., c_m of
one dense construct (same scope, same first operand, operand lists F[:k_1],
F[:k_2], ... with k_1 < k_2 < ..., all prefixes of the last one's F) there is
one rail point r_j per c_j, a rail edge r_{j-1} -> r_j, tap edges from the
features F[k_{j-1} - 1 : k_j - 1] into r_j (k_0 = 1) and one edge r_j -> c_j.
So a feature reaches c_j through the rail exactly when it is one of
F[:k_j - 1], the operands of c_j other than the last (which arrives on its
own flow edge): the rail's paths are the dense edges, nothing more or less.
A group that does not fit this pattern keeps its individual dense edges.
"""
from __future__ import annotations

import networkx as nx

from ..ir.graph import Graph


def classify(graph: Graph) -> tuple[dict, set]:
    """(producer, consumer) -> "shortcut" | "dense" for the edges that are not plain flow, and the
    identity shortcuts (whose tensor is already labelled on the main path)."""
    g = graph.nx
    kinds, anc, identity = {}, {}, set()

    def ancestors(n):
        if n not in anc:
            anc[n] = nx.ancestors(g, n)
        return anc[n]

    for n in graph.nodes():
        ins = n.inputs
        construct = n.meta.get("construct")
        if n.op == "add" and len(ins) == 2 and ins[0] != ins[1] and (
                construct == "residual" or (construct is None and ins[1] in ancestors(ins[0]))):
            main, short = ins
            only_short = ({short} | ancestors(short)) - ({main} | ancestors(main))
            for v in sorted(only_short):
                for u in g.predecessors(v):
                    kinds[(u, v)] = "shortcut"
            kinds[(short, n.id)] = "shortcut"
            if short in ancestors(main):
                identity.add((short, n.id))
        elif n.op == "concat" and len(set(ins)) > 1 and construct in ("dense", None):
            for u in ins:
                if any(u in ancestors(w) for w in ins if w != u):
                    kinds[(u, n.id)] = "dense"
    return kinds, identity


def rails(graph: Graph, kinds: dict, owner: dict) -> list[list[tuple]]:
    """The dense rails: per dense construct, [(concat, taps)] in order, taps being the features
    that join the rail at that concatenation's rail point."""
    groups: dict = {}
    for n in graph.nodes():
        ins = n.inputs
        if n.op == "concat" and len(ins) > 1 and len(set(ins)) == len(ins) \
                and all(kinds.get((u, n.id)) == "dense" for u in ins[:-1]) and (ins[-1], n.id) not in kinds:
            groups.setdefault((owner[n.id], ins[0]), []).append(n.id)
    out = []
    for key in sorted(groups, key=lambda k: min(groups[k])):
        concats = sorted(groups[key], key=lambda c: len(graph.data(c)["inputs"]))
        full = graph.data(concats[-1])["inputs"]
        sizes = [len(graph.data(c)["inputs"]) for c in concats]
        if len(set(sizes)) != len(sizes) or any(graph.data(c)["inputs"] != full[:k] for c, k in zip(concats, sizes)):
            continue
        rail, prev = [], 1
        for c, k in zip(concats, sizes):
            rail.append((c, tuple(full[prev - 1:k - 1])))
            prev = k
        out.append(rail)
    return out
