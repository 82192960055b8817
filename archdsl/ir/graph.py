"""The graph IR: one class wrapping a networkx DiGraph, owning every edit.

Each node is one op producing one tensor. Node data stays small:
``op``, ``attrs``, ``inputs`` (the explicit operand order, since networkx keeps
none), the result's type (``shape`` with batch dimension ``"N"``, ``dtype`` and
``quant``), ``span`` (where the spec wrote it), ``scope`` (hierarchical name such
as ``layer1.0.conv1``), ``params`` (local name -> parameter name in
:attr:`Graph.params`) and ``meta``.

Edges mirror ``inputs`` and are only edited through this class. Besides the
primitive edits (``add_node``, ``set_inputs``, ``replace_all_uses``,
``remove_node``, ``update``) it offers the rewrites passes are made of, in the
manner of torch.fx: :meth:`Graph.insert_after`, :meth:`Graph.insert_before`,
:meth:`Graph.replace_with` (a node by a chain or a small subgraph) and
:meth:`Graph.resize_param`. They infer the new nodes' types from the op
registry, derive unique scopes from the node they extend, keep its span, and
raise :class:`~archdsl.diagnostics.IRError` on misuse.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

import networkx as nx
import numpy as np

from ..diagnostics import IRError, Span
from . import ops
from .params import Param
from .shape_rules import ShapeError
from .types import QuantParams, TensorType

Shape = tuple  # ("N", C, H, W) etc.


@dataclass(slots=True)
class ScopeInfo:
    """What produced a scope: a block instance, a sequence or a topology construct."""
    kind: str                  # "block" | "seq" | "parallel" | "dense" | "residual" | "stn" | "model"
    name: str                  # the block's name for block instances, else the construct
    span: Span | None = None
    args: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Operand:
    """In :meth:`Graph.replace_with`: the ``k``-th operand of the node being replaced."""
    k: int = 0


@dataclass
class NewNode:
    """One node of a replacement (:meth:`Graph.replace_with`).

    ``inputs`` holds :class:`Operand` (an operand of the replaced node) and ints
    (the index of an earlier node in the same replacement); ``None`` means the
    previous node of the list, or ``Operand(0)`` for the first, which makes a
    list of ``NewNode`` a chain. ``name`` is the local name under the replaced
    node's scope (default: the position, as a ``[...]`` sequence names its
    members). ``params`` gives values by local name; a parameter left out is
    initialised as a spec would initialise it.
    """
    op: str
    attrs: dict = field(default_factory=dict)
    inputs: tuple | None = None
    name: str | None = None
    params: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


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
    dtype = property(lambda self: self._d()["dtype"])
    quant = property(lambda self: self._d()["quant"])
    span = property(lambda self: self._d()["span"])
    scope = property(lambda self: self._d()["scope"])
    params = property(lambda self: self._d()["params"])
    meta = property(lambda self: self._d()["meta"])

    @property
    def type(self) -> TensorType:
        d = self._d()
        return TensorType(d["shape"], d["dtype"], d["quant"])

    def param(self, local: str) -> Param:
        return self.graph.params[self.params[local]]

    def __repr__(self) -> str:
        return f"<Node %{self.id} {self.op} {self.scope}>"

    def __eq__(self, other) -> bool:
        return isinstance(other, Node) and other.graph is self.graph and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


def _copy_value(v):
    """A copy of an attribute or meta value sharing no mutable container with ``v``."""
    if isinstance(v, dict):
        return {k: _copy_value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_copy_value(x) for x in v]
    if isinstance(v, tuple):
        return tuple(_copy_value(x) for x in v)
    return v


class Graph:
    """A typed dataflow graph with owned parameters."""

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
                 shape: Shape = (), dtype: str = "float32", quant: QuantParams | None = None,
                 span: Span | None = None, scope: str = "", params: dict | None = None,
                 meta: dict | None = None) -> int:
        nid = self._next
        self._next += 1
        inputs = tuple(inputs)
        for src in inputs:
            if src not in self._g:
                raise IRError(f"Cannot add a '{op}' node reading node %{src}, which does not exist.", span)
        self._g.add_node(nid, op=op, attrs=attrs or {}, inputs=inputs, shape=tuple(shape), dtype=dtype,
                         quant=quant, span=span, scope=scope, params=params or {}, meta=meta or {})
        for src in inputs:
            self._g.add_edge(src, nid)
        return nid

    def add_param(self, param: Param) -> str:
        if param.name in self.params:
            raise IRError(f"Cannot add the parameter {param.name}: a parameter of that name already exists.")
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
        for nid in self.node_ids():
            yield Node(self, nid)

    def node_ids(self) -> list[int]:
        try:
            return list(nx.lexicographical_topological_sort(self._g))
        except nx.NetworkXUnfeasible:
            cycle = [u for u, _ in nx.find_cycle(self._g)]
            names = " -> ".join(f"@{self._g.nodes[u]['scope'] or '%' + str(u)}" for u in cycle + cycle[:1])
            raise IRError(f"The graph has a cycle ({names}); a dataflow graph must be acyclic.",
                          self._g.nodes[cycle[0]]["span"]) from None

    def users(self, nid: int) -> list[int]:
        return sorted(self._g.successors(nid))

    def num_edges(self) -> int:
        return sum(len(d["inputs"]) for _, d in self._g.nodes(data=True))

    def data(self, nid: int) -> dict:
        return self._g.nodes[nid]

    def type_of(self, nid: int) -> TensorType:
        d = self._g.nodes[nid]
        return TensorType(d["shape"], d["dtype"], d["quant"])

    def by_scope(self, scope: str) -> int | None:
        """The id of the node named ``scope`` (None if no node has that scope)."""
        return next((n for n, d in self._g.nodes(data=True) if d["scope"] == scope and d["op"] != "input"), None)

    @property
    def nx(self):
        """A read-only view of the underlying networkx graph (for analysis and drawing)."""
        return nx.graphviews.subgraph_view(self._g)

    # ---- primitive edits (the only ways to change edges)
    def set_inputs(self, nid: int, inputs: Iterable[int]) -> None:
        inputs = tuple(inputs)
        for src in inputs:
            if src not in self._g:
                raise IRError(f"Cannot make node %{nid} read node %{src}, which does not exist.")
        for src in set(self._g.nodes[nid]["inputs"]) - set(inputs):
            self._g.remove_edge(src, nid)
        for src in inputs:
            self._g.add_edge(src, nid)
        self._g.nodes[nid]["inputs"] = inputs

    def replace_all_uses(self, old: int, new: int, *, keep: Iterable[int] = ()) -> None:
        """Every use of ``old`` (operands and model outputs) now uses ``new``.

        ``new`` itself and the nodes in ``keep`` go on reading ``old``, so a node
        inserted after ``old`` is never wired to itself.
        """
        if old == new:
            return
        spared = {new, *keep}
        for user in list(self._g.successors(old)):
            if user not in spared:
                self.set_inputs(user, (new if i == old else i for i in self._g.nodes[user]["inputs"]))
        self.outputs = [new if o == old else o for o in self.outputs]

    def remove_node(self, nid: int) -> None:
        users = list(self._g.successors(nid))
        if users or nid in self.outputs:
            what = f"@{self._g.nodes[users[0]]['scope']}" if users else "a model output"
            raise IRError(f"Cannot remove node @{self._g.nodes[nid]['scope'] or '%' + str(nid)}: it is still used "
                          f"by {what}.", self._g.nodes[nid]["span"])
        mine = set(self._g.nodes[nid]["params"].values())
        if mine:
            for n, d in self._g.nodes(data=True):
                if n != nid:
                    mine -= set(d["params"].values())
            for name in mine:
                self.params.pop(name, None)
        self._g.remove_node(nid)

    def update(self, nid: int, **fields) -> None:
        """Change node data other than inputs (``op``, ``attrs``, type fields, ``params``, ``meta``...)."""
        if "inputs" in fields:
            raise IRError("Use set_inputs to change a node's operands; update() changes the other fields.")
        unknown = set(fields) - {"op", "attrs", "shape", "dtype", "quant", "span", "scope", "params", "meta"}
        if unknown:
            raise IRError(f"A node has no field {sorted(unknown)[0]!r}; the fields are op, attrs, shape, dtype, "
                          "quant, span, scope, params and meta.")
        self._g.nodes[nid].update(fields)

    # ---- rewrites
    def infer_node(self, op: str, attrs: dict, inputs: Iterable[int], span: Span | None = None) -> TensorType:
        """The type a node ``op[attrs](inputs)`` would have; IRError (at ``span``) when the op refuses it."""
        opdef = ops.get(op)
        if opdef is None or not opdef.infer:
            raise IRError(f"There is no op '{op}' in the registry.", span)
        try:
            return ops.infer_type(op, attrs, [self.type_of(i) for i in inputs])
        except ShapeError as err:
            raise IRError(str(err), span) from None

    def scope_free(self, scope: str, ignore: Iterable[int] = ()) -> bool:
        """Whether a new node may be named ``scope``: no node has it, extends it, or is a prefix of it."""
        if not scope:
            return False
        ignore = set(ignore)
        prefixes = {scope[:i] for i, c in enumerate(scope) if c == "."}
        for n, d in self._g.nodes(data=True):
            s = d["scope"]
            if n in ignore or d["op"] == "input":
                continue
            if s == scope or s.startswith(scope + ".") or s in prefixes:
                return False
        return scope not in self.scopes

    def fresh_scope(self, want: str, ignore: Iterable[int] = ()) -> str:
        """``want``, or ``want_1``, ``want_2``... : the first that :meth:`scope_free` allows."""
        ignore = tuple(ignore)
        name, k = want, 0
        while not self.scope_free(name, ignore):
            k += 1
            name = f"{want}_{k}"
        return name

    def _make_node(self, op: str, attrs: dict, inputs: tuple, scope: str, span, values: dict, meta: dict,
                   seed: int) -> int:
        attrs = ops.complete_attrs(op, attrs, span)
        t = self.infer_node(op, attrs, inputs, span)
        specs = ops.param_specs(op, attrs, [self._g.nodes[i]["shape"] for i in inputs])
        unknown = set(values) - set(specs)
        if unknown:
            raise IRError(f"'{op}' has no parameter '{sorted(unknown)[0]}'; it has "
                          f"{', '.join(sorted(specs)) or 'none'}.", span)
        params = {}
        for local, spec in specs.items():
            pname = ops.param_name(op, scope, local)
            p = Param(pname, spec.shape, spec.init, spec.fan_in, spec.fan_out, spec.trainable, spec.dtype, seed)
            if local in values:
                try:
                    p.value = values[local]
                except ValueError as err:
                    raise IRError(f"The values given for {pname} do not fit: {err}.", span) from None
            self.add_param(p)
            params[local] = pname
        return self.add_node(op, inputs, attrs=attrs, shape=t.shape, dtype=t.dtype, quant=t.quant, span=span,
                             scope=scope, params=params, meta=meta)

    def _seed(self) -> int:
        return next((p.seed for p in self.params.values()), 0)

    def insert_after(self, nid: int, op: str, attrs: dict | None = None, *, name: str | None = None,
                     extra_inputs: Iterable[int] = (), params: dict | None = None, meta: dict | None = None) -> int:
        """A new node ``op(nid, *extra_inputs)`` that takes over every use of ``nid``; returns its id.

        Its scope is ``name`` (default: the anchor's scope with ``_op`` appended), made
        unique; its span is the anchor's.
        """
        d = self._g.nodes[nid]
        want = name or (f"{d['scope']}_{op}" if d["scope"] else (d["attrs"].get("name") or op) + f"_{op}")
        scope = self.fresh_scope(want)
        new = self._make_node(op, attrs or {}, (nid, *extra_inputs), scope, d["span"], params or {}, meta or {},
                              self._seed())
        self.replace_all_uses(nid, new)
        return new

    def insert_before(self, nid: int, op: str, attrs: dict | None = None, *, operand: int = 0,
                      name: str | None = None, params: dict | None = None, meta: dict | None = None) -> int:
        """A new node on operand ``operand`` of ``nid`` (only that use); returns its id."""
        d = self._g.nodes[nid]
        if not 0 <= operand < len(d["inputs"]):
            raise IRError(f"Node @{d['scope']} has {len(d['inputs'])} operands; there is no operand {operand}.",
                          d["span"])
        src = d["inputs"][operand]
        scope = self.fresh_scope(name or f"{d['scope']}_{op}")
        new = self._make_node(op, attrs or {}, (src,), scope, d["span"], params or {}, meta or {}, self._seed())
        inputs = list(d["inputs"])
        inputs[operand] = new
        self.set_inputs(nid, inputs)
        return new

    def replace_with(self, nid: int, nodes: list[NewNode], output: int = -1) -> list[int]:
        """Replace ``nid`` by ``nodes`` (a chain, or a small subgraph); ``nodes[output]`` takes over its uses.

        The new nodes are named under the replaced node's scope (``features.3`` by
        ``features.3.0``, ``features.3.1``...), which becomes a ``seq`` scope, and keep
        its span. The replaced node and its parameters are removed. Returns the new ids.
        """
        d = self._g.nodes[nid]
        if not nodes:
            raise IRError(f"Cannot replace @{d['scope']} by nothing; give at least one node.", d["span"])
        operands = d["inputs"]
        names = [n.name if n.name is not None else str(k) for k, n in enumerate(nodes)]
        if len(set(names)) != len(names):
            raise IRError(f"The nodes replacing @{d['scope']} need distinct names, but got {names}.", d["span"])
        base = d["scope"]
        single = len(nodes) == 1 and nodes[0].name is None
        scopes = [base] if single else [f"{base}.{n}" for n in names]
        for s in scopes:
            if not self.scope_free(s, ignore=(nid,)):
                raise IRError(f"Cannot name a new node @{s}: that scope is taken.", d["span"])
        # the old node's parameter names may be reused by the replacement: move them aside first
        saved = {pname: self.params.pop(pname) for pname in d["params"].values() if pname in self.params}
        made: list[int] = []
        try:
            for k, spec in enumerate(nodes):
                refs = spec.inputs if spec.inputs is not None else ((Operand(0),) if k == 0 else (k - 1,))
                ins = []
                for r in refs:
                    if isinstance(r, Operand):
                        if not 0 <= r.k < len(operands):
                            raise IRError(f"@{base} has {len(operands)} operands; there is no operand {r.k}.",
                                          d["span"])
                        ins.append(operands[r.k])
                    elif isinstance(r, int) and 0 <= r < k:
                        ins.append(made[r])
                    else:
                        raise IRError(f"Replacement node {k} of @{base} reads {r!r}; it may read an Operand of "
                                      "the replaced node or an earlier replacement node.", d["span"])
                made.append(self._make_node(spec.op, spec.attrs, tuple(ins), scopes[k], d["span"], spec.params,
                                            spec.meta, self._seed()))
        except IRError:            # undo: the graph is as it was
            for m in reversed(made):
                for pname in self._g.nodes[m]["params"].values():
                    self.params.pop(pname, None)
                self._g.remove_node(m)
            self.params.update(saved)
            raise
        self.replace_all_uses(nid, made[output])
        self._g.remove_node(nid)
        if not single:
            self.scopes.setdefault(base, ScopeInfo("seq", "seq", d["span"], {}))
        return made

    def resize_param(self, name: str, axis: int, indices) -> Param:
        """Keep only ``indices`` (in that order) of parameter ``name`` along ``axis``; returns the new Param.

        The values are sliced from the current ones (a lazily initialised parameter
        is materialised first, never re-drawn at its new shape). Node attributes and
        types are not touched: update them, then re-infer (``verify.infer_types``).
        """
        p = self.params.get(name)
        if p is None:
            raise IRError(f"There is no parameter {name} to resize.")
        if not -len(p.shape) <= axis < len(p.shape):
            raise IRError(f"Parameter {name} has {len(p.shape)} dimensions; it has no axis {axis}.")
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        size = p.shape[axis]
        if idx.size and (idx.min() < -size or idx.max() >= size):
            raise IRError(f"Cannot keep indices {idx.min()}..{idx.max()} of axis {axis} of {name}, which has "
                          f"{size} entries.")
        new = p.resized(np.take(p.value, idx, axis=axis))
        self.params[name] = new
        return new

    # ---- whole-graph helpers
    def copy(self) -> "Graph":
        """A copy sharing nothing mutable with this graph; parameter arrays are shared copy-on-write."""
        g = Graph(self.name)
        g._g = nx.DiGraph()
        for nid, d in self._g.nodes(data=True):
            g._g.add_node(nid, **{**d, "attrs": _copy_value(d["attrs"]), "params": dict(d["params"]),
                                  "meta": _copy_value(d["meta"])})
        g._g.add_edges_from(self._g.edges)
        g._next = self._next
        g.inputs, g.outputs = list(self.inputs), list(self.outputs)
        g.params = {k: p.copy() for k, p in self.params.items()}
        g.scopes = {k: ScopeInfo(s.kind, s.name, s.span, _copy_value(s.args)) for k, s in self.scopes.items()}
        g.meta = _copy_value(self.meta)
        return g

    def param_count(self) -> int:
        return sum(p.numel for p in self.params.values() if p.trainable)
