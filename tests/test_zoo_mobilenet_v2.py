"""zoo_specs/mobilenet_v2.arch against the MobileNetV2 paper (Sandler et al., 2018) and torchvision.

* Table 2 of the paper: the output channels and resolution after the stem, each of the 17
  inverted residuals and the last 1x1 conv at 224x224; the expansion factor t of every block;
  identity skips exactly where a block keeps the shape (10 of them);
* parameters and MACs equal torchvision's published counts; for the width multipliers of the
  reference implementation (0.35 ... 1.4) the MACs are those of its table (millions, rounded)
  and names, shapes and parameters those of torchvision's MobileNetV2(width_mult=...);
* initialisation: convs kaiming-normal (fan_out), the classifier normal(0, 0.01), zero biases;
  dropout 0.2 before the classifier;
* `make_divisible`, the spec's function, equals torchvision's `_make_divisible`;
* a width-multiplied model (0.5) computes torchvision's outputs with its weights.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import archdsl
from archdsl.ir.stats import totals

from zoo import ZOO, assert_convs_kaiming_fan_out, outputs_with_the_weights_of, torchvision_counts

FILE = ZOO / "mobilenet_v2.arch"

# Table 2: input resolution of the block, expansion t, channels c, repeats n, first stride s.
TABLE2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
          (6, 320, 1, 1)]

# The reference implementation's table (tensorflow/models, research/slim/nets/mobilenet): MACs in
# millions at 224x224 for each depth multiplier (to within one million: the table truncates).
REFERENCE_MMACS = {0.35: 59, 0.5: 97, 0.75: 209, 1.0: 300, 1.3: 509, 1.4: 582}


def test_blocks_follow_table_2():
    g = archdsl.load(FILE, "mobilenet_v2")
    assert g.data(g.inputs[0])["shape"] == ("N", 3, 224, 224)
    assert g.node(g.by_scope("features.0.0")).shape == ("N", 32, 112, 112)
    size, index, c_in = 112, 1, 32
    for t, c, n, s in TABLE2:
        for i in range(n):
            size //= s if i == 0 else 1
            block = f"features.{index}.conv"
            convs = [m for m in g.nodes() if m.op == "conv" and m.scope.startswith(block + ".")]
            assert len(convs) == (2 if t == 1 else 3)
            depthwise = convs[-2]
            assert depthwise.attrs["groups"] == depthwise.shape[1] == c_in * t
            assert depthwise.attrs["stride"] == ((s, s) if i == 0 else (1, 1))
            assert convs[-1].shape == ("N", c, size, size)
            c_in, index = c, index + 1
    assert index == 18
    assert g.node(g.by_scope("features.18.0")).shape == ("N", 1280, 7, 7)
    assert g.data(g.outputs[0])["shape"] == ("N", 1000)


def test_identity_skips_where_the_shape_is_kept():
    g = archdsl.load(FILE, "mobilenet_v2", size=64)
    adds = sorted(int(n.scope.split(".")[1]) for n in g.nodes() if n.op == "add")
    assert adds == [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]
    # the bottleneck is linear: the projection's batch norm feeds the addition, no ReLU6 between
    for n in g.nodes():
        if n.op == "add":
            assert {g.node(i).op for i in n.inputs} <= {"bn", "add"}
            assert any(g.node(i).op == "bn" for i in n.inputs)


def test_parameters_and_macs_match_torchvision():
    torchvision_counts(FILE, "mobilenet_v2")


@pytest.mark.parametrize("width", sorted(REFERENCE_MMACS))
def test_width_multipliers_match_the_reference_and_torchvision(width):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    g = archdsl.load(FILE, "mobilenet_v2", width_mult=width)
    assert abs(totals(g)["macs"] / 1e6 - REFERENCE_MMACS[width]) < 1
    with torch.device("meta"):
        ours = archdsl.to_torch(g, load_weights=False)
        theirs = torchvision.models.MobileNetV2(width_mult=width)
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert g.param_count() == sum(p.numel() for p in theirs.parameters())


def test_round_nearest_one_turns_rounding_off():
    g = archdsl.load(FILE, "mobilenet_v2", width_mult=0.35, round_nearest=1, size=64)
    assert g.node(g.by_scope("features.0.0")).shape[1] == int(32 * 0.35 + 0.5)        # 11, not 16
    assert g.node(g.by_scope("features.18.0")).shape[1] == 1280


def test_make_divisible_is_torchvisions():
    """The spec's function against torchvision's on the widths the multipliers give and on edge cases."""
    utils = pytest.importorskip("torchvision.models._utils")
    cases = [(c * w, d) for c in (16, 24, 32, 64, 96, 160, 320, 1280) for w in (0.1, 0.35, 0.5, 0.75, 1.3, 1.4)
             for d in (1, 4, 8)]
    cases += [(11.2, 8), (83.0, 8), (84.0, 8), (0.5, 8), (19.9, 8), (20.0, 8)]
    lines = [f"    assert mb.make_divisible({v!r}, {d}) == {utils._make_divisible(v, d)}" for v, d in cases]
    lines += [f"    assert mb.make_divisible({v!r}, 8, {m}) == {utils._make_divisible(v, 8, m)}"
              for v, m in [(3.0, 4), (3.0, 16), (100.0, 1)]]
    lines += ["    assert mb.make_divisible(30.0) == 32"]          # divisor 8 by default
    body = "\n".join(lines)
    archdsl.load(f'import "{FILE.as_posix()}" as mb\nmodel m() {{\n    input x: [1]\n{body}\n    output x\n}}\n')


def test_dropout_is_a_parameter():
    g = archdsl.load(FILE, "mobilenet_v2", size=64, dropout=0.5)
    assert g.node(g.by_scope("classifier.0")).attrs["p"] == 0.5


def test_inverted_residual_setting_is_checked():
    with pytest.raises(archdsl.ArchError) as err:
        archdsl.load(FILE, "mobilenet_v2", inverted_residual_setting=[(1, 16, 1)])
    d = err.value.diagnostic
    assert d.message == "Assertion failed: inverted_residual_setting must be a non-empty list of (t, c, n, s) tuples"
    assert Path(d.span.file).name == "mobilenet_v2.arch"
    assert FILE.read_text().splitlines()[d.span.line - 1].strip().startswith("assert len(inverted_residual_setting)")


def test_initialisation_is_torchvisions():
    g = archdsl.load(FILE, "mobilenet_v2", size=64)
    assert_convs_kaiming_fan_out(g)
    fc = g.node(g.by_scope("classifier.1"))
    w, b = fc.param("weight").value, fc.param("bias").value
    assert w.std() == pytest.approx(0.01, rel=0.02) and abs(w.mean()) < 1e-4
    assert abs(w).max() > 0.04            # a normal, not a uniform, of std 0.01
    assert not b.any()
    drop = g.node(g.by_scope("classifier.0"))
    assert drop.op == "dropout" and drop.attrs["p"] == 0.2


def test_width_0_5_computes_torchvisions_outputs():
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    g = archdsl.load(FILE, "mobilenet_v2", size=64, width_mult=0.5)
    torch.manual_seed(0)
    ref = torchvision.models.MobileNetV2(width_mult=0.5)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    a, b = outputs_with_the_weights_of(g, ref, x)
    assert b.std() > 1e-3
    assert (a - b).abs().max().item() <= 1e-5
