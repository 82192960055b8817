"""``dce``: dead-code elimination.

A node is live when some model output depends on it: the live set is the
outputs together with all their ancestors in the dataflow graph. Every other
node, except the model's ``input`` nodes (they are its signature and stay even
when unused), is removed; a removed node's parameters go with it. Removal runs
users-first (reverse topological order), so each node has no users left when it
is removed. The outputs do not depend on dead nodes, so they are unchanged exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from ..ir.graph import Graph
from .base import Pass, PassReport, register
from .context import PassContext


def live_nodes(graph: Graph) -> set[int]:
    """The outputs and every node they depend on."""
    live = set(graph.outputs)
    for out in graph.outputs:
        live |= nx.ancestors(graph.nx, out)
    return live


@register
@dataclass
class DeadCodeElimination(Pass):
    """Removes nodes whose results never reach a model output."""

    name = "dce"

    def rewrite(self, graph: Graph, report: PassReport, ctx: PassContext) -> bool:
        live = live_nodes(graph) | set(graph.inputs)
        dead = [nid for nid in reversed(graph.node_ids()) if nid not in live]
        for nid in dead:
            report.did(f"removed dead {graph.data(nid)['op']} @{graph.data(nid)['scope'] or '%' + str(nid)}")
            graph.remove_node(nid)
        return bool(dead)
