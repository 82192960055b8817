"""Verification and type re-inference of a graph (run after every pass and on every loaded IR).

Type inference is an interpreter, as torch.fx's ShapeProp: a topological walk
over the op registry's rules (:func:`archdsl.ir.ops.infer_type`: the shape rule
and the type rule). :func:`verify` checks every invariant docs/ir.md states and
raises :class:`~archdsl.diagnostics.IRError` (an ArchError, located at the node)
at the first one broken; it never lets a networkx or Python exception through.
"""
from __future__ import annotations

import networkx as nx

from ..diagnostics import IRError
from . import ops
from .graph import Graph
from .shape_rules import ShapeError, fmt
from .types import TensorType, check_dtype


def _at(d: dict, nid: int) -> str:
    return f"@{d['scope']}" if d["scope"] else f"%{nid}"


def infer_types(graph: Graph, update: bool = False) -> dict[int, TensorType]:
    """Recompute every node's type from the inputs; return them (and store them if ``update``)."""
    types: dict[int, TensorType] = {}
    for n in graph.nodes():
        d = graph.data(n.id)
        opdef = ops.get(d["op"])
        if opdef is None or opdef.infer is None:
            raise IRError(f"No shape rule is registered for op '{d['op']}' (node {_at(d, n.id)}).", d["span"])
        if d["op"] == "input":
            t = TensorType(tuple(d["shape"]), d["dtype"], d["quant"])
        else:
            try:
                t = ops.infer_type(d["op"], d["attrs"], [types[i] for i in d["inputs"]])
            except ShapeError as err:
                raise IRError(str(err), d["span"]) from None
            except Exception as err:  # noqa: BLE001 - a rule meeting attributes a pass broke
                raise IRError(f"Node {_at(d, n.id)} ({d['op']}) cannot be typed: its attributes are malformed "
                              f"({type(err).__name__}: {err}).", d["span"]) from None
        types[n.id] = t
        if update:
            graph.update(n.id, shape=t.shape, dtype=t.dtype, quant=t.quant)
    return types


def infer_shapes(graph: Graph, update: bool = False) -> dict[int, tuple]:
    """The shapes of :func:`infer_types` (kept for callers that need only shapes)."""
    return {nid: t.shape for nid, t in infer_types(graph, update).items()}


def verify(graph: Graph) -> None:
    """Check every IR invariant; raise IRError on the first problem."""
    _structure(graph)
    _names(graph)
    types = infer_types(graph)
    _types_and_params(graph, types)


def _structure(graph: Graph) -> None:
    g = graph._g
    for nid, d in g.nodes(data=True):
        if set(g.predecessors(nid)) != set(d["inputs"]):
            raise IRError(f"Node {_at(d, nid)} ({d['op']}) has edges {sorted(g.predecessors(nid))} that disagree "
                          f"with its operands {list(d['inputs'])}.", d["span"])
        opdef = ops.get(d["op"])
        if opdef is None:
            raise IRError(f"Node {_at(d, nid)} has the unknown op '{d['op']}'.", d["span"])
        if opdef.arity is not None and len(d["inputs"]) != opdef.arity:
            raise IRError(f"Node {_at(d, nid)} ({d['op']}) has {len(d['inputs'])} operands; '{d['op']}' takes "
                          f"{opdef.arity}.", d["span"])
        if opdef.arity is None and not d["inputs"]:
            raise IRError(f"Node {_at(d, nid)} ({d['op']}) has no operands; it needs at least one.", d["span"])
    for what, ids in (("input", graph.inputs), ("output", graph.outputs)):
        for nid in ids:
            if nid not in g:
                raise IRError(f"The graph names node %{nid} as an {what}, but it does not exist.")
    if not graph.outputs:
        raise IRError("The graph has no outputs.")
    declared = set(graph.inputs)
    for nid, d in g.nodes(data=True):
        if (d["op"] == "input") != (nid in declared):
            raise IRError(f"Node {_at(d, nid)} is an 'input' node that the graph does not list as an input, or "
                          "a listed input that is not an 'input' node.", d["span"])
    if len(declared) != len(graph.inputs):
        raise IRError("The graph lists one of its inputs twice.")
    if not nx.is_directed_acyclic_graph(g):
        graph.node_ids()            # raises the IRError naming the cycle


def _names(graph: Graph) -> None:
    """Scopes unique and prefix-free; every parameter named ``scope.local`` and owned by one node."""
    owner: dict[str, int] = {}
    scopes: dict[str, int] = {}
    g = graph._g
    for nid, d in g.nodes(data=True):
        if d["op"] == "input":
            if d["params"]:
                raise IRError(f"Input node %{nid} has parameters; inputs have none.", d["span"])
            continue
        scope = d["scope"]
        if not scope or not isinstance(scope, str):
            raise IRError(f"Node %{nid} ({d['op']}) has no scope; every op node is named.", d["span"])
        if scope in scopes:
            raise IRError(f"Two nodes are named @{scope} (a {g.nodes[scopes[scope]]['op']} and a {d['op']}); "
                          "scopes must be unique, so give the new node a fresh one (Graph.fresh_scope).",
                          d["span"])
        scopes[scope] = nid
        for local, pname in d["params"].items():
            want = ops.param_name(d["op"], scope, local)
            if pname != want:
                how = "the node's scope itself (its bare parameter)" if want == scope else \
                    "the node's scope and the local name"
                raise IRError(f"Node @{scope} ({d['op']}) names its parameter '{local}' {pname}; it must be "
                              f"{want}, {how}.", d["span"])
            if pname in owner:
                raise IRError(f"Parameter {pname} is used by @{g.nodes[owner[pname]]['scope']} and by @{scope}; "
                              "every parameter belongs to one node.", d["span"])
            owner[pname] = nid
    for scope, nid in scopes.items():
        parts = scope.split(".")
        for k in range(1, len(parts)):
            prefix = ".".join(parts[:k])
            if prefix in scopes:
                d = g.nodes[nid]
                raise IRError(f"Node @{prefix} is also the scope around node @{scope}; a scope names either one op "
                              "or the scope that contains others, so rename one of them.", d["span"])
    for path in graph.scopes:
        if path in scopes:
            d = g.nodes[scopes[path]]
            raise IRError(f"@{path} is both a node and a {graph.scopes[path].kind} scope.", d["span"])
    unused = sorted(set(graph.params) - set(owner))
    if unused:
        raise IRError(f"Parameter {unused[0]} belongs to no node; remove it or give it to the node it belongs to.")
    for name, p in graph.params.items():
        if p.name != name:
            raise IRError(f"Parameter {name} is stored under that name but calls itself {p.name}.")


def _types_and_params(graph: Graph, types: dict[int, TensorType]) -> None:
    g = graph._g
    for nid in graph.node_ids():
        d = g.nodes[nid]
        problem = check_dtype(d["dtype"])
        if problem:
            raise IRError(f"Node {_at(d, nid)} ({d['op']}) records a bad dtype: {problem}.", d["span"])
        t = types[nid]
        if tuple(d["shape"]) != t.shape:
            raise IRError(f"Node {_at(d, nid)} ({d['op']}) records shape {fmt(d['shape'])} but its inputs give "
                          f"{fmt(t.shape)}.", d["span"])
        if d["dtype"] != t.dtype or d["quant"] != t.quant:
            raise IRError(f"Node {_at(d, nid)} ({d['op']}) records type "
                          f"{TensorType(t.shape, d['dtype'], d['quant'])} but its inputs give {t}.", d["span"])
        if d["quant"] is not None:
            problem = d["quant"].problem(d["dtype"], d["shape"])
            if problem:
                raise IRError(f"Node {_at(d, nid)} ({d['op']}) has unusable quantisation: {problem}.", d["span"])
        if d["op"] == "input":
            continue
        opdef = ops.get(d["op"])
        for arg in opdef.args:
            if arg.name not in d["attrs"]:
                raise IRError(f"Node @{d['scope']} ({d['op']}) lacks the attribute '{arg.name}'.", d["span"])
            if not ops.attr_ok(arg.kind, d["attrs"][arg.name]):
                value = d["attrs"][arg.name]
                what = "NaN" if isinstance(value, float) and value != value else f"not {arg.kind}"
                raise IRError(f"Node @{d['scope']} ({d['op']}) has attribute {arg.name}={value!r}, which is "
                              f"{what}.", d["span"])
        extra = sorted(set(d["attrs"]) - {a.name for a in opdef.args})
        if extra:
            raise IRError(f"Node @{d['scope']} ({d['op']}) has the attribute '{extra[0]}', which '{d['op']}' does "
                          "not take.", d["span"])
        specs = ops.param_specs(d["op"], d["attrs"], [types[i].shape for i in d["inputs"]])
        if set(specs) != set(d["params"]):
            raise IRError(f"Node @{d['scope']} ({d['op']}) has parameters {sorted(d['params'])}, expected "
                          f"{sorted(specs)}.", d["span"])
        for local, spec in specs.items():
            p = graph.params.get(d["params"][local])
            if p is None:
                raise IRError(f"Parameter {d['params'][local]} of @{d['scope']} is missing from the graph.",
                              d["span"])
            if tuple(p.shape) != tuple(spec.shape):
                raise IRError(f"Parameter {p.name} has shape {fmt(p.shape)}; the op needs {fmt(spec.shape)}.",
                              d["span"])
            if p.dtype != spec.dtype:
                raise IRError(f"Parameter {p.name} is {p.dtype}; '{d['op']}' needs {spec.dtype}.", d["span"])
