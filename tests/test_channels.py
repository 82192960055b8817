"""Channel groups (archdsl.ir.channels): which parameter slices must be removed together.

* The zoo: a ResNet residual stream is one group (stem, every block's last conv and
  bn, the stage's projection, the in-slices of every conv reading it); bottleneck
  inner convs are groups of their own; a DenseNet layer's new maps reach every
  later layer of its block and the transition at the concat offsets; an Inception
  branch's maps reach the next module's four branches at the branch's offset; VGG's
  last conv owns 49 (7x7) contiguous columns of the first linear per channel; the
  STN's regression output is fixed by affine_grid, and the image's channels pass
  grid_sample.
* Small specs: depthwise (with and without a multiplier) and grouped convs, SE
  gating, spatial attention, channel shuffle (std.layers), softmax over channels
  and over height, flatten -> linear.
* Every (parameter, axis) slice lies in exactly one group, and every produced or
  per-channel axis is covered.
* Numerically, through the PyTorch backend with random batch-norm statistics:
  once the consumer in-slices of some units are zeroed, randomising those units'
  own slices (filters, biases, batch norm) leaves the output unchanged within
  1e-5, while randomising them without the zeroing changes it.
* Two runs give identical groups.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

import archdsl
from archdsl.ir import ops
from archdsl.ir.channels import ChannelGroup, channel_groups, masked, report

import zoo
from zoo import ZOO, ir_outputs, load_small, zoo_models


# ---- helpers ---------------------------------------------------------------------------------

def groups_of(g) -> list[ChannelGroup]:
    t = time.perf_counter()
    out = channel_groups(g)
    print(f"channel_groups({g.name}): {len(g)} nodes, {len(out)} groups, {time.perf_counter() - t:.3f} s")
    return out


def group_of(groups, param: str, axis: int = 0) -> ChannelGroup:
    (found,) = [gr for gr in groups if (param, axis) in gr.slices]
    return found


def keys(group, role=None) -> set:
    return {k for k, r in group.roles.items() if role is None or r == role}


BN = ("weight", "bias", "running_mean", "running_var")


def bn_keys(scope: str) -> set:
    return {(f"{scope}.{p}", 0) for p in BN}


def node(g, scope: str):
    return g.node(g.by_scope(scope))


def load(text: str):
    return archdsl.load(text)


# ---- ResNet ------------------------------------------------------------------------------------

@pytest.mark.parametrize("model, last, depths", [("resnet18", "conv2", [2, 2, 2, 2]),
                                                  ("resnet50", "conv3", [3, 4, 6, 3])])
def test_resnet_residual_streams_are_one_group_each(model, last, depths):
    g = archdsl.load(ZOO / "resnet.arch", model)
    groups = groups_of(g)
    bn_last = "bn" + last[-1]
    for s, depth in enumerate(depths, 1):
        blocks = [f"layer{s}.{j}" for j in range(depth)]
        projected = f"layer{s}.0.downsample.0.weight" in g.params     # all but resnet18's stage 1
        first = f"layer{s}.0.downsample.0" if projected else "conv1"
        stream = group_of(groups, f"{first}.weight")
        own = {(f"{b}.{last}.weight", 0) for b in blocks} | set().union(*(bn_keys(f"{b}.{bn_last}") for b in blocks))
        own |= {(f"{first}.weight", 0)} | bn_keys(f"layer{s}.0.downsample.1" if projected else "bn1")
        readers = {(f"{b}.conv1.weight", 1) for b in (blocks[1:] if projected else blocks)}
        if s < len(depths):
            readers |= {(f"layer{s + 1}.0.conv1.weight", 1), (f"layer{s + 1}.0.downsample.0.weight", 1)}
        else:
            readers |= {("fc.weight", 1)}
        assert keys(stream, "out") == own
        assert keys(stream, "in") == readers
        width = g.params[f"{blocks[0]}.{last}.weight"].shape[0]
        assert stream.size == width and stream.prunable
        for k, rows in stream.slices.items():              # channel c of every member is the same unit
            assert rows.shape == (width, 1) and np.array_equal(rows[:, 0], np.arange(width)), k
        # the block's inner convs form their own groups
        for b in blocks:
            inner = ["conv1"] if last == "conv2" else ["conv1", "conv2"]
            for conv in inner:
                gr = group_of(groups, f"{b}.{conv}.weight")
                nxt = f"conv{int(conv[-1]) + 1}"
                assert keys(gr) == {(f"{b}.{conv}.weight", 0), (f"{b}.{nxt}.weight", 1)} | bn_keys(f"{b}.bn{conv[-1]}")
                assert gr.prunable and gr.producers == (g.by_scope(f"{b}.{conv}"),)
    stem = group_of(groups, "conv1.weight")
    if model == "resnet18":                   # the stem is stage 1's stream (identity shortcuts)
        assert stem is group_of(groups, "layer1.1.conv2.weight")
    else:                                     # resnet50 projects 64 -> 256: the stem is a group of its own
        assert keys(stem) == {("conv1.weight", 0), ("layer1.0.conv1.weight", 1),
                              ("layer1.0.downsample.0.weight", 1)} | bn_keys("bn1")
    fc = group_of(groups, "fc.weight")
    assert fc.output and "@fc" in fc.output and fc.fixed is None and not fc.prunable
    (x,) = [gr for gr in groups if gr.producers == tuple(g.inputs)]
    assert x.fixed and "model input" in x.fixed and keys(x) == {("conv1.weight", 1)}


# ---- DenseNet ----------------------------------------------------------------------------------

def test_densenet121_new_maps_reach_every_later_layer_at_the_concat_offsets():
    g = archdsl.load(ZOO / "densenet.arch", "densenet121")
    groups = groups_of(g)
    depths = [6, 12, 24, 16]
    for b, n in enumerate(depths, 1):
        block = f"features.denseblock{b}"
        for l in range(1, n + 1):
            producer = g.by_scope(f"{block}.denselayer{l}.conv2")
            gr = group_of(groups, f"{block}.denselayer{l}.conv2.weight")
            assert gr.size == 32 and gr.prunable
            expected = {(f"{block}.denselayer{l}.conv2.weight", 0)}
            readers = [f"{block}.denselayer{m}.norm1" for m in range(l + 1, n + 1)]
            readers += [f"features.transition{b}.norm"] if b < len(depths) else ["features.norm5"]
            for bn in readers:
                cat = node(g, bn).inputs[0]
                d = g.data(cat)
                assert d["op"] == "concat"
                offsets = ops.concat_offsets(d["attrs"], [g.data(i)["shape"] for i in d["inputs"]])
                at = offsets[d["inputs"].index(producer)]
                conv = bn[:-len("norm1")] + "conv1" if bn.endswith("norm1") else \
                    bn[:-len("norm")] + "conv" if b < len(depths) else None
                for k in bn_keys(bn) | ({(f"{conv}.weight", 1)} if conv else set()):
                    assert np.array_equal(gr.slices[k][:, 0], at + np.arange(32)), (l, k)
                expected |= bn_keys(bn) | ({(f"{conv}.weight", 1)} if conv else set())
            if b == len(depths):
                expected |= {("classifier.weight", 1)}
            assert keys(gr) == expected


# ---- GoogLeNet ----------------------------------------------------------------------------------

def test_googlenet_branches_are_groups_read_at_their_offsets():
    g = archdsl.load(ZOO / "googlenet.arch")
    groups = groups_of(g)
    names = ["3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"]
    last = {"branch1": "branch1", "branch2": "branch2.1", "branch3": "branch3.1", "branch4": "branch4.1"}
    readers = ["branch1", "branch2.0", "branch3.0", "branch4.1"]
    for name, nxt in zip(names, names[1:] + [None]):
        (cat,) = [n for n in g.nodes() if n.op == "concat" and n.scope.startswith(f"inception{name}.")]
        offsets = ops.concat_offsets(cat.attrs, [g.data(i)["shape"] for i in cat.inputs])
        for k, branch in enumerate(["branch1", "branch2", "branch3", "branch4"]):
            conv = f"inception{name}.{last[branch]}.conv"
            gr = group_of(groups, f"{conv}.weight")
            width = g.params[f"{conv}.weight"].shape[0]
            assert gr.size == width and gr.prunable and gr.producers == (g.by_scope(conv),)
            assert keys(gr, "out") == {(f"{conv}.weight", 0)} | bn_keys(f"inception{name}.{last[branch]}.bn")
            want = {(f"inception{nxt}.{r}.conv.weight", 1) for r in readers} if nxt else {("fc.weight", 1)}
            assert keys(gr, "in") == want
            for key in want:
                assert np.array_equal(gr.slices[key][:, 0], offsets[k] + np.arange(width)), key


# ---- VGG ----------------------------------------------------------------------------------------

def test_vgg16_last_conv_owns_49_contiguous_classifier_columns_per_channel():
    g = archdsl.load(ZOO / "vgg.arch", "vgg16")
    groups = groups_of(g)
    convs = [n for n in g.nodes() if n.op == "conv"]
    gr = group_of(groups, f"{convs[-1].scope}.weight")
    cols = gr.slices[("classifier.0.weight", 1)]
    assert gr.size == 512 and cols.shape == (512, 49)
    assert np.array_equal(cols, np.arange(512)[:, None] * 49 + np.arange(49))
    assert keys(gr) == {(f"{convs[-1].scope}.weight", 0), (f"{convs[-1].scope}.bias", 0), ("classifier.0.weight", 1)}
    flat = next(n for n in g.nodes() if n.op == "flatten")
    assert gr.tensors[flat.id].dim == 1 and np.array_equal(gr.tensors[flat.id].index, cols)


# ---- STN ------------------------------------------------------------------------------------------

def test_stn_regression_is_fixed_and_the_image_passes_grid_sample():
    g = archdsl.load(ZOO / "stn.arch", "stn_mnist")
    groups = groups_of(g)
    theta = group_of(groups, "fc_loc.2.weight")
    assert theta.fixed and "affine_grid" in theta.fixed and not theta.prunable
    assert sum(r.size for r in theta.slices[("fc_loc.2.weight", 0)]) == 6
    sample = next(n for n in g.nodes() if n.op == "grid_sample")
    image = group_of(groups, "conv1.weight", 1)
    assert image.producers == tuple(g.inputs) and sample.id in image.tensors
    assert keys(image) == {("conv1.weight", 1), ("localization.0.weight", 1)}
    assert group_of(groups, "localization.3.weight").prunable

    g = load_small("stn.arch", "resnet18_stn")
    groups = groups_of(g)
    stem = group_of(groups, "conv1.weight")
    sample = next(n for n in g.nodes() if n.op == "grid_sample")
    assert stem.prunable and sample.id in stem.tensors
    assert {("transformer.localization.0.weight", 1), ("layer1.0.conv1.weight", 1),
            ("layer1.1.conv1.weight", 1)} <= keys(stem, "in")
    assert stem is group_of(groups, "layer1.1.conv2.weight")      # the stream goes on after the sampler
    theta = group_of(groups, "transformer.fc_loc.2.weight")
    assert theta.fixed and "affine_grid" in theta.fixed


# ---- small specs ------------------------------------------------------------------------------------

DEPTHWISE = """
model m() {
    input x: [3, 8, 8]
    output x -> c0: conv(8, 1) -> dw: conv(8, 3, padding=1, groups=8) -> r: relu
             -> dw2: conv(16, 3, padding=1, groups=8) -> pw: conv(4, 1)
             -> adaptive_avgpool(1) -> flatten -> fc: linear(3)
}
"""


def test_depthwise_conv_removes_whole_groups():
    g = load(DEPTHWISE)
    gr = group_of(groups_of(g), "c0.weight")
    c = np.arange(8)[:, None]
    assert gr.size == 8 and gr.prunable
    assert keys(gr) == {("c0.weight", 0), ("c0.bias", 0), ("dw.weight", 0), ("dw.bias", 0),
                        ("dw2.weight", 0), ("dw2.bias", 0), ("pw.weight", 1)}
    assert np.array_equal(gr.slices[("dw.weight", 0)], c)
    assert np.array_equal(gr.slices[("dw2.weight", 0)], np.hstack([2 * c, 2 * c + 1]))   # multiplier 2
    assert np.array_equal(gr.slices[("pw.weight", 1)], np.hstack([2 * c, 2 * c + 1]))
    assert set(gr.conv_groups) == {g.by_scope("dw"), g.by_scope("dw2")}
    assert all(np.array_equal(v, c) for v in gr.conv_groups.values())
    assert gr.producers == (g.by_scope("c0"), g.by_scope("dw"), g.by_scope("dw2"))


GROUPED = """
model m() {
    input x: [3, 8, 8]
    output x -> a: conv(8, 1) -> b: conv(6, 3, padding=1, groups=2) -> c: conv(4, 1)
             -> adaptive_avgpool(1) -> flatten -> fc: linear(3)
}
"""


def test_grouped_conv_keeps_groups_equal():
    g = load(GROUPED)
    groups = groups_of(g)
    a, b = group_of(groups, "a.weight"), group_of(groups, "b.weight")
    j4, j3 = np.arange(4)[:, None], np.arange(3)[:, None]
    assert a.size == 4 and np.array_equal(a.slices[("a.weight", 0)], np.hstack([j4, j4 + 4]))
    assert np.array_equal(a.slices[("b.weight", 1)], j4)          # b.weight[:, j] serves channel j of each group
    assert b.size == 3 and np.array_equal(b.slices[("b.weight", 0)], np.hstack([j3, j3 + 3]))
    assert np.array_equal(b.slices[("c.weight", 1)], np.hstack([j3, j3 + 3]))
    assert not a.conv_groups and not b.conv_groups


SE = """
import std.layers

model m() {
    input x: [3, 8, 8]
    output x -> c0: conv(32, 3, padding=1) -> se: squeeze_excite(4) -> adaptive_avgpool(1) -> flatten
             -> fc: linear(3)
}
"""


def test_squeeze_excite_couples_gate_channel_c_with_channel_c():
    g = load(SE)
    groups = groups_of(g)
    gr = group_of(groups, "c0.weight")
    assert gr.size == 32 and gr.prunable
    assert keys(gr, "out") == {("c0.weight", 0), ("c0.bias", 0), ("se.fc2.weight", 0), ("se.fc2.bias", 0)}
    assert keys(gr, "in") == {("se.fc1.weight", 1), ("fc.weight", 1)}
    assert all(np.array_equal(rows[:, 0], np.arange(32)) for rows in gr.slices.values())
    fc1 = group_of(groups, "se.fc1.weight")
    assert fc1.size == 8 and keys(fc1) == {("se.fc1.weight", 0), ("se.fc1.bias", 0), ("se.fc2.weight", 1)}


ATTENTION = """
model m() {
    input x: [3, 8, 8]
    h = x -> c0: conv(8, 3, padding=1)
    a = h -> att: conv(1, 1) -> sigmoid
    output (h, a) -> mul -> c1: conv(4, 1) -> adaptive_avgpool(1) -> flatten -> fc: linear(3)
}
"""


def test_spatial_attention_map_does_not_couple_the_channels():
    g = load(ATTENTION)
    groups = groups_of(g)
    gr = group_of(groups, "c0.weight")
    assert gr.size == 8 and gr.prunable and keys(gr, "in") == {("att.weight", 1), ("c1.weight", 1)}
    att = group_of(groups, "att.weight")
    assert att.size == 1 and att.fixed and "broadcasts" in att.fixed


SHUFFLE = """
import std.layers

model m() {
    input x: [3, 4, 4]
    output x -> c0: conv(8, 1) -> shuffle: channel_shuffle(2) -> c1: conv(4, 1)
             -> adaptive_avgpool(1) -> flatten -> fc: linear(3)
}
"""


def test_channel_shuffle_couples_channel_j_of_every_branch():
    g = load(SHUFFLE)
    gr = group_of(groups_of(g), "c0.weight")
    j = np.arange(4)[:, None]
    assert gr.size == 4 and gr.prunable
    assert np.array_equal(gr.slices[("c0.weight", 0)], np.hstack([j, j + 4]))      # channel j of both branches
    assert np.array_equal(gr.slices[("c1.weight", 1)], np.hstack([2 * j, 2 * j + 1]))  # interleaved after
    shuffled = g.data(g.by_scope("c1"))["inputs"][0]
    assert gr.tensors[shuffled].dim == 1 and np.array_equal(gr.tensors[shuffled].index, np.hstack([2 * j, 2 * j + 1]))
    assert gr.mask(shuffled, [1]).tolist() == [True, True, False, False, True, True, True, True]


SOFTMAX = """
model m(dim: int = 1) {
    input x: [3, 4, 4]
    output x -> c0: conv(8, 1) -> softmax(dim=dim) -> c1: conv(4, 1) -> adaptive_avgpool(1) -> flatten
             -> fc: linear(3)
}
"""


def test_softmax_over_channels_fixes_them_and_over_height_does_not():
    g = archdsl.load(SOFTMAX)
    gr = group_of(groups_of(g), "c0.weight")
    assert gr.fixed and "softmax" in gr.fixed and "removing one changes the others" in gr.fixed
    assert g.data(gr.producers[0])["span"] is not None and gr.span == g.data(
        next(n.id for n in g.nodes() if n.op == "softmax"))["span"]
    g = archdsl.load(SOFTMAX, defines={"dim": "2"})
    assert group_of(groups_of(g), "c0.weight").prunable


FLATTEN = """
model m() {
    input x: [3, 4, 4]
    output x -> c0: conv(5, 3, padding=1) -> flatten -> fc: linear(7) -> relu -> out: linear(2)
}
"""


def test_flatten_then_linear_gives_each_channel_a_block_of_columns():
    g = load(FLATTEN)
    groups = groups_of(g)
    gr = group_of(groups, "c0.weight")
    assert np.array_equal(gr.slices[("fc.weight", 1)], np.arange(5)[:, None] * 16 + np.arange(16))
    fc = group_of(groups, "fc.weight")
    assert fc.size == 7 and keys(fc) == {("fc.weight", 0), ("fc.bias", 0), ("out.weight", 1)}
    assert "out" in group_of(groups, "out.weight").output


# ---- every slice in exactly one group -------------------------------------------------------------

@pytest.mark.parametrize("file, model", zoo_models(), ids=lambda v: str(v))
def test_slices_partition_the_parameters(file, model):
    g = archdsl.load(ZOO / file, model)
    groups = groups_of(g)
    seen: dict[tuple, list] = {}
    for gr in groups:
        for key, rows in gr.slices.items():
            assert rows.shape[0] == gr.size
            seen.setdefault(key, []).append(rows.ravel())
        for nid, (dim, index) in gr.tensors.items():
            assert index.shape[0] == gr.size and index.max() < g.data(nid)["shape"][dim]
    for (pname, axis), parts in seen.items():
        got = np.sort(np.concatenate(parts))
        assert np.array_equal(got, np.unique(got)), f"{pname} axis {axis}: an index in two units"
        assert got.max() < g.params[pname].shape[axis]
    for n in g.nodes():
        opdef = ops.get(n.op)
        for local, axis in opdef.channels.params:           # own axes are covered whole
            if local not in n.params:
                continue
            shape = n.param(local).shape
            if axis is None:        # "broadcast": the axis aligned with the input's channels, if it is not 1
                axis = len(shape) - (len(n.shape) - 1)
                if not 0 <= axis < len(shape) or shape[axis] == 1:
                    continue
            assert len(np.concatenate(seen[(n.params[local], axis)])) == shape[axis]
    assert report(g, groups).splitlines()[-1].startswith(f"{len(groups)} groups")


def test_two_runs_give_identical_groups():
    for file, model in [("densenet.arch", "densenet121"), ("googlenet.arch", "googlenet"), ("stn.arch", "stn_mnist")]:
        g = archdsl.load(ZOO / file, model)
        a, b = groups_of(g), groups_of(archdsl.load(ZOO / file, model))
        assert [x.summary(g) for x in a] == [y.summary(g) for y in b]
        for x, y in zip(a, b):
            assert (x.producers, x.fixed, x.output, list(x.slices), list(x.tensors)) == \
                   (y.producers, y.fixed, y.output, list(y.slices), list(y.tensors))
            assert all(np.array_equal(x.slices[k], y.slices[k]) for k in x.slices)
            assert all(np.array_equal(x.tensors[k].index, y.tensors[k].index) for k in x.tensors)


# ---- numerical exactness ---------------------------------------------------------------------------

torch = pytest.importorskip("torch")


def randomise_bn(g, rng) -> None:
    """Zero-initialised weights (an STN's regression layer, which would hide the localisation net from the
    output) get small random values; batch norms move far from the identity, their statistics measured
    on data (:func:`zoo.randomise_bn`)."""
    for p in g.params.values():
        if p.trainable and p.name.endswith(".weight") and not p.value.any():
            p.value = rng.uniform(-0.1, 0.1, p.shape)
    zoo.randomise_bn(g, seed=int(rng.integers(1 << 30)))


def randomised(g, group, units, rng):
    """A copy with the units' own slices (role "out") set to large random positive values (valid variances)."""
    g = g.copy()
    for pname, axis, idx in group.items(units, "out"):
        value = np.array(g.params[pname].value)
        index = [slice(None)] * value.ndim
        index[axis] = idx
        value[tuple(index)] = rng.uniform(2.0, 6.0, value[tuple(index)].shape)
        g.params[pname].value = value
    return g


NUMERIC = [("zoo", "resnet.arch", "resnet18"), ("zoo", "resnet.arch", "resnet50"),
           ("zoo", "densenet.arch", "densenet121"), ("zoo", "googlenet.arch", "googlenet"),
           ("zoo", "stn.arch", "stn_mnist"), ("zoo", "stn.arch", "resnet18_stn"),
           ("spec", DEPTHWISE, "depthwise"), ("spec", GROUPED, "grouped"), ("spec", SE, "se"),
           ("spec", ATTENTION, "attention"), ("spec", SHUFFLE, "shuffle"), ("spec", FLATTEN, "flatten")]


@pytest.mark.parametrize("where, source, name", NUMERIC, ids=[n for _, _, n in NUMERIC])
def test_zeroed_consumers_make_the_output_independent_of_the_units(where, source, name):
    rng = np.random.default_rng(0)
    g = load_small(source, name, size=32 if name.startswith("resnet") else 64) if where == "zoo" else load(source)
    randomise_bn(g, rng)
    x = rng.standard_normal((2, *g.data(g.inputs[0])["shape"][1:])).astype(np.float32)
    free = [gr for gr in groups_of(g) if gr.prunable]
    assert free
    picks = range(len(free)) if len(free) <= 12 else {0, len(free) // 2, len(free) - 1}
    base = ir_outputs(g, x)[0]
    for i in sorted(picks):
        gr = free[i]
        units = list(range(0, gr.size, 2))
        if "in" in gr.roles.values():        # the units matter before their readers are cut
            changed = ir_outputs(randomised(g, gr, units, rng), x)[0]
            assert np.abs(changed - base).max() > 1e-4 * max(1.0, np.abs(base).max()), gr.summary(g)
        cut = masked(g, [(gr, units)], roles=("in",))
        want = ir_outputs(cut, x)[0]
        got = ir_outputs(randomised(cut, gr, units, rng), x)[0]
        assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max()), gr.summary(g)
        # masking everything (own slices too) computes the same function as masking the readers
        both = ir_outputs(gr.masked(g, units), x)[0]
        assert np.abs(both - want).max() <= 1e-5 * max(1.0, np.abs(want).max()), gr.summary(g)


# ---- the docs' table of kinds ------------------------------------------------------------------------

def test_docs_table_of_channel_kinds_matches_the_registry():
    import re
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "docs" / "ir.md").read_text(encoding="utf-8")
    table = re.search(r"<!-- channel-kinds -->(.*?)<!-- /channel-kinds -->", text, re.S).group(1)
    documented = {}
    for line in table.strip().split("\n")[2:]:
        kind, names = [c.strip() for c in line.strip("|").split(" | ")][:2]
        documented[kind.strip("`")] = sorted(re.findall(r"`(\w+)`", names))
    registry = {}
    for name, op in ops.OPS.items():
        registry.setdefault(op.channels.kind, []).append(name)
    assert documented == {k: sorted(v) for k, v in registry.items()}
