"""zoo_specs/mnasnet.arch against the MnasNet paper (Tan et al., 2019; model B1) and torchvision.

* the widths are torchvision's `_get_depths(alpha)` (round to a multiple of 8, preferring up), and the
  spec's functions `round_to_multiple_of` and `get_depths` equal torchvision's;
* the six stacks of Figure 7: kernel sizes 3, 5, 5, 3, 5, 3, expansion 3 or 6, repeats 3, 3, 3,
  2, 4, 1, resolution 112 -> 56 -> 28 -> 14 -> 14 -> 7 -> 7; identity skips only inside stacks;
* every batch norm has torchvision's momentum 1 - 0.9997 (TensorFlow's decay 0.9997);
* parameters equal torchvision's published counts, MACs its GFLOPS (three decimals);
* initialisation: convs kaiming-normal (fan_out, relu), the classifier kaiming-uniform
  (fan_out, sigmoid: bound sqrt(3 / num_classes)), zero biases;
* mnasnet0_75 (whose rounding differs most from plain scaling) computes torchvision's outputs.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest

import archdsl

from zoo import ZOO, assert_convs_kaiming_fan_out, outputs_with_the_weights_of, torchvision_counts

FILE = ZOO / "mnasnet.arch"
ALPHAS = {"mnasnet0_5": 0.5, "mnasnet0_75": 0.75, "mnasnet1_0": 1.0, "mnasnet1_3": 1.3}
FIGURE7 = [(3, 3, 3), (5, 3, 3), (5, 6, 3), (3, 6, 2), (5, 6, 4), (3, 6, 1)]  # kernel, expansion, repeats
SIZES = [56, 28, 14, 14, 7, 7]                                                # stack outputs at 224


def convs_of(g, prefix: str):
    return [n for n in g.nodes() if n.op == "conv" and n.scope.startswith(prefix)]


@pytest.mark.parametrize("model", list(ALPHAS))
def test_widths_are_torchvisions_depths(model):
    mnasnet = pytest.importorskip("torchvision.models.mnasnet")
    depths = mnasnet._get_depths(ALPHAS[model])
    g = archdsl.load(FILE, model)
    assert g.node(g.by_scope("layers.0")).shape == ("N", depths[0], 112, 112)
    assert g.node(g.by_scope("layers.3")).attrs["groups"] == depths[0]
    assert g.node(g.by_scope("layers.6")).shape == ("N", depths[1], 112, 112)
    for s, ((k, t, n), size) in enumerate(zip(FIGURE7, SIZES)):
        stack = f"layers.{8 + s}."
        units = sorted({c.scope.split(".")[2] for c in convs_of(g, stack)}, key=int)
        assert units == [str(j) for j in range(n)]
        last = g.node(g.by_scope(f"{stack}{n - 1}.layers.6"))
        assert last.shape == ("N", depths[s + 2], size, size)
        for j in range(n):
            expand = g.node(g.by_scope(f"{stack}{j}.layers.0"))
            dw = g.node(g.by_scope(f"{stack}{j}.layers.3"))
            c_in = g.data(expand.inputs[0])["shape"][1]
            assert expand.shape[1] == c_in * t
            assert dw.attrs["kernel_size"] == (k, k) and dw.attrs["groups"] == c_in * t
            assert dw.attrs["padding"] == (k // 2, k // 2)
    assert g.node(g.by_scope("layers.14")).shape == ("N", 1280, 7, 7)


def test_rounding_functions_are_torchvisions():
    mnasnet = pytest.importorskip("torchvision.models.mnasnet")
    alphas = [0.1, 0.25, 0.5, 0.75, 1.0, 1.3, 1.4, 2.0, 3.7]
    lines = [f"    assert mn.get_depths({a!r}) == {mnasnet._get_depths(a)!r}" for a in alphas]
    cases = [(83.0, 8, 0.9), (84.0, 8, 0.9), (7.0, 8, 0.9), (18.0, 8, 0.9), (18.0, 8, 0.5), (50.0, 16, 0.99)]
    lines += [f"    assert mn.round_to_multiple_of({v!r}, {d}, {b!r}) == {mnasnet._round_to_multiple_of(v, d, b)}"
              for v, d, b in cases]
    body = "\n".join(lines)
    archdsl.load(f'import "{FILE.as_posix()}" as mn\nmodel m() {{\n    input x: [1]\n{body}\n    output x\n}}\n')


def test_a_bad_round_up_bias_is_a_located_error():
    call = "mn.round_to_multiple_of(83, 8, 1.0)"
    src = f'import "{FILE.as_posix()}" as mn\nmodel m() {{\n    input x: [1]\n    a = {call}\n    output x\n}}\n'
    with pytest.raises(archdsl.ArchError) as err:
        archdsl.load(src)
    d = err.value.diagnostic
    assert d.message == "Assertion failed: round_up_bias must lie strictly between 0 and 1"
    line = FILE.read_text().splitlines()[d.span.line - 1]
    assert Path(d.span.file).name == "mnasnet.arch" and line.strip().startswith("assert 0.0 < round_up_bias")
    (note,) = d.notes
    assert note.message == "in function 'round_to_multiple_of', called here"
    assert (note.span.file, note.span.line, note.span.col) == ("<string>", 4, 9)


def test_alpha_must_be_positive():
    with pytest.raises(archdsl.ArchError, match="alpha must be greater than 0"):
        archdsl.load(FILE, "mnasnet", alpha=0.0)


def test_identity_skips_only_inside_stacks():
    g = archdsl.load(FILE, "mnasnet1_0", size=64)
    adds = sorted(n.scope.rsplit(".", 1)[0] for n in g.nodes() if n.op == "add")
    expected = sorted(f"layers.{8 + s}.{j}" for s, (_, _, n) in enumerate(FIGURE7) for j in range(1, n))
    assert adds == expected and len(adds) == 10


def test_batch_norms_use_tensorflows_decay():
    mnasnet = pytest.importorskip("torchvision.models.mnasnet")
    g = archdsl.load(FILE, "mnasnet0_5", size=64)
    bns = [n for n in g.nodes() if n.op == "bn"]
    assert len(bns) == 3 + 3 * sum(n for _, _, n in FIGURE7) + 1
    assert all(n.attrs["momentum"] == mnasnet._BN_MOMENTUM for n in bns)
    assert all(n.attrs["eps"] == 1e-5 for n in bns)


@pytest.mark.parametrize("model", list(ALPHAS))
def test_parameters_and_macs_match_torchvision(model):
    torchvision_counts(FILE, model)


def test_initialisation_is_torchvisions():
    g = archdsl.load(FILE, "mnasnet0_5", size=64, num_classes=500)
    assert_convs_kaiming_fan_out(g)
    fc = g.node(g.by_scope("classifier.1"))
    w, b = fc.param("weight").value, fc.param("bias").value
    bound = math.sqrt(3 / 500)                 # gain(sigmoid) = 1, fan_out = num_classes
    assert abs(w).max() <= bound and abs(w).max() > 0.99 * bound
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert not b.any()
    drop = g.node(g.by_scope("classifier.0"))
    assert drop.op == "dropout" and drop.attrs["p"] == 0.2


def test_mnasnet0_75_computes_torchvisions_outputs():
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    g = archdsl.load(FILE, "mnasnet0_75", size=64, dropout=0.3)
    assert g.node(g.by_scope("classifier.0")).attrs["p"] == 0.3
    torch.manual_seed(0)
    ref = torchvision.models.mnasnet0_75()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    a, b = outputs_with_the_weights_of(g, ref, x)
    assert b.std() > 1e-3
    assert (a - b).abs().max().item() <= 1e-5
