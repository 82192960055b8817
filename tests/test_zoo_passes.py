"""One model of every new zoo family through every compression pass, checked for meaning.

Each representative of :data:`zoo.REPRESENTATIVES` is loaded at its small test size with
batch-norm statistics far from the defaults (so folding is not the identity), and each pass runs
with ``verify``: the pipeline compares the pass's output with its input through the PyTorch
backend and fails beyond the pass's own expected error (docs/passes.md). A pass that finds nothing
to do in a family would make the check empty, so each must also report that it changed the graph
(fold-bn is exempt only for families without batch norm: ConvNeXt).

The backends are covered elsewhere for the same models: tests/test_torch_source.py (generated
source against ``to_torch``), tests/test_onnx.py (onnxruntime against PyTorch) and
tests/test_cli_run_bench.py (``archc run`` on both backends).
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from archdsl.ir.verify import verify  # noqa: E402
from archdsl.passes import run_pipeline  # noqa: E402
from archdsl.passes.context import PassContext  # noqa: E402

from zoo import REPRESENTATIVES, ZOO, load_small, randomise_bn, representatives  # noqa: E402

FAMILIES = [(f, representatives(f)[0]) for f in sorted(REPRESENTATIVES) if (ZOO / f).exists()]
TOPOLOGY = ["fold-bn", "prune{ratio=0.25}", "quantize"]        # depend on how the layers are connected
PER_LAYER = ["lowrank{ratio=0.5}", "weight-share"]              # depend on each layer's op and weights alone
# Families with more than 20M parameters whose layers are those of another family here run only the
# topology passes (their per-layer passes take 15-20 s each and would test nothing new): Wide ResNet's and
# ResNeXt's layers are ResNet's (grouped convs are in the mobile families), EfficientNetV2's are
# EfficientNet's. Inception-v3 (1x7 and 7x1 kernels) and ConvNeXt (linear layers on NHWC, layer norm,
# layer scale) run lowrank.
TOPOLOGY_ONLY = {"wide_resnet50_2", "resnext50_32x4d", "efficientnet_v2_s"}
LOWRANK_ONLY = {"inception_v3", "convnext_tiny"}
CASES = [(f, m, p) for f, m in FAMILIES for p in TOPOLOGY + PER_LAYER
         if p in TOPOLOGY or (m not in TOPOLOGY_ONLY and (m not in LOWRANK_ONLY or p.startswith("lowrank")))]


def calibration(g, n: int = 8, seed: int = 0) -> dict:
    shape = g.data(g.inputs[0])["shape"][1:]
    return {"x": np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)}


@pytest.mark.parametrize("file, model, pipeline", CASES, ids=[f"{m}-{p.split('{')[0]}" for _, m, p in CASES])
def test_every_pass_keeps_the_meaning_of_every_family(file, model, pipeline):
    g = load_small(file, model)
    randomise_bn(g)
    ctx = PassContext(data=calibration(g), verify=True, calib_samples=8)
    result = run_pipeline(g, pipeline, ctx=ctx)
    verify(result.graph)
    has_bn = any(n.op == "bn" for n in g.nodes())
    if pipeline != "fold-bn" or has_bn:
        assert result.modified, f"{pipeline} found nothing to change in {model}"
