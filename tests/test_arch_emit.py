"""Writing the graph IR back as an .arch spec (archdsl/backends/arch_emit/).

The spec must load to the same graph (same printed IR without locations, same parameter
names and shapes, weights loading strictly by name), be structured (one block per group of
instances, widths as arguments), survive hostile names, be deterministic and fmt-clean.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import archdsl
from archdsl import ArchError
from archdsl.backends.arch_emit import KEYWORDS, GAP_TEXT, check_arch, emit_arch, emit_arch_spec, label_text
from archdsl.cli import main
from archdsl.ir.printer import print_graph
from archdsl.ir.verify import infer_types, verify
from archdsl.passes.pipeline import run_pipeline
from archdsl.syntax.formatter import format_source

from zoo import load_small, zoo_models


def round_trip(graph, **kw):
    """The spec of ``graph``, the graph it loads to, and the ArchSpec."""
    spec = emit_arch_spec(graph, **kw)
    return spec.text, archdsl.load(spec.text), spec


def blocks(text: str) -> list[str]:
    return re.findall(r"^block (\w+)\(", text, re.M)


# ---- the zoo ------------------------------------------------------------------------------

@pytest.mark.parametrize("file,model", zoo_models(), ids=lambda v: v)
def test_zoo_models_round_trip(file, model):
    g = load_small(file, model)
    text, back, spec = round_trip(g)
    assert not spec.renames and not spec.notes
    assert print_graph(back, locations=False) == print_graph(g, locations=False)
    assert {k: p.shape for k, p in back.params.items()} == {k: p.shape for k, p in g.params.items()}
    assert {k: p.init for k, p in back.params.items()} == {k: p.init for k, p in g.params.items()}   # initialisers
    # the same scopes, of the same kinds, and block instances of the same definitions
    assert {k: (s.kind, s.name) for k, s in back.scopes.items() if k} == \
           {k: (s.kind, s.name) for k, s in g.scopes.items() if k}
    assert [back.data(i)["attrs"]["name"] for i in back.inputs] == [g.data(i)["attrs"]["name"] for i in g.inputs]
    assert format_source(text) == text                          # archc fmt --check accepts it
    assert emit_arch(load_small(file, model), check=False) == text   # deterministic


def test_resnet_blocks_keep_their_definitions_and_arguments():
    g = load_small("resnet.arch", "resnet50")
    text = emit_arch(g)
    assert blocks(text) == ["bottleneck"]
    assert "block bottleneck(planes: int, stride: int, downsample: bool = false) {" in text
    assert "conv3: conv(planes * 4, 1, bias=false, weight_init=\"kaiming_normal\")" in text
    assert "shortcut if downsample {" in text
    assert "layer3: [bottleneck(256, 2 if j == 0 else 1, downsample=j == 0) for j in range(6)]" in text
    back = archdsl.load(text)
    assert back.scopes["layer2.0"].args == {"planes": 128, "stride": 2, "downsample": True}
    assert back.scopes["layer2.1"].args == {"planes": 128, "stride": 1, "downsample": False}


def test_constructs_are_written_as_constructs():
    dense = emit_arch(load_small("densenet.arch", "densenet121"))
    assert "denseblock1: dense {" in dense and "denselayer{j + 1}: dense_layer for j in range(6)" in dense
    inception = emit_arch(load_small("googlenet.arch", "googlenet"))
    assert "output x -> parallel {" in inception and "concat" not in inception
    stn = emit_arch(load_small("stn.arch", "resnet18_stn"))
    assert "transformer: stn {" in stn and "fc_loc: [linear(64) -> relu -> linear(6)]" in stn
    transformer = stn[stn.index("transformer: stn {"):stn.index("fc_loc:")]
    assert "grid_sample" not in stn and "weight_init" not in transformer   # the stn construct's own init


def test_zoo_blocks_with_variants_stay_one_definition():
    shuffle = emit_arch(load_small("shufflenet_v2.arch", "shufflenet_v2_x0_5"))
    assert blocks(shuffle) == ["channel_shuffle", "shuffle_unit"]
    assert "if stride == 2 {" in shuffle and "h = x -> slice(0, out // 2)" in shuffle
    assert "block shuffle_unit(out: int, stride: int, channel_shuffle3_reshape0_shape2: int) {" in shuffle
    assert "stage3: [shuffle_unit(96, 2 if j == 0 else 1, 4) for j in range(8)]" in shuffle
    assert "conv(out // 2, 1, bias=false) -> bn -> relu" in shuffle and "stride=stride, padding=1" in shuffle
    # square and (h, w) kernels share one parameter, untyped as in the zoo file
    inception = emit_arch(load_small("inception_v3.arch", "inception_v3"))
    assert blocks(inception)[0] == "basic_conv" and "basic_conv_2" not in inception
    assert "block basic_conv(out: int, kernel, stride: int, padding) {" in inception
    assert "branch7x7_2: basic_conv(c7, [1, 7], 1, [0, 3])" in inception


# one block with a residual and a plain body told apart by `stride`, one with a layer only some instances
# have (told apart by `act`), one whose variants no argument tells apart
VARIANTS = """
block unit(c: int, stride: int) {
    input x
    if stride == 1 {
        output x -> residual { conv1: conv(c, 3, padding=1, bias=false) -> bn1: bn } -> relu
    } else {
        output x -> conv1: conv(c, 3, stride=stride, padding=1, bias=false) -> bn1: bn -> relu
    }
}

block head(c: int, act: bool) {
    input x
    h = x -> conv(c, 1)
    if act {
        h = h -> relu
    }
    output h -> conv(c, 1)
}

block tail(c: int) {
    input x
    if channels(x) == c {
        output x -> residual { conv(c, 1) }
    } else {
        output x -> conv(c, 1)
    }
}

model net() {
    input x: [3, 16, 16]
    output x -> stem: conv(8, 3, padding=1)
             -> stage: [unit(8, 1) -> unit(16, 2) -> unit(16, 1) -> unit(32, 2)]
             -> head(32, true) -> head(16, false) -> tail(16) -> tail(8) -> tail(8)
             -> flatten -> fc: linear(10)
}
"""


def test_variants_of_a_block_are_one_definition():
    g = archdsl.load(VARIANTS)
    text, back, spec = round_trip(g)
    assert not spec.renames and not spec.notes
    assert print_graph(back, locations=False) == print_graph(g, locations=False)
    assert {k: (s.kind, s.name) for k, s in back.scopes.items()} == {k: (s.kind, s.name) for k, s in g.scopes.items()}
    assert blocks(text) == ["unit", "head", "tail"]
    assert "block unit(c: int, stride: int) {" in text and "if stride == 1 {" in text
    assert "block head(c: int, act: bool) {" in text and "if act {" in text
    assert "output x -> conv(c, 1) -> relu -> conv(c, 1)" in text and "output x -> conv(c, 1) -> conv(c, 1)" in text
    # no argument tells tail's variants apart (c is 8 in both): `variant`, the common body 0
    assert "block tail(c: int, variant: int = 0) {" in text and "if variant == 0 {" in text
    assert "tail(16) -> tail(8, variant=1) -> tail(8)" in text
    assert back.scopes["stage.1"].args == {"c": 16, "stride": 2}
    assert back.scopes["3"].args == {"c": 16, "act": False}
    assert format_source(text) == text
    assert emit_arch(archdsl.load(VARIANTS)) == text
    # instances that agree in structure take no variant argument
    one = emit_arch(archdsl.load(VARIANTS.replace("head(16, false)", "head(16, true)")))
    assert "block head(c: int) {" in one and "if act" not in one


NEW_OPS = """
block cn(c: int, ls: float) {
    input x
    output x -> residual {
        dwconv: conv(c, 3, padding=1, groups=c, weight_init=trunc_normal(0.02), bias_init="zeros")
        -> permute([0, 2, 3, 1]) -> norm: layer_norm(eps=1e-6)
        -> pw: linear(4 * c, weight_init=normal(0.01, mean=0.5)) -> gelu
        -> linear(c, weight_init=uniform(-0.1, 0.2), bias_init=constant(0.3)) -> permute([0, 3, 1, 2])
        -> layer_scale: scale([c, 1, 1], init=ls) -> drop_path(0.1, mode="batch")
    }
}

model m() {
    input x: [3, 16, 16]
    output x -> block: conv(8, 3, padding=1, weight_init=kaiming_normal(mode="fan_in", nonlinearity="leaky_relu"),
                            bias_init=constant(0.1))
             -> block1-0: cn(8, 1e-6) -> block1-1: cn(8, 0.5) -> ln: layer_norm(1, affine=false)
             -> gain: scale([8, 1, 1], init=normal(0.02)) -> adaptive_avgpool(1) -> flatten
             -> head: linear(10, weight_init=kaiming_uniform(nonlinearity="tanh"),
                             bias_init=trunc_normal(0.1, a=-0.2, b=0.2))
}
"""


def test_new_ops_initialisers_and_labels_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    from archdsl.backends.weights import load_weights
    g = archdsl.load(NEW_OPS)
    text, back, spec = round_trip(g)
    assert not spec.renames and not spec.notes
    assert print_graph(back, locations=False) == print_graph(g, locations=False)
    assert {k: p.init for k, p in back.params.items()} == {k: p.init for k, p in g.params.items()}
    flat = " ".join(text.split())
    for piece in ['block: conv(8, 3, padding=1, weight_init=kaiming_normal(mode="fan_in", nonlinearity="leaky_relu"), '
                  "bias_init=constant(0.1))", "block1-0: cn(1e-6) -> block1-1: cn(0.5)",
                  "layer_scale: scale([8, 1, 1], init=ls)", 'drop_path(0.1, mode="batch")',
                  "permute([0, 2, 3, 1]) -> norm: layer_norm(eps=1e-6)", "ln: layer_norm(dim=1, affine=false)",
                  "gain: scale([8, 1, 1], init=normal(0.02))", "trunc_normal(0.02)",
                  "normal(0.01, mean=0.5)", "uniform(-0.1, 0.2), bias_init=constant(0.3)",
                  'kaiming_uniform(nonlinearity="tanh"), bias_init=trunc_normal(0.1, a=-0.2, b=0.2)']:
        assert piece in flat
    assert "block1-0.layer_scale" in back.params and "gain" in back.params      # bare parameters
    assert format_source(text) == text
    rng = np.random.default_rng(0)
    for p in g.params.values():
        p.value = rng.standard_normal(p.shape).astype(p.dtype)
    path = tmp_path / "w.pt"
    torch.save({k: torch.from_numpy(np.array(p.value)) for k, p in g.params.items()}, path)
    load_weights(back, path)
    assert all(np.array_equal(back.params[k].value, p.value) for k, p in g.params.items())


# ---- graphs changed by passes -----------------------------------------------------------------

@pytest.mark.parametrize("model", [("resnet.arch", "resnet18"), ("vgg.arch", "vgg11_bn"), ("stn.arch", "stn_mnist"),
                                   ("densenet.arch", "densenet_bc_100"), ("googlenet.arch", "googlenet")],
                         ids=lambda m: m[1])
def test_pass_outputs_round_trip(model):
    g = run_pipeline(load_small(*model), "fold-bn,drop-inference-noops,dce").graph
    text, back, spec = round_trip(g)
    assert not spec.renames
    assert print_graph(back, locations=False) == print_graph(g, locations=False)
    # the places of removed layers are held by empty sequences: extra seq scopes, nothing else
    extra = set(back.scopes) - set(g.scopes)
    assert all(back.scopes[k].kind == "seq" and not any(p.startswith(k + ".") for p in back.params) for k in extra)
    assert set(g.scopes) <= set(back.scopes)


def test_removed_layers_keep_later_positions():
    g = run_pipeline(load_small("vgg.arch", "vgg11_bn"), "fold-bn").graph
    text, back, _ = round_trip(g)
    assert ('conv(64, 3, padding=1, weight_init="kaiming_normal", bias_init="zeros") -> ' + GAP_TEXT + " -> relu"
            in " ".join(text.split()))
    assert sorted(back.params) == sorted(g.params)      # the second conv stays features.4 after bn 1 went
    assert "features.4.weight" in back.params and "features.1.weight" not in back.params


def _prune(g, conv: str, keep, readers) -> None:
    """Keep the output channels ``keep`` of ``conv``, resizing the parameters of ``readers`` to match."""
    nid = g.by_scope(conv)
    d = g.data(nid)
    g.update(nid, attrs={**d["attrs"], "out_channels": len(keep)})
    for pname in d["params"].values():
        g.resize_param(pname, 0, keep)
    for reader in readers:
        rd = g.data(g.by_scope(reader))
        for local, pname in rd["params"].items():
            if local == "num_batches_tracked":
                continue
            g.resize_param(pname, 0 if rd["op"] == "bn" else 1, keep)


RESIDUAL = """
block unit(c: int) {
    input x
    output x -> residual {
        conv1: conv(c, 3, padding=1, bias=false) -> bn1: bn -> relu -> conv2: conv(c, 3, padding=1, bias=false)
        -> bn2: bn
    } -> relu
}

model net() {
    input x: [3, 16, 16]
    h = x -> stem: conv(16, 3, padding=1)
    output h -> stage: [unit(16) for i in range(3)] -> adaptive_avgpool(1) -> flatten -> fc: linear(10)
}
"""


def test_instances_pruned_to_different_widths_share_one_block(tmp_path):
    torch = pytest.importorskip("torch")
    from archdsl.backends.weights import load_weights
    g = archdsl.load(RESIDUAL)
    rng = np.random.default_rng(0)
    for p in g.params.values():                     # trained values, say
        p.value = rng.standard_normal(p.shape).astype(p.dtype)
    _prune(g, "stage.1.conv1", [0, 2, 3, 5, 7, 11, 13], ["stage.1.bn1", "stage.1.conv2"])
    _prune(g, "stage.2.conv1", list(range(10)), ["stage.2.bn1", "stage.2.conv2"])
    infer_types(g, update=True)
    verify(g)
    text, back, spec = round_trip(g)
    assert print_graph(back, locations=False) == print_graph(g, locations=False)
    assert blocks(text) == ["unit"]                 # one definition, the width an argument
    assert "block unit(conv1_out_channels: int) {" in text
    assert "stage: [unit([16, 7, 10][j]) for j in range(3)]" in text
    assert back.params["stage.1.conv2.weight"].shape == (16, 7, 3, 3)
    path = tmp_path / "pruned.pt"
    torch.save({k: torch.from_numpy(np.array(p.value)) for k, p in g.params.items()}, path)
    load_weights(back, path)                        # strictly by name: every name and shape matches
    for k, p in g.params.items():
        assert np.array_equal(back.params[k].value, p.value)


def test_pass_added_nodes_in_a_block():
    g = load_small("googlenet.arch", "googlenet")
    g.insert_after(g.by_scope("inception3a.branch1.conv"), "identity")
    g.insert_after(g.by_scope("conv1.conv"), "identity", name="conv1.conv_tap")
    verify(g)
    text, back, spec = round_trip(g)           # the check compares every node by scope
    # the instances with a tap are variants of the one definition
    assert blocks(text) == ["basic_conv", "inception"]
    assert "if variant == 0 {" in text and "conv1: basic_conv(64, 7, 2, 3, variant=1)" in text
    assert "conv: conv(out, kernel, stride=stride, padding=padding, bias=false) -> conv_tap: identity" \
        in " ".join(text.split())
    assert "inception3a: inception(64, 96, 128, 16, 32, 32, branch1_variant=2)" in text
    assert {k: s.name for k, s in back.scopes.items()} == {k: s.name for k, s in g.scopes.items()}
    # the tap takes a position of conv1's scope, so its relu cannot stay `conv1.2`
    assert spec.renames == {"conv1.2": "conv1._2", "inception3a.branch1.2": "inception3a.branch1._2"}
    assert back.by_scope("conv1._2") is not None and back.by_scope("inception3a.branch1.conv_identity")


def test_data_flow_that_no_construct_fits_is_written_with_names():
    g = archdsl.load(RESIDUAL)
    g.outputs.append(g.by_scope("stage.0.bn1"))     # the residual's main path is read outside: no construct
    verify(g)
    text, back, _ = round_trip(g)
    assert print_graph(back, locations=False) == print_graph(g, locations=False)
    assert "-> add" in text


DAGS = """
block split(c: int) {
    input x
    output x -> slice(0, c), x -> slice(c, channels(x))
}

block fuse() {
    input a
    input b
    output (b, a) -> concat
}

block se() {
    input x
    gate = x -> adaptive_avgpool(1) -> fc1: conv(4, 1) -> relu -> fc2: conv(channels(x), 1) -> sigmoid
    output (x, gate) -> mul
}

model dags() {
    input image: [8, 8, 8]
    input mask: [1, 8, 8]
    left, right = image -> split(1)
    both = image -> split(5) -> fuse -> se
    theta = image -> flatten -> linear(6, weight_init="zeros", bias_init=[1, 0, 0, 0, 1, 0])
    grid = theta -> reshape([2, 3]) -> affine_grid([8, 8, 8])
    warped = (image, grid) -> grid_sample(mode="nearest")
    output (left, mask) -> add, both, right, warped, theta, (warped, warped) -> add
}
"""


def test_several_inputs_and_outputs_and_explicit_merges():
    g = archdsl.load(DAGS)
    text, back, _ = round_trip(g)
    assert print_graph(back, locations=False) == print_graph(g, locations=False)
    assert 'grid_sample(mode="nearest")' in text and "input mask: [1, 8, 8]" in text


# ---- names -------------------------------------------------------------------------------------

def test_keywords_are_the_grammars():
    from archdsl.syntax.parser import _literals
    assert KEYWORDS == {v for v in _literals().values() if v.isalpha()}


@pytest.mark.parametrize("name,label", [("conv1", "conv1"), ("model", "model"), ("in", "in"), ("a-b", "a-b"),
                                        ("block1-0", "block1-0"), ("café", None), ("forté", None), ("a b", None),
                                        ("0_tap", None), ("-a", None), ("é", None), ("", None), ('a"b', None)])
def test_labels(name, label):
    assert label_text(name) == label


def _rename(g, old: str, new: str) -> None:
    """Rename node @old (and its parameters) to @new, as a pass could."""
    nid = g.by_scope(old)
    params = {}
    for local, pname in g.data(nid)["params"].items():
        p = g.params.pop(pname).copy()
        p.name = f"{new}.{local}"
        g.params[p.name] = p
        params[local] = p.name
    g.update(nid, scope=new, params=params)


HOSTILE = """
block unit(c: int) {
    input x
    output x -> residual { mode{"l"}: conv(c, 3, padding=1) -> block{1}-a: bn } -> relu
}

model m() {
    input x: [3, 8, 8]
    h = x -> stem: conv(4, 3, padding=1) -> unit(4) -> unit(4) -> odd: conv(4, 1) -> last: relu
    output h -> flatten -> linear(3)
}
"""


def test_hostile_names_never_break_the_spec(tmp_path):
    torch = pytest.importorskip("torch")
    from archdsl.backends.weights import load_weights
    g = archdsl.load(HOSTILE)
    _rename(g, "odd", 'a-b "c"\n# }')
    _rename(g, "last", "for")                       # a keyword is a label too
    _rename(g, "stem", "0_tap")                     # no label starts with a digit
    _rename(g, "6", "2x")
    g.scopes["1"].name = g.scopes["2"].name = "relu"    # a block definition named like an op
    g.update(g.inputs[0], attrs={"name": "in"})
    g.name = "model"
    verify(g)
    text, back, spec = round_trip(g)
    assert spec.renames == {"0_tap": "_0_tap", 'a-b "c"\n# }': "a_b__c_____", "2x": "_2x"}
    assert "model: conv" in text and "block1-a: bn" in text and "for: relu" in text
    assert back.by_scope("for") is not None and back.by_scope("1.model") is not None
    assert back.by_scope("1.block1-a") is not None
    assert blocks(text) == ["relu_block"] and back.name == "model_"
    assert format_source(text) == text
    # parameters follow the renames, and the weights load by the mapped names
    assert sorted(back.params) == sorted(spec.param_name(k) for k in g.params)
    path = tmp_path / "w.pt"
    torch.save({spec.param_name(k): torch.from_numpy(np.array(p.value)) for k, p in g.params.items()}, path)
    load_weights(back, path)


def test_graphs_no_spec_can_make_are_refused():
    g = archdsl.load(RESIDUAL)
    stem = g.by_scope("stem")
    q = g.insert_after(stem, "quantize", {"dtype": "uint8", "scale": (0.02,), "zero_point": (128,)})
    g.insert_after(q, "dequantize")
    with pytest.raises(ArchError, match="uint8"):
        emit_arch(g)


def test_check_arch_catches_a_different_graph():
    g = archdsl.load(RESIDUAL)
    other = emit_arch(archdsl.load(RESIDUAL.replace("linear(10)", "linear(11)")))
    with pytest.raises(ArchError, match="node @fc differs"):
        check_arch(g, other)


# ---- the command line -----------------------------------------------------------------------------

def test_archc_opt_emit_arch(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.arch").write_text(RESIDUAL, encoding="utf-8")
    assert main(["opt", "net.arch", "--passes", "fold-bn,dce", "--emit", "arch", "-o", "folded.arch", "-q"]) == 0
    assert capsys.readouterr().out == ("wrote folded.arch\nwrote folded.pt (the weights, by the spec's names: load "
                                       "them with --weights folded.pt)\n")
    assert main(["fmt", "--check", "folded.arch"]) == 0
    g = run_pipeline(archdsl.load(RESIDUAL), "fold-bn,dce").graph
    spec = archdsl.load("folded.arch")
    assert print_graph(spec, locations=False) == print_graph(g, locations=False)
    from archdsl.backends.weights import load_weights
    load_weights(spec, "folded.pt")                       # the folded weights, strictly by name
    assert all(np.array_equal(spec.params[k].value, p.value) for k, p in g.params.items())
    assert main(["opt", "net.arch", "--passes", "dce", "--emit", "arch", "-q"]) == 0
    assert capsys.readouterr().out == emit_arch(archdsl.load("net.arch"))
    assert main(["opt", "net.arch", "--passes", "dce", "--emit", "arch", "-o", "g.json"]) == 1
    assert "-o must name an .arch file" in capsys.readouterr().err
    assert main(["opt", "net.arch", "--passes", "dce", "-o", "g.arch"]) == 1
    assert "add --emit arch" in capsys.readouterr().err
    assert main(["opt", "net.arch", "--passes", "dce", "-o", "g.json", "-q"]) == 0     # the IR, as before
    assert (tmp_path / "g.json").exists() and (tmp_path / "g.npz").exists()


def test_archc_compile_target_arch(tmp_path, capsys):
    out = tmp_path / "r18.arch"
    assert main(["compile", "zoo_specs/resnet.arch", "--model", "resnet18", "--passes", "fold-bn",
                 "--target", "arch", "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"wrote {out}")
    g = run_pipeline(archdsl.load("zoo_specs/resnet.arch", "resnet18"), "fold-bn").graph
    assert print_graph(archdsl.load(out), locations=False) == print_graph(g, locations=False)
