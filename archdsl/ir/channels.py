"""Channel groups: the parameter slices that must change together when channels are removed.

Structured pruning removes whole channels. Where channels are tied (a residual
add, a concatenation, a grouped conv, a squeeze-and-excitation gate) removing
one means removing slices of many parameters at once. :func:`channel_groups`
finds those ties from the op registry alone: every op's ``channels`` entry
(:class:`archdsl.ir.ops.Channels`) states its semantics, and one analysis
interprets the kinds; no op is special-cased by name.

**Units.** A *unit* is one removable channel. Each node gets a *label array*
over its per-sample shape (the shape without the batch) whose elements name the
unit they belong to; arrays are kept compact (size 1 along a dimension where the
label is constant). Units are merged with a union-find. The rules, per kind:

* ``input``: one fresh unit per channel (dimension 1), fixed: a model input's
  channels are not ours to remove.
* ``produce`` (conv, linear): one fresh unit per output channel, owning the
  parameter axes of ``Channels.params`` (``weight`` axis 0, ``bias``); the
  input's unit of channel ``c`` owns the consumed axes (``weight`` axis 1, index
  ``c``). The consumed dimension is the input dimension that parameter axis is
  sized by (found from the registry's parameter rule: dimension 1 for conv, the
  last one for linear), and the output channels lie along the same dimension. With
  ``groups`` g > 1, ``Cg`` in-channels and ``Ng`` out-channels per group: if
  ``Cg == 1`` (depthwise) input channel ``c`` is merged with out-channels
  ``c*Ng .. c*Ng+Ng-1`` and removing it removes conv group ``c`` (``groups``
  shrinks, no axis-1 slice); if ``Cg > 1`` the in-channels at the same position
  ``j`` of every group are merged (they share ``weight[:, j]``), and so are the
  out-channels ``k*Ng + j``, so the groups stay equal.
* ``same``: output channel ``c`` is input channel ``c``; the per-channel
  parameters (batch norm's) get index ``c``.
* ``elementwise``: the labels of corresponding elements are merged after
  broadcasting, except for an input of size 1 along a dimension where another
  input's labels vary (a one-channel attention map times ``x``): it is not merged
  (that would couple all of ``x``'s channels) but fixed. An SE gate ``(N, C, 1, 1)``
  times ``x`` merges gate channel ``c`` with channel ``c`` of ``x``.
* ``concat`` and ``slice`` concatenate or slice the label arrays; ``reshape``
  (row-major), ``transpose`` and ``permute`` apply the same reshape, transpose or
  permutation to them (so the channels of ``permute([0, 2, 3, 1])`` lie along the last
  dimension).
* ``broadcast`` (``scale``: y = p * x): the labels pass through; a parameter axis of size
  above 1 along the dimension where the labels vary (p's axis 0 for (C, 1, 1) against
  (N, C, H, W), aligned from the right) gets the units' indices, as batch norm's weight.
* ``mix`` (softmax along ``attrs["dim"]``, LRN across channels): the units that
  vary along the mixed dimension are fixed.
* ``sample`` (grid_sample): the image's channels pass through; the other inputs
  (the grid) are consumed whole, so their units are fixed.
* ``opaque`` (and any kind not listed): every input unit is fixed; the output gets
  fresh, fixed units.

Wherever an op works on one dimension (the channels of ``same``, the consumed
dimension of ``produce``, the image channels of ``sample``) and the labels also
vary along another, the op may mix those units (pooling does), so they are fixed.

**Rectangles.** Removing a unit must leave a rectangular tensor, so after every
node the labels vary along at most one dimension, the node's *unit dimension*:
where they vary along several, the one with the most distinct slices (the first
on ties) is kept and the labels across the others are merged at each of its
coordinates. For a channel shuffle (reshape ``(C, H, W)`` to ``(g, C/g, H, W)``,
transpose, reshape back) this merges channel ``j`` of every branch; for a
flatten it changes nothing (each channel becomes a block of ``H*W`` features).

**Groups.** Units in a model output are marked (the pruning pass keeps them by
default). Units with the same *signature* (the same parameter axes, tensors and
producers with the same number of indices each, the same fixed and output reason)
form one :class:`ChannelGroup`, ordered by their index in the first producer's
output. Zeroing the consumer slices (role ``"in"``) of some units makes the model's
function independent of those units' own slices (role ``"out"``: producer filters,
biases, batch-norm parameters), which is what makes "physically pruned == masked".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, NamedTuple

import numpy as np

from . import ops
from .graph import Graph


class Positions(NamedTuple):
    """Where a group's units lie in one node's output: along ``dim`` (batch = 0),
    ``index[i]`` are the positions of unit ``i``."""
    dim: int
    index: np.ndarray


@dataclass(eq=False)
class ChannelGroup:
    """Units (channels) that are removed with the same pattern of parameter slices.

    ``slices[(param, axis)]`` is an int array of shape ``(size, k)``: the ``k``
    indices unit ``i`` removes along ``axis`` of ``graph.params[param]``;
    ``roles[(param, axis)]`` is ``"out"`` (the channel's own values: producer
    filters and biases, batch-norm parameters) or ``"in"`` (a consumer's
    in-slice). ``producers`` are the nodes whose output channels the units are
    (convs, linears, inputs), in topological order; ``tensors[nid]`` gives, for
    every node whose output holds the units, their :class:`Positions`;
    ``conv_groups[nid]`` the conv groups each unit removes (a depthwise conv's
    ``groups`` shrinks by ``k`` per unit). ``fixed`` is ``None`` or a sentence
    saying why the units cannot be removed; ``output`` likewise when they are
    part of a model output. ``span`` is the first producer's, or that of the node
    that fixes the group.
    """
    index: int
    size: int
    slices: dict
    roles: dict
    producers: tuple
    tensors: dict
    conv_groups: dict
    fixed: str | None
    output: str | None
    span: object
    shapes: dict = field(default_factory=dict, repr=False)    # node id -> output shape, for masks

    @property
    def prunable(self) -> bool:
        """Whether the units may be removed without asking (not fixed, not a model output)."""
        return self.fixed is None and self.output is None

    def items(self, units: Iterable[int] | None = None, role: str | None = None):
        """``(param, axis, indices)`` for the slices of ``units`` (default: all), optionally of one role."""
        sel = slice(None) if units is None else np.asarray(list(units), dtype=np.int64)
        for key, rows in self.slices.items():
            if role is None or self.roles[key] == role:
                yield key[0], key[1], np.sort(rows[sel].ravel())

    def mask(self, nid: int, units: Iterable[int]) -> np.ndarray:
        """A boolean vector along ``tensors[nid].dim`` of node ``nid``'s output: False at ``units``' positions."""
        dim, index = self.tensors[nid]
        keep = np.ones(self.shapes[nid][dim], dtype=bool)
        keep[index[np.asarray(list(units), dtype=np.int64)].ravel()] = False
        return keep

    def masked(self, graph: Graph, units: Iterable[int] | None = None, roles=("out", "in")) -> Graph:
        """A copy of ``graph`` with the slices of ``units`` (default: all) of the given roles zeroed."""
        return masked(graph, [(self, units)], roles)

    def summary(self, graph: Graph) -> str:
        """One line: size, producers, how many slices, and whether the group can be pruned."""
        def name(nid):
            d = graph.data(nid)
            return f"@{d['scope'] or d['attrs'].get('name', nid)} ({d['op']})"
        owned = sum(1 for r in self.roles.values() if r == "out")
        state = (f"fixed: {self.fixed}" if self.fixed else f"output: {self.output}" if self.output
                 else "prunable")
        k = max((rows.shape[1] for rows in self.slices.values()), default=0)
        per = f" (up to {k} indices per slice)" if k > 1 else ""
        return (f"group {self.index}: {self.size} channels of {', '.join(name(p) for p in self.producers)}; "
                f"{owned} own and {len(self.roles) - owned} consumer slices{per}; {state}")


def channel_groups(graph: Graph) -> list[ChannelGroup]:
    """The channel groups of ``graph``, in a deterministic order (by first producer)."""
    return _Analysis(graph).run()


def masked(graph: Graph, choice: Iterable[tuple[ChannelGroup, Iterable[int] | None]],
           roles=("out", "in")) -> Graph:
    """A copy of ``graph`` with, for each ``(group, units)`` of ``choice``, those units' slices of ``roles`` zeroed
    (``units`` None: all of the group's)."""
    g = graph.copy()
    for group, units in choice:
        for role in roles:
            for pname, axis, idx in group.items(units, role):
                value = np.array(g.params[pname].value)
                index = [slice(None)] * value.ndim
                index[axis] = idx
                value[tuple(index)] = 0
                g.params[pname].value = value
    return g


def report(graph: Graph, groups: list[ChannelGroup] | None = None) -> str:
    """One summary line per group, then the totals."""
    groups = channel_groups(graph) if groups is None else groups
    lines = [gr.summary(graph) for gr in groups]
    free = [gr for gr in groups if gr.prunable]
    lines.append(f"{len(groups)} groups, {sum(gr.size for gr in groups)} channels; {len(free)} groups "
                 f"({sum(gr.size for gr in free)} channels) prunable")
    return "\n".join(lines)


# ---- the union-find over unit ids ---------------------------------------------------------------

class _Units:
    def __init__(self):
        self.parent = np.zeros(0, dtype=np.int64)
        self.n = 0

    def fresh(self, n: int) -> np.ndarray:
        if self.n + n > len(self.parent):
            size = max(2 * len(self.parent), self.n + n, 1024)
            self.parent = np.concatenate([self.parent, np.arange(len(self.parent), size, dtype=np.int64)])
        out = np.arange(self.n, self.n + n, dtype=np.int64)
        self.n += n
        return out

    def find(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.int64)
        r = self.parent[x]
        while True:
            up = self.parent[r]
            if np.array_equal(up, r):
                break
            r = up
        self.parent[x] = r
        return r

    def union(self, a, b) -> None:
        a, b = np.ravel(a), np.ravel(b)
        while True:                   # roots point to smaller roots, so this terminates
            ra, rb = self.find(a), self.find(b)
            differ = ra != rb
            if not differ.any():
                return
            self.parent[np.maximum(ra[differ], rb[differ])] = np.minimum(ra[differ], rb[differ])


def _compact(a: np.ndarray) -> np.ndarray:
    for ax in range(a.ndim):
        if a.shape[ax] > 1 and (a == a.take([0], axis=ax)).all():
            a = a.take([0], axis=ax)
    return a


def _axis(dim: int, rank: int) -> int:
    """The per-sample axis of dimension ``dim`` (batch = 0, negatives from the end) of a rank-``rank`` shape."""
    return dim % rank - 1


class _Analysis:
    def __init__(self, graph: Graph):
        self.g = graph
        self.u = _Units()
        self.order = {nid: i for i, nid in enumerate(graph.node_ids())}
        self.labels: dict[int, np.ndarray] = {}
        self.keys: dict[tuple, int] = {}
        self.records: list[tuple[int, np.ndarray, np.ndarray]] = []
        self.marks = {"fixed": [], "output": []}     # (units, reason, nid)

    # ---- bookkeeping
    def full(self, nid) -> tuple:
        return tuple(self.g.data(nid)["shape"][1:])

    def label(self, nid) -> np.ndarray:
        a = _compact(self.u.find(self.labels[nid]))
        self.labels[nid] = a
        return a

    def record(self, key: tuple, units: np.ndarray, idx=None) -> None:
        kid = self.keys.setdefault(key, len(self.keys))
        units = np.ravel(units)
        idx = np.arange(len(units)) if idx is None else np.ravel(idx)
        self.records.append((kid, units.astype(np.int64), idx.astype(np.int64)))

    def mark(self, what: str, units, reason: str, nid: int) -> None:
        self.marks[what].append((np.unique(units), reason, nid))

    def where(self, nid) -> str:
        d = self.g.data(nid)
        return f"'{d['op']}' at @{d['scope'] or d['attrs'].get('name', nid)}"

    def merge_to(self, a: np.ndarray, axis: int) -> np.ndarray:
        """Merge the labels across every other axis at each coordinate of ``axis``."""
        rows = np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1)
        self.u.union(np.broadcast_to(rows[:, :1], rows.shape), rows)
        return _compact(self.u.find(a))

    def normalise(self, a: np.ndarray) -> np.ndarray:
        a = _compact(self.u.find(a))
        varying = [ax for ax in range(a.ndim) if a.shape[ax] > 1]
        if len(varying) <= 1:
            return a
        distinct = [len(np.unique(np.moveaxis(a, ax, 0).reshape(a.shape[ax], -1), axis=0)) for ax in varying]
        return self.merge_to(a, varying[int(np.argmax(distinct))])

    def along(self, nid, x, axis: int, what: str) -> np.ndarray:
        """The labels of ``x`` along ``axis`` as a vector; units varying along other axes are fixed first."""
        a = self.label(x)
        if any(a.shape[ax] > 1 for ax in range(a.ndim) if ax != axis):
            others = [ax + 1 for ax in range(a.ndim) if ax != axis and a.shape[ax] > 1]
            self.mark("fixed", a, f"{self.where(nid)} works on dimension {axis + 1} of its {what} only and may mix "
                                  f"its positions along dimension {others[0]}, where these channels lie.", nid)
            a = self.merge_to(a, axis)
        return np.broadcast_to(np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1)[:, 0], (self.full(x)[axis],))

    def channel_dim(self, nid, entries) -> int:
        """The input dimension that the first present parameter axis of ``entries`` is sized by (default 1)."""
        d = self.g.data(nid)
        opdef = ops.get(d["op"])
        shapes = [self.g.data(i)["shape"] for i in d["inputs"]]
        for local, axis in entries:
            if local not in d["params"]:
                continue
            base = opdef.params(d["attrs"], shapes)[local].shape[axis]
            for dim in range(1, len(shapes[0])):
                probe = list(shapes[0])
                probe[dim] *= 2
                try:
                    if opdef.params(d["attrs"], [tuple(probe), *shapes[1:]])[local].shape[axis] != base:
                        return dim
                except Exception:        # a rule that refuses the probe says nothing
                    continue
        return 1

    def line(self, vec: np.ndarray, axis: int, rank: int) -> np.ndarray:
        shape = [1] * rank
        shape[axis] = len(vec)
        return np.asarray(vec).reshape(shape)

    # ---- the kinds
    def k_input(self, nid, d, ch):
        full = self.full(nid)
        units = self.u.fresh(full[0] if full else 1)
        self.record(("born", nid), units)
        self.mark("fixed", units, f"The channels of the model input '{d['attrs'].get('name', nid)}' are fixed.", nid)
        return self.line(units, 0, len(full)) if full else units.reshape(())

    def k_produce(self, nid, d, ch):
        x = d["inputs"][0]
        axis = self.channel_dim(nid, ch.consumes) - 1
        vec = self.along(nid, x, axis, "input")
        g = d["attrs"].get("groups", 1)
        c, n = len(vec), self.full(nid)[axis]
        cg, ng = c // g, n // g
        out = self.u.fresh(n)
        self.record(("born", nid), out)
        for local, pax in ch.params:
            if local in d["params"]:
                self.record(("out", d["params"][local], pax), out)
        if g > 1 and cg == 1:                  # depthwise: in-channel c is conv group c
            self.u.union(np.repeat(vec, ng), out)
            self.record(("groups", nid), vec)
        else:
            if g > 1:                          # position j of every group shares weight[:, j]
                for v in (vec.reshape(g, cg), out.reshape(g, ng)):
                    self.u.union(np.broadcast_to(v[:1], v.shape), v)
            for local, pax in ch.consumes:
                if local in d["params"]:
                    self.record(("in", d["params"][local], pax), vec[:cg])
        return self.line(out, axis, len(self.full(nid)))

    def k_same(self, nid, d, ch):
        x = d["inputs"][0]
        if not self.full(x):
            return self.label(x)
        axis = self.channel_dim(nid, ch.params) - 1
        vec = self.along(nid, x, axis, "input")
        for local, pax in ch.params:
            if local in d["params"]:
                self.record(("out", d["params"][local], pax), vec)
        return self.line(vec, axis, len(self.full(nid)))

    def k_elementwise(self, nid, d, ch):
        full = self.full(nid)
        rank = len(full)
        labels, shapes = [], []
        for i in d["inputs"]:
            a, pad = self.label(i), (1,) * (rank - len(self.full(i)))
            labels.append(a.reshape(pad + a.shape))
            shapes.append(pad + self.full(i))
        broadcast = []
        for k, (a, s) in enumerate(zip(labels, shapes)):
            dims = [ax for ax in range(rank) if s[ax] == 1 and full[ax] > 1
                    and any(b.shape[ax] > 1 for j, b in enumerate(labels) if j != k)]
            if dims:
                broadcast.append(k)
                self.mark("fixed", a, f"{self.where(nid)} broadcasts its input {k + 1} along dimension "
                                      f"{dims[0] + 1}, where the other inputs' channels lie, so its channels "
                                      "cannot be removed.", nid)
        rest = [a for k, a in enumerate(labels) if k not in broadcast] or labels
        common = tuple(max(a.shape[ax] for a in rest) for ax in range(rank))
        rest = [np.broadcast_to(a, common) for a in rest]
        for a in rest[1:]:
            self.u.union(rest[0], a)
        return rest[0]

    def k_concat(self, nid, d, ch):
        full = self.full(nid)
        axis = _axis(d["attrs"]["dim"], len(full) + 1)
        labels = [self.label(i) for i in d["inputs"]]
        common = [max(a.shape[ax] for a in labels) for ax in range(len(full))]
        parts = []
        for i, a in zip(d["inputs"], labels):
            common[axis] = self.full(i)[axis]
            parts.append(np.broadcast_to(a, tuple(common)))
        return np.concatenate(parts, axis=axis)

    def k_slice(self, nid, d, ch):
        x = d["inputs"][0]
        full = self.full(x)
        axis = _axis(d["attrs"]["dim"], len(full) + 1)
        a = self.label(x)
        shape = list(a.shape)
        shape[axis] = full[axis]
        return np.broadcast_to(a, tuple(shape)).take(range(d["attrs"]["start"], d["attrs"]["end"]), axis=axis)

    def k_reshape(self, nid, d, ch):
        x = d["inputs"][0]
        return np.broadcast_to(self.label(x), self.full(x)).reshape(self.full(nid))

    def k_transpose(self, nid, d, ch):
        x = d["inputs"][0]
        rank = len(self.full(x)) + 1
        return np.swapaxes(self.label(x), _axis(d["attrs"]["dim0"], rank), _axis(d["attrs"]["dim1"], rank))

    def k_permute(self, nid, d, ch):
        x = d["inputs"][0]
        rank = len(self.full(x)) + 1
        dims = [k % rank for k in d["attrs"]["dims"]]
        return np.transpose(self.label(x), [k - 1 for k in dims[1:]])

    def k_broadcast(self, nid, d, ch):
        x = d["inputs"][0]
        a = self.label(x)
        full = self.full(x)
        varying = [ax for ax in range(a.ndim) if a.shape[ax] > 1]
        if not varying:
            return a
        axis = varying[0]
        vec = np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1)[:, 0]
        shapes = [self.g.data(i)["shape"] for i in d["inputs"]]
        specs = ops.get(d["op"]).params(d["attrs"], shapes)
        for local, _ in ch.params:
            if local not in d["params"]:
                continue
            pshape = specs[local].shape
            pax = axis - (len(full) - len(pshape))
            if 0 <= pax < len(pshape) and pshape[pax] > 1:
                self.record(("out", d["params"][local], pax), np.broadcast_to(vec, (full[axis],)))
        return a

    def k_mix(self, nid, d, ch):
        x = d["inputs"][0]
        a = self.label(x)
        if a.ndim:
            axis = _axis(d["attrs"]["dim"], a.ndim + 1) if "dim" in d["attrs"] else 0
            if a.shape[axis] > 1:
                self.mark("fixed", a, f"{self.where(nid)} mixes the channels along dimension {axis + 1}; "
                                      "removing one changes the others.", nid)
        return a

    def k_sample(self, nid, d, ch):
        image, *others = d["inputs"]
        vec = self.along(nid, image, 0, "image")
        for k, i in enumerate(others, 2):
            self.mark("fixed", self.label(i), f"{self.where(nid)} consumes its input {k} (the sampling grid) "
                                              "whole.", nid)
        return self.line(vec, 0, len(self.full(nid)))

    def k_opaque(self, nid, d, ch):
        for i in d["inputs"]:
            self.mark("fixed", self.label(i), f"{self.where(nid)} has no channel rule (its kind is "
                                              f"'{ch.kind}'), so the channels of its inputs cannot be removed.", nid)
        full = self.full(nid)
        units = self.u.fresh(full[0] if full else 1)
        self.record(("born", nid), units)
        self.mark("fixed", units, f"{self.where(nid)} has no channel rule (its kind is '{ch.kind}'), so the "
                                  "channels it makes cannot be removed.", nid)
        return self.line(units, 0, len(full)) if full else units.reshape(())

    # ---- the whole graph
    def run(self) -> list[ChannelGroup]:
        for nid in self.order:
            d = self.g.data(nid)
            opdef = ops.get(d["op"])
            ch = opdef.channels if opdef is not None else ops.Channels("opaque")
            rule = getattr(self, "k_" + ch.kind, self.k_opaque)
            a = self.normalise(rule(nid, d, ch))
            self.labels[nid] = a
            if a.ndim:
                axis = next((ax for ax in range(a.ndim) if a.shape[ax] > 1), 0)
                vec = np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1)[:, 0]
                self.record(("tensor", nid, axis + 1), np.broadcast_to(vec, (self.full(nid)[axis],)))
        for nid in self.g.outputs:
            self.mark("output", self.label(nid), f"It produces the model output {self.where(nid)}.", nid)
        return self.assemble()

    def reasons(self, what: str) -> dict:
        """root -> (reason, nid) of the first mark of ``what`` reaching it."""
        out = {}
        for units, reason, nid in self.marks[what]:
            for r in np.unique(self.u.find(units)).tolist():
                out.setdefault(r, (reason, nid))
        return out

    def assemble(self) -> list[ChannelGroup]:
        keys = list(self.keys)
        kid = np.concatenate([np.full(len(u), k, dtype=np.int64) for k, u, _ in self.records])
        root = self.u.find(np.concatenate([u for _, u, _ in self.records]))
        idx = np.concatenate([i for _, _, i in self.records])
        order = np.lexsort((idx, kid, root))
        root, kid, idx = root[order], kid[order], idx[order]
        starts = np.flatnonzero(np.r_[True, (root[1:] != root[:-1]) | (kid[1:] != kid[:-1])])
        counts = np.diff(np.r_[starts, len(root)])
        run_root, run_kid = root[starts], kid[starts]
        first = np.flatnonzero(np.r_[True, run_root[1:] != run_root[:-1]])
        last = np.r_[first[1:], len(run_root)]
        sig = np.stack([run_kid, counts], axis=1)
        fixed, output = self.reasons("fixed"), self.reasons("output")
        buckets: dict[tuple, list[int]] = {}
        for s, e in zip(first.tolist(), last.tolist()):
            r = int(run_root[s])
            f, o = fixed.get(r), output.get(r)
            buckets.setdefault((sig[s:e].tobytes(), f and f[0], o and o[0]), []).append(s)

        shapes = {nid: tuple(self.g.data(nid)["shape"]) for nid in self.order}
        made = []
        for (_, freason, oreason), runs in buckets.items():
            runs = np.asarray(runs)
            n = int(np.searchsorted(first, runs[0]))
            width = int(last[n] - first[n])
            table = {}
            for t in range(width):
                k = int(counts[runs[0] + t])
                rows = idx[starts[runs + t][:, None] + np.arange(k)]
                table[keys[int(run_kid[runs[0] + t])]] = rows
            born = sorted((key for key in table if key[0] == "born"), key=lambda key: self.order[key[1]])
            perm = np.argsort(table[born[0]][:, 0], kind="stable")
            table = {key: rows[perm] for key, rows in table.items()}
            slices = {(key[1], key[2]): rows for key, rows in table.items() if key[0] in ("out", "in")}
            roles = {(key[1], key[2]): key[0] for key in table if key[0] in ("out", "in")}
            tensors = {key[1]: Positions(key[2], rows) for key, rows in table.items() if key[0] == "tensor"}
            conv_groups = {key[1]: rows for key, rows in table.items() if key[0] == "groups"}
            producers = tuple(key[1] for key in born)
            root0 = int(run_root[runs[perm[0]]])
            at = fixed[root0][1] if freason else producers[0]
            group = ChannelGroup(0, len(runs), slices, roles, producers, tensors, conv_groups, freason, oreason,
                                 self.g.data(at)["span"], {nid: shapes[nid] for nid in tensors})
            made.append(((self.order[producers[0]], int(table[born[0]][0, 0])), group))
        made.sort(key=lambda m: m[0])
        for i, (_, group) in enumerate(made):
            group.index = i
        return [group for _, group in made]
