"""MobileNetV3 (zoo_specs/mobilenet_v3.arch) against the paper (Howard et al., 2019) and torchvision.

* trainable parameters and multiply-accumulates at 224x224 equal torchvision's weight metadata
  (``meta["num_params"]`` exactly; ``meta["_ops"]``, GMACs of the conv and linear layers, to its 3 decimals);
* the spec's ``make_divisible`` is torchvision's ``_make_divisible`` (the TensorFlow rounding rule);
* Tables 1 and 2 of the paper: per bottleneck the kernel, the expanded and output widths, the stride (as
  resolutions 112 .. 7), squeeze-and-excitation with a hard-sigmoid gate squeezing to make_divisible(exp / 4),
  the non-linearity (relu or hard-swish), and an identity shortcut exactly where the shape is kept;
* torchvision's options (width_mult, reduced_tail, dilated) give torchvision's parameter names and shapes;
* the initial weights are torchvision's: conv kaiming-normal fan_out, linear normal(0, 0.01), biases zero.

Numerics against torchvision (eval and train mode) run for mobilenet_v3_small in tests/test_zoo.py.
"""
from __future__ import annotations

import numpy as np
import pytest

import archdsl
from archdsl.ir.stats import totals

from zoo import ZOO

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
from torchvision.models._utils import _make_divisible  # noqa: E402

FILE = ZOO / "mobilenet_v3.arch"
MODELS = ["mobilenet_v3_small", "mobilenet_v3_large"]
# Tables 1 and 2 of the paper: kernel, expansion size, #out, SE, NL, stride.
TABLES = {
    "mobilenet_v3_large": [(3, 16, 16, False, "RE", 1), (3, 64, 24, False, "RE", 2), (3, 72, 24, False, "RE", 1),
                           (5, 72, 40, True, "RE", 2), (5, 120, 40, True, "RE", 1), (5, 120, 40, True, "RE", 1),
                           (3, 240, 80, False, "HS", 2), (3, 200, 80, False, "HS", 1),
                           (3, 184, 80, False, "HS", 1), (3, 184, 80, False, "HS", 1),
                           (3, 480, 112, True, "HS", 1), (3, 672, 112, True, "HS", 1),
                           (5, 672, 160, True, "HS", 2), (5, 960, 160, True, "HS", 1), (5, 960, 160, True, "HS", 1)],
    "mobilenet_v3_small": [(3, 16, 16, True, "RE", 2), (3, 72, 24, False, "RE", 2), (3, 88, 24, False, "RE", 1),
                           (5, 96, 40, True, "HS", 2), (5, 240, 40, True, "HS", 1), (5, 240, 40, True, "HS", 1),
                           (5, 120, 48, True, "HS", 1), (5, 144, 48, True, "HS", 1),
                           (5, 288, 96, True, "HS", 2), (5, 576, 96, True, "HS", 1), (5, 576, 96, True, "HS", 1)],
}
LAST = {"mobilenet_v3_large": (960, 1280), "mobilenet_v3_small": (576, 1024)}


@pytest.fixture(scope="module")
def graphs():
    return {m: archdsl.load(FILE, m) for m in MODELS}


def _meta(model: str) -> dict:
    return torchvision.models.get_model_weights(model).DEFAULT.meta


def _shapes(module) -> dict:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("model", MODELS)
def test_parameters_and_macs_match_torchvisions_weight_metadata(graphs, model):
    g = graphs[model]
    assert g.data(g.inputs[0])["shape"] == ("N", 3, 224, 224)
    assert g.param_count() == _meta(model)["num_params"]
    assert abs(totals(g)["macs"] / 1e9 - _meta(model)["_ops"]) <= 5e-4


def test_make_divisible_is_torchvisions():
    cases = [(v / 4, d, m) for v in range(0, 1400, 7) for d, m in ((8, None), (8, 16), (4, None))]
    cases += [(16 * w, 8, None) for w in (0.35, 0.5, 0.75, 1.25, 1.3)]
    lines = [f"assert mv3.make_divisible({v!r}, {d}, {'none' if m is None else m}) == {_make_divisible(v, d, m)}"
             for v, d, m in cases]
    src = (f'import "{FILE.as_posix()}" as mv3\nmodel check() {{\n    input x: [1]\n    '
           + "\n    ".join(lines) + "\n    output x\n}\n")
    archdsl.load(src, "check")
    with pytest.raises(archdsl.ArchError, match="Assertion failed"):    # the asserts are live
        archdsl.load(src.replace("== 8\n", "== 9\n", 1), "check")


@pytest.mark.parametrize("model", MODELS)
def test_bottlenecks_follow_the_papers_table(graphs, model):
    g = graphs[model]
    shape = lambda scope: g.data(g.by_scope(scope))["shape"]
    assert shape("features.0.0") == ("N", 16, 112, 112), "stem: 3x3 conv, stride 2, 16 channels"
    assert g.node(g.by_scope("features.0.2")).op == "hardswish"
    side, c_in = 112, 16
    for i, (k, exp, out, se, nl, stride) in enumerate(TABLES[model]):
        b = f"features.{i + 1}.block"
        side //= stride
        j = 0
        if exp != c_in:
            assert shape(f"{b}.0.0") == ("N", exp, side * stride, side * stride), "1x1 expansion"
            j = 1
        dw = g.node(g.by_scope(f"{b}.{j}.0"))
        assert dw.attrs["groups"] == exp and dw.param("weight").shape == (exp, 1, k, k)
        assert dw.shape == ("N", exp, side, side) and dw.attrs["stride"] == (stride, stride)
        assert g.node(g.by_scope(f"{b}.{j}.2")).op == ("hardswish" if nl == "HS" else "relu")
        if se:
            squeeze = _make_divisible(exp // 4, 8)
            assert g.node(g.by_scope(f"{b}.{j + 1}.fc1")).param("weight").shape == (squeeze, exp, 1, 1)
            assert g.node(g.by_scope(f"{b}.{j + 1}.fc2")).param("weight").shape == (exp, squeeze, 1, 1)
            ops = {n.op for n in g.nodes() if n.scope.startswith(f"{b}.{j + 1}.")}
            assert {"hardsigmoid", "mul", "relu"} <= ops and "sigmoid" not in ops
            j += 1
        project = f"{b}.{j + 1}"
        assert shape(f"{project}.1") == ("N", out, side, side)
        assert {n.op for n in g.nodes() if n.scope.startswith(project + ".")} == {"conv", "bn"}, "linear bottleneck"
        adds = [n for n in g.nodes() if n.op == "add" and n.scope.startswith(f"features.{i + 1}.")]
        assert len(adds) == (stride == 1 and c_in == out), "identity shortcut exactly where the shape is kept"
        c_in = out
    assert side == 7
    last, hidden = LAST[model]
    n = len(TABLES[model]) + 1
    assert shape(f"features.{n}.0") == ("N", last, 7, 7)
    assert g.node(g.by_scope("classifier.0")).shape == ("N", hidden)
    assert [g.node(g.by_scope(f"classifier.{i}")).op for i in range(4)] == ["linear", "hardswish", "dropout", "linear"]
    assert g.node(g.by_scope("classifier.2")).attrs["p"] == 0.2
    bns = [n for n in g.nodes() if n.op == "bn"]
    assert bns and all(n.attrs["eps"] == 1e-3 and n.attrs["momentum"] == 1e-2 for n in bns)


OPTIONS = [("mobilenet_v3_large", dict(width_mult=0.75)), ("mobilenet_v3_small", dict(width_mult=1.3)),
           ("mobilenet_v3_large", dict(reduced_tail=True, dilated=True)),
           ("mobilenet_v3_small", dict(reduced_tail=True, width_mult=0.5, num_classes=10))]


@pytest.mark.parametrize("model, options", OPTIONS, ids=[f"{m}-{'-'.join(o)}" for m, o in OPTIONS])
def test_torchvisions_options_give_its_names_and_shapes(model, options):
    g = archdsl.load(FILE, model, size=64, **options)
    with torch.device("meta"):
        ours = archdsl.to_torch(g, load_weights=False)
        theirs = torchvision.models.get_model(model, weights=None, **options)
    assert _shapes(ours) == _shapes(theirs)
    assert g.param_count() == sum(p.numel() for p in theirs.parameters())
    if options.get("dilated"):
        tail = [n for n in g.nodes() if n.op == "conv" and n.attrs["dilation"] == (2, 2)]
        assert [n.scope for n in tail] == [f"features.{i}.block.1.0" for i in (13, 14, 15)]
        assert all(n.attrs["stride"] == (1, 1) and n.attrs["padding"] == (4, 4) for n in tail)
        assert g.data(g.outputs[0])["shape"] == ("N", 1000)


def test_initial_weights_are_torchvisions():
    g = archdsl.load(FILE, "mobilenet_v3_small", size=64)
    convs = linears = 0
    for n in g.nodes():
        if n.op not in ("conv", "linear"):
            continue
        w = n.param("weight").value
        if "bias" in n.params:
            assert (n.param("bias").value == 0).all(), n.scope
        if n.op == "linear":
            std = 0.01
            linears += 1
        else:
            std = np.sqrt(2.0 / (w.shape[0] * w.shape[2] * w.shape[3]))      # kaiming normal, fan_out
            convs += 1
        if w.size >= 5000:
            assert abs(w.std() / std - 1) < 0.05 and abs(w.mean()) < 0.05 * std, n.scope
    assert linears == 2 and convs == 52
    for n in g.nodes():
        if n.op == "bn":
            assert (n.param("weight").value == 1).all() and (n.param("bias").value == 0).all()
