"""The ops layer_norm, permute, scale and drop_path (ConvNeXt's): shape rules and their errors, the
PyTorch lowering against torch and torchvision, onnxruntime, the generated source, IR files, the spec
writer, channel groups and the passes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.models.convnext import LayerNorm2d as TvLayerNorm2d
from torchvision.ops import StochasticDepth as TvStochasticDepth

import archdsl
from archdsl import ArchError
from archdsl.backends.arch_emit import emit_arch
from archdsl.backends.onnx_export import onnx_bytes
from archdsl.backends.torch_source import build_module, generate_source
from archdsl.diagnostics import IRError
from archdsl.ir.channels import channel_groups, masked
from archdsl.ir.printer import print_graph
from archdsl.ir.serialize import from_dict, to_dict
from archdsl.ir.verify import verify
from archdsl.passes.pipeline import run_pipeline

ort = pytest.importorskip("onnxruntime")


def spec(chain: str, shape=(8, 6, 6)) -> str:
    return f"""
model m() {{
    input x: [{", ".join(map(str, shape))}]
    output x -> {chain}
}}
"""


# a ConvNeXt block (torchvision's CNBlock) between a stem with LayerNorm2d and a head
CONVNEXT = """
block cn(c: int, p: float) {
    input x
    output x -> residual {
        body: [conv(c, 7, padding=3, groups=c) -> permute([0, 2, 3, 1]) -> layer_norm(eps=1e-6)
               -> linear(4 * c) -> gelu -> linear(c) -> permute([0, 3, 1, 2])]
        -> layer_scale: scale([c, 1, 1], 1e-6) -> stochastic_depth: drop_path(p)
    }
}

model m() {
    input x: [3, 16, 16]
    output x -> stem: [conv(8, 4, stride=4) -> layer_norm(1, 1e-6)] -> b0: cn(8, 0.1) -> b1: cn(8, 0.2)
             -> norm: layer_norm(1) -> adaptive_avgpool(1) -> flatten -> fc: linear(10)
}
"""


def randomise(g, seed=0):
    rng = np.random.default_rng(seed)
    for p in g.params.values():
        if p.dtype == "float32":
            p.value = rng.normal(0, 0.5, p.shape).astype(np.float32) + (1.0 if p.name.endswith("weight") else 0.0)


def convnext():
    g = archdsl.load(CONVNEXT)
    randomise(g)
    return g


def error(text: str) -> ArchError:
    with pytest.raises(ArchError) as info:
        archdsl.load(text)
    return info.value


# ---- shape rules and their errors ----------------------------------------------------------------

def test_shapes_and_parameters():
    g = archdsl.load(spec("permute([0, 2, 3, 1]) -> ln: layer_norm -> permute([0, 3, 1, 2]) -> ln2: layer_norm(1) "
                          "-> ls: scale([8, 1, 1]) -> drop_path(0.5, mode=\"batch\") -> ln3: layer_norm(1, affine=false)"))
    assert [g.data(n)["shape"] for n in g.node_ids()][1:3] == [("N", 6, 6, 8), ("N", 6, 6, 8)]
    assert {k: p.shape for k, p in g.params.items()} == {
        "ln.weight": (8,), "ln.bias": (8,), "ln2.weight": (8,), "ln2.bias": (8,), "ls": (8, 1, 1)}
    assert np.all(g.params["ln.weight"].value == 1) and np.all(g.params["ln.bias"].value == 0)
    verify(g)


@pytest.mark.parametrize("layer,message", [
    ("layer_norm(2)", "'layer_norm' normalises dimension 1 (the channels) or the last one (3), but dim is 2; "
                      "permute the dimension to normalise to the end first."),
    ("layer_norm(0)", "'layer_norm' cannot normalise across the batch dimension (dim 0)."),
    ("layer_norm(5)", "'layer_norm' names dimension 5, but its input has only 4 dimensions."),
    ("layer_norm(eps=0)", "'layer_norm' needs a positive eps, but eps is 0.0."),
    ("permute([0, 2, 1])", "'permute' needs one entry per dimension of its input (N, 8, 6, 6) (4, batch included), "
                           "but dims has 3: (0, 2, 1)."),
    ("permute([1, 0, 2, 3])", "'permute' cannot move the batch dimension: dims must start with 0, but it is "
                              "(1, 0, 2, 3)."),
    ("permute([0, 1, 1, 3])", "'permute' needs every dimension 0 to 3 exactly once, but dims is (0, 1, 1, 3)."),
    ("scale([8, 2, 1])", "'scale' needs a shape that broadcasts against the input without its batch dimension, "
                         "(8, 6, 6) (each size 1 or the input's, aligned from the right), but got (8, 2, 1)."),
    ("scale([1, 8, 1, 1])", "'scale' needs a shape that broadcasts against the input without its batch dimension, "
                            "(8, 6, 6) (each size 1 or the input's, aligned from the right), but got (1, 8, 1, 1)."),
    ("scale([8, 1, 0])", "'scale' needs positive sizes in its shape, but got (8, 1, 0)."),
    ("scale([6], init=[1.0])", "'scale' init lists 1 values, but the parameter of shape (6) has 6."),
    ("drop_path(1.0)", "'drop_path' needs a drop probability of at least 0 and below 1, but p is 1.0."),
    ("drop_path(-0.1)", "'drop_path' needs a drop probability of at least 0 and below 1, but p is -0.1."),
])
def test_bad_arguments_are_located_errors(layer, message):
    text = spec(f"conv(8, 1) -> {layer}")
    err = error(text)
    assert err.message == message
    line = text.split("\n")[err.span.line - 1]
    assert line[err.span.col - 1:].startswith(layer.split("(")[0])


def test_drop_path_mode_is_checked():
    err = error(spec('drop_path(0.1, mode="sample")'))
    assert err.message == ("Argument 'mode' of 'drop_path' must be one of \"row\", \"batch\", but got a string "
                           "\"sample\".")


def test_only_an_op_that_declares_a_bare_parameter_may_have_one():
    g = archdsl.load(spec("c: conv(8, 1) -> ls: scale([8, 1, 1])"))
    c = g.by_scope("c")
    p = g.params.pop("c.weight")
    p.name = "c"
    g.params["c"] = p
    g.update(c, params={**g.data(c)["params"], "weight": "c"})
    with pytest.raises(IRError) as info:
        verify(g)
    assert info.value.message == ("Node @c (conv) names its parameter 'weight' c; it must be c.weight, the node's "
                                  "scope and the local name.")
    g = archdsl.load(spec("c: conv(8, 1) -> ls: scale([8, 1, 1])"))
    ls = g.by_scope("ls")
    p = g.params.pop("ls")
    p.name = "ls.weight"
    g.params["ls.weight"] = p
    g.update(ls, params={"weight": "ls.weight"})
    with pytest.raises(IRError) as info:
        verify(g)
    assert info.value.message == ("Node @ls (scale) names its parameter 'weight' ls.weight; it must be ls, the "
                                  "node's scope itself (its bare parameter).")


# ---- PyTorch ---------------------------------------------------------------------------------------

def test_layer_norm_equals_torch_layer_norm_and_torchvision_layernorm2d():
    g = archdsl.load(spec("permute([0, 2, 3, 1]) -> a: layer_norm(eps=1e-6) -> permute([0, 3, 1, 2]) "
                          "-> b: layer_norm(1, 1e-6)"))
    randomise(g)
    m = archdsl.to_torch(g).eval()
    assert type(m.a) is torch.nn.LayerNorm and list(m.state_dict()) == ["a.weight", "a.bias", "b.weight", "b.bias"]
    x = torch.randn(2, 8, 6, 6)
    a = torch.nn.LayerNorm(8, eps=1e-6)
    b = TvLayerNorm2d(8, eps=1e-6)
    a.load_state_dict({"weight": m.a.weight, "bias": m.a.bias})
    b.load_state_dict({"weight": m.b.weight, "bias": m.b.bias})
    want = b(a(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
    assert torch.equal(m(x), want)


def test_scale_is_a_bare_parameter_of_the_enclosing_module():
    g = convnext()
    m = archdsl.to_torch(g)
    assert isinstance(m.b0.layer_scale, torch.nn.Parameter) and m.b0.layer_scale.shape == (8, 1, 1)
    assert "b0.layer_scale" in m.state_dict() and "b0.layer_scale.weight" not in m.state_dict()
    fresh = archdsl.to_torch(archdsl.load(CONVNEXT), load_weights=False)
    assert torch.all(fresh.b1.layer_scale == torch.tensor(1e-6))


@pytest.mark.parametrize("mode", ["row", "batch"])
def test_drop_path_is_torchvision_stochastic_depth_bit_for_bit(mode):
    g = archdsl.load(spec(f'drop_path(0.3, mode="{mode}")'))
    m = archdsl.to_torch(g)
    tv = TvStochasticDepth(0.3, mode)
    x = torch.randn(16, 8, 6, 6)
    for seed in range(3):
        torch.manual_seed(seed)
        ours = m.train()(x)
        torch.manual_seed(seed)
        theirs = tv.train()(x)
        assert torch.equal(ours, theirs)
    assert torch.equal(m.eval()(x), x) and not torch.equal(ours, x)
    src = build_module(g)
    torch.manual_seed(7)
    a = src.train()(x)
    torch.manual_seed(7)
    assert torch.equal(a, tv(x))


def test_the_generated_source_matches_to_torch_in_eval_and_train():
    g = convnext()
    text = generate_source(g)
    assert "self.layer_scale = nn.Parameter(torch.full((8, 1, 1), 1e-06))" in text
    assert "class LayerNorm2d(nn.LayerNorm):" in text and "class StochasticDepth(nn.Module):" in text
    assert "self.layer_scale * " in text
    a, b = archdsl.to_torch(g), build_module(g)
    assert list(a.state_dict()) == list(b.state_dict()) or set(a.state_dict()) == set(b.state_dict())
    x = torch.randn(4, 3, 16, 16)
    assert torch.allclose(a.eval()(x), b.eval()(x), atol=1e-6)
    torch.manual_seed(1)
    ya = a.train()(x)
    torch.manual_seed(1)
    yb = b.train()(x)
    assert torch.allclose(ya, yb, atol=1e-6)


def test_the_generated_source_writes_function_forms_and_initialisers():
    g = archdsl.load(spec("permute([0, 2, 3, 1]) -> layer_norm(eps=1e-6, affine=false) -> permute([0, 3, 1, 2]) "
                          "-> layer_norm(1, affine=false) -> drop_path(0.2) -> ls: scale([8, 1, 1], trunc_normal(0.1))"))
    text = generate_source(g)
    for piece in ("x.permute(0, 2, 3, 1)", "F.layer_norm(x, (8,), eps=1e-06)",
                  "F.layer_norm(x.movedim(1, -1), (8,)).movedim(-1, 1)",
                  'StochasticDepth.drop(x, 0.2, "row", self.training)',
                  "self.ls = nn.Parameter(torch.empty((8, 1, 1)))",
                  "nn.init.trunc_normal_(self.ls, mean=0.0, std=0.1, a=-2.0, b=2.0)"):
        assert piece in text, piece
    assert "class LayerNorm2d" not in text
    x = torch.randn(2, 8, 6, 6)
    assert torch.allclose(archdsl.to_torch(g).eval()(x), build_module(g).eval()(x), atol=1e-6)
    fresh = build_module(g, load_weights=False)
    assert 0.05 < fresh.ls.std() < 0.2


# ---- ONNX ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("opset", [13, 17, 20])
def test_onnxruntime_computes_what_pytorch_computes(opset):
    g = convnext()
    x = torch.randn(2, 3, 16, 16)
    want = archdsl.to_torch(g).eval()(x).detach().numpy()
    sess = ort.InferenceSession(onnx_bytes(g, opset=opset), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
    ops = {n.op_type for n in __import__("onnx").load_from_string(onnx_bytes(g, opset=opset)).graph.node}
    assert ("LayerNormalization" in ops) == (opset >= 17)
    names = [i.name for i in __import__("onnx").load_from_string(onnx_bytes(g, opset=opset)).graph.initializer]
    assert "b0.layer_scale" in names


def test_layer_norm_without_parameters_in_onnx():
    g = archdsl.load(spec("layer_norm(1, affine=false) -> permute([0, 2, 3, 1]) -> layer_norm(affine=false)"))
    x = torch.randn(2, 8, 6, 6)
    want = archdsl.to_torch(g).eval()(x).detach().numpy()
    for opset in (13, 17):
        sess = ort.InferenceSession(onnx_bytes(g, opset=opset), providers=["CPUExecutionProvider"])
        assert np.abs(sess.run(None, {"x": x.numpy()})[0] - want).max() < 1e-5


# ---- IR files and the spec writer ------------------------------------------------------------------

def test_ir_save_and_load_round_trip():
    g = convnext()
    back = from_dict(to_dict(g), {k: p.value for k, p in g.params.items()})
    verify(back)
    assert print_graph(back) == print_graph(g)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(archdsl.to_torch(back).eval()(x), archdsl.to_torch(g).eval()(x))


def test_the_written_spec_loads_to_the_same_graph():
    g = archdsl.load(CONVNEXT.replace("scale([c, 1, 1], 1e-6)", "scale([c, 1, 1], init=uniform(0.0, 1e-3))"))
    text = emit_arch(g)
    assert "layer_scale: scale([" in text and "drop_path(" in text and "permute([0, 2, 3, 1])" in text
    assert "uniform(0.0, 0.001)" in text or "uniform(0.0, 1e-3)" in text
    back = archdsl.load(text)
    assert print_graph(back, locations=False) == print_graph(g, locations=False)
    assert {k: p.init for k, p in back.params.items()} == {k: p.init for k, p in g.params.items()}
    assert all(np.array_equal(back.params[k].value, g.params[k].value) for k in g.params)


# ---- channels and passes ---------------------------------------------------------------------------

def test_channel_groups_follow_permute_and_scale_and_layer_norm_mixes():
    g = convnext()
    groups = channel_groups(g)
    hidden = [gr for gr in groups if gr.producers == (g.by_scope("b0.body.3"),)]
    assert len(hidden) == 1 and hidden[0].prunable and hidden[0].size == 32      # the MLP's 4c channels
    stream = next(gr for gr in groups if g.by_scope("stem.0") in gr.producers)
    assert stream.fixed == "'layer_norm' at @stem.1 mixes the channels along dimension 1; removing one changes " \
                           "the others."
    g = archdsl.load(spec("c: conv(8, 1) -> ls: scale([8, 1, 1]) -> relu -> d: conv(4, 1)"))
    (gr,) = [gr for gr in channel_groups(g) if gr.producers == (g.by_scope("c"),)]
    assert gr.prunable and ("ls", 0) in gr.slices and gr.roles[("ls", 0)] == "out"


def test_prune_shrinks_a_scale_with_its_channels_and_equals_masking():
    g = archdsl.load(spec("c: conv(8, 1) -> ls: scale([8, 1, 1], normal(1.0)) -> relu -> drop_path(0.1) "
                          "-> d: conv(4, 1)"))
    randomise(g)
    (gr,) = [gr for gr in channel_groups(g) if gr.producers == (g.by_scope("c"),)]
    result = run_pipeline(g, "prune{ratio=0.5}")
    pruned, report = result.graph, result.reports[0]
    assert pruned.params["ls"].shape == (4, 1, 1)
    assert pruned.data(pruned.by_scope("ls"))["attrs"]["shape"] == (4, 1, 1)
    kept = next(set(row["kept"]) for row in report.layers if row.get("layer") == "c")
    gone = [u for u in range(gr.size) if not set(gr.tensors[g.by_scope("c")].index[u].tolist()) <= kept]
    assert len(gone) == 4
    x = torch.randn(2, 8, 6, 6)
    got = archdsl.to_torch(pruned).eval()(x)
    want = archdsl.to_torch(masked(g, [(gr, gone)], roles=("in",))).eval()(x)
    assert torch.allclose(got, want, atol=1e-5)
    kept_ls = np.sort(list(kept))
    assert np.array_equal(pruned.params["ls"].value, g.params["ls"].value[kept_ls])


@pytest.mark.parametrize("pipeline", ["fold-bn", "drop-inference-noops", "prune{ratio=0.5}"])
def test_passes_run_on_the_new_ops(pipeline):
    g = convnext()
    out = run_pipeline(g, pipeline).graph
    verify(out)
    x = torch.randn(2, 3, 16, 16)
    if pipeline != "prune{ratio=0.5}":
        assert torch.allclose(archdsl.to_torch(out).eval()(x), archdsl.to_torch(g).eval()(x), atol=1e-5)
    if pipeline == "drop-inference-noops":
        assert not any(n.op == "drop_path" for n in out.nodes())


def test_quantize_leaves_layer_norm_in_float():
    from archdsl.passes.context import PassContext
    g = convnext()
    x = np.random.default_rng(0).normal(size=(8, 3, 16, 16)).astype(np.float32)
    out = run_pipeline(g, "quantize", ctx=PassContext(data={"x": x})).graph
    verify(out)
    assert any(n.op == "qconv" for n in out.nodes())
    for n in out.nodes():
        if n.op == "layer_norm":
            assert n.type.dtype == "float32" and all(out.data(i)["dtype"] == "float32" for i in n.inputs)
    assert not any(n.op == "drop_path" for n in out.nodes())
    y = archdsl.to_torch(out).eval()(torch.from_numpy(x[:2]))
    assert y.shape == (2, 10) and torch.isfinite(y).all()
