"""EfficientNet B0-B7 (zoo_specs/efficientnet.arch, Tan and Le 2019) and EfficientNetV2 S/M/L
(zoo_specs/efficientnet_v2.arch, Tan and Le 2021) against the papers and torchvision.

* trainable parameters and multiply-accumulates at the default size equal torchvision's weight metadata
  (``meta["num_params"]`` exactly; ``meta["_ops"]``, GMACs of the conv and linear layers, to its 3 decimals);
* the default input size is the crop size of torchvision's eval transforms for the DEFAULT weights;
* compound scaling (Section 3.3): stage s of B_phi repeats ceil(n_s * depth_mult) units of
  make_divisible(c_s * width_mult) channels (Table 1 for B0), halving the resolution at its stride;
* EfficientNetV2 (Table 4): Fused-MBConv in the first stages (one regular kxk conv, no SE),
  MBConv with SE after, 1x1 head conv to 1280;
* stochastic depth: unit k of K overall drops its residual branch with probability 0.2 * k / K ("row"
  mode), only where the unit has an identity shortcut, as torchvision's StochasticDepth modules;
* batch norm eps/momentum and the classifier's dropout per variant, as torchvision;
* the initial weights are torchvision's: convs kaiming-normal fan_out, the classifier uniform in
  +-1/sqrt(out_features), biases zero, batch norms ones/zeros.

Numerics against torchvision (eval and train mode) run for efficientnet_b0 and efficientnet_v2_s in
tests/test_zoo.py; the big variants are only elaborated here.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import archdsl
from archdsl.ir.stats import totals

from zoo import ZOO

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
nn = torch.nn

V1 = ZOO / "efficientnet.arch"
V2 = ZOO / "efficientnet_v2.arch"
# torchvision's (width_mult, depth_mult, dropout); Table 1 of the paper: expansion, kernel, stride, c_in, c_out, n.
SCALING = {"efficientnet_b0": (1.0, 1.0, 0.2), "efficientnet_b1": (1.0, 1.1, 0.2), "efficientnet_b2": (1.1, 1.2, 0.3),
           "efficientnet_b3": (1.2, 1.4, 0.3), "efficientnet_b4": (1.4, 1.8, 0.4), "efficientnet_b5": (1.6, 2.2, 0.4),
           "efficientnet_b6": (1.8, 2.6, 0.5), "efficientnet_b7": (2.0, 3.1, 0.5)}
B0 = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
      (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]
# EfficientNetV2 (Table 4 for S; M and L as torchvision): fused?, expansion, kernel, stride, c_in, c_out, n.
V2_TABLES = {
    "efficientnet_v2_s": [(True, 1, 3, 1, 24, 24, 2), (True, 4, 3, 2, 24, 48, 4), (True, 4, 3, 2, 48, 64, 4),
                          (False, 4, 3, 2, 64, 128, 6), (False, 6, 3, 1, 128, 160, 9),
                          (False, 6, 3, 2, 160, 256, 15)],
    "efficientnet_v2_m": [(True, 1, 3, 1, 24, 24, 3), (True, 4, 3, 2, 24, 48, 5), (True, 4, 3, 2, 48, 80, 5),
                          (False, 4, 3, 2, 80, 160, 7), (False, 6, 3, 1, 160, 176, 14),
                          (False, 6, 3, 2, 176, 304, 18), (False, 6, 3, 1, 304, 512, 5)],
    "efficientnet_v2_l": [(True, 1, 3, 1, 32, 32, 4), (True, 4, 3, 2, 32, 64, 7), (True, 4, 3, 2, 64, 96, 7),
                          (False, 4, 3, 2, 96, 192, 10), (False, 6, 3, 1, 192, 224, 19),
                          (False, 6, 3, 2, 224, 384, 25), (False, 6, 3, 1, 384, 640, 7)],
}
V2_DROPOUT = {"efficientnet_v2_s": 0.2, "efficientnet_v2_m": 0.3, "efficientnet_v2_l": 0.4}
MODELS = [(V1, m) for m in SCALING] + [(V2, m) for m in V2_TABLES]
ids = [m for _, m in MODELS]


def make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def stages(model: str) -> list[tuple]:
    """(fused, expansion, kernel, stride, c_out, repeats) of every stage, scaled."""
    if model in V2_TABLES:
        return [(f, e, k, s, c, n) for f, e, k, s, _, c, n in V2_TABLES[model]]
    w, d, _ = SCALING[model]
    return [(False, e, k, s, make_divisible(c * w), int(math.ceil(n * d))) for e, k, s, _, c, n in B0]


_graphs: dict = {}


def graph(file, model: str):
    if model not in _graphs:
        _graphs[model] = archdsl.load(file, model)
    return _graphs[model]


def torchvision_meta(model: str):
    with torch.device("meta"):
        return torchvision.models.get_model(model, weights=None)


def _weights(model: str):
    return torchvision.models.get_model_weights(model).DEFAULT


@pytest.mark.parametrize("file, model", MODELS, ids=ids)
def test_size_parameters_and_macs_match_torchvisions_weights(file, model):
    g = graph(file, model)
    crop = _weights(model).transforms().crop_size[0]
    assert g.data(g.inputs[0])["shape"] == ("N", 3, crop, crop)
    meta = _weights(model).meta
    assert g.param_count() == meta["num_params"]
    assert abs(totals(g)["macs"] / 1e9 - meta["_ops"]) <= 5e-4


@pytest.mark.parametrize("file, model", MODELS, ids=ids)
def test_stages_follow_the_papers_tables(file, model):
    g = graph(file, model)
    node = lambda scope: g.node(g.by_scope(scope))
    side = g.data(g.inputs[0])["shape"][-1]
    side = (side + 1) // 2
    table = stages(model)
    stem = node("features.0.0")
    c_in = make_divisible(32 * SCALING[model][0]) if model in SCALING else V2_TABLES[model][0][4]
    assert stem.shape == ("N", c_in, side, side) and stem.attrs["stride"] == (2, 2)
    for s, (fused, e, k, stride, c_out, n) in enumerate(table):
        stage = f"features.{s + 1}"
        units = {x.scope.split(".")[2] for x in g.nodes() if x.scope.startswith(stage + ".")}
        assert units == {str(j) for j in range(n)}, f"{stage}: {n} units"
        side = (side - 1) // stride + 1
        for j in range(n):
            unit = f"{stage}.{j}"
            ops = [x for x in g.nodes() if x.scope.startswith(unit + ".")]
            c = c_in if j == 0 else c_out
            expanded = make_divisible(c * e)
            convs = [x for x in ops if x.op == "conv"]
            if fused:
                assert not any(x.scope.endswith(".fc1") for x in convs), "Fused-MBConv has no SE"
                assert convs[0].param("weight").shape == (expanded if e != 1 else c_out, c, k, k)
                assert len(convs) == (2 if e != 1 else 1)
            else:
                dw = [x for x in convs if x.attrs["groups"] > 1]
                assert len(dw) == 1 and dw[0].param("weight").shape == (expanded, 1, k, k)
                (fc1,) = [x for x in convs if x.scope.endswith(".fc1")]
                assert fc1.param("weight").shape == (max(1, c // 4), expanded, 1, 1), "SE squeezes to c_in / 4"
                assert len(convs) == (4 if e == 1 else 5)
            assert {x.op for x in ops} >= {"silu"}
            last = node(f"{unit}.block.{len(convs) - (1 if fused else 2)}.1")     # the projection's bn
            assert last.shape == ("N", c_out, side, side)
            adds = [x for x in ops if x.op == "add"]
            assert len(adds) == (j > 0 or (stride == 1 and c_in == c_out))
        c_in = c_out
    head = node(f"features.{len(table) + 1}.0")
    assert head.shape[1] == (1280 if model in V2_TABLES else 4 * c_in)
    assert node("classifier.1").shape == ("N", 1000)


@pytest.mark.parametrize("file, model", MODELS, ids=ids)
def test_stochastic_depth_bn_and_dropout_are_torchvisions(file, model):
    g = graph(file, model)
    tv = torchvision_meta(model)
    drops = [n for n in g.nodes() if n.op == "drop_path"]
    ours = {n.scope: (n.attrs["p"], n.attrs.get("mode", "row")) for n in drops}
    theirs = {name + ".stochastic_depth": (m.stochastic_depth.p, m.stochastic_depth.mode)
              for name, m in tv.named_modules() if hasattr(m, "stochastic_depth") and m.use_res_connect}
    assert ours == theirs
    total = sum(n for *_, n in stages(model))
    for s, stage in enumerate(stages(model)):
        first = sum(n for *_, n in stages(model)[:s])
        for j in range(stage[-1]):
            scope = f"features.{s + 1}.{j}.stochastic_depth"
            if scope in ours:
                assert ours[scope][0] == 0.2 * (first + j) / total
    bns = {n.scope: (n.attrs["eps"], n.attrs["momentum"]) for n in g.nodes() if n.op == "bn"}
    assert bns == {name: (m.eps, m.momentum) for name, m in tv.named_modules() if isinstance(m, nn.BatchNorm2d)}
    expected = (1e-3, 0.01) if model in ("efficientnet_b5", "efficientnet_b6", "efficientnet_b7") else \
        (1e-3, 0.1) if model in V2_TABLES else (1e-5, 0.1)
    assert set(bns.values()) == {expected}
    dropout = g.node(g.by_scope("classifier.0"))
    p = SCALING[model][2] if model in SCALING else V2_DROPOUT[model]
    assert dropout.op == "dropout" and dropout.attrs["p"] == p == tv.classifier[0].p


@pytest.mark.parametrize("file, model", [(V1, "efficientnet_b0"), (V2, "efficientnet_v2_s")])
def test_initial_weights_are_torchvisions(file, model):
    g = archdsl.load(file, model, size=64)
    bound = 1 / math.sqrt(1000)
    checked = 0
    for n in g.nodes():
        if n.op in ("conv", "linear"):
            w = n.param("weight").value
            if "bias" in n.params:
                assert (n.param("bias").value == 0).all(), n.scope
            if n.op == "linear":
                assert np.abs(w).max() <= bound and abs(w.std() / (bound / math.sqrt(3)) - 1) < 0.02
                assert abs(w.mean()) < 0.01 * bound
            elif w.size >= 5000:
                std = math.sqrt(2.0 / (w.shape[0] * w.shape[2] * w.shape[3]))        # kaiming normal, fan_out
                assert abs(w.std() / std - 1) < 0.05 and abs(w.mean()) < 0.05 * std, n.scope
                checked += 1
        elif n.op == "bn":
            assert (n.param("weight").value == 1).all() and (n.param("bias").value == 0).all()
    assert checked >= 20


def test_generic_model_takes_torchvisions_options():
    """stochastic_depth_prob and num_classes of torchvision's constructor, on the generic model."""
    g = archdsl.load(V1, "efficientnet_b0", size=64, stochastic_depth_prob=0.5, num_classes=10)
    with torch.device("meta"):
        tv = torchvision.models.get_model("efficientnet_b0", weights=None, stochastic_depth_prob=0.5, num_classes=10)
    theirs = {name: m.p for name, m in tv.named_modules() if isinstance(m, torchvision.ops.StochasticDepth)}
    ours = {n.scope: n.attrs["p"] for n in g.nodes() if n.op == "drop_path"}
    assert ours and all(theirs[k] == v for k, v in ours.items())
    assert max(ours.values()) == 0.5 * 14 / 16, "unit 14 of 16 (features.6.3) is the last with a shortcut"
    assert g.data(g.outputs[0])["shape"] == ("N", 10)
