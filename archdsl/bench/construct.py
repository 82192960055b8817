"""Building a PyTorch model with weights: ``to_torch`` now, ``to_torch`` as it was, and torchvision's constructor.

Three steps are timed round-robin in one process (``timing.interleaved``), so a
change in machine load falls on all of them alike; each row reports medians:

* ``to_torch``: modules built on the meta device, the IR's arrays assigned as
  the parameters and buffers (one copy of each value);
* ``old``: the previous path, kept measurable here: modules built on the CPU
  with PyTorch's default initialisation, then the IR's arrays copied in with
  ``load_state_dict(..., strict=True)`` (no ``assign``);
* ``torchvision``: ``torchvision.models.<name>()``, the twin's own construction
  with its default initialisation (and no weights loaded).

The IR's weights are materialised before timing: both IR paths read the same
arrays. Run as ``archc bench-construct`` or ``python -m archdsl.bench.construct``.
"""
from __future__ import annotations

import gc
from pathlib import Path

from ..api import load
from .timing import interleaved

MODELS = (("vgg.arch", "vgg16"), ("resnet.arch", "resnet50"))


def _steps(graph, name: str) -> dict:
    import torch
    import torchvision

    from ..backends.torch_module import ArchModule, to_torch
    from ..backends.torch_tensors import ir_state

    def old():
        module = ArchModule(graph, load_weights=False)
        module.load_state_dict(ir_state(graph), strict=True)
        return module
    steps = {"to_torch": lambda: to_torch(graph), "old": old}
    if name in torchvision.models.list_models(module=torchvision.models):
        steps["torchvision"] = lambda: torchvision.models.get_model(name, weights=None)
    a, b = steps["to_torch"]().state_dict(), old().state_dict()
    if list(a) != list(b) or not all(torch.equal(a[k], b[k]) for k in a):
        raise AssertionError(f"{name}: the old and the new to_torch disagree")
    return steps


def construct_rows(zoo: Path, models=MODELS, runs: int = 7, warmup: int = 1, threads: int = 2,
                   progress=None) -> list[dict]:
    """One row per ``(file, model)``: median milliseconds of each step and the speed-ups."""
    import torch
    torch.set_num_threads(threads)
    rows = []
    for file, name in models:
        graph = load(Path(zoo) / file, name)
        for p in graph.params.values():
            p.value                                  # materialise the IR's weights outside the timing
        stats = interleaved(_steps(graph, name), warmup, runs, tick=progress)
        gc.collect()
        row = {"model": name, "params": graph.param_count(), "runs": runs,
               **{f"{k}_ms": s["median_ms"] for k, s in stats.items()}}
        row["speedup"] = row["old_ms"] / row["to_torch_ms"]
        if "torchvision_ms" in row:
            row["vs_torchvision"] = row["to_torch_ms"] / row["torchvision_ms"]
        rows.append(row)
    return rows


if __name__ == "__main__":
    import sys

    from ..cli import main
    sys.exit(main(["bench-construct", *sys.argv[1:]]))
