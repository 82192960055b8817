"""``fold-bn``: numerics against the unfolded graph, the report's numbers, and every refusal.

* Every zoo model, with batch-norm affine parameters far from 1 and 0 and running
  statistics measured on data (so the output depends on the input): the folded
  model in float32 is as close to the original computed in float64 as the original
  in float32 is, within twice that distance plus 1e-6 (``max|a - b| / max|b|``),
  through the PyTorch backend and, where the ONNX exporter exists, through
  onnxruntime. Folding is exact in real arithmetic, so what remains is float32
  rounding, which reaches 6e-5 on Inception-v3 for the unfolded model too; the report's node,
  parameter and MAC numbers equal independent counts taken from PyTorch modules
  built on the meta device (BatchNorm modules, ``parameters()``, conv/linear
  MACs from forward hooks).
* Targeted graphs for each rule: conv/linear -> BN (with and without bias,
  grouped and depthwise), BN -> conv/linear forward (with and without padding,
  grouped, through a concat), BN into add and concat, pre-activation BN,
  shared outputs and parameters, model outputs.

Every zoo model is compared numerically; the VGGs (over 100M parameters) take the
longest, a few seconds each through both backends.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import archdsl  # noqa: E402
from archdsl import ArchError  # noqa: E402
from archdsl.ir.verify import verify  # noqa: E402
from archdsl.passes import run_pipeline  # noqa: E402
from archdsl.passes.fold_bn import FoldBatchNorm  # noqa: E402

from zoo import ir_outputs, load_small, random_inputs, randomise_bn, zoo_models  # noqa: E402
TOL = 1e-5
HAS_ONNX = importlib.util.find_spec("archdsl.backends.onnx_export") is not None



# ---- helpers -------------------------------------------------------------------------------

def ort_outputs(g, xs) -> list[np.ndarray]:
    ort = pytest.importorskip("onnxruntime")
    from archdsl.backends.onnx_export import onnx_bytes
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL   # run the graph as exported
    sess = ort.InferenceSession(onnx_bytes(g), opts, providers=["CPUExecutionProvider"])
    return [o.astype(np.float64) for o in sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), xs)})]


def relative_error(want: list, got: list) -> float:
    assert len(want) == len(got)
    errs = []
    for w, o in zip(want, got):
        assert w.shape == o.shape
        errs.append(float(np.max(np.abs(o - w)) / np.max(np.abs(w))))
    return max(errs)


def assert_same_outputs(g, folded) -> None:
    """``folded`` computes ``g`` up to float32 rounding: its float32 outputs are within twice the distance
    of ``g``'s own float32 outputs from ``g`` in float64, plus 1e-6, on each backend."""
    xs = random_inputs(g)
    exact = ir_outputs(g, xs, torch.float64)
    for run in (ir_outputs, ort_outputs) if HAS_ONNX else (ir_outputs,):
        noise = relative_error(exact, run(g, xs))
        assert relative_error(exact, run(folded, xs)) <= 2 * noise + 1e-6, run.__name__


def torch_counts(g) -> dict:
    """Independent counts from a PyTorch module on the meta device: BN modules, parameters, MACs."""
    with torch.device("meta"):
        module = archdsl.to_torch(g, load_weights=False)
        macs = [0]

        def hook(m, args, out):
            per_sample = out[0].numel()
            if isinstance(m, torch.nn.Conv2d):
                macs[0] += per_sample * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            elif isinstance(m, torch.nn.Linear):
                macs[0] += per_sample * m.in_features

        for m in module.modules():
            m.register_forward_hook(hook)
        module.eval()       # batch norm in training refuses one value per channel (Inception-v3 ends at 1x1)
        module(*[torch.empty((1, *g.data(i)["shape"][1:])) for i in g.inputs])
    bns = [name for name, m in module.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    return {"bn": bns, "params": sum(p.numel() for p in module.parameters()), "macs": macs[0],
            "bias": {name for name, m in module.named_modules()
                     if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.bias is not None}}


def fold(g):
    result = FoldBatchNorm().run(g)
    verify(result.graph)
    return result


def spec(text: str, seed: int = 0, zero_shift: bool = False):
    g = archdsl.load(text)
    randomise_bn(g, seed, zero_shift)
    return g


# ---- the zoo -----------------------------------------------------------------------------------

MODELS = zoo_models()


@pytest.mark.parametrize("file,model", MODELS, ids=[m for _, m in MODELS])
def test_zoo_model_fold_report_is_exact(file, model):
    g = load_small(file, model)
    randomise_bn(g)
    result = fold(g)
    before, after = torch_counts(g), torch_counts(result.graph)
    rep = result.report
    folded = [b for b in before["bn"] if b not in after["bn"]]
    # nodes: exactly the folded BNs go, nothing is added, the refused BNs stay
    assert rep.removed == folded
    assert rep.nodes_added == 0 and rep.added == []
    assert sorted(r.node for r in rep.refused) == sorted(after["bn"])
    assert rep.nodes_before == len(g) and rep.nodes_after == len(g) - len(folded)
    assert result.modified == rep.modified == bool(folded)
    # parameters and MACs: the report equals PyTorch's counts of both models
    assert (rep.params_before, rep.params_after) == (before["params"], after["params"])
    assert (rep.macs_before, rep.macs_after) == (before["macs"], after["macs"])
    gained = after["bias"] - before["bias"]
    bn_params = sum(2 * g.node(n).shape[1] for n in g.node_ids() if g.data(n)["scope"] in folded
                    and g.data(n)["attrs"]["affine"])
    assert after["params"] == before["params"] - bn_params + sum(
        result.graph.params[f"{s}.bias"].numel for s in gained)
    if not folded:
        assert not rep.rewritten and not rep.rewired and not rep.actions


@pytest.mark.parametrize("file,model", MODELS, ids=[m for _, m in MODELS])
def test_zoo_model_folded_equals_the_original(file, model):
    g = load_small(file, model)
    if not any(n.op == "bn" for n in g.nodes()):
        result = fold(g)
        assert result.modified is False and result.report.actions == []
        return
    randomise_bn(g)
    result = fold(g)
    assert result.modified
    assert_same_outputs(g, result.graph)


def test_densenet_pre_activation_bns_are_refused_with_the_reason():
    g = load_small("densenet.arch", "densenet_bc_100")
    rep = fold(g).report
    refused = {r.node: r.reason for r in rep.refused}
    layer = "features.denseblock1.denselayer2"
    assert f"{layer}.norm1" in refused and f"{layer}.norm2" in rep.removed
    assert "pre-activation BN" in refused[f"{layer}.norm1"]
    assert "'relu' (@features.denseblock1.denselayer2.relu1)" in refused[f"{layer}.norm1"]
    assert "its input comes from 'concat'" in refused[f"{layer}.norm1"]
    assert "pre-activation BN" in refused["features.norm5"]


def test_resnet_folds_every_bn_into_its_conv():
    g = load_small("resnet.arch", "resnet18")
    rep = fold(g).report
    assert rep.refused == []
    assert "folded bn @layer2.0.downsample.1 into conv @layer2.0.downsample.0 (backward)" in rep.actions
    assert rep.nodes_removed == 20


# ---- backward: conv -> bn, linear -> bn -------------------------------------------------------

def test_conv_without_bias_gains_one():
    g = spec("""model m() { input x: [3, 12, 12]
                output x -> c: conv(8, 3, padding=1, bias=false) -> b: bn -> relu }""")
    result = fold(g)
    conv = next(n for n in result.graph.nodes() if n.op == "conv")
    assert conv.attrs["bias"] is True and conv.params == {"weight": "c.weight", "bias": "c.bias"}
    rep = result.report
    assert (rep.removed, rep.rewritten, rep.rewired) == (["b"], ["c"], ["2"])
    assert (rep.params_before, rep.params_after) == (8 * 3 * 9 + 2 * 8, 8 * 3 * 9 + 8)
    assert rep.actions == ["folded bn @b into conv @c (backward)"]
    assert "c.bias" in archdsl.to_torch(result.graph).state_dict()
    assert_same_outputs(g, result.graph)


@pytest.mark.parametrize("conv", ["conv(8, 3, stride=2, padding=2, dilation=2)", "conv(8, 3, groups=4)",
                                  "conv(8, 3, padding=1, groups=8)", "conv(16, 1, groups=8, bias=false)"],
                         ids=["bias-strided-dilated", "grouped", "depthwise", "depthwise-multiplier"])
def test_conv_then_bn_folds_backward(conv):
    g = spec(f"model m() {{ input x: [8, 11, 11]\n output x -> {conv} -> bn }}")
    result = fold(g)
    assert [n.op for n in result.graph.nodes()] == ["input", "conv"]
    assert result.report.actions[0].endswith("(backward)")
    assert_same_outputs(g, result.graph)


def test_linear_then_bn_folds_backward():
    g = spec("model m() { input x: [4, 3, 3]\n output x -> flatten -> fc: linear(10) -> b: bn -> relu }")
    result = fold(g)
    assert result.report.actions == ["folded bn @b into linear @fc (backward)"]
    assert (result.report.params_before, result.report.params_after) == (36 * 10 + 10 + 20, 36 * 10 + 10)
    assert_same_outputs(g, result.graph)


def test_affine_free_bn_folds():
    g = spec("model m() { input x: [3, 8, 8]\n output x -> conv(4, 3) -> bn(affine=false, eps=0.1) }")
    result = fold(g)
    assert result.report.params_before == result.report.params_after == 4 * 3 * 9 + 4
    assert_same_outputs(g, result.graph)


def test_two_bns_in_a_row_both_fold():
    g = spec("model m() { input x: [3, 8, 8]\n output x -> conv(4, 3) -> bn -> bn }")
    result = fold(g)
    assert result.report.nodes_removed == 2
    assert_same_outputs(g, result.graph)


def test_bn_feeding_a_residual_add_folds_into_its_conv():
    g = spec("""model m() { input x: [4, 8, 8]
                output x -> residual { c: conv(4, 3, padding=1, bias=false) -> b: bn } -> relu }""")
    result = fold(g)
    assert result.report.removed == ["b"] and not result.report.refused
    assert_same_outputs(g, result.graph)


def test_bn_feeding_a_concat_folds_into_its_conv():
    g = spec("""model m() { input x: [4, 8, 8]
                output x -> parallel { a: [conv(4, 1) -> bn] b: conv(4, 1) } -> conv(6, 3, padding=1) }""")
    result = fold(g)
    assert result.report.removed == ["a.1"] and result.report.rewritten == ["a.0"]
    assert_same_outputs(g, result.graph)


# ---- forward: bn -> conv, bn -> linear ---------------------------------------------------------

@pytest.mark.parametrize("conv", ["conv(6, 3)", "conv(6, 3, stride=2, dilation=2, bias=false)",
                                  "conv(8, 3, groups=4)", "conv(8, 3, groups=8, bias=false)",
                                  "conv(16, 1, groups=8)"],
                         ids=["plain", "strided-no-bias", "grouped", "depthwise", "depthwise-multiplier"])
def test_bn_then_unpadded_conv_folds_forward(conv):
    g = spec(f"model m() {{ input x: [8, 10, 10]\n output x -> b: bn -> c: {conv} }}")
    result = fold(g)
    assert result.report.actions == ["folded bn @b into conv @c (forward)"]
    assert [n.op for n in result.graph.nodes()] == ["input", "conv"]
    assert result.graph.node(result.graph.outputs[0]).attrs["bias"] is True
    assert_same_outputs(g, result.graph)


def test_bn_then_padded_conv_is_refused_when_the_shift_is_not_zero():
    g = spec("model m() { input x: [8, 10, 10]\n output x -> b: bn -> c: conv(6, 3, padding=1) }")
    result = fold(g)
    assert not result.modified and result.report.removed == []
    (refusal,) = result.report.refused
    assert refusal.node == "b" and refusal.op == "bn" and refusal.span is not None
    assert refusal.reason == (
        "It cannot be folded backward (its input comes from 'input' (@x), not from a conv or linear layer) "
        "nor forward (conv @c zero-pads its input (padding=(1, 1)) and the BN's shift beta - gamma * mean / "
        "sqrt(var + eps) is non-zero, so the folded bias would be wrong at the border).")


def test_folding_into_a_padded_conv_would_be_wrong_at_the_border():
    """Why the refusal above is needed: the naive forward fold differs exactly at the border."""
    g = spec("model m() { input x: [8, 10, 10]\n output x -> b: bn -> c: conv(6, 3, padding=1) }")
    from archdsl.passes.fold_bn import _Folder
    from archdsl.passes.base import PassReport
    naive = g.copy()
    folder = _Folder(naive, PassReport("fold-bn"))
    bn = naive.node(next(n.id for n in naive.nodes() if n.op == "bn"))
    conv = naive.node(naive.outputs[0])
    folder._fold_forward(bn, [(conv.id, 0)])
    xs = random_inputs(g)
    want, got = ir_outputs(g, xs)[0], ir_outputs(naive, xs)[0]
    diff = np.abs(want - got).max(axis=(0, 1))
    assert diff[1:-1, 1:-1].max() <= TOL * np.abs(want).max()        # interior: exact
    assert diff[0].min() > 1e-3 and diff[:, 0].min() > 1e-3           # border: wrong


def test_bn_then_padded_conv_folds_when_the_shift_is_zero():
    g = spec("model m() { input x: [8, 10, 10]\n output x -> b: bn -> c: conv(6, 3, padding=1, groups=2) }",
             zero_shift=True)
    result = fold(g)
    assert result.report.actions == ["folded bn @b into conv @c (forward)"]
    assert_same_outputs(g, result.graph)


def test_bn_then_linear_folds_forward():
    g = spec("model m() { input x: [4, 3, 3]\n output x -> flatten -> b: bn -> fc: linear(5, bias=false) }")
    result = fold(g)
    assert result.report.actions == ["folded bn @b into linear @fc (forward)"]
    assert (result.report.params_before, result.report.params_after) == (36 * 5 + 72, 36 * 5 + 5)
    assert_same_outputs(g, result.graph)


def test_bn_feeding_several_convs_folds_into_all_of_them():
    g = spec("""model m() { input x: [4, 8, 8]
                h = x -> b: bn
                u = h -> p: conv(4, 1)
                v = h -> q: conv(4, 1, groups=2, bias=false)
                output (u, v) -> add }""")
    result = fold(g)
    assert result.report.actions == ["folded bn @b into conv @p, conv @q (forward)"]
    assert_same_outputs(g, result.graph)


@pytest.mark.parametrize("branches,offset", [("a: [relu -> bn] b: conv(3, 1)", 0),
                                             ("a: conv(3, 1) b: [relu -> bn]", 3)])
def test_bn_folds_forward_through_a_concat(branches, offset):
    g = spec(f"model m() {{ input x: [4, 8, 8]\n output x -> parallel {{ {branches} }} -> c: conv(6, 1) }}")
    result = fold(g)
    assert result.report.actions[0].endswith("into conv @c (forward)")
    assert result.report.nodes_removed == 1
    w_before = g.params["c.weight"].value
    w_after = result.graph.params["c.weight"].value
    other = slice(4, 7) if offset == 0 else slice(0, 3)
    assert np.array_equal(w_before[:, other], w_after[:, other])       # the other branch's slice is untouched
    assert not np.allclose(w_before[:, offset:offset + 4], w_after[:, offset:offset + 4])
    assert_same_outputs(g, result.graph)


def test_bn_through_a_concat_into_a_padded_conv_is_refused():
    g = spec("model m() { input x: [4, 8, 8]\n output x -> parallel { a: [relu -> bn] b: conv(3, 1) } "
             "-> c: conv(6, 3, padding=1) }")
    result = fold(g)
    (refusal,) = result.report.refused
    assert refusal.node == "a.1" and "conv @c zero-pads its input" in refusal.reason


# ---- refusals -----------------------------------------------------------------------------------

def test_pre_activation_bn_is_refused():
    g = spec("model m() { input x: [4, 8, 8]\n output x -> conv(4, 3, padding=1) -> relu -> b: bn -> r: relu "
             "-> conv(4, 3, padding=1) }")
    result = fold(g)
    assert not result.modified
    (refusal,) = result.report.refused
    assert refusal.reason == (
        "It cannot be folded backward (its input comes from 'relu' (@1), not from a conv or linear layer) nor "
        "forward (it is a pre-activation BN: its output passes through the nonlinearity 'relu' (@r) before any "
        "conv, and a per-channel affine map does not commute with a nonlinearity).")


def test_bn_into_an_add_without_a_conv_before_it_is_refused():
    g = spec("model m() { input x: [4, 8, 8]\n y = x -> relu -> b: bn\n output (y, x) -> s: add }")
    (refusal,) = fold(g).report.refused
    assert "nor forward (its output feeds 'add' (@s), which a BN cannot be moved past)" in refusal.reason


def test_conv_output_used_twice_is_not_folded_backward():
    g = spec("""model m() { input x: [4, 8, 8]
                y = x -> c: conv(4, 1)
                z = y -> b: bn
                output (z, y) -> s: add }""")
    (refusal,) = fold(g).report.refused
    assert ("cannot be folded backward (the output of conv @c is also used by add @s, which needs it "
            "unnormalised)") in refusal.reason


def test_bn_as_a_model_output_after_an_input_is_refused():
    g = spec("model m() { input x: [4, 8, 8]\n output x -> b: bn }")
    (refusal,) = fold(g).report.refused
    assert "nor forward (its output is a model output)" in refusal.reason


def test_conv_then_bn_as_the_model_output_folds():
    g = spec("model m() { input x: [4, 8, 8]\n output x -> c: conv(4, 1) -> b: bn }")
    result = fold(g)
    assert result.graph.outputs == [next(n.id for n in result.graph.nodes() if n.op == "conv")]
    assert_same_outputs(g, result.graph)


def test_linear_with_a_3d_output_is_not_folded_backward():
    g = spec("model m() { input x: [4, 6]\n output x -> fc: linear(5) -> b: bn }")
    (refusal,) = fold(g).report.refused
    assert ("linear @fc has a 3-D output, so the BN normalises dimension 1, not the linear's output "
            "features") in refusal.reason


def test_shared_parameters_are_refused_before_the_pass_runs():
    g = spec("""model m() { input x: [4, 8, 8]
                output x -> c1: conv(4, 1) -> relu -> c2: conv(4, 1) -> b: bn }""")
    c1 = next(n for n in g.nodes() if n.scope == "c1")
    c2 = next(n for n in g.nodes() if n.scope == "c2")
    g.update(c2.id, params=dict(c1.params))          # c2 now shares c1's weight and bias
    with pytest.raises(ArchError) as info:
        run_pipeline(g, "fold-bn")
    assert info.value.message == ("The IR is invalid before the pipeline: Node @c2 (conv) names its parameter "
                                  "'weight' c1.weight; it must be c2.weight, the node's scope and the local name.")


# ---- pass contract -------------------------------------------------------------------------------

def test_the_input_graph_is_not_changed_and_a_second_run_changes_nothing():
    g = load_small("resnet.arch", "resnet18")
    randomise_bn(g)
    saved = {k: p.value.copy() for k, p in g.params.items()}
    nodes = g.node_ids()
    first = fold(g)
    assert g.node_ids() == nodes and set(g.params) == set(saved)
    assert all(np.array_equal(g.params[k].value, v) for k, v in saved.items())
    second = fold(first.graph)
    assert second.modified is False
    assert second.report.removed == second.report.rewritten == second.report.actions == []
    assert second.report.params_before == second.report.params_after == first.report.params_after


def test_surviving_nodes_keep_their_source_locations():
    g = load_small("resnet.arch", "resnet18")
    folded = fold(g).graph
    assert all(folded.data(n)["span"] == g.data(n)["span"] is not None for n in folded.node_ids()
               if folded.data(n)["op"] != "input")


def test_fold_bn_in_a_pipeline_with_verify():
    g = load_small("resnet.arch", "resnet18")
    randomise_bn(g)
    result = run_pipeline(g, "fold-bn", verify=True, tolerance=TOL)
    assert result.modified and result.reports[0].nodes_removed == 20
