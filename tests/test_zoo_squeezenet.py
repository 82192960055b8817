"""zoo_specs/squeezenet.arch against the paper and torchvision's tables.

* both versions have the parameter count and GMACs (meta["_ops"]) of torchvision's
  weights, and torchvision's smallest valid input (meta["min_size"]): a ceil_mode
  max-pool window may overhang a 2x2 input, as in PyTorch;
* SqueezeNet 1.0 is Table 1 of Iandola et al.: 1,248,424 parameters, the feature
  maps 111 -> 55 -> 27 -> 13 for a 227x227 input, eight Fire modules whose squeeze
  layer is narrower than its expand layers (s1x1 < e1x1 + e3x3) and whose output is
  the concatenation of both expand layers, and no fully connected layer;
* about 50x fewer parameters than AlexNet (zoo_specs/alexnet.arch); 1.1 needs about
  2.4x less computation than 1.0 with slightly fewer parameters;
* the initial weights are torchvision's choice: kaiming_uniform (bound sqrt(6/fan_in))
  for every conv but the last, normal(0, 0.01) for the last, all biases zero.
Names, shapes and numerics against torchvision's modules are tests/test_zoo.py's.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

torchvision = pytest.importorskip("torchvision")

import archdsl  # noqa: E402
from archdsl import ArchError  # noqa: E402
from archdsl.ir.stats import totals  # noqa: E402

ZOO = Path(__file__).resolve().parent.parent / "zoo_specs"
SPEC = ZOO / "squeezenet.arch"
NAMES = ["squeezenet1_0", "squeezenet1_1"]


def _fires(g) -> list:
    return [s for s, info in g.scopes.items() if info.kind == "block" and info.name == "fire"]


def test_the_file_holds_torchvisions_models():
    assert {m.name for m in archdsl.list_models(SPEC) if not m.required} == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_and_macs_are_torchvisions(name):
    (weights,) = torchvision.models.get_model_weights(name)
    t = totals(archdsl.load(SPEC, name, size=weights.transforms.keywords["crop_size"]))
    assert t["params"] == weights.meta["num_params"]
    assert t["macs"] / 1e9 == pytest.approx(weights.meta["_ops"], abs=0.0015)


@pytest.mark.parametrize("name", NAMES)
def test_smallest_input_is_torchvisions(name):
    (weights,) = torchvision.models.get_model_weights(name)
    smallest = weights.meta["min_size"][0]
    g = archdsl.load(SPEC, name, size=smallest)
    assert g.data(g.outputs[0])["shape"] == ("N", 1000)
    with pytest.raises(ArchError) as err:
        archdsl.load(SPEC, name, size=smallest - 1)
    assert "squeezenet.arch:" in str(err.value)


def test_squeezenet1_0_is_table_1_of_the_paper():
    g = archdsl.load(SPEC, "squeezenet1_0", size=227)
    assert g.param_count() == 1_248_424
    nodes = [n for n in g.nodes() if n.op != "input"]
    assert not any(n.op == "linear" for n in nodes)
    convs = [n for n in nodes if n.op == "conv"]
    assert convs[0].shape == ("N", 96, 111, 111)
    pools = [n.shape for n in nodes if n.op == "maxpool"]
    assert pools == [("N", 96, 55, 55), ("N", 256, 27, 27), ("N", 512, 13, 13)]
    assert convs[-1].shape == ("N", 1000, 13, 13)
    fires = _fires(g)
    assert len(fires) == 8
    widths = [(128, 55), (128, 55), (256, 55), (256, 27), (384, 27), (384, 27), (512, 27), (512, 13)]
    by_scope = {n.scope: n for n in nodes}
    for scope, (out, pixels) in zip(fires, widths):
        squeeze, e1, e3 = (by_scope[f"{scope}.{c}"] for c in ("squeeze", "expand1x1", "expand3x3"))
        assert squeeze.attrs["kernel_size"] == e1.attrs["kernel_size"] == (1, 1)
        assert e3.attrs["kernel_size"] == (3, 3)
        assert squeeze.shape[1] < e1.shape[1] + e3.shape[1] == out
        concat = next(n for n in nodes if n.scope.startswith(scope + ".") and n.op == "concat")
        assert concat.shape == ("N", out, pixels, pixels)


def test_fifty_times_fewer_parameters_than_alexnet():
    alexnet = archdsl.load(ZOO / "alexnet.arch", "alexnet").param_count()
    ours = archdsl.load(SPEC, "squeezenet1_0").param_count()
    assert alexnet / ours == pytest.approx(50, rel=0.05)


def test_version_1_1_needs_less_computation():
    """The authors' repository: "2.4x less computation than SqueezeNet 1.0, without sacrificing accuracy"."""
    v0, v1 = (totals(archdsl.load(SPEC, name)) for name in NAMES)
    assert v0["macs"] / v1["macs"] == pytest.approx(2.4, abs=0.1)
    assert v1["params"] < v0["params"]


def test_initial_weights_are_torchvisions_choice():
    g = archdsl.load(SPEC, "squeezenet1_1", size=64)
    convs = [n for n in g.nodes() if n.op == "conv"]
    assert len(convs) == 1 + 3 * 8 + 1
    *rest, final = convs
    w = final.param("weight").value
    assert abs(w.std() - 0.01) < 0.0005 and abs(w.mean()) < 0.0005
    for n in rest:
        w = n.param("weight").value
        bound = math.sqrt(6 / (w.size // w.shape[0]))              # kaiming_uniform, fan_in, ReLU gain
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound, n.scope
        assert abs(w.std() - bound / math.sqrt(3)) < 0.1 * bound, n.scope
    for n in convs:
        assert not n.param("bias").value.any(), n.scope
