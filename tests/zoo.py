"""The model zoo as test parameters: every model of zoo_specs/, and small-input loading."""
from __future__ import annotations

from pathlib import Path

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
