"""zoo_specs/resnext.arch and zoo_specs/wide_resnet.arch against the papers and torchvision's tables.

* every model has the parameter count and GMACs (meta["_ops"], conv and linear
  multiply-accumulates) of each of torchvision's weight entries, at its crop size;
* ResNeXt-50 (32x4d) is Table 1 of Xie et al.: four stages of 3, 4, 6, 3 blocks
  at 56, 28, 14, 7 pixels, grouped 3x3 convs of C = 32 groups and 128 .. 1024
  channels, 256 .. 2048 block outputs, about 25.0M parameters and 4.2 GFLOPs,
  the complexity of ResNet-50 (25.5M, 4.1 GFLOPs);
* a block of the template has C * (256 d + 9 d^2 + 256 d) parameters in its three
  convs, 70k for C = 32, d = 4 (Section 3.3 of the paper);
* the depth in the name counts the weight layers, projections excluded;
* the wide ResNets are ResNet-50/101 with the inner 1x1 and 3x3 convs twice as wide
  (k = 2) and everything else unchanged.
Names, shapes and numerics against torchvision's modules are tests/test_zoo.py's.
"""
from __future__ import annotations

from pathlib import Path

import pytest

torchvision = pytest.importorskip("torchvision")

import archdsl  # noqa: E402
from archdsl.ir.stats import totals  # noqa: E402

ZOO = Path(__file__).resolve().parent.parent / "zoo_specs"
MODELS = {"resnext50_32x4d": "resnext.arch", "resnext101_32x8d": "resnext.arch",
          "resnext101_64x4d": "resnext.arch", "wide_resnet50_2": "wide_resnet.arch",
          "wide_resnet101_2": "wide_resnet.arch"}


def _load(name: str, **params):
    return archdsl.load(ZOO / MODELS[name], name, **params)


def _by_scope(g) -> dict:
    return {n.scope: n for n in g.nodes() if n.scope}


def test_the_files_hold_torchvisions_models():
    for file in set(MODELS.values()):
        names = {m.name for m in archdsl.list_models(ZOO / file) if not m.required}
        assert names == {m for m, f in MODELS.items() if f == file}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_parameter_count_and_macs_are_torchvisions(name):
    for weights in torchvision.models.get_model_weights(name):
        size = weights.transforms.keywords["crop_size"]
        t = totals(_load(name, size=size))
        assert t["params"] == weights.meta["num_params"], weights
        assert t["macs"] / 1e9 == pytest.approx(weights.meta["_ops"], abs=0.0015), weights


def test_resnext50_is_table_1_of_the_paper():
    g = _load("resnext50_32x4d")
    nodes = _by_scope(g)
    for stage, (blocks, width, out, pixels) in enumerate(
            [(3, 128, 256, 56), (4, 256, 512, 28), (6, 512, 1024, 14), (3, 1024, 2048, 7)], start=1):
        assert f"layer{stage}.{blocks - 1}.conv3" in nodes and f"layer{stage}.{blocks}.conv1" not in nodes
        for b in range(blocks):
            grouped = nodes[f"layer{stage}.{b}.conv2"]
            assert grouped.attrs["groups"] == 32 and grouped.attrs["kernel_size"] == (3, 3)
            assert grouped.shape == ("N", width, pixels, pixels)
            assert nodes[f"layer{stage}.{b}.conv3"].shape == ("N", out, pixels, pixels)
    t = totals(g)
    assert t["params"] / 1e6 == pytest.approx(25.0, abs=0.05)            # "25.0 x 10^6"
    assert t["macs"] / 1e9 == pytest.approx(4.2, abs=0.05)               # "4.2 x 10^9" FLOPs


def test_resnext50_keeps_the_complexity_of_resnet50():
    """The point of the paper's Table 1: cardinality replaces width at about the same cost."""
    ours = totals(_load("resnext50_32x4d"))
    resnet50 = totals(archdsl.load(ZOO / "resnet.arch", "resnet50"))
    assert resnet50["params"] / 1e6 == pytest.approx(25.5, abs=0.1)        # 25.56M, printed "25.5"
    assert resnet50["macs"] / 1e9 == pytest.approx(4.1, abs=0.05)
    assert ours["params"] < resnet50["params"]
    assert abs(ours["macs"] / resnet50["macs"] - 1) < 0.04


def test_a_template_block_has_the_papers_parameter_count():
    """C * (256 d + 3 * 3 * d * d + d * 256) for a block with 256 inputs and outputs: ~70k at C=32, d=4."""
    g = _load("resnext50_32x4d")
    c, d = 32, 4
    block = sum(g.params[p].numel for n in g.nodes() if n.op == "conv" and n.scope.startswith("layer1.1.")
                for p in n.params.values())
    assert block == c * (256 * d + 3 * 3 * d * d + d * 256) == 70_144


@pytest.mark.parametrize("name, groups, width", [("resnext101_32x8d", 32, 256), ("resnext101_64x4d", 64, 256),
                                                 ("wide_resnet101_2", 1, 128)])
def test_cardinality_and_width_of_the_first_stage(name, groups, width):
    conv2 = _by_scope(_load(name))["layer1.0.conv2"]
    assert conv2.attrs["groups"] == groups and conv2.shape[1] == width


@pytest.mark.parametrize("name", sorted(MODELS))
def test_depth_counts_the_weight_layers(name):
    depth = 101 if "101" in name else 50
    g = _load(name)
    layers = [n for n in g.nodes() if n.op in ("conv", "linear") and "downsample" not in n.scope.split(".")]
    assert len(layers) == depth
    assert sum(n.op == "conv" and "downsample" in n.scope.split(".") for n in g.nodes()) == 4


@pytest.mark.parametrize("name, resnet", [("wide_resnet50_2", "resnet50"), ("wide_resnet101_2", "resnet101")])
def test_wide_resnet_doubles_the_inner_width_only(name, resnet):
    wide, thin = _by_scope(_load(name)), _by_scope(archdsl.load(ZOO / "resnet.arch", resnet))
    assert wide.keys() == thin.keys()
    inner = 0
    for scope, n in thin.items():
        w = wide[scope]
        if n.op not in ("conv", "bn", "linear", "add"):
            continue
        if scope.split(".")[-1] in ("conv1", "bn1", "conv2", "bn2") and scope.startswith("layer"):
            assert w.shape == (n.shape[0], 2 * n.shape[1], *n.shape[2:]), scope
            inner += 1
        else:
            assert w.shape == n.shape, scope
        assert w.attrs.get("groups", 1) == 1
    assert inner == 4 * (sum([3, 4, 6, 3]) if "50" in name else sum([3, 4, 23, 3]))
