"""``drop-inference-noops``: remove ops that compute the identity in inference.

``identity(x) = x`` always. PyTorch's dropout is *inverted* dropout: in training
it zeroes elements (``dropout``) or whole channels (``dropout2d``) with
probability ``p`` and scales the survivors by ``1 / (1 - p)``, so that in
inference it is exactly ``x -> x`` with no rescaling; so is stochastic depth
(``drop_path``: in training it zeroes whole samples, or the whole batch, with
probability ``p`` and scales the rest by ``1 / (1 - p)``). Each such node is
removed and its users (and the model outputs) read its input instead; the
outputs are bit-for-bit unchanged in inference (eval) mode.

With ``training=true`` the graph is meant for training, so only the ops that are
the identity in both modes go: ``identity``, and dropout and ``drop_path`` with ``p = 0``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.graph import Graph
from .base import Pass, PassReport, node_label, register
from .context import PassContext

DROPOUTS = ("dropout", "dropout2d", "drop_path")


@register
@dataclass
class DropInferenceNoops(Pass):
    """Removes dropout, stochastic depth and identity nodes: each is the identity in inference."""

    name = "drop-inference-noops"
    training: bool = field(default=False, metadata={
        "doc": "keep dropout with p > 0 (the graph will be trained); remove only identity and p = 0 dropout"})

    def is_noop(self, op: str, attrs: dict) -> bool:
        if op == "identity":
            return True
        return op in DROPOUTS and (not self.training or attrs["p"] == 0.0)

    def rewrite(self, graph: Graph, report: PassReport, ctx: PassContext) -> bool:
        modified = False
        for n in list(graph.nodes()):
            if not self.is_noop(n.op, n.attrs):
                if n.op in DROPOUTS:
                    report.refuse(graph, n.id, f"It drops with p = {n.attrs['p']} in training, and the pass "
                                               "runs with training=true.")
                continue
            op, label = n.op, node_label(graph, n.id)
            graph.replace_all_uses(n.id, n.inputs[0])
            graph.remove_node(n.id)
            report.did(f"removed {op} @{label}")
            modified = True
        return modified
