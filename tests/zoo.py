"""The model zoo as test parameters: every model of zoo_specs/, and small-input loading."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import archdsl
from archdsl import ArchError

ZOO = Path(__file__).resolve().parent.parent / "zoo_specs"
SMALL = 64            # test resolution for models whose default input is larger


def zoo_models(compilable: bool = True) -> list[tuple[str, str]]:
    """(file name, model name) for the models of every zoo file; by default only those that compile as
    they are (generic models with required parameters are reached through their aliases)."""
    return [(path.name, m.name) for path in sorted(ZOO.glob("*.arch")) for m in archdsl.list_models(path)
            if not (compilable and m.required)]


def load_small(file, model: str, size: int = SMALL):
    """The model at ``size`` x ``size`` where it has a ``size`` parameter and a larger default input.
    ``file`` is a zoo file name or a path."""
    path = file if isinstance(file, Path) else ZOO / file
    g = archdsl.load(path, model)
    if g.data(g.inputs[0])["shape"][-1] > size:
        try:
            g = archdsl.load(path, model, size=size)
        except ArchError:
            pass            # no `size` parameter: keep the default input
    return g


def randomise_bn(g, seed: int = 0, zero_shift: bool = False) -> None:
    """Running statistics and affine parameters far from the defaults (mean 0, var 1, gamma 1, beta 0)."""
    rng = np.random.default_rng(seed)
    for n in g.nodes():
        if n.op != "bn":
            continue
        c = n.shape[1]
        values = {"running_mean": rng.uniform(-0.5, 0.5, c), "running_var": rng.uniform(0.3, 2.5, c),
                  "weight": rng.uniform(0.5, 1.5, c) * rng.choice([-1.0, 1.0], c),
                  "bias": rng.uniform(-0.5, 0.5, c)}
        if zero_shift:
            values["running_mean"][:] = 0.0
            values["bias"][:] = 0.0
        for local, v in values.items():
            if local in n.params:
                n.param(local).value = v.astype(np.float32)
