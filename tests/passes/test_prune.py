"""``prune``: physically pruned == masked on every topology, criteria, rounding, MAC targets, reports.

The reference for exactness is the *unpruned* graph with the removed channels'
consumer in-slices zeroed (and, to make it stricter, their producer filters and
batch-norm parameters too): it runs through the original shapes and code paths,
so any tied tensor the pass forgot to shrink, or shrank at the wrong index,
shows up as a difference.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import archdsl  # noqa: E402
from archdsl import ArchError  # noqa: E402
from archdsl.ir.channels import channel_groups, masked  # noqa: E402
from archdsl.ir.stats import totals  # noqa: E402
from archdsl.ir.verify import verify  # noqa: E402
from archdsl.passes import run_pipeline  # noqa: E402
from archdsl.passes.context import PassContext  # noqa: E402

from zoo import ir_outputs, load_small, random_inputs, randomise_bn, zoo_models  # noqa: E402

TOL = 1e-5


def removed_units(original, report):
    """Per channel group of ``original``, the units the pass removed (read off the report's kept indices)."""
    kept = {row["layer"]: set(row["kept"]) for row in report.layers if "kept" in row}
    out = []
    for gr in channel_groups(original):
        for p in gr.producers:
            scope = original.data(p)["scope"]
            if scope in kept:
                pos = gr.tensors[p]
                gone = [u for u in range(gr.size) if not set(pos.index[u].tolist()) <= kept[scope]]
                if gone:
                    out.append((gr, gone))
                break
    return out


def assert_pruned_equals_masked(g, passes="prune{ratio=0.3}", ctx=None):
    result = run_pipeline(g, passes, ctx=ctx)
    pruned, report = result.graph, result.reports[0]
    verify(pruned)
    assert report.modified, report.summary()
    choice = removed_units(g, report)
    assert choice, "the report names no removed channels"
    reference = masked(g, choice, roles=("in",))
    stricter = masked(g, choice, roles=("out", "in"))
    xs = random_inputs(g)
    for a, b, c in zip(ir_outputs(pruned, xs), ir_outputs(reference, xs), ir_outputs(stricter, xs)):
        scale = max(1.0, np.abs(b).max())
        assert np.abs(a - b).max() <= TOL * scale
        assert np.abs(a - c).max() <= TOL * scale
    assert report.macs_after == totals(pruned)["macs"] < report.macs_before
    return result


# ---- the zoo ------------------------------------------------------------------------------------

# The deeper and wider members of a family repeat its blocks (and VGG's 100M-weight classifier makes every
# copy slow), so they are checked for shapes and MACs; one member of every family runs numerically.
SLOW = {"vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg19_bn",
        "resnet101", "resnet152", "densenet161", "densenet169", "densenet201"}


@pytest.mark.parametrize("file,model", [m for m in zoo_models() if m[1] not in SLOW])
def test_every_zoo_model_pruned_equals_masked(file, model):
    g = load_small(file, model, size=32 if "resnet" in model or "dense" in model else 64)
    randomise_bn(g, seed=3)
    assert_pruned_equals_masked(g)


@pytest.mark.parametrize("file,model", sorted(m for m in zoo_models() if m[1] in SLOW))
def test_big_zoo_models_prune_and_verify(file, model):
    """Shapes and the IR only (no forward pass): every tied tensor shrank consistently."""
    g = load_small(file, model, size=32)
    result = run_pipeline(g, "prune{macs=0.5}")
    verify(result.graph)
    r = result.reports[0]
    assert 0.45 <= r.macs_after / r.macs_before <= 0.5


# ---- topologies the zoo lacks --------------------------------------------------------------------

SPECS = {
    "depthwise": """
model m() {
    input x: [3, 16, 16]
    h = x -> c0: conv(16, 3, padding=1, bias=false) -> b0: bn -> relu
    h = h -> dw: conv(16, 3, padding=1, groups=16, bias=false) -> b1: bn -> relu6
          -> pw: conv(24, 1, bias=false) -> b2: bn
    output h -> adaptive_avgpool(1) -> flatten -> fc: linear(5)
}""",
    "inverted_residual": """
model m() {
    input x: [3, 16, 16]
    h = x -> c0: conv(8, 3, padding=1, bias=false) -> b0: bn -> relu6
    h = h -> residual {
        e: conv(32, 1, bias=false) -> be: bn -> relu6 -> dw: conv(32, 3, padding=1, groups=32, bias=false)
        -> bd: bn -> relu6 -> p: conv(8, 1, bias=false) -> bp: bn
    }
    output h -> adaptive_avgpool(1) -> flatten -> fc: linear(5)
}""",
    "grouped": """
model m() {
    input x: [4, 12, 12]
    h = x -> c0: conv(16, 1) -> b0: bn -> relu -> g: conv(24, 3, padding=1, groups=4) -> b1: bn -> relu
    output h -> adaptive_avgpool(1) -> flatten -> fc: linear(3)
}""",
    "squeeze_excite": """
import std.layers
model m() {
    input x: [3, 16, 16]
    h = x -> c0: conv(32, 3, padding=1) -> b0: bn -> relu -> se: squeeze_excite(4) -> c1: conv(16, 1)
    output h -> adaptive_avgpool(1) -> flatten -> fc: linear(4)
}""",
    "shuffle": """
import std.layers
model m() {
    input x: [3, 8, 8]
    h = x -> c0: conv(16, 1) -> b0: bn -> relu
    a = h -> slice(0, 8)
    b = h -> slice(8, 16) -> c1: conv(8, 1) -> b1: bn -> relu -> c2: conv(8, 3, padding=1, groups=8) -> b2: bn
    h = (a, b) -> concat -> shuffle: channel_shuffle(2) -> c3: conv(12, 1) -> b3: bn -> relu
    output h -> adaptive_avgpool(1) -> flatten -> fc: linear(4)
}""",
    "flatten_linear": """
model m() {
    input x: [3, 6, 6]
    output x -> c0: conv(10, 3) -> b0: bn -> relu -> flatten -> f1: linear(12) -> relu -> fc: linear(3)
}""",
    "spatial_attention": """
model m() {
    input x: [3, 8, 8]
    h = x -> c0: conv(12, 3, padding=1) -> relu
    att = h -> a: conv(1, 1) -> sigmoid
    output (h, att) -> mul -> c1: conv(6, 1) -> adaptive_avgpool(1) -> flatten
}""",
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_topologies_pruned_equal_masked(name):
    g = archdsl.load(SPECS[name])
    randomise_bn(g, seed=5)
    assert_pruned_equals_masked(g, "prune{ratio=0.5}")


def test_depthwise_groups_shrink_with_their_channels():
    g = archdsl.load(SPECS["depthwise"])
    pruned = run_pipeline(g, "prune{ratio=0.5}").graph
    dw = pruned.node(pruned.by_scope("dw"))
    assert dw.attrs["groups"] == dw.attrs["out_channels"] == 8
    assert pruned.node(pruned.by_scope("c0")).attrs["out_channels"] == 8


def test_grouped_conv_keeps_equal_groups():
    g = archdsl.load(SPECS["grouped"])
    pruned = run_pipeline(g, "prune{ratio=0.5}").graph
    conv = pruned.node(pruned.by_scope("g"))
    assert conv.attrs["groups"] == 4 and conv.attrs["out_channels"] % 4 == 0
    assert pruned.data(conv.inputs[0])["shape"][1] % 4 == 0


def test_shuffle_couples_the_branches():
    g = archdsl.load(SPECS["shuffle"])
    pruned = run_pipeline(g, "prune{ratio=0.5}").graph
    # both halves of the concat lose the same number of channels, so the reshape stays rectangular
    shapes = [pruned.data(i)["shape"][1] for i in pruned.data(
        next(n.id for n in pruned.nodes() if n.op == "concat"))["inputs"]]
    assert shapes[0] == shapes[1] < 8


def test_spatial_attention_does_not_couple_channels():
    g = archdsl.load(SPECS["spatial_attention"])
    report = run_pipeline(g, "prune{ratio=0.5}").reports[0]
    rows = {r["layer"]: r for r in report.layers}
    assert rows["c0"]["channels_after"] == 6 and rows["a"]["channels_after"] == 1


# ---- options, criteria and the report -----------------------------------------------------------

def test_ratio_zero_changes_nothing():
    g = load_small("resnet.arch", "resnet18", 32)
    result = run_pipeline(g, "prune{ratio=0}")
    assert not result.modified and result.reports[0].nodes_after == len(g)


def test_dead_channels_are_removed_without_changing_the_outputs():
    g = archdsl.load(SPECS["inverted_residual"])
    randomise_bn(g, seed=2)
    dead = [1, 4, 6]
    # these channels of e are tied to the depthwise conv's: both batch norms output 0 there
    for name in ("be.weight", "be.bias", "bd.weight", "bd.bias"):
        v = g.params[name].value.copy()
        v[dead] = 0.0
        g.params[name].value = v
    result = run_pipeline(g, "prune{ratio=0.1,criterion=bn-scale}")     # 32 * 0.1 -> 3 channels per group
    rows = {r["layer"]: r for r in result.reports[0].layers}
    assert sorted(set(range(32)) - set(rows["e"]["kept"])) == dead
    xs = random_inputs(g)
    for a, b in zip(ir_outputs(result.graph, xs), ir_outputs(g, xs)):
        assert np.abs(a - b).max() <= TOL * max(1.0, np.abs(b).max())


def test_l1_removes_the_smallest_filters():
    g = archdsl.load("model m() { input x: [3, 8, 8]\n output x -> c: conv(6, 3) -> relu -> d: conv(2, 1) }")
    w = g.params["c.weight"].value.copy()
    w[[0, 3, 5]] *= 1e-3
    g.params["c.weight"].value = w
    rows = {r["layer"]: r for r in run_pipeline(g, "prune{ratio=0.5}").reports[0].layers}
    assert rows["c"]["kept"] == [1, 2, 4]


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn-scale", "taylor", "obd", "random"])
def test_every_criterion_prunes_exactly(criterion):
    g = archdsl.load(SPECS["depthwise"])
    randomise_bn(g, seed=4)
    rng = np.random.default_rng(0)
    ctx = PassContext(data={"x": rng.standard_normal((8, 3, 16, 16), dtype=np.float32),
                            "y": rng.integers(0, 5, 8)}, seed=1)
    assert_pruned_equals_masked(g, f"prune{{ratio=0.25,criterion={criterion}}}", ctx=ctx)


def test_gradient_criteria_need_data():
    g = archdsl.load(SPECS["depthwise"])
    with pytest.raises(ArchError, match="Pass 'prune' needs data for the taylor and obd criteria"):
        run_pipeline(g, "prune{ratio=0.25,criterion=taylor}")


def test_random_is_seeded():
    g = archdsl.load(SPECS["depthwise"])
    kept = [[r.get("kept") for r in run_pipeline(g, "prune{ratio=0.5,criterion=random}",
                                                  ctx=PassContext(seed=s)).reports[0].layers] for s in (1, 1, 2)]
    assert kept[0] == kept[1] != kept[2]


def test_round_to_keeps_multiples():
    g = load_small("resnet.arch", "resnet18", 32)
    pruned = run_pipeline(g, "prune{ratio=0.3,round_to=8}").graph
    widths = [n.attrs["out_channels"] for n in pruned.nodes() if n.op == "conv"]
    assert all(w % 8 == 0 for w in widths) and min(widths) < 64


def test_a_mac_target_is_reached_globally():
    g = load_small("resnet.arch", "resnet50", 32)
    r = run_pipeline(g, "prune{macs=0.5,max_ratio=0.7}").reports[0]
    assert 0.47 <= r.macs_after / r.macs_before <= 0.5
    removed = [1 - row["channels_after"] / row["channels_before"] for row in r.layers]
    assert max(removed) <= 0.7 + 1e-9 and min(removed) < max(removed)    # not uniform: ranked globally


def test_a_mac_target_is_not_overshot_by_the_last_round_to_step():
    """With round_to=16 the threshold's last step removes 16-channel blocks from many groups at once
    (ShuffleNetV2 landed at 0.466 of its MACs); the pass gives back what still fits under the target."""
    g = load_small("shufflenet_v2.arch", "shufflenet_v2_x1_0", 64)
    r = run_pipeline(g, "prune{macs=0.5,round_to=16}").reports[0]
    assert 0.49 <= r.macs_after / r.macs_before <= 0.5
    # the shuffle's groups are rounded, not the layers, and the report says where that shows
    off = [row["layer"] for row in r.layers if row["channels_after"] != row["channels_before"]
           and row["channels_after"] % 16]
    assert off and r.notes[-1].startswith(
        f"round_to=16 is not met by {len(off)} layers whose channels come from several groups (as after a "
        f"channel shuffle): @{off[0]} (")


@pytest.mark.parametrize("file,model", [("densenet.arch", "densenet121"), ("shufflenet_v2.arch", "shufflenet_v2_x1_0"),
                                        ("googlenet.arch", "googlenet")])
def test_the_incremental_mac_count_equals_a_full_recount(file, model):
    """The give-back step re-counts only the nodes one group reaches; that must equal counting the whole
    graph again (and the graph the pass writes) for any change to any group."""
    from archdsl.passes.prune import _Plan, _Tally
    g = load_small(file, model, 64)
    groups = channel_groups(g)
    cands = [gr.index for gr in groups if gr.prunable and gr.size > 1]
    rng = np.random.default_rng(0)
    plan = _Plan(g, groups)
    pick = lambda gi: np.sort(rng.choice(groups[gi].size, rng.integers(0, groups[gi].size), replace=False))  # noqa
    tally = _Tally(plan, {gi: pick(gi) for gi in cands})
    assert tally.total == plan.macs(tally.removal)
    for gi in rng.choice(cands, 12, replace=False):
        units = pick(gi)
        trial = tally.trial(gi, units)
        assert trial[2] == plan.macs({**tally.removal, gi: units})
        tally.commit(trial)
        assert tally.total == plan.macs(tally.removal)


def test_keep_patterns_are_never_pruned():
    g = load_small("resnet.arch", "resnet18", 32)
    r = run_pipeline(g, 'prune{ratio=0.5,keep="layer4,layer3.0.conv1"}').reports[0]
    rows = {row["layer"]: row for row in r.layers}
    assert all(row["channels_after"] == row["channels_before"] for s, row in rows.items()
               if s.startswith("layer4.") and s != "layer4.0.downsample.0" and "conv1" in s)
    assert rows["layer3.0.conv1"]["channels_after"] == 256
    assert rows["fc"]["channels_after"] == 1000              # the output's producer is always kept


def test_the_report_lists_every_layer_and_refusals():
    g = archdsl.load("zoo_specs/stn.arch", "stn_mnist")
    r = run_pipeline(g, "prune{ratio=0.5}").reports[0]
    layers = {row["layer"] for row in r.layers}
    assert {n.scope for n in g.nodes() if n.op in ("conv", "linear")} == layers
    reasons = [x.reason for x in r.refused]
    assert any("'affine_grid' at @4 has no channel rule" in x for x in reasons), reasons    # theta is fixed
    assert any("'log_softmax' at @18 mixes the channels along dimension 1" in x for x in reasons), reasons
    assert all(x.span is not None for x in r.refused)
    text = r.summary()
    assert "channels_before=" in text and "refused" in text


@pytest.mark.parametrize("text,message,column,length", [
    ("prune", "Pass 'prune': give exactly one of ratio= (a fraction of channels to remove) and macs= (a fraction "
              "of MACs to keep), as in prune{ratio=0.5}.", 1, 5),
    ("prune{ratio=1.5}", "Pass 'prune': ratio must be at least 0 and below 1, but it is 1.5.", 13, 3),
    ("prune{ratio=0.5,criterion=l3}", "Pass 'prune': there is no criterion 'l3'; the criteria are l1, l2, "
                                      "bn-scale, taylor, obd and random.", 27, 2),
    ("prune{ratio=0.5,max_ratio=0.5}", "Pass 'prune': max_ratio limits how much of any group macs= may remove; "
                                       "with ratio= every group loses the same fraction, so drop max_ratio or give "
                                       "macs= instead.", 27, 3),
    ("dce,prune{macs=0.5,max_ratio=1}", "Pass 'prune': max_ratio must be at least 0 and below 1, but it is 1.",
     30, 1),
    ("lowrank{ratio=0.5,method=qr}", "Pass 'lowrank': there is no method 'qr'; the methods are auto, tucker2, cp "
                                     "and svd.", 26, 2),
    ("lowrank{energy=0}", "Pass 'lowrank': energy must be above 0 and at most 1, but it is 0.", 16, 1),
])
def test_option_errors_point_at_the_option_in_the_pipeline(text, message, column, length):
    with pytest.raises(ArchError) as info:
        run_pipeline(archdsl.load(SPECS["depthwise"]), text)
    span = info.value.span
    assert info.value.message == message and span.file == "<passes>"
    assert (span.line, span.col, span.end_col - span.col) == (1, column, length)


def test_a_keep_pattern_that_matches_nothing_is_a_note():
    g = archdsl.load(SPECS["depthwise"])
    r = run_pipeline(g, 'prune{ratio=0.5,keep="dw,nope.*"}').reports[0]
    assert r.notes == ["The keep pattern 'nope.*' matches no layer, so it keeps nothing; patterns are scopes such as "
                       f"'{next(n.scope for n in g.nodes() if n.op == 'conv')}', the scopes inside one, or shell "
                       "wildcards over them ('*.conv1')."]


# ---- every backend ----------------------------------------------------------------------------

def test_pruned_model_runs_in_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    g = load_small("resnet.arch", "resnet18", 32)
    randomise_bn(g)
    pruned = run_pipeline(g, "prune{macs=0.5}").graph
    model = archdsl.to_onnx(pruned)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    xs = random_inputs(pruned)
    (onnx_out,) = sess.run(None, {"x": xs[0]})
    (torch_out,) = ir_outputs(pruned, xs)
    assert np.abs(onnx_out - torch_out).max() <= 1e-4 * max(1.0, np.abs(torch_out).max())


@pytest.mark.parametrize("file,model", [m for m in zoo_models() if m[1] not in SLOW])
def test_every_pruned_zoo_model_writes_torch_source_that_takes_its_weights(file, model, tmp_path):
    """torch-src of the pruned IR, with its weights file, computes what the IR computes. DenseNet's pruned
    layers differ in width within a block, so its block class takes tables of widths."""
    import importlib.util

    from archdsl.backends.torch_source import _top_class_name, write_source
    g = load_small(file, model, size=32 if "resnet" in model or "dense" in model else None)
    randomise_bn(g, seed=3)
    pruned = run_pipeline(g, "prune{macs=0.5,round_to=8}").graph
    weights = write_source(pruned, tmp_path / "pruned.py", weights=True)
    assert weights == tmp_path / "pruned.pt"
    spec = importlib.util.spec_from_file_location(f"pruned_{model}", tmp_path / "pruned.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    cls = getattr(gen, _top_class_name((tmp_path / "pruned.py").read_text()))
    module = gen.load_weights(cls()).eval()
    xs = random_inputs(pruned)
    with torch.no_grad():
        got = module(*[torch.from_numpy(x) for x in xs])
    got = [o.double().numpy() for o in (got if isinstance(got, tuple) else (got,))]
    for a, b in zip(got, ir_outputs(pruned, xs)):
        assert np.array_equal(a, b)
    if "dense" in model:
        lines = [line.strip() for line in (tmp_path / "pruned.py").read_text().splitlines()]
        i = lines.index("in_channels + sum(conv2_out_channels[:i]),")
        assert lines[i - 1:i + 3] == ["DenseLayer(", "in_channels + sum(conv2_out_channels[:i]),",
                                      "conv1_out_channels[i],", "conv2_out_channels[i],"]


# ---- the pruned architecture as a spec -------------------------------------------------------------

@pytest.mark.parametrize("file,model", [("resnet.arch", "resnet50"), ("densenet.arch", "densenet121"),
                                        ("googlenet.arch", "googlenet")])
def test_the_emitted_spec_has_the_pruned_macs_and_takes_the_pruned_weights(file, model, tmp_path, capsys):
    from archdsl.backends.weights import load_weights
    from archdsl.cli import main
    from archdsl.ir.printer import print_graph
    from zoo import ZOO
    out = tmp_path / "pruned.arch"
    assert main(["opt", str(ZOO / file), "--model", model, "-D", "size=32" if model != "googlenet" else "size=64",
                 "--passes", "prune{macs=0.5,round_to=8}", "--emit", "arch", "-o", str(out), "-q"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"wrote {out}", f"wrote {tmp_path / 'pruned.pt'} (the weights, by the spec's names: load them with "
                        "--weights pruned.pt)"]
    pruned = run_pipeline(load_small(file, model, 32 if model != "googlenet" else 64),
                          "prune{macs=0.5,round_to=8}").graph
    spec = archdsl.load(out)
    assert max(len(line) for line in out.read_text().splitlines() if not line.startswith("#")) <= 100
    assert totals(spec)["macs"] == totals(pruned)["macs"]
    assert print_graph(spec, locations=False).split("\n", 1)[1] == print_graph(pruned, locations=False).split(
        "\n", 1)[1]
    load_weights(spec, tmp_path / "pruned.pt")            # strict: every name and shape
    xs = random_inputs(spec)
    for a, b in zip(ir_outputs(spec, xs), ir_outputs(pruned, xs)):
        assert np.array_equal(a, b)


# ---- what the report tells the user ---------------------------------------------------------------

def test_an_unreachable_mac_target_is_a_note_in_the_summary():
    g = load_small("resnet.arch", "resnet18", 32)
    r = run_pipeline(g, "prune{macs=0.01}").reports[0]
    kept = r.macs_after / r.macs_before
    note = (f"The MAC target macs=0.01 is out of reach: removing max_ratio=0.8 of every prunable group "
            f"(round_to=1) keeps {kept:.3f} of the MACs, so the pass stopped there; raise max_ratio or lower "
            f"round_to to go further.")
    assert r.notes == [note] and r.modified and kept > 0.01
    assert f"  note: {note}" in r.summary().splitlines()
    assert r.to_json()["notes"] == [note]


@pytest.mark.parametrize("passes,why", [
    ("prune{ratio=0.3,round_to=1024}", "round_to=1024 keeps every group whole (each keeps a multiple of 1024 "
                                       "channels, and the largest prunable group has 512)"),
    ("prune{ratio=0.001}", "ratio=0.001 removes no channel from any group (floor(ratio x channels) is 0 up to the "
                           "largest prunable group, 512 channels)"),
])
def test_a_prune_that_removes_nothing_says_why(passes, why):
    g = load_small("resnet.arch", "resnet18", 32)
    r = run_pipeline(g, passes).reports[0]
    assert not r.modified and r.notes == [f"Nothing was pruned: {why}."]
