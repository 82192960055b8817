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
PIPELINES = ["fold-bn", "prune{ratio=0.25}", "lowrank{ratio=0.5}", "quantize", "weight-share{bits=6}"]


def calibration(g, n: int = 8, seed: int = 0) -> dict:
    shape = g.data(g.inputs[0])["shape"][1:]
    return {"x": np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)}


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: p.split("{")[0])
@pytest.mark.parametrize("file, model", FAMILIES, ids=[m for _, m in FAMILIES])
def test_every_pass_keeps_the_meaning_of_every_family(file, model, pipeline):
    g = load_small(file, model)
    randomise_bn(g)
    ctx = PassContext(data=calibration(g), verify=True, calib_samples=8)
    result = run_pipeline(g, pipeline, ctx=ctx)
    verify(result.graph)
    has_bn = any(n.op == "bn" for n in g.nodes())
    if pipeline != "fold-bn" or has_bn:
        assert result.modified, f"{pipeline} found nothing to change in {model}"
