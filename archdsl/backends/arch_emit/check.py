"""Checking a written spec: loaded again, it must give the same graph (:func:`check_arch`)."""
from __future__ import annotations

from ...diagnostics import ArchError
from ...ir.graph import Graph
from .spec import ArchSpec



def _plain(v):
    if isinstance(v, (list, tuple)):
        return tuple(_plain(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _plain(x)) for k, x in v.items()))
    return v


def _canonical(graph: Graph, rename=lambda s: s) -> tuple:
    """The graph as data keyed by scope: independent of node ids and of the order of creation."""
    names = {}
    for k, i in enumerate(graph.inputs):
        names[i] = f"%input{k}"
    for n in graph.node_ids():
        d = graph.data(n)
        if d["op"] != "input":
            names[n] = rename(d["scope"])
    nodes = {}
    for n in graph.node_ids():
        d = graph.data(n)
        params = tuple(sorted((local, tuple(graph.params[p].shape), graph.params[p].dtype,
                               graph.params[p].trainable) for local, p in d["params"].items()))
        attrs = {k: v for k, v in d["attrs"].items() if not (d["op"] == "input" and k == "name")}
        nodes[names[n]] = (d["op"], repr(_plain(attrs)), tuple(d["shape"]), d["dtype"],
                           tuple(names[i] for i in d["inputs"]), params)
    return nodes, tuple(names[o] for o in graph.outputs)


def check_arch(graph: Graph, spec) -> Graph:
    """Load ``spec`` (an :class:`ArchSpec` or text) and raise ArchError unless it gives ``graph`` again.

    Nodes are compared by scope (renames applied): op, attributes, shape, dtype,
    operands, parameter names, shapes and dtypes; then inputs and outputs. Returns
    the loaded graph.
    """
    import archdsl
    if isinstance(spec, str):
        spec = ArchSpec(spec, graph.name)
    try:
        back = archdsl.load(spec.text)
    except ArchError as err:
        raise ArchError(f"The spec written for model '{graph.name}' does not load ({err.message}); this is a bug "
                        "in the spec writer.") from None
    want_nodes, want_outs = _canonical(graph, spec.scope_name)
    got_nodes, got_outs = _canonical(back)
    problem = None
    for name in want_nodes:
        if name not in got_nodes:
            problem = f"it has no node @{name}"
        elif want_nodes[name] != got_nodes[name]:
            problem = f"node @{name} differs: {got_nodes[name]} instead of {want_nodes[name]}"
        if problem:
            break
    if problem is None and set(got_nodes) - set(want_nodes):
        problem = f"it has an extra node @{sorted(set(got_nodes) - set(want_nodes))[0]}"
    if problem is None and got_outs != want_outs:
        problem = f"its outputs are {got_outs} instead of {want_outs}"
    if problem is None:
        inputs = [(graph.data(i)["shape"]) for i in graph.inputs]
        if inputs != [back.data(i)["shape"] for i in back.inputs]:
            problem = "its inputs differ"
    if problem is None:
        want_params = {spec.param_name(k): tuple(p.shape) for k, p in graph.params.items()}
        if want_params != {k: tuple(p.shape) for k, p in back.params.items()}:
            problem = "its parameters differ"
    if problem is not None:
        raise ArchError(f"The spec written for model '{graph.name}' does not give the same graph: {problem}; "
                        "this is a bug in the spec writer.")
    return back

