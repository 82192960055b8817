"""The graph IR written back as a readable ``.arch`` spec (``archc opt --emit arch``, ``--target arch``).

A pass that changes widths (structured pruning) or removes layers leaves a graph
that no spec describes any more; :func:`emit_arch` writes one that does. The spec
loads (``archdsl.load``) to the same graph: the same ops, attributes, shapes,
operand order, inputs and outputs, and the same scope of every node, hence the
same parameter names and shapes, so the graph's weights load into it by name.

How the text is recovered from the IR:

* **Scopes give the structure.** ``graph.scopes`` says which name prefixes are
  block instances, ``[...]`` sequences or labelled constructs. A sequence and a
  labelled construct are written inline (``layer1: [...]``, ``transformer: stn {...}``);
  a block instance is a call of a block definition.
* **Blocks are kept where their instances share a body.** The instances of one
  block definition (``ScopeInfo.name``) are grouped by their body with every
  number taken out; each group becomes one ``block`` whose numbers that differ
  between instances are its parameters (named after the definition's own
  arguments where the values agree with them, such as ``planes`` and ``stride``,
  or ``planes * 4``; else ``<layer>_<attribute>``), and each call site passes its
  instance's values. Instances that differ only by the presence of a residual
  shortcut share one block with a flag (``shortcut if downsample { ... }``).
  Other differences give one block per body (``basic``, ``basic_2``...).
* **Constructs.** The merge nodes that carry ``meta["construct"]`` (``residual``,
  ``parallel``, ``dense``) and the three nodes of a spatial transformer are
  written as the construct when the graph around them still has its shape (paths
  that are chains used by nothing else, in creation order); otherwise the data
  flow is written out with named tensors and explicit merges
  (``(a, b) -> add``), which the language allows for any DAG.
* **Names.** A labelled layer keeps its label; a label the grammar cannot lex as
  a name (a keyword such as ``model``, or ``café``) is written as a computed label
  (``mode{"l"}:``). A layer named by position is written unlabelled at that
  position; where a pass removed layers before it, an empty sequence
  ``[identity for _ in []]`` holds each missing place, so later positions (and
  parameter names) are kept. A name no label can produce (``a-b``, ``0_tap``, a
  number below its position) is replaced by a valid one: :class:`ArchSpec` lists
  these renames, and the spec's header says so.

The result is deterministic (the same graph gives the same bytes) and in the
canonical layout of ``archc fmt``. Graphs that no spec can make (quantised or
integer tensors, the pass-only ops ``quantize``, ``dequantize`` and ``cast``) are
refused with an :class:`ArchError`.

Differences that remain after a round trip (``ScopeInfo`` only, never nodes or
parameters): the arguments recorded for block instances and the model are those
of the written spec; a block whose instances split gets suffixed definitions
(``basic_2``); the empty sequences that hold places add ``seq`` scopes; spans
point into the written spec.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..diagnostics import ArchError
from ..frontend.values import BUILTINS
from ..ir import ops as registry
from ..ir.graph import Graph
from ..ir.printer import print_graph

KEYWORDS = frozenset("import as block model input output if elif else for in assert parallel dense residual "
                     "shortcut stn true false none not and or".split())
_NAME = re.compile(r"[A-Za-z_][A-Za-z_0-9]*\Z")
_NAME_PREFIX = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
IDENTITY_AFFINE = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
GAP_TEXT = "[identity for _ in []]"
# the factors tried for `a * k` and `a // k` (a block's widths and paddings are such multiples; wider
# searches find coincidences such as `padding=c // 9`)
_TIMES = (2, 3, 4, 6, 8)
_DIVIDED = (2, 4)


@dataclass
class ArchSpec:
    """What :func:`emit_arch_spec` wrote: the spec text, the scopes it had to rename, and notes.

    ``renames`` maps an original scope path (of a layer or scope) to the path the
    spec gives it; parameter names under it change accordingly (:meth:`param_name`).
    ``notes`` lists what the spec does not reproduce exactly (a dropped empty scope,
    a renamed input).
    """
    text: str
    model: str
    renames: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def scope_name(self, scope: str) -> str:
        """The path ``scope`` of the original graph has in the written spec."""
        if not self.renames or not scope:
            return scope
        best = max((old for old in self.renames if scope == old or scope.startswith(old + ".")), key=len,
                   default=None)
        return scope if best is None else self.renames[best] + scope[len(best):]

    def param_name(self, name: str) -> str:
        """The name parameter ``name`` of the original graph has in the written spec."""
        scope, _, local = name.rpartition(".")
        return f"{self.scope_name(scope)}.{local}" if scope else name


# ---- small helpers -------------------------------------------------------------------------

class _Missing:
    """A value an instance does not have (a part of the body it lacks)."""
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


@dataclass(eq=False)
class Hole:
    """A number in a block body that may differ between instances."""
    value: object
    kind: str          # "int" | "float" | "bool"
    hint: str          # how a parameter for it would be named
    pair: bool = False # a pair attribute (k, k), written as k


@dataclass(frozen=True)
class Lit:
    """A structural literal (a bool, a string, a list of initial values, none)."""
    value: object

    @property
    def key(self):
        v = self.value
        return ("list", tuple(v)) if isinstance(v, (list, tuple)) else (type(v).__name__, v)


def _same(a, b) -> bool:
    return type(a) is type(b) and a == b


def _float_text(v: float) -> str:
    if not math.isfinite(v):
        raise ArchError(f"The value {v} cannot be written in a spec: the language has no infinite or NaN numbers.")
    text = repr(float(v))
    if "e" in text:
        mantissa, exp = text.split("e")
        return f"{mantissa}e{int(exp)}"
    return text


def _string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


def _text(v) -> str:
    """A value as the spec writes it."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _float_text(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_text(x) for x in v) + "]"
    raise ArchError(f"The value {v!r} cannot be written in a spec.")


def _kind(v) -> str:
    return "bool" if isinstance(v, bool) else "int" if isinstance(v, int) else "float"


def _is_position(name: str) -> bool:
    return name.isdigit() and name.isascii() and str(int(name)) == name


def _suffix_ok(s: str) -> bool:
    return bool(s) and all(c.isalnum() or c == "_" for c in s)


def label_text(name: str) -> str | None:
    """The label (without ``:``) that makes a layer named ``name``, or None where none can.

    A plain name is written as it is; a keyword or a name with letters beyond ASCII
    as a computed label ``prefix{"rest"}``, whose suffix may hold any letters, digits
    and ``_`` (the elaborator's rule).
    """
    if not name:
        return None
    if _NAME.match(name) and name not in KEYWORDS:
        return name
    m = _NAME_PREFIX.match(name)
    if m is None:
        return None
    prefix = m.group(0)
    if prefix in KEYWORDS or len(prefix) == len(name):
        prefix = prefix[:1] if len(prefix) > 1 or len(name) > 1 else prefix
    rest = name[len(prefix):]
    if not _suffix_ok(rest) or not _NAME.match(prefix) or prefix in KEYWORDS:
        return None
    return f"{prefix}{{{_string(rest)}}}"


def _identifier(text: str, fallback: str = "v") -> str:
    """``text`` made a valid name: other characters become ``_``, a leading digit gets a prefix."""
    out = re.sub(r"[^A-Za-z0-9_]", "_", text)
    if not out:
        out = fallback
    if out[0].isdigit():
        out = fallback + out
    return out


def _unique(want: str, taken, avoid=()) -> str:
    name, k = want, 1
    while name in taken or name in avoid or name in KEYWORDS:
        k += 1
        name = f"{want}_{k}"
    return name


# ---- the structure recovered from the IR -----------------------------------------------------

class _Region:
    """A scope of the graph: the model, a block instance, a sequence or a labelled construct."""

    def __init__(self, path: str, info):
        self.path = path
        self.info = info
        self.kind = info.kind if info is not None else "seq"
        self.name = info.name if info is not None else "seq"
        self.local = path.rsplit(".", 1)[-1] if path else ""
        self.children: list[_Child] = []
        self.nodes: list[int] = []
        self.nodeset: set = set()
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self.first = -1
        self.tree = None          # block and model regions: the body


class _Child:
    """A direct member of a region: one node or one sub-region, with its label and the places before it."""

    def __init__(self, local: str, first: int, node: int | None = None, region: _Region | None = None):
        self.local = local
        self.first = first
        self.node = node
        self.region = region
        self.label: str | None = None
        self.gaps = 0


@dataclass(eq=False)
class _Unit:
    """A piece of a region's data flow that is one layer of a chain: an op, a call, a construct..."""
    kind: str                  # op call seq res par dense stn input
    inputs: list
    outputs: list
    first: int
    nodes: set
    child: _Child | None = None
    parts: dict = field(default_factory=dict)
    label: str | None = None   # constructs and sequences: their label
    gaps: int = 0              # places to hold before the layer


class _Stmt:
    def __init__(self, source, units, result):
        self.source = list(source)
        self.units = list(units)
        self.result = list(result)
        self.input = None     # an input statement: the tensor


# ---- the writer ---------------------------------------------------------------------------------

class _Writer:
    def __init__(self, graph: Graph):
        from ..ir.verify import verify
        verify(graph)
        self.g = graph
        self.order = graph.node_ids()
        self.P = {n: i for i, n in enumerate(self.order)}
        self.users = {n: graph.users(n) for n in self.order}
        self.gouts = set(graph.outputs)
        self.notes: list[str] = []
        self.renames: dict[str, str] = {}
        self.all_vars: set = set()
        self.stn_regs: set = set()      # the regression layers of recognised spatial transformers
        self._check_nodes()
        self._regions()

    # ---- what a spec can say
    def _check_nodes(self) -> None:
        for n in self.order:
            d = self.g.data(n)
            where = f"@{d['scope']}" if d["scope"] else f"input '{d['attrs'].get('name')}'"
            if d["dtype"] != "float32" or d["quant"] is not None:
                raise ArchError(f"Node {where} is {d['dtype']}{' quantised' if d['quant'] else ''}; a spec makes "
                                "float32 tensors only, so this graph cannot be written as a spec.", d["span"])
            opdef = registry.get(d["op"])
            if d["op"] != "input" and (opdef is None or not opdef.in_specs):
                raise ArchError(f"Node {where} is a '{d['op']}', an op that passes make and specs cannot call; "
                                "this graph cannot be written as a spec.", d["span"])

    # ---- scopes, children, positions
    def _regions(self) -> None:
        g = self.g
        self.regions: dict[str, _Region] = {"": _Region("", g.scopes.get(""))}
        self.regions[""].kind = "model"
        for path, info in g.scopes.items():
            if path:
                self.regions[path] = _Region(path, info)
        for path in list(self.regions):
            self._region(path.rsplit(".", 1)[0] if "." in path else "")
        for n in self.order:
            d = g.data(n)
            if d["op"] == "input":
                continue
            parts = d["scope"].split(".")
            for i in range(len(parts)):
                r = self._region(".".join(parts[:i]))
                r.nodes.append(n)
        for r in self.regions.values():
            r.nodeset = set(r.nodes)
            r.first = self.P[r.nodes[0]] if r.nodes else -1
        empty = []
        for path, r in self.regions.items():
            if not path:
                continue
            parent = self.regions[path.rsplit(".", 1)[0] if "." in path else ""]
            if r.nodes:
                parent.children.append(_Child(r.local, r.first, region=r))
            else:
                empty.append(r)
        for n in self.order:
            d = g.data(n)
            if d["op"] == "input":
                continue
            scope = d["scope"]
            parent = self.regions[scope.rsplit(".", 1)[0] if "." in scope else ""]
            parent.children.append(_Child(scope.rsplit(".", 1)[-1], self.P[n], node=n))
        held = set()
        for r in self.regions.values():
            r.children.sort(key=lambda c: c.first)
            held |= self._number(r)
            if r.nodes:
                self._interface(r)
        for r in empty:
            if r.path not in held or r.kind != "seq":
                self.notes.append(f"the empty {r.kind} scope @{r.path} is not written")

    def _region(self, path: str) -> _Region:
        r = self.regions.get(path)
        if r is None:
            r = self.regions[path] = _Region(path, None)
            if path:
                self.notes.append(f"@{path} has no scope information; it is written as a sequence")
            self._region(path.rsplit(".", 1)[0] if "." in path else "")
        return r

    def _number(self, r: _Region) -> set:
        """Labels and held places of ``r``'s children; returns the paths of the places held."""
        counter, held = 0, set()
        taken = {c.local for c in r.children}
        for c in r.children:
            if _is_position(c.local):
                k = int(c.local)
                if k >= counter:
                    c.gaps = k - counter
                    held |= {f"{r.path}.{i}" if r.path else str(i) for i in range(counter, k)}
                    counter = k + 1
                    continue
                new = _unique("_" + c.local, taken)
            else:
                text = label_text(c.local)
                if text is not None:
                    c.label = text
                    counter += 1
                    continue
                new = _unique(_identifier(c.local, "_"), taken)
            taken.add(new)
            self.renames[f"{r.path}.{c.local}" if r.path else c.local] = new
            c.label = label_text(new)
            counter += 1
        return held

    def _interface(self, r: _Region) -> None:
        seen = []
        for n in r.nodes:
            for i in self.g.data(n)["inputs"]:
                if i not in r.nodeset and i not in seen:
                    seen.append(i)
        r.inputs = seen
        r.outputs = [n for n in r.nodes if self._escapes(n, r)]
        if not r.outputs:          # nothing reads the region's result: it still gives one
            r.outputs = [n for n in r.nodes if not self.users[n]]

    def _escapes(self, t: int, r: _Region) -> bool:
        return t in self.gouts or any(u not in r.nodeset for u in self.users[t])

    # ---- units and constructs
    def _units(self, r: _Region) -> list[_Unit]:
        us = []
        for c in r.children:
            if c.node is not None:
                d = self.g.data(c.node)
                us.append(_Unit("op", list(d["inputs"]), [c.node], c.first, {c.node}, child=c, gaps=c.gaps))
            else:
                us.append(self._subregion(c))
        self._constructs(r, us)
        return us

    def _subregion(self, c: _Child) -> _Unit:
        sub = c.region
        if sub.kind == "block":
            self._pending.append(sub)
            return _Unit("call", list(sub.inputs), list(sub.outputs), c.first, sub.nodeset, child=c, gaps=c.gaps)
        inner = self._units(sub)
        unit = None
        if sub.kind == "seq":
            unit = self._as_seq(sub, inner)
        elif sub.kind in ("residual", "parallel", "dense", "stn"):
            code = {"residual": "res", "parallel": "par", "dense": "dense", "stn": "stn"}[sub.kind]
            if len(inner) == 1 and inner[0].kind == code and inner[0].label is None:
                unit = inner[0]
            elif sub.kind == "parallel" and self._chain_ok(inner, sub):
                unit = _Unit("par", list(inner[0].inputs), list(inner[-1].outputs), inner[0].first, sub.nodeset,
                             parts={"branches": [inner], "merge": None, "op": "concat"})
            if unit is not None and (unit.inputs != sub.inputs or not set(sub.outputs) <= set(unit.outputs)):
                unit = None
        if unit is None:
            # what the language cannot say inline becomes a block of its own
            self.notes.append(f"the {sub.kind} @{sub.path} is written as a block, since its data flow is not "
                              f"{'a chain' if sub.kind == 'seq' else 'that of a ' + sub.kind}")
            sub.kind = "block"
            sub.name = _identifier(sub.local, "b") + "_block"
            self._pending.append(sub)
            return _Unit("call", list(sub.inputs), list(sub.outputs), c.first, sub.nodeset, child=c, gaps=c.gaps)
        unit.child = c
        unit.label = c.label
        unit.gaps = c.gaps
        unit.nodes = sub.nodeset
        unit.parts["region"] = sub
        return unit

    def _only(self, t: int, u: _Unit, r: _Region) -> bool:
        """Whether ``u`` is the only reader of ``t`` in ``r`` (and ``t`` is not a result of ``r``)."""
        return t not in self.gouts and all(x in u.nodes for x in self.users[t]) and not self._escapes_to(t, r)

    def _escapes_to(self, t: int, r: _Region) -> bool:
        return any(x not in r.nodeset for x in self.users[t])

    def _chain_ok(self, us: list[_Unit], r: _Region) -> bool:
        """Whether ``us`` is one chain: each unit reads exactly what the previous one gives, and only it."""
        if not us:
            return False
        outside = [t for u in us[1:] for t in u.inputs if t not in r.nodeset]
        if outside or set(us[0].inputs) - set(r.inputs) or set(r.inputs) - set(us[0].inputs):
            return False
        for a, b in zip(us, us[1:]):
            if b.inputs != a.outputs or not all(self._only(t, b, r) for t in a.outputs):
                return False
        return True

    def _as_seq(self, r: _Region, us: list[_Unit]) -> _Unit | None:
        if not self._chain_ok(us, r):
            return None
        return _Unit("seq", list(us[0].inputs), list(us[-1].outputs), us[0].first, r.nodeset, parts={"body": us})

    def _constructs(self, r: _Region, us: list[_Unit]) -> None:
        """Replace the members of every recognisable transparent construct of ``r`` by one unit."""
        merges = [u.outputs[0] for u in us if u.kind == "op"]
        data = self.g.data
        dense = [n for n in merges if data(n)["op"] == "concat" and data(n)["meta"].get("construct") == "dense"]
        prefixes = {tuple(data(n)["inputs"][:-1]) for n in dense}
        for n in merges:
            d = data(n)
            construct = d["meta"].get("construct")
            if construct == "residual" and d["op"] == "add" and len(d["inputs"]) == 2:
                self._residual(r, us, n)
            elif construct == "parallel" and d["op"] in ("add", "concat"):
                self._parallel(r, us, n)
            elif construct == "dense" and d["op"] == "concat" and tuple(d["inputs"]) not in prefixes:
                self._dense(r, us, n)
            elif d["op"] == "grid_sample":
                self._stn(r, us, n)

    def _unit_of(self, us, t):
        for u in us:
            if t in u.nodes:
                return u
        return None

    def _walk(self, us, r, t) -> list[int]:
        """``t``, then the input of the single-input unit that makes it, and so on, within ``r``."""
        out = [t]
        while t in r.nodeset:
            u = self._unit_of(us, t)
            if u is None or u.kind == "input" or u.outputs != [t] or len(u.inputs) != 1:
                break
            t = u.inputs[0]
            if t in out:
                break
            out.append(t)
        return out

    def _path(self, us, r, end: int, start: int) -> list[_Unit] | None:
        """The chain of units from ``start`` (exclusive) to ``end``, each read only by the next."""
        w = self._walk(us, r, end)
        if start not in w[1:]:
            return None
        units = [self._unit_of(us, t) for t in reversed(w[:w.index(start)])]
        for a, b in zip(units, units[1:]):
            if not self._only(a.outputs[0], b, r):
                return None
        return units

    def _positional(self, u: _Unit) -> bool:
        return u.kind == "op" and u.child is not None and u.child.label is None

    def _replace(self, us, members: list[_Unit], unit: _Unit) -> bool:
        """Put ``unit`` in place of ``members`` if they are consecutive and in this order."""
        idx = [next(i for i, x in enumerate(us) if x is m) for m in members]
        if idx != list(range(idx[0], idx[0] + len(idx))):
            return False
        unit.first = members[0].first
        unit.nodes = set().union(*(m.nodes for m in members))
        us[idx[0]:idx[-1] + 1] = [unit]
        return True

    def _residual(self, r, us, n) -> None:
        merge = self._unit_of(us, n)
        if not self._positional(merge):
            return
        m, s = self.g.data(n)["inputs"]
        if m == s:
            return
        mw = self._walk(us, r, m)
        if s in mw[1:]:
            fork, short = s, []
        else:
            sw = self._walk(us, r, s)
            fork = next((t for t in sw[1:] if t in mw[1:]), None)
            if fork is None:
                return
            short = self._path(us, r, s, fork)
            if not short:
                return
        main = self._path(us, r, m, fork)
        if not main or not self._only(m, merge, r) or (short and not self._only(s, merge, r)):
            return
        if set(main[0].inputs) != {fork} or (short and set(short[0].inputs) != {fork}):
            return
        unit = _Unit("res", [fork], [n], 0, set(), parts={"main": main, "short": short, "merge": merge})
        self._replace(us, main + short + [merge], unit)

    def _parallel(self, r, us, n) -> None:
        merge = self._unit_of(us, n)
        d = self.g.data(n)
        ins = list(d["inputs"])
        if not self._positional(merge) or len(set(ins)) != len(ins) or (d["op"] == "concat" and d["attrs"]["dim"] != 1):
            return
        walks = [self._walk(us, r, b) for b in ins]
        fork = next((t for t in walks[0][1:] if all(t in w[1:] for w in walks[1:])), None)
        if fork is None:
            return
        branches = []
        for b in ins:
            br = self._path(us, r, b, fork)
            if not br or not self._only(b, merge, r) or set(br[0].inputs) != {fork}:
                return
            branches.append(br)
        unit = _Unit("par", [fork], [n], 0, set(), parts={"branches": branches, "merge": merge, "op": d["op"]})
        self._replace(us, [u for br in branches for u in br] + [merge], unit)

    def _dense(self, r, us, n) -> None:
        final = self._unit_of(us, n)
        ins = list(self.g.data(n)["inputs"])
        if not self._positional(final) or len(ins) < 2 or len(set(ins)) != len(ins):
            return
        x0, outs = ins[0], ins[1:]
        members, layers, joins = [], [], []
        inside = set(ins[1:])
        for k, o in enumerate(outs):
            start, join = x0, None
            if k:
                want = [x0, *outs[:k]]
                join = next((u for u in us if u.kind == "op" and u.outputs[0] not in (n,)
                             and list(self.g.data(u.outputs[0])["inputs"]) == want
                             and self.g.data(u.outputs[0])["op"] == "concat"
                             and self.g.data(u.outputs[0])["attrs"]["dim"] == 1
                             and self.g.data(u.outputs[0])["meta"].get("construct") == "dense"), None)
                if join is None or not self._positional(join):
                    return
                start = join.outputs[0]
            layer = self._path(us, r, o, start)
            if not layer or set(layer[0].inputs) != {start}:
                return
            if join is not None:
                if not self._only(start, layer[0], r):
                    return
                members.append(join)
            joins.append(join)
            members.extend(layer)
            layers.append(layer)
        members.append(final)
        member_nodes = set().union(*(u.nodes for u in members))
        for o in outs:
            if o in self.gouts or not all(x in member_nodes for x in self.users[o]):
                return
        if x0 in inside:
            return
        unit = _Unit("dense", [x0], [n], 0, set(), parts={"layers": layers, "joins": joins, "merge": final})
        self._replace(us, members, unit)

    def _stn(self, r, us, n) -> None:
        g = self.g
        sample = self._unit_of(us, n)
        x, grid = g.data(n)["inputs"]
        grid_u = self._unit_of(us, grid) if grid in r.nodeset else None
        if not self._positional(sample) or grid_u is None or not self._positional(grid_u) or x == grid:
            return
        if g.data(grid)["op"] != "affine_grid" or not self._only(grid, sample, r):
            return
        t = g.data(grid)["inputs"][0]
        reshape = self._unit_of(us, t) if t in r.nodeset else None
        if reshape is None or not self._positional(reshape) or g.data(t)["op"] != "reshape":
            return
        if tuple(g.data(t)["attrs"]["shape"]) != (2, 3) or not self._only(t, grid_u, r):
            return
        theta = g.data(t)["inputs"][0]
        if not self._only(theta, reshape, r) or grid_u.gaps or sample.gaps:
            return
        loc = self._path(us, r, theta, x)
        if not loc or set(loc[0].inputs) != {x}:
            return
        reg = g.data(theta)
        a = reg["attrs"]
        if reg["op"] != "linear" or not a["bias"] or a["out_features"] != 6 or a["weight_init"] != "zeros":
            return
        if not isinstance(a["bias_init"], (list, tuple)) or tuple(float(v) for v in a["bias_init"]) != IDENTITY_AFFINE:
            return
        sa, ga = g.data(n)["attrs"], g.data(grid)["attrs"]
        if (sa["mode"], sa["padding_mode"]) != ("bilinear", "zeros") or sa["align_corners"] != ga["align_corners"]:
            return
        xs = g.data(x)["shape"]
        size = tuple(ga["size"])
        if len(xs) != 4:
            return
        size_arg = None if size == tuple(xs[1:]) else list(size[1:]) if size[0] == xs[1] else list(size)
        unit = _Unit("stn", [x], [n], 0, set(), parts={"loc": loc, "reshape": reshape, "size": size_arg,
                                                       "align": bool(sa["align_corners"]), "reg": theta})
        if self._replace(us, loc + [reshape, grid_u, sample], unit):
            self.stn_regs.add(theta)

    # ---- bodies: statements and names
    def bodies(self) -> None:
        """The body of the model and of every block instance (inline regions are built inside them)."""
        self.blocks: list[_Region] = []
        self._pending = [self.regions[""]]
        done = set()
        while self._pending:
            r = self._pending.pop(0)
            if id(r) in done:
                continue
            done.add(id(r))
            r.tree = self._body(r)
            if r.path:
                self.blocks.append(r)

    def _body(self, r: _Region):
        us = self._units(r)
        model = r.path == ""
        outs = list(self.g.outputs) if model else list(r.outputs)
        if model:
            for i in self.g.inputs:
                us.append(_Unit("input", [], [i], self.P[i], {i}))
            us.sort(key=lambda u: u.first)
        stmts: list[_Stmt] = []
        for u in us:
            if u.kind == "input":
                st = _Stmt([], [], u.outputs)
                st.input = u.outputs[0]
                stmts.append(st)
                continue
            last = stmts[-1] if stmts and stmts[-1].input is None else None
            if last is not None and last.result == u.inputs and all(
                    self._only(t, u, r) and t not in outs for t in set(u.inputs)):
                last.units.append(u)
                last.result = list(u.outputs)
            else:
                stmts.append(_Stmt(u.inputs, [u], u.outputs))
        # the output statement: the last chain, when it makes exactly the outputs
        fold = None
        if stmts and stmts[-1].input is None and stmts[-1].result == outs and all(
                not any(x in r.nodeset for x in self.users[t]) for t in outs) and len(set(outs)) == len(outs):
            fold = stmts.pop()
        # names: inputs, then each statement's results; a temporary is reused once its tensor is dead
        reserved = self.reserved
        names: dict[int, str] = {}
        holder: dict[str, int] = {}
        temps: set = set()
        if model:
            for k, i in enumerate(self.g.inputs):
                want = self.g.data(i)["attrs"].get("name") or f"x{k}"
                name = want if (_NAME.match(want) and want not in reserved and want not in holder) \
                    else _unique(_identifier(want, "x"), set(holder), reserved)
                if name != want:
                    self.notes.append(f"the input '{want}' is written as '{name}'")
                names[i] = name
                holder[name] = i
        else:
            base = ["x"] if len(r.inputs) == 1 else [f"x{k}" for k in range(len(r.inputs))]
            for i, b in zip(r.inputs, base):
                names[i] = b
                holder[b] = i
        last_use: dict[int, int] = {}
        for k, st in enumerate(stmts):
            for t in st.source:
                last_use[t] = k
        for t in outs + (fold.source if fold is not None else []):
            last_use[t] = len(stmts)
        for k, st in enumerate(stmts):
            if st.input is not None:
                continue
            st.src_names = [names[t] for t in st.source]
            now: set = set()

            def free(name, k=k, now=now):
                if name in reserved or name in now:
                    return False
                held = holder.get(name)
                return held is None or (name in temps and last_use.get(held, -1) <= k)
            for t in st.result:
                choice = None
                src = st.source[0] if len(st.source) == 1 else None
                if len(st.result) == 1 and src is not None and names[src] in temps and free(names[src]):
                    choice = names[src]
                lab = st.units[-1].child.local if st.units[-1].child is not None else None
                if choice is None and len(st.result) == 1 and lab and _NAME.match(lab) and not _is_position(lab) \
                        and free(lab):
                    choice = lab
                if choice is None:
                    choice = next(c for c in ["h"] + [f"h{i}" for i in range(1, 1_000_000)] if free(c))
                now.add(choice)
                temps.add(choice)
                names[t] = choice
                holder[choice] = t
            st.res_names = [names[t] for t in st.result]
        self.all_vars |= set(holder)
        # the tree
        body = []
        if not model:
            for i in r.inputs:
                body.append(("@input", names[i], None))
        for st in stmts:
            if st.input is not None:
                i = st.input
                body.append(("@input", names[i], tuple(self.g.data(i)["shape"][1:])))
                continue
            body.append(("@assign", tuple(st.res_names), tuple(st.src_names), tuple(self._chain(st.units, r))))
        if fold is not None:
            body.append(("@output", (("@chain", tuple(names[t] for t in fold.source),
                                      tuple(self._chain(fold.units, r))),)))
        else:
            body.append(("@output", tuple(("@var", names[t]) for t in outs)))
        return tuple(body)

    # ---- layers
    def _chain(self, units, body: _Region, tail_gaps: int = 0) -> list:
        out = []
        for u in units:
            out.extend([("@gap",)] * u.gaps)
            out.append(self._layer(u, body))
        out.extend([("@gap",)] * tail_gaps)
        return out

    def _layer(self, u: _Unit, body: _Region):
        label = u.child.label if u.child is not None and u.kind in ("op", "call") else u.label
        if u.kind == "op":
            return self._op(u.outputs[0], label, body)
        if u.kind == "call":
            sub = u.child.region
            return ("@call", label, sub, self._hint(sub.path, body, sub.name))
        if u.kind == "seq":
            return ("@seq", label, tuple(self._chain(u.parts["body"], body)))
        if u.kind == "res":
            p = u.parts
            gaps = p["merge"].gaps
            # the places before the add are held after the main path where no shortcut layer has a position
            # (so that blocks with and without a projection shortcut look alike), else after the shortcut
            late = bool(p["short"]) and any(x.child is None or x.child.label is None for x in p["short"])
            main = self._chain(p["main"], body, 0 if late else gaps)
            short = tuple(self._chain(p["short"], body, gaps if late else 0)) if p["short"] else None
            return ("@res", label, tuple(main), short)
        if u.kind == "par":
            p = u.parts
            gaps = p["merge"].gaps if p["merge"] is not None else 0
            brs = p["branches"]
            return ("@par", label, "add" if p["op"] == "add" else "concat",
                    tuple(tuple(self._chain(b, body, gaps if k == len(brs) - 1 else 0)) for k, b in enumerate(brs)))
        if u.kind == "dense":
            p = u.parts
            layers, joins, final = p["layers"], p["joins"], p["merge"]
            out = []
            for k, layer in enumerate(layers):
                nxt = joins[k + 1] if k + 1 < len(joins) else final
                out.append(tuple(self._chain(layer, body, nxt.gaps)))
            return ("@dense", label, tuple(out))
        if u.kind == "stn":
            p = u.parts
            loc = self._chain(p["loc"], body, p["reshape"].gaps)
            size = None
            if p["size"] is not None:
                size = tuple(Hole(v, "int", self._hint(self.g.data(p["reg"])["scope"], body, "stn") + "_size")
                             for v in p["size"])
            return ("@stn", label, tuple(loc), size, p["align"])
        raise AssertionError(u.kind)   # pragma: no cover

    def _hint(self, scope: str, body: _Region, what: str) -> str:
        rel = scope[len(body.path) + 1:] if body.path else scope
        parts = rel.split(".")
        if _is_position(parts[-1]):
            parts[-1] = what + parts[-1]
        return _identifier("_".join(parts), "l")

    def _op(self, n: int, label, body: _Region):
        d = self.g.data(n)
        stn_reg = n in self.stn_regs
        opdef = registry.get(d["op"])
        args = []
        for arg in opdef.args:
            if stn_reg and arg.name in ("weight_init", "bias_init"):
                continue
            v = d["attrs"][arg.name]
            hint = self._hint(d["scope"], body, d["op"]) + "_" + arg.name
            kind = arg.kind
            if kind in ("pair", "pair?") and isinstance(v, tuple):
                if v[0] == v[1]:
                    val = Hole(v[0], "int", hint, pair=True)
                else:
                    val = ("@list", Hole(v[0], "int", hint + "_h"), Hole(v[1], "int", hint + "_w"))
            elif kind == "ints":
                val = ("@list",) + tuple(Hole(x, "int", f"{hint}{k}") for k, x in enumerate(v))
            elif kind in ("int", "int?") and isinstance(v, int) and not isinstance(v, bool):
                val = Hole(v, "int", hint)
            elif kind == "float" and isinstance(v, float):
                val = Hole(v, "float", hint)
            else:
                val = Lit(tuple(v) if isinstance(v, list) else v)
            args.append((arg.name, val))
        return ("@op", label, d["op"], tuple(args))

    @property
    def reserved(self) -> set:
        r = getattr(self, "_reserved", None)
        if r is None:
            r = set(KEYWORDS) | set(registry.OPS) | set(BUILTINS)
            r |= {s.name for s in self.g.scopes.values() if s.kind == "block"}
            r.add(self.g.name)
            self._reserved = r
        return r


# ---- grouping block instances ---------------------------------------------------------------

def _walk_holes(t, path=()):
    if isinstance(t, Hole):
        yield path, t
    elif isinstance(t, tuple):
        for i, x in enumerate(t):
            yield from _walk_holes(x, path + (i,))


def _key(t, abstract: bool = False):
    if isinstance(t, Hole):
        return ("?", t.kind, t.pair)
    if isinstance(t, Lit):
        return ("=", t.key)
    if isinstance(t, tuple):
        if abstract and t and t[0] == "@res":
            return ("@res", t[1], _key(t[2], True), "?shortcut")
        return tuple(_key(x, abstract) for x in t)
    return t


def _res_paths(t, path=()):
    """(path, shortcut or None) of every residual in ``t``."""
    if isinstance(t, tuple) and t:
        if t[0] == "@res":
            yield path, t[3]
        for i, x in enumerate(t):
            yield from _res_paths(x, path + (i,))


def _get(t, path):
    for i in path:
        t = t[i]
    return t


def _graft(t, path, value):
    if not path:
        return value
    i = path[0]
    return t[:i] + (_graft(t[i], path[1:], value),) + t[i + 1:]


@dataclass
class _Param:
    name: str
    kind: str
    vec: list
    flag: bool = False

    @property
    def optional(self) -> bool:
        return self.flag or any(v is MISSING for v in self.vec)


class _Group:
    def __init__(self, gid: int, defname: str, instances: list, trees: list, flags: dict):
        self.id = gid
        self.defname = defname
        self.name = defname
        self.instances = instances     # regions
        self.trees = trees             # finalised trees, one per instance
        self.flags = flags             # residual path -> flag parameter name (set later)
        self.params: list[_Param] = []
        self.resolved: dict = {}       # hole path -> text
        self.rep = trees[0]

    def value(self, region, p: _Param):
        return p.vec[self.instances.index(region)]


class _Grouper:
    def __init__(self, w: _Writer):
        self.w = w
        self.group_of: dict = {}      # region -> _Group
        self.groups: list[_Group] = []

    def run(self) -> None:
        w = self.w
        by_def: dict[str, list] = {}
        for r in w.blocks:
            by_def.setdefault(r.name, []).append(r)
        for regions in by_def.values():
            regions.sort(key=lambda r: r.first)
        order = self._definition_order(by_def)
        for name in order:
            self._group(name, by_def[name])
        self.groups.sort(key=lambda gr: gr.id)
        self._name_groups()

    def _calls(self, t):
        if isinstance(t, tuple) and t:
            if t[0] == "@call":
                yield t[2]
            for x in t:
                yield from self._calls(x)

    def _definition_order(self, by_def) -> list[str]:
        deps = {name: {c.name for r in regions for c in self._calls(r.tree)} for name, regions in by_def.items()}
        order, state = [], {}

        def visit(name, stack):
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                raise ArchError(f"The block definitions {' and '.join(sorted(set(stack)))} contain instances of "
                                "each other; the spec writer cannot group them.")
            state[name] = 1
            for dep in sorted(deps[name]):
                if dep != name:
                    visit(dep, stack + [dep])
            state[name] = 2
            order.append(name)
        for name in sorted(by_def, key=lambda n: by_def[n][0].first):
            visit(name, [name])
        return order

    def finalise(self, t):
        """``t`` with every call of an instance replaced by a call of its group with the instance's values."""
        if isinstance(t, tuple) and t:
            if t[0] == "@call":
                _, label, region, hint = t
                gr = self.group_of[region]
                args = tuple((p.name, Hole(gr.value(region, p), p.kind, f"{hint}_{p.name}")) for p in gr.params)
                return ("@callg", label, gr.id, args)
            return tuple(self.finalise(x) for x in t)
        return t

    def _group(self, defname: str, regions: list) -> None:
        trees = [self.finalise(r.tree) for r in regions]
        buckets: dict = {}
        for r, t in zip(regions, trees):
            buckets.setdefault(_key(t, abstract=True), []).append((r, t))
        for members in buckets.values():
            # a skeleton shared by instances that differ in residual shortcuts: merge them with flags
            shortcuts: dict = {}
            for _, t in members:
                for path, short in _res_paths(t):
                    shortcuts.setdefault(path, []).append(None if short is None else _key(short))
            mergeable = all(len({k for k in keys if k is not None}) <= 1 for keys in shortcuts.values())
            if mergeable:
                self._make_group(defname, members, [p for p, keys in shortcuts.items()
                                                     if None in keys and any(k is not None for k in keys)])
            else:
                sub: dict = {}
                for r, t in members:
                    sub.setdefault(_key(t), []).append((r, t))
                for part in sub.values():
                    self._make_group(defname, part, [])

    def _make_group(self, defname, members, flag_paths) -> None:
        regions = [r for r, _ in members]
        trees = [t for _, t in members]
        gr = _Group(len(self.groups), defname, regions, trees, {})
        rep = trees[0]
        for path in sorted(flag_paths, key=len):
            if _get(rep, path)[3] is None:
                donor = next(t for t in trees if _get(t, path)[3] is not None)
                rep = _graft(rep, path, _get(rep, path)[:3] + (_get(donor, path)[3],))
        gr.rep = rep
        self._params(gr, flag_paths)
        self.groups.append(gr)
        for r in regions:
            self.group_of[r] = gr

    def _params(self, gr: _Group, flag_paths) -> None:
        holes = [dict(_walk_holes(t)) for t in gr.trees]
        order = [p for p, _ in _walk_holes(gr.rep)]
        hints = dict(_walk_holes(gr.rep))
        avoid = set(self.w.reserved) | set(_body_vars(gr.rep))
        args = [r.info.args if r.info is not None else {} for r in gr.instances]
        arg_names = [a for a in args[0] if all(a in x for x in args)] if args else []
        arg_vecs = {a: [x[a] for x in args] for a in arg_names
                    if all(isinstance(x[a], (int, float)) for x in args)}
        taken: set = set()
        params: list[_Param] = []

        def fits(vec, pvec):
            return all(v is MISSING or q is MISSING or _same(v, q) for v, q in zip(vec, pvec))

        def merge(p, vec):
            p.vec = [q if q is not MISSING else v for v, q in zip(vec, p.vec)]

        def new_param(name, kind, vec, flag=False):
            name = _unique(_identifier(name, "p"), taken, avoid)
            taken.add(name)
            p = _Param(name, kind, list(vec), flag)
            params.append(p)
            return p

        for path in flag_paths:
            vec = [_get(t, path)[3] is not None for t in gr.trees]
            short = _get(gr.rep, path)[3]
            first = short[0] if short else None
            want = first[1] if first and len(short) == 1 and len(first) > 1 and isinstance(first[1], str) \
                and _NAME.match(first[1]) else "shortcut"
            hit = next((a for a, v in arg_vecs.items() if all(_same(x, y) for x, y in zip(vec, v))), None)
            p = new_param(hit or want, "bool", vec, flag=True)
            gr.flags[path] = p.name
        for path in order:
            vec = [h[path].value if path in h else MISSING for h in holes]
            present = [v for v in vec if v is not MISSING]
            kind = hints[path].kind
            if all(_same(v, present[0]) for v in present):
                # a number of an optional part reads better as the parameter it agrees with
                hit = next((p for p in params if MISSING in vec and not p.flag and p.kind == kind
                            and MISSING not in p.vec and fits(vec, p.vec)), None)
                gr.resolved[path] = hit.name if hit is not None else _text(present[0])
                continue
            text = None
            for p in params:
                if not p.flag and p.kind == kind and fits(vec, p.vec):
                    merge(p, vec)
                    text = p.name
                    break
            if text is None:
                hit = next((a for a, v in arg_vecs.items() if _kind(v[0]) == kind and a not in taken
                            and all(_kind(x) == kind for x in v) and fits(vec, v)), None)
                if hit is not None:
                    p = new_param(hit, kind, arg_vecs[hit])
                    merge(p, vec)
                    text = p.name
            if text is None and kind == "int":
                text = self._expression(vec, params)
            if text is None:
                text = new_param(hints[path].hint, kind, vec).name
            gr.resolved[path] = text
        required = [p for p in params if not p.optional]
        gr.params = required + [p for p in params if p.optional]

    @staticmethod
    def _expression(vec, params):
        """``a * k`` or ``a // k`` over a parameter already in use that gives ``vec`` (``planes * 4``).

        Only parameters that some number equals directly are used, so a pruned block whose
        widths are all half its original ``planes`` takes the widths, not ``planes``."""
        for p in params:
            if p.flag or p.kind != "int" or any(v is not MISSING and q is MISSING for v, q in zip(vec, p.vec)):
                continue
            pairs = [(v, q) for v, q in zip(vec, p.vec) if v is not MISSING]
            for op, ks in (("*", _TIMES), ("//", _DIVIDED)):
                for k in ks:
                    if all(v == (q * k if op == "*" else q // k) for v, q in pairs):
                        return f"{p.name} {op} {k}"
        return None

    def _name_groups(self) -> None:
        w = self.w
        avoid = (set(KEYWORDS) | set(registry.OPS) | set(BUILTINS) | w.all_vars | {w.model_name}
                 | {p.name for g in self.groups for p in g.params})
        taken: set = set()
        for gr in self.groups:
            want = gr.defname if _NAME.match(gr.defname) else _identifier(gr.defname, "b")
            name = want
            if name in taken or name in avoid or name in KEYWORDS:
                name = _unique(want if want not in avoid else want + "_block", taken, avoid)
            taken.add(name)
            gr.name = name


def _body_vars(t) -> set:
    out = set()
    if isinstance(t, tuple) and t:
        if t[0] == "@input":
            out.add(t[1])
        elif t[0] == "@assign":
            out |= set(t[1])
        for x in t:
            out |= _body_vars(x)
    return out


# ---- text ---------------------------------------------------------------------------------------

class _Renderer:
    def __init__(self, grouper: _Grouper):
        self.gr = grouper
        self.by_id = {g.id: g for g in grouper.groups}

    def body(self, tree, resolved: dict, flags: dict, params=()) -> list[str]:
        self.resolved, self.flags = resolved, flags
        self.names = set(params) | _body_vars(tree)
        lines = []
        for k, st in enumerate(tree):
            path = (k,)
            tag = st[0]
            if tag == "@input":
                lines.append(f"input {st[1]}" + (f": {_text(list(st[2]))}" if st[2] is not None else ""))
            elif tag == "@assign":
                lines.append(f"{', '.join(st[1])} = {self.source(st[2])} -> "
                             + self.chain(st[3], path + (3,)))
            else:
                items = []
                for j, item in enumerate(st[1]):
                    if item[0] == "@var":
                        items.append(item[1])
                    else:
                        items.append(f"{self.source(item[1])} -> {self.chain(item[2], path + (1, j, 2))}")
                lines.append("output " + ", ".join(items))
        return lines

    @staticmethod
    def source(names) -> str:
        return names[0] if len(names) == 1 else "(" + ", ".join(names) + ")"

    def chain(self, layers, path) -> str:
        return " -> ".join(self.layer(x, path + (i,)) for i, x in enumerate(layers))

    def hole(self, h, path):
        if path in self.resolved:
            return self.resolved[path]
        return _text(h.value) if h.value is not MISSING else None

    def value(self, v, path):
        if isinstance(v, Hole):
            return self.hole(v, path)
        if isinstance(v, Lit):
            return _text(v.value)
        if isinstance(v, tuple) and v and v[0] == "@list":
            return "[" + ", ".join(self.value(x, path + (i,)) for i, x in enumerate(v) if i) + "]"
        raise AssertionError(v)   # pragma: no cover

    @staticmethod
    def lab(label) -> str:
        return f"{label}: " if label else ""

    def layer(self, t, path) -> str:
        tag = t[0]
        if tag == "@gap":
            return GAP_TEXT
        if tag == "@op":
            return self.lab(t[1]) + t[2] + self.op_args(t[2], t[3], path + (3,))
        if tag == "@callg":
            return self.lab(t[1]) + self.call(t, path)
        if tag == "@seq":
            body = t[2]
            comp = self.comprehension(body, path + (2,))
            if comp is not None:
                return self.lab(t[1]) + comp
            return self.lab(t[1]) + "[" + self.chain(body, path + (2,)) + "]"
        if tag == "@res":
            text = self.lab(t[1]) + "residual {\n" + self.chain(t[2], path + (2,)) + "\n}"
            if t[3] is not None:
                cond = f" if {self.flags[path]}" if path in self.flags else ""
                text += f" shortcut{cond} {{\n" + self.chain(t[3], path + (3,)) + "\n}"
            return text
        if tag == "@par":
            opts = '(merge="add")' if t[2] == "add" else ""
            branches = "\n".join(self.chain(b, path + (3, i)) for i, b in enumerate(t[3]))
            return self.lab(t[1]) + f"parallel{opts} {{\n{branches}\n}}"
        if tag == "@dense":
            layers = self.comprehension(t[2], path + (2,), dense=True) \
                or "\n".join(self.chain(b, path + (2, i)) for i, b in enumerate(t[2]))
            return self.lab(t[1]) + f"dense {{\n{layers}\n}}"
        if tag == "@stn":
            opts = []
            if t[3] is not None:
                opts.append("size=[" + ", ".join(self.hole(h, path + (3, i)) for i, h in enumerate(t[3])) + "]")
            if t[4]:
                opts.append("align_corners=true")
            head = f"stn({', '.join(opts)})" if opts else "stn"
            return self.lab(t[1]) + head + " {\n" + self.chain(t[2], path + (2,)) + "\n}"
        raise AssertionError(tag)   # pragma: no cover

    def op_args(self, op: str, args, path) -> str:
        opdef = registry.get(op)
        specs = {a.name: a for a in opdef.args}
        texts = {name: self.value(v, path + (i, 1)) for i, (name, v) in enumerate(args)}
        positional, keywords = [], []
        single = len(opdef.args) == 1
        for name, _ in args:
            arg = specs[name]
            text = texts[name]
            if not arg.required:
                default = arg.default
                if arg.kind in ("pair", "pair?") and isinstance(default, int) and not isinstance(default, bool):
                    default = default
                if text == _text(default) or (op in ("maxpool", "avgpool") and name == "stride"
                                              and text == texts.get("kernel_size")):
                    continue
            if arg.required or (single and not keywords):
                positional.append(text)
            else:
                keywords.append(f"{name}={text}")
        parts = positional + keywords
        return f"({', '.join(parts)})" if parts else ""

    def call_parts(self, gr: _Group, args, path) -> tuple[list, list]:
        positional, keywords = [], []
        for i, (pname, h) in enumerate(args):
            p = next(x for x in gr.params if x.name == pname)
            text = self.hole(h, path + (i, 1))
            if p.optional:
                if text is None or text == ("false" if p.flag else "none"):
                    continue
                keywords.append((pname, text))
            else:
                positional.append(text)
        return positional, keywords

    def call(self, t, path) -> str:
        gr = self.by_id[t[2]]
        positional, keywords = self.call_parts(gr, t[3], path + (3,))
        parts = positional + [f"{k}={v}" for k, v in keywords]
        return gr.name + (f"({', '.join(parts)})" if parts else "")

    def comprehension(self, items, path, dense: bool = False) -> str | None:
        """``[blk(...) for j in range(n)]`` (or a dense item ``lbl{j + 1}: blk(...) for j in range(n)``) for a
        run of calls of one block, unlabelled or labelled ``prefix1``, ``prefix2``...; None where the run is
        not one, or where writing the calls out is shorter."""
        if dense:
            if any(len(x) != 1 for x in items):
                return None
            items = [x[0] for x in items]
            paths = [path + (i, 0) for i in range(len(items))]
        else:
            paths = [path + (i,) for i in range(len(items))]
        if len(items) < 2 or any(x[0] != "@callg" for x in items) or len({x[2] for x in items}) != 1:
            return None
        gr = self.by_id[items[0][2]]
        var = next(v for v in ["j", "k", "n"] + [f"j{i}" for i in range(1, 1000)]
                   if v not in self.names and v not in KEYWORDS and v not in registry.OPS and v not in BUILTINS
                   and v != gr.name)
        labels = [x[1] for x in items]
        if all(lab is None for lab in labels):
            if dense:
                return None
            head = ""
        else:
            parts = [re.fullmatch(r"([A-Za-z_][A-Za-z_0-9]*?)(0|[1-9][0-9]*)", lab or "") for lab in labels]
            if any(m is None for m in parts) or len({m.group(1) for m in parts}) != 1 \
                    or parts[0].group(1) in KEYWORDS:
                return None
            first = int(parts[0].group(2))
            if [int(m.group(2)) for m in parts] != list(range(first, first + len(items))):
                return None
            head = f"{parts[0].group(1)}{{{var}{f' + {first}' if first else ''}}}: "
        columns = []
        for i, (pname, _) in enumerate(items[0][3]):
            p = next(x for x in gr.params if x.name == pname)
            default = "false" if p.flag else "none"
            texts = []
            for call, cpath in zip(items, paths):
                t = self.hole(call[3][i][1], cpath + (3, i, 1))
                texts.append(default if t is None else t)
            columns.append((p, texts, default))
        positional, keywords = [], []
        for p, texts, default in columns:
            if all(t == texts[0] for t in texts):
                text = texts[0]
            elif all(t == texts[1] for t in texts[1:]):
                text = f"{texts[0]} if {var} == 0 else {texts[1]}"
                if p.flag and (texts[0], texts[1]) == ("true", "false"):
                    text = f"{var} == 0"
            else:
                text = "[" + ", ".join(texts) + f"][{var}]"
            if p.optional:
                if text != default:
                    keywords.append(f"{p.name}={text}")
            else:
                positional.append(text)
        args = positional + keywords
        call = gr.name + (f"({', '.join(args)})" if args else "")
        text = f"{head}{call} for {var} in range({len(items)})"
        written = [self.layer(x, cp) for x, cp in zip(items, paths)]
        if len(text) > 1.5 * len(" -> ".join(written)):
            return None
        return text if dense else f"[{text}]"


# ---- entry points -------------------------------------------------------------------------------

def emit_arch_spec(graph: Graph, check: bool = True) -> ArchSpec:
    """The graph as ``.arch`` text, with the renames it needed (see the module docstring).

    With ``check`` (the default) the text is loaded again and compared with the graph
    (:func:`check_arch`), so a spec that would mean something else is never returned.
    """
    w = _Writer(graph)
    model_name = graph.name if _NAME.match(graph.name or "") else _identifier(graph.name or "", "m")
    while model_name in KEYWORDS or model_name in registry.OPS or model_name in BUILTINS:
        model_name += "_"
    if model_name != graph.name:
        w.notes.append(f"the model '{graph.name}' is written as '{model_name}'")
    w.model_name = model_name
    w.bodies()
    grouper = _Grouper(w)
    grouper.run()
    renderer = _Renderer(grouper)
    out = [f"# {model_name}: the graph IR of "
           f"{graph.meta.get('file') or 'a model'} written back as a spec (archdsl)."]
    if any(_has_gap(r.tree) for r in [w.regions[""], *w.blocks]):
        out.append(f"# {GAP_TEXT} holds the place of a layer that is gone, so that the layers after it")
        out.append("# keep their position names.")
    renames = {old: _full_rename(w.renames, old) for old in w.renames}
    for old, new in sorted(renames.items()):
        out.append(f"# renamed: @{_comment(old)} is @{_comment(new)} here")
    for note in w.notes:
        out.append(f"# note: {_comment(note)}")
    out.append("")
    for gr in grouper.groups:
        sig = ", ".join(f"{p.name}: {p.kind}" if not p.optional else
                        f"{p.name}: bool = false" if p.flag else f"{p.name} = none" for p in gr.params)
        uses = len(gr.instances)
        out.append(f"# {uses} instance{'s' if uses != 1 else ''}")
        out.append(f"block {gr.name}({sig}) {{")
        out.extend(renderer.body(gr.rep, gr.resolved, gr.flags, [p.name for p in gr.params]))
        out.append("}")
        out.append("")
    model_tree = grouper.finalise(w.regions[""].tree)
    out.append(f"model {model_name}() {{")
    out.extend(renderer.body(model_tree, {}, {}))
    out.append("}")
    text = "\n".join(out) + "\n"
    from ..syntax.formatter import format_source
    text = format_source(text, f"{model_name}.arch")
    spec = ArchSpec(text, model_name, renames, list(w.notes))
    if check:
        back = check_arch(graph, spec)
        if not renames and model_name == graph.name and \
                print_graph(back, locations=False) != print_graph(graph, locations=False):
            spec.notes.append("the spec creates the nodes in another order than the graph lists them (a pass "
                              "added nodes late), so printed node numbers differ; the graphs are the same")
    return spec


def _full_rename(local: dict, old: str) -> str:
    """The new path of ``old``: every renamed scope on its way replaced by its new name."""
    parts = old.split(".")
    return ".".join(local.get(".".join(parts[:i + 1]), p) for i, p in enumerate(parts))


def _has_gap(t) -> bool:
    if isinstance(t, tuple) and t:
        return t[0] == "@gap" or any(_has_gap(x) for x in t)
    return False


def _comment(text: str) -> str:
    return text.replace("\n", " ").replace("\r", " ")


def emit_arch(graph: Graph, check: bool = True) -> str:
    """The graph as the text of an ``.arch`` spec that loads to the same graph."""
    return emit_arch_spec(graph, check=check).text


def write_arch(graph: Graph, path, check: bool = True) -> ArchSpec:
    """Write the graph's spec to ``path`` (an ``.arch`` file); returns what was written."""
    path = Path(path)
    if path.suffix != ".arch":
        raise ArchError(f"A spec is written to an .arch file, but '{path}' is not one.")
    spec = emit_arch_spec(graph, check=check)
    path.write_text(spec.text, encoding="utf-8")
    return spec


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


__all__ = ["ArchSpec", "emit_arch", "emit_arch_spec", "write_arch", "check_arch", "label_text", "KEYWORDS"]
