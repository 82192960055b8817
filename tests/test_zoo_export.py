"""`--target torch` (a torch.export program) for the new zoo families whose ops are new to the exporter.

Each model is exported as `archc compile --target torch` does (archdsl.backends.torch_save), saved and
loaded back with torch.export alone, and run at a batch other than the example's (the batch is dynamic):
its outputs must equal `to_torch`'s on the same weights in inference mode. The families chosen bring ops
and names the older zoo does not have: layer norm over channels, permute, a bare layer-scale parameter and
stochastic depth (ConvNeXt), SiLU, squeeze-and-excitation and stochastic depth (EfficientNet), hardswish
and hardsigmoid (MobileNetV3), slices and channel shuffles (ShuffleNetV2), labels with `-` (RegNet), and
asymmetric kernels (Inception-v3).
"""
from __future__ import annotations

import io

import pytest

torch = pytest.importorskip("torch")

import archdsl  # noqa: E402
from archdsl.backends.torch_save import export_program  # noqa: E402

from zoo import ZOO, load_small, randomise_bn, representatives  # noqa: E402

FILES = ["convnext.arch", "efficientnet.arch", "mobilenet_v3.arch", "shufflenet_v2.arch", "regnet.arch",
         "inception_v3.arch"]
CASES = [(f, representatives(f)[-1]) for f in FILES if (ZOO / f).exists()]


@pytest.mark.parametrize("file, model", CASES, ids=[m for _, m in CASES])
def test_exported_program_equals_the_module(file, model):
    g = load_small(file, model)
    randomise_bn(g)
    buf = io.BytesIO()
    torch.export.save(export_program(g), buf)
    buf.seek(0)
    loaded = torch.export.load(buf).module()
    x = torch.randn(3, *g.data(g.inputs[0])["shape"][1:], generator=torch.Generator().manual_seed(0))
    ref = archdsl.to_torch(g).eval()
    with torch.no_grad():
        a, b = loaded(x), ref(x)
    assert a.shape == b.shape == (3, *g.data(g.outputs[0])["shape"][1:])
    assert b.std() > 1e-4
    assert (a - b).abs().max().item() <= 1e-5 * max(1.0, b.abs().max().item())
