"""ConvNeXt (zoo_specs/convnext.arch) against the paper (Liu et al., 2022) and torchvision.

* trainable parameters and multiply-accumulates at 224x224 equal torchvision's weight metadata
  (``meta["num_params"]`` exactly; ``meta["_ops"]``, GMACs of the conv and linear layers, to its 3 decimals);
* the stage table of Section 3: channels C and blocks B per stage, resolutions H/4 .. H/32;
* stochastic depth: block k of K (counted across stages) drops its branch with probability
  rate * k / (K - 1), torchvision's schedule, per-row ("row" mode);
* layer scale: a bare (C, 1, 1) parameter named ``...layer_scale``, starting at 1e-6 (or the model's
  ``layer_scale``); conv and linear weights start from a normal of std 0.02, biases at zero;
* train mode with stochastic depth: seeded forwards of ours and torchvision's convnext_tiny draw the same
  masks and agree in outputs and gradients (tolerance as tests/test_zoo.py: |a - b| <= 1e-5 + 1e-5 |b|).

Only convnext_tiny runs numerics, at 32x32 (torchvision's min_size); the others are elaborated only.
"""
from __future__ import annotations

import numpy as np
import pytest

import archdsl
from archdsl.ir.stats import totals

from zoo import ZOO

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

FILE = ZOO / "convnext.arch"
MODELS = ["convnext_tiny", "convnext_small", "convnext_base", "convnext_large"]
# Section 3 of the paper: (C, B) of the four stages; torchvision's stochastic depth rates.
TABLE = {"convnext_tiny": ([96, 192, 384, 768], [3, 3, 9, 3], 0.1),
         "convnext_small": ([96, 192, 384, 768], [3, 3, 27, 3], 0.4),
         "convnext_base": ([128, 256, 512, 1024], [3, 3, 27, 3], 0.5),
         "convnext_large": ([192, 384, 768, 1536], [3, 3, 27, 3], 0.5)}


@pytest.fixture(scope="module")
def graphs():
    return {m: archdsl.load(FILE, m) for m in MODELS}


def _meta(model: str) -> dict:
    return torchvision.models.get_model_weights(model).DEFAULT.meta


@pytest.mark.parametrize("model", MODELS)
def test_parameters_and_macs_match_torchvisions_weight_metadata(graphs, model):
    g = graphs[model]
    assert g.param_count() == _meta(model)["num_params"]
    assert abs(totals(g)["macs"] / 1e9 - _meta(model)["_ops"]) <= 5e-4


@pytest.mark.parametrize("model", MODELS)
def test_stages_follow_the_papers_table(graphs, model):
    g = graphs[model]
    widths, depths, _ = TABLE[model]
    assert g.data(g.by_scope("features.0.1"))["shape"] == ("N", widths[0], 56, 56), "patchify stem: 4x4, stride 4"
    for i, (c, b) in enumerate(zip(widths, depths)):
        stage = f"features.{2 * i + 1}"
        blocks = {n.scope.split(".")[2] for n in g.nodes() if n.scope.startswith(stage + ".")}
        assert blocks == {str(j) for j in range(b)}
        side = 56 >> i
        last = g.data(g.by_scope(f"{stage}.{b - 1}.block.6"))["shape"]
        assert last == ("N", c, side, side)
        dw = g.node(g.by_scope(f"{stage}.0.block.0"))
        assert dw.attrs["groups"] == c and dw.param("weight").shape == (c, 1, 7, 7)
        mlp = g.node(g.by_scope(f"{stage}.0.block.3"))
        assert mlp.shape[-1] == 4 * c, "the inverted bottleneck widens 4x"
    assert g.data(g.by_scope("classifier.2"))["shape"] == ("N", 1000)


@pytest.mark.parametrize("model", MODELS)
def test_stochastic_depth_rises_linearly_to_the_models_rate(graphs, model):
    g = graphs[model]
    _, depths, rate = TABLE[model]
    total = sum(depths)
    drops = [n for n in g.nodes() if n.op == "drop_path"]
    assert len(drops) == total
    expected = [f"features.{2 * i + 1}.{j}.stochastic_depth" for i, b in enumerate(depths) for j in range(b)]
    assert [n.scope for n in drops] == expected
    p = [n.attrs["p"] for n in drops]
    assert p[0] == 0.0 and p[-1] == pytest.approx(rate)
    np.testing.assert_allclose(np.diff(p), rate / (total - 1), rtol=1e-9)
    assert all(n.attrs.get("mode", "row") == "row" for n in drops)
    with torch.device("meta"):
        tv = torchvision.models.get_model(model)
    theirs = {name: (m.p, m.mode) for name, m in tv.named_modules()
              if isinstance(m, torchvision.ops.StochasticDepth)}
    assert {n.scope: (n.attrs["p"], n.attrs.get("mode", "row")) for n in drops} == theirs


def test_layer_scale_and_initial_weights():
    g = archdsl.load(FILE, "convnext_tiny", size=32)
    scales = [n for n in g.nodes() if n.op == "scale"]
    assert len(scales) == 18
    for n in scales:
        (name,) = n.params.values()
        assert name == n.scope and name.endswith(".layer_scale"), "a bare parameter named after its label"
        c = n.shape[1]
        value = g.params[name].value
        assert value.shape == (c, 1, 1)
        assert (value == np.float32(1e-6)).all()
    assert (archdsl.load(FILE, "convnext_tiny", size=32, layer_scale=0.5)
            .params["features.3.1.layer_scale"].value == np.float32(0.5)).all()
    checked = 0
    for n in g.nodes():
        if n.op in ("conv", "linear"):
            w, b = n.param("weight").value, n.param("bias").value
            assert (b == 0).all(), n.scope
            assert np.abs(w).max() <= 2.0
            if w.size >= 20000:
                assert abs(w.std() - 0.02) < 0.001 and abs(w.mean()) < 0.001, n.scope
                checked += 1
        elif n.op == "layer_norm":
            assert (n.param("weight").value == 1).all() and (n.param("bias").value == 0).all(), n.scope
    assert checked >= 30


def _twins(rate: float):
    """torchvision's convnext_tiny and ours (32x32) with torchvision's weights, both at stochastic depth ``rate``."""
    torch.manual_seed(0)
    tv = torchvision.models.get_model("convnext_tiny", weights=None, stochastic_depth_prob=rate)
    with torch.no_grad():                       # layer scale 1e-6 would hide every branch from the output
        for name, p in tv.named_parameters():
            if name.endswith("layer_scale"):
                p.fill_(0.5)
    g = archdsl.load(FILE, "convnext_tiny", size=32, stochastic_depth_prob=rate)
    with torch.device("meta"):
        ours = archdsl.to_torch(g, load_weights=False)
    ours.load_state_dict({k: v.clone() for k, v in tv.state_dict().items()}, strict=True, assign=True)
    return ours, tv


def test_train_mode_with_stochastic_depth_matches_torchvision_seed_for_seed():
    ours, tv = _twins(0.6)
    ours.train()
    tv.train()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    w = torch.randn(4, 1000, generator=torch.Generator().manual_seed(2))
    close = dict(rtol=1e-5, atol=1e-5)
    outputs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        a = ours(x)
        torch.manual_seed(seed)
        b = tv(x)
        torch.testing.assert_close(a, b, **close)
        outputs.append(b.detach())
    assert (outputs[0] - outputs[1]).abs().max() > 1e-3, "the masks differ between seeds: the test draws some"
    (a * w).sum().backward()
    (b * w).sum().backward()
    params_a = dict(ours.named_parameters())
    for name, p in tv.named_parameters():
        torch.testing.assert_close(params_a[name].grad, p.grad, **close, msg=lambda m: f"{name}: {m}")
    ours.eval()
    tv.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), rtol=0, atol=1e-5)
        assert (tv(x) - outputs[1]).abs().max() > 1e-3, "eval mode keeps every branch"
