"""zoo_specs/shufflenet_v2.arch against the ShuffleNet V2 paper (Ma et al., 2018) and torchvision.

* Table 5 of the paper: the output sizes and channels of conv1, the max-pool, the three stages and
  conv5 at 224x224; the units per stage (one stride-2 unit, then stride-1 units);
* parameters equal torchvision's published counts exactly, MACs its GFLOPS (three decimals) and
  the paper's complexity column within 2%;
* one unit of either stride, alone, computes torchvision's InvertedResidual with its weights
  (the channel split by `slice`, the concatenation and the shuffle in the same order);
* initialisation is PyTorch's default: uniform in +-1/sqrt(fan_in), no conv biases.

The full-model twin checks (names, eval/train outputs, initial distributions) live in test_zoo.py.
"""
from __future__ import annotations

import math

import pytest

import archdsl

from zoo import ZOO, outputs_with_the_weights_of, torchvision_counts

FILE = ZOO / "shufflenet_v2.arch"
MODELS = ["shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0"]

# Table 5: output channels of conv1/maxpool, stage2, stage3, stage4, conv5.
TABLE5_CHANNELS = {
    "shufflenet_v2_x0_5": [24, 48, 96, 192, 1024],
    "shufflenet_v2_x1_0": [24, 116, 232, 464, 1024],
    "shufflenet_v2_x1_5": [24, 176, 352, 704, 1024],
    "shufflenet_v2_x2_0": [24, 244, 488, 976, 2048],
}
# Table 5: complexity (MFLOPs, counted as multiply-adds) and parameters (millions).
TABLE5_MFLOPS = {"shufflenet_v2_x0_5": 41, "shufflenet_v2_x1_0": 146, "shufflenet_v2_x1_5": 299,
                 "shufflenet_v2_x2_0": 591}
TABLE5_PARAMS_M = {"shufflenet_v2_x0_5": 1.4, "shufflenet_v2_x1_0": 2.3, "shufflenet_v2_x1_5": 3.5,
                   "shufflenet_v2_x2_0": 7.4}


def stage_output(g, scope: str):
    """The shape of the last node under ``scope`` (a stage's last unit ends in its channel shuffle)."""
    last = [n for n in g.nodes() if n.scope == scope or n.scope.startswith(scope + ".")][-1]
    return last.shape


@pytest.mark.parametrize("model", MODELS)
def test_stages_follow_table_5(model):
    g = archdsl.load(FILE, model)
    assert g.data(g.inputs[0])["shape"] == ("N", 3, 224, 224)
    c = TABLE5_CHANNELS[model]
    assert stage_output(g, "conv1") == ("N", c[0], 112, 112)
    assert stage_output(g, "maxpool") == ("N", c[0], 56, 56)
    for i, (stage, size) in enumerate([("stage2", 28), ("stage3", 14), ("stage4", 7)]):
        assert stage_output(g, stage) == ("N", c[i + 1], size, size)
    assert stage_output(g, "conv5") == ("N", c[4], 7, 7)
    # repeats 1 + 3, 1 + 7, 1 + 3: only the first unit of a stage has a branch1 (the stride-2 unit)
    for stage, units in [("stage2", 4), ("stage3", 8), ("stage4", 4)]:
        convs = [n for n in g.nodes() if n.op == "conv" and n.scope.startswith(stage + ".")]
        assert sorted({n.scope.split(".")[1] for n in convs}, key=int) == [str(j) for j in range(units)]
        strided = sorted({n.scope.split(".")[1] for n in convs if n.attrs["stride"] == (2, 2)})
        assert strided == ["0"]
        assert {n.scope.split(".")[2] for n in convs if n.scope.split(".")[1] == "0"} == {"branch1", "branch2"}
        assert {n.scope.split(".")[2] for n in convs if n.scope.split(".")[1] != "0"} == {"branch2"}
    assert g.data(g.outputs[0])["shape"] == ("N", 1000)


@pytest.mark.parametrize("model", MODELS)
def test_parameters_and_macs_match_torchvision_and_the_paper(model):
    t = torchvision_counts(FILE, model)
    assert t["macs"] / 1e6 == pytest.approx(TABLE5_MFLOPS[model], rel=0.02)
    assert round(t["params"] / 1e6, 1) == TABLE5_PARAMS_M[model]


def test_the_depthwise_convs_have_one_group_per_channel_and_no_activation():
    """Section 3: the 3x3 depthwise conv is followed by BN only; the 1x1 convs by BN and ReLU."""
    g = archdsl.load(FILE, "shufflenet_v2_x0_5", size=64)
    by_id = {n.id: n for n in g.nodes()}
    users = {}
    for n in g.nodes():
        for i in n.inputs:
            users.setdefault(i, []).append(n)
    depthwise = [n for n in g.nodes() if n.op == "conv" and n.attrs["groups"] > 1]
    assert len(depthwise) == 16 + 3                     # one per unit, plus branch1 of the 3 stride-2 units
    for n in depthwise:
        assert n.attrs["groups"] == by_id[n.inputs[0]].shape[1] == n.shape[1]
        (after,) = users[n.id]
        assert after.op == "bn" and all(u.op == "conv" for u in users[after.id])
    assert not any(n.op == "conv" and n.attrs["bias"] for n in g.nodes())


UNIT_SPEC = """
import "{path}" as sn
model unit() {{
    input x: [{c}, 8, 8]
    output x -> unit: sn.shuffle_unit({out}, {stride})
}}
"""


@pytest.mark.parametrize("c, out, stride", [(48, 48, 1), (24, 48, 2), (116, 232, 2)])
def test_a_unit_is_torchvisions_inverted_residual(c, out, stride):
    torch = pytest.importorskip("torch")
    shufflenetv2 = pytest.importorskip("torchvision.models.shufflenetv2")
    g = archdsl.load(UNIT_SPEC.format(path=FILE.as_posix(), c=c, out=out, stride=stride))
    torch.manual_seed(0)
    ref = shufflenetv2.InvertedResidual(c, out, stride)
    x = torch.randn(2, c, 8, 8, generator=torch.Generator().manual_seed(2))
    a, b = outputs_with_the_weights_of(g, ref, x, prefix="unit.")
    assert a.shape == b.shape == (2, out, 8 // stride, 8 // stride)
    assert (a - b).abs().max().item() <= 1e-6
    if stride == 1:
        # the untouched half lands on the even output channels after the shuffle
        assert torch.equal(a[:, 0::2], x[:, : c // 2])


def test_a_stride_1_unit_must_keep_the_width():
    with pytest.raises(archdsl.ArchError, match="a stride-1 ShuffleNet V2 unit keeps the width"):
        archdsl.load(UNIT_SPEC.format(path=FILE.as_posix(), c=24, out=48, stride=1))


def test_stage_widths_reads_table_5():
    lines = [f"    assert sn.stage_widths({m}) == {w!r}"
             for m, w in zip([0.5, 1.0, 1.5, 2.0], TABLE5_CHANNELS.values())]
    body = "\n".join(lines)
    archdsl.load(f'import "{FILE.as_posix()}" as sn\nmodel m() {{\n    input x: [1]\n{body}\n    output x\n}}\n')
    src = f'import "{FILE.as_posix()}" as sn\nmodel m() {{\n    input x: [1]\n    w = sn.stage_widths(0.75)\n    output x\n}}\n'
    with pytest.raises(archdsl.ArchError) as err:
        archdsl.load(src)
    d = err.value.diagnostic
    assert d.message == "Assertion failed: Table 5 lists the width multipliers 0.5, 1.0, 1.5 and 2.0 only"
    assert d.notes[0].message == "in function 'stage_widths', called here"
    assert (d.notes[0].span.line, d.notes[0].span.col) == (4, 9)


def test_initialisation_is_pytorchs_default():
    g = archdsl.load(FILE, "shufflenet_v2_x0_5", size=64)
    for n in g.nodes():
        if n.op not in ("conv", "linear"):
            continue
        w = n.param("weight").value
        fan_in = math.prod(w.shape[1:])
        bound = 1 / math.sqrt(fan_in)
        assert abs(w).max() <= bound
        if w.size >= 2000:
            assert abs(w).max() > 0.95 * bound
            assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.1)
    fc = g.node(g.by_scope("fc"))
    bias = fc.param("bias").value
    assert abs(bias).max() <= 1 / math.sqrt(1024) and bias.std() > 0.5 / math.sqrt(3 * 1024)
