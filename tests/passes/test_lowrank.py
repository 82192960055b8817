"""``lowrank``: exactness at full and exact rank, the SVD error identity, Tucker-2 and CP against their
reconstructed kernels, strides/padding/dilation, the report, rank rules, the MAC allocation, every zoo model.

The reference for a factorised model is the *original* graph with each factorised
layer's weight replaced by the kernel its factors multiply out to (composed here
from the new layers' parameters, independently of the pass): the original graph
runs through the original shapes and code paths, so a factor at the wrong place,
a stride or padding on the wrong layer, a lost bias or a wrong fold shows up.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import archdsl  # noqa: E402
from archdsl.ir.stats import layer_stats, totals  # noqa: E402
from archdsl.ir.verify import verify  # noqa: E402
from archdsl.passes import parse_pipeline, run_pipeline  # noqa: E402
from archdsl.passes import factorize as fz  # noqa: E402
from archdsl.passes.lowrank import LowRank  # noqa: E402

from zoo import ir_outputs, load_small, random_inputs, randomise_bn, zoo_models  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """NumPy's BLAS threads thrash on a loaded 2-core machine as torch's do (see conftest.py): the
    eigendecompositions here ran 5 to 10 times faster on one thread."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def ort_outputs(g, xs):
    ort = pytest.importorskip("onnxruntime")
    from archdsl.backends.onnx_export import onnx_bytes
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(onnx_bytes(g), opts, providers=["CPUExecutionProvider"])
    return [o.astype(np.float64) for o in sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), xs)})]


def rel(a, b) -> float:
    return max(float(np.max(np.abs(x - y)) / np.max(np.abs(y))) for x, y in zip(a, b))


def lowrank(g, passes):
    result = run_pipeline(g, passes)
    verify(result.graph)
    return result.graph, result.reports[0]


def w(g, name) -> np.ndarray:
    return g.params[name].value.astype(np.float64)


def composed(new, scope: str, method: str) -> np.ndarray:
    """The kernel the factor layers ``scope.0``, ``scope.1``... of ``new`` multiply out to."""
    parts = []
    k = 0
    while new.by_scope(f"{scope}.{k}") is not None:
        parts.append(new.node(new.by_scope(f"{scope}.{k}")))
        k += 1
    assert parts, f"no factor layers under {scope}"
    if method == "cp":
        b, h, kk, a = (p.param("weight").value.astype(np.float64) for p in parts)
        assert [p.attrs["groups"] for p in parts] == [1, b.shape[0], b.shape[0], 1]
        return np.einsum("nr,ri,rj,rc->ncij", a[:, :, 0, 0], h[:, 0, :, 0], kk[:, 0, 0, :], b[:, :, 0, 0])
    if parts[0].op == "linear":
        assert method == "svd" and len(parts) == 2
        return parts[1].param("weight").value.astype(np.float64) @ parts[0].param("weight").value
    # 1x1 convs around at most one spatial conv
    ws = [p.param("weight").value.astype(np.float64) for p in parts]
    spatial = [i for i, x in enumerate(ws) if x.shape[2:] != (1, 1)]
    assert len(spatial) <= 1 and all(p.attrs["groups"] == 1 for p in parts)
    mats = [x[:, :, 0, 0] for x in ws]
    if not spatial:                # svd of a 1x1 conv
        assert method == "svd" and len(parts) == 2
        return (mats[1] @ mats[0])[:, :, None, None]
    k = spatial[0]
    kernel = ws[k]
    for m in mats[k + 1:]:
        kernel = np.einsum("ab,bcij->acij", m, kernel)
    for m in reversed(mats[:k]):
        kernel = np.einsum("abij,bc->acij", kernel, m)
    return kernel


def reference(g, new, report):
    """``g`` with each factorised layer's weight replaced by its factors' product."""
    ref = g.copy()
    for row in report.layers:
        name = f"{row['layer']}.weight"
        ref.params[name].value = composed(new, row["layer"], row["method"]).astype(np.float32)
    return ref


def assert_matches_reference(g, new, report, tol=1e-5, onnx=False):
    ref = reference(g, new, report)
    xs = random_inputs(g)
    assert rel(ir_outputs(new, xs), ir_outputs(ref, xs)) <= tol
    if onnx:
        assert rel(ort_outputs(new, xs), ir_outputs(ref, xs)) <= tol
    return ref


SMALL = """
model small() {
    input x: [6, 15, 13]
    h = x -> c3: conv(20, 3, stride=2, padding=1) -> relu
          -> cd: conv(24, 3, padding=(2, 1), dilation=(2, 1), bias=false) -> relu
          -> cs: conv(28, (3, 5), stride=(1, 2), padding=(1, 2)) -> relu
          -> p1: conv(32, 1, stride=2, padding=1) -> relu
    output h -> adaptive_avgpool(1) -> flatten -> fc1: linear(40) -> relu -> fc2: linear(12)
}"""


def small(seed=0):
    return archdsl.load(SMALL, seed=seed)


# ---- full rank, exact rank -----------------------------------------------------------------------

@pytest.mark.parametrize("method", ["auto", "tucker2", "svd"])
def test_full_rank_reproduces_the_original(method):
    g = small()
    new, rep = lowrank(g, f"lowrank{{method={method},ratio=1,min_gain=0}}")
    assert rep.modified and rep.layers
    xs = random_inputs(g)
    assert rel(ir_outputs(new, xs), ir_outputs(g, xs)) <= 1e-5
    assert max(row["rel_error"] for row in rep.layers) <= 1e-6
    assert LowRank(method=method, ratio=1.0).expected_error() == 0.0


def test_full_rank_on_a_zoo_model_in_a_verified_pipeline():
    g = load_small("resnet.arch", "resnet18", size=32)
    randomise_bn(g, seed=2)
    result = run_pipeline(g, "lowrank{ratio=1,min_gain=0}", verify=True)     # expected error 0: held to 1e-4
    xs = random_inputs(g)
    assert rel(ir_outputs(result.graph, xs), ir_outputs(g, xs)) <= 1e-5
    assert len(result.reports[0].layers) == sum(n.op in ("conv", "linear") for n in g.nodes())


def low_rank_matrix(rng, n, c, r):
    return rng.standard_normal((n, r)) @ rng.standard_normal((r, c))


def set_weight(g, scope, value):
    g.params[f"{scope}.weight"].value = value.astype(np.float32)


def test_weights_of_exactly_the_chosen_rank_are_reproduced_to_float_precision():
    g = small()
    rng = np.random.default_rng(5)
    # Tucker-2 ranks (r_out, r_in) = (5, 4) for the KxK convs, rank 6 for the 1x1 conv and the linears
    for scope, (n, c, kh, kw) in (("c3", (20, 6, 3, 3)), ("cd", (24, 20, 3, 3)), ("cs", (28, 24, 3, 5))):
        core = rng.standard_normal((5, 4, kh, kw))
        set_weight(g, scope, fz.tucker2_reconstruct(core, np.linalg.qr(rng.standard_normal((n, 5)))[0],
                                                    np.linalg.qr(rng.standard_normal((c, 4)))[0]))
    set_weight(g, "p1", low_rank_matrix(rng, 32, 28, 6)[:, :, None, None] / 6)
    set_weight(g, "fc1", low_rank_matrix(rng, 40, 32, 6) / 6)
    set_weight(g, "fc2", low_rank_matrix(rng, 12, 40, 6) / 6)
    new, rep = lowrank(g, "lowrank{energy=1.0}")              # the smallest ranks holding all the energy
    ranks = {row["layer"]: row["ranks"] for row in rep.layers}
    assert ranks == {"c3": [5, 4], "cd": [5, 4], "cs": [5, 4], "p1": [6], "fc1": [6], "fc2": [6]}
    assert max(row["rel_error"] for row in rep.layers) <= 1e-6
    xs = random_inputs(g)
    assert rel(ir_outputs(new, xs), ir_outputs(g, xs)) <= 1e-5


def test_cp_of_an_exact_rank_kernel_is_reproduced():
    g = archdsl.load("model m() { input x: [8, 12, 12]\n output x -> c: conv(10, 3, padding=1) }")
    rng = np.random.default_rng(3)
    factors = [rng.standard_normal((d, 4)) for d in (10, 8, 3, 3)]
    set_weight(g, "c", fz.cp_reconstruct(factors) / 4)
    new, rep = lowrank(g, "lowrank{method=cp,ratio=0.5,iters=500}")          # ceil(0.5 * 8) = 4
    (row,) = rep.layers
    assert row["ranks"] == [4] and row["rel_error"] <= 1e-6
    xs = random_inputs(g)
    assert rel(ir_outputs(new, xs), ir_outputs(g, xs)) <= 1e-5


# ---- reduced rank: the error identities ------------------------------------------------------------

def test_svd_error_is_the_discarded_singular_values():
    g = small()
    new, rep = lowrank(g, "lowrank{method=svd,ratio=0.3}")
    rows = {row["layer"]: row for row in rep.layers}
    assert set(rows) == {"p1", "fc1", "fc2"}
    for scope, row in rows.items():
        weight = w(g, f"{scope}.weight").reshape(w(g, f"{scope}.weight").shape[0], -1)
        s = np.linalg.svd(weight, compute_uv=False)
        (r,) = row["ranks"]
        assert r == math.ceil(0.3 * min(weight.shape))
        discarded = float(np.sum(s[r:] ** 2))
        hat = composed(new, scope, "svd").reshape(weight.shape)
        assert np.sum((weight - hat) ** 2) == pytest.approx(discarded, rel=1e-6)        # Eckart-Young
        assert row["rel_error"] ** 2 * np.sum(weight ** 2) == pytest.approx(discarded, rel=1e-9)
    assert_matches_reference(g, new, rep)


@pytest.mark.parametrize("iters", [0, 3])
def test_tucker2_error_is_that_of_the_reconstructed_kernel(iters):
    g = small()
    new, rep = lowrank(g, f"lowrank{{method=tucker2,ratio=0.5,min_gain=0,iters={iters}}}")
    for row in rep.layers:
        weight = w(g, f"{row['layer']}.weight")
        hat = composed(new, row["layer"], "tucker2")
        true = np.linalg.norm(weight - hat) / np.linalg.norm(weight)
        assert row["rel_error"] == pytest.approx(true, rel=1e-5)
        n, c = weight.shape[:2]
        r_out, r_in = row["ranks"]
        assert (r_out, r_in) == (min(math.ceil(n / 2), c * weight[0, 0].size), math.ceil(c / 2))
        # at most the HOSVD bound: the two unfoldings' discarded energy
        d = sum(float(np.sum(np.linalg.svd(fz.unfold(weight, m), compute_uv=False)[r:] ** 2))
                for m, r in ((0, r_out), (1, r_in)))
        assert true ** 2 <= d / np.sum(weight ** 2) + 1e-9
    assert_matches_reference(g, new, rep)


def test_hooi_sweeps_never_raise_the_error():
    g = small()
    base = {r["layer"]: r["rel_error"] for r in lowrank(g, "lowrank{method=tucker2,ratio=0.4,min_gain=0}")[1].layers}
    refined = {r["layer"]: r["rel_error"]
               for r in lowrank(g, "lowrank{method=tucker2,ratio=0.4,min_gain=0,iters=5}")[1].layers}
    assert all(refined[k] <= base[k] + 1e-12 for k in base) and any(refined[k] < base[k] for k in base)


def test_cp_layers_carry_stride_padding_and_dilation_per_axis():
    g = archdsl.load("model m() { input x: [5, 17, 16]\n"
                     " output x -> c: conv(7, (3, 5), stride=(2, 3), padding=(2, 1), dilation=(2, 1)) }")
    new, rep = lowrank(g, "lowrank{method=cp,ratio=1,min_gain=0,iters=30}")
    attrs = [new.node(new.by_scope(f"c.{k}")).attrs for k in range(4)]
    assert [(a["kernel_size"], a["stride"], a["padding"], a["dilation"], a["groups"]) for a in attrs] == [
        ((1, 1), (1, 1), (0, 0), (1, 1), 1), ((3, 1), (2, 1), (2, 0), (2, 1), 5),
        ((1, 5), (1, 3), (0, 1), (1, 1), 5), ((1, 1), (1, 1), (0, 0), (1, 1), 1)]
    assert [a["bias"] for a in attrs] == [False, False, False, True]
    (row,) = rep.layers
    hat = composed(new, "c", "cp")
    assert row["rel_error"] == pytest.approx(np.linalg.norm(w(g, "c.weight") - hat) / np.linalg.norm(
        w(g, "c.weight")), rel=1e-6)
    assert_matches_reference(g, new, rep)


def test_tucker2_layers_and_bias_placement():
    g = small()
    new, rep = lowrank(g, "lowrank{method=tucker2,ratio=0.5,min_gain=0}")
    a = [new.node(new.by_scope(f"c3.{k}")).attrs for k in range(3)]
    assert [(x["kernel_size"], x["stride"], x["padding"], x["bias"]) for x in a] == [
        ((1, 1), (1, 1), (0, 0), False), ((3, 3), (2, 2), (1, 1), False), ((1, 1), (1, 1), (0, 0), True)]
    assert np.array_equal(new.params["c3.2.bias"].value, g.params["c3.bias"].value)
    assert "cd.2.bias" not in new.params                      # cd has no bias
    d = [new.node(new.by_scope(f"cd.{k}")).attrs for k in range(3)]
    assert d[1]["dilation"] == (2, 1) and d[1]["padding"] == (2, 1)


def test_a_mode_kept_whole_is_folded_into_the_core():
    g = archdsl.load("model m() { input x: [3, 16, 16]\n output x -> c: conv(32, 3, padding=1) }")
    new, rep = lowrank(g, "lowrank{ratio=0.5,min_gain=0}")       # r_in = ceil(3 / 2) = 2 < 3, r_out = 16
    assert rep.layers[0]["ranks"] == [16, 2] and new.by_scope("c.2") is not None
    new, rep = lowrank(g, "lowrank{ratio=1,min_gain=0}")         # r_in = 3 = C: no input 1x1; r_out = 27 < 32
    assert rep.layers[0]["ranks"] == [27, 3]
    assert [new.node(new.by_scope(f"c.{k}")).attrs["kernel_size"] for k in range(2)] == [(3, 3), (1, 1)]
    assert new.by_scope("c.2") is None
    xs = random_inputs(g)
    assert rel(ir_outputs(new, xs), ir_outputs(g, xs)) <= 1e-5


# ---- report, scopes, refusals -------------------------------------------------------------------------

def test_report_gives_method_ranks_macs_and_error_per_layer():
    g = small()
    new, rep = lowrank(g, "lowrank{ratio=0.5}")
    stats = {s.scope: s.macs for s in layer_stats(new)}
    before = {s.scope: s.macs for s in layer_stats(g)}
    assert rep.layers
    for row in rep.layers:
        assert set(row) >= {"layer", "op", "method", "ranks", "macs_before", "macs_after", "rel_error"}
        assert row["method"] == ("svd" if row["layer"] in ("p1", "fc1", "fc2") else "tucker2")
        assert row["macs_before"] == before[row["layer"]]
        assert row["macs_after"] == sum(m for s, m in stats.items() if s.startswith(row["layer"] + "."))
        assert row["macs_before"] / row["macs_after"] >= 1.25
        assert 0 < row["rel_error"] < 1
    assert rep.macs_after == totals(new)["macs"]
    text = rep.summary()
    assert "@cd: op=conv, method=tucker2, ranks=[12, 10], macs_before=" in text and "rel_error=" in text


def test_new_layers_are_named_under_the_replaced_scope():
    g = load_small("vgg.arch", "vgg11", size=32)
    new, rep = lowrank(g, "lowrank{ratio=0.5,keep=classifier}")
    assert new.scopes["features.3"].kind == "seq"
    module = archdsl.to_torch(new)
    keys = module.state_dict().keys()
    assert {"features.3.0.weight", "features.3.1.weight", "features.3.2.weight", "features.3.2.bias"} <= set(keys)
    children = dict(module.get_submodule("features.3").named_children())
    assert list(children) == ["0", "1", "2"] and all(isinstance(m, torch.nn.Conv2d) for m in children.values())
    assert not any(row["layer"].startswith("classifier") for row in rep.layers)


def test_grouped_depthwise_min_gain_and_keep_are_refused_or_skipped_with_reasons():
    g = archdsl.load("""
model m() {
    input x: [16, 8, 8]
    h = x -> dw: conv(16, 3, padding=1, groups=16) -> gr: conv(32, 3, padding=1, groups=4)
          -> big: conv(32, 3, padding=1) -> kept: conv(32, 3, padding=1)
    output h -> adaptive_avgpool(1) -> flatten -> fc: linear(10)
}""")
    new, rep = lowrank(g, "lowrank{ratio=0.9,keep=kept}")
    reasons = {r.node: r.reason for r in rep.refused}
    assert "depthwise conv (groups=16)" in reasons["dw"] and "grouped conv (groups=4)" in reasons["gr"]
    assert "below min_gain=1.25" in reasons["big"] and "a gain of 0." in reasons["big"]
    assert "kept" not in reasons and not rep.layers
    assert rep.modified is False and totals(new)["macs"] == totals(g)["macs"]
    _, rep = lowrank(g, "lowrank{method=tucker2,ratio=0.3}")
    assert "method=tucker2 does not apply to a linear layer" in {r.node: r.reason for r in rep.refused}["fc"]


def test_the_input_graph_is_untouched_and_options_are_checked():
    g = small()
    before = {k: p.value.copy() for k, p in g.params.items()}
    lowrank(g, "lowrank{ratio=0.5}")
    assert all(np.array_equal(before[k], p.value) for k, p in g.params.items())
    for bad in ("lowrank", "lowrank{ratio=0.5,macs=0.5}", "lowrank{ratio=0}", "lowrank{method=qr,ratio=0.5}",
                "lowrank{macs=1.5}", "lowrank{energy=0.9,cost=flops}"):
        with pytest.raises(Exception):
            run_pipeline(g, parse_pipeline(bad))
    assert math.isinf(LowRank(ratio=0.5).expected_error())


# ---- rank rules ---------------------------------------------------------------------------------------

def test_energy_ranks_are_the_smallest_holding_the_fraction():
    g = small()
    new, rep = lowrank(g, "lowrank{energy=0.8,min_gain=0}")
    for row in rep.layers:
        weight = w(g, f"{row['layer']}.weight")
        mats = [weight.reshape(weight.shape[0], -1)] if row["method"] == "svd" else [
            fz.unfold(weight, 0), fz.unfold(weight, 1)]
        for m, r in zip(mats, row["ranks"]):
            s2 = np.linalg.svd(m, compute_uv=False) ** 2
            kept = np.cumsum(s2) / s2.sum()
            assert kept[r - 1] >= 0.8 - 1e-12 and (r == 1 or kept[r - 2] < 0.8)


def test_vbmf_finds_the_rank_of_low_rank_weights_under_noise():
    g = archdsl.load("model m() { input x: [64]\n output x -> fc: linear(96) }")
    rng = np.random.default_rng(0)
    set_weight(g, "fc", low_rank_matrix(rng, 96, 64, 7) / 8 + 0.02 * rng.standard_normal((96, 64)))
    _, rep = lowrank(g, "lowrank{vbmf=true}")
    assert rep.layers[0]["ranks"] == [7]


def caps(g, row) -> list:
    weight = w(g, f"{row['layer']}.weight")
    n, c = weight.shape[:2]
    if row["method"] == "svd":
        return [min(n, c)]
    return [min(n, weight[0].size), min(c, n * weight[0, 0].size)]


def test_round_to_gives_aligned_ranks():
    g = small()
    _, rep = lowrank(g, "lowrank{ratio=0.3,round_to=8,min_gain=0}")
    assert rep.layers
    for row in rep.layers:
        assert all(r % 8 == 0 or r == cap for r, cap in zip(row["ranks"], caps(g, row))), row


# ---- the MAC target ------------------------------------------------------------------------------------

def test_mac_target_of_the_whole_model_is_reached_with_aligned_ranks():
    g = load_small("resnet.arch", "resnet18", size=32)
    new, rep = lowrank(g, "lowrank{macs=0.5}")
    assert 0.40 <= rep.macs_after / rep.macs_before <= 0.5
    for row in rep.layers:
        assert all(r % 16 == 0 or r == cap for r, cap in zip(row["ranks"], caps(g, row))), row
        assert row["modelled_ms_after"] < row["modelled_ms_before"]
        assert row["macs_before"] / row["macs_after"] >= 1.25
    assert_matches_reference(g, new, rep, tol=1e-4)


def test_the_cost_model_skips_memory_bound_layers_that_macs_alone_would_pick():
    # a wide 3x3 conv at low resolution (compute-bound) and a thin 1x1 at high resolution (memory-bound)
    g = archdsl.load("""
model m() {
    input x: [64, 112, 112]
    h = x -> thin: conv(64, 1) -> relu -> maxpool(8) -> wide: conv(512, 3, padding=1) -> relu
    output h -> adaptive_avgpool(1) -> flatten -> fc: linear(10)
}""")
    _, roof = lowrank(g, "lowrank{macs=0.7}")
    _, macs = lowrank(g, "lowrank{macs=0.7,cost=macs}")
    assert [r["layer"] for r in roof.layers] == ["wide"]
    assert "thin" in [r.node for r in roof.refused]
    assert "thin" in [r["layer"] for r in macs.layers]          # MACs alone: half its MACs look like a gain
    for rep in (roof, macs):
        assert rep.macs_after <= 0.7 * rep.macs_before


# ---- every zoo model through lowrank and every backend ----------------------------------------------------

FULL = ["resnet18", "densenet_bc_100", "googlenet", "stn_mnist", "resnet18_stn"]
ONNX = {"resnet18", "googlenet"}


@pytest.mark.parametrize("file,model", [m for m in zoo_models() if m[1] in FULL])
def test_zoo_model_factorised_equals_its_reconstruction(file, model):
    g = load_small(file, model, size=32)
    randomise_bn(g, seed=4)
    new, rep = lowrank(g, "lowrank{ratio=0.5}")
    assert rep.modified and rep.layers
    assert_matches_reference(g, new, rep, tol=1e-4, onnx=model in ONNX)


def first_layers_only(g, k: int = 8) -> str:
    """A ``keep`` list of every conv and linear layer but the first ``k`` (and never a linear layer over 4M
    weights): the deeper zoo variants repeat the blocks the numerical test checks, and eigendecompositions of
    every layer of a 60M-parameter model would make this file slow."""
    layers = [n for n in g.nodes() if n.op in ("conv", "linear")]
    free = {n.scope for n in layers[:k] if not (n.op == "linear" and n.param("weight").numel > 4_000_000)}
    return ",".join(n.scope for n in layers if n.scope not in free)


@pytest.mark.parametrize("file,model", [m for m in zoo_models() if m[1] not in FULL])
def test_zoo_model_passes_lowrank_and_every_backend(file, model):
    """The other models: their first layers factorised, then built by every backend, without weights."""
    from archdsl.backends.onnx_export import check_graph
    from archdsl.backends.torch_source import generate_source, load_source
    g = load_small(file, model, size=32)
    # ratio 0.25: square 1x1 convs, the first layers of the mobile families, only gain below ratio 0.5
    new, rep = lowrank(g, parse_pipeline(f'lowrank{{ratio=0.25,keep="{first_layers_only(g)}"}}'))
    assert rep.modified and rep.macs_after < rep.macs_before and len(rep.layers) >= 2
    check_graph(new)
    load_source(generate_source(new))
    try:
        from archdsl.backends.arch_emit import emit_arch
    except ImportError:                    # the arch target is newer than this test
        emit_arch = None
    if emit_arch is not None:
        emit_arch(new)                     # checks that the spec it writes loads back to the same graph
    with torch.device("meta"):
        module = archdsl.to_torch(new, load_weights=False).eval()
        out = module(*[torch.empty((1, *new.data(i)["shape"][1:])) for i in new.inputs])
    assert tuple(out.shape[1:]) == tuple(new.data(new.outputs[0])["shape"][1:])


def test_an_unreachable_mac_target_is_a_note_in_the_summary():
    g = load_small("resnet.arch", "resnet18", 32)
    r = run_pipeline(g, "lowrank{macs=0.01}").reports[0]
    note = (f"The MAC target macs=0.01 is out of reach: the cheapest allocation keeps "
            f"{r.macs_after / r.macs_before:.3f} of the MACs.")
    assert r.notes == [note] and f"  note: {note}" in r.summary().splitlines()
