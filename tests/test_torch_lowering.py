"""The PyTorch lowering table, dtypes, the quantisation ops and meta-device construction.

Both PyTorch forms (``to_torch`` and the generated source) are checked against a
NumPy reference of ONNX QuantizeLinear/DequantizeLinear: the integer tensors must
be equal, the dequantised values within one float32 rounding.
"""
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import archdsl
from archdsl import ArchError
from archdsl.backends import torch_lowering
from archdsl.backends.torch_layers import CLASSES
from archdsl.backends.torch_source import build_module, generate_source
from archdsl.ir import ops
from archdsl.ir.types import INT_RANGES, numpy_dtype
from archdsl.ir.verify import infer_types

SPEC = """
model tiny(num_classes: int = 3) {
    input x: [2, 8, 8]
    output x -> conv1: conv(4, 3, padding=1) -> bn1: bn -> relu -> adaptive_avgpool(1) -> flatten
             -> fc: linear(num_classes)
}
"""
PASS = """
model pass_through() {
    input x: [4, 5, 5]
    output x -> id: identity
}
"""


def both_forms(g, load_weights=True):
    return archdsl.to_torch(g, load_weights=load_weights).eval(), build_module(g, load_weights).eval()


# ---- the table ------------------------------------------------------------------------------

def test_every_registry_op_has_one_lowering_and_nothing_else_does():
    spec_ops = {name for name, op in ops.OPS.items() if op.arity != 0}
    assert set(torch_lowering.LOWERINGS) == spec_ops


def test_an_op_without_a_lowering_is_a_clear_error():
    with pytest.raises(ArchError, match=r"no rule for op 'frobnicate'; add an entry for it to LOWERINGS in "):
        torch_lowering.lowering("frobnicate")


def test_every_module_form_names_a_real_torch_class_and_the_ops_attributes():
    for name, low in torch_lowering.LOWERINGS.items():
        if low.module is None:
            assert low.run is not None and low.text is not None, name
            continue
        attrs = {a.name for a in ops.get(name).args}
        for rank in (2, 3, 4):
            cls = low.module.class_name(rank)          # torch.nn's, or one of torch_layers (LayerNorm2d)
            assert isinstance(CLASSES.get(cls) or getattr(torch.nn, cls), type), name
        features = {low.module.features[0]} if low.module.features else set()
        for arg, _ in low.module.args + low.module.kwargs:
            assert arg in attrs | features, (name, arg)


# ---- quantisation: both forms against NumPy ------------------------------------------------------

def np_quantize(x, dtype, scale, zero_point, axis):
    """ONNX QuantizeLinear: saturate(round_half_even(x / scale) + zero_point), x / scale in float32."""
    shape = [1] * x.ndim
    if axis is not None:
        shape[axis] = -1
    s = np.asarray(scale, np.float32).reshape(shape)
    z = np.asarray(zero_point, np.float64).reshape(shape)
    lo, hi = INT_RANGES[dtype]
    return np.clip(np.rint(x / s).astype(np.float64) + z, lo, hi).astype(numpy_dtype(dtype))


def np_dequantize(q, scale, zero_point, axis):
    """ONNX DequantizeLinear, exactly (float64): (q - zero_point) * scale."""
    shape = [1] * q.ndim
    if axis is not None:
        shape[axis] = -1
    s = np.asarray(scale, np.float32).astype(np.float64).reshape(shape)
    z = np.asarray(zero_point, np.float64).reshape(shape)
    return (q.astype(np.float64) - z) * s


def quantized_graph(dtype, scale, zero_point, axis):
    """x -> identity -> quantize -> dequantize, with both the integer and the real tensor as outputs."""
    g = archdsl.load(PASS)
    q = g.insert_after(g.by_scope("id"), "quantize",
                       {"dtype": dtype, "scale": scale, "zero_point": zero_point, "axis": axis})
    dq = g.insert_after(q, "dequantize")
    g.outputs = [q, dq]
    return g


def awkward_input(scale, axis, seed=0):
    """Random values, values far outside the range, and exact ties (k + 1/2) * scale."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((3, 4, 5, 5)) * 4).astype(np.float32)
    s = np.asarray(scale, np.float32).reshape([-1 if d == (axis or 0) % 4 else 1 for d in range(4)]) \
        if axis is not None else np.float32(scale[0])
    ties = ((rng.integers(-40, 40, size=x.shape) + np.float32(0.5)) * s).astype(np.float32)
    x[0] = ties[0]
    x[1, :, 0, 0] = [1e6, -1e6, 3e4, -3e4]
    return x


CASES = {
    "uint8 per tensor": ("uint8", (0.05,), (128,), None),
    "int8 per tensor, power-of-two scale": ("int8", (0.25,), (-3,), None),
    "int8 per channel": ("int8", (0.5, 0.125, 0.03, 1.0), (1, -2, 3, 0), 1),
    "uint8 per channel, last axis": ("uint8", (0.1, 0.2, 0.3, 0.4, 0.5), (0, 10, 128, 200, 255), -1),
    "int32 per tensor": ("int32", (1e-3,), (7,), None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_quantize_and_dequantize_match_numpy_in_both_forms(case):
    dtype, scale, zero_point, axis = CASES[case]
    g = quantized_graph(dtype, scale, zero_point, axis)
    x = awkward_input(scale, axis)
    want_q = np_quantize(x, dtype, scale, zero_point, axis)
    want = np_dequantize(want_q, scale, zero_point, axis)
    assert len(np.unique(want_q)) > 20                      # the reference is not degenerate
    for module in both_forms(g):
        with torch.no_grad():
            q, real = module(torch.from_numpy(x))
        assert q.dtype == getattr(torch, dtype) and real.dtype == torch.float32
        np.testing.assert_array_equal(q.numpy(), want_q)
        np.testing.assert_allclose(real.numpy(), want, rtol=2 ** -23, atol=0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("axis", [None, 1])
def test_half_precision_inputs_are_quantized_in_float32_as_onnx_does(dtype, axis):
    scale, zero_point = ((0.05,), (3,)) if axis is None else ((0.05, 0.1, 0.013, 0.5), (3, -1, 0, 7))
    g = archdsl.load(PASS)
    c = g.insert_after(g.by_scope("id"), "cast", {"dtype": dtype})
    g.insert_after(c, "quantize", {"dtype": "int8", "scale": scale, "zero_point": zero_point, "axis": axis})
    x = torch.from_numpy(awkward_input(scale, axis)).to(getattr(torch, dtype))
    want = np_quantize(x.float().numpy(), "int8", scale, zero_point, axis)
    for module in both_forms(g):
        with torch.no_grad():
            np.testing.assert_array_equal(module(x.float()).numpy(), want)


def test_quantize_rounds_half_to_even_and_saturates():
    x = torch.tensor([0.125, 0.375, -0.375, -0.125, 100.0, -100.0]).reshape(1, 1, 1, 6).expand(1, 4, 5, 6)
    g = archdsl.load(PASS.replace("[4, 5, 5]", "[4, 5, 6]"))
    q = g.insert_after(g.by_scope("id"), "quantize", {"dtype": "int8", "scale": (0.25,), "zero_point": (-3,)})
    for module in both_forms(g):
        with torch.no_grad():
            out = module(x.contiguous())
        assert out[0, 0, 0].tolist() == [-3, -1, -5, -3, 127, -128]
    assert g.type_of(q).dtype == "int8"


def test_cast_converts_in_both_forms():
    g = archdsl.load(PASS)
    g.insert_after(g.by_scope("id"), "cast", {"dtype": "float16"})
    x = torch.randn(2, 4, 5, 5)
    for module in both_forms(g):
        with torch.no_grad():
            out = module(x)
        assert out.dtype == torch.float16 and torch.equal(out, x.half())


def test_the_generated_source_spells_out_the_quantisation():
    g = quantized_graph("uint8", (0.05,), (128,), None)
    src = generate_source(g)
    assert "        x = torch.clamp(torch.round(x / x.new_tensor(0.05)) + 128, 0, 255).to(torch.uint8)\n" \
           "        out = (x.float() - 128) * 0.05\n" \
           "        return x, out\n" in src


# ---- dtypes of parameters ----------------------------------------------------------------------

def in_dtype(dtype):
    """The tiny model computing in ``dtype``: a cast after the input, parameters of that dtype."""
    g = archdsl.load(SPEC)
    g.insert_after(g.inputs[0], "cast", {"dtype": dtype})
    for p in g.params.values():
        if p.dtype == "float32":
            value = p.value                      # materialise in float32, then convert
            p.dtype = dtype
            p.value = value
    infer_types(g, update=True)
    assert g.type_of(g.outputs[0]).dtype == dtype
    return g


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_parameters_and_buffers_have_the_irs_dtype_in_both_forms(dtype):
    g = in_dtype(dtype)
    want = {name: getattr(torch, p.dtype) for name, p in g.params.items()}
    assert want["bn1.num_batches_tracked"] == torch.int64 and want["conv1.weight"] == getattr(torch, dtype)
    memory, source = both_forms(g)
    for module in both_forms(g) + both_forms(g, load_weights=False):
        assert {k: v.dtype for k, v in module.state_dict().items()} == want
    ref = {name: torch.from_numpy(p.value.astype(np.float32)) for name, p in g.params.items()}
    assert all(torch.equal(v.float(), ref[k].float()) for k, v in memory.state_dict().items())
    x = torch.randn(2, 2, 8, 8)
    with torch.no_grad():
        a, b = memory(x), source(x)
    assert a.dtype == getattr(torch, dtype) and torch.equal(a, b)
    src = generate_source(g)
    assert f"nn.Conv2d(2, 4, kernel_size=3, padding=1, dtype=torch.{dtype})" in src
    assert f"nn.BatchNorm2d(4, dtype=torch.{dtype})" in src and f"x.to(torch.{dtype})" in src


def test_mixed_or_integer_parameter_dtypes_are_refused_with_the_fix():
    g = archdsl.load(SPEC)
    p = g.params["bn1.running_var"]
    value = p.value
    p.dtype, p.value = "float16", value
    with pytest.raises(ArchError, match=r"The parameters of @bn1 have different float dtypes \(.*running_var is "
                                        r"float16.*\); a PyTorch module holds one, so cast them to one dtype\."):
        archdsl.to_torch(g)
    g = archdsl.load(SPEC)
    p = g.params["conv1.weight"]
    p.dtype, p.value = "int8", np.zeros(p.shape)
    with pytest.raises(ArchError, match=r"Parameter conv1.weight is int8, but the PyTorch backends build 'conv' "
                                        r"from floating-point parameters"):
        generate_source(g)


# ---- construction on the meta device ----------------------------------------------------------

def test_weights_are_assigned_to_modules_built_on_the_meta_device(monkeypatch):
    seen = []
    original = torch.nn.Conv2d.reset_parameters

    def spy(self):
        seen.append(self.weight.device.type)
        original(self)
    monkeypatch.setattr(torch.nn.Conv2d, "reset_parameters", spy)
    g = archdsl.load(SPEC)
    module = archdsl.to_torch(g)
    assert seen == ["meta"]
    state = module.state_dict()
    assert all(not t.is_meta for t in state.values())
    assert all(np.array_equal(state[k].numpy(), p.value) for k, p in g.params.items())
    assert all(isinstance(p, torch.nn.Parameter) and p.requires_grad for p in module.parameters())
    assert [k for k, v in module.named_buffers()] == ["bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked"]
    with torch.no_grad():                           # the module owns its values: the IR does not change
        module.conv1.weight.add_(1.0)
    assert not np.array_equal(module.conv1.weight.detach().numpy(), g.params["conv1.weight"].value)
    seen.clear()
    build_module(g)
    assert seen == ["meta"]


def test_without_weights_modules_get_pytorchs_initialisation(monkeypatch):
    g = archdsl.load(SPEC)
    torch.manual_seed(0)
    module = archdsl.to_torch(g, load_weights=False)
    w = module.conv1.weight.detach()
    bound = 1 / np.sqrt(2 * 3 * 3)                   # kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(fan_in), ...)
    assert not w.is_meta and w.abs().max() <= bound and w.std() > bound / 4
    assert not np.array_equal(w.numpy(), g.params["conv1.weight"].value)
    assert torch.equal(module.bn1.running_var, torch.ones(4))


def test_device_is_checked_and_honoured():
    g = archdsl.load(SPEC)
    assert all(t.device.type == "cpu" for t in archdsl.to_torch(g, device="cpu").state_dict().values())
    with pytest.raises(ArchError, match=r"'npu9' is not a PyTorch device"):
        archdsl.to_torch(g, device="npu9")
    if torch.cuda.is_available():
        module = archdsl.to_torch(g, device="cuda")
        assert all(t.device.type == "cuda" for t in module.state_dict().values())
    else:
        with pytest.raises(ArchError, match=r"PyTorch sees no CUDA device here; use device='cpu'\."):
            archdsl.to_torch(g, device="cuda")


# ---- the construction benchmark (what it reports, never how fast) ---------------------------------

def test_bench_construct_reports_all_three_ways(capsys):
    import json

    from archdsl.cli import main
    from zoo import ZOO
    assert main(["bench-construct", "--zoo", str(ZOO), "--models", "resnet.arch:resnet18", "--runs", "1",
                 "--warmup", "0", "--json", "--no-progress"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert row["model"] == "resnet18" and row["params"] == 11_689_512
    assert {"to_torch_ms", "old_ms", "torchvision_ms", "speedup", "vs_torchvision"} <= set(row)
    assert main(["bench-construct", "--models", "resnet18"]) == 1
    assert "--models expects FILE.arch:MODEL pairs" in capsys.readouterr().err


# ---- StridedMaxPool2d and StridedAvgPool2d: the pools of CPU inference --------------------------

def _maxpool_cases():
    for (h, w) in [(7, 7), (8, 9), (15, 13), (1, 5), (28, 28)]:
        for k in (1, 2, 3, 5):
            for s in (1, 2, 3):
                for p in range(k // 2 + 1):
                    for ceil in (False, True):
                        if k <= h + 2 * p and k <= w + 2 * p:
                            yield (h, w), k, s, p, ceil


def test_the_strided_max_pool_equals_pytorchs_bit_for_bit():
    """Every kernel, stride, padding and ceil_mode, with NaN and -inf in the input: the same values
    and shapes as F.max_pool2d, and the same for the generated source's function form."""
    import torch.nn.functional as F
    pool = CLASSES["StridedMaxPool2d"].pool
    gen = torch.Generator().manual_seed(0)
    checked = 0
    for (h, w), k, s, p, ceil in _maxpool_cases():
        x = torch.randn(2, 3, h, w, generator=gen)
        x[0, 0, 0, 0], x[1, 2, -1, -1] = float("nan"), float("-inf")
        with torch.no_grad():
            want = F.max_pool2d(x, k, s, p, ceil_mode=ceil)
            got = pool(x, k, s, p, 1, ceil)
        assert got.shape == want.shape and got.is_contiguous(), (h, w, k, s, p, ceil)
        assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.nan_to_num(7.0), want.nan_to_num(7.0))
        checked += 1
    assert checked == 216


def test_the_strided_average_pool_equals_pytorchs_bit_for_bit(monkeypatch):
    """Every kernel, stride, padding, ceil_mode and count_include_pad, and divisor_override: PyTorch's
    shapes, divisors and order of summation, so the same values (on one thread, where the sums run)."""
    import torch.nn.functional as F
    windows = CLASSES["PoolWindows"]
    strided = []
    padded = windows.padded
    monkeypatch.setattr(windows, "padded", staticmethod(lambda *a: strided.append(1) or padded(*a)))
    pool = CLASSES["StridedAvgPool2d"].pool
    gen = torch.Generator().manual_seed(1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        checked = 0
        for (h, w), k, s, p, ceil in _maxpool_cases():
            x = torch.randn(2, 3, h, w, generator=gen)
            for include, override in ((True, None), (False, None), (True, 7)):
                with torch.no_grad():
                    want = F.avg_pool2d(x, k, s, p, ceil, include, override)
                    got = pool(x, k, s, p, ceil, include, override)
                assert got.shape == want.shape and got.is_contiguous(), (h, w, k, s, p, ceil, include, override)
                assert torch.equal(got, want), (h, w, k, s, p, ceil, include, override)
                checked += 1
        assert checked == len(strided) == 3 * 216
        torch.set_num_threads(2)
        with torch.no_grad():
            pool(torch.randn(1, 2, 8, 8), 2)
        assert len(strided) == 3 * 216            # on two threads, PyTorch's parallel kernel
    finally:
        torch.set_num_threads(threads)


def test_the_strided_pools_leave_training_layouts_and_export_to_pytorch(monkeypatch):
    """Gradients (PyTorch's: one index per window), channels-last and dilated inputs go to F.max_pool2d,
    and an exported program holds aten.max_pool2d, not the passes."""
    import torch.nn.functional as F
    cls = CLASSES["StridedMaxPool2d"]
    calls = []
    real, real_avg = F.max_pool2d, F.avg_pool2d
    monkeypatch.setattr(F, "max_pool2d", lambda *a, **k: calls.append(1) or real(*a, **k))
    m = cls(3, 2, 1)
    x = torch.randn(2, 4, 9, 9, requires_grad=True)
    m(x).sum().backward()
    assert len(calls) == 1
    with torch.no_grad():
        m(x.contiguous(memory_format=torch.channels_last))
        cls(3, 2, 1, dilation=2)(x)
        m(x)
    assert len(calls) == 3                     # the last, NCHW without autograd, took the strided passes
    monkeypatch.setattr(F, "max_pool2d", real)
    avg = CLASSES["StridedAvgPool2d"](3, 2, 1)
    ep = torch.export.export(torch.nn.Sequential(m, avg).eval(), (torch.randn(1, 4, 9, 9),))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert {"aten.max_pool2d.default", "aten.avg_pool2d.default"} <= targets
    monkeypatch.setattr(F, "avg_pool2d", lambda *a, **k: calls.append(1) or real_avg(*a, **k))
    avg(x).sum().backward()                    # autograd: PyTorch's kernel
    assert len(calls) == 4


def test_the_generated_source_carries_the_pool_classes_and_their_helper():
    g = archdsl.load(Path(__file__).parents[1] / "zoo_specs" / "densenet.arch", model="densenet121")
    src = generate_source(g)
    assert re.findall(r"^class (\w+)", src, re.M)[:3] == ["PoolWindows", "StridedMaxPool2d", "StridedAvgPool2d"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(build_module(g).eval()(x), archdsl.to_torch(g).eval()(x))
