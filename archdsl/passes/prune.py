"""``prune``: structured channel pruning. Removed channels are physically removed, and every tensor tied
to them shrinks with them.

**Groups.** :func:`archdsl.ir.channels.channel_groups` finds, from the op
registry alone, the units (channels) that must go together and, for each, the
parameter slices it owns: producers' filters and biases and batch-norm entries
(role ``out``) and every consumer's in-slice (role ``in``), through residual
adds, concatenations, grouped and depthwise convs, channel shuffles, SE gates
and flatten -> linear. A group that cannot be pruned (it reaches a model input
or output, a softmax over channels, a sampling grid...) is reported with the
reason and its span.

**Exactness.** Removing unit ``u`` deletes all of its slices. Every value that
channel ``u`` carries reaches the rest of the network only through the
consumers' in-slices, so the pruned network computes exactly what the original
computes with those in-slices set to zero: *physically pruned == masked*
(tested on every zoo model with random batch-norm statistics). A channel that
was already dead (zero after its batch norm) therefore leaves the outputs
unchanged.

**How many.** ``ratio=r`` removes ``floor(r * n)`` of the ``n`` units of every
prunable group (uniform, local ranking). ``macs=m`` instead keeps a fraction
``m`` of the model's MACs: every group's scores are divided by the group's mean
(so groups compare), and one global threshold ``t`` is raised until the MACs
of the pruned model (counted exactly, from the new shapes through the
registry's MAC rules) fall to ``m`` times the original, removing at most
``floor(max_ratio * n)`` units of any group (0.8 unless given; ``max_ratio``
with ``ratio`` is refused, as there every group loses the same fraction).
``round_to=k`` keeps each group's channel count a multiple of ``k`` (rounding
the count kept up), for kernels that like aligned widths. Within a group the units with the lowest scores go
first (see :mod:`archdsl.passes.importance` for the criteria).

The threshold's last step can remove a ``k``-block from many groups at once
and overshoot (ShuffleNetV2 at ``round_to=16`` landed at 0.466 of its MACs for
``m = 0.5``). So the removed blocks are then given back, one per group, in the
order of score per MAC: a block of units ``B`` whose return adds ``dM`` MACs is
worth ``sum_{u in B} s_u / dM`` (``s`` the normalised scores), and it comes back
when the MACs stay at or under ``m`` times the original. The pass thus lands
within one block of the target (0.497 to 0.500 on the zoo's networks).

**Attributes.** After the slices are removed, each op's attributes follow from
the new shapes: a producer's width attribute (the registry's
``Channels.width``: ``out_channels``, ``out_features``) shrinks by the units
removed from its output, a depthwise conv's ``groups`` by the conv groups
removed, a ``slice`` keeps the same surviving positions, and a ``reshape``'s
target shape becomes the new shape, as does a ``scale``'s parameter shape; then every
type is re-inferred.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ..diagnostics import IRError
from ..ir import ops
from ..ir.channels import ChannelGroup, channel_groups
from ..ir.graph import Graph
from ..ir.verify import infer_types
from .base import OptionError, Pass, PassReport, in_scopes, listing, note_unmatched, register, scope_patterns
from .context import PassContext
from .importance import CRITERIA, scores

SAMPLES = 64               # taylor and obd: samples of the data read unless samples says otherwise
MAX_RATIO = 0.8            # with macs=, the most of any group removed unless max_ratio says otherwise


def _removed_count(size: int, want: int, round_to: int, cap: int | None = None) -> int:
    """Units to remove from a group of ``size`` so that the count kept is a multiple of ``round_to``."""
    want = min(want, size - 1 if cap is None else min(cap, size - 1))
    keep = size - max(want, 0)
    if round_to > 1:
        keep = min(size, -(-keep // round_to) * round_to)
    return size - keep


class _Plan:
    """New shapes, attributes and MACs of the graph for a choice of units to remove (``removal``: group
    index -> sorted unit indices). A node's MACs depend only on its own cut and its inputs' cuts, so
    :class:`_Tally` re-counts, for a change to one group, only the nodes that group reaches."""

    def __init__(self, graph: Graph, groups: list[ChannelGroup]):
        self.g = graph
        self.groups = groups
        self.order = graph.node_ids()
        self.touch: dict[int, list] = {}
        for gi, gr in enumerate(groups):
            for nid, pos in gr.tensors.items():
                self.touch.setdefault(nid, []).append((gi, pos))
        self.groups_of_conv: dict[int, list] = {}
        for gi, gr in enumerate(groups):
            for nid, rows in gr.conv_groups.items():
                self.groups_of_conv.setdefault(nid, []).append((gi, rows))
        self._reach: dict[int, list] = {}

    def _cut(self, nid: int, removal: dict, memo: dict) -> dict:
        """{dim: sorted positions removed from node ``nid``'s output} (memoised in ``memo``)."""
        if nid not in memo:
            parts: dict[int, list] = {}
            for gi, pos in self.touch.get(nid, ()):
                units = removal.get(gi)
                if units is not None and len(units):
                    parts.setdefault(pos.dim, []).append(pos.index[np.asarray(units, dtype=np.int64)].ravel())
            memo[nid] = {dim: np.unique(np.concatenate(idx)) for dim, idx in parts.items()}
        return memo[nid]

    def _shape(self, nid: int, removal: dict, memo: dict) -> tuple:
        shape = list(self.g.data(nid)["shape"])
        for dim, idx in self._cut(nid, removal, memo).items():
            shape[dim] -= len(idx)
        return tuple(shape)

    def removed(self, removal: dict) -> dict:
        """node id -> {dim: sorted positions removed from its output}."""
        memo: dict = {}
        return {nid: cut for nid in self.touch if (cut := self._cut(nid, removal, memo))}

    def shapes_attrs(self, removal: dict) -> tuple[dict, dict]:
        """node id -> new shape, and node id -> new attrs for the nodes whose attributes change."""
        memo: dict = {}
        shapes, attrs = {}, {}
        for nid in self.order:
            d = self.g.data(nid)
            shapes[nid] = self._shape(nid, removal, memo)
            new = self._attrs(nid, d, removal, memo)
            if new is not None and new != d["attrs"]:
                attrs[nid] = new
        return shapes, attrs

    def _attrs(self, nid: int, d: dict, removal: dict, memo: dict) -> dict | None:
        if d["op"] == "input":
            return None
        ch = ops.get(d["op"]).channels
        a = dict(d["attrs"])
        cut = self._cut(nid, removal, memo)
        if ch.kind == "produce" and ch.width:
            a[ch.width] -= sum(len(idx) for idx in cut.values())
            for gi, rows in self.groups_of_conv.get(nid, []):
                units = removal.get(gi)
                if units is not None and len(units):
                    a["groups"] -= rows[np.asarray(units, dtype=np.int64)].size
        elif ch.kind == "slice":
            x = d["inputs"][0]
            dim = a["dim"] % len(self.g.data(x)["shape"])
            gone = self._cut(x, removal, memo).get(dim)
            if gone is not None:
                a["start"] -= int(np.sum(gone < d["attrs"]["start"]))
                a["end"] -= int(np.sum(gone < d["attrs"]["end"]))
        elif ch.kind == "broadcast" and "shape" in a and cut:
            # scale's parameter (shape attribute) shrinks along the axis aligned with the removed positions
            rank, shape = len(d["shape"]), list(a["shape"])
            for dim, idx in cut.items():
                k = dim - (rank - len(shape))
                if 0 <= k < len(shape) and shape[k] > 1:
                    shape[k] -= len(idx)
            a["shape"] = tuple(shape)
        elif ch.kind == "reshape" and "shape" in a and cut:
            shape = list(d["shape"])
            for dim, idx in cut.items():
                shape[dim] -= len(idx)
            a["shape"] = tuple(-1 if w == -1 else s for w, s in zip(a["shape"], shape[1:]))
        return a

    def node_macs(self, nid: int, removal: dict, memo: dict) -> int:
        d = self.g.data(nid)
        if d["op"] == "input":
            return 0
        attrs = self._attrs(nid, d, removal, memo)
        return ops.macs(d["op"], attrs, [self._shape(i, removal, memo) for i in d["inputs"]],
                        self._shape(nid, removal, memo))

    def macs(self, removal: dict) -> int:
        memo: dict = {}
        return sum(self.node_macs(nid, removal, memo) for nid in self.order)

    def reach(self, gi: int) -> list[int]:
        """The nodes whose MACs can depend on group ``gi``: those holding its units and their users."""
        if gi not in self._reach:
            held = set(self.groups[gi].tensors) | set(self.groups[gi].conv_groups)
            self._reach[gi] = sorted(held | {u for n in held for u in self.g.users(n)})
        return self._reach[gi]


class _Tally:
    """The MACs of a removal, kept per node, so that changing one group re-counts only what it reaches."""

    def __init__(self, plan: _Plan, removal: dict):
        self.plan, self.removal = plan, dict(removal)
        memo: dict = {}
        self.per = {nid: plan.node_macs(nid, self.removal, memo) for nid in plan.order}
        self.total = sum(self.per.values())

    def trial(self, gi: int, units) -> _Trial:
        """Group ``gi`` removing ``units`` instead, counted but not taken."""
        removal = {**self.removal, gi: units}
        memo: dict = {}
        new = {nid: self.plan.node_macs(nid, removal, memo) for nid in self.plan.reach(gi)}
        return _Trial(removal, new, self.total + sum(new.values()) - sum(self.per[nid] for nid in new))

    def commit(self, trial: _Trial) -> None:
        self.removal, self.total = trial.removal, trial.total
        self.per.update(trial.macs)


class _Trial(NamedTuple):
    removal: dict         # group -> removed units, for every group
    macs: dict            # node -> MACs, for the nodes the changed group reaches
    total: int            # the model's MACs under ``removal``


@register
@dataclass
class Prune(Pass):
    """Removes whole channels (structured pruning); every tensor tied to them shrinks with them."""

    name = "prune"
    ratio: float | None = field(default=None, metadata={
        "doc": "fraction of the channels removed from every prunable group (uniform)"})
    macs: float | None = field(default=None, metadata={
        "doc": "instead: fraction of the model's MACs to keep, groups ranked globally"})
    max_ratio: float | None = field(default=None, metadata={
        "doc": f"with macs: at most this fraction of any group removed (none: {MAX_RATIO:g})"})
    criterion: str = field(default="l1", metadata={"doc": "l1, l2, bn-scale, taylor, obd or random"})
    round_to: int = field(default=1, metadata={"doc": "keep channel counts multiples of this"})
    keep: str | None = field(default=None, metadata={
        "doc": "comma-separated scope patterns never pruned (the model outputs' producers always are)"})
    samples: int = field(default=SAMPLES, metadata={"doc": "taylor and obd: samples of the data used"})

    def __post_init__(self):
        super().__post_init__()
        if (self.ratio is None) == (self.macs is None):
            raise OptionError("give exactly one of ratio= (a fraction of channels to remove) and macs= (a fraction "
                              "of MACs to keep), as in prune{ratio=0.5}.")
        if self.ratio is not None and not 0.0 <= self.ratio < 1.0:
            raise OptionError(f"ratio must be at least 0 and below 1, but it is {self.ratio:g}.", "ratio")
        if self.macs is not None and not 0.0 < self.macs <= 1.0:
            raise OptionError(f"macs must be above 0 and at most 1, but it is {self.macs:g}.", "macs")
        if self.max_ratio is not None and self.ratio is not None:
            raise OptionError("max_ratio limits how much of any group macs= may remove; with ratio= every group "
                              "loses the same fraction, so drop max_ratio or give macs= instead.", "max_ratio")
        if self.max_ratio is None and self.macs is not None:
            self.max_ratio = MAX_RATIO         # only macs= uses it: with ratio= the pass text stays as given
        if self.max_ratio is not None and not 0.0 <= self.max_ratio < 1.0:
            raise OptionError(f"max_ratio must be at least 0 and below 1, but it is {self.max_ratio:g}.",
                              "max_ratio")
        if self.criterion not in CRITERIA:
            raise OptionError(f"there is no criterion '{self.criterion}'; the criteria are "
                              f"{listing(CRITERIA)}.", "criterion")
        if self.round_to < 1:
            raise OptionError(f"round_to must be at least 1, but it is {self.round_to}.", "round_to")
        if self.samples < 1:
            raise OptionError(f"samples must be at least 1, but it is {self.samples}.", "samples")
        if self.samples != SAMPLES and self.criterion not in ("taylor", "obd"):
            raise OptionError(f"samples sets how much data the taylor and obd criteria read; criterion="
                              f"{self.criterion} reads none, so drop samples.", "samples")

    def expected_error(self) -> float:
        """Pruning changes the function by design (its exactness is against masking, which the tests check)."""
        return 0.0 if (self.ratio == 0.0 or self.macs == 1.0) else math.inf

    def rewrite(self, graph: Graph, report: PassReport, ctx: PassContext) -> bool:
        groups = channel_groups(graph)
        patterns = scope_patterns(self.keep)
        note_unmatched(graph, patterns, "keep", report)
        cands = []
        for gi, gr in enumerate(groups):
            producers = [p for p in gr.producers if graph.data(p)["op"] != "input"]
            if gr.fixed is not None:
                if producers:
                    report.refuse(graph, producers[0], f"Its {gr.size} channels cannot be pruned: {gr.fixed}")
                continue
            if gr.output is not None or gr.size < 2:
                continue
            if any(in_scopes(graph.data(p)["scope"], patterns) for p in producers):
                continue
            cands.append(gi)
        if self.ratio == 0.0 or self.macs == 1.0 or not cands:
            return False
        sc, used = scores(graph, [groups[i] for i in cands], self.criterion, ctx, self.samples)
        score = dict(zip(cands, sc))
        plan = _Plan(graph, groups)
        if self.ratio is not None:
            removal = {}
            for gi in cands:
                n = _removed_count(groups[gi].size, math.floor(self.ratio * groups[gi].size + 1e-9), self.round_to)
                removal[gi] = np.sort(np.argsort(score[gi], kind="stable")[:n])
        else:
            removal = self._by_macs(plan, groups, cands, score, report)
        removal = {gi: u for gi, u in removal.items() if len(u)}
        if not removal:
            largest = max(groups[gi].size for gi in cands)
            why = (f"round_to={self.round_to} keeps every group whole (each keeps a multiple of {self.round_to} "
                   f"channels, and the largest prunable group has {largest})" if self.round_to >= largest else
                   f"ratio={self.ratio:g} removes no channel from any group (floor(ratio x channels) is 0 up to the "
                   f"largest prunable group, {largest} channels)" if self.ratio is not None else
                   f"round_to={self.round_to} and max_ratio={self.max_ratio:g} leave no channel to remove")
            report.note(f"Nothing was pruned: {why}.")
            return False
        self._apply(graph, plan, groups, removal, report)
        for gi, how in zip(cands, used):
            if how != self.criterion and gi in removal:
                report.note(f"Group {gi} ({_names(graph, groups[gi])}) has no {self.criterion} score, so it was "
                            f"ranked by {how}.")
        return True

    def _by_macs(self, plan: _Plan, groups, cands, score, report: PassReport) -> dict:
        total = plan.macs({})
        target = self.macs * total
        norm = {gi: score[gi] / (score[gi].mean() or 1.0) for gi in cands}
        ranked = {gi: np.argsort(norm[gi], kind="stable") for gi in cands}
        thresholds = np.unique(np.concatenate([norm[gi] for gi in cands]))

        def removal_at(k: int) -> dict:
            t = thresholds[k] if k < len(thresholds) else np.inf
            out = {}
            for gi in cands:
                size = groups[gi].size
                want = int(np.sum(norm[gi] < t))
                n = _removed_count(size, want, self.round_to, math.floor(self.max_ratio * size))
                out[gi] = np.sort(ranked[gi][:n])
            return out

        lo, hi = 0, len(thresholds)            # the smallest k whose removal reaches the target
        if (least := plan.macs(removal_at(hi))) > target:
            report.note(f"The MAC target macs={self.macs:g} is out of reach: removing max_ratio={self.max_ratio:g} "
                        f"of every prunable group (round_to={self.round_to}) keeps {least / total:.3f} of the MACs, "
                        f"so the pass stopped there; raise max_ratio or lower round_to to go further.")
            return removal_at(hi)              # as far as max_ratio allows
        while lo < hi:
            mid = (lo + hi) // 2
            if plan.macs(removal_at(mid)) <= target:
                hi = mid
            else:
                lo = mid + 1
        return self._give_back(plan, groups, ranked, norm, removal_at(lo), target)

    def _give_back(self, plan: _Plan, groups, ranked: dict, norm: dict, removal: dict, target: float) -> dict:
        """The threshold's last step removes whole ``round_to`` blocks from many groups at once and can
        overshoot the target; give back the removed blocks that keep the most score per MAC, while the
        MACs stay at or under the target."""
        def restored(gi: int) -> np.ndarray:
            size, n = groups[gi].size, len(removal[gi])
            keep = min(size, size - n + self.round_to)
            return np.sort(ranked[gi][:size - keep])

        tally = _Tally(plan, removal)
        offers = []
        for gi, units in removal.items():
            if not len(units):
                continue
            less = restored(gi)
            added = tally.trial(gi, less).total - tally.total
            worth = float(np.sum(norm[gi][np.setdiff1d(units, less)]))
            offers.append((-(worth / added) if added > 0 else -math.inf, gi, less))
        for _, gi, less in sorted(offers, key=lambda o: o[:2]):
            trial = tally.trial(gi, less)
            if trial.total <= target:
                tally.commit(trial)
        return tally.removal

    def _apply(self, graph: Graph, plan: _Plan, groups, removal: dict, report: PassReport) -> None:
        shapes, attrs = plan.shapes_attrs(removal)
        before = {nid: (graph.data(nid)["shape"], dict(graph.data(nid)["attrs"])) for nid in plan.order}
        kept_out = {}
        cut = plan.removed(removal)
        cuts: dict[tuple, np.ndarray] = {}
        for gi, units in removal.items():
            for pname, axis, idx in groups[gi].items(units):
                cuts[(pname, axis)] = np.union1d(cuts.get((pname, axis), np.zeros(0, np.int64)), idx)
        for (pname, axis), idx in sorted(cuts.items()):
            size = graph.params[pname].shape[axis]
            graph.resize_param(pname, axis, np.setdiff1d(np.arange(size), idx))
        for nid, a in attrs.items():
            graph.update(nid, attrs=a)
        infer_types(graph, update=True)
        for nid in plan.order:
            if tuple(graph.data(nid)["shape"]) != shapes[nid]:
                raise IRError(f"prune: node @{graph.data(nid)['scope']} came out as {graph.data(nid)['shape']}, "
                              f"not the planned {shapes[nid]} (a bug in the channel analysis).",
                              graph.data(nid)["span"])
        for nid in plan.order:
            d = graph.data(nid)
            ch = ops.get(d["op"]).channels
            if ch.kind != "produce" or not ch.width:
                continue
            old_shape, old_attrs = before[nid]
            x = d["inputs"][0]
            row = {"op": d["op"], "channels_before": old_attrs[ch.width], "channels_after": d["attrs"][ch.width],
                   "in_before": before[x][0][1] if d["op"] == "conv" else before[x][0][-1],
                   "in_after": graph.data(x)["shape"][1] if d["op"] == "conv" else graph.data(x)["shape"][-1]}
            if "groups" in d["attrs"] and d["attrs"]["groups"] != old_attrs["groups"]:
                row["groups_before"], row["groups_after"] = old_attrs["groups"], d["attrs"]["groups"]
            if row["channels_after"] != row["channels_before"]:
                dim = next(iter(cut.get(nid, {1: None})))
                gone = cut.get(nid, {}).get(dim, np.zeros(0, np.int64))
                kept_out[nid] = np.setdiff1d(np.arange(old_shape[dim]), gone)
                row["kept"] = kept_out[nid].tolist()
            report.layer(d["scope"], **row)
        report.did(f"removed {sum(len(u) for u in removal.values())} channels from {len(removal)} groups")
        if self.round_to > 1:
            off = [row for row in report.layers if row["channels_after"] != row["channels_before"]
                   and row["channels_after"] % self.round_to]
            if off:
                report.note(f"round_to={self.round_to} is not met by {len(off)} layers whose channels come from "
                            f"several groups (as after a channel shuffle): " +
                            ", ".join(f"@{r['layer']} ({r['channels_after']})" for r in off[:4]) +
                            (", ..." if len(off) > 4 else "") + ".")


def _names(graph: Graph, group: ChannelGroup) -> str:
    return ", ".join("@" + graph.data(p)["scope"] for p in group.producers[:3]) + (
        ", ..." if len(group.producers) > 3 else "")
