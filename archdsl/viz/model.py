"""The view of a graph: its scope tree, drawable nodes and typed edges, as plain JSON data.

The scope tree comes from ``graph.scopes``: a registered scope's parent is its
longest registered proper prefix (``layer1.0`` -> ``layer1``), and its depth is
one more than its parent's (the model itself, ``""``, has depth 0). A node
belongs to the longest registered prefix of its own scope path
(``layer1.0.conv1`` -> ``layer1.0``). Scopes that hold no node (a pass may have
emptied them) are left out.

Every IR edge (producer, consumer) appears once, as ``[tail, head, kind, label,
producer]``; :mod:`archdsl.viz.edges` decides the kinds and replaces the dense
edges of a dense block by its rail (rail points are extra nodes ``r<id>``).
Flow and projection-shortcut edges carry the producer's shape as their label.

Per scope the view holds its totals: ops, parameters (each trainable parameter
counted once, even if shared) and MACs per sample, as :mod:`archdsl.ir.stats`
counts them. ``index`` lists every scope and node by path for the HTML page's
search box, with the scopes to expand to show it.
"""
from __future__ import annotations

from ..ir import ops
from ..ir.graph import Graph
from . import edges as E
from . import labels as L

EDGE_KINDS = ("flow", "shortcut", "dense", "rail")   # when edges merge, the first kind among them wins


def _owner(path: str, scopes, include_self: bool) -> str:
    parts = path.split(".") if path else []
    for n in range(len(parts) if include_self else len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in scopes:
            return prefix
    return ""


def _node_stats(graph: Graph, nid: int) -> tuple[set, int]:
    d = graph.data(nid)
    names = {p for p in d["params"].values() if p in graph.params and graph.params[p].trainable}
    if d["op"] == "input" or ops.get(d["op"]) is None:
        return names, 0
    return names, ops.macs(d["op"], d["attrs"], [graph.data(i)["shape"] for i in d["inputs"]], d["shape"])


def _node_attrs(graph: Graph, nid: int, pnames: set, macs: int) -> dict:
    d = graph.data(nid)
    local = "" if d["op"] == "input" else d["scope"].rsplit(".", 1)[-1]
    attrs = {"id": f"n{nid}", "label": L.node_label(d["op"], d["attrs"], local), "fillcolor": L.op_fill(d["op"]),
             "tooltip": L.node_tooltip(d["scope"], d["op"], d["attrs"], d["shape"],
                                       sum(graph.params[q].numel for q in pnames), macs)}
    if d["op"] in ("add", "mul"):
        attrs.update(shape="circle", width="0.3", height="0.3", fixedsize="true", fontsize="12")
    if d["op"] == "concat" and d["meta"].get("construct") == "parallel":
        attrs["ordering"] = "in"          # keep the branches left to right in operand order
    return attrs


class _Builder:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.order = graph.node_ids()
        self.pos = {nid: i for i, nid in enumerate(self.order)}
        registered = {p for p in graph.scopes if p}
        self.owner = {nid: _owner(graph.data(nid)["scope"], registered, True) for nid in self.order}
        self.parent = {p: _owner(p, registered, False) for p in registered}
        self.registered = registered

    def totals(self) -> None:
        """Ops, parameter names, MACs and first node position of every scope's subtree."""
        g = self.graph
        self.pnames = {p: set() for p in self.registered | {""}}
        self.macs = dict.fromkeys(self.pnames, 0)
        self.count = dict.fromkeys(self.pnames, 0)
        self.first, self.node_stats = {}, {}
        for i, nid in enumerate(self.order):
            names, m = self.node_stats[nid] = _node_stats(g, nid)
            s = self.owner[nid]
            while True:
                self.pnames[s] |= names
                self.macs[s] += m
                self.count[s] += g.data(nid)["op"] != "input"
                self.first.setdefault(s, i)
                if s == "":
                    break
                s = self.parent[s]
        self.live = sorted((p for p in self.registered if p in self.first), key=lambda p: self.first[p])
        self.params = {p: sum(g.params[q].numel for q in self.pnames[p]) for p in self.live + [""]}
        self.depth = {"": 0}
        for p in sorted(self.live, key=lambda p: p.count(".")):
            self.depth[p] = self.depth[self.parent[p]] + 1

    def scope_entry(self, p: str, items: list) -> dict:
        entry = {"parent": self.parent.get(p, ""), "depth": self.depth[p],
                 "items": [[k, key] for _, _, k, key in sorted(items)]}
        if not p:
            return entry
        info = self.graph.scopes[p]
        parent = self.parent[p]
        local = p[len(parent) + 1:] if parent else p
        if local.isdigit():                            # "layer1.0" says more than "0"
            local = ".".join(p.split(".")[-2:])
        label = L.scope_label(local, info.kind, info.name, info.args, self.params[p], self.macs[p], self.count[p])
        tip = (f"{p} ({info.kind} {info.name}): {self.count[p]} ops, {self.params[p]:,} params, "
               f"{self.macs[p]:,} MACs")
        color = L.SCOPE_COLOR.get(info.kind, "#737373")
        fill = L.DEPTH_FILL[self.depth[p] % len(L.DEPTH_FILL)]
        entry["cluster"] = {"id": f"c:{p}", "class": f"scope {info.kind}", "label": "", "color": color,
                            "fillcolor": fill, "tooltip": tip}
        entry["title"] = {"id": f"t:{p}", "class": f"title {info.kind}", "label": label, "shape": "plaintext",
                          "margin": "0.02,0.02", "style": "filled", "fillcolor": fill, "color": fill,
                          "tooltip": tip}
        entry["box"] = {"id": f"b:{p}", "class": f"box {info.kind}", "label": label, "shape": "box3d",
                        "margin": "0.14,0.06",
                        "style": "filled", "fillcolor": L.BOX_FILL.get(info.kind, "#ececec"), "color": color,
                        "tooltip": tip}
        return entry

    def chain(self, scope: str) -> list[str]:
        """``scope`` and the live scopes around it, outermost first ([] for the model)."""
        out = []
        while scope:
            out.append(scope)
            scope = self.parent[scope]
        return out[::-1]

    def index(self) -> list[list]:
        """The search index: [path, what, target, open] per live scope and per node, in graph order
        (a scope just before its first node). ``target`` is ``s:PATH`` for a scope and the node's key
        for a node; ``open`` lists the scopes to expand (outermost first) so that the target is drawn."""
        out, seen = [], set()
        for nid in self.order:
            d = self.graph.data(nid)
            chain = self.chain(self.owner[nid])
            for i, p in enumerate(chain):
                if p not in seen:
                    seen.add(p)
                    info = self.graph.scopes[p]
                    out.append([p, info.name if info.kind == "block" else info.kind, f"s:{p}", chain[:i]])
            path = d["attrs"].get("name", "input") if d["op"] == "input" else d["scope"]
            out.append([path, L.op_summary(d["op"], d["attrs"]), f"n{nid}", chain])
        return out

    def build(self) -> dict:
        g = self.graph
        self.totals()
        items = {p: [] for p in self.live + [""]}
        for p in self.live:
            items[self.parent[p]].append((self.first[p], 1, "s", p))
        nodes, owner = {}, {}
        for i, nid in enumerate(self.order):
            items[self.owner[nid]].append((i, 1, "n", f"n{nid}"))
            nodes[f"n{nid}"] = _node_attrs(g, nid, *self.node_stats[nid])
            owner[f"n{nid}"] = self.owner[nid]

        kinds, identity = E.classify(g)
        rail_of = {}                                   # concat -> (rail point, previous point, taps)
        for rail in E.rails(g, kinds, self.owner):
            prev, group = None, f"rail{rail[0][0]}"
            for c, taps in rail:
                point = f"r{c}"
                rail_of[c] = (point, prev, taps)
                prev = point
                items[self.owner[c]].append((self.pos[c], 0, "n", point))
                owner[point] = self.owner[c]
                nodes[point] = {"id": point, "shape": "point", "width": "0.08", "color": L.DENSE_COLOR,
                                "group": group, "fillcolor": L.DENSE_COLOR, "label": "",
                                "tooltip": f"dense rail: the features above join concat %{c} here"}
        edges = []
        for nid in self.order:
            ins = list(dict.fromkeys(g.data(nid)["inputs"]))        # one edge per producer
            if nid in rail_of:
                point, prev, taps = rail_of[nid]
                edges += [[f"n{u}", point, "dense", "", ""] for u in taps]
                if prev is not None:
                    edges.append([prev, point, "rail", "", ""])
                edges.append([point, f"n{nid}", "dense", "", ""])
                ins = ins[-1:]
            for u in ins:
                kind = kinds.get((u, nid), "flow")
                quiet = kind == "dense" or (u, nid) in identity
                label = "" if quiet else L.esc(L.shape_text(g.data(u)["shape"]))
                edges.append([f"n{u}", f"n{nid}", kind, label, f"n{u}"])

        max_depth = max(self.depth.values())
        return {
            "name": g.name,
            "max_depth": max_depth,
            "graph": {"rankdir": "TB", "newrank": "true", "fontname": L.FONT, "fontsize": "10", "nodesep": "0.2",
                      "ranksep": "0.28", "labelloc": "t", "labeljust": "l", "style": "rounded,filled",
                      "penwidth": "1.2",
                      "label": L.legend(g.name, [g.data(i)["shape"] for i in g.inputs],
                                        [g.data(o)["shape"] for o in g.outputs], g.param_count(),
                                        self.macs[""], self.count[""], max_depth,
                                        {e[2] for e in edges})},
            "node": {"fontname": L.FONT, "fontsize": "10", "shape": "box", "style": "rounded,filled",
                     "height": "0.3", "margin": "0.08,0.03", "penwidth": "0.8"},
            "edge": {"fontname": L.FONT, "fontsize": "8", "arrowsize": "0.6", "color": "#555555",
                     "fontcolor": "#333333"},
            "entry": {"shape": "point", "width": "0.05", "height": "0.05", "style": "filled", "color": "#555555",
                      "fillcolor": "#555555", "label": "", "tooltip": "where the tensor enters the block"},
            "edge_kinds": list(EDGE_KINDS),
            "edge_styles": {
                "flow": {"weight": "4"},
                "shortcut": {"color": L.SHORTCUT_COLOR, "fontcolor": L.SHORTCUT_COLOR, "style": "dashed",
                             "penwidth": "1.4"},
                "dense": {"color": L.DENSE_COLOR, "penwidth": "1.0", "arrowsize": "0.5"},
                "rail": {"color": L.DENSE_COLOR, "penwidth": "2.5", "arrowhead": "none", "weight": "4"}},
            "owner": owner,
            "scopes": {p: self.scope_entry(p, items[p]) for p in [""] + self.live},
            "nodes": nodes,
            "edges": edges,
            "index": self.index(),
        }


def build_view(graph: Graph) -> dict:
    """The JSON-able view that :func:`archdsl.viz.dot.emit` and the HTML viewer draw."""
    return _Builder(graph).build()
