"""zoo_specs/inception_v3.arch against the paper and torchvision's Inception3 (aux_logits=False).

* the parameter count is torchvision's published one less its auxiliary classifier
  (InceptionAux(768, 1000), left out here), and the GMACs are meta["_ops"] at 299x299
  (the auxiliary head does not run in evaluation);
* the smallest input is torchvision's meta["min_size"], 75x75; 74 fails with a
  located error;
* the grids of the paper: 299 -> 149 -> 147 -> 73 -> 71 -> 35, three modules at
  35x35, four at 17x17 and two at 8x8 after the two reductions, with torchvision's
  channel counts (256, 288, 288, 768 x 5, 1280, 2048, 2048);
* the factorisations: no kernel larger than 5x5, the 5x5 only in the 35x35 modules, the
  1x7 / 7x1 pairs only at 17x17 with 128, 160, 160, 192 inner channels, the 1x3 / 3x1
  pairs side by side only at 8x8;
* all 94 convs are BasicConv2d: no bias, batch norm with eps 0.001;
* the initial weights: conv and fc weights trunc_normal(0, 0.1) cut at -2 and 2, the fc
  bias PyTorch's default uniform(+-1/sqrt(2048)).
Names, shapes and numerics against torchvision's module are tests/test_zoo.py's.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
from torchvision.models.inception import InceptionAux  # noqa: E402

import archdsl  # noqa: E402
from archdsl import ArchError  # noqa: E402
from archdsl.ir.stats import totals  # noqa: E402

SPEC = Path(__file__).resolve().parent.parent / "zoo_specs" / "inception_v3.arch"
(WEIGHTS,) = torchvision.models.get_model_weights("inception_v3")


def _by_scope(g) -> dict:
    return {n.scope: n for n in g.nodes() if n.scope}


def test_parameter_count_and_macs_are_torchvisions_without_the_auxiliary_head():
    with torch.device("meta"):
        aux = sum(p.numel() for p in InceptionAux(768, 1000).parameters())
    assert aux == 3_326_696
    t = totals(archdsl.load(SPEC, "inception_v3", size=WEIGHTS.transforms.keywords["crop_size"]))
    assert t["params"] == WEIGHTS.meta["num_params"] - aux
    assert t["macs"] / 1e9 == pytest.approx(WEIGHTS.meta["_ops"], abs=0.0015)


def test_the_default_input_is_299_and_the_smallest_75():
    assert archdsl.load(SPEC, "inception_v3").data(archdsl.load(SPEC, "inception_v3").inputs[0])["shape"] == (
        "N", 3, 299, 299)
    smallest = WEIGHTS.meta["min_size"][0]
    assert smallest == 75
    g = archdsl.load(SPEC, "inception_v3", size=smallest)
    assert _module_outputs(g)["Mixed_7c"] == ("N", 2048, 1, 1)
    with pytest.raises(ArchError) as err:
        archdsl.load(SPEC, "inception_v3", size=smallest - 1)
    assert "inception_v3.arch:" in str(err.value)


def _module_outputs(g) -> dict:
    """The output shape of every Mixed_* module: its last concat (a module scope ends in its concat)."""
    out = {}
    for n in g.nodes():
        top = n.scope.split(".")[0]
        if top.startswith("Mixed_") and n.op == "concat" and n.scope.count(".") == 1:
            out[top] = n.shape
    return out


def test_grids_and_widths_follow_the_paper():
    g = archdsl.load(SPEC, "inception_v3")
    nodes = _by_scope(g)
    stem = [nodes[f"Conv2d_{s}.conv"].shape[2] for s in ("1a_3x3", "2a_3x3", "2b_3x3", "3b_1x1", "4a_3x3")]
    assert stem == [149, 147, 147, 73, 71]
    assert nodes["maxpool1"].shape == ("N", 64, 73, 73) and nodes["maxpool2"].shape == ("N", 192, 35, 35)
    expected = {"5b": (256, 35), "5c": (288, 35), "5d": (288, 35), "6a": (768, 17), "6b": (768, 17),
                "6c": (768, 17), "6d": (768, 17), "6e": (768, 17), "7a": (1280, 8), "7b": (2048, 8),
                "7c": (2048, 8)}
    outputs = _module_outputs(g)
    assert list(outputs) == [f"Mixed_{k}" for k in expected]
    for k, (c, pixels) in expected.items():
        assert outputs[f"Mixed_{k}"] == ("N", c, pixels, pixels), k
    assert g.data(g.outputs[0])["shape"] == ("N", 1000)


def test_factorised_convolutions():
    g = archdsl.load(SPEC, "inception_v3")
    convs = [n for n in g.nodes() if n.op == "conv"]
    kernels = {}
    for n in convs:
        kernels.setdefault(n.attrs["kernel_size"], set()).add(n.scope.split(".")[0])
    assert max(kh * kw for kh, kw in kernels) == 25
    assert kernels[(5, 5)] == {"Mixed_5b", "Mixed_5c", "Mixed_5d"}
    assert kernels[(1, 7)] == kernels[(7, 1)] == {"Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a"}
    assert kernels[(1, 3)] == kernels[(3, 1)] == {"Mixed_7b", "Mixed_7c"}
    nodes = _by_scope(g)
    assert [nodes[f"Mixed_{k}.branch7x7_1.conv"].shape[1] for k in ("6b", "6c", "6d", "6e")] == [128, 160, 160, 192]
    # the 1x3 and 3x1 of the 8x8 modules read the same tensor and are concatenated side by side
    a, b = nodes["Mixed_7b.branch3x3_2a.conv"], nodes["Mixed_7b.branch3x3_2b.conv"]
    assert a.inputs == b.inputs
    users = [n for n in g.nodes() if n.op == "concat" and len(n.inputs) == 2]
    assert len(users) == 4                                   # two per 8x8 module


def test_every_conv_is_a_basic_conv2d():
    g = archdsl.load(SPEC, "inception_v3")
    convs = [n for n in g.nodes() if n.op == "conv"]
    bns = [n for n in g.nodes() if n.op == "bn"]
    assert len(convs) == len(bns) == 94
    assert all(not n.attrs["bias"] and n.scope.endswith(".conv") for n in convs)
    assert all(n.attrs["eps"] == 0.001 and n.scope.endswith(".bn") for n in bns)
    assert [n.op for n in g.nodes()].count("linear") == 1


def test_initial_weights_are_truncated_normals():
    g = archdsl.load(SPEC, "inception_v3", size=75)
    nodes = _by_scope(g)
    for scope in ("Conv2d_1a_3x3.conv", "Mixed_6e.branch7x7dbl_3.conv", "Mixed_7c.branch3x3dbl_2.conv", "fc"):
        w = nodes[scope].param("weight").value
        assert abs(w.std() - 0.1) < 0.01 and abs(w.mean()) < 0.01, scope
        assert np.abs(w).max() <= 2.0, scope
    bias = nodes["fc"].param("bias").value
    bound = 1 / math.sqrt(2048)
    assert np.abs(bias).max() <= bound and np.abs(bias).max() > 0.9 * bound
