"""Front-end speed: text to shape-checked IR, for zoo models and for generated specs of growing size.

Weights are materialised lazily, so these timings cover parsing, elaboration,
shape inference and graph construction only (what `archc check` does).
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

from ..api import load

# A residual network of `blocks` blocks of 7 nodes each (conv, bn, relu, conv, bn, add, relu), plus 5 more.
SCALING_SPEC = """
block unit(c: int) {
    input x
    output x -> residual { conv(c, 3, padding=1, bias=false) -> bn -> relu -> conv(c, 3, padding=1, bias=false) -> bn } -> relu
}
model generated(blocks: int = 10, width: int = 8) {
    input x: [3, 16, 16]
    h = x -> stem: conv(width, 3, padding=1)
    output h -> body: [unit(width) for i in range(blocks)] -> adaptive_avgpool(1) -> flatten -> fc: linear(10)
}
"""


def time_load(source, model=None, repeat: int = 7, **params) -> tuple[float, int]:
    """Median seconds of ``load`` over ``repeat`` runs (after one warm-up) and the node count."""
    graph = load(source, model, **params)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        load(source, model, **params)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(graph)


# the largest model of each zoo family that has one of many sizes, and the deepest of the others
ZOO_MODELS = (("resnet.arch", "resnet152"), ("densenet.arch", "densenet201"), ("resnext.arch", "resnext101_64x4d"),
              ("inception_v3.arch", "inception_v3"), ("mobilenet_v3.arch", "mobilenet_v3_large"),
              ("shufflenet_v2.arch", "shufflenet_v2_x2_0"), ("mnasnet.arch", "mnasnet1_3"),
              ("efficientnet.arch", "efficientnet_b7"), ("efficientnet_v2.arch", "efficientnet_v2_l"),
              ("regnet.arch", "regnet_y_128gf"), ("convnext.arch", "convnext_large"))


def zoo_rows(root: Path, models=ZOO_MODELS, progress=None):
    rows = []
    for file, model in models:
        path = root / file
        if path.exists():
            seconds, nodes = time_load(path, model)
            rows.append({"spec": f"{file}:{model}", "nodes": nodes, "ms": seconds * 1e3})
        if progress:
            progress()
    return rows


def scaling_rows(sizes=(143, 286, 714, 1428, 2857), progress=None):
    rows = []
    for blocks in sizes:
        seconds, nodes = time_load(SCALING_SPEC, blocks=blocks, max_nodes=10**6, repeat=3)
        rows.append({"spec": f"generated(blocks={blocks})", "nodes": nodes, "ms": seconds * 1e3,
                     "us_per_node": seconds * 1e6 / nodes})
        if progress:
            progress()
    return rows
