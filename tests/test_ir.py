"""The IR: save/load round trip, canonical printer, verification, statistics."""
import json

import numpy as np
import pytest
import torch

import archdsl
from archdsl import ArchError
from archdsl.ir import serialize
from archdsl.ir.printer import print_graph
from archdsl.ir.stats import stats_json
from archdsl.ir.verify import infer_shapes, verify

RESNET = "zoo_specs/resnet.arch"


@pytest.fixture(scope="module")
def resnet18():
    return archdsl.load(RESNET, "resnet18", size=64)


def test_save_load_is_lossless(tmp_path, resnet18):
    g = resnet18.copy()
    g.params["fc.bias"].value = np.arange(1000, dtype=np.float32)   # a non-initial value survives too
    serialize.save(g, tmp_path / "r18.json")
    back = serialize.load(tmp_path / "r18.json")
    assert print_graph(back) == print_graph(g)
    assert serialize.to_dict(back) == serialize.to_dict(g)
    assert set(back.params) == set(g.params)
    for name, p in g.params.items():
        np.testing.assert_array_equal(back.params[name].value, p.value)
        assert back.params[name].value.dtype == p.value.dtype
    assert back.scopes["layer2.0"].args == {"planes": 128, "stride": 2}
    verify(back)


def test_round_trip_keeps_spans_and_scopes(tmp_path, resnet18):
    serialize.save(resnet18, tmp_path / "g.json")
    back = serialize.load(tmp_path / "g.json")
    for a, b in zip(resnet18.nodes(), back.nodes()):
        assert (a.op, a.scope, a.span, a.inputs, a.shape) == (b.op, b.scope, b.span, b.inputs, b.shape)


def test_printer_is_deterministic_and_names_locations(resnet18):
    text = print_graph(resnet18)
    assert text == print_graph(archdsl.load(RESNET, "resnet18", size=64))
    assert "@layer1.0.conv1  # zoo_specs/resnet.arch:" in text
    assert text.splitlines()[0] == "graph resnet18(%0: (N, 3, 64, 64)) {"


def test_verify_catches_a_wrong_shape(resnet18):
    g = resnet18.copy()
    conv = next(n for n in g.nodes() if n.scope == "layer1.0.conv1")
    g.update(conv.id, shape=("N", 3, 3, 3))
    with pytest.raises(ArchError, match=r"Node @layer1.0.conv1 \(conv\) records shape \(N, 3, 3, 3\)"):
        verify(g)


def test_shape_inference_agrees_with_elaboration(resnet18):
    shapes = infer_shapes(resnet18)
    assert all(shapes[n.id] == n.shape for n in resnet18.nodes())


def test_stats_match_an_independent_count_through_pytorch():
    g = archdsl.load(RESNET, "resnet50")
    model = archdsl.to_torch(g, load_weights=False)
    macs = []

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            macs.append(output[0].numel() * module.in_channels // module.groups * kh * kw)
        elif isinstance(module, torch.nn.Linear):
            macs.append(output[0].numel() * module.in_features)
    for m in model.modules():
        m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    s = stats_json(g)
    assert s["macs"] == sum(macs)
    assert s["params"] == sum(p.numel() for p in model.parameters())
    assert s["nodes"] == len(g) and len(s["layers"]) == len(g)
    assert round(s["macs"] / 1e9, 2) == 4.09            # the paper's 4.1 GFLOPs (multiply-adds)
    json.dumps(s)


def test_lazy_parameters_are_not_materialised_by_loading_or_stats():
    # a 2e9-element weight (8 GB), just within the size guard of archdsl.ir.ops (MAX_PARAM_ELEMENTS)
    g = archdsl.load("model m() { input x: [3, 8, 8]\n output x -> conv(40000, 3) -> conv(50000, 1) }")
    stats_json(g)
    assert not any(p.materialised for p in g.params.values())
    assert g.param_count() == 40000 * 3 * 9 + 40000 + 40000 * 50000 + 50000
