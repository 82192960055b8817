"""Structural verification and shape re-inference of a graph (run after every pass).

Shape inference is an interpreter: a topological walk over the op registry's
per-op rules. A node whose op has no rule is an error naming the op and the
spec location it came from.
"""
from __future__ import annotations

from ..diagnostics import ArchError
from . import ops
from .graph import Graph
from .shape_rules import ShapeError, fmt


def infer_shapes(graph: Graph, update: bool = False) -> dict[int, tuple]:
    """Recompute every node's shape from the inputs; return them (and store them if ``update``)."""
    shapes: dict[int, tuple] = {}
    for n in graph.nodes():
        opdef = ops.get(n.op)
        if opdef is None or opdef.infer is None:
            raise ArchError(f"No shape rule is registered for op '{n.op}' (node @{n.scope}).", n.span)
        try:
            shape = tuple(n.shape) if n.op == "input" else tuple(
                opdef.infer(n.attrs, [shapes[i] for i in n.inputs]))
        except ShapeError as err:
            raise ArchError(str(err), n.span) from None
        shapes[n.id] = shape
        if update:
            graph.update(n.id, shape=shape)
    return shapes


def verify(graph: Graph) -> None:
    """Check structure, operand order, parameter shapes and shapes; raise ArchError on the first problem."""
    g = graph.nx
    for n in graph.nodes():
        preds = set(g.predecessors(n.id))
        if preds != set(n.inputs):
            raise ArchError(f"Node @{n.scope} ({n.op}) has edges {sorted(preds)} that disagree with its operands "
                            f"{list(n.inputs)}.", n.span)
        opdef = ops.get(n.op)
        if opdef is None:
            raise ArchError(f"Unknown op '{n.op}' at node @{n.scope}.", n.span)
        if opdef.arity is not None and len(n.inputs) != opdef.arity:
            raise ArchError(f"Node @{n.scope} ({n.op}) has {len(n.inputs)} operands; '{n.op}' takes "
                            f"{opdef.arity}.", n.span)
    for nid in graph.outputs + graph.inputs:
        if nid not in graph:
            raise ArchError(f"The graph names node %{nid} as an input or output, but it does not exist.")
    shapes = infer_shapes(graph)
    for n in graph.nodes():
        if tuple(n.shape) != shapes[n.id]:
            raise ArchError(f"Node @{n.scope} ({n.op}) records shape {fmt(n.shape)} but its inputs give "
                            f"{fmt(shapes[n.id])}.", n.span)
        if n.op != "input":
            specs = ops.param_specs(n.op, n.attrs, [shapes[i] for i in n.inputs])
            if set(specs) != set(n.params):
                raise ArchError(f"Node @{n.scope} ({n.op}) has parameters {sorted(n.params)}, expected "
                                f"{sorted(specs)}.", n.span)
            for local, spec in specs.items():
                p = graph.params.get(n.params[local])
                if p is None or tuple(p.shape) != tuple(spec.shape):
                    raise ArchError(f"Parameter {n.params[local]} has shape "
                                    f"{fmt(p.shape) if p else 'missing'}; the op needs {fmt(spec.shape)}.",
                                    n.span)
