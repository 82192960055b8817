"""``archc compile --target torch``: the model saved as a ``torch.export`` program.

The file is an ``ExportedProgram`` written by ``torch.export.save``: the
generated module's graph (ATen operators) with its weights, loaded without
archdsl by ``torch.export.load(path).module()``. It is exported in inference
mode (batch norm uses its running statistics, dropout is off) at the spec's
input size with a dynamic batch dimension. TorchScript, the older format, is
deprecated as of PyTorch 2.x; a pickled ``nn.Module`` would need the class's
source to unpickle. To fine-tune, generate the source (``--target torch-src``).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..diagnostics import ArchError
from ..ir.graph import Graph
from .torch_source import build_module


def example_inputs(graph: Graph, batch: int = 2) -> tuple:
    """Deterministic example inputs of the graph's input shapes."""
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.randn(batch, *graph.data(n)["shape"][1:], generator=gen) for n in graph.inputs)


def export_program(graph: Graph):
    """The graph's generated module, exported with a dynamic batch dimension."""
    module = build_module(graph).eval()
    inputs = example_inputs(graph)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    dynamic = tuple({0: batch} for _ in inputs)
    try:
        return torch.export.export(module, inputs, dynamic_shapes=dynamic)
    except Exception as err:  # noqa: BLE001 - report torch's reason without a traceback
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ArchError(f"PyTorch could not export model '{graph.name}': {first}") from None


def save_module(graph: Graph, path) -> None:
    """Write the exported program to ``path`` (``.pt2`` is the conventional suffix)."""
    program = export_program(graph)
    with open(Path(path), "wb") as f:      # a file object: any suffix, no warning
        torch.export.save(program, f)
