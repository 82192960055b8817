"""Recognising constructs in a region's data flow: residual, parallel, dense and spatial transformer.

The merge nodes that carry ``meta["construct"]`` and the three nodes of a spatial
transformer become one :class:`Unit` each where the graph around them still has
the construct's shape: paths that are chains used by nothing else, in creation
order. :class:`Constructs` is the base of the writer; it reads the writer's
graph (``g``), readers (``users``) and outputs (``gouts``).
"""
from __future__ import annotations

from .structure import Region, Unit

IDENTITY_AFFINE = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


class Constructs:
    """The data-flow tests over units, and the recognisers that replace a construct's units by one."""

    def _escapes(self, t: int, r: Region) -> bool:
        """Whether ``t`` is read outside ``r`` or is a result of the graph."""
        return t in self.gouts or any(u not in r.nodeset for u in self.users[t])

    def _only(self, t: int, u: Unit, r: Region) -> bool:
        """Whether ``u`` is the only reader of ``t`` in ``r`` (and ``t`` is not a result of ``r``)."""
        return not self._escapes(t, r) and all(x in u.nodes for x in self.users[t])

    def _constructs(self, r: Region, us: list[Unit]) -> None:
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

    def _path(self, us, r, end: int, start: int) -> list[Unit] | None:
        """The chain of units from ``start`` (exclusive) to ``end``, each read only by the next."""
        w = self._walk(us, r, end)
        if start not in w[1:]:
            return None
        units = [self._unit_of(us, t) for t in reversed(w[:w.index(start)])]
        for a, b in zip(units, units[1:]):
            if not self._only(a.outputs[0], b, r):
                return None
        return units

    def _positional(self, u: Unit) -> bool:
        return u.kind == "op" and u.child is not None and u.child.label is None

    def _replace(self, us, members: list[Unit], unit: Unit) -> bool:
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
        unit = Unit("res", [fork], [n], 0, set(), parts={"main": main, "short": short, "merge": merge})
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
        unit = Unit("par", [fork], [n], 0, set(), parts={"branches": branches, "merge": merge, "op": d["op"]})
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
        unit = Unit("dense", [x0], [n], 0, set(), parts={"layers": layers, "joins": joins, "merge": final})
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
        unit = Unit("stn", [x], [n], 0, set(), parts={"loc": loc, "reshape": reshape, "size": size_arg,
                                                      "align": bool(sa["align_corners"]), "reg": theta})
        if self._replace(us, loc + [reshape, grid_u, sample], unit):
            self.stn_regs.add(theta)
