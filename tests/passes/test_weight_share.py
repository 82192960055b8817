"""``weight-share``: k-means weight sharing, its ONNX and PyTorch forms, and Deep Compression (prune + share).

* ``kmeans_1d`` ends at a fixed point of Lloyd's algorithm on a small layer (every weight at its nearest
  centroid, every used centroid the mean of its weights), is deterministic, exact for few distinct values, and starts
  where Deep Compression does (linear over [min, max]); k-means++ follows the seed.
* At 8 bits the output moves at most 1.5 times as far as when every layer's weights are rounded to 256
  evenly spaced values over their range (Deep Compression's linear start; k-means lowers the weights' squared
  error, not always the output's: 0.86x on ResNet-18, 0.76x on GoogLeNet, 1.18x on MobileNetV2 at 32x32), the
  output's own sensitivity cancelling out of the ratio, and the ONNX file is at most
  0.3x the fp32 file, in onnxruntime and PyTorch alike; fewer bits give smaller files (indices packed).
* PyTorch holds uint8 indices and a float codebook, rebuilds the weights from them, fine-tunes the
  codebook and gives it back through ``from_torch``; prune + share reports the size ratio.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

import archdsl  # noqa: E402
from archdsl import ArchError  # noqa: E402
from archdsl.backends.onnx_export import onnx_bytes  # noqa: E402
from archdsl.backends.onnx_ops import pack_indices  # noqa: E402
from archdsl.ir.verify import verify  # noqa: E402
from archdsl.passes import run_pipeline  # noqa: E402
from archdsl.passes.context import PassContext  # noqa: E402
from archdsl.passes.weight_share import kmeans_1d  # noqa: E402

from zoo import ir_outputs, load_small, randomise_bn  # noqa: E402


def inputs(g, n: int = 2, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *g.data(g.inputs[0])["shape"][1:])).astype(np.float32)


def ort_run(g, model: bytes, x) -> np.ndarray:
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def on_a_linear_grid(g, levels: int = 256):
    """A copy of ``g`` with each conv and linear weight rounded to ``levels`` evenly spaced values over
    its own [min, max]: the reference that k-means with as many centroids improves on."""
    g = g.copy()
    for n in g.nodes():
        if n.op in ("conv", "linear"):
            p = n.param("weight")
            w = p.value.astype(np.float64)
            lo, step = w.min(), (w.max() - w.min()) / (levels - 1)
            p.value = (lo + np.rint((w - lo) / step) * step).astype(np.float32)
    return g


# ---- k-means ---------------------------------------------------------------------------------------

def test_kmeans_ends_at_a_fixed_point_of_lloyds_algorithm():
    rng = np.random.default_rng(0)
    w = np.concatenate([rng.standard_normal(20_000), rng.standard_normal(3000) * 5 + 3]).astype(np.float32)
    cb, idx, error = kmeans_1d(w, 16)
    assert cb.dtype == np.float32 and idx.dtype == np.uint8 and idx.shape == w.shape
    assert np.all(np.diff(cb) >= 0)
    nearest = np.abs(w[:, None].astype(np.float64) - cb[None, :]).argmin(axis=1)
    assert np.mean(np.abs(cb[nearest] - w) < np.abs(cb[idx] - w) - 1e-6) == 0     # each at its nearest centroid
    for j in np.unique(idx):
        assert cb[j] == pytest.approx(w[idx == j].astype(np.float64).mean(), rel=1e-6, abs=1e-7)
    assert error == pytest.approx(float(((cb[idx] - w).astype(np.float64) ** 2).sum()), rel=1e-4)
    again = kmeans_1d(w, 16)
    assert np.array_equal(again[0], cb) and np.array_equal(again[1], idx)         # deterministic
    assert kmeans_1d(w, 16, iterations=0)[2] > error      # from the linear start, Lloyd lowers the error


def test_few_distinct_values_are_exact_and_kmeans_pp_follows_the_seed():
    w = np.array([[0.5, -1.0, 0.5], [2.0, -1.0, 0.0]], np.float32)
    cb, idx, error = kmeans_1d(w, 4)
    assert np.array_equal(cb[idx], w) and error == 0.0
    rng = np.random.default_rng(1)
    v = rng.standard_normal(5000).astype(np.float32)
    a = kmeans_1d(v, 8, "kmeans++", rng=np.random.default_rng(7))
    b = kmeans_1d(v, 8, "kmeans++", rng=np.random.default_rng(7))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    for value in (0.0, -0.25):        # one value in a layer too large for the distinct-values shortcut
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            cb, idx, error = kmeans_1d(np.full((64, 32), value, np.float32), 8)
        assert np.array_equal(cb[idx], np.full((64, 32), value, np.float32)) and error == 0.0
    d = kmeans_1d(v, 8, "density")
    assert d[2] < kmeans_1d(v, 8, "linear", iterations=0)[2]      # a better start than plain linear spacing


def test_indices_pack_into_bytes_for_fewer_bits():
    rng = np.random.default_rng(0)
    for bits, per in ((1, 8), (2, 4), (3, 2), (4, 2), (5, 1), (8, 1)):
        idx = rng.integers(0, 2 ** bits, (7, 5, 3), dtype=np.uint8)
        packed, got_per = pack_indices(idx, bits)
        assert got_per == per and packed.dtype == np.uint8 and len(packed) == -(-idx.size // per)
        width = 8 // per
        unpacked = ((packed[:, None].astype(np.int32) >> (width * np.arange(per))) % (1 << width)).ravel()
        assert np.array_equal(unpacked[:idx.size], idx.ravel())


# ---- the pass ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, model", [("resnet.arch", "resnet18"), ("googlenet.arch", "googlenet")])
def test_eight_bits_keep_the_output_and_shrink_the_onnx_file_fourfold(spec, model):
    g = load_small(spec, model, size=32)
    randomise_bn(g)
    result = run_pipeline(g, "weight-share{bits=8}")
    s = result.graph
    verify(s)
    assert not any(n.op in ("conv", "linear") for n in s.nodes())
    base, shared = onnx_bytes(g), onnx_bytes(s)
    assert len(shared) <= 0.3 * len(base)
    onnx.checker.check_model(onnx.load_from_string(shared), full_check=True)
    x = inputs(g)
    want, got = ir_outputs(g, x)[0], ort_run(s, shared, x)
    grid = ir_outputs(on_a_linear_grid(g), x)[0]
    assert 1 - cosine(got, want) <= 1.5 * (1 - cosine(grid, want))
    assert np.abs(ir_outputs(s, x)[0] - got).max() <= 1e-5 * max(1.0, np.abs(got).max())
    rows = result.reports[0].layers
    assert len(rows) == sum(1 for n in g.nodes() if n.op in ("conv", "linear"))
    assert all(r["centroids"] <= 256 and r["sqnr_db"] > 30 for r in rows)


CONVS = """model convs() {
    input x: [3, 16, 16]
    output x -> conv(64, 3, padding=1) -> relu -> conv(128, 3, padding=1) -> relu -> maxpool(2)
             -> conv(256, 3, padding=1) -> relu -> adaptive_avgpool(1) -> flatten -> fc: linear(10)
}"""


def test_fewer_bits_give_smaller_files_that_still_run():
    g = archdsl.load(CONVS)
    base = len(onnx_bytes(g))
    x = inputs(g)
    want = ir_outputs(g, x)[0]
    sizes = {}
    for bits in (4, 2):
        s = run_pipeline(g, f"weight-share{{bits={bits}}}").graph
        model = onnx_bytes(s)
        sizes[bits] = len(model) / base
        got = ort_run(s, model, x)                  # the packed indices unpack to the IR's
        assert np.abs(ir_outputs(s, x)[0] - got).max() <= 1e-5 * max(1.0, np.abs(got).max())
        assert cosine(got, want) >= {4: 0.99, 2: 0.9}[bits]
    assert sizes[4] <= 0.14 and sizes[2] <= 0.075      # two and four indices per byte


def test_pytorch_rebuilds_the_weights_and_fine_tunes_the_codebook():
    g = archdsl.load("model m() { input x: [3, 8, 8]\n output x -> c: conv(8, 3, padding=1) -> relu -> flatten "
                     "-> fc: linear(4) }")
    s = run_pipeline(g, "weight-share{bits=4}").graph
    module = archdsl.to_torch(s)
    state = module.state_dict()
    assert state["c.indices"].dtype == torch.uint8 and state["c.codebook"].shape == (16,)
    assert set(state) == {"c.indices", "c.codebook", "c.bias", "fc.indices", "fc.codebook", "fc.bias"}
    conv = module.get_submodule("c")
    cb, idx = s.params["c.codebook"].value, s.params["c.indices"].value
    with torch.no_grad():
        assert torch.equal(conv.shared_weight(), torch.from_numpy(cb[idx]))
    module.train()
    module(torch.from_numpy(inputs(g, 4))).square().mean().backward()
    assert conv.codebook.grad is not None and conv.codebook.grad.abs().sum() > 0    # gradients per centroid
    with torch.no_grad():
        conv.codebook -= 0.1 * conv.codebook.grad
    tuned = archdsl.from_torch(s, module)
    assert not np.array_equal(tuned.params["c.codebook"].value, cb)
    assert np.array_equal(tuned.params["c.indices"].value, idx)
    verify(tuned)


def test_prune_then_share_is_deep_compression():
    g = load_small("resnet.arch", "resnet18", size=32)
    randomise_bn(g)
    result = run_pipeline(g, "prune{ratio=0.25},fold-bn,weight-share{bits=5}", keep_graphs=True)
    pruned, compressed = result.results[0].graph, result.graph
    ratio = len(onnx_bytes(compressed)) / len(onnx_bytes(g))
    assert ratio <= 0.25 * 0.6                        # a quarter of the channels gone, then 5-bit indices
    x = inputs(g)
    assert cosine(ort_run(compressed, onnx_bytes(compressed), x), ir_outputs(pruned, x)[0]) >= 0.99


def test_verify_skip_and_option_errors():
    g = load_small("resnet.arch", "resnet18", size=32)
    randomise_bn(g)
    s = run_pipeline(g, "weight-share{skip=fc}", ctx=PassContext(verify=True)).graph
    assert s.node(s.by_scope("fc")).op == "linear" and s.node(s.by_scope("conv1")).op == "shared_conv"
    with pytest.raises(ArchError) as info:
        run_pipeline(g, "weight-share{bits=9}")
    assert info.value.message == "Pass 'weight-share': bits must be 1 to 8 (indices are stored in a byte), but it is 9."
    assert info.value.span.col == 19
    with pytest.raises(ArchError) as info:
        run_pipeline(g, "weight-share{init=random}")
    assert info.value.message == ("Pass 'weight-share': init must be one of linear, density or kmeans++, but it is "
                                  "'random'.")
    assert info.value.span.col == 19
    r = run_pipeline(g, 'weight-share{skip="fc,classifier"}').reports[0]
    assert r.notes == ["The skip pattern 'classifier' matches no layer, so it keeps nothing; patterns are scopes "
                       "such as 'conv1', the scopes inside one, or shell wildcards over them ('*.conv1')."]
