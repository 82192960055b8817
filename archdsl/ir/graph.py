"""The graph IR: one class wrapping a networkx DiGraph.

Each node is one op producing one tensor. Node data stays small:
``op``, ``attrs``, ``inputs`` (the explicit operand order, since networkx keeps
none), ``shape`` (batch dimension ``"N"``), ``span`` (where the spec wrote it),
``scope`` (hierarchical name such as ``layer1.0.conv1``), ``params`` (local
name -> parameter name in :attr:`Graph.params`) and ``meta``.

Edges mirror ``inputs`` and are only edited through this class.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

import networkx as nx

from ..diagnostics import Span
from .params import Param

Shape = tuple  # ("N", C, H, W) etc.


@dataclass(slots=True)
class ScopeInfo:
    """What produced a scope: a block instance, a sequence or a topology construct."""
    kind: str                  # "block" | "seq" | "parallel" | "dense" | "residual" | "stn" | "model"
    name: str                  # the block's name for block instances, else the construct
    span: Span | None = None
    args: dict = field(default_factory=dict)


class Node:
    """A read-only view of one node; mutate through :class:`Graph`."""

    __slots__ = ("graph", "id")

    def __init__(self, graph: "Graph", id: int):
        self.graph = graph
        self.id = id

    def _d(self) -> dict:
        return self.graph._g.nodes[self.id]

    op = property(lambda self: self._d()["op"])
    attrs = property(lambda self: self._d()["attrs"])
    inputs = property(lambda self: self._d()["inputs"])
    shape = property(lambda self: self._d()["shape"])
    span = property(lambda self: self._d()["span"])
    scope = property(lambda self: self._d()["scope"])
    params = property(lambda self: self._d()["params"])
    meta = property(lambda self: self._d()["meta"])

    def param(self, local: str) -> Param:
        return self.graph.params[self.params[local]]

    def __repr__(self) -> str:
        return f"<Node %{self.id} {self.op} {self.scope}>"

    def __eq__(self, other) -> bool:
        return isinstance(other, Node) and other.graph is self.graph and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


class Graph:
    """A shape-annotated dataflow graph with owned parameters."""

    def __init__(self, name: str = "model"):
        self.name = name
        self._g = nx.DiGraph()
        self._next = 0
        self.inputs: list[int] = []          # node ids of the `input` nodes, in declaration order
        self.outputs: list[int] = []         # node ids, in output order
        self.params: dict[str, Param] = {}   # parameter and buffer name -> Param
        self.scopes: dict[str, ScopeInfo] = {}
        self.meta: dict = {}

    # ---- construction
    def add_node(self, op: str, inputs: Iterable[int] = (), *, attrs: dict | None = None,
                 shape: Shape = (), span: Span | None = None, scope: str = "",
                 params: dict | None = None, meta: dict | None = None) -> int:
        nid = self._next
        self._next += 1
        inputs = tuple(inputs)
        self._g.add_node(nid, op=op, attrs=attrs or {}, inputs=inputs, shape=tuple(shape),
                         span=span, scope=scope, params=params or {}, meta=meta or {})
        for src in inputs:
            self._g.add_edge(src, nid)
        return nid

    def add_param(self, param: Param) -> str:
        if param.name in self.params:
            raise ValueError(f"parameter {param.name!r} already exists")
        self.params[param.name] = param
        return param.name

    # ---- queries
    def node(self, nid: int) -> Node:
        return Node(self, nid)

    def __contains__(self, nid: int) -> bool:
        return nid in self._g

    def __len__(self) -> int:
        return self._g.number_of_nodes()

    def nodes(self) -> Iterator[Node]:
        """All nodes in a deterministic topological order (ties broken by id)."""
        for nid in nx.lexicographical_topological_sort(self._g):
            yield Node(self, nid)

    def node_ids(self) -> list[int]:
        return list(nx.lexicographical_topological_sort(self._g))

    def users(self, nid: int) -> list[int]:
        return sorted(self._g.successors(nid))

    def num_edges(self) -> int:
        return sum(len(d["inputs"]) for _, d in self._g.nodes(data=True))

    def data(self, nid: int) -> dict:
        return self._g.nodes[nid]

    @property
    def nx(self):
        """A read-only view of the underlying networkx graph (for analysis and drawing)."""
        return nx.graphviews.subgraph_view(self._g)

    # ---- mutation (the only ways to change edges)
    def set_inputs(self, nid: int, inputs: Iterable[int]) -> None:
        inputs = tuple(inputs)
        for src in set(self._g.nodes[nid]["inputs"]) - set(inputs):
            self._g.remove_edge(src, nid)
        for src in inputs:
            self._g.add_edge(src, nid)
        self._g.nodes[nid]["inputs"] = inputs

    def replace_all_uses(self, old: int, new: int) -> None:
        for user in list(self._g.successors(old)):
            self.set_inputs(user, (new if i == old else i for i in self._g.nodes[user]["inputs"]))
        self.outputs = [new if o == old else o for o in self.outputs]

    def remove_node(self, nid: int) -> None:
        if any(True for _ in self._g.successors(nid)) or nid in self.outputs:
            raise ValueError(f"node %{nid} still has users")
        for name in self._g.nodes[nid]["params"].values():
            if not any(name in d["params"].values() for n, d in self._g.nodes(data=True) if n != nid):
                self.params.pop(name, None)
        self._g.remove_node(nid)

    def update(self, nid: int, **fields) -> None:
        """Change node data other than inputs (``op``, ``attrs``, ``shape``, ``params``, ``meta``)."""
        if "inputs" in fields:
            raise ValueError("use set_inputs to change operands")
        self._g.nodes[nid].update(fields)

    # ---- whole-graph helpers
    def copy(self) -> "Graph":
        """A copy sharing nothing mutable with this graph (parameter arrays are copied lazily)."""
        g = Graph(self.name)
        g._g = nx.DiGraph()
        for nid, d in self._g.nodes(data=True):
            g._g.add_node(nid, **{**d, "attrs": dict(d["attrs"]), "params": dict(d["params"]),
                                  "meta": dict(d["meta"])})
        g._g.add_edges_from(self._g.edges)
        g._next = self._next
        g.inputs, g.outputs = list(self.inputs), list(self.outputs)
        g.params = {k: p.copy() for k, p in self.params.items()}
        g.scopes = {k: ScopeInfo(s.kind, s.name, s.span, dict(s.args)) for k, s in self.scopes.items()}
        g.meta = dict(self.meta)
        return g

    def param_count(self) -> int:
        return sum(p.numel for p in self.params.values() if p.trainable)
