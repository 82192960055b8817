"""The writer: the graph's scopes as regions, each region's data flow as units, and the bodies they make.

:class:`Writer` checks that a spec can make the graph, builds a :class:`Region`
for every scope (its members, positions, inputs and outputs), and turns the model
and every block instance into a body (see :mod:`.structure` for the trees), the
constructs found by its base :class:`Constructs` written as constructs.
"""
from __future__ import annotations

import itertools
from functools import cached_property

from ...diagnostics import ArchError
from ...ir import ops as registry
from ...ir.graph import Graph
from .constructs import Constructs
from .structure import Child, Hole, Lit, Region, Stmt, Unit
from .tokens import NAME, identifier, is_position, label_text, language_names, unique


def _parent(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


def _join(path: str, local: str) -> str:
    return f"{path}.{local}" if path else local


class Writer(Constructs):
    """The structure and the bodies of one graph; ``bodies()`` builds the trees."""

    def __init__(self, graph: Graph):
        from ...ir.verify import verify
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
        self.regions: dict[str, Region] = {"": Region("", g.scopes.get(""))}
        self.regions[""].kind = "model"
        for path, info in g.scopes.items():
            if path:
                self.regions[path] = Region(path, info)
        for path in list(self.regions):
            self._region(_parent(path))
        layers = [n for n in self.order if g.data(n)["op"] != "input"]
        for n in layers:
            parts = g.data(n)["scope"].split(".")
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
            parent = self.regions[_parent(path)]
            if r.nodes:
                parent.children.append(Child(r.local, r.first, region=r))
            else:
                empty.append(r)
        for n in layers:
            scope = g.data(n)["scope"]
            parent = self.regions[_parent(scope)]
            parent.children.append(Child(scope.rsplit(".", 1)[-1], self.P[n], node=n))
        held = set()
        for r in self.regions.values():
            r.children.sort(key=lambda c: c.first)
            held |= self._number(r)
            if r.nodes:
                self._interface(r)
        for r in empty:
            if r.path not in held or r.kind != "seq":
                self.notes.append(f"the empty {r.kind} scope @{r.path} is not written")

    def _region(self, path: str) -> Region:
        r = self.regions.get(path)
        if r is None:
            r = self.regions[path] = Region(path, None)
            if path:
                self.notes.append(f"@{path} has no scope information; it is written as a sequence")
            self._region(_parent(path))
        return r

    def _number(self, r: Region) -> set:
        """Labels and held places of ``r``'s children; returns the paths of the places held."""
        counter, held = 0, set()
        taken = {c.local for c in r.children}
        for c in r.children:
            if is_position(c.local):
                k = int(c.local)
                if k >= counter:
                    c.gaps = k - counter
                    held |= {_join(r.path, str(i)) for i in range(counter, k)}
                    counter = k + 1
                    continue
                new = unique("_" + c.local, taken)
            else:
                text = label_text(c.local)
                if text is not None:
                    c.label = text
                    counter += 1
                    continue
                new = unique(identifier(c.local, "_"), taken)
            taken.add(new)
            self.renames[_join(r.path, c.local)] = new
            c.label = label_text(new)
            counter += 1
        return held

    def _interface(self, r: Region) -> None:
        seen = []
        for n in r.nodes:
            for i in self.g.data(n)["inputs"]:
                if i not in r.nodeset and i not in seen:
                    seen.append(i)
        r.inputs = seen
        r.outputs = [n for n in r.nodes if self._escapes(n, r)]
        if not r.outputs:          # nothing reads the region's result: it still gives one
            r.outputs = [n for n in r.nodes if not self.users[n]]

    # ---- units and constructs
    def _units(self, r: Region) -> list[Unit]:
        us = []
        for c in r.children:
            if c.node is not None:
                d = self.g.data(c.node)
                us.append(Unit("op", list(d["inputs"]), [c.node], c.first, {c.node}, child=c, gaps=c.gaps))
            else:
                us.append(self._subregion(c))
        self._constructs(r, us)
        return us

    def _subregion(self, c: Child) -> Unit:
        sub = c.region
        if sub.kind == "block":
            return self._call(c)
        inner = self._units(sub)
        unit = None
        if sub.kind == "seq":
            unit = self._as_seq(sub, inner)
        elif sub.kind in ("residual", "parallel", "dense", "stn"):
            code = {"residual": "res", "parallel": "par", "dense": "dense", "stn": "stn"}[sub.kind]
            if len(inner) == 1 and inner[0].kind == code and inner[0].label is None:
                unit = inner[0]
            elif sub.kind == "parallel" and self._chain_ok(inner, sub):
                unit = Unit("par", list(inner[0].inputs), list(inner[-1].outputs), inner[0].first, sub.nodeset,
                            parts={"branches": [inner], "merge": None, "op": "concat"})
            if unit is not None and (unit.inputs != sub.inputs or not set(sub.outputs) <= set(unit.outputs)):
                unit = None
        if unit is None:
            # what the language cannot say inline becomes a block of its own
            self.notes.append(f"the {sub.kind} @{sub.path} is written as a block, since its data flow is not "
                              f"{'a chain' if sub.kind == 'seq' else 'that of a ' + sub.kind}")
            sub.kind = "block"
            sub.name = identifier(sub.local, "b") + "_block"
            return self._call(c)
        unit.child = c
        unit.label = c.label
        unit.gaps = c.gaps
        unit.nodes = sub.nodeset
        return unit

    def _call(self, c: Child) -> Unit:
        """A call of the block instance ``c.region``, whose body is built later (``bodies``)."""
        sub = c.region
        self._pending.append(sub)
        return Unit("call", list(sub.inputs), list(sub.outputs), c.first, sub.nodeset, child=c, gaps=c.gaps)

    def _chain_ok(self, us: list[Unit], r: Region) -> bool:
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

    def _as_seq(self, r: Region, us: list[Unit]) -> Unit | None:
        if not self._chain_ok(us, r):
            return None
        return Unit("seq", list(us[0].inputs), list(us[-1].outputs), us[0].first, r.nodeset, parts={"body": us})

    # ---- bodies: statements and names
    def bodies(self) -> None:
        """The body of the model and of every block instance (inline regions are built inside them)."""
        self.blocks: list[Region] = []
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

    def _body(self, r: Region):
        us = self._units(r)
        model = r.path == ""
        outs = list(self.g.outputs) if model else list(r.outputs)
        if model:
            for i in self.g.inputs:
                us.append(Unit("input", [], [i], self.P[i], {i}))
            us.sort(key=lambda u: u.first)
        stmts: list[Stmt] = []
        for u in us:
            if u.kind == "input":
                st = Stmt([], [], u.outputs)
                st.input = u.outputs[0]
                stmts.append(st)
                continue
            last = stmts[-1] if stmts and stmts[-1].input is None else None
            if last is not None and last.result == u.inputs and all(
                    self._only(t, u, r) and t not in outs for t in set(u.inputs)):
                last.units.append(u)
                last.result = list(u.outputs)
            else:
                stmts.append(Stmt(u.inputs, [u], u.outputs))
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
                name = want if (NAME.match(want) and want not in reserved and want not in holder) \
                    else unique(identifier(want, "x"), set(holder), reserved)
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
                if choice is None and len(st.result) == 1 and lab and NAME.match(lab) and not is_position(lab) \
                        and free(lab):
                    choice = lab
                if choice is None:
                    choice = next(c for c in itertools.chain(["h"], (f"h{i}" for i in itertools.count(1))) if free(c))
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
    def _chain(self, units, body: Region, tail_gaps: int = 0) -> list:
        out = []
        for u in units:
            out.extend([("@gap",)] * u.gaps)
            out.append(self._layer(u, body))
        out.extend([("@gap",)] * tail_gaps)
        return out

    def _layer(self, u: Unit, body: Region):
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

    def _hint(self, scope: str, body: Region, what: str) -> str:
        rel = scope[len(body.path) + 1:] if body.path else scope
        parts = rel.split(".")
        if is_position(parts[-1]):
            parts[-1] = what + parts[-1]
        return identifier("_".join(parts), "l")

    def _op(self, n: int, label, body: Region):
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
                    val = ("@pair", Hole(v[0], "int", hint + "_h"), Hole(v[1], "int", hint + "_w"))
            elif kind == "ints":
                val = ("@list",) + tuple(Hole(x, "int", f"{hint}{k}") for k, x in enumerate(v))
            elif kind in ("int", "int?") and isinstance(v, int) and not isinstance(v, bool):
                val = Hole(v, "int", hint)
            elif kind in ("float", "init") and type(v) is float:      # scale's init=1e-6 too
                val = Hole(v, "float", hint)
            else:
                val = Lit(tuple(v) if isinstance(v, list) else v)
            args.append((arg.name, val))
        return ("@op", label, d["op"], tuple(args))

    @cached_property
    def reserved(self) -> set:
        """The names a tensor of a body must not take: the language's, the block definitions' and the model's."""
        r = language_names()
        r |= {s.name for s in self.g.scopes.values() if s.kind == "block"}
        r.add(self.g.name)
        return r
